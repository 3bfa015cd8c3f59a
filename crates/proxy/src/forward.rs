//! Sending requests on, and replies back (RFC 3261 16.6, 16.7, 16.11).

use std::net::{IpAddr, SocketAddr};

use kemibox_kemi::Message;
use kemibox_sip::{Received, Uri, Via, render};
use tokio::net::UdpSocket;

use crate::{Shared, reply};

/// Where the request goes: `$du` if set, else the R-URI (port 5060 when
/// none is given). Host names are resolved through the system resolver.
async fn resolve(uri: &str) -> Result<SocketAddr, String> {
    let parsed = Uri::parse(uri).map_err(|e| format!("bad destination URI {uri:?}: {e}"))?;
    if let Some(Some(transport)) = parsed.param("transport")
        && !transport.eq_ignore_ascii_case("udp")
    {
        return Err(format!("{uri}: transport {transport} is not supported yet"));
    }
    let port = parsed.port.unwrap_or(5060);
    let host = parsed.host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    addrs.next().ok_or_else(|| format!("{host} has no address"))
}

/// Forward a request statelessly: stamp the sender's Via with
/// received/rport, add our own Via with a branch derived from the request
/// (so retransmissions get the same one, 16.11), send to $du or the R-URI.
pub async fn request(shared: &Shared, socket: &UdpSocket, message: &mut Message) {
    let Some(target) = message.dst_uri.clone().or_else(|| message.ruri()) else {
        return;
    };
    let destination = match resolve(&target).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(tenant = %shared.pool.tenant().spec.id, "cannot relay: {e}");
            let (code, reason) = &shared.config.error_reply;
            reply::send(
                socket,
                &message.sip,
                message.source,
                message.force_rport,
                *code,
                reason,
                &[],
            )
            .await;
            return;
        }
    };
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
    let top_branch = sip
        .top_via()
        .and_then(|v| v.branch().map(str::to_string))
        .unwrap_or_default();
    let ruri = message.ruri().unwrap_or_default();
    let branch = reply::salted_hash(
        &shared.branch_salt,
        &[&top_branch, &ruri, sip.call_id().unwrap_or(""), &target],
    );
    let local = message.local;
    let host = match local.ip() {
        IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    };
    let rport = if message.add_local_rport {
        ";rport"
    } else {
        ""
    };
    let via = format!(
        "SIP/2.0/UDP {host}:{};branch=z9hG4bK{branch:016x}{rport}",
        local.port()
    );
    if let Err(e) = message.edits.add_via(sip, &via) {
        tracing::warn!(error = %e, "cannot add Via");
        return;
    }
    let bytes = render(sip, &message.edits);
    if let Err(e) = socket.send_to(&bytes, destination).await {
        tracing::warn!(peer = %destination, error = %e, "relaying request failed");
    }
}

/// The next hop of a reply: the Via below ours. `None` (logged) when the
/// top Via is not ours or there is no next one.
pub fn reply_destination(message: &Message, socket: &UdpSocket) -> Option<SocketAddr> {
    let local = socket.local_addr().ok()?;
    let sip = &message.sip;
    let mut vias = sip.header_elements("Via");
    let ours = vias.next().and_then(|v| Via::parse(v).ok());
    let is_ours = ours.as_ref().is_some_and(|v| {
        v.host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            == Ok(local.ip())
            && v.port.unwrap_or(5060) == local.port()
    });
    if !is_ours {
        tracing::info!(peer = %message.source, "dropping reply whose top Via is not ours");
        return None;
    }
    let Some(next) = vias.next().and_then(|v| Via::parse(v).ok()) else {
        tracing::info!(peer = %message.source, "dropping reply with no Via below ours");
        return None;
    };
    let host = next.received().unwrap_or(next.host);
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    let port = match next.rport() {
        Some(Some(p)) => p,
        _ => next.port.unwrap_or(5060),
    };
    Some(SocketAddr::new(ip, port))
}

/// Send a reply on to `next_hop` without our Via.
pub async fn reply(socket: &UdpSocket, message: &mut Message, next_hop: SocketAddr) {
    message.edits.remove_top_via(&message.sip);
    let bytes = render(&message.sip, &message.edits);
    if let Err(e) = socket.send_to(&bytes, next_hop).await {
        tracing::warn!(peer = %next_hop, error = %e, "relaying reply failed");
    }
}
