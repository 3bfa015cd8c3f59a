//! The sandbox runtime: one wasmtime [`Engine`](wasmtime::Engine) and the Lua
//! guest component compiled once ([`Runtime`]); per tenant a pre-linked,
//! validated script ([`Tenant`]); instances with the script loaded, reused
//! across invocations ([`Instance`], [`Pool`]); and per invocation a fuel
//! budget, a wall-clock deadline and a memory cap ([`Limits`]). Every way an
//! invocation can end is a typed [`Outcome`].

mod budget;
mod cache;
mod instance;
mod limits;
mod outcome;
mod pool;
mod runtime;
mod store;
mod tenant;

pub use budget::{Take, TokenBucket};
pub use instance::Instance;
pub use limits::Limits;
pub use outcome::{Invocation, Outcome};
pub use pool::{Pool, Script};
pub use runtime::Runtime;
pub use tenant::{DEFAULT_RECREATIONS_PER_SECOND, LoadFailure, LuaModule, Tenant, TenantSpec};

/// The guest component built from `guest-lua/` (see build.rs).
pub const GUEST_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest.wasm"));
