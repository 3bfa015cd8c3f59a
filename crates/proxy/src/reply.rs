//! Replies the proxy sends itself (`KSR.sl`, errors, 400s).

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::SocketAddr;

use kemibox_sip::{Received, SipMessage, build_reply};
use tokio::net::UdpSocket;

/// Where a reply to `req` goes (RFC 3261 18.2.2, RFC 3581): the source
/// address when the top Via asks for rport (or the script forced it),
/// otherwise the source IP with the Via's port.
pub fn destination(req: &SipMessage, source: SocketAddr, force_rport: bool) -> SocketAddr {
    let via = req.top_via();
    let rport = via.as_ref().is_some_and(|v| v.rport().is_some());
    if rport || force_rport {
        return source;
    }
    let port = via.and_then(|v| v.port).unwrap_or(5060);
    SocketAddr::new(source.ip(), port)
}

/// A To-tag for the proxy's own replies: the same for retransmissions of a
/// request, different across requests.
fn local_tag(req: &SipMessage) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    req.call_id().hash(&mut h);
    req.from()
        .and_then(|f| f.tag().map(str::to_string))
        .hash(&mut h);
    req.top_via()
        .and_then(|v| v.branch().map(str::to_string))
        .hash(&mut h);
    format!("kbx{:016x}", h.finish())
}

/// Build and send a reply to `req`.
pub async fn send(
    socket: &UdpSocket,
    req: &SipMessage,
    source: SocketAddr,
    force_rport: bool,
    code: u16,
    reason: &str,
    headers: &[String],
) {
    let ip = source.ip().to_string();
    let received = Received {
        ip: &ip,
        port: source.port(),
        force_rport,
    };
    let tag = local_tag(req);
    let bytes = match build_reply(req, code, reason, Some(&tag), Some(received), headers) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(peer = %source, code, error = %e, "cannot build reply");
            return;
        }
    };
    let to = destination(req, source, force_rport);
    if let Err(e) = socket.send_to(&bytes, to).await {
        tracing::warn!(peer = %to, code, error = %e, "sending reply failed");
    }
}

/// Salted hash used for Via branches (see forward.rs).
pub fn salted_hash(salt: &impl BuildHasher, parts: &[&str]) -> u64 {
    let mut h = salt.build_hasher();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}
