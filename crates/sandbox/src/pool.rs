//! Reusable instances per tenant, versioned script replacement, and the
//! budget for re-creating instances after traps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kemibox_kemi::Message;
use kemibox_metrics::{InvocationOutcome, TenantMetrics};

use crate::Runtime;
use crate::budget::{Take, TokenBucket};
use crate::instance::Instance;
use crate::outcome::{Invocation, Outcome};
use crate::tenant::{LoadFailure, Tenant, TenantSpec};

/// Idle instances of one tenant's script. Concurrent invocations each take
/// an instance (creating one when none is idle) and give it back, so the
/// number of instances follows the concurrency, like Kamailio's Lua state
/// per worker. At most `max_instances` invocations of the tenant run at
/// once; more wait for one of them to end, so a tenant flooding its own
/// routes (each looping until its fuel runs out, say) waits for itself
/// and bounds its own memory, while other tenants' routes go on. A pool
/// starts empty (the instance that validated the script
/// is not kept), and [`Pool::trim`] drops instances left idle, so a
/// thousand mostly quiet tenants cost memory only while they are busy. A
/// trapped instance is dropped, never returned; replacing it spends the
/// tenant's re-creation budget.
///
/// Reloads are versioned: [`Pool::reload`] loads the new script in a
/// scratch instance and only then makes it current. Work pinned to a
/// version ([`Script`], e.g. a transaction's later routes) keeps running
/// on it; idle instances of an old version are kept only while something
/// still pins it.
pub struct Pool {
    current: RwLock<Arc<Tenant>>,
    idle: Mutex<Vec<Idle>>,
    /// The most invocations running at once, and instances kept idle.
    max_instances: usize,
    /// One permit per invocation running; `max_instances` of them.
    running: tokio::sync::Semaphore,
    /// The tenant's counters, kept across reloads.
    metrics: Arc<TenantMetrics>,
    /// One reload at a time, so versions are numbered in order.
    reloading: tokio::sync::Mutex<()>,
    recreations: TokenBucket,
    /// Instances dropped after a trap and not yet replaced.
    trapped: AtomicU64,
}

/// An instance waiting in the pool, and since when.
struct Idle {
    instance: Instance,
    since: Instant,
}

impl Idle {
    fn tenant(&self) -> &Arc<Tenant> {
        self.instance.tenant()
    }
}

/// Idle instances kept per old version while transactions pin it.
const RETIRED_PER_VERSION: usize = 2;

impl Pool {
    /// Validate `spec` and make a pool for it that runs at most
    /// `max_instances` invocations at once (and keeps as many idle).
    pub async fn new(
        runtime: &Runtime,
        spec: TenantSpec,
        max_instances: usize,
    ) -> Result<Pool, LoadFailure> {
        let max_instances = max_instances.max(1);
        let metrics = Arc::new(TenantMetrics::new(spec.id.as_str()));
        // What the tenant's modules report (dispatcher destinations, ...).
        let modules: Arc<dyn kemibox_metrics::ModuleMetrics> = spec.state.clone();
        metrics.set_modules(Arc::downgrade(&modules));
        let per_second = spec.recreations_per_second.max(1);
        let (tenant, _validated) = Tenant::load(runtime, spec).await?;
        metrics.instances_created.inc();
        metrics.script_version.set(tenant.version);
        Ok(Pool {
            current: RwLock::new(tenant),
            idle: Mutex::new(Vec::new()),
            max_instances,
            running: tokio::sync::Semaphore::new(max_instances),
            metrics,
            reloading: tokio::sync::Mutex::new(()),
            recreations: TokenBucket::new(per_second, per_second),
            trapped: AtomicU64::new(0),
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

    /// The current version, pinned: what `pin` invokes stays on this
    /// version whatever reloads come later.
    pub fn pin(self: &Arc<Self>) -> Script {
        Script {
            tenant: self.tenant(),
            pool: self.clone(),
        }
    }

    /// Replace the script: the new one is loaded in a scratch instance
    /// first, and becomes the next version only if that works. On any
    /// failure the current version keeps serving. Returns the new version.
    pub async fn reload(&self, spec: TenantSpec) -> Result<u64, LoadFailure> {
        let _one_at_a_time = self.reloading.lock().await;
        // Not the current version itself: held here, it would count as
        // pinned when the idle instances are pruned below.
        let (runtime, version) = {
            let current = self.tenant();
            (current.runtime.clone(), current.version + 1)
        };
        let (tenant, _validated) = match Tenant::load_version(&runtime, spec, version).await {
            Ok(loaded) => loaded,
            Err(failure) => {
                self.metrics.reloads_refused.inc();
                return Err(failure);
            }
        };
        self.metrics.instances_created.inc();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = tenant;
        self.metrics.script_version.set(version);
        self.metrics.reloads.inc();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        prune(&mut idle, &self.tenant());
        Ok(version)
    }

    /// Take an instance of the current version, creating one if needed.
    pub async fn checkout(&self) -> Result<Instance, LoadFailure> {
        match self.checkout_version(&self.tenant()).await? {
            Some(instance) => Ok(instance),
            None => Err(LoadFailure::new(
                &self.tenant().spec,
                None,
                "throttled: instance re-creation budget spent",
            )),
        }
    }

    /// An instance of `version`: an idle one, else a new one. `None` when
    /// a new one is needed to replace trapped ones and the re-creation
    /// budget is spent.
    async fn checkout_version(
        &self,
        version: &Arc<Tenant>,
    ) -> Result<Option<Instance>, LoadFailure> {
        {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = idle.iter().rposition(|i| Arc::ptr_eq(i.tenant(), version)) {
                return Ok(Some(idle.swap_remove(i).instance));
            }
        }
        if !self.may_create() {
            return Ok(None);
        }
        let instance = Instance::new(version.clone()).await?;
        self.metrics.instances_created.inc();
        Ok(Some(instance))
    }

    /// Whether a new instance may be made now: always to grow with the
    /// concurrency; to replace a trapped one only within the budget.
    fn may_create(&self) -> bool {
        let owed = self
            .trapped
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        let Ok(owed) = owed else {
            return true;
        };
        match self.recreations.take(Instant::now()) {
            Take::Yes => true,
            Take::No { warn } => {
                self.trapped.fetch_add(1, Ordering::Relaxed);
                if warn {
                    tracing::warn!(
                        tenant = %self.tenant().spec.id,
                        trapped = owed,
                        budget_per_second = self.recreations.per_second(),
                        "the tenant keeps trapping: instance re-creation budget spent, its invocations are refused until it refills"
                    );
                }
                false
            }
        }
    }

    /// Give an instance back. One that trapped is dropped (and counted
    /// for the re-creation budget); one of an old version is kept only
    /// while something still pins that version.
    pub fn checkin(&self, instance: Instance) {
        if instance.is_poisoned() {
            self.trapped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let current = self.tenant();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let same = idle
            .iter()
            .filter(|i| Arc::ptr_eq(i.tenant(), instance.tenant()))
            .count();
        let keep = if Arc::ptr_eq(instance.tenant(), &current) {
            same < self.max_instances
        } else {
            // References: this instance, the idle ones, `current` does
            // not hold it; anything beyond is work pinning the version.
            same < RETIRED_PER_VERSION && Arc::strong_count(instance.tenant()) > 1 + same
        };
        if keep {
            idle.push(Idle {
                instance,
                since: Instant::now(),
            });
        }
        prune(&mut idle, &current);
    }

    /// Drop the instances idle for longer than `idle_for`; returns how
    /// many went.
    pub fn trim(&self, idle_for: Duration) -> usize {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let before = idle.len();
        idle.retain(|i| i.since.elapsed() <= idle_for);
        before - idle.len()
    }

    /// Run `function` on `message` in an instance of the current version.
    pub async fn invoke(
        &self,
        function: &str,
        message: Option<Message>,
    ) -> Result<Invocation, LoadFailure> {
        self.invoke_version(&self.tenant(), function, message).await
    }

    async fn invoke_version(
        &self,
        version: &Arc<Tenant>,
        function: &str,
        message: Option<Message>,
    ) -> Result<Invocation, LoadFailure> {
        // Held until the instance is back; the semaphore is never closed.
        let _running = self.running.acquire().await;
        let mut instance = match self.checkout_version(version).await {
            Ok(Some(instance)) => instance,
            Ok(None) => {
                self.metrics
                    .invocation(function, InvocationOutcome::Throttled, None);
                return Ok(Invocation {
                    tenant: version.spec.id.clone(),
                    function: function.to_string(),
                    outcome: Outcome::Throttled,
                    fuel_used: 0,
                    elapsed: Default::default(),
                    events: Vec::new(),
                    message,
                });
            }
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

/// Drop idle instances of versions other than `current` that nothing else
/// pins any more.
fn prune(idle: &mut Vec<Idle>, current: &Arc<Tenant>) {
    if idle.iter().all(|i| Arc::ptr_eq(i.tenant(), current)) {
        return;
    }
    let pinned: Vec<bool> = idle
        .iter()
        .map(|i| {
            let held_idle = idle
                .iter()
                .filter(|o| Arc::ptr_eq(o.tenant(), i.tenant()))
                .count();
            Arc::ptr_eq(i.tenant(), current) || Arc::strong_count(i.tenant()) > held_idle
        })
        .collect();
    let mut keep = pinned.into_iter();
    idle.retain(|_| keep.next().unwrap_or(false));
}

/// A tenant's script at one version: what a transaction keeps, so its
/// branch, reply and failure routes run on the version its request route
/// ran on, even after a reload.
#[derive(Clone)]
pub struct Script {
    pool: Arc<Pool>,
    tenant: Arc<Tenant>,
}

impl Script {
    /// The pool the version belongs to (the tenant, across versions).
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The pinned version.
    pub fn tenant(&self) -> &Arc<Tenant> {
        &self.tenant
    }

    pub fn metrics(&self) -> &Arc<TenantMetrics> {
        self.pool.metrics()
    }

    /// Run `function` on `message` in an instance of this version.
    pub async fn invoke(
        &self,
        function: &str,
        message: Option<Message>,
    ) -> Result<Invocation, LoadFailure> {
        self.pool
            .invoke_version(&self.tenant, function, message)
            .await
    }
}
