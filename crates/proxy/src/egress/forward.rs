//! Sending requests on, and replies back (RFC 3261 16.6, 16.7, 16.11).

use std::net::{IpAddr, SocketAddr};

use kemibox_kemi::{Message, Transport};
use kemibox_metrics::TenantMetrics;
use kemibox_sandbox::Script;
use kemibox_sip::{Received, Uri, Via, render};

use super::{Egress, forward_options, onsend};
use crate::transport::SendOptions;

/// A resolved next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// Where a request for `uri` (`$du` if set, else the R-URI; a local
/// request's next hop) goes: port 5060 when none is given,
/// `;transport=tcp` for TCP. Host names are resolved through the system
/// resolver.
pub async fn resolve(uri: &str) -> Result<Hop, String> {
    let parsed = Uri::parse(uri).map_err(|e| format!("bad destination URI {uri:?}: {e}"))?;
    let transport = match parsed.param("transport") {
        Some(Some(t)) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
        Some(Some(t)) if !t.eq_ignore_ascii_case("udp") => {
            return Err(format!("{uri}: transport {t} is not supported"));
        }
        _ => Transport::Udp,
    };
    let port = parsed.port.unwrap_or(5060);
    let host = parsed.host.trim_start_matches('[').trim_end_matches(']');
    let addr = match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} has no address"))?,
    };
    Ok(Hop { transport, addr })
}

/// Where the request in `m` goes, `$du` else the R-URI, and its resolved
/// hop; `None` (logged) when it cannot be resolved or the tenant's
/// `relay_to` refuses it.
pub async fn next_hop(script: &Script, m: &Message) -> Option<(String, Hop)> {
    let target = m.dst_uri.clone().or_else(|| m.ruri())?;
    let hop = match resolve(&target).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(tenant = %script.tenant().spec.id, "cannot relay: {e}");
            return None;
        }
    };
    allowed(script, &target, hop).then_some((target, hop))
}

/// Whether the tenant's `relay_to` lets a request for `target` go to
/// `hop`; a refusal is logged with the tenant and the destination.
fn allowed(script: &Script, target: &str, hop: Hop) -> bool {
    let spec = &script.tenant().spec;
    let Some(relay_to) = &spec.relay_to else {
        return true;
    };
    let host = Uri::parse(target).map(|u| u.host).unwrap_or("");
    if relay_to.allows(host, hop.addr) {
        return true;
    }
    tracing::warn!(
        tenant = %spec.id,
        destination = %hop.addr,
        target,
        "not relaying: destination not in the tenant's relay_to"
    );
    false
}

fn host_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

/// The Via value of ours naming socket `from` for `transport`, with
/// `branch` (magic cookie included) and, when `rport`, an empty `rport`
/// asking the next hop to answer to the port we sent from (RFC 3581).
pub fn our_via(transport: Transport, from: SocketAddr, branch: &str, rport: bool) -> String {
    format!(
        "SIP/2.0/{} {}:{};branch={branch}{}",
        transport.as_str().to_ascii_uppercase(),
        host_text(from.ip()),
        from.port(),
        if rport { ";rport" } else { "" }
    )
}

impl Egress {
    /// Stamp the sender's Via with received/rport (RFC 3581), add our own
    /// Via naming `from` with a branch derived from `branch_key`, and
    /// render the request for `hop`.
    pub fn branch_bytes(
        &self,
        message: &mut Message,
        hop: Hop,
        from: SocketAddr,
        branch_key: &str,
    ) -> Option<Vec<u8>> {
        let sip = &message.sip;
        let ip = message.source.ip().to_string();
        message.edits.set_via_received(
            sip,
            Received {
                ip: &ip,
                port: message.source.port(),
                force_rport: message.force_rport,
            },
        );
        let branch = format!("z9hG4bK{:016x}", self.branch_hash(branch_key));
        let via = our_via(hop.transport, from, &branch, message.add_local_rport);
        if let Err(e) = message.edits.add_via(sip, &via) {
            tracing::warn!(error = %e, "cannot add Via");
            return None;
        }
        Some(render(sip, &message.edits))
    }

    /// Forward a request statelessly (RFC 3261 16.11; ACKs of 2xx): the
    /// branch is derived from the request so retransmissions get the same
    /// one.
    pub async fn forward_request(&self, script: &Script, message: &mut Message) {
        let Some((target, hop)) = next_hop(script, message).await else {
            return;
        };
        let top_branch = message
            .sip
            .top_via()
            .and_then(|v| v.branch().map(str::to_string))
            .unwrap_or_default();
        let ruri = message.ruri().unwrap_or_default();
        let key = format!(
            "{top_branch}|{ruri}|{}|{target}",
            message.sip.call_id().unwrap_or("")
        );
        if !onsend::allows(script, message, (hop.transport, hop.addr)).await {
            return;
        }
        let Some(from) = self.sending_socket(message, hop) else {
            return;
        };
        let Some(bytes) = self.branch_bytes(message, hop, from, &key) else {
            return;
        };
        self.send(
            hop.transport,
            from,
            hop.addr,
            bytes,
            forward_options(message),
            "a forwarded request",
        )
        .await;
    }

    /// The next hop of a reply: the Via below ours, with its transport. `None`
    /// (logged) when the top Via is not ours or there is no next one.
    pub fn reply_destination(&self, message: &Message) -> Option<(Transport, SocketAddr)> {
        let sip = &message.sip;
        let mut vias = sip.header_elements("Via");
        let ours = vias.next().and_then(|v| Via::parse(v).ok());
        let own: Vec<SocketAddr> = self
            .transports
            .local_addrs()
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        let is_ours = ours.as_ref().is_some_and(|v| {
            let ip = v
                .host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>();
            let port = v.port.unwrap_or(5060);
            ip.is_ok_and(|ip| own.contains(&SocketAddr::new(ip, port)))
        });
        if !is_ours {
            tracing::info!(peer = %message.source, "dropping reply whose top Via is not ours");
            return None;
        }
        let Some(next) = vias.next().and_then(|v| Via::parse(v).ok()) else {
            tracing::info!(peer = %message.source, "dropping reply with no Via below ours");
            return None;
        };
        let transport = if next.transport.eq_ignore_ascii_case("TCP") {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        let host = next.received().unwrap_or(next.host);
        let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            tracing::info!(peer = %message.source, via_host = host, "dropping reply: next Via has no IP address");
            return None;
        };
        let port = match next.rport() {
            Some(Some(p)) => p,
            _ => next.port.unwrap_or(5060),
        };
        Some((transport, SocketAddr::new(ip, port)))
    }

    /// Send a reply on to `next_hop` without our Via, counted for the
    /// tenant whose `metrics` are given.
    pub async fn forward_reply(
        &self,
        message: &mut Message,
        next_hop: (Transport, SocketAddr),
        metrics: Option<&TenantMetrics>,
    ) {
        message.edits.remove_top_via(&message.sip);
        let bytes = render(&message.sip, &message.edits);
        if let Some(metrics) = metrics {
            metrics.reply(message.sip.status().unwrap_or(0));
        }
        let (transport, to) = next_hop;
        self.send(
            transport,
            message.local,
            to,
            bytes,
            SendOptions::default(),
            "a relayed reply",
        )
        .await;
    }
}
