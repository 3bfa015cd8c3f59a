//! The route runner's policy over real UDP sockets: a reply whose reply
//! routes fail is still forwarded; a failure route may suspend its
//! transaction, and what it may not do (a stateless forward) is refused
//! with a log line; a branch-failure route runs for each failed branch,
//! before the failure route, and may start a new branch.

use std::net::SocketAddr;
use std::time::Duration;

use common::{Ua, fast, logs, request, respond};

mod common;

/// Start a proxy running `script`, send an INVITE of call `call` from
/// `uac`, and return the proxy and the INVITE as `callee` got it, with
/// where it came from.
async fn invite(
    script: &str,
    uac: &Ua,
    callee: &Ua,
    call: &str,
) -> (SocketAddr, String, SocketAddr) {
    let proxy = common::start_with(script, &["udp:127.0.0.1:0"], fast()).await[0].1;
    let invite = request("INVITE", "sip:bob@example.com", uac.addr, call, call, 1);
    uac.send(&invite, proxy).await;
    let (got, from) = callee.expect("INVITE ").await;
    (proxy, got, from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_are_forwarded_when_their_reply_routes_fail() {
    logs::capture();
    let (uac, uas) = (Ua::new().await, Ua::new().await);
    let script = format!(
        r#"
function ksr_request_route()
    KSR.pv.sets("$du", "sip:{}")
    KSR.tm.t_on_reply("broken_onreply")
    KSR.tm.t_relay()
end
function ksr_reply_route()
    error("reply route broken on purpose")
end
function broken_onreply()
    local t = nil
    return t.field
end
"#,
        uas.addr
    );
    let (_proxy, got, from) = invite(&script, &uac, &uas, "replyfail").await;
    uas.send(&respond(&got, 180, "Ringing", "b1"), from).await;
    uac.expect("SIP/2.0 180 ").await;
    uas.send(&respond(&got, 200, "OK", "b1"), from).await;
    let (ok, _) = uac.expect("SIP/2.0 200 ").await;
    assert!(ok.contains("Call-ID: replyfail@test"), "{ok}");
    // Each failure is logged once, with the route kind and the script line.
    assert!(
        !logs::logged(&["route=\"reply_route\"", "reply route broken on purpose"]).is_empty(),
        "the reply route's failure is logged"
    );
    assert!(
        !logs::logged(&["route=\"onreply_route\"", "attempt to index"]).is_empty(),
        "the onreply route's failure is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_route_suspends_and_its_forward_is_refused_with_a_log_line() {
    logs::capture();
    let (uac, busy, uas) = (Ua::new().await, Ua::new().await, Ua::new().await);
    let script = format!(
        r#"
function ksr_request_route()
    if KSR.is_MESSAGE() then
        local index, label = string.match(KSR.hdr.get("X-Resume") or "", "(%d+) (%d+)")
        if index and KSR.tmx.t_continue(tonumber(index), tonumber(label), "resume") > 0 then
            KSR.sl.send_reply(202, "Resuming")
        else
            KSR.sl.send_reply(400, "Bad Resume")
        end
        return
    end
    KSR.pv.sets("$du", "sip:{busy}")
    KSR.tm.t_on_failure("busy_elsewhere")
    KSR.tm.t_relay()
end
function busy_elsewhere()
    KSR.info("forward_uri returned " .. KSR.forward_uri("sip:{uas}"))
    if KSR.tmx.t_suspend() > 0 then
        KSR.info("parked " .. KSR.pv.get("$T(id_index)") .. " " .. KSR.pv.get("$T(id_label)") .. " for failroute@test")
    end
end
function resume()
    KSR.pv.sets("$du", "sip:{uas}")
    KSR.tm.t_relay()
end
"#,
        busy = busy.addr,
        uas = uas.addr
    );
    let (proxy, got, from) = invite(&script, &uac, &busy, "failroute").await;
    busy.send(&respond(&got, 486, "Busy Here", "x1"), from)
        .await;
    // The refused stateless forward sends nothing, and is logged.
    assert!(uas.recv_within(0.3).await.is_none(), "nothing forwarded");
    // Refused at the call, as Kamailio refuses it: -1 for the script and a
    // log line naming the script's line.
    let line = 1 + script
        .lines()
        .position(|l| l.contains("KSR.forward_uri"))
        .expect("the script calls it");
    let refusal = format!("test.lua:{line}: KSR.forward_uri is not allowed in this route type");
    assert!(
        !logs::logged(&[refusal.as_str()]).is_empty(),
        "the refusal is logged: {refusal}"
    );
    assert!(
        !logs::logged(&["forward_uri returned -1"]).is_empty(),
        "the script got -1"
    );
    // The caller waits: no final reply while the transaction is parked.
    assert!(
        uac.recv_within(0.2)
            .await
            .is_none_or(|(m, _)| !m.starts_with("SIP/2.0 4")),
        "no final reply while suspended"
    );
    let parked = logs::logged(&["parked ", "for failroute@test"]);
    let ids = parked
        .first()
        .and_then(|l| l.split("parked ").nth(1))
        .map(|rest| rest.split(" for").next().unwrap_or("").to_string())
        .expect("the failure route logged its ids");
    let resume = common::resume_request(uac.addr, &ids, "failresume");
    uac.send(&resume, proxy).await;
    uac.expect("SIP/2.0 202 ").await;
    let (relayed, from) = uas.expect("INVITE ").await;
    assert!(relayed.contains("Call-ID: failroute@test"), "{relayed}");
    uas.send(&respond(&relayed, 200, "OK", "u1"), from).await;
    uac.expect("SIP/2.0 200 ").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_failure_routes_run_per_failed_branch_before_the_failure_route() {
    logs::capture();
    let (uac, first, second) = (Ua::new().await, Ua::new().await, Ua::new().await);
    let script = format!(
        r#"
function ksr_request_route()
    KSR.pv.sets("$du", "sip:{first}")
    KSR.tm.t_on_branch_failure("branch_failed")
    KSR.tm.t_on_failure("all_failed")
    KSR.tm.t_relay()
end
function branch_failed()
    KSR.info("branch failed " .. KSR.pv.get("$ci") .. " 486:" .. KSR.tm.t_check_status("486")
        .. " failure_route:" .. KSR.tmx.t_is_failure_route())
    if KSR.tm.t_check_status("486") > 0 then
        KSR.pv.sets("$du", "sip:{second}")
        KSR.tm.t_relay()
    end
end
function all_failed()
    KSR.info("all failed " .. KSR.pv.get("$ci"))
    KSR.tm.t_reply(599, "All Branches Failed")
end
"#,
        first = first.addr,
        second = second.addr
    );
    let (_proxy, got, from) = invite(&script, &uac, &first, "branchfail").await;
    first
        .send(&respond(&got, 486, "Busy Here", "f1"), from)
        .await;
    // The branch-failure route started a branch to the second callee.
    let (got, from) = second.expect("INVITE ").await;
    assert!(got.contains("Call-ID: branchfail@test"), "{got}");
    second
        .send(&respond(&got, 480, "Temporarily Unavailable", "s1"), from)
        .await;
    let (reply, _) = uac.expect("SIP/2.0 599 ").await;
    assert!(reply.contains("Call-ID: branchfail@test"), "{reply}");
    let lines = logs::logged(&["branchfail@test"]);
    let order: Vec<&str> = lines
        .iter()
        .filter_map(|l| {
            if l.contains("branch failed branchfail@test 486:1 failure_route:-1") {
                Some("branch 486")
            } else if l.contains("branch failed branchfail@test 486:-1") {
                Some("branch 480")
            } else if l.contains("all failed branchfail@test") {
                Some("failure")
            } else {
                None
            }
        })
        .collect();
    assert_eq!(order, ["branch 486", "branch 480", "failure"], "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_is_forwarded_when_its_script_version_cannot_be_instantiated() {
    logs::capture();
    let (uac, uas) = (Ua::new().await, Ua::new().await);
    // The script loads until `deadline` and fails to load after it, so
    // once its only instance is gone no instance of this version can be
    // made again.
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        // Room for a start-up that compiles the guest first.
        + 6;
    let script = format!(
        r#"
if os.time() >= {deadline} then error("this version cannot be loaded any more") end
function ksr_request_route()
    KSR.pv.sets("$du", "sip:{}")
    KSR.tm.t_on_reply("spin")
    KSR.tm.t_relay()
end
function spin()
    while true do end
end
"#,
        uas.addr
    );
    let (_proxy, got, from) = invite(&script, &uac, &uas, "versiongone").await;
    // The reply route runs out of fuel: its instance is dropped, and the
    // 180 goes on.
    uas.send(&respond(&got, 180, "Ringing", "v1"), from).await;
    uac.expect("SIP/2.0 180 ").await;
    let wait = deadline.saturating_sub(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    );
    tokio::time::sleep(Duration::from_secs(wait + 1)).await;
    uas.send(&respond(&got, 200, "OK", "v1"), from).await;
    let (ok, _) = uac.expect("SIP/2.0 200 ").await;
    assert!(ok.contains("Call-ID: versiongone@test"), "{ok}");
    assert!(
        !logs::logged(&[
            "route=\"onreply_route\"",
            "cannot run the route",
            "this version cannot be loaded any more"
        ])
        .is_empty(),
        "the version's failure is logged"
    );
}
