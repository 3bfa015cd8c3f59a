//! What happens to one received message.

use std::net::SocketAddr;
use std::sync::Arc;

use kemibox_kemi::{Event, Message, Transport};
use kemibox_sandbox::{Invocation, Outcome, Pool, Script};
use kemibox_sip::SipMessage;
use kemibox_tm::ServerId;

use crate::stateful::{Callbacks, Stateful, Verdict};
use crate::transport::Inbound;
use crate::{Shared, forward, reply};

/// Route one received message through the script and act on the result.
pub async fn handle(shared: &Arc<Shared>, inbound: Inbound) {
    let Inbound {
        transport,
        local,
        source,
        data,
    } = inbound;
    if data.iter().all(|b| b.is_ascii_whitespace()) {
        return; // keep-alive
    }
    let sip = match SipMessage::parse(data) {
        Ok(m) => m,
        Err(e) => {
            shared.metrics.process.malformed.inc();
            tracing::info!(peer = %source, reason = e.reason(), "dropping unparsable message");
            return;
        }
    };
    shared
        .metrics
        .process
        .received(transport == Transport::Tcp, sip.is_request());
    if let Err(e) = sip.validate() {
        shared.metrics.process.malformed.inc();
        if sip.is_request() && sip.method_str() != "ACK" {
            tracing::info!(peer = %source, reason = e.reason(), "bad request: answering 400");
            let message = Message::new(sip, source, local, transport);
            reply::send(shared, &message, 400, e.reason(), &[]).await;
        } else {
            tracing::info!(peer = %source, reason = e.reason(), "dropping malformed message");
        }
        return;
    }
    let message = Message::new(sip, source, local, transport);
    if message.sip.is_request() {
        request(shared, message).await;
    } else {
        response(shared, message).await;
    }
}

async fn request(shared: &Arc<Shared>, message: Message) {
    if let Verdict::Done = Stateful::on_request(shared, &message).await {
        return;
    }
    let initial = message.sip.to().is_some_and(|t| t.tag().is_none());
    if initial
        && shared.draining.load(std::sync::atomic::Ordering::Relaxed)
        && message.sip.method_str() != "ACK"
    {
        reply::send(
            shared,
            &message,
            503,
            "Service Unavailable",
            &["Retry-After: 5".into()],
        )
        .await;
        return;
    }
    let source = message.source;
    let is_ack = message.sip.method_str() == "ACK";
    let Some(script) = shared.tenants.for_request(&message).map(Pool::pin) else {
        let total = shared.metrics.process.unmatched.inc();
        tracing::debug!(
            peer = %source,
            ruri = %message.sip.ruri().unwrap_or(""),
            unmatched = total,
            "no tenant for this request"
        );
        if !is_ack {
            let (code, reason) = &shared.config.unmatched_reply;
            reply::send(shared, &message, *code, reason, &[]).await;
        }
        return;
    };
    if !is_ack && message.sip.method_str() != "CANCEL" && !admit(shared, &script, &message).await {
        return;
    }
    // Kept for the error reply: the route consumes the message.
    let original = Message::new(
        message.sip.clone(),
        source,
        message.local,
        message.transport,
    );
    let invocation = match script.invoke("ksr_request_route", Some(message)).await {
        Ok(inv) => inv,
        Err(failure) => {
            tracing::error!(tenant = %failure.tenant, error = %failure, "cannot instantiate the script");
            if !is_ack {
                reply::error(shared, &original).await;
            }
            return;
        }
    };
    if !invocation.outcome.is_ok() {
        log_failure(&script, &invocation, Some(source));
        if !is_ack {
            reply::error(shared, &original).await;
        }
        return;
    }
    let Invocation {
        events, message, ..
    } = invocation;
    let Some(message) = message else { return };
    act(shared, &script, events, message).await;
}

/// Whether the tenant's rate limit lets `message` run the request route;
/// when not, it is answered with the tenant's reply and counted.
async fn admit(shared: &Arc<Shared>, script: &Script, message: &Message) -> bool {
    let Some(limiter) = shared.tenants.limiter(script.pool()) else {
        return true;
    };
    let kemibox_sandbox::Take::No { warn } = limiter.admit(std::time::Instant::now()) else {
        return true;
    };
    let total = script.metrics().rate_limited.inc();
    if warn {
        tracing::warn!(
            tenant = %script.tenant().spec.id,
            rate_limited = total,
            peer = %message.source,
            "rate limited: refusing requests over the tenant's invocations_per_second"
        );
    }
    if let Some(limit) = limiter.limit() {
        let r = &limit.reply;
        let headers: Vec<String> = r
            .retry_after
            .map(|s| format!("Retry-After: {s}"))
            .into_iter()
            .collect();
        reply::send(shared, message, r.code, &r.reason, &headers).await;
    }
    false
}

/// Carry out what the request route asked for, in order: callbacks,
/// transactions, relays (stateful and stateless), replies.
async fn act(shared: &Arc<Shared>, script: &Script, events: Vec<Event>, mut message: Message) {
    let is_ack = message.sip.method_str() == "ACK";
    let mut callbacks = Callbacks::default();
    let mut server = None;
    for event in events {
        match event {
            Event::Callback { kind, function } => callbacks.arm(&kind, function),
            Event::Tm { function, .. } if function == "t_newtran" && !is_ack => {
                server_of(shared, script, &mut server, &message, &callbacks).await;
            }
            Event::Tm { function, .. } if function == "t_relay" && !message.drop => {
                if is_ack {
                    // The ACK of a 2xx has no transaction (RFC 3261 17.2.1).
                    forward::request(shared, script, &mut message).await;
                    continue;
                }
                let Some(server) =
                    server_of(shared, script, &mut server, &message, &callbacks).await
                else {
                    continue;
                };
                if !Stateful::relay(shared, server, message.clone(), &callbacks).await {
                    let (code, reason) = shared.config.error_reply.clone();
                    Stateful::reply(shared, server, &message, code, &reason, &[]).await;
                }
            }
            Event::Suspend { index, label } if !is_ack => {
                if let Some(server) =
                    server_of(shared, script, &mut server, &message, &callbacks).await
                {
                    Stateful::suspend(shared, server, (index, label), &message, &callbacks).await;
                }
            }
            Event::Continue {
                index,
                label,
                route,
            } => Stateful::resume(shared, script, (index, label), &route).await,
            Event::Forward { destination } if !message.drop => {
                let mut forwarded = message.clone();
                if destination.is_some() {
                    forwarded.dst_uri = destination;
                }
                forward::request(shared, script, &mut forwarded).await;
            }
            Event::Reply {
                code,
                reason,
                headers,
                stateful,
            } => {
                let code = u16::try_from(code).unwrap_or(500);
                if stateful {
                    server_of(shared, script, &mut server, &message, &callbacks).await;
                }
                match server {
                    Some(server) => {
                        Stateful::reply(shared, server, &message, code, &reason, &headers).await
                    }
                    None => reply::send(shared, &message, code, &reason, &headers).await,
                }
            }
            _ => {}
        }
    }
}

/// The request's server transaction: the one this route's events already
/// made, else a new one (`None` when it cannot be created; answered).
async fn server_of(
    shared: &Arc<Shared>,
    script: &Script,
    server: &mut Option<ServerId>,
    message: &Message,
    callbacks: &Callbacks,
) -> Option<ServerId> {
    if server.is_none() {
        *server = Stateful::ensure_server(shared, script, message, callbacks)
            .await
            .ok();
    }
    *server
}

async fn response(shared: &Arc<Shared>, message: Message) {
    Stateful::on_response(shared, message).await;
}

/// The route run for every reply, when the script defines it.
pub(crate) const REPLY_ROUTE: &str = "ksr_reply_route";

/// A response no transaction knows (a 2xx retransmission, or a reply to a
/// statelessly forwarded request): the `ksr_reply_route` of the tenant of
/// the socket it arrived on, then on by Via. With no such tenant it goes on
/// by Via without a script.
pub(crate) async fn stateless_response(shared: &Arc<Shared>, mut message: Message) {
    let source = message.source;
    let Some(next_hop) = forward::reply_destination(shared, &message) else {
        return;
    };
    let script = shared
        .tenants
        .select(message.transport, message.local, None)
        .filter(|p| p.tenant().defines(REPLY_ROUTE))
        .map(Pool::pin);
    let Some(script) = script else {
        forward::reply(shared, &mut message, next_hop).await;
        return;
    };
    let invocation = match script.invoke(REPLY_ROUTE, Some(message)).await {
        Ok(inv) => inv,
        Err(failure) => {
            tracing::error!(tenant = %failure.tenant, error = %failure, "cannot instantiate the script");
            return;
        }
    };
    match &invocation.outcome {
        Outcome::Ok { .. } | Outcome::NotFound { .. } => {}
        _ => {
            log_failure(&script, &invocation, Some(source));
            return;
        }
    }
    if let Some(mut message) = invocation.message
        && !message.drop
    {
        forward::reply(shared, &mut message, next_hop).await;
    }
}

/// Log a failed route with the tenant, `script:line`, the version, the
/// cause and the peer. Throttled invocations are not logged one by one:
/// the pool logs the throttling once a second.
pub(crate) fn log_failure(script: &Script, invocation: &Invocation, peer: Option<SocketAddr>) {
    if invocation.outcome == Outcome::Throttled {
        return;
    }
    let tenant = script.tenant();
    let version = tenant.version;
    let script = &tenant.spec.script_name;
    let location = invocation
        .location(script)
        .unwrap_or_else(|| script.clone());
    let cause = match &invocation.outcome {
        Outcome::LuaError { message, .. } => message.clone(),
        Outcome::OutOfMemory { message }
        | Outcome::NotFound { message }
        | Outcome::Trap { message } => message.clone(),
        other => other.label().to_string(),
    };
    tracing::error!(
        tenant = %invocation.tenant,
        function = %invocation.function,
        outcome = invocation.outcome.label(),
        version,
        fuel_used = invocation.fuel_used,
        peer = ?peer,
        "{location}: {}",
        // Lua's message often starts with the location already.
        cause
            .strip_prefix(location.as_str())
            .and_then(|c| c.strip_prefix(": "))
            .unwrap_or(&cause)
    );
}
