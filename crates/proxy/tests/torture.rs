//! RFC 4475 torture messages (tests/fixtures/torture, see its README)
//! sent to a running proxy over real sockets. Valid requests are routed
//! (forwarded to a UAS, or answered 483 for Max-Forwards 0); valid
//! responses that are not ours are dropped; invalid requests get a 400
//! with the reason when the message can be parsed, and are dropped when
//! it cannot; nothing panics and the proxy keeps serving.
//!
//! The invalid ones go over TCP, where the reply comes back on the
//! connection whatever the message's Via says; the valid ones over UDP.

use std::path::PathBuf;
use std::time::Duration;

use common::{Ua, request};
use kemibox_kemi::Transport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

fn fixture(kind: &str, name: &str) -> Vec<u8> {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "../../tests/fixtures/torture",
        kind,
        &format!("{name}.sip"),
    ]
    .iter()
    .collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn script(uas: std::net::SocketAddr) -> String {
    format!(
        r#"
function ksr_request_route()
    if KSR.maxfwd.process_maxfwd(10) < 0 then
        KSR.sl.send_reply(483, "Too Many Hops")
        return
    end
    KSR.forward_uri("sip:{uas}")
end
"#
    )
}

/// The method token of a request's start line.
fn method(bytes: &[u8]) -> String {
    let line = bytes.split(|b| *b == b' ').next().unwrap_or_default();
    String::from_utf8_lossy(line).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_torture_messages_are_routed() {
    let (uac, uas) = (Ua::new().await, Ua::new().await);
    let proxy = common::start(&script(uas.addr), &["udp:127.0.0.1:0"]).await[0].1;
    let forwarded = [
        "badbranch",
        "bext01",
        "cparam01",
        "cparam02",
        "dblreq",
        "esc01",
        "esc02",
        "escnull",
        "intmeth",
        "inv2543",
        "invut",
        "longreq",
        "lwsdisp",
        "mpart01",
        "novelsc",
        "regaut01",
        "regescrt",
        "sdp01",
        "semiuri",
        "transports",
        "unkscm",
        "unksm2",
        "wsinv",
    ];
    for name in forwarded {
        let bytes = fixture("valid", name);
        uac.socket.send_to(&bytes, proxy).await.unwrap();
        let Some((got, _)) = uas.recv_within(2.0).await else {
            panic!("{name}: not forwarded");
        };
        assert_eq!(
            method(got.as_bytes()),
            method(&bytes),
            "{name}: forwarded {got}"
        );
        assert!(got.contains(";branch=z9hG4bK"), "{name}: our Via: {got}");
        if name == "dblreq" {
            assert!(
                !got.contains("INVITE"),
                "{name}: the octets after the REGISTER must not be forwarded: {got}"
            );
        }
    }
    // Max-Forwards 0: answered 483 by the script, not forwarded; responses
    // whose top Via is not ours: dropped.
    for name in ["zeromf", "bcast", "noreason", "unreason"] {
        uac.socket
            .send_to(&fixture("valid", name), proxy)
            .await
            .unwrap();
        assert!(
            uas.recv_within(0.3).await.is_none(),
            "{name} must not be forwarded"
        );
    }
    still_serving(&uac, &uas, proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_torture_messages_get_400_or_are_dropped() {
    let (uac, uas) = (Ua::new().await, Ua::new().await);
    let addrs = common::start(&script(uas.addr), &["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]).await;
    let udp = addrs[0].1;
    let (Transport::Tcp, tcp) = addrs[1] else {
        panic!("{addrs:?}")
    };
    let answered_400 = [
        ("badinv01", "Via"),
        ("scalar02", "CSeq"),
        ("quotbal", "To"),
        ("ltgtruri", "Request-URI"),
        ("escruri", "Request-URI"),
        ("baddn", "From"),
        ("mismatch01", "CSeq"),
        ("mismatch02", "CSeq"),
        ("insuf", "From"),
        ("multi01", "From"),
    ];
    for (name, reason) in answered_400 {
        let reply = over_tcp(tcp, &fixture("invalid", name), 2.0).await;
        assert!(
            reply.starts_with("SIP/2.0 400 "),
            "{name}: expected 400, got {reply:?}"
        );
        let status_line = reply.lines().next().unwrap_or_default();
        assert!(
            status_line.contains(reason),
            "{name}: the reason names {reason}: {status_line}"
        );
        assert!(uas.recv_within(0.0).await.is_none(), "{name} forwarded");
    }
    // Unparsable (or unframeable) messages and bad responses: no reply.
    let dropped = [
        "clerr", "ncl", "lwsruri", "lwsstart", "trws", "badvers", "bigcode", "mcl01", "scalarlg",
    ];
    for name in dropped {
        let reply = over_tcp(tcp, &fixture("invalid", name), 0.5).await;
        assert!(reply.is_empty(), "{name}: expected no reply, got {reply:?}");
        assert!(
            uas.recv_within(0.1).await.is_none(),
            "{name} must not be forwarded"
        );
    }
    // Problems only an application would see: routed like any request.
    for name in ["baddate", "regbadct", "badaspec"] {
        let bytes = fixture("invalid", name);
        uac.socket.send_to(&bytes, udp).await.unwrap();
        let Some((got, _)) = uas.recv_within(2.0).await else {
            panic!("{name}: not forwarded");
        };
        assert_eq!(method(got.as_bytes()), method(&bytes), "{name}: {got}");
    }
    still_serving(&uac, &uas, udp).await;
}

/// Send `bytes` on a new TCP connection; what came back within `secs`
/// seconds (empty when nothing did or the proxy closed the connection).
async fn over_tcp(proxy: std::net::SocketAddr, bytes: &[u8], secs: f64) -> String {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut buf = vec![0u8; 65536];
    match tokio::time::timeout(Duration::from_secs_f64(secs), stream.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        _ => String::new(),
    }
}

/// A well-formed OPTIONS is still forwarded after all that.
async fn still_serving(uac: &Ua, uas: &Ua, proxy: std::net::SocketAddr) {
    uac.send(
        &request(
            "OPTIONS",
            "sip:bob@example.com",
            uac.addr,
            "alive",
            "alive",
            1,
        ),
        proxy,
    )
    .await;
    let (got, _) = uas.expect("OPTIONS ").await;
    assert!(got.contains("Call-ID: alive@test"), "{got}");
}
