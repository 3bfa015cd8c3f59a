//! Calling KSR host functions natively in unit tests: a [`Ctx`] routing one
//! parsed message, the host's futures driven without a runtime (none of
//! the functions under test waits), and what a call left behind (log
//! lines, the message as it would be forwarded).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use kemibox_sip::{SipMessage, render};

use crate::bindings::kemibox::ksr::types::Xval;
use crate::{Ctx, Event, Message, Myself, PvValue, Services, Transport};

/// Where test messages come from.
pub(crate) const SOURCE: &str = "192.0.2.7:5070";
/// The socket test messages arrive on: one of [`myself`]'s.
pub(crate) const LOCAL: &str = "192.0.2.1:5060";

/// An initial INVITE from alice to bob, without body.
pub(crate) const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK-1\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=a1\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: call-1@192.0.2.7\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@192.0.2.7:5070>\r\n\
User-Agent: phone/1.0\r\n\
Content-Length: 0\r\n\r\n";

/// Run a host function's future to its end; it must not wait.
pub(crate) fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the future waited"),
    }
}

/// The proxy's sockets: UDP and TCP on 5060 and a second port, 5080.
pub(crate) fn myself() -> Myself {
    Myself {
        addresses: vec![LOCAL.parse().unwrap(), "192.0.2.1:5080".parse().unwrap()],
        domains: vec!["proxy.example.com".into()],
    }
}

/// [`INVITE`] with the header lines starting with a key of `replace`
/// replaced (a replacement of `""` removes the line) and `add` inserted
/// before Content-Length.
pub(crate) fn invite_with(replace: &[(&str, &str)], add: &[&str]) -> String {
    let mut lines: Vec<String> = Vec::new();
    for line in INVITE.trim_end().split("\r\n") {
        match replace.iter().find(|(key, _)| line.starts_with(key)) {
            Some((_, "")) => {}
            Some((_, new)) => lines.push(new.to_string()),
            None if line.starts_with("Content-Length:") => {
                lines.extend(add.iter().map(|a| a.to_string()));
                lines.push(line.to_string());
            }
            None => lines.push(line.to_string()),
        }
    }
    format!("{}\r\n\r\n", lines.join("\r\n"))
}

/// A context routing `raw` received over `transport`, logging into its
/// events.
pub(crate) fn ctx_on(raw: &str, transport: Transport) -> Ctx {
    let mut ctx = Ctx::new(
        "t1".parse().expect("a valid tenant id"),
        Arc::new(myself()),
        Services::in_memory(),
    );
    ctx.record_logs = true;
    let sip = SipMessage::parse(raw.as_bytes().to_vec()).expect("the test message parses");
    let source: SocketAddr = SOURCE.parse().unwrap();
    let local: SocketAddr = LOCAL.parse().unwrap();
    ctx.begin(Some(Message::new(sip, source, local, transport)));
    ctx
}

/// A context routing `raw`, received over UDP.
pub(crate) fn ctx(raw: &str) -> Ctx {
    ctx_on(raw, Transport::Udp)
}

/// The routed message.
pub(crate) fn message(ctx: &mut Ctx) -> &mut Message {
    ctx.message.as_mut().expect("a message is routed")
}

/// The message as it would be forwarded, with the script's edits.
pub(crate) fn rendered(ctx: &Ctx) -> String {
    let m = ctx.message.as_ref().expect("a message is routed");
    String::from_utf8(render(&m.sip, &m.edits)).expect("UTF-8")
}

/// The log lines the calls wrote, in order, with a script error not yet
/// taken by a guest last (as the invocation's end logs it).
pub(crate) fn logs(ctx: &Ctx) -> Vec<String> {
    let mut lines: Vec<String> = ctx
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Log { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect();
    lines.extend(ctx.pending_script_error().map(str::to_string));
    lines
}

/// The events other than log lines.
pub(crate) fn actions(ctx: &Ctx) -> Vec<Event> {
    ctx.events
        .iter()
        .filter(|e| !matches!(e, Event::Log { .. }))
        .cloned()
        .collect()
}

/// A stateless reply event without headers.
pub(crate) fn reply(code: i32, reason: &str) -> Event {
    Event::Reply {
        code,
        reason: reason.into(),
        stateful: false,
        headers: Vec::new(),
    }
}

/// A KEMI value as a pseudo-variable value (`None` for `$null`), to
/// compare.
pub(crate) fn value(x: Xval) -> Option<PvValue> {
    match x {
        Xval::Null => None,
        Xval::Int(i) => Some(PvValue::Int(i)),
        Xval::Str(s) => Some(PvValue::Str(s)),
    }
}

/// A string value, for comparing with [`value`].
pub(crate) fn s(text: &str) -> Option<PvValue> {
    Some(PvValue::Str(text.into()))
}
