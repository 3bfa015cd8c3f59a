//! Parsing then rendering without edits gives back the received bytes.

mod common;

use common::*;
use kemibox_sip::{Edits, SipMessage, render, render_into};

fn assert_round_trip(text: &str) {
    let msg = parse(text);
    let out = render(&msg, &Edits::new());
    assert_eq!(String::from_utf8_lossy(&out), text);
    assert_eq!(out, text.as_bytes());
}

#[test]
fn realistic_messages_round_trip() {
    assert_round_trip(&invite());
    assert_round_trip(RINGING);
    assert_round_trip(REGISTER);
    assert_round_trip(COMPACT);
}

#[test]
fn bare_lf_and_odd_spacing_round_trip() {
    let text = invite().replace("\r\n", "\n");
    // The SDP shrank by one byte per line: fix Content-Length.
    let body_len = SDP.replace("\r\n", "\n").len();
    let text = text.replace(
        &format!("Content-Length: {}", SDP.len()),
        &format!("Content-Length: {body_len}"),
    );
    assert_round_trip(&text);
    assert_round_trip(
        "OPTIONS sip:x@example.com SIP/2.0\r\nVia :SIP/2.0/UDP h;branch=z9hG4bK1\r\nX-Empty:\r\nX-Tabs:\t a \t\r\nContent-Length:   0  \r\n\r\n",
    );
}

#[test]
fn render_into_appends_and_reuses_the_buffer() {
    let msg = parse(RINGING);
    let mut buf = b"prefix".to_vec();
    render_into(&msg, &Edits::new(), &mut buf);
    assert_eq!(&buf[..6], b"prefix");
    assert_eq!(&buf[6..], RINGING.as_bytes());
}

#[test]
fn bytes_after_content_length_are_dropped() {
    let mut text = invite();
    text.push_str("garbage after the body");
    let msg = parse(&text);
    assert_eq!(msg.body(), SDP.as_bytes());
    assert_eq!(render(&msg, &Edits::new()), invite().as_bytes());
}

#[test]
fn leading_keepalive_crlf_is_skipped() {
    let msg = parse(&format!("\r\n\r\n{RINGING}"));
    assert_eq!(msg.status(), Some(180));
    assert_eq!(render(&msg, &Edits::new()), RINGING.as_bytes());
}

#[test]
fn missing_content_length_is_added() {
    let text = format!("{INVITE_HEAD}\r\n{SDP}");
    let msg = parse(&text);
    assert_eq!(msg.content_length(), None);
    assert_eq!(msg.body(), SDP.as_bytes());
    let out = render(&msg, &Edits::new());
    assert_eq!(out, invite().as_bytes());
    // And the result is itself a message that round-trips.
    let again = SipMessage::parse(out.clone()).unwrap();
    assert_eq!(render(&again, &Edits::new()), out);
}
