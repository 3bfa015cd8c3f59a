//! Shared set-up for the sandbox tests: one runtime per test binary, and a
//! sample INVITE to route.
#![allow(
    dead_code,
    reason = "each test binary uses only some of the shared helpers"
)]

pub mod ksr;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use kemibox_kemi::{Message, Myself, Transport};
use kemibox_sandbox::{Limits, Pool, Runtime, TenantSpec};
use kemibox_sip::SipMessage;

pub fn runtime() -> Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| Runtime::new(None).expect("runtime"))
        .clone()
}

pub const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-test-1\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=a1\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: call-1@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@127.0.0.1:5070>\r\n\
User-Agent: test-ua\r\n\
Content-Length: 0\r\n\r\n";

pub fn source() -> SocketAddr {
    "127.0.0.1:5070".parse().unwrap()
}

pub fn local() -> SocketAddr {
    "127.0.0.1:5060".parse().unwrap()
}

pub fn message(text: &str) -> Message {
    let sip = SipMessage::parse(text.as_bytes().to_vec()).expect("test message parses");
    Message::new(sip, source(), local(), Transport::Udp)
}

pub fn invite() -> Message {
    message(INVITE)
}

pub fn spec(id: &str, source: &str) -> TenantSpec {
    let name = format!("{id}.lua");
    let mut spec = TenantSpec::new(id.parse().expect("a valid tenant id"), name, source);
    spec.myself = Arc::new(Myself {
        addresses: vec![local()],
        domains: vec![],
    });
    spec
}

pub fn spec_with(id: &str, source: &str, limits: Limits) -> TenantSpec {
    let mut s = spec(id, source);
    s.limits = limits;
    s
}

pub async fn pool(id: &str, source: &str) -> Pool {
    Pool::new(&runtime(), spec(id, source), 4)
        .await
        .expect("script loads")
}
