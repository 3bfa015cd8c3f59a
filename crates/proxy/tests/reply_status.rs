//! `KSR.textopsx.change_reply_status` and the reply that goes upstream
//! once every branch failed, over real UDP sockets. As Kamailio's
//! textopsx documents, the function works on a reply, in a reply route
//! (Kamailio exports it for ONREPLY_ROUTE only): a status changed there is
//! what the caller receives, also when a failure route then runs and does
//! nothing. In a failure route the message is the request (Kamailio's
//! KEMI call fails there too, -1): the best reply goes up as received and
//! the call is logged with what to use instead.

use std::net::SocketAddr;

use common::{Ua, fast, logs, request, respond};

mod common;

/// Relay to `uas` with a reply route (`rewrite` = the reply route
/// rewrites 486) and a failure route that tries to change the status and
/// logs what the call returned.
fn script(uas: SocketAddr, rewrite: bool) -> String {
    let on_reply = if rewrite {
        r#"KSR.tm.t_on_reply("rewrite")"#
    } else {
        ""
    };
    format!(
        r#"
function ksr_request_route()
    if KSR.siputils.has_totag() > 0 then
        KSR.tm.t_relay()
        return
    end
    {on_reply}
    KSR.tm.t_on_failure("failed")
    KSR.pv.sets("$du", "sip:{uas}")
    KSR.tm.t_relay()
end

function rewrite()
    if KSR.pv.get("$rs") == 486 then
        KSR.textopsx.change_reply_status(404, "Not Here")
    end
end

function failed()
    local r = KSR.textopsx.change_reply_status(480, "Later")
    KSR.xlog.xinfo("reply-status-test: $ci: failure route, change_reply_status " .. r .. ", $T_reply_code\n")
end
"#
    )
}

/// An INVITE through a proxy running `script(uas, rewrite)`, refused by
/// the callee with 486: the final reply the caller receives.
async fn refused_call(rewrite: bool, call: &str) -> String {
    let (uac, uas) = (Ua::new().await, Ua::new().await);
    let proxy =
        common::start_with(&script(uas.addr, rewrite), &["udp:127.0.0.1:0"], fast()).await[0].1;
    uac.send(
        &request("INVITE", "sip:bob@example.com", uac.addr, "s1", call, 1),
        proxy,
    )
    .await;
    let (got, from) = uas.expect("INVITE ").await;
    uas.send(&respond(&got, 486, "Busy Here", "b1"), from).await;
    let (reply, _) = uac.expect("SIP/2.0 4").await;
    uas.expect("ACK ").await;
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_changed_in_the_reply_route_goes_up_after_the_failure_route() {
    logs::capture();
    let reply = refused_call(true, "rewritten").await;
    assert!(reply.starts_with("SIP/2.0 404 Not Here\r\n"), "{reply}");
    // The failure route ran: its call refused (the message is the
    // request), and `$T_reply_code` is the code the callee sent.
    let ran = logs::logged(&[
        "reply-status-test: rewritten@test: failure route, change_reply_status -1, 486",
    ]);
    assert!(
        !ran.is_empty(),
        "{:?}",
        logs::logged(&["reply-status-test"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_failure_route_the_call_fails_and_the_best_reply_goes_up_unchanged() {
    logs::capture();
    let reply = refused_call(false, "unchanged").await;
    assert!(reply.starts_with("SIP/2.0 486 Busy Here\r\n"), "{reply}");
    let ran = logs::logged(&[
        "reply-status-test: unchanged@test: failure route, change_reply_status -1, 486",
    ]);
    assert!(
        !ran.is_empty(),
        "{:?}",
        logs::logged(&["reply-status-test"])
    );
    let refused = logs::logged(&[
        "KSR.textopsx.change_reply_status",
        "failure_route",
        "t_on_reply",
    ]);
    assert!(
        !refused.is_empty(),
        "the refusal says where the status can change: {:?}",
        logs::logged(&["change_reply_status"])
    );
}
