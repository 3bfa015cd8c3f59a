//! Lua errors inside the sandbox: caught by pcall, reported with
//! script:line when uncaught, and the instance keeps working.

mod common;

use common::ksr::logs;
use common::*;
use kemibox_kemi::Event;
use kemibox_sandbox::{Instance, Outcome, Tenant};

async fn instance(source: &str) -> Instance {
    Tenant::load(&runtime(), spec("errors", source))
        .await
        .expect("loads")
        .1
}

#[tokio::test]
async fn pcall_catches_error_and_nil_indexing() {
    let mut i = instance(
        r#"
function ksr_request_route()
    local ok, err = pcall(error, "boom")
    KSR.info("error: " .. tostring(ok) .. " " .. err)
    local ok2, err2 = pcall(function() local t = nil; return t.field end)
    KSR.info("index: " .. tostring(ok2) .. " " .. err2)
    local ok3, err3 = xpcall(function() error({code = 7}) end, function(e) return e.code end)
    KSR.info("xpcall: " .. tostring(ok3) .. " " .. tostring(err3))
    return 1
end
"#,
    )
    .await;
    i.ctx().record_logs = true;
    let inv = i.invoke("ksr_request_route", Some(invite())).await;
    assert_eq!(inv.outcome, Outcome::Ok { ret: 1 });
    assert_eq!(
        logs(&inv),
        vec![
            "error: false boom".to_string(),
            "index: false errors.lua:5: attempt to index a nil value (local 't')".to_string(),
            "xpcall: false 7".to_string(),
        ]
    );
}

#[tokio::test]
async fn uncaught_error_reports_script_line_and_traceback_then_instance_keeps_working() {
    let mut i = instance(
        "counter = 0\n\
         local function inner()\n\
           error('routing failed')\n\
         end\n\
         function ksr_request_route()\n\
           counter = counter + 1\n\
           if counter == 1 then inner() end\n\
           return counter\n\
         end\n",
    )
    .await;
    let first = i.invoke("ksr_request_route", Some(invite())).await;
    match &first.outcome {
        Outcome::LuaError {
            message,
            line,
            traceback,
        } => {
            assert_eq!(message, "errors.lua:3: routing failed");
            assert_eq!(*line, Some(3));
            assert!(
                traceback.contains("errors.lua:7"),
                "traceback names the caller: {traceback}"
            );
        }
        other => panic!("expected a Lua error, got {other:?}"),
    }
    assert_eq!(
        first.location("errors.lua").as_deref(),
        Some("errors.lua:3")
    );
    assert!(!i.is_poisoned(), "a Lua error does not poison the instance");
    let second = i.invoke("ksr_request_route", Some(invite())).await;
    assert_eq!(
        second.outcome,
        Outcome::Ok { ret: 2 },
        "globals survive, the instance works"
    );
}

#[tokio::test]
async fn rust_side_ksr_error_is_catchable_with_pcall() {
    let mut i = instance(
        r#"
function ksr_request_route()
    local huge = string.rep("x", 70000)
    local ok, err = pcall(KSR.hdr.append, "X-Big: " .. huge)
    KSR.info(tostring(ok) .. " " .. tostring(err))
    return 5
end
"#,
    )
    .await;
    i.ctx().record_logs = true;
    let inv = i.invoke("ksr_request_route", Some(invite())).await;
    assert_eq!(inv.outcome, Outcome::Ok { ret: 5 });
    let log = &logs(&inv)[0];
    assert!(
        log.starts_with("false ") && log.contains("bad argument #1 to 'KSR.hdr.append'"),
        "{log}"
    );
}

#[tokio::test]
async fn bad_argument_types_give_negative_results_and_a_log_line() {
    let mut i = instance(
        r#"
function ksr_request_route()
    local r = KSR.hdr.append({})
    local f = KSR.setflag("not a number")
    local v = KSR.pv.get(nil)
    KSR.info("results " .. r .. " " .. tostring(f) .. " " .. tostring(v))
    return 1
end
"#,
    )
    .await;
    i.ctx().record_logs = true;
    let inv = i.invoke("ksr_request_route", Some(invite())).await;
    assert_eq!(inv.outcome, Outcome::Ok { ret: 1 });
    let logs = logs(&inv);
    assert!(
        logs[0].contains("KSR.hdr.append: bad argument #1 (string expected, got table)"),
        "{logs:?}"
    );
    assert!(
        logs[1].contains("KSR.setflag: bad argument #1 (integer expected, got string)"),
        "{logs:?}"
    );
    assert!(
        logs[2].contains("KSR.pv.get: bad argument #1 (string expected, got nil)"),
        "{logs:?}"
    );
    assert_eq!(logs[3], "results -1 false nil");
}

#[tokio::test]
async fn exit_and_drop_end_the_route_even_inside_pcall() {
    let mut i = instance(
        r#"
function ksr_request_route()
    pcall(function() KSR.x.exit() end)
    KSR.info("not reached")
end
function drop_route()
    pcall(KSR.x.drop)
    KSR.info("not reached")
end
"#,
    )
    .await;
    i.ctx().record_logs = true;
    let inv = i.invoke("ksr_request_route", Some(invite())).await;
    assert_eq!(inv.outcome, Outcome::Ok { ret: 0 });
    assert_eq!(inv.events, vec![Event::Exit]);
    assert!(!inv.message.as_ref().unwrap().drop);
    let inv = i.invoke("drop_route", Some(invite())).await;
    assert_eq!(inv.outcome, Outcome::Ok { ret: 0 });
    assert_eq!(inv.events, vec![Event::Drop]);
    assert!(inv.message.as_ref().unwrap().drop);
}

#[tokio::test]
async fn return_values_map_to_kemi_integers() {
    let mut i = instance(
        "function ksr_request_route() end\n\
         function t() return true end\n\
         function f() return false end\n\
         function n() return -3 end\n",
    )
    .await;
    for (f, want) in [("ksr_request_route", 1), ("t", 1), ("f", -1), ("n", -3)] {
        assert_eq!(
            i.invoke(f, None).await.outcome,
            Outcome::Ok { ret: want },
            "{f}"
        );
    }
    let missing = i.invoke("nope", None).await;
    assert!(
        matches!(missing.outcome, Outcome::NotFound { .. }),
        "{:?}",
        missing.outcome
    );
    assert!(
        matches!(
            i.invoke("print", None).await.outcome,
            Outcome::NotFound { .. }
        ),
        "sandbox functions are not routes"
    );
}

#[tokio::test]
async fn load_errors_name_the_line() {
    let syntax = Tenant::load(
        &runtime(),
        spec(
            "bad",
            "function ksr_request_route()\n  local x = = 1\nend\n",
        ),
    )
    .await;
    let failure = syntax.err().expect("syntax error refused");
    assert_eq!(failure.line, Some(2));
    assert!(failure.to_string().starts_with("bad.lua:2: "), "{failure}");

    let runtime_error = Tenant::load(&runtime(), spec("bad", "local t = nil\nprint(t.x)\n")).await;
    let failure = runtime_error.err().expect("runtime error refused");
    assert_eq!(failure.line, Some(2));

    let missing = Tenant::load(&runtime(), spec("bad", "function other() end\n")).await;
    let failure = missing.err().expect("missing entry refused");
    assert_eq!(
        failure.to_string(),
        "bad.lua: the script does not define function ksr_request_route()"
    );
}

#[tokio::test]
async fn a_ksr_function_misused_is_logged_with_the_calling_script_line() {
    let mut i = instance(
        "function ksr_request_route()\n\
           local bad = KSR.textops.search('(unclosed')\n\
           local fine = KSR.textops.search('INVITE')\n\
           return bad * 10 + fine\n\
         end\n",
    )
    .await;
    i.ctx().record_logs = true;
    let inv = i.invoke("ksr_request_route", Some(invite())).await;
    assert_eq!(inv.outcome, Outcome::Ok { ret: -9 });
    let logs = logs(&inv);
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(
        logs[0].starts_with("errors.lua:2: KSR.textops.search: "),
        "{logs:?}"
    );
}
