//! What running a KEMI route in the wasm sandbox costs, next to running the
//! same Lua natively.
//!
//! * `message/parse_only`: building the routed [`Message`] (parse an INVITE
//!   with `kemibox_sip`, wrap it). The route benches build their message
//!   outside the timed region, so this is reported apart.
//! * `sandbox/route_hello`, `sandbox/route_small`: one `Instance::invoke` on
//!   a reused instance (fuel, deadline and memory cap on, as in production)
//!   of a trivial route and of a small one making 5 KSR calls.
//! * `native/route_hello`, `native/route_small`: the same scripts in mlua
//!   compiled for the host, with the guest's own prelude (`xpcall`, frozen
//!   `KSR`) and a `KSR` table whose Rust functions call the very same host
//!   implementations (`kemibox_kemi::Ctx`) the sandbox links in. Both sides
//!   therefore parse the same message, make the same `Edits` and record the
//!   same events (checked before measuring), and the ratio sandbox/native is
//!   the cost of the sandbox itself: wasm execution with fuel metering, the
//!   component-model boundary on each KSR call, and the per-invocation
//!   arming of the limits.
//! * `sandbox/fresh_instance`: `Instance::new`: a new Store, instantiation
//!   and loading the script (what replacing a poisoned instance costs).
//!
//! The sandbox is async (wasmtime async support). Each criterion sample runs
//! all its iterations inside one `block_on` of a tokio current-thread
//! runtime, as a proxy task would, so no per-call executor entry is
//! measured; inputs are built and outputs dropped outside the timed region,
//! the native benches use the same harness. Fuel per invocation is printed
//! to stderr before the benches run.
//!
//! `cargo bench -p kemibox-sandbox --bench invoke`; `docs/benchmarks.md`
//! has figures.

use std::future::Future;
use std::hint::black_box;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use kemibox_kemi::api::EXPORTS;
use kemibox_kemi::bindings::kemibox::ksr::{core, maxfwd, pv, rr, sl, tm, x};
use kemibox_kemi::{Ctx, Event, Message, Myself, Transport};
use kemibox_sandbox::{Instance, Invocation, Limits, Outcome, Runtime, Tenant, TenantSpec};
use kemibox_sip::SipMessage;
use mlua::{Function, Lua, LuaOptions, StdLib, Table, Value};

/// A small realistic request route: 5 KSR calls on an INVITE.
const ROUTE_SMALL: &str = r#"
function ksr_request_route()
    if KSR.maxfwd.process_maxfwd(10) < 0 then KSR.sl.send_reply(483, "Too Many Hops") return end
    if KSR.is_INVITE() then KSR.rr.record_route() end
    KSR.pv.sets("$du", "sip:127.0.0.1:5080")
    return KSR.tm.t_relay()
end
"#;

/// The floor: no KSR call at all.
const ROUTE_HELLO: &str = "function ksr_request_route() return 1 end\n";

const ENTRY: &str = "ksr_request_route";

/// The guest's Lua prelude, run natively too so both sides execute the
/// same Lua around the route.
const PRELUDE: &str = include_str!("../../../guest-lua/src/prelude.lua");

const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-bench-1\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=a1\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: call-1@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@127.0.0.1:5070>\r\n\
User-Agent: bench-ua\r\n\
Content-Length: 0\r\n\r\n";

/// Inputs are built, and outputs kept, this many at a time.
const BATCH: u64 = 256;

fn source() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5070))
}

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5060))
}

fn myself() -> Arc<Myself> {
    Arc::new(Myself {
        addresses: vec![local()],
        domains: vec![],
    })
}

/// The routed message, as the proxy builds it from a received datagram.
fn invite() -> Message {
    let sip = SipMessage::parse(INVITE.as_bytes().to_vec()).expect("the INVITE parses");
    Message::new(sip, source(), local(), Transport::Udp)
}

/// What a route did, comparable between the two sides.
#[derive(Debug, PartialEq)]
struct Effect {
    ret: i32,
    events: Vec<Event>,
    dst_uri: Option<String>,
    rendered: Vec<u8>,
}

impl Effect {
    fn new(ret: i32, events: Vec<Event>, message: Option<Message>) -> Effect {
        let message = message.expect("the message comes back");
        Effect {
            ret,
            events,
            rendered: kemibox_sip::render(&message.sip, &message.edits).to_vec(),
            dst_uri: message.dst_uri,
        }
    }
}

// ---------------------------------------------------------------- sandbox

fn spec(id: &str, source: &str) -> TenantSpec {
    let name = format!("{id}.lua");
    let mut spec = TenantSpec::new(id.parse().expect("a valid tenant id"), name, source);
    spec.myself = myself();
    spec
}

async fn load(runtime: &Runtime, id: &str, source: &str) -> (Arc<Tenant>, Instance) {
    Tenant::load(runtime, spec(id, source))
        .await
        .expect("the script loads")
}

fn sandbox_effect(inv: Invocation) -> Effect {
    let Outcome::Ok { ret } = inv.outcome else {
        panic!("route failed: {:?}", inv.outcome);
    };
    Effect::new(ret, inv.events, inv.message)
}

/// Time `iters` invocations of the entry function, each on a fresh message.
async fn time_invokes(instance: &mut Instance, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(BATCH);
        let inputs: Vec<Message> = (0..n).map(|_| invite()).collect();
        let mut outputs = Vec::with_capacity(inputs.len());
        let start = Instant::now();
        for message in inputs {
            outputs.push(instance.invoke(ENTRY, Some(message)).await);
        }
        total += start.elapsed();
        assert!(
            outputs.iter().all(|inv| inv.outcome.is_ok()),
            "an invocation failed"
        );
        drop(black_box(outputs));
        left -= n;
    }
    total
}

/// Fuel one invocation uses: (min, max) over `n` invocations.
async fn fuel_range(instance: &mut Instance, n: usize) -> (u64, u64) {
    let mut range = (u64::MAX, 0);
    for _ in 0..n {
        let inv = instance.invoke(ENTRY, Some(invite())).await;
        assert!(inv.outcome.is_ok(), "{:?}", inv.outcome);
        range = (range.0.min(inv.fuel_used), range.1.max(inv.fuel_used));
    }
    range
}

// ----------------------------------------------------------------- native

/// Drive a host function to completion. The KSR host functions are `async`
/// for wasmtime but never suspend, so one poll finishes them.
fn ready<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a KSR host function suspended"),
    }
}

fn ctx(lua: &Lua) -> mlua::AppDataRefMut<'_, Ctx> {
    lua.app_data_mut::<Ctx>().expect("the Ctx is installed")
}

/// Put `f` where the guest's generated table puts the KSR export `key`
/// (`"tm.t_relay"`, `"core.info"`): on `KSR` itself for `core`, else in
/// `KSR.<module>`. The place and the Lua name come from the API table
/// generated from wit/, like the guest's, so the native table cannot drift
/// from it; a key wit/ does not declare panics.
fn install(lua: &Lua, ksr: &Table, key: &str, f: Function) -> mlua::Result<()> {
    let export = EXPORTS
        .iter()
        .find(|e| e.key() == key)
        .unwrap_or_else(|| panic!("wit/ declares no KSR function {key}"));
    if export.module == "core" {
        return ksr.raw_set(export.name, f);
    }
    let module = match ksr.raw_get::<Option<Table>>(export.module)? {
        Some(module) => module,
        None => {
            let module = lua.create_table()?;
            ksr.raw_set(export.module, &module)?;
            module
        }
    };
    module.raw_set(export.name, f)
}

/// The `KSR` functions the two scripts use (plus what the prelude needs),
/// each calling the host implementation the sandbox links in.
fn native_ksr(lua: &Lua) -> mlua::Result<Table> {
    let ksr = lua.create_table()?;
    let f = lua.create_function(|lua, msg: String| {
        ready(core::Host::info(&mut *ctx(lua), msg));
        Ok(())
    })?;
    install(lua, &ksr, "core.info", f)?;
    let f = lua.create_function(|lua, ()| Ok(ready(core::Host::is_invite(&mut *ctx(lua)))))?;
    install(lua, &ksr, "core.is_INVITE", f)?;
    let f = lua.create_function(|lua, ()| {
        ready(x::Host::exit(&mut *ctx(lua)));
        Ok(())
    })?;
    install(lua, &ksr, "x.exit", f)?;
    let f = lua.create_function(|lua, ()| {
        ready(x::Host::drop(&mut *ctx(lua)));
        Ok(())
    })?;
    install(lua, &ksr, "x.drop", f)?;
    let f = lua.create_function(|lua, limit: i32| {
        Ok(ready(maxfwd::Host::process_maxfwd(&mut *ctx(lua), limit)))
    })?;
    install(lua, &ksr, "maxfwd.process_maxfwd", f)?;
    let f = lua.create_function(|lua, (code, reason): (i32, String)| {
        Ok(ready(sl::Host::send_reply(&mut *ctx(lua), code, reason)))
    })?;
    install(lua, &ksr, "sl.send_reply", f)?;
    let f = lua.create_function(|lua, ()| Ok(ready(rr::Host::record_route(&mut *ctx(lua)))))?;
    install(lua, &ksr, "rr.record_route", f)?;
    let f = lua.create_function(|lua, (name, value): (String, String)| {
        ready(pv::Host::sets(&mut *ctx(lua), name, value));
        Ok(())
    })?;
    install(lua, &ksr, "pv.sets", f)?;
    let f = lua.create_function(|lua, ()| Ok(ready(tm::Host::t_relay(&mut *ctx(lua)))))?;
    install(lua, &ksr, "tm.t_relay", f)?;
    Ok(ksr)
}

/// The route script in a host Lua state set up as the guest sets up its
/// own (same libraries, prelude, memory limit, protected call).
struct Native {
    lua: Lua,
    run: Function,
}

impl Native {
    fn new(source: &str) -> mlua::Result<Native> {
        let libs = StdLib::STRING
            | StdLib::TABLE
            | StdLib::MATH
            | StdLib::UTF8
            | StdLib::COROUTINE
            | StdLib::OS
            | StdLib::DEBUG;
        // SAFETY: as in the guest, the debug library is only loaded for
        // `debug.traceback`; the prelude removes the rest before the script.
        #[allow(unsafe_code, reason = "mlua's only way to load the debug library")]
        let lua = unsafe { Lua::unsafe_new_with(libs, LuaOptions::default()) };
        let traceback: Function = lua.globals().get::<Table>("debug")?.get("traceback")?;
        let ksr = native_ksr(&lua)?;
        let prelude = lua
            .load(PRELUDE)
            .set_name("=kemibox-prelude")
            .into_function()?;
        let (_exit, run): (Value, Function) = prelude.call((ksr, traceback))?;
        lua.set_memory_limit(Limits::default().lua_memory() as usize)?;
        lua.set_app_data(Ctx::new(
            "bench".parse().expect("a valid tenant id"),
            myself(),
            kemibox_kemi::Services::in_memory(),
        ));
        let chunk = lua
            .load(source)
            .set_name("@bench.lua")
            .set_mode(mlua::chunk::ChunkMode::Text)
            .into_function()?;
        let (ok, value): (bool, Value) = run.call(chunk)?;
        assert!(ok, "the script loads: {value:?}");
        Ok(Native { lua, run })
    }

    /// Mirror of the guest's `invoke` plus the host's bookkeeping around it.
    fn invoke(&self, function: &str, message: Message) -> (i32, Vec<Event>, Option<Message>) {
        ctx(&self.lua).begin(Some(message));
        let func: Function = self
            .lua
            .globals()
            .raw_get(function)
            .expect("the route is defined");
        let (ok, value): (bool, Value) = self.run.call(func).expect("the route runs");
        assert!(ok, "route failed: {value:?}");
        let ret = match value {
            Value::Integer(i) => i.clamp(i32::MIN as i64, i32::MAX as i64) as i32,
            Value::Number(n) if n.is_finite() => n.clamp(i32::MIN as f64, i32::MAX as f64) as i32,
            Value::Boolean(false) => -1,
            _ => 1,
        };
        let mut ctx = ctx(&self.lua);
        (ret, std::mem::take(&mut ctx.events), ctx.message.take())
    }
}

/// Time `iters` native invocations, same harness as [`time_invokes`].
fn time_native(native: &Native, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(BATCH);
        let inputs: Vec<Message> = (0..n).map(|_| invite()).collect();
        let mut outputs = Vec::with_capacity(inputs.len());
        let start = Instant::now();
        for message in inputs {
            outputs.push(native.invoke(ENTRY, message));
        }
        total += start.elapsed();
        drop(black_box(outputs));
        left -= n;
    }
    total
}

// ---------------------------------------------------------------- benches

#[allow(clippy::print_stderr, reason = "a benchmark reports what it measured")]
fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let runtime = Runtime::new(None).expect("sandbox runtime");
    let (tenant, mut small) = rt.block_on(load(&runtime, "bench", ROUTE_SMALL));
    let (_, mut hello) = rt.block_on(load(&runtime, "hello", ROUTE_HELLO));
    let native_small = Native::new(ROUTE_SMALL).expect("native state");
    let native_hello = Native::new(ROUTE_HELLO).expect("native state");

    // Both sides must do the same work.
    let sandboxed = sandbox_effect(rt.block_on(small.invoke(ENTRY, Some(invite()))));
    let (ret, events, message) = native_small.invoke(ENTRY, invite());
    let native = Effect::new(ret, events, message);
    assert_eq!(sandboxed, native, "sandbox and native routes differ");
    assert_eq!(sandboxed.ret, 1);
    assert_eq!(sandboxed.events.len(), 4, "{:?}", sandboxed.events);
    let hello_effect = sandbox_effect(rt.block_on(hello.invoke(ENTRY, Some(invite()))));
    let (ret, events, message) = native_hello.invoke(ENTRY, invite());
    assert_eq!(hello_effect, Effect::new(ret, events, message));

    let (lo, hi) = rt.block_on(fuel_range(&mut small, 1000));
    eprintln!("fuel per invocation, sandbox/route_small: {lo}..={hi} (1000 invocations)");
    let (lo, hi) = rt.block_on(fuel_range(&mut hello, 1000));
    eprintln!("fuel per invocation, sandbox/route_hello: {lo}..={hi} (1000 invocations)");

    // Dropping the message is left out, as in the route benches.
    c.bench_function("message/parse_only", |b| {
        b.iter_batched(|| (), |()| invite(), BatchSize::SmallInput)
    });
    c.bench_function("native/route_hello", |b| {
        b.iter_custom(|iters| time_native(&native_hello, iters))
    });
    c.bench_function("sandbox/route_hello", |b| {
        b.iter_custom(|iters| rt.block_on(time_invokes(&mut hello, iters)))
    });
    c.bench_function("native/route_small", |b| {
        b.iter_custom(|iters| time_native(&native_small, iters))
    });
    c.bench_function("sandbox/route_small", |b| {
        b.iter_custom(|iters| rt.block_on(time_invokes(&mut small, iters)))
    });
    c.bench_function("sandbox/fresh_instance", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let instance = Instance::new(tenant.clone()).await.expect("instance");
                    total += start.elapsed();
                    // Tearing the Store down is not part of the figure.
                    drop(black_box(instance));
                }
                total
            })
        })
    });
    assert!(!small.is_poisoned() && !hello.is_poisoned());
}

criterion_group!(invoke, benches);
criterion_main!(invoke);
