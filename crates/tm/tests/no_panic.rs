//! Randomized robustness: mutated messages and arbitrary call sequences
//! never panic, never exceed the table limit, and every transaction is
//! reported terminated exactly once.

mod common;

use std::collections::HashSet;

use common::*;
use kemibox_sip::SipMessage;
use kemibox_tm::{
    AutoTrying, ClientId, Config, Effect, Millis, Peer, Received, ServerId, TimerId, Timers,
    TransactionTable, TuEvent, TxId,
};

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            items.get(self.below(items.len()))
        }
    }
}

const TOKENS: &[&str] = &[
    ";branch=",
    "z9hG4bK",
    "z9hG4bKuac1",
    ";tag=",
    ",",
    ";",
    "\r\n",
    " ",
    "ACK",
    "INVITE",
    "CANCEL",
    "BYE",
    "SIP/2.0 ",
    "200",
    "486",
    "100",
    "180",
    "999",
    "0",
    "4294967296",
    "CSeq: ",
    "Via: ",
    "SIP/2.0/UDP ",
    "[::1]",
    ":65535",
    "\"",
    "<",
    ">",
    "received=",
    "rport",
];

fn seeds() -> Vec<String> {
    let mut v = vec![
        proxied_invite("z9hG4bKf1"),
        proxied_invite("z9hG4bKf2"),
        proxied_request("OPTIONS", "z9hG4bKf3"),
        proxied_request("CANCEL", "z9hG4bKf1"),
        proxied_request("BYE", "legacy1"),
        uac_request("INVITE", "INVITE", "z9hG4bKu1", None),
        uac_request("ACK", "ACK", "z9hG4bKu1", Some("t")),
        uac_request("CANCEL", "CANCEL", "z9hG4bKu1", None),
        uac_request("INVITE", "INVITE", "legacy", None),
        uac_request("ACK", "ACK", "legacy", Some("t")),
        uac_request("REGISTER", "REGISTER", "z9hG4bKu2", None),
        uac_request("MESSAGE", "MESSAGE", "z9hG4bKu3", None),
    ];
    for branch in ["z9hG4bKf1", "z9hG4bKf2", "z9hG4bKf3", "legacy1"] {
        for (status, method) in [
            ("100 Trying", "INVITE"),
            ("180 Ringing", "INVITE"),
            ("200 OK", "INVITE"),
            ("486 Busy Here", "INVITE"),
            ("200 OK", "OPTIONS"),
            ("408 Timeout", "OPTIONS"),
            ("200 OK", "CANCEL"),
            ("200 OK", "BYE"),
        ] {
            v.push(downstream_response(branch, status, method, Some("t")));
        }
    }
    v.push(response_to_uac("486 Busy Here", "z9hG4bKu1", "INVITE", "t"));
    v.iter().map(|s| crlf(s)).collect()
}

fn mutate(rng: &mut Rng, seed: &str) -> Vec<u8> {
    let mut b = seed.as_bytes().to_vec();
    for _ in 0..rng.below(4) {
        let len = b.len();
        let at = rng.below(len + 1);
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                b[i] = rng.next() as u8;
            }
            1 => {
                let end = (at + rng.below(16)).min(len);
                b.drain(at..end);
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                b.splice(at..at, t.bytes());
            }
            3 => {
                let end = (at + rng.below(32)).min(len);
                let chunk = b[at..end].to_vec();
                b.splice(at..at, chunk);
            }
            4 => b.truncate(at),
            _ => {}
        }
    }
    b
}

struct World {
    table: TransactionTable,
    now: u64,
    timers: Vec<TimerId>,
    servers: Vec<ServerId>,
    clients: Vec<ClientId>,
    live: HashSet<TxId>,
    ended: HashSet<TxId>,
}

impl World {
    fn apply(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Send { bytes, from, .. } => {
                    assert!(!bytes.is_empty());
                    // Every transaction here was created on or for LOCAL.
                    assert_eq!(from, addr(LOCAL));
                }
                Effect::Arm { timer, at } => {
                    assert!(at.0 >= self.now);
                    if self.timers.len() < 10_000 {
                        self.timers.push(timer);
                    }
                }
                Effect::Tu(TuEvent::Terminated { id }) => {
                    assert!(self.live.remove(&id), "{id} terminated but was not live");
                    assert!(self.ended.insert(id), "{id} terminated twice");
                }
                Effect::Tu(_) => {}
            }
        }
    }

    fn check(&self, max: usize) {
        assert!(self.table.len() <= max);
        assert_eq!(self.table.len(), self.live.len());
    }
}

#[test]
fn random_inputs_never_panic() {
    let max = 40;
    let config = Config {
        timers: Timers {
            c: Some(ms(180_000)),
            ..Timers::default()
        },
        max_transactions: max,
        auto_trying: AutoTrying::After(ms(200)),
    };
    let seeds = seeds();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut w = World {
        table: TransactionTable::new(config),
        now: 0,
        timers: Vec::new(),
        servers: Vec::new(),
        clients: Vec::new(),
        live: HashSet::new(),
        ended: HashSet::new(),
    };
    let (mut parsed, mut classified) = (0, 0);
    for _ in 0..30_000 {
        w.now += rng.below(400) as u64;
        let now = Millis(w.now);
        let reliable = rng.below(4) == 0;
        match rng.below(8) {
            0..=2 => {
                let bytes = random_message(&mut rng, &seeds);
                let Ok(m) = SipMessage::parse(bytes) else {
                    continue;
                };
                parsed += 1;
                let r = w.table.on_received(&m, now);
                match r {
                    Received::Absorbed { effects, .. } | Received::Response { effects, .. } => {
                        classified += 1;
                        w.apply(effects)
                    }
                    Received::Request | Received::Cancel { .. } => {
                        let _ = w.table.find_invite_for_cancel(&m);
                        let peer = Peer::for_request(&m, addr(UAC), addr(LOCAL), reliable);
                        if let Ok((id, effects)) = w.table.new_server(&m, peer, now) {
                            w.live.insert(TxId::Server(id));
                            w.servers.push(id);
                            w.apply(effects);
                        }
                    }
                    Received::Ack | Received::Stray | Received::Invalid(_) => {}
                }
            }
            3 => {
                let bytes = random_message(&mut rng, &seeds);
                let Ok(m) = SipMessage::parse(bytes) else {
                    continue;
                };
                if let Ok((id, effects)) =
                    w.table
                        .send_request(m, addr(LOCAL), addr(NEXT_HOP), reliable, now)
                {
                    w.live.insert(TxId::Client(id));
                    w.clients.push(id);
                    w.apply(effects);
                }
            }
            4 => {
                let Some(&id) = rng.pick(&w.servers) else {
                    continue;
                };
                let status = rng.below(800) as u16;
                let bytes = random_message(&mut rng, &seeds);
                if let Ok(effects) = w.table.send_response(id, status, bytes, now) {
                    w.apply(effects);
                }
            }
            5 => {
                // Fire a recorded timer: due, early, stale or again.
                if w.timers.is_empty() {
                    continue;
                }
                let i = rng.below(w.timers.len());
                let timer = if rng.below(3) == 0 {
                    w.timers[i]
                } else {
                    w.timers.swap_remove(i)
                };
                w.now = w.now.max(timer.at().0);
                let effects = w.table.on_timer(timer, Millis(w.now));
                w.apply(effects);
            }
            6 => {
                let id = match (rng.below(2), rng.pick(&w.clients), rng.pick(&w.servers)) {
                    (0, Some(&c), _) => TxId::Client(c),
                    (_, _, Some(&s)) => TxId::Server(s),
                    _ => continue,
                };
                if rng.below(2) == 0 {
                    let effects = w.table.on_transport_error(id);
                    w.apply(effects);
                } else if w.table.terminate(id) {
                    w.live.remove(&id);
                    w.ended.insert(id);
                }
            }
            _ => {
                let Some(&c) = rng.pick(&w.clients) else {
                    continue;
                };
                let _ = w.table.client_state(c);
                let _ = w.table.client_request(c);
                if let Some(cancel) = w.table.build_cancel(c)
                    && let Ok((id, effects)) =
                        w.table
                            .send_request(cancel, addr(LOCAL), addr(NEXT_HOP), reliable, now)
                {
                    w.live.insert(TxId::Client(id));
                    w.clients.push(id);
                    w.apply(effects);
                }
            }
        }
        w.check(max);
    }
    assert!(
        parsed > 1000 && classified > 100,
        "the mutations are too destructive"
    );
    assert!(
        w.ended.len() > 100,
        "few transactions ran their course: {}",
        w.ended.len()
    );

    // Drain: answer every server transaction, fire every timer; what is
    // left waits on the TU (INVITE clients in Proceeding) and goes away
    // with terminate().
    for id in w.servers.clone() {
        if let Ok(effects) =
            w.table
                .send_response(id, 500, b"SIP/2.0 500 x\r\n\r\n".to_vec(), Millis(w.now))
        {
            w.apply(effects);
        }
    }
    for _ in 0..100 {
        let timers = std::mem::take(&mut w.timers);
        if timers.is_empty() {
            break;
        }
        for t in timers {
            w.now = w.now.max(t.at().0);
            let effects = w.table.on_timer(t, Millis(w.now));
            w.apply(effects);
        }
    }
    for id in w.live.clone() {
        assert!(matches!(id, TxId::Client(_)), "{id} still alive");
        assert!(w.table.terminate(id));
        w.live.remove(&id);
    }
    assert!(w.table.is_empty());
}

fn random_message(rng: &mut Rng, seeds: &[String]) -> Vec<u8> {
    let seed = rng.pick(seeds).map_or("", String::as_str);
    mutate(rng, seed)
}
