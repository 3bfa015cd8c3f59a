//! Hostile scripts: each ends only its own invocation with a typed outcome;
//! the tenant's next invocation succeeds; another tenant running at the same
//! time is unaffected.

mod common;

use std::sync::Arc;

use common::*;
use kemibox_sandbox::{Limits, Outcome, Pool};

/// Wrap `attack` so it runs only for messages with an X-Attack header.
fn script(attack: &str) -> String {
    format!(
        "function ksr_request_route()\n\
           if KSR.hdr.is_present(\"X-Attack\") > 0 then\n{attack}\nend\n\
           KSR.pv.sets(\"$var(ok)\", \"yes\")\n\
           return 1\n\
         end\n"
    )
}

fn attack_message() -> kemibox_kemi::Message {
    message(&INVITE.replace("Content-Length: 0", "X-Attack: yes\r\nContent-Length: 0"))
}

/// Run the attack in tenant A while tenant B routes messages concurrently;
/// return A's outcome after checking A recovers and B never noticed.
async fn contained(name: &str, attack: &str, limits: Limits) -> Outcome {
    let runtime = runtime();
    let a = Arc::new(
        Pool::new(
            &runtime,
            spec_with(&format!("{name}-a"), &script(attack), limits),
            2,
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}")),
    );
    let b = Arc::new(pool(&format!("{name}-b"), &script("error('B never attacks')")).await);

    let b_task = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for _ in 0..20 {
                outcomes.push(
                    b.invoke("ksr_request_route", Some(invite()))
                        .await
                        .unwrap()
                        .outcome,
                );
                tokio::task::yield_now().await;
            }
            outcomes
        })
    };
    let attacked = a
        .invoke("ksr_request_route", Some(attack_message()))
        .await
        .unwrap();
    let next = a.invoke("ksr_request_route", Some(invite())).await.unwrap();
    let again = a.invoke("ksr_request_route", Some(invite())).await.unwrap();
    let b_outcomes = b_task.await.unwrap();

    assert!(
        !attacked.outcome.is_ok(),
        "{name}: the attack must not succeed"
    );
    assert_eq!(
        next.outcome,
        Outcome::Ok { ret: 1 },
        "{name}: next invocation of the same tenant"
    );
    assert_eq!(
        again.outcome,
        Outcome::Ok { ret: 1 },
        "{name}: and the one after"
    );
    assert!(
        b_outcomes.iter().all(|o| *o == Outcome::Ok { ret: 1 }),
        "{name}: tenant B affected: {b_outcomes:?}"
    );
    attacked.outcome
}

fn lua_error_containing(outcome: &Outcome, text: &str) -> bool {
    matches!(outcome, Outcome::LuaError { message, .. } if message.contains(text))
}

/// Enough fuel and time for memory to run out first.
fn memory_bound() -> Limits {
    Limits {
        fuel: 4_000_000_000,
        deadline_ms: 5_000,
        ..Limits::default()
    }
}

fn out_of_memory(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::OutOfMemory { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_runs_out_of_fuel() {
    let o = contained("loop", "while true do end", Limits::default()).await;
    assert_eq!(o, Outcome::OutOfFuel);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_with_huge_fuel_hits_the_deadline() {
    let limits = Limits {
        fuel: 1 << 50,
        deadline_ms: 50,
        ..Limits::default()
    };
    let o = contained("deadline", "while true do end", limits).await;
    assert_eq!(o, Outcome::Deadline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_recursion_is_a_contained_error() {
    let o = contained(
        "recursion",
        "local function f(n) return f(n + 1) + 1 end\nf(1)",
        memory_bound(),
    )
    .await;
    assert!(
        lua_error_containing(&o, "stack overflow") || out_of_memory(&o),
        "{o:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_string_rep_is_out_of_memory() {
    let o = contained("rep", "local s = string.rep('x', 1e9)", Limits::default()).await;
    assert!(out_of_memory(&o), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_growing_forever_is_out_of_memory() {
    let o = contained(
        "table",
        "local t = {}\nlocal i = 0\nwhile true do i = i + 1; t[i] = {i, i, i} end",
        memory_bound(),
    )
    .await;
    assert!(out_of_memory(&o), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_doubling_is_out_of_memory() {
    let o = contained(
        "doubling",
        "local s = 'x'\nwhile true do s = s .. s end",
        memory_bound(),
    )
    .await;
    assert!(out_of_memory(&o), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coroutine_bomb_is_contained() {
    let o = contained(
        "coroutines",
        "local cs = {}\nwhile true do cs[#cs + 1] = coroutine.create(function() end) end",
        memory_bound(),
    )
    .await;
    assert!(out_of_memory(&o), "{o:?}");
    let nested = contained(
        "nested-coroutines",
        "local function bomb() coroutine.wrap(bomb)() end\nbomb()",
        memory_bound(),
    )
    .await;
    assert!(
        lua_error_containing(&nested, "stack overflow") || out_of_memory(&nested),
        "{nested:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn os_exit_is_not_available() {
    let o = contained("exit", "os.exit(1)", Limits::default()).await;
    assert!(
        lua_error_containing(&o, "attempt to call a nil value (field 'exit')"),
        "{o:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_is_not_available() {
    let o = contained("io", "io.open('/etc/passwd')", Limits::default()).await;
    assert!(
        lua_error_containing(&o, "attempt to index a nil value (global 'io')"),
        "{o:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_of_os_is_refused() {
    let o = contained(
        "require",
        "local os = require 'os'\nos.exit()",
        Limits::default(),
    )
    .await;
    assert!(
        lua_error_containing(&o, "module 'os' is not available in the sandbox"),
        "{o:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_chunks_are_refused() {
    let attack = "local f, err = load('\\27Lua\\84\\0\\25\\147\\13\\10\\26\\10', 'x', 'b')\n\
                  if f then f() end\n\
                  error('load refused: ' .. tostring(err))";
    let o = contained("binary", attack, Limits::default()).await;
    assert!(
        lua_error_containing(&o, "attempt to load a binary chunk"),
        "{o:?}"
    );
    let dump = contained(
        "dump",
        "local d = string.dump(function() end)",
        Limits::default(),
    )
    .await;
    assert!(lua_error_containing(&dump, "field 'dump'"), "{dump:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectgarbage_abuse_is_refused_or_bounded() {
    let o = contained(
        "gc-stop",
        "collectgarbage('stop')\nlocal t = {}\nfor i = 1, 1e9 do t[i] = {} end",
        Limits::default(),
    )
    .await;
    assert!(
        lua_error_containing(&o, "collectgarbage(\"stop\") is not allowed"),
        "{o:?}"
    );
    let o = contained(
        "gc-loop",
        "while true do collectgarbage('collect') end",
        Limits::default(),
    )
    .await;
    assert_eq!(o, Outcome::OutOfFuel);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redefining_sandbox_globals_is_refused_and_the_next_invocation_works() {
    for (name, attack, expected) in [
        ("ksr-global", "KSR = nil", "cannot redefine KSR"),
        (
            "pcall-global",
            "pcall = function() return true end",
            "cannot redefine pcall",
        ),
        ("ksr-module", "KSR.tm = nil", "cannot modify KSR.tm"),
        (
            "ksr-function",
            "KSR.pv.sets = print",
            "cannot modify KSR.pv.sets",
        ),
        ("rawset", "rawset(_G, 'KSR', {})", "cannot modify KSR"),
        ("string-lib", "string.rep = nil", "cannot modify string.rep"),
        (
            "metatable",
            "setmetatable(_G, nil)",
            "cannot change a protected metatable",
        ),
    ] {
        let o = contained(name, attack, Limits::default()).await;
        assert!(lua_error_containing(&o, expected), "{name}: {o:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_ran_out_of_memory_is_replaced_by_a_fresh_one() {
    // `keep` is a global: it outlives the invocation, so the heap only grows.
    let source = r#"
keep = {}
function ksr_request_route() return 1 end
function grow()
    while true do keep[#keep + 1] = string.rep("x", 65536) .. #keep end
end
function kept() return #keep end
"#;
    let pool = Pool::new(&runtime(), spec_with("bomb", source, memory_bound()), 4)
        .await
        .unwrap();
    let created = pool.metrics().instances_created.get();
    let grown = pool.invoke("grow", None).await.unwrap().outcome;
    assert!(out_of_memory(&grown), "{grown:?}");
    // A fresh instance: its globals are the script's, not the full heap.
    assert_eq!(
        pool.invoke("kept", None).await.unwrap().outcome,
        Outcome::Ok { ret: 0 }
    );
    assert_eq!(pool.metrics().instances_created.get(), created + 2);
}
