//! A virtual-clock harness: carries out effects the way the proxy will,
//! recording every send and TU event with the time it happened.

#![allow(
    dead_code,
    reason = "each test binary uses only some of the shared helpers"
)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use kemibox_sip::SipMessage;
use kemibox_tm::{
    AutoTrying, Config, Effect, Millis, Peer, Received, TimerId, Timers, TransactionTable, TuEvent,
};

/// Where the proxy sends requests in these tests (the next hop).
pub const NEXT_HOP: &str = "192.0.2.4:5060";
/// Where requests come from (the UAC).
pub const UAC: &str = "198.51.100.7:5060";
/// The proxy's own socket: where requests arrive, the address its Via
/// names, and so where everything is sent from.
pub const LOCAL: &str = "192.0.2.1:5060";

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Parses a message written with `\n` line ends.
pub fn msg(text: &str) -> SipMessage {
    SipMessage::parse_slice(crlf(text).as_bytes()).unwrap()
}

pub fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// Config with Timer C off (so only the RFC 17 timers run) and no
/// automatic 100.
pub fn config() -> Config {
    Config {
        timers: Timers {
            c: None,
            ..Timers::default()
        },
        max_transactions: 1000,
        auto_trying: AutoTrying::Off,
    }
}

#[derive(Debug, Clone)]
pub struct Sent {
    pub at: u64,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Bytes,
    pub reliable: bool,
}

impl Sent {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    pub fn first_line(&self) -> String {
        self.text().lines().next().unwrap_or_default().to_string()
    }
}

pub struct Sim {
    pub table: TransactionTable,
    pub now: u64,
    pending: Vec<(Millis, u64, TimerId)>,
    seq: u64,
    pub sent: Vec<Sent>,
    pub events: Vec<(u64, TuEvent)>,
    pub armed: Vec<(u64, TimerId)>,
}

impl Sim {
    pub fn new(config: Config) -> Sim {
        Sim {
            table: TransactionTable::new(config),
            now: 0,
            pending: Vec::new(),
            seq: 0,
            sent: Vec::new(),
            events: Vec::new(),
            armed: Vec::new(),
        }
    }

    pub fn apply(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Send {
                    from,
                    to,
                    bytes,
                    reliable,
                } => self.sent.push(Sent {
                    at: self.now,
                    from,
                    to,
                    bytes,
                    reliable,
                }),
                Effect::Arm { timer, at } => {
                    assert_eq!(timer.at(), at);
                    assert!(at.0 >= self.now, "timer armed in the past");
                    self.seq += 1;
                    self.pending.push((at, self.seq, timer));
                    self.armed.push((self.now, timer));
                }
                Effect::Tu(ev) => self.events.push((self.now, ev)),
            }
        }
    }

    /// Fires every timer due up to `t`, in order, then sets the clock to `t`.
    pub fn run_until(&mut self, t: u64) {
        loop {
            let next = self
                .pending
                .iter()
                .enumerate()
                .filter(|(_, (at, _, _))| at.0 <= t)
                .min_by_key(|(_, (at, seq, _))| (*at, *seq))
                .map(|(i, _)| i);
            let Some(i) = next else { break };
            let (at, _, timer) = self.pending.remove(i);
            self.now = at.0;
            let effects = self.table.on_timer(timer, at);
            self.apply(effects);
        }
        self.now = t;
    }

    /// Advances to `t`, then hands `text` to the table as received.
    pub fn receive_at(&mut self, t: u64, text: &str) -> Received {
        self.run_until(t);
        self.receive(text)
    }

    pub fn receive(&mut self, text: &str) -> Received {
        let m = msg(text);
        let r = self.table.on_received(&m, Millis(self.now));
        match &r {
            Received::Absorbed { effects, .. } | Received::Response { effects, .. } => {
                self.apply(effects.clone())
            }
            _ => {}
        }
        r
    }

    /// Creates a server transaction for `text` received from the UAC.
    pub fn new_server(&mut self, text: &str, reliable: bool) -> kemibox_tm::ServerId {
        let m = msg(text);
        let peer = Peer::for_request(&m, addr(UAC), addr(LOCAL), reliable);
        let (id, effects) = self.table.new_server(&m, peer, Millis(self.now)).unwrap();
        self.apply(effects);
        id
    }

    pub fn respond(&mut self, server: kemibox_tm::ServerId, status: u16, text: &str) {
        let effects = self
            .table
            .send_response(server, status, crlf(text).into_bytes(), Millis(self.now))
            .unwrap();
        self.apply(effects);
    }

    /// Sends `text` on a new client transaction from [`LOCAL`] to
    /// [`NEXT_HOP`].
    pub fn send_request(&mut self, text: &str, reliable: bool) -> kemibox_tm::ClientId {
        let (id, effects) = self
            .table
            .send_request(
                msg(text),
                addr(LOCAL),
                addr(NEXT_HOP),
                reliable,
                Millis(self.now),
            )
            .unwrap();
        self.apply(effects);
        id
    }

    pub fn send_times(&self) -> Vec<u64> {
        self.sent.iter().map(|s| s.at).collect()
    }

    pub fn take_sent(&mut self) -> Vec<Sent> {
        std::mem::take(&mut self.sent)
    }

    pub fn take_events(&mut self) -> Vec<(u64, TuEvent)> {
        std::mem::take(&mut self.events)
    }

    pub fn pending_timers(&self) -> usize {
        self.pending.len()
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An INVITE as the proxy forwards it: its own Via on top (branch
/// `branch`), the UAC's below, a Route, and a body.
pub fn proxied_invite(branch: &str) -> String {
    format!(
        "INVITE sip:bob@192.0.2.4:5060 SIP/2.0\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\n\
         Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKuac1;received=198.51.100.7\n\
         Route: <sip:edge.example.com;lr>\n\
         Max-Forwards: 69\n\
         From: \"Alice\" <sip:alice@example.com>;tag=a73kszlfl\n\
         To: <sip:bob@example.com>\n\
         Call-ID: 1j9FpLxk3uxtm8tn@198.51.100.7\n\
         CSeq: 314 INVITE\n\
         Contact: <sip:alice@198.51.100.7>\n\
         Content-Type: application/sdp\n\
         Content-Length: 4\n\
         \n\
         v=0\n"
    )
}

/// A response to [`proxied_invite`] (or another proxied request with
/// CSeq `314 method`), as received from the next hop.
pub fn downstream_response(
    branch: &str,
    status: &str,
    method: &str,
    to_tag: Option<&str>,
) -> String {
    let tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    format!(
        "SIP/2.0 {status}\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\n\
         Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKuac1;received=198.51.100.7\n\
         From: \"Alice\" <sip:alice@example.com>;tag=a73kszlfl\n\
         To: <sip:bob@example.com>{tag}\n\
         Call-ID: 1j9FpLxk3uxtm8tn@198.51.100.7\n\
         CSeq: 314 {method}\n\
         Content-Length: 0\n\n"
    )
}

/// A non-INVITE request as the proxy forwards it.
pub fn proxied_request(method: &str, branch: &str) -> String {
    format!(
        "{method} sip:bob@192.0.2.4:5060 SIP/2.0\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\n\
         Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKuac1;received=198.51.100.7\n\
         Max-Forwards: 69\n\
         From: <sip:alice@example.com>;tag=a73kszlfl\n\
         To: <sip:bob@example.com>\n\
         Call-ID: 2xTb9vxSit55XU7p8@198.51.100.7\n\
         CSeq: 314 {method}\n\
         Content-Length: 0\n\n"
    )
}

/// A request as received from the UAC (one Via, the UAC's).
pub fn uac_request(method: &str, cseq_method: &str, branch: &str, to_tag: Option<&str>) -> String {
    let tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    format!(
        "{method} sip:bob@example.com SIP/2.0\n\
         Via: SIP/2.0/UDP 198.51.100.7:5060;branch={branch}\n\
         Max-Forwards: 70\n\
         From: <sip:alice@example.com>;tag=a73kszlfl\n\
         To: <sip:bob@example.com>{tag}\n\
         Call-ID: 3848276298220188511@198.51.100.7\n\
         CSeq: 1 {cseq_method}\n\
         Content-Length: 0\n\n"
    )
}

/// A response the proxy sends to a [`uac_request`] (with the To tag the
/// UAS chose).
pub fn response_to_uac(status: &str, branch: &str, cseq_method: &str, to_tag: &str) -> String {
    format!(
        "SIP/2.0 {status}\n\
         Via: SIP/2.0/UDP 198.51.100.7:5060;branch={branch}\n\
         From: <sip:alice@example.com>;tag=a73kszlfl\n\
         To: <sip:bob@example.com>;tag={to_tag}\n\
         Call-ID: 3848276298220188511@198.51.100.7\n\
         CSeq: 1 {cseq_method}\n\
         Content-Length: 0\n\n"
    )
}
