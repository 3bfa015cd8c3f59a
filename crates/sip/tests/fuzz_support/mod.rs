//! The checks of the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`), shared
//! with the stable test `fuzz_corpus.rs` that replays the committed seeds
//! and regressions: one definition of "correct" for both.
//!
//! - [`check_parse`]: any input either fails to parse or parses into a
//!   message whose accessors do not panic, whose plain render is the
//!   received message byte for byte (plus a Content-Length when it had
//!   none) and re-parses to the same message.
//! - [`check_edits`]: a message (a fixture, or fuzzed bytes) and a
//!   fuzz-driven sequence of edits; every edit the API accepted must lead
//!   to a render that parses again.
//! - [`check_frame`]: stream framing agrees with the parser.
#![allow(
    dead_code,
    reason = "each test binary uses only some of the shared helpers"
)]

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use kemibox_sip::{
    Edits, MAX_HEADERS, MAX_MESSAGE_SIZE, Received, SipMessage, Uri, build_reply, render,
    stream_frame_len,
};

/// Reads every accessor; none may panic.
pub fn exercise(msg: &SipMessage) {
    let _ = (msg.is_request(), msg.method(), msg.method_str());
    let _ = (msg.status(), msg.reason(), msg.ruri(), msg.call_id());
    let _ = (msg.cseq(), msg.from(), msg.to(), msg.contacts());
    let _ = (msg.top_via(), msg.via_count(), msg.max_forwards());
    let _ = (msg.user_agent(), msg.content_type(), msg.content_length());
    let _ = (msg.expires(), msg.routes(), msg.record_routes(), msg.body());
    let _ = (msg.validate(), msg.header_count("Via"), msg.header("l"));
    let _ = msg.header_elements("Supported").count();
    let _ = msg.header_values("Contact").next_back();
    for (name, value) in msg.headers() {
        let _ = (name.len(), value.len());
    }
    if let Some(from) = msg.from() {
        let _ = (from.tag(), from.parse_uri());
    }
    if let Some(ruri) = msg.ruri()
        && let Ok(uri) = Uri::parse(ruri)
    {
        // Display of a parsed URI parses back to the same URI.
        assert_eq!(Uri::parse(&uri.to_string()).ok(), Some(uri.clone()));
        let _ = uri.with_user(Some("u")).with_host("h").with_port(None);
    }
}

/// Offset of the first byte after keep-alive line breaks.
fn message_start(data: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match data.get(i..) {
            Some([b'\r', b'\n', ..]) => i += 2,
            Some([b'\n', ..]) => i += 1,
            _ => return i,
        }
    }
}

/// Where `part` (a subslice of `whole`) starts in `whole`.
fn offset_in(whole: &[u8], part: &[u8]) -> usize {
    let offset = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    assert!(offset <= whole.len(), "not a subslice");
    offset
}

fn same_message(a: &SipMessage, b: &SipMessage) {
    assert_eq!(a.method(), b.method());
    assert_eq!(a.ruri(), b.ruri());
    assert_eq!((a.status(), a.reason()), (b.status(), b.reason()));
    assert_eq!(a.body(), b.body());
    assert_eq!(a.validate(), b.validate());
}

/// The `parse` target.
pub fn check_parse(data: &[u8]) {
    let _ = stream_frame_len(data);
    let Ok(msg) = SipMessage::parse_slice(data) else {
        return;
    };
    exercise(&msg);
    let out = render(&msg, &Edits::new());
    let raw = msg.raw();
    let start = message_start(raw);
    let body_end = offset_in(raw, msg.body()) + msg.body().len();
    let again = SipMessage::parse(out.clone()).expect("plain render re-parses");
    same_message(&msg, &again);
    if msg.content_length().is_some() {
        // Byte for byte: what was received, minus keep-alives before it
        // and noise after Content-Length.
        assert_eq!(out, &raw[start..body_end]);
        assert!(again.headers().eq(msg.headers()));
    } else {
        // One header more: the Content-Length the renderer added.
        assert_eq!(again.content_length(), Some(msg.body().len()));
        assert_eq!(again.headers().len(), msg.headers().len() + 1);
        assert!(again.headers().take(msg.headers().len()).eq(msg.headers()));
        assert_eq!(
            out.len(),
            body_end - start
                + again
                    .headers()
                    .last()
                    .map_or(0, |(n, v)| n.len() + v.len() + 4)
        );
    }
    assert_eq!(render(&again, &Edits::new()), out, "render is stable");
    if msg.is_request()
        && let Ok(reply) = build_reply(&msg, 400, "Bad Request", Some("t"), None, &[])
    {
        let reply = SipMessage::parse(reply).expect("reply parses");
        assert_eq!(reply.status(), Some(400));
    }
}

/// The `frame` target: a stream buffer.
pub fn check_frame(data: &[u8]) {
    match stream_frame_len(data) {
        Ok(None) => assert!(data.len() <= MAX_MESSAGE_SIZE),
        Err(e) => assert!(!e.reason().is_empty()),
        Ok(Some(n)) => {
            assert!(n <= MAX_MESSAGE_SIZE);
            assert!(n > message_start(data));
            let Some(frame) = data.get(..n) else {
                // The body has not fully arrived yet.
                return;
            };
            // Framing needs no more than the frame itself.
            assert_eq!(stream_frame_len(frame), Ok(Some(n)));
            // When the frame parses, the parser sees the same message end:
            // a disagreement would let one message smuggle another.
            if let Ok(msg) = SipMessage::parse_slice(frame) {
                assert_eq!(msg.content_length(), Some(msg.body().len()));
                assert_eq!(offset_in(msg.raw(), msg.body()) + msg.body().len(), n);
            }
        }
    }
}

/// Messages the `edits` target starts from (besides fuzzed bytes).
pub const FIXTURES: &[&[u8]] = &[
    include_bytes!("../../../../tests/fixtures/messages/invite.sip"),
    include_bytes!("../../../../tests/fixtures/messages/register.sip"),
    include_bytes!("../../../../tests/fixtures/messages/reply-180.sip"),
    include_bytes!("../../../../tests/fixtures/messages/bye-in-dialog.sip"),
    include_bytes!("../../../../tests/fixtures/messages/cancel.sip"),
    include_bytes!("../../../../tests/fixtures/torture/valid/wsinv.sip"),
    include_bytes!("../../../../tests/fixtures/torture/valid/intmeth.sip"),
    include_bytes!("../../../../tests/fixtures/torture/valid/esc01.sip"),
    include_bytes!("../../../../tests/fixtures/torture/valid/longreq.sip"),
    include_bytes!("../../../../tests/fixtures/torture/valid/dblreq.sip"),
    include_bytes!("../../../../tests/fixtures/torture/valid/mpart01.sip"),
    include_bytes!("../../../../tests/fixtures/torture/valid/unreason.sip"),
    include_bytes!("../../../../tests/fixtures/torture/valid/inv2543.sip"),
    include_bytes!("../../../../tests/fixtures/torture/invalid/multi01.sip"),
];

/// Header names the edits pick from (compact forms included).
const NAMES: &[&str] = &[
    "Via",
    "v",
    "Route",
    "Record-Route",
    "Contact",
    "m",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Max-Forwards",
    "Content-Type",
    "c",
    "Content-Length",
    "l",
    "Supported",
    "X-Fuzz",
];

/// Header lines and values the edits pick from; `Text::Raw` adds fuzzed
/// strings (which the edit API must validate).
const TEXTS: &[&str] = &[
    "X-Fuzz: 1",
    "X-A: a\r\nX-B: b",
    "X-Fold: a\r\n folded",
    "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKfuzz",
    "SIP/2.0/TCP [2001:db8::1];branch=z9hG4bK2;rport",
    "<sip:192.0.2.1;lr>",
    "sip:fuzz@192.0.2.1:5060;transport=tcp",
    "tel:+15551234",
    "\"Q, \\\"x\\\"\" <sip:a@b>;tag=1",
    "text/plain",
];

#[derive(Debug, Arbitrary)]
pub enum Text {
    Known(u8),
    Raw(String),
}

impl Text {
    fn get(&self) -> &str {
        match self {
            Text::Known(i) => TEXTS[usize::from(*i) % TEXTS.len()],
            Text::Raw(s) => s,
        }
    }
}

fn name(i: u8) -> &'static str {
    NAMES[usize::from(i) % NAMES.len()]
}

#[derive(Debug, Arbitrary)]
pub enum Op {
    SetRuri(Text),
    AppendHeader(Text),
    InsertHeader(Text),
    AppendAfter(u8, Text),
    InsertBefore(u8, Text),
    RemoveHeader(u8),
    RemoveHeaderAt(u8),
    AddVia(Text),
    AddRecordRoute(Text),
    RemoveFirstValue(u8),
    RemoveTopVia,
    SetViaReceived { ip: Text, port: u16, force: bool },
    SetMaxForwards(u32),
    ReplaceBody(Option<Vec<u8>>, Option<Text>),
}

#[derive(Debug, Arbitrary)]
pub enum Source {
    Fixture(u8),
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
pub struct EditInput {
    pub source: Source,
    pub ops: Vec<Op>,
}

/// Applies one edit; returns whether the API accepted it.
fn apply(msg: &SipMessage, edits: &mut Edits, op: &Op) -> bool {
    match op {
        Op::SetRuri(t) => edits.set_ruri(t.get()).is_ok(),
        Op::AppendHeader(t) => edits.append_header(msg, t.get()).is_ok(),
        Op::InsertHeader(t) => edits.insert_header(msg, t.get()).is_ok(),
        Op::AppendAfter(n, t) => edits.append_after(msg, name(*n), t.get()).is_ok(),
        Op::InsertBefore(n, t) => edits.insert_before(msg, name(*n), t.get()).is_ok(),
        Op::RemoveHeader(n) => edits.remove_header(msg, name(*n)) > 0,
        Op::RemoveHeaderAt(i) => edits.remove_header_at(msg, usize::from(*i)),
        Op::AddVia(t) => edits.add_via(msg, t.get()).is_ok(),
        Op::AddRecordRoute(t) => edits.add_record_route(msg, t.get()).is_ok(),
        Op::RemoveFirstValue(n) => edits.remove_first_value(msg, name(*n)),
        Op::RemoveTopVia => edits.remove_top_via(msg),
        Op::SetViaReceived { ip, port, force } => edits.set_via_received(
            msg,
            Received {
                ip: ip.get(),
                port: *port,
                force_rport: *force,
            },
        ),
        Op::SetMaxForwards(v) => {
            edits.set_max_forwards(msg, *v);
            true
        }
        Op::ReplaceBody(body, ct) => edits
            .replace_body(body.clone().map(Bytes::from), ct.as_ref().map(Text::get))
            .is_ok(),
    }
}

/// The `edits` target.
pub fn check_edits(data: &[u8]) {
    let _ = run_edits(data);
}

/// Runs the `edits` checks; returns how many edits the API accepted, or
/// `None` when the input decodes to no message (nothing was checked).
pub fn run_edits(data: &[u8]) -> Option<usize> {
    let Ok(input) = EditInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return None;
    };
    let bytes: Vec<u8> = match &input.source {
        Source::Fixture(i) => FIXTURES[usize::from(*i) % FIXTURES.len()].to_vec(),
        Source::Raw(raw) => raw.clone(),
    };
    let Ok(msg) = SipMessage::parse(bytes) else {
        return None;
    };
    let mut edits = Edits::new();
    let mut applied = 0;
    for op in input.ops.iter().take(64) {
        if apply(&msg, &mut edits, op) {
            applied += 1;
        }
    }
    let out = render(&msg, &edits);
    let again = match SipMessage::parse(out.clone()) {
        Ok(m) => m,
        // Limits, not corruption: added headers or a bigger body can take
        // a message over what our own parser accepts.
        Err(e)
            if (e.reason() == "too many headers"
                && out.iter().filter(|&&b| b == b'\n').count() > MAX_HEADERS)
                || (e.reason() == "message too large" && out.len() > MAX_MESSAGE_SIZE) =>
        {
            return Some(applied);
        }
        Err(e) => panic!(
            "{applied} accepted edits gave a message that does not parse ({}):\n{}\n--- from ---\n{}",
            e.reason(),
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(msg.raw())
        ),
    };
    exercise(&again);
    assert_eq!(again.content_length(), Some(again.body().len()));
    assert_eq!(render(&again, &Edits::new()), out, "render is stable");
    if msg.is_request() {
        assert_eq!(again.ruri(), edits.ruri(&msg));
    }
    Some(applied)
}
