//! One sandbox instance: a Store with the tenant's script loaded.

use std::sync::Arc;
use std::time::Instant;

use kemibox_kemi::bindings::exports::kemibox::ksr::script::{
    Failure, LoadOptions, LuaModule as GuestModule, RouteError,
};
use kemibox_kemi::bindings::{Ksr, KsrPre};
use kemibox_kemi::{Ctx, Message};
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::outcome::{Invocation, Outcome};
use crate::store::StoreData;
use crate::tenant::{LoadFailure, Tenant};

/// Fuel between two yields of a running invocation to the other tasks of
/// its thread: about 60 us of Lua. A typical route (10-60 k fuel) never
/// yields; a long one (a tenant's loop until its 10 M budget ends, about
/// 0.6 ms) lets the messages of other tenants waiting on the same thread run
/// every 60 us instead of every epoch tick (5 ms).
const YIELD_FUEL: u64 = 1_000_000;

/// A live instance of a tenant's script. Lua globals persist across
/// invocations (as Kamailio keeps them per worker). After any trap the Store
/// is unusable, and after running out of memory its heap is full:
/// [`Instance::is_poisoned`] says so and the pool drops it.
pub struct Instance {
    store: Store<StoreData>,
    bindings: Ksr,
    tenant: Arc<Tenant>,
    poisoned: bool,
}

impl Instance {
    /// Instantiate the tenant's component and load its script, under the
    /// tenant's limits.
    pub async fn new(tenant: Arc<Tenant>) -> Result<Instance, LoadFailure> {
        let spec = &tenant.spec;
        let mut ctx = Ctx::new(spec.id.clone(), spec.myself.clone(), spec.services.clone());
        ctx.relay_to = spec.relay_to.clone();
        ctx.state = spec.state.clone();
        let mut store = Store::new(
            tenant.runtime.engine(),
            StoreData::new(ctx, spec.limits.memory),
        );
        store.limiter(|d| &mut d.memory);
        // Fuel is enabled on the engine and the interval is not 0.
        let _ = store.fuel_async_yield_interval(Some(YIELD_FUEL));
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Err(Trap::Interrupt.into())
            } else {
                // Let other tasks on this worker thread run, then continue.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let pre = KsrPre::new(tenant.pre.clone())
            .map_err(|e| LoadFailure::new(spec, None, format!("{e:#}")))?;
        let mut instance = Instance {
            bindings: {
                arm(&mut store, &tenant, spec.limits.load_fuel());
                pre.instantiate_async(&mut store)
                    .await
                    .map_err(|e| LoadFailure::new(spec, None, format!("instantiating: {e:#}")))?
            },
            store,
            tenant: tenant.clone(),
            poisoned: false,
        };
        let options = LoadOptions {
            chunk_name: spec.script_name.clone(),
            modules: spec.modules.clone(),
            memory_limit: spec.limits.lua_memory(),
            env: (spec.state.env.iter())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            lua_modules: (spec.lua_modules.iter())
                .map(|m| GuestModule {
                    name: m.name.clone(),
                    file: m.file.clone(),
                    source: m.source.clone(),
                })
                .collect(),
        };
        arm(&mut instance.store, &tenant, spec.limits.load_fuel());
        let result = instance
            .bindings
            .kemibox_ksr_script()
            .call_load(&mut instance.store, &spec.source, &options)
            .await;
        match result {
            Ok(Ok(())) => Ok(instance),
            Ok(Err(e)) => Err(LoadFailure::new(spec, e.line, e.message)),
            Err(trap) => {
                let outcome = instance.trap_outcome(trap);
                Err(LoadFailure::from_outcome(spec, &outcome))
            }
        }
    }

    pub fn tenant(&self) -> &Arc<Tenant> {
        &self.tenant
    }

    /// True after a trap or running out of memory: the instance must not
    /// be used again.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The KEMI context (per-instance state such as `$var`).
    pub fn ctx(&mut self) -> &mut Ctx {
        &mut self.store.data_mut().ctx
    }

    /// Global functions the script defines.
    pub async fn functions(&mut self) -> Vec<String> {
        self.listing(Listing::Functions).await
    }

    /// KSR functions reachable from Lua (`module.name`).
    pub async fn reachable(&mut self) -> Vec<String> {
        self.listing(Listing::Reachable).await
    }

    async fn listing(&mut self, which: Listing) -> Vec<String> {
        if self.poisoned {
            return Vec::new();
        }
        arm(&mut self.store, &self.tenant, self.tenant.spec.limits.fuel);
        let script = self.bindings.kemibox_ksr_script();
        let result = match which {
            Listing::Functions => script.call_functions(&mut self.store).await,
            Listing::Reachable => script.call_reachable(&mut self.store).await,
        };
        result.unwrap_or_else(|trap| {
            self.trap_outcome(trap);
            Vec::new()
        })
    }

    /// Run route function `function` on `message` under the tenant's limits.
    pub async fn invoke(&mut self, function: &str, message: Option<Message>) -> Invocation {
        let started = Instant::now();
        let limits = self.tenant.spec.limits;
        self.ctx().begin(message);
        let outcome = if self.poisoned {
            Outcome::Trap {
                message: "instance was poisoned by an earlier trap or out-of-memory".into(),
            }
        } else {
            arm(&mut self.store, &self.tenant, self.tenant.spec.limits.fuel);
            let result = self
                .bindings
                .kemibox_ksr_script()
                .call_invoke(&mut self.store, function)
                .await;
            match result {
                Ok(Ok(ret)) => Outcome::Ok { ret },
                Ok(Err(e)) => route_failure(e),
                Err(trap) => self.trap_outcome(trap),
            }
        };
        if matches!(outcome, Outcome::OutOfMemory { .. }) {
            // Lua caught it, but the heap is still full of what the script
            // keeps (its globals): every later call would fail too, and the
            // memory would stay taken. A fresh instance starts empty.
            self.poisoned = true;
        }
        let fuel_used = limits
            .fuel
            .saturating_sub(self.store.get_fuel().unwrap_or(0));
        let ctx = self.ctx();
        ctx.end();
        Invocation {
            tenant: ctx.tenant.clone(),
            function: function.to_string(),
            outcome,
            fuel_used,
            elapsed: started.elapsed(),
            events: std::mem::take(&mut ctx.events),
            message: ctx.take_message().await,
        }
    }

    fn trap_outcome(&mut self, error: wasmtime::Error) -> Outcome {
        self.poisoned = true;
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => Outcome::OutOfFuel,
            Some(Trap::Interrupt) => Outcome::Deadline,
            _ if self.store.data().memory.hit => Outcome::OutOfMemory {
                message: format!(
                    "memory cap of {} bytes reached",
                    self.tenant.spec.limits.memory
                ),
            },
            _ => Outcome::Trap {
                message: format!("{error:#}"),
            },
        }
    }
}

/// The guest's two listing exports.
enum Listing {
    Functions,
    Reachable,
}

/// Reset the budget for one call into the guest: fuel, deadline,
/// memory-cap flag.
fn arm(store: &mut Store<StoreData>, tenant: &Tenant, fuel: u64) {
    let limits = tenant.spec.limits;
    // Fuel is enabled on the engine, so this cannot fail.
    let _ = store.set_fuel(fuel);
    store.data_mut().deadline = Instant::now() + limits.deadline();
    store.data_mut().memory.hit = false;
    store.set_epoch_deadline(1);
}

fn route_failure(e: RouteError) -> Outcome {
    match e.kind {
        Failure::Runtime => Outcome::LuaError {
            message: e.message,
            line: e.line,
            traceback: e.traceback,
        },
        Failure::Memory => Outcome::OutOfMemory { message: e.message },
        Failure::NotFound => Outcome::NotFound { message: e.message },
    }
}
