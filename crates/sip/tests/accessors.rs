//! Reading parts of received messages.

mod common;

use common::*;
use kemibox_sip::{Contacts, Method, NameAddr, Scheme, SipMessage, Uri};

#[test]
fn invite_start_line_and_headers() {
    let msg = parse(&invite());
    assert!(msg.is_request());
    assert_eq!(msg.method(), Some(&Method::Invite));
    assert_eq!(msg.method_str(), "INVITE");
    assert_eq!(msg.status(), None);
    assert_eq!(msg.reason(), None);
    assert_eq!(msg.ruri(), Some("sip:bob@biloxi.example.com"));
    assert_eq!(
        msg.call_id(),
        Some("a84b4c76e66710@pc33.atlanta.example.com")
    );
    assert_eq!(msg.cseq(), Some((314159, "INVITE")));
    assert_eq!(msg.max_forwards(), Some(70));
    assert_eq!(msg.user_agent(), Some("kemibox-test/1.0"));
    assert_eq!(msg.content_type(), Some("application/sdp"));
    assert_eq!(msg.content_length(), Some(SDP.len()));
    assert_eq!(msg.body(), SDP.as_bytes());
    assert_eq!(msg.raw(), invite().as_bytes());
    assert_eq!(msg.header("content-type"), Some("application/sdp"));
    assert_eq!(msg.header("X-Missing"), None);
    assert_eq!(msg.headers().len(), 10);
    let names: Vec<&str> = msg.headers().map(|(n, _)| n).collect();
    assert_eq!(names[..3], ["Via", "Max-Forwards", "To"]);
    assert_eq!(msg.header_at(1), Some(("Max-Forwards", "70")));
    assert_eq!(msg.header_at(10), None);
    msg.validate().unwrap();
}

#[test]
fn from_to_contact_and_via() {
    let msg = parse(&invite());
    let from = msg.from().unwrap();
    assert_eq!(from.display_name.as_deref(), Some("Alice, A."));
    assert_eq!(from.uri, "sip:alice@atlanta.example.com");
    assert_eq!(from.tag(), Some("1928301774"));
    let to = msg.to().unwrap();
    assert_eq!(to.display_name.as_deref(), Some("Bob"));
    assert_eq!(to.tag(), None);
    let via = msg.top_via().unwrap();
    assert_eq!(via.transport, "UDP");
    assert_eq!(
        (via.host, via.port),
        ("pc33.atlanta.example.com", Some(5060))
    );
    assert_eq!(via.branch(), Some("z9hG4bK776asdhds"));
    assert_eq!(via.rport(), Some(None));
    assert_eq!(msg.via_count(), 1);
    let Contacts::List(contacts) = msg.contacts().unwrap() else {
        panic!("expected a list");
    };
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].uri, "sip:alice@pc33.atlanta.example.com");
}

#[test]
fn reply_accessors() {
    let msg = parse(RINGING);
    assert!(!msg.is_request());
    assert_eq!(msg.method(), None);
    assert_eq!(msg.method_str(), "INVITE");
    assert_eq!(msg.status(), Some(180));
    assert_eq!(msg.reason(), Some("Ringing"));
    assert_eq!(msg.ruri(), None);
    assert_eq!(msg.via_count(), 2);
    assert_eq!(msg.top_via().unwrap().host, "proxy.example.com");
    let second: Vec<&str> = msg.header_values("Via").collect();
    assert!(second[1].contains("received=192.0.2.101"));
    assert_eq!(msg.header_values("via").next_back(), Some(second[1]));
    assert_eq!(msg.record_routes().unwrap(), ["sip:proxy.example.com;lr"]);
    assert_eq!(msg.to().unwrap().tag(), Some("a6c85cf"));
    assert!(msg.body().is_empty());
    msg.validate().unwrap();
}

#[test]
fn register_contacts_with_quotes_ipv6_and_params() {
    let msg = parse(REGISTER);
    assert_eq!(msg.method(), Some(&Method::Register));
    assert_eq!(msg.expires(), Some(7200));
    let Contacts::List(contacts) = msg.contacts().unwrap() else {
        panic!("expected a list");
    };
    assert_eq!(contacts.len(), 2);
    assert_eq!(contacts[0].param("expires"), Some(Some("7200")));
    assert_eq!(contacts[1].display_name.as_deref(), Some("Mobile, \"2\""));
    assert_eq!(contacts[1].param("q"), Some(Some("0.5")));
    let uri = contacts[1].parse_uri().unwrap();
    assert_eq!(uri.host, "[2001:db8::4]");
    assert_eq!(uri.port, Some(5070));
    assert_eq!(uri.param("transport"), Some(Some("tcp")));
    assert_eq!(uri.to_string(), "sip:bob@[2001:db8::4]:5070;transport=tcp");
    msg.validate().unwrap();
}

#[test]
fn contact_star_and_errors() {
    let base = REGISTER.replace(
        "Contact: <sip:bob@192.0.2.4>;expires=7200, \"Mobile, \\\"2\\\"\" <sip:bob@[2001:db8::4]:5070;transport=tcp>;q=0.5",
        "Contact: *",
    );
    assert_eq!(parse(&base).contacts(), Ok(Contacts::Star));
    let mixed = base.replace("Contact: *", "Contact: *, <sip:a@b>");
    assert!(parse(&mixed).contacts().is_err());
    let broken = base.replace("Contact: *", "Contact: <sip:a@b");
    assert!(parse(&broken).contacts().is_err());
    let none = base.replace("Contact: *\r\n", "");
    assert_eq!(parse(&none).contacts(), Ok(Contacts::List(vec![])));
}

#[test]
fn compact_forms_folding_and_multiple_values() {
    let msg = parse(COMPACT);
    assert_eq!(
        msg.call_id(),
        Some("a84b4c76e66710@pc33.atlanta.example.com")
    );
    assert_eq!(msg.header("Call-ID"), msg.header("i"));
    assert_eq!(msg.header("I"), msg.header("call-id"));
    assert_eq!(msg.from().unwrap().tag(), Some("a6c85cf"));
    assert_eq!(msg.to().unwrap().display_name.as_deref(), Some("Alice, A."));
    assert_eq!(msg.content_length(), Some(0));
    assert_eq!(msg.header("Content-Length"), Some("0"));
    assert_eq!(
        msg.header("Subject"),
        Some("a subject folded over three lines")
    );
    assert_eq!(msg.header_count("Supported"), 2);
    assert_eq!(msg.header_count("k"), 2);
    let supported: Vec<&str> = msg.header_elements("Supported").collect();
    assert_eq!(supported, ["timer", "100rel", "path"]);
    assert_eq!(msg.via_count(), 2);
    let vias: Vec<&str> = msg.header_elements("Via").collect();
    assert_eq!(
        kemibox_sip::Via::parse(vias[1]).unwrap().host,
        "[2001:db8::1]"
    );
    assert_eq!(
        msg.routes().unwrap(),
        [
            "sip:p1.example.com;lr",
            "sip:p2.example.com;lr",
            "sip:p3.example.com;lr"
        ]
    );
    let names: Vec<&str> = msg.headers().map(|(n, _)| n).collect();
    assert_eq!(names[..4], ["v", "Max-Forwards", "f", "t"]);
    msg.validate().unwrap();
}

#[test]
fn invalid_utf8_in_a_value_is_readable_and_forwarded_untouched() {
    let mut raw = b"MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: \"M\xfcller\" <sip:m@example.com>;tag=1\r\nContent-Length: 0\r\n\r\n".to_vec();
    let msg = SipMessage::parse(raw.clone()).unwrap();
    assert_eq!(
        msg.header("From"),
        Some("\"M\u{fffd}ller\" <sip:m@example.com>;tag=1")
    );
    assert_eq!(msg.from().unwrap().tag(), Some("1"));
    let out = kemibox_sip::render(&msg, &kemibox_sip::Edits::new());
    assert_eq!(out, raw);
    // Invalid UTF-8 in the start line is an error.
    raw[8] = 0xff;
    assert!(SipMessage::parse(raw).is_err());
}

#[test]
fn validate_reports_missing_and_bad_headers() {
    let invite = invite();
    let cases = [
        (
            "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n",
            "",
            "missing Call-ID header",
        ),
        (
            "CSeq: 314159 INVITE",
            "CSeq: 314159 BYE",
            "CSeq method does not match request method",
        ),
        (
            "CSeq: 314159 INVITE",
            "CSeq: x INVITE",
            "invalid CSeq header",
        ),
        (
            "Max-Forwards: 70",
            "Max-Forwards: seventy",
            "invalid Max-Forwards header",
        ),
        (
            "To: Bob <sip:bob@biloxi.example.com>",
            "To: Bob <bob>",
            "invalid To header",
        ),
        (
            "From: \"Alice, A.\"",
            "From: \"Alice, A.",
            "invalid From header",
        ),
        (
            "Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n",
            "",
            "missing Via header",
        ),
        ("Via: SIP/2.0/UDP", "Via: SIP/2.0/", "invalid Via header"),
        (
            "INVITE sip:bob@biloxi.example.com",
            "INVITE sip:bob@",
            "invalid Request-URI",
        ),
    ];
    for (from, to, reason) in cases {
        assert!(invite.contains(from), "{from}");
        let msg = parse(&invite.replacen(from, to, 1));
        assert_eq!(msg.validate().unwrap_err().reason(), reason);
    }
}

#[test]
fn uris_and_name_addrs() {
    let u = Uri::parse("sips:alice@[2001:db8::1]:5061;transport=tls;LR?Subject=hi&Priority=urgent")
        .unwrap();
    assert_eq!(u.scheme_kind(), Scheme::Sips);
    assert_eq!(u.param("lr"), Some(None));
    assert_eq!(u.headers.get("subject"), Some(Some("hi")));
    assert_eq!(
        u.with_user(Some("bob")).to_string(),
        "sips:bob@[2001:db8::1]:5061;transport=tls;LR?Subject=hi&Priority=urgent"
    );
    let na = NameAddr::parse(r#""\"Quoted\", Name" <sip:q@example.com?x=1>;tag=t1;foo"#).unwrap();
    assert_eq!(na.display_name.as_deref(), Some(r#""Quoted", Name"#));
    assert_eq!(na.tag(), Some("t1"));
    assert_eq!(na.param("FOO"), Some(None));
    assert_eq!(na.parse_uri().unwrap().headers.get("x"), Some(Some("1")));
}
