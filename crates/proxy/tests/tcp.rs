//! The proxy over TCP on loopback: Content-Length framing (several
//! messages per read, a message split over reads), replies on the same
//! connection, relaying between TCP and UDP, keep-alive pongs.

use std::net::SocketAddr;
use std::time::Duration;

use kemibox_kemi::Transport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

mod common;

const RELAY: &str = include_str!("../../../scripts/relay.lua");

fn request(method: &str, call: &str, me: SocketAddr) -> String {
    format!(
        "{method} sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/TCP {me};branch=z9hG4bK-{call}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=a1\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: {call}@test\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:alice@{me};transport=tcp>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Read until `n` complete messages (by their blank line; no bodies here).
async fn read_messages(stream: &mut TcpStream, n: usize) -> Vec<String> {
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while text.matches("\r\n\r\n").count() < n {
        let got = timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("no reply within 5 s")
            .unwrap();
        assert!(got > 0, "connection closed; got so far: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..got]));
    }
    text.split_inclusive("\r\n\r\n")
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_and_replies_on_the_same_connection() {
    let addrs = common::start(RELAY, &["tcp:127.0.0.1:0"]).await;
    let (Transport::Tcp, proxy) = addrs[0] else {
        panic!("{addrs:?}")
    };
    let mut uac = TcpStream::connect(proxy).await.unwrap();
    let me = uac.local_addr().unwrap();

    // Two requests in one write.
    let two = request("OPTIONS", "o1", me) + &request("OPTIONS", "o2", me);
    uac.write_all(two.as_bytes()).await.unwrap();
    let replies = read_messages(&mut uac, 2).await;
    assert!(
        replies.iter().all(|r| r.starts_with("SIP/2.0 200 OK\r\n")),
        "{replies:?}"
    );
    assert!(replies.iter().any(|r| r.contains("Call-ID: o1@test")));
    assert!(replies.iter().any(|r| r.contains("Call-ID: o2@test")));

    // One request split over two writes.
    let one = request("OPTIONS", "o3", me);
    let (a, b) = one.split_at(40);
    uac.write_all(a.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    uac.write_all(b.as_bytes()).await.unwrap();
    let replies = read_messages(&mut uac, 1).await;
    assert!(replies[0].contains("Call-ID: o3@test"), "{replies:?}");

    // Keep-alive ping gets a pong.
    uac.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    timeout(Duration::from_secs(5), uac.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&pong, b"\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_caller_udp_callee() {
    let uas = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let uas_addr = uas.local_addr().unwrap();
    let script = RELAY.replace("sip:127.0.0.1:5080", &format!("sip:{uas_addr}"));
    let addrs = common::start(&script, &["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]).await;
    let tcp_proxy = addrs.iter().find(|(t, _)| *t == Transport::Tcp).unwrap().1;
    let udp_proxy = addrs.iter().find(|(t, _)| *t == Transport::Udp).unwrap().1;

    let mut uac = TcpStream::connect(tcp_proxy).await.unwrap();
    let me = uac.local_addr().unwrap();
    uac.write_all(request("INVITE", "i1", me).as_bytes())
        .await
        .unwrap();

    let mut buf = vec![0u8; 65536];
    let (n, from) = timeout(Duration::from_secs(5), uas.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, udp_proxy);
    let invite = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        invite.contains(&format!("Via: SIP/2.0/UDP {udp_proxy};branch=z9hG4bK")),
        "{invite}"
    );
    assert!(
        invite.contains(&format!("Via: SIP/2.0/TCP {me};branch=z9hG4bK-i1")),
        "{invite}"
    );

    let vias: Vec<&str> = invite
        .split("\r\n")
        .filter(|l| l.starts_with("Via:"))
        .collect();
    let ok = format!(
        "SIP/2.0 200 OK\r\n{}\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>;tag=b1\r\n\
         Call-ID: i1@test\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@{uas_addr}>\r\nContent-Length: 0\r\n\r\n",
        vias.join("\r\n")
    );
    uas.send_to(ok.as_bytes(), from).await.unwrap();
    let replies = read_messages(&mut uac, 1).await;
    assert!(replies[0].starts_with("SIP/2.0 200 OK\r\n"), "{replies:?}");
    assert_eq!(replies[0].matches("Via:").count(), 1, "{replies:?}");
}
