//! Parallel forking (`KSR.corex.append_branch*`), stateless forwarding
//! (`KSR.forward`, `KSR.forward_uri`), `ksr_onsend_route` and per
//! transaction timers (`KSR.tm.t_set_fr`), and serial forking over registered
//! contacts (`KSR.tm.t_load_contacts` / `t_next_contacts`) over real UDP
//! sockets.

use std::time::{Duration, Instant};

use common::{Ua, request, respond};

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_branches_ring_in_parallel_and_the_loser_is_canceled() {
    let (uac, uas1, uas2) = (Ua::new().await, Ua::new().await, Ua::new().await);
    let script = format!(
        r#"
function ksr_request_route()
    if KSR.siputils.has_totag() > 0 then KSR.tm.t_relay() return end
    KSR.pv.sets("$du", "sip:{}")
    if KSR.corex.append_branch_uri_q("sip:bob@{}", "0.5") < 0 then return end
    KSR.tm.t_on_branch("per_branch")
    KSR.tm.t_relay()
end
function per_branch()
    KSR.hdr.append("X-Branch-Uri: " .. KSR.pv.get("$ru") .. "\r\n")
end
"#,
        uas1.addr, uas2.addr
    );
    let proxy = common::start(&script, &["udp:127.0.0.1:0"]).await[0].1;
    let invite = request("INVITE", "sip:bob@example.com", uac.addr, "f1", "fork", 1);
    uac.send(&invite, proxy).await;

    let (inv1, from1) = uas1.expect("INVITE ").await;
    let (inv2, from2) = uas2.expect("INVITE ").await;
    assert!(inv1.starts_with("INVITE sip:bob@example.com "), "{inv1}");
    assert!(
        inv2.starts_with(&format!("INVITE sip:bob@{} ", uas2.addr)),
        "{inv2}"
    );
    // The branch route ran once per branch, with that branch's R-URI.
    assert!(inv1.contains("X-Branch-Uri: sip:bob@example.com"), "{inv1}");
    assert!(
        inv2.contains(&format!("X-Branch-Uri: sip:bob@{}", uas2.addr)),
        "{inv2}"
    );

    uas1.send(&respond(&inv1, 180, "Ringing", "u1"), from1)
        .await;
    uac.expect("SIP/2.0 180 ").await;
    uas2.send(&respond(&inv2, 200, "OK", "u2"), from2).await;
    let (ok, _) = uac.expect("SIP/2.0 200 ").await;
    assert!(ok.contains("tag=u2"), "{ok}");

    // The ringing branch is canceled (RFC 3261 16.7 step 10).
    let (cancel, from) = uas1.expect("CANCEL ").await;
    assert!(cancel.contains("CSeq: 1 CANCEL"), "{cancel}");
    uas1.send(&respond(&cancel, 200, "OK", "u1"), from).await;
    uas1.send(&respond(&inv1, 487, "Request Terminated", "u1"), from1)
        .await;
    uas1.expect("ACK ").await;
    assert!(
        uac.recv_within(0.3)
            .await
            .is_none_or(|(m, _)| !m.starts_with("SIP/2.0 487")),
        "the caller must not see the canceled branch's 487"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_uri_relays_statelessly_and_the_reply_comes_back_by_via() {
    let (uac, uas) = (Ua::new().await, Ua::new().await);
    let script = format!(
        "function ksr_request_route()\n KSR.forward_uri('sip:{}')\nend\n",
        uas.addr
    );
    let proxy = common::start(&script, &["udp:127.0.0.1:0"]).await[0].1;
    let options = request(
        "OPTIONS",
        "sip:bob@example.com",
        uac.addr,
        "s1",
        "stateless",
        1,
    );
    uac.send(&options, proxy).await;
    let (got, from) = uas.expect("OPTIONS ").await;
    assert_eq!(got.matches("Via:").count(), 2, "our Via on top: {got}");
    uas.send(&respond(&got, 200, "OK", "u1"), from).await;
    let (ok, _) = uac.expect("SIP/2.0 200 ").await;
    assert_eq!(ok.matches("Via:").count(), 1, "{ok}");
    // Stateless: a retransmission is forwarded again, not absorbed.
    uac.send(&options, proxy).await;
    uas.expect("OPTIONS ").await;
    // No 100 Trying, no transaction.
    assert!(uac.recv_within(0.2).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_goes_to_the_destination_uri() {
    let (uac, uas) = (Ua::new().await, Ua::new().await);
    let script = format!(
        "function ksr_request_route()\n KSR.setdsturi('sip:{}')\n if KSR.forward() < 0 then KSR.sl.send_reply(500, 'no') end\nend\n",
        uas.addr
    );
    let proxy = common::start(&script, &["udp:127.0.0.1:0"]).await[0].1;
    uac.send(
        &request("MESSAGE", "sip:bob@example.com", uac.addr, "s2", "fwd", 1),
        proxy,
    )
    .await;
    let (got, _) = uas.expect("MESSAGE sip:bob@example.com ").await;
    assert!(got.contains("Call-ID: fwd@test"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onsend_route_sees_the_destination_and_can_drop_a_branch() {
    let (uac, uas1, uas2) = (Ua::new().await, Ua::new().await, Ua::new().await);
    let script = format!(
        r#"
function ksr_request_route()
    KSR.pv.sets("$du", "sip:{uas1}")
    KSR.corex.append_branch_uri("sip:carol@{uas2}")
    KSR.tm.t_relay()
end
function ksr_onsend_route()
    KSR.info("onsend to " .. KSR.pv.get("$snd(ip)") .. ":" .. KSR.pv.get("$snd(port)") .. " over " .. KSR.pv.get("$snd(proto)") .. "\n")
    if KSR.pv.get("$snd(port)") == {port1} then KSR.x.drop() end
end
"#,
        uas1 = uas1.addr,
        uas2 = uas2.addr,
        port1 = uas1.addr.port()
    );
    let proxy = common::start(&script, &["udp:127.0.0.1:0"]).await[0].1;
    uac.send(
        &request("INVITE", "sip:bob@example.com", uac.addr, "o1", "onsend", 1),
        proxy,
    )
    .await;
    let (inv, from) = uas2.expect("INVITE sip:carol@").await;
    assert!(
        uas1.recv_within(0.3).await.is_none(),
        "the branch dropped in ksr_onsend_route must not be sent"
    );
    uas2.send(&respond(&inv, 200, "OK", "u2"), from).await;
    uac.expect("SIP/2.0 200 ").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t_set_fr_shortens_the_wait_for_a_silent_callee() {
    let (uac, silent) = (Ua::new().await, Ua::new().await);
    // RFC timers (T1 = 500 ms): without t_set_fr the 408 would take 32 s.
    let script = format!(
        r#"
function ksr_request_route()
    KSR.pv.sets("$du", "sip:{}")
    KSR.tm.t_set_fr(0, 300)
    KSR.tm.t_on_failure("failed")
    KSR.tm.t_relay()
end
function failed()
    if KSR.tm.t_branch_timeout() > 0 and KSR.tm.t_is_expired() < 0 then
        KSR.tm.t_reply(480, "Fr Expired Not Lifetime")
    end
end
"#,
        silent.addr
    );
    let proxy = common::start(&script, &["udp:127.0.0.1:0"]).await[0].1;
    let started = Instant::now();
    uac.send(
        &request("INVITE", "sip:bob@example.com", uac.addr, "t1", "setfr", 1),
        proxy,
    )
    .await;
    let (reply, _) = uac.expect("SIP/2.0 480 Fr Expired Not Lifetime").await;
    assert!(reply.contains("Call-ID: setfr@test"), "{reply}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "fr of 300 ms, answered after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_contacts_are_tried_in_q_order_serially() {
    let (uac, uas1, uas2) = (Ua::new().await, Ua::new().await, Ua::new().await);
    let script = r#"
function ksr_request_route()
    if KSR.siputils.has_totag() > 0 then KSR.tm.t_relay() return end
    if KSR.is_REGISTER() then KSR.registrar.save("location", 0) return end
    if KSR.registrar.lookup("location") < 0 then
        KSR.sl.sl_send_reply(404, "Not Found")
        return
    end
    KSR.tm.t_load_contacts()
    KSR.tm.t_next_contacts()
    KSR.tm.t_on_failure("next_contact")
    KSR.tm.t_relay()
end
function next_contact()
    if KSR.tm.t_next_contacts() > 0 then
        KSR.tm.t_on_failure("next_contact")
        KSR.tm.t_relay()
    end
end
"#;
    let proxy = common::start(script, &["udp:127.0.0.1:0"]).await[0].1;
    // bob's two phones: the first preferred (q=0.9).
    let register = request("REGISTER", "sip:example.com", uac.addr, "r1", "reg", 1).replace(
        &format!("Contact: <sip:alice@{}>", uac.addr),
        &format!(
            "Contact: <sip:bob@{}>;q=0.1, <sip:bob@{}>;q=0.9",
            uas2.addr, uas1.addr
        ),
    );
    uac.send(&register, proxy).await;
    let (ok, _) = uac.expect("SIP/2.0 200 ").await;
    assert_eq!(ok.matches("Contact: ").count(), 2, "{ok}");

    let invite = request("INVITE", "sip:bob@example.com", uac.addr, "i1", "serial", 1);
    uac.send(&invite, proxy).await;
    // Only the preferred phone rings first ...
    let (inv1, from1) = uas1.expect("INVITE ").await;
    assert!(
        inv1.starts_with(&format!("INVITE sip:bob@{} ", uas1.addr)),
        "{inv1}"
    );
    assert!(
        uas2.recv_within(0.3).await.is_none(),
        "q=0.1 waits its turn"
    );
    // ... it is busy: the failure route moves on to the next q group.
    uas1.send(&respond(&inv1, 486, "Busy Here", "u1"), from1)
        .await;
    uas1.expect("ACK ").await;
    let (inv2, from2) = uas2.expect("INVITE ").await;
    assert!(
        inv2.starts_with(&format!("INVITE sip:bob@{} ", uas2.addr)),
        "{inv2}"
    );
    uas2.send(&respond(&inv2, 200, "OK", "u2"), from2).await;
    let (ok, _) = uac.expect("SIP/2.0 200 ").await;
    assert!(ok.contains("tag=u2"), "{ok}");
    assert!(
        uac.recv_within(0.3)
            .await
            .is_none_or(|(m, _)| !m.starts_with("SIP/2.0 486")),
        "the caller never sees the first phone's 486"
    );
}
