//! The proxy's own replies (RFC 3261 8.2.6, RFC 3581).

mod common;

use common::*;
use kemibox_sip::{Received, SipMessage, build_reply};

#[test]
fn ringing_reply_to_invite() {
    let req = parse(&invite());
    let src = Received {
        ip: "198.51.100.7",
        port: 41000,
        force_rport: false,
    };
    let out = build_reply(
        &req,
        180,
        "Ringing",
        Some("as7d9f"),
        Some(src),
        &[
            "Server: kemibox".to_string(),
            "Allow: INVITE, ACK, BYE\r\n".to_string(),
        ],
    )
    .unwrap();
    let expected = "SIP/2.0 180 Ringing\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport=41000;received=198.51.100.7\r\n\
To: Bob <sip:bob@biloxi.example.com>;tag=as7d9f\r\n\
From: \"Alice, A.\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Server: kemibox\r\n\
Allow: INVITE, ACK, BYE\r\n\
Content-Length: 0\r\n\
\r\n";
    assert_eq!(String::from_utf8(out.clone()).unwrap(), expected);
    let reply = SipMessage::parse(out).unwrap();
    assert_eq!(reply.status(), Some(180));
    assert_eq!(reply.method_str(), "INVITE");
    reply.validate().unwrap();
}

#[test]
fn trying_gets_no_tag_and_vias_are_copied_in_order() {
    let req = parse(COMPACT);
    let out = build_reply(&req, 100, "Trying", Some("abc"), None, &[]).unwrap();
    let expected = "SIP/2.0 100 Trying\r\n\
v: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds10, SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bK2\r\n\
f: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n\
t: \"Alice, A.\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
i: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 231 BYE\r\n\
Content-Length: 0\r\n\
\r\n";
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

#[test]
fn existing_to_tag_is_kept_and_only_top_via_is_stamped() {
    let req = parse(COMPACT);
    let src = Received {
        ip: "203.0.113.5",
        port: 5060,
        force_rport: true,
    };
    let out = String::from_utf8(
        build_reply(
            &req,
            481,
            "Call/Transaction Does Not Exist",
            Some("new"),
            Some(src),
            &[],
        )
        .unwrap(),
    )
    .unwrap();
    assert!(out.contains(
        "\r\nv: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds10;received=203.0.113.5;rport=5060, SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bK2\r\n"
    ));
    assert!(out.contains(";tag=1928301774\r\n"));
    assert!(!out.contains("tag=new"));
}

#[test]
fn received_only_when_needed() {
    let req = parse(
        &invite()
            .replace(";rport", "")
            .replace("pc33.atlanta.example.com:5060;", "192.0.2.101:5060;"),
    );
    let reply = |ip: &str| {
        let src = Received {
            ip,
            port: 5060,
            force_rport: false,
        };
        String::from_utf8(build_reply(&req, 200, "OK", Some("t"), Some(src), &[]).unwrap()).unwrap()
    };
    // Same address and no rport: the Via is copied unchanged.
    assert!(
        reply("192.0.2.101")
            .contains("\r\nVia: SIP/2.0/UDP 192.0.2.101:5060;branch=z9hG4bK776asdhds\r\n")
    );
    // Different address: received is added, no rport.
    assert!(reply("192.0.2.200").contains(";branch=z9hG4bK776asdhds;received=192.0.2.200\r\n"));
    // Not an IP address: nothing is stamped.
    assert!(reply("evil;x=1").contains(";branch=z9hG4bK776asdhds\r\n"));
}

#[test]
fn bad_request_for_a_broken_request_still_builds() {
    let req =
        SipMessage::parse_slice(b"OPTIONS sip:a@b SIP/2.0\r\nFrom: <garbage\r\n\r\n").unwrap();
    let out = build_reply(&req, 400, "Missing Via", Some("x"), None, &[]).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "SIP/2.0 400 Missing Via\r\nFrom: <garbage\r\nContent-Length: 0\r\n\r\n"
    );
}

#[test]
fn invalid_arguments_are_rejected() {
    let req = parse(&invite());
    assert!(build_reply(&req, 99, "x", None, None, &[]).is_err());
    assert!(build_reply(&req, 700, "x", None, None, &[]).is_err());
    assert!(build_reply(&req, 200, "OK\r\nX: y", None, None, &[]).is_err());
    assert!(build_reply(&req, 200, "OK", Some("a b"), None, &[]).is_err());
    assert!(build_reply(&req, 200, "OK", None, None, &["bad".to_string()]).is_err());
    let reply = parse(RINGING);
    assert!(build_reply(&reply, 200, "OK", None, None, &[]).is_err());
}
