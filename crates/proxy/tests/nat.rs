//! A phone behind NAT over real UDP sockets: it registers a private
//! Contact from its NAT's public address, and a call to it goes to that
//! address (the binding's `received`), with the Contact as the R-URI.

use common::{Ua, request, respond};

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_reaches_a_phone_registered_from_behind_nat() {
    // `phone` stands for the NAT's public side: the REGISTER comes from its
    // address, while the Contact names the phone's private address.
    let (caller, phone) = (Ua::new().await, Ua::new().await);
    let script = r#"
function ksr_request_route()
    if KSR.siputils.has_totag() > 0 then KSR.tm.t_relay() return end
    if KSR.is_REGISTER() then KSR.registrar.save("location", 0) return end
    if KSR.registrar.lookup("location") < 0 then
        KSR.sl.sl_send_reply(404, "Not Found")
        return
    end
    KSR.tm.t_relay()
end
"#;
    let proxy = common::start(script, &["udp:127.0.0.1:0"]).await[0].1;
    let register = request("REGISTER", "sip:example.com", phone.addr, "r1", "nat", 1).replace(
        &format!("Contact: <sip:alice@{}>", phone.addr),
        "Contact: <sip:bob@192.168.1.10:5060>",
    );
    phone.send(&register, proxy).await;
    let (ok, _) = phone.expect("SIP/2.0 200 ").await;
    assert!(
        ok.contains("Contact: <sip:bob@192.168.1.10:5060>;expires="),
        "{ok}"
    );

    let invite = request(
        "INVITE",
        "sip:bob@example.com",
        caller.addr,
        "i1",
        "natcall",
        1,
    );
    caller.send(&invite, proxy).await;
    let (inv, from) = phone.expect("INVITE ").await;
    assert!(
        inv.starts_with("INVITE sip:bob@192.168.1.10:5060 SIP/2.0"),
        "{inv}"
    );
    phone.send(&respond(&inv, 200, "OK", "b1"), from).await;
    caller.expect("SIP/2.0 200 ").await;
}
