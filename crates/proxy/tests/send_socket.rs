//! Which of several listening sockets the transaction layer sends from,
//! over real UDP sockets: like Kamailio, a relayed request leaves from the
//! socket the request arrived on (the one its Via names), and responses go
//! back from the socket the request arrived on, retransmissions, CANCELs
//! and ACKs included.

use std::net::SocketAddr;

use common::{Ua, fast, request, respond};

mod common;

/// Relays to `callee` statefully; R-URI user `treply` is answered with
/// `KSR.tm.t_reply`, `slreply` with `KSR.sl.send_reply` after `t_newtran`.
fn script(callee: SocketAddr) -> String {
    format!(
        r#"
function ksr_request_route()
    local user = KSR.pv.get("$rU")
    if user == "treply" then
        KSR.tm.t_newtran()
        KSR.tm.t_reply(486, "Busy Here")
        return
    end
    if user == "slreply" then
        KSR.tm.t_newtran()
        KSR.sl.send_reply(404, "Not Here")
        return
    end
    KSR.pv.sets("$du", "sip:{callee}")
    KSR.tm.t_relay()
end
"#
    )
}

/// A proxy listening on two UDP sockets; returns them and the callee.
async fn two_sockets() -> (SocketAddr, SocketAddr, Ua) {
    let callee = Ua::new().await;
    let addrs = common::start_with(
        &script(callee.addr),
        &["udp:127.0.0.1:0", "udp:127.0.0.1:0"],
        fast(),
    )
    .await;
    let (first, second) = (addrs[0].1, addrs[1].1);
    assert_ne!(first, second);
    (first, second, callee)
}

/// The top Via's sent-by of a request the proxy relayed.
fn top_via(msg: &str) -> String {
    let line = msg
        .lines()
        .find(|l| l.starts_with("Via: "))
        .unwrap_or_else(|| panic!("no Via: {msg}"));
    let sent_by = line.split_whitespace().nth(2).unwrap_or("");
    sent_by.split(';').next().unwrap_or("").to_string()
}

/// An INVITE sent to `socket` is relayed from `socket`, and the 100 and
/// the relayed 200 come back from `socket`.
async fn relayed_invite_uses(socket: SocketAddr, callee: &Ua, call: &str) {
    let caller = Ua::new().await;
    let invite = request("INVITE", "sip:bob@example.com", caller.addr, call, call, 1);
    caller.send(&invite, socket).await;
    let (relayed, from) = callee.expect("INVITE ").await;
    assert_eq!(from, socket, "the INVITE is relayed from its socket");
    assert_eq!(top_via(&relayed), socket.to_string(), "{relayed}");
    let (_, from) = caller.expect("SIP/2.0 100 ").await;
    assert_eq!(from, socket, "100 Trying");
    callee
        .send(&respond(&relayed, 200, "OK", "callee"), from)
        .await;
    let (ok, from) = caller.expect("SIP/2.0 200 ").await;
    assert!(ok.contains(&format!("Call-ID: {call}@test")), "{ok}");
    assert_eq!(from, socket, "the relayed 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_the_second_socket_is_relayed_and_answered_from_it() {
    let (_first, second, callee) = two_sockets().await;
    relayed_invite_uses(second, &callee, "second").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_the_first_socket_is_relayed_and_answered_from_it() {
    let (first, _second, callee) = two_sockets().await;
    relayed_invite_uses(first, &callee, "first").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retransmissions_cancel_and_ack_leave_from_the_socket_of_the_request() {
    let (_first, second, callee) = two_sockets().await;
    let caller = Ua::new().await;
    let invite = request(
        "INVITE",
        "sip:bob@example.com",
        caller.addr,
        "cx",
        "cancelled",
        1,
    );
    caller.send(&invite, second).await;
    let (relayed, from) = callee.expect("INVITE ").await;
    assert_eq!(from, second);
    // Unanswered: Timer A re-sends it, from the same socket.
    let (again, from) = callee.expect("INVITE ").await;
    assert_eq!(again, relayed);
    assert_eq!(from, second, "Timer A retransmission");
    callee
        .send(&respond(&relayed, 180, "Ringing", "callee"), second)
        .await;
    let (_, from) = caller.expect("SIP/2.0 180 ").await;
    assert_eq!(from, second, "the relayed 180");
    // A retransmitted INVITE gets the 180 again, from the same socket.
    caller.send(&invite, second).await;
    let (_, from) = caller.expect("SIP/2.0 180 ").await;
    assert_eq!(from, second, "the 180 re-sent");

    let cancel = invite
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    caller.send(&cancel, second).await;
    let (_, from) = caller.expect("SIP/2.0 200 ").await;
    assert_eq!(from, second, "the 200 to the CANCEL");
    let (cancel_on, from) = callee.expect("CANCEL ").await;
    assert_eq!(from, second, "the CANCEL the proxy sends");
    callee
        .send(&respond(&cancel_on, 200, "OK", "callee"), second)
        .await;
    callee
        .send(
            &respond(&relayed, 487, "Request Terminated", "callee"),
            second,
        )
        .await;
    let (_, from) = callee.expect("ACK ").await;
    assert_eq!(from, second, "the proxy's ACK of the 487");
    let (_, from) = caller.expect("SIP/2.0 487 ").await;
    assert_eq!(from, second, "the relayed 487");
    // Unacknowledged: Timer G re-sends it, from the same socket.
    let (_, from) = caller.expect("SIP/2.0 487 ").await;
    assert_eq!(from, second, "Timer G retransmission");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_replies_leave_from_the_socket_of_the_request() {
    let (first, second, _callee) = two_sockets().await;
    let caller = Ua::new().await;
    for (user, status, socket) in [
        ("treply", "SIP/2.0 486 ", second),
        ("slreply", "SIP/2.0 404 ", second),
        ("treply", "SIP/2.0 486 ", first),
    ] {
        let call = format!("{user}-{}", socket.port());
        let invite = request(
            "INVITE",
            &format!("sip:{user}@example.com"),
            caller.addr,
            &call,
            &call,
            1,
        );
        caller.send(&invite, socket).await;
        let (_, from) = caller.expect(status).await;
        assert_eq!(from, socket, "{user} to {socket}");
        // The INVITE retransmitted: the final response again, same socket.
        caller.send(&invite, socket).await;
        let (_, from) = caller.expect(status).await;
        assert_eq!(from, socket, "{user} re-sent to {socket}");
        let options = request(
            "OPTIONS",
            &format!("sip:{user}@example.com"),
            caller.addr,
            &format!("{call}-o"),
            &format!("{call}-o"),
            1,
        );
        caller.send(&options, socket).await;
        let from = loop {
            let (msg, from) = caller.expect(status).await;
            if msg.contains("CSeq: 1 OPTIONS") {
                break from;
            }
        };
        assert_eq!(from, socket, "{user} OPTIONS to {socket}");
    }
}
