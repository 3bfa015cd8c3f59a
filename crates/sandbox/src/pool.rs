//! Reusable instances per tenant, and atomic script replacement.

use std::sync::{Arc, Mutex, RwLock};

use kemibox_kemi::Message;
use kemibox_metrics::{InvocationOutcome, TenantMetrics};

use crate::Runtime;
use crate::instance::Instance;
use crate::outcome::Invocation;
use crate::tenant::{LoadFailure, Tenant, TenantSpec};

/// Idle instances of one tenant's current script. Concurrent invocations
/// each take an instance (creating one when none is idle) and give it back,
/// so the number of instances follows the concurrency, like Kamailio's Lua
/// state per worker. A trapped instance is dropped, never returned.
pub struct Pool {
    runtime: Runtime,
    current: RwLock<Arc<Tenant>>,
    idle: Mutex<Vec<Instance>>,
    max_idle: usize,
    /// The tenant's counters, kept across reloads.
    metrics: Arc<TenantMetrics>,
}

impl Pool {
    /// Validate `spec` and make a pool for it.
    pub async fn new(
        runtime: &Runtime,
        spec: TenantSpec,
        max_idle: usize,
    ) -> Result<Pool, LoadFailure> {
        let metrics = Arc::new(TenantMetrics::new(spec.id.as_str()));
        let (tenant, instance) = Tenant::load(runtime, spec).await?;
        metrics.instances_created.inc();
        Ok(Pool {
            runtime: runtime.clone(),
            current: RwLock::new(tenant),
            idle: Mutex::new(vec![instance]),
            max_idle: max_idle.max(1),
            metrics,
        })
    }

    /// The tenant's metrics: invocations and instances counted here, the
    /// proxy's per-tenant counters (transactions, replies) through it.
    pub fn metrics(&self) -> &Arc<TenantMetrics> {
        &self.metrics
    }

    /// The tenant version serving now.
    pub fn tenant(&self) -> Arc<Tenant> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replace the script. The new one is loaded in a scratch instance
    /// first; on any failure the current version keeps serving.
    pub async fn reload(&self, spec: TenantSpec) -> Result<(), LoadFailure> {
        let (tenant, instance) = Tenant::load(&self.runtime, spec).await?;
        self.metrics.instances_created.inc();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = tenant;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.clear();
        idle.push(instance);
        Ok(())
    }

    /// Take an instance of the current version, creating one if needed.
    pub async fn checkout(&self) -> Result<Instance, LoadFailure> {
        let tenant = self.tenant();
        loop {
            let candidate = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match candidate {
                Some(instance) if Arc::ptr_eq(instance.tenant(), &tenant) => return Ok(instance),
                Some(_stale) => continue,
                None => break,
            }
        }
        let instance = Instance::new(tenant).await?;
        self.metrics.instances_created.inc();
        Ok(instance)
    }

    /// Give an instance back, unless it trapped or belongs to an old version.
    pub fn checkin(&self, instance: Instance) {
        if instance.is_poisoned() || !Arc::ptr_eq(instance.tenant(), &self.tenant()) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(instance);
        }
    }

    /// Run `function` on `message` in a pooled instance.
    pub async fn invoke(
        &self,
        function: &str,
        message: Option<Message>,
    ) -> Result<Invocation, LoadFailure> {
        let mut instance = match self.checkout().await {
            Ok(instance) => instance,
            Err(failure) => {
                self.metrics
                    .invocation(function, InvocationOutcome::LoadFailure, None);
                return Err(failure);
            }
        };
        let invocation = instance.invoke(function, message).await;
        self.checkin(instance);
        self.metrics.invocation(
            function,
            invocation.outcome.metric(),
            Some((invocation.fuel_used, invocation.elapsed)),
        );
        Ok(invocation)
    }
}
