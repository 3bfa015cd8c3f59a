//! Single SIP requests over UDP from any loopback address (127.0.0.0/8),
//! for tests where the proxy judges the source: bans, flood detection,
//! trusted peers.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

/// Ports handed out to this test process so far: parallel tests never get
/// the same one.
static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// A port below Linux's ephemeral range (32768-60999), where client
/// sockets (SIPp, HTTP scrapes, Redis clients) never take it between this
/// call and the proxy's bind, that `free` says is free on 127.0.0.1 and
/// that this process has not handed out before.
fn unused_port(free: impl Fn(u16) -> bool) -> u16 {
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    // Start where this process's id points, so test binaries running at
    // the same time on the machine look in different places first.
    let start = 20_000 + (std::process::id() % 12_000) as u16;
    let port = (0..12_000u16)
        .map(|i| 20_000 + (start - 20_000 + i) % 12_000)
        .find(|p| !given.contains(p) && free(*p))
        .expect("a free port from 20000 to 31999");
    given.push(port);
    port
}

/// A UDP port free on 127.0.0.1 at the time of the call.
pub fn free_udp_port() -> u16 {
    unused_port(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok())
}

/// A TCP port free on 127.0.0.1 at the time of the call.
pub fn free_tcp_port() -> u16 {
    unused_port(|p| TcpListener::bind(("127.0.0.1", p)).is_ok())
}

/// An OPTIONS from a new socket on `from` (an IP) with `ua` as its
/// User-Agent: the status line of the answer, if one comes within `wait`.
pub fn options(proxy: SocketAddr, from: &str, ua: &str, wait: Duration) -> Option<String> {
    let sock = UdpSocket::bind((from, 0)).unwrap();
    options_from(&sock, proxy, ua, wait)
}

/// [`options`] from an existing socket, so that many requests come from
/// one source address and port; each has its own branch and Call-ID.
pub fn options_from(
    sock: &UdpSocket,
    proxy: SocketAddr,
    ua: &str,
    wait: Duration,
) -> Option<String> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let local = sock.local_addr().unwrap();
    let from = local.ip();
    let branch = format!("z9hG4bK{}x{n}", local.port());
    let request = format!(
        "OPTIONS sip:{proxy} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{from}>;tag=t{n}\r\n\
         To: <sip:{proxy}>\r\n\
         Call-ID: {branch}@{from}\r\n\
         CSeq: 1 OPTIONS\r\n\
         User-Agent: {ua}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sock.send_to(request.as_bytes(), proxy).unwrap();
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let len = sock.recv(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
        // An answer to an earlier request that came late is not this one's.
        if text.contains(&branch) {
            return text.lines().next().map(str::to_string);
        }
    }
}

/// The answer to a request from `from` that must be served (within 10 s).
pub fn served(proxy: SocketAddr, from: &str) -> String {
    options(proxy, from, "phone/1.0", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{from} got no answer from {proxy}"))
}

/// Whether a request from `from` with User-Agent `ua` goes unanswered
/// (nothing within 1.5 s).
pub fn ignored(proxy: SocketAddr, from: &str, ua: &str) -> bool {
    options(proxy, from, ua, Duration::from_millis(1500)).is_none()
}
