//! Parse time of a typical INVITE and 200 OK: kemibox-sip against rsip.
//!
//! `cargo bench -p kemibox-sip --bench parse`. Three groups, each run on
//! both parsers:
//!
//! - `parse`: the message from bytes (ours: spans over the shared buffer;
//!   rsip: owned strings per header).
//! - `parse_read`: parse, then read what a proxy reads for every message:
//!   top Via branch, Call-ID, CSeq number and method, From tag.
//! - `parse_relay`: parse, add the proxy's Via and serialise the message
//!   to forward (ours: `Edits` + `render`; rsip: push a header and
//!   `to_string`).
//!
//! Results and the ratios are in docs/sip-parser.md.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use kemibox_sip::{Edits, SipMessage, render};
use rsip::prelude::*;

#[path = "../tests/common/mod.rs"]
mod common;

/// A 200 OK to the INVITE, with two Vias, Record-Route and an SDP answer.
fn ok_200() -> String {
    let sdp = common::SDP
        .replace("alice", "bob")
        .replace("192.0.2.101", "192.0.2.4");
    format!(
        "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP proxy.example.com:5060;branch=z9hG4bK4b43c2ff8.1\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;received=192.0.2.101;rport=5060\r\n\
Record-Route: <sip:proxy.example.com;lr>\r\n\
To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n\
From: \"Alice, A.\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:bob@192.0.2.4>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

const OUR_VIA: &str = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKkemibox1";

fn ours_read(msg: &SipMessage) -> usize {
    let via = msg.top_via().expect("via");
    let (seq, method) = msg.cseq().expect("cseq");
    let tag = msg.from().and_then(|f| f.tag().map(str::len)).unwrap_or(0);
    via.branch().map_or(0, str::len)
        + msg.call_id().map_or(0, str::len)
        + seq as usize
        + method.len()
        + tag
}

fn rsip_read(msg: &rsip::SipMessage) -> usize {
    let via = msg.via_header().expect("via").typed().expect("typed via");
    let cseq = msg
        .cseq_header()
        .expect("cseq")
        .typed()
        .expect("typed cseq");
    let tag = msg
        .from_header()
        .expect("from")
        .tag()
        .expect("from tag")
        .map_or(0, |t| t.to_string().len());
    via.branch().map_or(0, |b| b.to_string().len())
        + msg.call_id_header().expect("call-id").value().len()
        + cseq.seq as usize
        + cseq.method.to_string().len()
        + tag
}

fn bench(c: &mut Criterion) {
    let messages = [("invite", common::invite()), ("200ok", ok_200())];
    for (name, text) in &messages {
        let wire = Bytes::from(text.clone());
        // Both parsers must agree on what they read before we time them.
        let ours = SipMessage::parse(wire.clone()).unwrap();
        let theirs = rsip::SipMessage::try_from(text.as_bytes()).unwrap();
        assert_eq!(ours_read(&ours), rsip_read(&theirs), "{name}");

        let mut g = c.benchmark_group(format!("parse/{name}"));
        g.bench_function("kemibox-sip", |b| {
            b.iter(|| SipMessage::parse(black_box(wire.clone())).unwrap())
        });
        g.bench_function("rsip", |b| {
            b.iter(|| rsip::SipMessage::try_from(black_box(text.as_bytes())).unwrap())
        });
        g.finish();

        let mut g = c.benchmark_group(format!("parse_read/{name}"));
        g.bench_function("kemibox-sip", |b| {
            b.iter(|| ours_read(&SipMessage::parse(black_box(wire.clone())).unwrap()))
        });
        g.bench_function("rsip", |b| {
            b.iter(|| rsip_read(&rsip::SipMessage::try_from(black_box(text.as_bytes())).unwrap()))
        });
        g.finish();

        let mut g = c.benchmark_group(format!("parse_relay/{name}"));
        g.bench_function("kemibox-sip", |b| {
            b.iter(|| {
                let msg = SipMessage::parse(black_box(wire.clone())).unwrap();
                let mut edits = Edits::new();
                if msg.is_request() {
                    edits.add_via(&msg, OUR_VIA).unwrap();
                } else {
                    edits.remove_top_via(&msg);
                }
                render(&msg, &edits)
            })
        });
        g.bench_function("rsip", |b| {
            b.iter(|| {
                let mut msg = rsip::SipMessage::try_from(black_box(text.as_bytes())).unwrap();
                if msg.is_request() {
                    let mut all: Vec<rsip::Header> = std::mem::take(msg.headers_mut()).into();
                    all.insert(0, rsip::Header::Via(rsip::headers::Via::new(OUR_VIA)));
                    *msg.headers_mut() = all.into();
                } else {
                    let mut first = true;
                    msg.headers_mut().retain(|h| {
                        let top = first && matches!(h, rsip::Header::Via(_));
                        if top {
                            first = false;
                        }
                        !top
                    });
                }
                msg.to_string().into_bytes()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
