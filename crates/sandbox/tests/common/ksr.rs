//! Helpers for the KSR module behaviour tests: run a Lua route and look at
//! what it logged, did and forwarded.

use kemibox_kemi::{Event, Level, Message};
use kemibox_sandbox::{Instance, Invocation, Outcome, Tenant};

use super::{runtime, spec};

/// Lua helper every script below starts with: logs `label type value`, so
/// a test sees both what a KSR function returned and its Lua type.
pub const SAY: &str = r#"
local function say(label, v)
    KSR.info(label .. " " .. type(v) .. " " .. tostring(v))
end
"#;

/// An instance of `body` (prefixed with [`SAY`]) that records its log lines.
pub async fn instance(body: &str) -> Instance {
    let source = format!("{SAY}{body}");
    let (_, mut instance) = Tenant::load(&runtime(), spec("modules", &source))
        .await
        .expect("script loads");
    instance.ctx().record_logs = true;
    instance
}

/// Run `ksr_request_route` of a fresh instance of `body` on `message`.
pub async fn route(body: &str, message: Message) -> Invocation {
    instance(body)
        .await
        .invoke("ksr_request_route", Some(message))
        .await
}

/// A message from its start line and headers (CRLF added); Content-Length
/// is computed from `body`.
pub fn sip(lines: &[&str], body: &str) -> String {
    format!(
        "{}\r\nContent-Length: {}\r\n\r\n{body}",
        lines.join("\r\n"),
        body.len()
    )
}

/// The KEMI integer the route returned.
pub fn ret(inv: &Invocation) -> i32 {
    match inv.outcome {
        Outcome::Ok { ret } => ret,
        ref other => panic!("route failed: {other:?}"),
    }
}

/// Every line the route logged, in order.
pub fn logs(inv: &Invocation) -> Vec<String> {
    inv.events
        .iter()
        .filter_map(|e| match e {
            Event::Log { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// The lines logged at ERROR level (bad arguments, refused calls).
pub fn errors(inv: &Invocation) -> Vec<String> {
    inv.events
        .iter()
        .filter_map(|e| match e {
            Event::Log {
                level: Level::Err,
                message,
            } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// The events other than log lines.
pub fn actions(inv: &Invocation) -> Vec<Event> {
    inv.events
        .iter()
        .filter(|e| !matches!(e, Event::Log { .. }))
        .cloned()
        .collect()
}

/// The message as the proxy would forward it.
pub fn forwarded(inv: &Invocation) -> String {
    let m = inv.message.as_ref().expect("the invocation had a message");
    String::from_utf8(kemibox_sip::render(&m.sip, &m.edits)).expect("UTF-8")
}
