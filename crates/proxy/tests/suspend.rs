//! `KSR.tmx.t_suspend` / `t_continue` over real UDP sockets: an INVITE is
//! parked (100 Trying, no branch) while a "push server" is told its ids;
//! a later request resumes it with a route that relays it. A transaction
//! nobody resumes fails with 408 through its failure route; a CANCEL ends
//! a parked INVITE with 487.

use std::time::Duration;

use common::{Ua, request, respond};

mod common;

/// Parks INVITEs and tells `push` the ids (a stateless copy of the INVITE
/// with an `X-Resume` header); a MESSAGE with `X-Resume: INDEX LABEL`
/// resumes that INVITE towards `uas`.
fn script(push: std::net::SocketAddr, uas: std::net::SocketAddr) -> String {
    format!(
        r#"
function ksr_request_route()
    if KSR.is_INVITE() then
        KSR.tm.t_set_fr(0, 1500)
        KSR.tm.t_on_failure("nobody_came")
        if KSR.tmx.t_suspend() < 0 then return end
        local ids = KSR.pv.get("$T(id_index)") .. " " .. KSR.pv.get("$T(id_label)")
        KSR.hdr.append("X-Resume: " .. ids .. "\r\n")
        KSR.forward_uri("sip:{push}")
        return
    end
    if KSR.is_MESSAGE() then
        local index, label = string.match(KSR.hdr.get("X-Resume") or "", "(%d+) (%d+)")
        if index and KSR.tmx.t_continue(tonumber(index), tonumber(label), "resume") > 0 then
            KSR.sl.send_reply(202, "Resuming")
        else
            KSR.sl.send_reply(400, "Bad Resume")
        end
    end
end
function resume()
    KSR.hdr.append("X-Resumed: " .. KSR.pv.get("$T(id_index)") .. "\r\n")
    KSR.pv.sets("$du", "sip:{uas}")
    KSR.tm.t_relay()
end
function nobody_came()
    if KSR.tm.t_branch_timeout() > 0 then
        KSR.tm.t_reply(480, "Nobody Came")
    end
end
"#
    )
}

async fn setup() -> (std::net::SocketAddr, Ua, Ua, Ua) {
    let (uac, push, uas) = (Ua::new().await, Ua::new().await, Ua::new().await);
    let proxy = common::start(&script(push.addr, uas.addr), &["udp:127.0.0.1:0"]).await[0].1;
    (proxy, uac, push, uas)
}

fn resume_ids(pushed: &str) -> String {
    let line = pushed
        .lines()
        .find(|l| l.starts_with("X-Resume: "))
        .unwrap_or_else(|| panic!("no ids pushed: {pushed}"));
    line.trim_start_matches("X-Resume: ").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_invite_is_resumed_by_a_later_request_and_relayed() {
    let (proxy, uac, push, uas) = setup().await;
    let invite = request("INVITE", "sip:bob@example.com", uac.addr, "s1", "parked", 1);
    uac.send(&invite, proxy).await;
    uac.expect("SIP/2.0 100 ").await;
    let (pushed, _) = push.expect("INVITE ").await;
    let ids = resume_ids(&pushed);
    // Parked: nothing reaches the callee, a retransmission is absorbed.
    uac.send(&invite, proxy).await;
    assert!(uas.recv_within(0.3).await.is_none());

    let wake = common::resume_request(uac.addr, &ids, "wake");
    uac.send(&wake, proxy).await;
    uac.expect("SIP/2.0 202 Resuming").await;

    let (inv, from) = uas.expect("INVITE ").await;
    assert!(inv.contains("Call-ID: parked@test"), "{inv}");
    // The suspending route's edits are kept, the resuming route's added,
    // and it still sees the ids.
    let index = ids.split(' ').next().unwrap();
    assert!(inv.contains(&format!("X-Resume: {ids}")), "{inv}");
    assert!(inv.contains(&format!("X-Resumed: {index}")), "{inv}");
    uas.send(&respond(&inv, 200, "OK", "u1"), from).await;
    let (ok, _) = uac.expect("SIP/2.0 200 ").await;
    assert!(ok.contains("Call-ID: parked@test"), "{ok}");

    // The ids are spent: resuming again is refused by the proxy (logged),
    // and nothing more reaches the callee.
    uac.send(
        &wake.replace("branch=z9hG4bK-w1", "branch=z9hG4bK-w2"),
        proxy,
    )
    .await;
    uac.expect("SIP/2.0 202 ").await;
    assert!(
        uas.recv_within(0.3)
            .await
            .is_none_or(|(m, _)| !m.starts_with("INVITE"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_nobody_resumes_fails_through_the_failure_route() {
    let (proxy, uac, push, _uas) = setup().await;
    let started = std::time::Instant::now();
    uac.send(
        &request(
            "INVITE",
            "sip:bob@example.com",
            uac.addr,
            "s2",
            "forgotten",
            1,
        ),
        proxy,
    )
    .await;
    push.expect("INVITE ").await;
    let (reply, _) = uac.expect("SIP/2.0 480 Nobody Came").await;
    assert!(reply.contains("Call-ID: forgotten@test"), "{reply}");
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_a_suspended_invite_with_487() {
    let (proxy, uac, push, _uas) = setup().await;
    let invite = request(
        "INVITE",
        "sip:bob@example.com",
        uac.addr,
        "s3",
        "given-up",
        1,
    );
    uac.send(&invite, proxy).await;
    let (pushed, _) = push.expect("INVITE ").await;
    let ids = resume_ids(&pushed);
    uac.send(
        &request(
            "CANCEL",
            "sip:bob@example.com",
            uac.addr,
            "s3",
            "given-up",
            1,
        ),
        proxy,
    )
    .await;
    uac.expect("SIP/2.0 200 ").await;
    uac.expect("SIP/2.0 487 ").await;
    // Too late to resume.
    let wake = common::resume_request(uac.addr, &ids, "wake3");
    uac.send(&wake, proxy).await;
    uac.expect("SIP/2.0 202 ").await;
    assert!(
        uac.recv_within(2.0)
            .await
            .is_none_or(|(m, _)| !m.starts_with("SIP/2.0 480")),
        "the canceled transaction's timeout must not fire"
    );
}
