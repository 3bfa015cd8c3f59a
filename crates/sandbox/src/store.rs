//! Store data: the KEMI context plus what wasmtime needs per instance.

use std::time::Instant;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use kemibox_kemi::Ctx;

/// Everything one instance's `Store` holds.
pub struct StoreData {
    pub ctx: Ctx,
    pub memory: MemoryCap,
    /// When the running invocation must stop (checked every epoch tick).
    pub deadline: Instant,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl StoreData {
    pub fn new(ctx: Ctx, cap: u64) -> StoreData {
        StoreData {
            ctx,
            memory: MemoryCap { cap, hit: false },
            deadline: Instant::now(),
            // No files, no environment, no network: only clocks and random.
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        }
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The hard memory cap. Remembers that it refused a growth, so a trap that
/// follows is reported as out-of-memory rather than a crash.
pub struct MemoryCap {
    cap: u64,
    pub hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired as u64 <= self.cap;
        if !ok {
            self.hit = true;
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
