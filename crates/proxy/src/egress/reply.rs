//! Replies the proxy sends itself (`KSR.sl`, errors, 400s).

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::SocketAddr;

use kemibox_kemi::{Message, Transport};
use kemibox_metrics::TenantMetrics;
use kemibox_sip::{Received, SipMessage, build_reply};

use super::{Egress, reply_options};

/// Where a reply to the request in `m` goes (RFC 3261 18.2.2, RFC 3581):
/// back over the connection for TCP; for UDP the source address when the
/// top Via asks for rport (or the script forced it), otherwise the source
/// IP with the Via's port.
pub fn destination(m: &Message) -> SocketAddr {
    let via = m.sip.top_via();
    let rport = via.as_ref().is_some_and(|v| v.rport().is_some());
    if m.transport == Transport::Tcp || rport || m.force_rport {
        return m.source;
    }
    let port = via.and_then(|v| v.port).unwrap_or(5060);
    SocketAddr::new(m.source.ip(), port)
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

/// A reply of the proxy's own to the request in `m` (Via stamped with
/// received/rport, a To-tag of ours); `None`, logged, when it cannot be
/// built.
pub fn build(m: &Message, code: u16, reason: &str, headers: &[String]) -> Option<Vec<u8>> {
    let ip = m.source.ip().to_string();
    let received = Received {
        ip: &ip,
        port: m.source.port(),
        force_rport: m.force_rport,
    };
    let tag = local_tag(&m.sip);
    match build_reply(&m.sip, code, reason, Some(&tag), Some(received), headers) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!(peer = %m.source, code, error = %e, "cannot build reply");
            None
        }
    }
}

impl Egress {
    /// Build and send a reply to the request in `m`, statelessly, counted
    /// for the tenant whose `metrics` are given.
    pub async fn reply(
        &self,
        m: &Message,
        code: u16,
        reason: &str,
        headers: &[String],
        metrics: Option<&TenantMetrics>,
    ) {
        let Some(bytes) = build(m, code, reason, headers) else {
            return;
        };
        if let Some(metrics) = metrics {
            metrics.reply(code);
        }
        let to = destination(m);
        self.send(m.transport, m.local, to, bytes, reply_options(m), "a reply")
            .await;
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
