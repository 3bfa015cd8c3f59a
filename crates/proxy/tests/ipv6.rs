//! The proxy on an IPv6 socket: a call relayed statefully between user
//! agents on ::1, with our Via and Record-Route in IPv6 reference form
//! (`[::1]:port`) and replies routed back by Via.

use common::{Ua, request, respond};

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_relayed_over_ipv6() {
    let (uac, uas) = (Ua::bind("[::1]:0").await, Ua::bind("[::1]:0").await);
    let script = format!(
        r#"
function ksr_request_route()
    if KSR.siputils.has_totag() > 0 then
        KSR.rr.loose_route()
        KSR.tm.t_relay()
        return
    end
    KSR.rr.record_route()
    KSR.pv.sets("$du", "sip:{}")
    KSR.tm.t_relay()
end
"#,
        uas.addr
    );
    let proxy = common::start(&script, &["udp:[::1]:0"]).await[0].1;
    assert!(proxy.is_ipv6(), "{proxy}");

    let invite = request("INVITE", "sip:bob@example.com", uac.addr, "v6", "ipv6", 1);
    uac.send(&invite, proxy).await;
    uac.expect("SIP/2.0 100 ").await;
    let (inv, from) = uas.expect("INVITE ").await;
    assert_eq!(from, proxy, "sent from the proxy's IPv6 socket");
    let top_via = inv.lines().find(|l| l.starts_with("Via:")).unwrap();
    assert!(
        top_via.starts_with(&format!("Via: SIP/2.0/UDP {proxy};branch=z9hG4bK")),
        "{top_via}"
    );
    assert!(
        inv.contains(&format!("Record-Route: <sip:{proxy};lr>")),
        "{inv}"
    );

    uas.send(&respond(&inv, 180, "Ringing", "u6"), from).await;
    uac.expect("SIP/2.0 180 ").await;
    uas.send(&respond(&inv, 200, "OK", "u6"), from).await;
    let (ok, _) = uac.expect("SIP/2.0 200 ").await;
    assert_eq!(ok.matches("Via:").count(), 1, "{ok}");
    assert!(ok.contains("tag=u6"), "{ok}");

    // In dialog: to the callee's Contact, through us by the Record-Route.
    let bye = request(
        "BYE",
        &format!("sip:bob@{}", uas.addr),
        uac.addr,
        "v6b",
        "ipv6",
        2,
    )
    .replace(
        "To: <sip:bob@example.com>",
        "To: <sip:bob@example.com>;tag=u6",
    )
    .replace(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\nRoute: <sip:{proxy};lr>\r\n"),
    );
    uac.send(&bye, proxy).await;
    let (bye_in, from) = uas.expect("BYE ").await;
    uas.send(&respond(&bye_in, 200, "OK", "u6"), from).await;
    let (done, _) = uac.expect("SIP/2.0 200 ").await;
    assert!(done.contains("CSeq: 2 BYE"), "{done}");
}
