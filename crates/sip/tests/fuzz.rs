//! Randomised robustness: mutated messages never make parsing, reading,
//! editing, rendering or replying panic, and what renders re-parses.

mod common;

use bytes::Bytes;
use common::*;
use kemibox_sip::{
    Edits, Received, SipMessage, Uri, build_reply, render, render_into, stream_frame_len,
};

/// xorshift64*: small, deterministic, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Bytes that matter to the parsers, so mutations hit interesting paths.
const INTERESTING: &[u8] = b"\r\n:;,<>\"\\ \t=@[]?&/\0\x7f\xff\xc3 0123456789lvifk";

fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = data.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                let b = INTERESTING[rng.below(INTERESTING.len())];
                data.insert(i, b);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                data.remove(i);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            4 if len > 1 => {
                // Duplicate a span (repeats headers, grows lists).
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                let at = rng.below(len + 1);
                let span: Vec<u8> = data[a..b].to_vec();
                data.splice(at..at, span);
            }
            5 if len > 1 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(16)).min(len);
                data.drain(a..b);
            }
            _ => data.truncate(rng.below(len + 1)),
        }
    }
}

fn exercise(msg: &SipMessage) {
    let _ = (
        msg.is_request(),
        msg.method(),
        msg.method_str(),
        msg.status(),
    );
    let _ = (msg.reason(), msg.ruri(), msg.call_id(), msg.cseq());
    let _ = (
        msg.from(),
        msg.to(),
        msg.contacts(),
        msg.top_via(),
        msg.via_count(),
    );
    let _ = (msg.max_forwards(), msg.user_agent(), msg.content_type());
    let _ = (
        msg.content_length(),
        msg.expires(),
        msg.routes(),
        msg.record_routes(),
    );
    let _ = (msg.body(), msg.validate(), msg.header_count("Via"));
    let _ = msg.header_elements("Supported").count();
    let _ = msg.header_values("Contact").next_back();
    for (name, value) in msg.headers() {
        let _ = (name.len(), value.len());
    }
    if let Some(ruri) = msg.ruri()
        && let Ok(uri) = Uri::parse(ruri)
    {
        assert_eq!(Uri::parse(&uri.to_string()).ok(), Some(uri.clone()));
        let _ = uri
            .with_user(Some("x"))
            .with_host("h")
            .with_port(Some(1))
            .to_string();
    }
}

fn check(data: &[u8], rng: &mut Rng, stats: &mut [usize; 2]) {
    let _ = stream_frame_len(data);
    let Ok(msg) = SipMessage::parse_slice(data) else {
        stats[1] += 1;
        return;
    };
    stats[0] += 1;
    exercise(&msg);

    // Rendering without edits re-parses and is then stable.
    let plain = render(&msg, &Edits::new());
    let again = SipMessage::parse(plain.clone()).expect("plain render re-parses");
    assert_eq!(render(&again, &Edits::new()), plain);

    // A battery of edits, chosen at random.
    let mut edits = Edits::new();
    let ops = rng.next();
    if ops & 1 != 0 {
        let _ = edits.set_ruri("sip:fuzz@192.0.2.1:5060;lr");
    }
    if ops & 2 != 0 {
        let _ = edits.append_header(&msg, "X-Fuzz: a");
    }
    if ops & 4 != 0 {
        let _ = edits.insert_header(&msg, "X-Top: b\r\n");
    }
    if ops & 8 != 0 {
        let _ = edits.append_after(&msg, "From", "X-After: c");
        let _ = edits.insert_before(&msg, "v", "X-Before: d");
    }
    if ops & 16 != 0 {
        let _ = edits.remove_header(&msg, "Contact");
        let _ = edits.remove_header_at(&msg, rng.below(8));
    }
    if ops & 32 != 0 {
        let _ = edits.add_via(&msg, "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKfuzz");
        let _ = edits.add_record_route(&msg, "<sip:192.0.2.1;lr>");
    }
    if ops & 64 != 0 {
        let _ = edits.set_via_received(
            &msg,
            Received {
                ip: "198.51.100.1",
                port: 5999,
                force_rport: ops & 128 != 0,
            },
        );
    }
    if ops & 256 != 0 {
        edits.remove_top_via(&msg);
        edits.remove_first_value(&msg, "Route");
    }
    if ops & 512 != 0 {
        edits.set_max_forwards(&msg, 69);
    }
    if ops & 1024 != 0 {
        let body = (ops & 2048 != 0).then(|| Bytes::from_static(b"new body"));
        let _ = edits.replace_body(body, Some("text/plain"));
    }
    if ops & 4096 != 0 {
        let _ = edits.remove_header(&msg, "Content-Length");
    }
    let mut out = Vec::new();
    render_into(&msg, &edits, &mut out);
    let edited = SipMessage::parse(out.clone()).unwrap_or_else(|e| {
        panic!(
            "edited render does not re-parse ({e}):\n{}\n---from---\n{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(data)
        )
    });
    exercise(&edited);
    let body_len = edited.body().len();
    assert_eq!(edited.content_length(), Some(body_len));

    if msg.is_request() {
        let src = Received {
            ip: "2001:db8::7",
            port: 5062,
            force_rport: ops & 1 != 0,
        };
        if let Ok(reply) = build_reply(&msg, 486, "Busy Here", Some("tag1"), Some(src), &[]) {
            let reply = SipMessage::parse(reply).expect("reply re-parses");
            assert_eq!(reply.status(), Some(486));
        }
    }
}

#[test]
fn twenty_thousand_mutations_never_panic() {
    let seeds: Vec<Vec<u8>> = [
        invite(),
        RINGING.to_string(),
        REGISTER.to_string(),
        COMPACT.to_string(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut stats = [0usize; 2];
    let mut current = seeds[0].clone();
    for i in 0..20_000 {
        // Mostly start from a valid message; sometimes keep stacking.
        if i % 4 != 0 {
            current = seeds[rng.below(seeds.len())].clone();
        }
        mutate(&mut rng, &mut current);
        check(&current, &mut rng, &mut stats);
    }
    eprintln!("parsed, rejected: {stats:?}");
    // Both outcomes must be well represented for the test to mean anything.
    assert!(stats[0] > 2_000, "parsed {stats:?}");
    assert!(stats[1] > 2_000, "rejected {stats:?}");
}
