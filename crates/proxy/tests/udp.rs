//! The proxy over real UDP sockets on loopback: stateless replies, relaying
//! a request and its replies, 400 for a malformed request, the configured
//! error reply for a failing script, and no harm from garbage.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::timeout;

mod common;

const RELAY: &str = include_str!("../../../scripts/relay.lua");

/// Start a proxy for `script` (its UAS address replaced by `uas`) on an
/// ephemeral UDP port; returns its address.
async fn start(script: &str, uas: Option<SocketAddr>) -> SocketAddr {
    let script = match uas {
        Some(uas) => script.replace("sip:127.0.0.1:5080", &format!("sip:{uas}")),
        None => script.to_string(),
    };
    common::start(&script, &["udp:127.0.0.1:0"]).await[0].1
}

async fn socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

async fn recv(socket: &UdpSocket) -> (String, SocketAddr) {
    let mut buf = vec![0u8; 65536];
    let (n, from) = timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("no message within 5 s")
        .unwrap();
    (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
}

fn request(method: &str, ruri: &str, uac: SocketAddr, extra: &str) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {uac};branch=z9hG4bK-{method}-1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=a1\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: {method}-call@test\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:alice@{uac}>\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_is_answered_statelessly_by_the_script() {
    let proxy = start(RELAY, None).await;
    let uac = socket().await;
    let me = uac.local_addr().unwrap();
    uac.send_to(
        request("OPTIONS", "sip:127.0.0.1", me, "").as_bytes(),
        proxy,
    )
    .await
    .unwrap();
    let (reply, from) = recv(&uac).await;
    assert_eq!(from, proxy);
    assert!(reply.starts_with("SIP/2.0 200 OK\r\n"), "{reply}");
    assert!(
        reply.contains(&format!("rport={}", me.port())),
        "RFC 3581 rport filled: {reply}"
    );
    assert!(reply.contains("To: <sip:bob@example.com>;tag="), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_is_relayed_and_replies_come_back_without_our_via() {
    let uas = socket().await;
    let uas_addr = uas.local_addr().unwrap();
    let proxy = start(RELAY, Some(uas_addr)).await;
    let uac = socket().await;
    let me = uac.local_addr().unwrap();
    uac.send_to(
        request("INVITE", "sip:bob@example.com", me, "").as_bytes(),
        proxy,
    )
    .await
    .unwrap();

    let (forwarded, from) = recv(&uas).await;
    assert_eq!(from, proxy);
    let lines: Vec<&str> = forwarded.split("\r\n").collect();
    assert_eq!(lines[0], "INVITE sip:bob@example.com SIP/2.0");
    assert_eq!(lines[1], format!("Record-Route: <sip:{proxy};lr>"));
    assert!(
        lines[2].starts_with(&format!("Via: SIP/2.0/UDP {proxy};branch=z9hG4bK")),
        "{forwarded}"
    );
    assert!(lines[3].starts_with(&format!(
        "Via: SIP/2.0/UDP {me};branch=z9hG4bK-INVITE-1;rport={}",
        me.port()
    )));
    assert!(
        forwarded.contains("Max-Forwards: 69\r\n"),
        "process_maxfwd decremented it: {forwarded}"
    );

    let vias: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("Via:"))
        .collect();
    let ringing = format!(
        "SIP/2.0 180 Ringing\r\n{}\r\nFrom: <sip:alice@example.com>;tag=a1\r\n\
         To: <sip:bob@example.com>;tag=b1\r\nCall-ID: INVITE-call@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        vias.join("\r\n")
    );
    uas.send_to(ringing.as_bytes(), from).await.unwrap();
    let (reply, _) = recv(&uac).await;
    assert!(reply.starts_with("SIP/2.0 180 Ringing\r\n"), "{reply}");
    assert_eq!(reply.matches("Via:").count(), 1, "our Via removed: {reply}");
    assert!(reply.contains(&format!("Via: SIP/2.0/UDP {me};branch=z9hG4bK-INVITE-1")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_and_garbage_is_dropped() {
    let proxy = start(RELAY, None).await;
    let uac = socket().await;
    let me = uac.local_addr().unwrap();
    uac.send_to(b"\x00\x01 not sip at all\r\n\r\n", proxy)
        .await
        .unwrap();
    let no_from = request("INVITE", "sip:bob@example.com", me, "")
        .replace("From: <sip:alice@example.com>;tag=a1\r\n", "");
    uac.send_to(no_from.as_bytes(), proxy).await.unwrap();
    let (reply, _) = recv(&uac).await;
    assert!(reply.starts_with("SIP/2.0 400 "), "{reply}");
    // Still serving.
    uac.send_to(
        request("OPTIONS", "sip:127.0.0.1", me, "").as_bytes(),
        proxy,
    )
    .await
    .unwrap();
    let (reply, _) = recv(&uac).await;
    assert!(reply.starts_with("SIP/2.0 200 OK"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_script_is_answered_with_the_error_reply() {
    let script = "function ksr_request_route()\n\
                    if KSR.is_INVITE() then local t = nil; return t.x end\n\
                    if KSR.is_MESSAGE() then while true do end end\n\
                    KSR.sl.send_reply(202, 'Accepted')\n\
                  end\n";
    let proxy = start(script, None).await;
    let uac = socket().await;
    let me = uac.local_addr().unwrap();
    for method in ["INVITE", "MESSAGE"] {
        uac.send_to(
            request(method, "sip:bob@example.com", me, "").as_bytes(),
            proxy,
        )
        .await
        .unwrap();
        let (reply, _) = recv(&uac).await;
        assert!(
            reply.starts_with("SIP/2.0 500 Server Error\r\n"),
            "{method}: {reply}"
        );
    }
    uac.send_to(
        request("OPTIONS", "sip:127.0.0.1", me, "").as_bytes(),
        proxy,
    )
    .await
    .unwrap();
    let (reply, _) = recv(&uac).await;
    assert!(
        reply.starts_with("SIP/2.0 202 Accepted"),
        "the tenant keeps serving: {reply}"
    );
}
