//! The stateful proxy over real UDP sockets: retransmissions absorbed,
//! timeouts answered 408, failure routes re-routing, CANCEL propagated,
//! non-2xx ACKs generated hop by hop.

use std::net::SocketAddr;
use std::time::Duration;

use common::{Ua, fast, request, respond};

mod common;

fn script(uas1: SocketAddr, uas2: SocketAddr) -> String {
    format!(
        r#"
function ksr_request_route()
    if KSR.siputils.has_totag() > 0 then
        KSR.rr.loose_route()
        KSR.tm.t_relay()
        return
    end
    KSR.rr.record_route()
    KSR.pv.sets("$du", "sip:{uas1}")
    KSR.tm.t_on_failure("reroute")
    KSR.tm.t_relay()
end

function reroute()
    if KSR.tm.t_is_canceled() > 0 then return end
    if KSR.tmx.t_is_failure_route() < 0 or KSR.tm.t_check_status("486|408") < 0 then return end
    if KSR.isflagset(5) then return end
    KSR.setflag(5)
    KSR.info("rerouting\n")
    KSR.pv.sets("$du", "sip:{uas2}")
    KSR.tm.t_relay()
end
"#
    )
}

async fn setup() -> (SocketAddr, Ua, Ua, Ua) {
    let (uac, uas1, uas2) = (Ua::new().await, Ua::new().await, Ua::new().await);
    let proxy =
        common::start_with(&script(uas1.addr, uas2.addr), &["udp:127.0.0.1:0"], fast()).await[0].1;
    (proxy, uac, uas1, uas2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retransmitted_invite_is_absorbed_and_answered_100() {
    let (proxy, uac, uas1, _uas2) = setup().await;
    let invite = request(
        "INVITE",
        "sip:bob@example.com",
        uac.addr,
        "r1",
        "retrans",
        1,
    );
    uac.send(&invite, proxy).await;
    let (first, _) = uas1.expect("INVITE ").await;
    uac.send(&invite, proxy).await;
    uac.send(&invite, proxy).await;
    uac.expect("SIP/2.0 100 ").await;
    // The callee sees our own retransmission (Timer A) but none caused by the caller's.
    let ringing = respond(&first, 180, "Ringing", "b1");
    let (_, from) = uas1
        .recv_within(0.0)
        .await
        .map_or((String::new(), proxy), |m| m);
    uas1.send(&ringing, from).await;
    uac.expect("SIP/2.0 180 ").await;
    uac.send(&invite, proxy).await;
    let (again, _) = uac.expect("SIP/2.0 180 ").await;
    assert!(
        again.contains("tag=b1"),
        "the last provisional is re-sent: {again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_branches_time_out_with_408() {
    let uac = Ua::new().await;
    let silent = Ua::new().await;
    let script = format!(
        "function ksr_request_route()\n KSR.pv.sets('$du', 'sip:{}')\n KSR.tm.t_relay()\nend\n",
        silent.addr
    );
    let proxy = common::start_with(&script, &["udp:127.0.0.1:0"], fast()).await[0].1;
    uac.send(
        &request(
            "INVITE",
            "sip:bob@example.com",
            uac.addr,
            "t1",
            "timeout",
            1,
        ),
        proxy,
    )
    .await;
    let (reply, _) = uac.expect("SIP/2.0 408 ").await;
    assert!(reply.contains("Call-ID: timeout@test"), "{reply}");
    // The callee got the INVITE and our retransmissions of it.
    let mut count = 0;
    while silent.recv_within(0.05).await.is_some() {
        count += 1;
    }
    assert!(count >= 3, "Timer A retransmissions: {count}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_callee_is_acked_and_the_failure_route_reroutes() {
    let (proxy, uac, uas1, uas2) = setup().await;
    uac.send(
        &request("INVITE", "sip:bob@example.com", uac.addr, "b1", "busy", 1),
        proxy,
    )
    .await;
    let (invite1, from) = uas1.expect("INVITE ").await;
    uas1.send(&respond(&invite1, 486, "Busy Here", "u1"), from)
        .await;
    let (ack, _) = uas1.expect("ACK ").await;
    assert!(ack.contains("CSeq: 1 ACK"), "{ack}");
    let (invite2, from2) = uas2.expect("INVITE ").await;
    assert!(invite2.contains("Call-ID: busy@test"));
    uas2.send(&respond(&invite2, 200, "OK", "u2"), from2).await;
    let (ok, _) = uac.expect("SIP/2.0 200 ").await;
    assert!(ok.contains("tag=u2"), "{ok}");
    assert_eq!(ok.matches("Via:").count(), 1, "{ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_ringing_gives_487_and_cancels_the_callee() {
    let (proxy, uac, uas1, _uas2) = setup().await;
    let invite = request("INVITE", "sip:bob@example.com", uac.addr, "c1", "cancel", 1);
    uac.send(&invite, proxy).await;
    let (inv, from) = uas1.expect("INVITE ").await;
    uas1.send(&respond(&inv, 180, "Ringing", "u1"), from).await;
    uac.expect("SIP/2.0 180 ").await;

    let cancel = request("CANCEL", "sip:bob@example.com", uac.addr, "c1", "cancel", 1);
    uac.send(&cancel, proxy).await;
    let (cancel_ok, _) = uac.expect("SIP/2.0 200 ").await;
    assert!(cancel_ok.contains("CSeq: 1 CANCEL"), "{cancel_ok}");

    let (cancel_out, from) = uas1.expect("CANCEL ").await;
    uas1.send(&respond(&cancel_out, 200, "OK", "u1"), from)
        .await;
    uas1.send(&respond(&inv, 487, "Request Terminated", "u1"), from)
        .await;
    uas1.expect("ACK ").await;

    let (terminated, _) = uac.expect("SIP/2.0 487 ").await;
    assert!(terminated.contains("CSeq: 1 INVITE"), "{terminated}");
    // The caller's ACK for the 487 is absorbed by the server transaction.
    let ack = request("ACK", "sip:bob@example.com", uac.addr, "c1", "cancel", 1).replace(
        "To: <sip:bob@example.com>",
        "To: <sip:bob@example.com>;tag=u1",
    );
    uac.send(&ack, proxy).await;
    assert!(
        uas1.recv_within(0.3).await.is_none(),
        "the 487 ACK must not reach the callee"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_route_sees_the_timeout_and_answers_itself() {
    let uac = Ua::new().await;
    let silent = Ua::new().await;
    let script = format!(
        r#"
function ksr_request_route()
    KSR.pv.sets("$du", "sip:{}")
    KSR.tm.t_on_branch("branch")
    KSR.tm.t_on_failure("failed")
    KSR.tm.t_relay()
end
function branch()
    if KSR.tmx.t_is_branch_route() > 0 then KSR.hdr.append("X-Branch: yes") end
end
function failed()
    if KSR.tm.t_branch_timeout() > 0 and KSR.tm.t_check_status("408") > 0
        and KSR.tm.t_is_set("branch_route") > 0 and KSR.tm.t_is_set("failure_route") < 0 then
        KSR.tm.t_reply(480, "Timed Out In Failure Route")
    end
end
"#,
        silent.addr
    );
    let proxy = common::start_with(&script, &["udp:127.0.0.1:0"], fast()).await[0].1;
    uac.send(
        &request(
            "INVITE",
            "sip:bob@example.com",
            uac.addr,
            "f1",
            "failure",
            1,
        ),
        proxy,
    )
    .await;
    let (invite, _) = silent.expect("INVITE ").await;
    assert!(
        invite.contains("X-Branch: yes\r\n"),
        "the branch route ran as one: {invite}"
    );
    let (reply, _) = uac.expect("SIP/2.0 480 ").await;
    assert!(
        reply.starts_with("SIP/2.0 480 Timed Out In Failure Route"),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_new_calls_and_finishes_the_ones_in_flight() {
    let (uac, uas) = (Ua::new().await, Ua::new().await);
    let script = format!(
        "function ksr_request_route()\n KSR.pv.sets('$du', 'sip:{}')\n KSR.tm.t_relay()\nend\n",
        uas.addr
    );
    let (addrs, stop, serving) =
        common::start_stoppable(&script, &["udp:127.0.0.1:0"], fast()).await;
    let proxy = addrs[0].1;
    uac.send(
        &request(
            "INVITE",
            "sip:bob@example.com",
            uac.addr,
            "s1",
            "inflight",
            1,
        ),
        proxy,
    )
    .await;
    let (invite, from) = uas.expect("INVITE ").await;

    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    uac.send(
        &request("INVITE", "sip:bob@example.com", uac.addr, "s2", "new", 1),
        proxy,
    )
    .await;
    let (refused, _) = uac.expect("SIP/2.0 503 ").await;
    assert!(
        refused.contains("Call-ID: new@test") && refused.contains("Retry-After: 5"),
        "{refused}"
    );
    assert!(!serving.is_finished(), "still serving the call in flight");

    uas.send(&respond(&invite, 200, "OK", "u1"), from).await;
    let (ok, _) = uac.expect("SIP/2.0 200 ").await;
    assert!(ok.contains("Call-ID: inflight@test"), "{ok}");
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("the proxy stops once nothing is in flight")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_route_after_a_503_sees_no_timeout() {
    let (uac, uas) = (Ua::new().await, Ua::new().await);
    let script = format!(
        r#"
function ksr_request_route()
    KSR.pv.sets("$du", "sip:{}")
    KSR.tm.t_on_failure("failed")
    KSR.tm.t_relay()
end
function failed()
    local any = KSR.tm.t_any_timeout() > 0 and "any" or "none"
    local branch = KSR.tm.t_branch_timeout() > 0 and "branch" or "nobranch"
    local status = KSR.tm.t_check_status("500") > 0 and "500" or "other"
    KSR.tm.t_reply(480, "Seen " .. any .. " " .. branch .. " " .. status)
end
"#,
        uas.addr
    );
    let proxy = common::start_with(&script, &["udp:127.0.0.1:0"], fast()).await[0].1;
    uac.send(
        &request(
            "INVITE",
            "sip:bob@example.com",
            uac.addr,
            "u5",
            "unavail",
            1,
        ),
        proxy,
    )
    .await;
    let (inv, from) = uas.expect("INVITE ").await;
    uas.send(&respond(&inv, 503, "Service Unavailable", "u1"), from)
        .await;
    let (reply, _) = uac.expect("SIP/2.0 480 ").await;
    assert!(
        // 503 goes upstream as 500 (RFC 3261 16.7 step 6), not a timeout.
        reply.starts_with("SIP/2.0 480 Seen none nobranch 500"),
        "{reply}"
    );
}
