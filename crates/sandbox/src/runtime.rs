//! The process-wide sandbox runtime: engine, compiled guest, epoch ticker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, Engine};

use crate::store::StoreData;
use crate::{GUEST_WASM, cache};

/// How often the engine's epoch advances. Deadlines are checked, and long
/// scripts yield to other tasks, at this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// One per process: every tenant shares the engine and the compiled guest.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    component: Component,
    stop: Arc<AtomicBool>,
    /// The component linked for each set of granted modules: tenants
    /// granted the same modules share it, so a thousand tenants link once.
    linked: Mutex<HashMap<Vec<String>, InstancePre<StoreData>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Build the engine and load the guest, from the on-disk cache when
    /// possible (`cache_dir`, or [`cache::default_dir`] when `None`).
    pub fn new(cache_dir: Option<PathBuf>) -> wasmtime::Result<Runtime> {
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .wasm_component_model(true)
            .wasm_exceptions(true)
            .wasm_gc(true)
            .wasm_function_references(true)
            .collector(wasmtime::Collector::DeferredReferenceCounting);
        let engine = Engine::new(&config)?;
        let dir = cache_dir.or_else(cache::default_dir);
        let component = cache::load_component(&engine, GUEST_WASM, dir.as_deref())?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.weak();
        let ticker_stop = stop.clone();
        std::thread::Builder::new()
            .name("kemibox-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker_engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                component,
                stop,
                linked: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn component(&self) -> &Component {
        &self.inner.component
    }

    /// The guest linked with the KSR modules in `granted` (see
    /// [`Runtime::linker`]), made once per set of modules.
    pub(crate) fn linked(&self, granted: &[String]) -> wasmtime::Result<InstancePre<StoreData>> {
        let mut key = granted.to_vec();
        key.sort();
        key.dedup();
        let mut linked = self.inner.linked.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pre) = linked.get(&key) {
            return Ok(pre.clone());
        }
        let pre = self.linker(&key)?.instantiate_pre(self.component())?;
        linked.insert(key, pre.clone());
        Ok(pre)
    }

    /// A linker with WASI (clocks, random; no files, env or sockets) and the
    /// KSR modules in `granted`; every other import traps.
    fn linker(&self, granted: &[String]) -> wasmtime::Result<Linker<StoreData>> {
        let mut linker = Linker::new(self.engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        kemibox_kemi::add_to_linker(&mut linker, granted, |d: &mut StoreData| &mut d.ctx)?;
        self.deny_ungranted(&mut linker)?;
        Ok(linker)
    }

    /// Define the KSR interfaces the tenant was not granted as functions
    /// that trap. The guest already leaves them out of `KSR`; this makes the
    /// host refuse them too. (Linker::define_unknown_imports_as_traps is
    /// not used: it would shadow WASI imports that semver matching serves.)
    fn deny_ungranted(&self, linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
        let engine = self.engine();
        for (name, item) in self.component().component_type().imports(engine) {
            let ComponentItem::ComponentInstance(instance) = item.ty else {
                continue;
            };
            if !name.starts_with("kemibox:ksr/") {
                continue;
            }
            let mut scope = linker.instance(name)?;
            for (func, _) in instance.exports(engine) {
                let denied = format!("{name}#{func} is not granted to this tenant");
                // Fails with "already defined" for granted functions: skip those.
                let _ = scope.func_new(func, move |_, _, _, _| {
                    Err(wasmtime::Error::msg(denied.clone()))
                });
            }
        }
        Ok(())
    }
}
