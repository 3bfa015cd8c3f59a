//! Malformed input is rejected with a reason fit for a 400 reply.

mod common;

use common::*;
use kemibox_sip::{MAX_HEADERS, MAX_MESSAGE_SIZE, SipMessage};

fn reason_of(input: &[u8]) -> &'static str {
    let err = SipMessage::parse_slice(input).expect_err("should be rejected");
    let reason = err.reason();
    assert!(!reason.is_empty());
    assert!(
        reason.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "{reason:?}"
    );
    assert_eq!(err.to_string(), reason);
    reason
}

const OK_TAIL: &str = "Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n";

#[test]
fn empty_and_garbage() {
    assert_eq!(reason_of(b""), "empty message");
    assert_eq!(reason_of(b"\r\n\r\n\n"), "empty message");
    assert_eq!(reason_of(b"garbage"), "truncated start line");
    assert_eq!(reason_of(b"garbage\r\n\r\n"), "invalid request line");
    assert_eq!(
        reason_of(b"\xff\xfe\r\n\r\n"),
        "invalid UTF-8 in start line"
    );
    assert_eq!(reason_of(&[0u8; 64]), "truncated start line");
}

#[test]
fn bad_request_lines() {
    let cases = [
        ("INVITE sip:a@b", "missing SIP version"),
        ("INVITE sip:a@b HTTP/1.1", "missing SIP version"),
        ("INVITE sip:a@b SIP/3.0", "unsupported SIP version"),
        ("INVITE", "invalid request line"),
        ("INVITE  sip:a@b SIP/2.0", "invalid request line"),
        ("INVITE sip:a@b SIP/2.0 extra", "invalid request line"),
        ("INV@TE sip:a@b SIP/2.0", "invalid method"),
        ("INVITE no-colon SIP/2.0", "invalid Request-URI"),
        ("INVITE sip:a\0b SIP/2.0", "invalid control character"),
    ];
    for (line, reason) in cases {
        assert_eq!(
            reason_of(format!("{line}\r\n{OK_TAIL}").as_bytes()),
            reason,
            "{line}"
        );
    }
}

#[test]
fn bad_status_lines() {
    let cases = [
        ("SIP/2.0 99 Too Low", "invalid status code"),
        ("SIP/2.0 700 Too High", "invalid status code"),
        ("SIP/2.0 2000 OK", "invalid status code"),
        ("SIP/2.0 2x0 OK", "invalid status code"),
        ("SIP/2.0 20", "invalid status code"),
        ("SIP/2.0", "invalid status line"),
        ("SIP/1.0 200 OK", "unsupported SIP version"),
    ];
    for (line, reason) in cases {
        assert_eq!(
            reason_of(format!("{line}\r\n{OK_TAIL}").as_bytes()),
            reason,
            "{line}"
        );
    }
    // A status line without reason phrase is fine.
    let msg = SipMessage::parse_slice(format!("SIP/2.0 200\r\n{OK_TAIL}").as_bytes()).unwrap();
    assert_eq!((msg.status(), msg.reason()), (Some(200), Some("")));
}

#[test]
fn bad_headers() {
    let start = "OPTIONS sip:a@b SIP/2.0\r\n";
    let cases: [(&[u8], &str); 9] = [
        (b"No colon here\r\n", "header without colon"),
        (b": no name\r\n", "invalid header name"),
        (b"Bad Name: x\r\n", "invalid header name"),
        (b"N\xffme: x\r\n", "invalid header name"),
        (b" folded first\r\n", "folded line without header"),
        (b"X-Nul: a\0b\r\n", "invalid control character"),
        (b"X-Cr: a\rb\r\n", "invalid control character"),
        (b"X-Esc: \x1b[31m\r\n", "invalid control character"),
        (
            b"Content-Length: 1\r\nl: 2\r\n",
            "conflicting Content-Length headers",
        ),
    ];
    for (header, reason) in cases {
        let mut input = start.as_bytes().to_vec();
        input.extend_from_slice(header);
        input.extend_from_slice(OK_TAIL.as_bytes());
        assert_eq!(
            reason_of(&input),
            reason,
            "{}",
            String::from_utf8_lossy(header)
        );
    }
    for bad_len in ["abc", "-1", "1e3", "", "99999999999"] {
        let input = format!("{start}Content-Length: {bad_len}\r\n\r\n");
        assert_eq!(
            reason_of(input.as_bytes()),
            "invalid Content-Length",
            "{bad_len}"
        );
    }
}

#[test]
fn truncated_messages() {
    let invite = invite();
    assert_eq!(
        reason_of(b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n"),
        "truncated message: headers not terminated"
    );
    assert_eq!(
        reason_of(&invite.as_bytes()[..invite.len() - 10]),
        "Content-Length larger than body"
    );
    let head_only = invite.find("\r\n\r\n").unwrap();
    assert_eq!(
        reason_of(&invite.as_bytes()[..head_only + 2]),
        "truncated message: headers not terminated"
    );
    // Every prefix is either rejected or parses; none panics.
    for n in 0..invite.len() {
        let _ = SipMessage::parse_slice(&invite.as_bytes()[..n]);
    }
}

#[test]
fn size_limits() {
    let mut many = String::from("OPTIONS sip:a@b SIP/2.0\r\n");
    for i in 0..MAX_HEADERS {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    let at_limit = format!("{many}\r\n");
    assert_eq!(
        SipMessage::parse_slice(at_limit.as_bytes())
            .unwrap()
            .headers()
            .len(),
        MAX_HEADERS
    );
    let over = format!("{many}X-One-More: v\r\n\r\n");
    assert_eq!(reason_of(over.as_bytes()), "too many headers");

    let mut huge = format!("MESSAGE sip:a@b SIP/2.0\r\nl: {}\r\n\r\n", MAX_MESSAGE_SIZE);
    huge.push_str(&"x".repeat(MAX_MESSAGE_SIZE));
    assert_eq!(reason_of(huge.as_bytes()), "message too large");
}

#[test]
fn hostile_structured_values_do_not_panic() {
    let values = [
        "",
        "<",
        ">",
        "\"",
        "\"\\",
        "<<<>>>",
        ";;;",
        ",,,",
        "sip:",
        "<sip:a@[::1>",
        "\"\u{e9}\u{1F600}\" <sip:\u{e9}@\u{e9}>",
        "SIP/2.0/UDP [",
        "SIP/2.0/UDP h;rport=99999999",
        "* , *",
    ];
    for v in values {
        let text = format!(
            "INVITE sip:a@b SIP/2.0\r\nVia: {v}\r\nFrom: {v}\r\nTo: {v}\r\nContact: {v}\r\nRoute: {v}\r\nCSeq: {v}\r\nMax-Forwards: {v}\r\nExpires: {v}\r\nl: 0\r\n\r\n"
        );
        let msg = SipMessage::parse_slice(text.as_bytes()).unwrap();
        let _ = (
            msg.from(),
            msg.to(),
            msg.top_via(),
            msg.contacts(),
            msg.routes(),
        );
        let _ = (
            msg.cseq(),
            msg.max_forwards(),
            msg.expires(),
            msg.via_count(),
        );
        assert!(msg.validate().is_err());
    }
}
