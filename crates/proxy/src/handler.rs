//! What happens to one received message: parsing and checks, the tenant,
//! its rate limit, the request route, and handing the rest to the
//! transaction core.

use std::sync::Arc;

use kemibox_kemi::{Message, Transport};
use kemibox_sandbox::{Pool, Script};
use kemibox_sip::SipMessage;

use crate::Shared;
use crate::dispatch::{Dispatch, Handler};
use crate::route::{self, Fallback, REPLY_ROUTE, REQUEST_ROUTE, Ran, RouteType};
use crate::stateful::{Verdict, dialog};
use crate::transport::Inbound;

impl Handler for Shared {
    fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }

    async fn handle(self: &Arc<Self>, inbound: Inbound) {
        handle(self, inbound).await
    }
}

/// Route one received message through the script and act on the result.
async fn handle(shared: &Shared, inbound: Inbound) {
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
            reply(shared, &message, 400, e.reason(), &[]).await;
        } else {
            tracing::info!(peer = %source, reason = e.reason(), "dropping malformed message");
        }
        return;
    }
    let message = Message::new(sip, source, local, transport);
    if message.sip.is_request() {
        request(shared, message).await;
    } else if let Some(stray) = shared.core.on_response(message).await {
        stateless_response(shared, stray).await;
    }
}

/// A stateless reply of the proxy's own, counted for the request's tenant.
async fn reply(shared: &Shared, m: &Message, code: u16, reason: &str, headers: &[String]) {
    let metrics = shared.tenants.for_request(m).map(|p| p.metrics().as_ref());
    shared
        .core
        .egress()
        .reply(m, code, reason, headers, metrics)
        .await;
}

async fn request(shared: &Shared, message: Message) {
    // The tenant is looked up only for what a script or a tenant's counters
    // see: retransmissions and non-2xx ACKs end in the transaction layer.
    let verdict = shared.core.on_request(&message).await;
    let tenant = || shared.tenants.for_request(&message).map(Pool::pin);
    let script = match verdict {
        Verdict::Done => return,
        Verdict::Cancel(invite) => {
            shared
                .core
                .cancel(&message, invite, tenant().as_ref())
                .await;
            return;
        }
        Verdict::Route => tenant(),
    };
    let is_ack = message.sip.method_str() == "ACK";
    let initial = message.sip.to().is_some_and(|t| t.tag().is_none());
    if initial && shared.draining.load(std::sync::atomic::Ordering::Relaxed) && !is_ack {
        reply(
            shared,
            &message,
            503,
            "Service Unavailable",
            &["Retry-After: 5".into()],
        )
        .await;
        return;
    }
    let Some(script) = script else {
        let total = shared.metrics.process.unmatched.inc();
        tracing::debug!(
            peer = %message.source,
            ruri = %message.sip.ruri().unwrap_or(""),
            unmatched = total,
            "no tenant for this request"
        );
        if !is_ack {
            let (code, reason) = &shared.config.unmatched_reply;
            reply(shared, &message, *code, reason, &[]).await;
        }
        return;
    };
    if !is_ack && message.sip.method_str() != "CANCEL" && !admit(shared, &script, &message).await {
        return;
    }
    let starts_call = dialog::initial_invite(&message.sip);
    if starts_call && let Some((code, reason)) = dialog::admit_call(&script, &message).await {
        shared
            .core
            .egress()
            .reply(&message, code, &reason, &[], Some(script.metrics()))
            .await;
        return;
    }
    if !initial {
        dialog::in_dialog(&script, &message.sip).await;
    }
    // Kept for the error reply: the route consumes the message.
    let original = Message::new(
        message.sip.clone(),
        message.source,
        message.local,
        message.transport,
    );
    match route::run(&script, RouteType::Request, REQUEST_ROUTE, message).await {
        Ran::Done(routed) => {
            shared
                .core
                .act(
                    &script,
                    RouteType::Request,
                    routed.message,
                    routed.actions,
                    None,
                )
                .await;
        }
        Ran::Failed(Fallback::ErrorReply) if !is_ack => {
            let (code, reason) = &shared.config.error_reply;
            shared
                .core
                .egress()
                .reply(&original, *code, reason, &[], Some(script.metrics()))
                .await;
        }
        Ran::Failed(Fallback::ErrorReply | Fallback::Proceed | Fallback::DropBranch) => {}
    }
    if starts_call {
        dialog::routed(&script, &original.sip).await;
    }
}

/// Whether the tenant's rate limit lets `message` run the request route;
/// when not, it is answered with the tenant's reply and counted.
async fn admit(shared: &Shared, script: &Script, message: &Message) -> bool {
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
        shared
            .core
            .egress()
            .reply(message, r.code, &r.reason, &headers, Some(script.metrics()))
            .await;
    }
    false
}

/// A response no transaction knows (a 2xx retransmission, or a reply to a
/// statelessly forwarded request): the `ksr_reply_route` of the tenant of
/// the socket it arrived on, then on by Via. With no such tenant, or when
/// the route fails, it goes on by Via as it came.
async fn stateless_response(shared: &Shared, message: Message) {
    let egress = shared.core.egress();
    let Some(next_hop) = egress.reply_destination(&message) else {
        return;
    };
    let pool = shared
        .tenants
        .select(message.transport, message.local, None);
    let metrics = pool.map(|p| p.metrics().clone());
    let script = pool
        .filter(|p| p.tenant().defines(REPLY_ROUTE))
        .map(Pool::pin);
    let mut message = message;
    if let Some(script) = script {
        match route::run(&script, RouteType::Reply, REPLY_ROUTE, message.clone()).await {
            Ran::Done(routed) => {
                if !routed.actions.is_empty() {
                    shared
                        .core
                        .act(
                            &script,
                            RouteType::Reply,
                            routed.message.clone(),
                            routed.actions,
                            None,
                        )
                        .await;
                }
                if routed.message.drop {
                    return;
                }
                message = routed.message;
            }
            // The reply goes on as received.
            Ran::Failed(_) => {}
        }
    }
    egress
        .forward_reply(&mut message, next_hop, metrics.as_deref())
        .await;
}
