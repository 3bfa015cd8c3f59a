//! What a script says about how a message leaves, over real sockets:
//! `KSR.corex.set_send_socket` picks the socket a relayed request leaves
//! from; `KSR.set_forward_no_connect` / `KSR.set_reply_no_connect` send
//! only over a TCP connection already open; `KSR.set_forward_close` /
//! `KSR.set_reply_close` close the connection once the message is written.

use std::net::SocketAddr;
use std::time::Duration;

use common::{Ua, request, respond};
use kemibox_kemi::Transport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::timeout;

mod common;

/// The proxy's address of `transport` among `addrs`.
fn of(addrs: &[(Transport, SocketAddr)], transport: Transport) -> SocketAddr {
    addrs
        .iter()
        .find(|(t, _)| *t == transport)
        .map(|(_, a)| *a)
        .expect("the proxy listens on it")
}

/// Read one message (no body) off `stream`: `None` when the connection
/// closes first.
async fn read_message(stream: &mut TcpStream) -> Option<String> {
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.contains("\r\n\r\n") {
        let n = timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("nothing within 5 s")
            .ok()?;
        if n == 0 {
            return None;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    Some(text)
}

/// Whether the peer closes `stream` within `secs` (reads EOF).
async fn closes_within(stream: &mut TcpStream, secs: f64) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match timeout(Duration::from_secs_f64(secs), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_request_leaves_from_the_socket_the_script_set() {
    let (uac, uas) = (Ua::new().await, Ua::new().await);
    let script = format!(
        r#"
function ksr_request_route()
    if KSR.pv.get("$rU") == "second" then
        KSR.corex.set_send_socket("udp:127.0.0.2")
    end
    KSR.pv.sets("$du", "sip:{}")
    KSR.tm.t_relay()
end
"#,
        uas.addr
    );
    let addrs = common::start(&script, &["udp:127.0.0.1:0", "udp:127.0.0.2:0"]).await;
    let (first, second) = (addrs[0].1, addrs[1].1);
    for (user, expected) in [("first", first), ("second", second)] {
        let invite = request(
            "INVITE",
            &format!("sip:{user}@example.com"),
            uac.addr,
            user,
            &format!("socket-{user}"),
            1,
        );
        uac.send(&invite, first).await;
        let (got, from) = uas.expect("INVITE ").await;
        assert_eq!(from, expected, "{user}: sent from {from}: {got}");
        let via = got
            .lines()
            .find(|l| l.starts_with("Via:"))
            .unwrap_or_default();
        assert!(via.contains(&expected.to_string()), "{user}: {via}");
        // The response comes back to that socket and goes on to the caller.
        uas.send(&respond(&got, 200, "OK", user), from).await;
        let (ok, _) = uac.expect("SIP/2.0 200 ").await;
        assert!(ok.contains(&format!("Call-ID: socket-{user}@test")), "{ok}");
    }
}

/// Relays every request to `callee` over TCP; R-URI user `noconnect`
/// sets `KSR.set_forward_no_connect`, `close` sets `KSR.set_forward_close`.
fn forward_script(callee: SocketAddr) -> String {
    format!(
        r#"
function ksr_request_route()
    local user = KSR.pv.get("$rU")
    if user == "noconnect" then KSR.set_forward_no_connect() end
    if user == "close" then KSR.set_forward_close() end
    KSR.pv.sets("$du", "sip:{callee};transport=tcp")
    KSR.tm.t_relay()
end
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_flags_decide_whether_a_tcp_connection_is_opened_and_kept() {
    let callee = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script = forward_script(callee.local_addr().unwrap());
    let addrs = common::start(&script, &["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]).await;
    let proxy = of(&addrs, Transport::Udp);
    let uac = Ua::new().await;

    // No connection is open, and the script asked not to open one: the
    // branch fails at once and the caller gets the error reply.
    let invite = request(
        "INVITE",
        "sip:noconnect@example.com",
        uac.addr,
        "nc",
        "noconnect",
        1,
    );
    uac.send(&invite, proxy).await;
    uac.expect("SIP/2.0 500 ").await;
    assert!(
        timeout(Duration::from_millis(300), callee.accept())
            .await
            .is_err(),
        "no connection was opened"
    );

    // Close after sending: the callee reads the INVITE, then EOF.
    let invite = request(
        "INVITE",
        "sip:close@example.com",
        uac.addr,
        "cl",
        "close",
        1,
    );
    uac.send(&invite, proxy).await;
    let (mut stream, _) = timeout(Duration::from_secs(5), callee.accept())
        .await
        .expect("a connection")
        .unwrap();
    let got = read_message(&mut stream).await.expect("the INVITE");
    assert!(got.starts_with("INVITE sip:close@"), "{got}");
    assert!(
        closes_within(&mut stream, 2.0).await,
        "closed after sending"
    );

    // By default the connection is opened and stays open.
    let invite = request("INVITE", "sip:open@example.com", uac.addr, "op", "open", 1);
    uac.send(&invite, proxy).await;
    let (mut stream, _) = timeout(Duration::from_secs(5), callee.accept())
        .await
        .expect("a connection")
        .unwrap();
    let got = read_message(&mut stream).await.expect("the INVITE");
    assert!(got.starts_with("INVITE sip:open@"), "{got}");
    assert!(!closes_within(&mut stream, 0.5).await, "kept open");

    // With that connection open, `no_connect` sends over it.
    let invite = request(
        "INVITE",
        "sip:noconnect@example.com",
        uac.addr,
        "nc2",
        "noconnect2",
        1,
    );
    uac.send(&invite, proxy).await;
    let got = read_message(&mut stream).await.expect("the INVITE");
    assert!(got.contains("Call-ID: noconnect2@test"), "{got}");
}

fn tcp_request(method: &str, user: &str, call: &str, me: SocketAddr) -> String {
    format!(
        "{method} sip:{user}@example.com SIP/2.0\r\n\
         Via: SIP/2.0/TCP {me};branch=z9hG4bK-{call}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=a1\r\n\
         To: <sip:{user}@example.com>\r\n\
         Call-ID: {call}@test\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:alice@{me};transport=tcp>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_close_closes_the_connection_after_the_reply() {
    let script = r#"
function ksr_request_route()
    if KSR.pv.get("$rU") == "close" then KSR.set_reply_close() end
    KSR.sl.sl_send_reply(200, "OK")
end
"#;
    let addrs = common::start(script, &["tcp:127.0.0.1:0"]).await;
    let proxy = of(&addrs, Transport::Tcp);
    for (user, closed) in [("keep", false), ("close", true)] {
        let mut uac = TcpStream::connect(proxy).await.unwrap();
        let me = uac.local_addr().unwrap();
        let options = tcp_request("OPTIONS", user, &format!("rc-{user}"), me);
        uac.write_all(options.as_bytes()).await.unwrap();
        let reply = read_message(&mut uac).await.expect("the reply");
        assert!(reply.starts_with("SIP/2.0 200 "), "{reply}");
        assert_eq!(closes_within(&mut uac, 0.5).await, closed, "{user}");
    }
}

/// A caller that also listens on the port its connection comes from, so
/// a reply that cannot go back over the connection (closed) may come over
/// a new one to the same address (RFC 3261 18.2.2).
async fn caller_listening_on_its_own_port(proxy: SocketAddr) -> (TcpStream, TcpListener) {
    let listening = TcpSocket::new_v4().unwrap();
    listening.set_reuseaddr(true).unwrap();
    listening.set_reuseport(true).unwrap();
    listening.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = listening.local_addr().unwrap();
    let listener = listening.listen(8).unwrap();
    let connecting = TcpSocket::new_v4().unwrap();
    connecting.set_reuseaddr(true).unwrap();
    connecting.set_reuseport(true).unwrap();
    connecting.bind(port).unwrap();
    (connecting.connect(proxy).await.unwrap(), listener)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_no_connect_sends_no_reply_once_the_callers_connection_is_gone() {
    let uas = Ua::new().await;
    let script = format!(
        r#"
function ksr_request_route()
    if KSR.pv.get("$rU") == "noconnect" then KSR.set_reply_no_connect() end
    KSR.pv.sets("$du", "sip:{}")
    KSR.tm.t_relay()
end
"#,
        uas.addr
    );
    let addrs = common::start(&script, &["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]).await;
    let proxy = of(&addrs, Transport::Tcp);
    for (user, reconnects) in [("connect", true), ("noconnect", false)] {
        let (mut uac, listener) = caller_listening_on_its_own_port(proxy).await;
        let me = uac.local_addr().unwrap();
        let invite = tcp_request("INVITE", user, &format!("rn-{user}"), me);
        uac.write_all(invite.as_bytes()).await.unwrap();
        let (got, from) = uas.expect("INVITE ").await;
        let trying = read_message(&mut uac).await.expect("100 Trying");
        assert!(trying.starts_with("SIP/2.0 100 "), "{trying}");
        // The caller's connection goes away before the answer comes.
        drop(uac);
        tokio::time::sleep(Duration::from_millis(200)).await;
        uas.send(&respond(&got, 200, "OK", user), from).await;
        let accepted = timeout(Duration::from_secs(1), listener.accept()).await;
        assert_eq!(accepted.is_ok(), reconnects, "{user}");
        if let Ok(Ok((mut stream, _))) = accepted {
            let ok = read_message(&mut stream).await.expect("the 200");
            assert!(ok.starts_with("SIP/2.0 200 "), "{ok}");
        }
    }
}
