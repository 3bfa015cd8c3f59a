//! What happens to one received message.

use std::net::SocketAddr;

use kemibox_kemi::{Event, Message, Transport};
use kemibox_sandbox::{Invocation, Outcome};
use kemibox_sip::SipMessage;
use tokio::net::UdpSocket;

use crate::{Shared, forward, reply};

pub async fn handle(
    shared: &Shared,
    socket: &UdpSocket,
    local: SocketAddr,
    source: SocketAddr,
    data: Vec<u8>,
) {
    if data.iter().all(|b| b.is_ascii_whitespace()) {
        return; // keep-alive
    }
    let sip = match SipMessage::parse(data) {
        Ok(m) => m,
        Err(e) => {
            tracing::info!(peer = %source, reason = e.reason(), "dropping unparsable message");
            return;
        }
    };
    if let Err(e) = sip.validate() {
        if sip.is_request() && sip.method_str() != "ACK" {
            tracing::info!(peer = %source, reason = e.reason(), "bad request: answering 400");
            reply::send(socket, &sip, source, false, 400, e.reason(), &[]).await;
        } else {
            tracing::info!(peer = %source, reason = e.reason(), "dropping malformed message");
        }
        return;
    }
    let message = Message::new(sip, source, local, Transport::Udp);
    if message.sip.is_request() {
        request(shared, socket, message).await;
    } else {
        response(shared, socket, message).await;
    }
}

async fn request(shared: &Shared, socket: &UdpSocket, message: Message) {
    let source = message.source;
    let is_ack = message.sip.method_str() == "ACK";
    // Kept for the error reply: the route consumes the message.
    let original = message.sip.clone();
    let invocation = match shared.pool.invoke("ksr_request_route", Some(message)).await {
        Ok(inv) => inv,
        Err(failure) => {
            tracing::error!(tenant = %failure.tenant, error = %failure, "cannot instantiate the script");
            if !is_ack {
                let (code, reason) = &shared.config.error_reply;
                reply::send(socket, &original, source, false, *code, reason, &[]).await;
            }
            return;
        }
    };
    if !invocation.outcome.is_ok() {
        log_failure(shared, &invocation, source);
        if !is_ack {
            let (code, reason) = &shared.config.error_reply;
            reply::send(socket, &original, source, false, *code, reason, &[]).await;
        }
        return;
    }
    let Invocation {
        events, message, ..
    } = invocation;
    let Some(mut message) = message else { return };
    for event in events {
        match event {
            Event::Reply {
                code,
                reason,
                headers,
                ..
            } => {
                let code = u16::try_from(code).unwrap_or(500);
                reply::send(
                    socket,
                    &message.sip,
                    source,
                    message.force_rport,
                    code,
                    &reason,
                    &headers,
                )
                .await;
            }
            Event::Tm { function, .. } if function == "t_relay" => {
                if !message.drop {
                    forward::request(shared, socket, &mut message).await;
                }
            }
            _ => {}
        }
    }
}

async fn response(shared: &Shared, socket: &UdpSocket, message: Message) {
    let source = message.source;
    let Some(next_hop) = forward::reply_destination(&message, socket) else {
        return;
    };
    let invocation = match shared.pool.invoke("ksr_reply_route", Some(message)).await {
        Ok(inv) => inv,
        Err(failure) => {
            tracing::error!(tenant = %failure.tenant, error = %failure, "cannot instantiate the script");
            return;
        }
    };
    match &invocation.outcome {
        Outcome::Ok { .. } | Outcome::NotFound { .. } => {}
        _ => {
            log_failure(shared, &invocation, source);
            return;
        }
    }
    if let Some(mut message) = invocation.message
        && !message.drop
    {
        forward::reply(socket, &mut message, next_hop).await;
    }
}

fn log_failure(shared: &Shared, invocation: &Invocation, peer: SocketAddr) {
    let tenant = shared.pool.tenant();
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
        fuel_used = invocation.fuel_used,
        %peer,
        "{location}: {cause}"
    );
}
