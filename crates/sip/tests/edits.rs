//! Pending edits produce exactly the expected forwarded bytes.

mod common;

use bytes::Bytes;
use common::*;
use kemibox_sip::{Edits, Received, SipMessage, render};

fn rendered(msg: &SipMessage, edits: &Edits) -> String {
    String::from_utf8(render(msg, edits)).unwrap()
}

#[test]
fn ruri_change_keeps_everything_else() {
    let msg = parse(&invite());
    let mut edits = Edits::new();
    assert_eq!(edits.ruri(&msg), Some("sip:bob@biloxi.example.com"));
    edits
        .set_ruri("sip:bob@192.0.2.4:5080;transport=udp")
        .unwrap();
    assert_eq!(
        edits.ruri(&msg),
        Some("sip:bob@192.0.2.4:5080;transport=udp")
    );
    // Reads stay on the received message.
    assert_eq!(msg.ruri(), Some("sip:bob@biloxi.example.com"));
    let expected = invite().replacen(
        "INVITE sip:bob@biloxi.example.com SIP/2.0",
        "INVITE sip:bob@192.0.2.4:5080;transport=udp SIP/2.0",
        1,
    );
    assert_eq!(rendered(&msg, &edits), expected);
    assert!(edits.set_ruri("not a uri").is_err());
    assert!(edits.set_ruri("sip:a@b SIP/2.0\r\nX: y").is_err());
}

#[test]
fn append_insert_and_relative_headers() {
    let msg = parse(&invite());
    let mut edits = Edits::new();
    edits.append_header(&msg, "X-First-Append: 1").unwrap();
    edits.append_header(&msg, "X-Second-Append: 2\r\n").unwrap();
    edits.insert_header(&msg, "X-Inserted: top").unwrap();
    assert!(
        edits
            .append_after(&msg, "call-id", "X-After-CallID: a")
            .unwrap()
    );
    assert!(
        edits
            .insert_before(&msg, "CSeq", "X-Before-CSeq: b\n")
            .unwrap()
    );
    assert!(!edits.insert_before(&msg, "X-Nope", "X-Lost: c").unwrap());
    // Reads do not see added headers.
    assert_eq!(msg.header("X-First-Append"), None);

    let expected = format!(
        "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
X-Inserted: top\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: \"Alice, A.\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
X-After-CallID: a\r\n\
X-Before-CSeq: b\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
User-Agent: kemibox-test/1.0\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\
X-First-Append: 1\r\n\
X-Second-Append: 2\r\n\
\r\n{SDP}",
        SDP.len()
    );
    assert_eq!(rendered(&msg, &edits), expected);
}

#[test]
fn remove_headers_by_name_and_index() {
    let msg = parse(COMPACT);
    let mut edits = Edits::new();
    assert_eq!(edits.remove_header(&msg, "Supported"), 2);
    assert_eq!(edits.remove_header(&msg, "k"), 0, "already removed");
    assert_eq!(edits.remove_header(&msg, "subject"), 1);
    assert_eq!(edits.remove_header(&msg, "X-Absent"), 0);
    assert!(edits.remove_header_at(&msg, 1)); // Max-Forwards
    assert!(!edits.remove_header_at(&msg, 1));
    assert!(!edits.remove_header_at(&msg, 999));
    assert!(edits.is_removed(1));
    // Reads still see them.
    assert_eq!(msg.header("Supported"), Some("timer, 100rel"));

    let expected = "BYE sip:alice@pc33.atlanta.example.com SIP/2.0\r\n\
v: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds10, SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bK2\r\n\
f: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n\
t: \"Alice, A.\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
i: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 231 BYE\r\n\
Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
Route: <sip:p3.example.com;lr>\r\n\
l: 0\r\n\
\r\n";
    assert_eq!(rendered(&msg, &edits), expected);
}

#[test]
fn proxy_via_record_route_and_max_forwards() {
    let msg = parse(&invite());
    let mut edits = Edits::new();
    edits.insert_header(&msg, "X-Script: 1").unwrap();
    edits.add_record_route(&msg, "<sip:192.0.2.1;lr>").unwrap();
    edits
        .add_via(&msg, "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKproxy1")
        .unwrap();
    edits.set_max_forwards(&msg, 69);
    let changed = edits.set_via_received(
        &msg,
        Received {
            ip: "198.51.100.7",
            port: 41000,
            force_rport: false,
        },
    );
    assert!(changed);
    let expected = invite()
        .replacen(
            "Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n",
            "Record-Route: <sip:192.0.2.1;lr>\r\n\
X-Script: 1\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKproxy1\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport=41000;received=198.51.100.7\r\n",
            1,
        )
        .replacen("Max-Forwards: 70", "Max-Forwards: 69", 1);
    assert_eq!(rendered(&msg, &edits), expected);

    // A later Max-Forwards value replaces the earlier one.
    edits.set_max_forwards(&msg, 10);
    assert!(rendered(&msg, &edits).contains("\r\nMax-Forwards: 10\r\n"));
}

#[test]
fn record_route_goes_above_existing_ones_and_max_forwards_is_added() {
    let msg = parse(RINGING);
    let mut edits = Edits::new();
    edits
        .add_record_route(&msg, "<sip:edge.example.com;lr>")
        .unwrap();
    edits.set_max_forwards(&msg, 70);
    let out = rendered(&msg, &edits);
    assert!(out.contains(
        "rport=5060\r\nRecord-Route: <sip:edge.example.com;lr>\r\nRecord-Route: <sip:proxy.example.com;lr>\r\n"
    ));
    assert!(out.starts_with("SIP/2.0 180 Ringing\r\nMax-Forwards: 70\r\nVia: "));
}

#[test]
fn remove_top_via_from_reply() {
    let msg = parse(RINGING);
    let mut edits = Edits::new();
    assert!(edits.remove_top_via(&msg));
    let expected = RINGING.replacen(
        "Via: SIP/2.0/UDP proxy.example.com:5060;branch=z9hG4bK4b43c2ff8.1\r\n",
        "",
        1,
    );
    assert_eq!(rendered(&msg, &edits), expected);
    // The next call pops the next entry, then there is nothing left.
    assert!(edits.remove_top_via(&msg));
    assert!(!edits.remove_top_via(&msg));
    assert!(!rendered(&msg, &edits).contains("Via"));
}

#[test]
fn remove_first_value_of_a_multi_valued_header() {
    let msg = parse(COMPACT);
    let mut edits = Edits::new();
    assert!(edits.remove_top_via(&msg));
    assert!(edits.remove_first_value(&msg, "Route"));
    let out = rendered(&msg, &edits);
    assert!(out.contains("\r\nv: SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bK2\r\n"));
    assert!(
        out.contains("\r\nRoute: <sip:p2.example.com;lr>\r\nRoute: <sip:p3.example.com;lr>\r\n")
    );
    assert!(edits.remove_first_value(&msg, "Route"));
    assert!(edits.remove_first_value(&msg, "Route"));
    assert!(!edits.remove_first_value(&msg, "Route"));
    let out = rendered(&msg, &edits);
    assert!(!out.contains("Route"));
    let reparsed = SipMessage::parse(out.into_bytes()).unwrap();
    assert_eq!(reparsed.via_count(), 1);
}

#[test]
fn received_stamp_is_dropped_with_its_via() {
    let msg = parse(&invite());
    let mut edits = Edits::new();
    let src = Received {
        ip: "198.51.100.7",
        port: 41000,
        force_rport: true,
    };
    assert!(edits.set_via_received(&msg, src));
    assert_eq!(edits.remove_header(&msg, "Via"), 1);
    let out = rendered(&msg, &edits);
    assert!(!out.contains("Via"));
    assert!(!out.contains("received"));
}

#[test]
fn body_replacement_fixes_content_length_and_type() {
    let msg = parse(&invite());
    let mut edits = Edits::new();
    let new_sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n";
    edits
        .replace_body(Some(Bytes::from(new_sdp)), Some("application/sdp;x=1"))
        .unwrap();
    let expected = format!(
        "{}Content-Type: application/sdp;x=1\r\nContent-Length: {}\r\n\r\n{new_sdp}",
        INVITE_HEAD.replacen("Content-Type: application/sdp\r\n", "", 1),
        new_sdp.len()
    );
    assert_eq!(rendered(&msg, &edits), expected);

    // Removing the body drops Content-Type and zeroes Content-Length.
    let mut edits = Edits::new();
    edits.replace_body(None, None).unwrap();
    let expected = format!(
        "{}Content-Length: 0\r\n\r\n",
        INVITE_HEAD.replacen("Content-Type: application/sdp\r\n", "", 1)
    );
    assert_eq!(rendered(&msg, &edits), expected);

    // A body without a new type keeps the received Content-Type.
    let mut edits = Edits::new();
    edits
        .replace_body(Some(Bytes::from_static(b"x")), None)
        .unwrap();
    let out = rendered(&msg, &edits);
    assert!(out.ends_with("Content-Type: application/sdp\r\nContent-Length: 1\r\n\r\nx"));
    assert!(edits.replace_body(None, Some("a\r\nb")).is_err());
}

#[test]
fn compact_content_length_is_replaced_in_place() {
    let msg = parse(COMPACT);
    let mut edits = Edits::new();
    edits
        .replace_body(Some(Bytes::from_static(b"hello")), Some("text/plain"))
        .unwrap();
    let out = rendered(&msg, &edits);
    assert!(out.ends_with(
        "Route: <sip:p3.example.com;lr>\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
    ));
    assert!(!out.contains("l: 0"));
    let reparsed = SipMessage::parse(out.into_bytes()).unwrap();
    assert_eq!(reparsed.body(), b"hello");
}

#[test]
fn removing_content_length_regenerates_it() {
    let msg = parse(&invite());
    let mut edits = Edits::new();
    assert_eq!(edits.remove_header(&msg, "Content-Length"), 1);
    edits.append_header(&msg, "X-Last: 1").unwrap();
    let expected = format!(
        "{INVITE_HEAD}Content-Length: {}\r\nX-Last: 1\r\n\r\n{SDP}",
        SDP.len()
    );
    assert_eq!(rendered(&msg, &edits), expected);
}

#[test]
fn invalid_header_text_is_rejected() {
    let msg = parse(&invite());
    let mut edits = Edits::new();
    for bad in [
        "X-A: 1\r\n\r\nBYE sip:x SIP/2.0",
        "no colon here",
        "Content-Length: 5",
        "X-A: \0",
        "",
    ] {
        assert!(edits.append_header(&msg, bad).is_err(), "{bad:?}");
        assert!(edits.insert_header(&msg, bad).is_err(), "{bad:?}");
    }
    assert!(edits.add_via(&msg, "SIP/2.0/UDP h\r\nX: y").is_err());
    assert!(edits.add_record_route(&msg, "").is_err());
    assert!(edits.is_empty());
    assert_eq!(render(&msg, &edits), invite().as_bytes());
}

#[test]
fn edits_on_a_reply_ignore_the_ruri() {
    let msg = parse(RINGING);
    let mut edits = Edits::new();
    edits.set_ruri("sip:elsewhere@example.com").unwrap();
    assert_eq!(edits.ruri(&msg), None);
    assert_eq!(render(&msg, &edits), RINGING.as_bytes());
}

#[test]
fn edits_from_another_message_do_not_panic() {
    let big = parse(&invite());
    let small = parse("OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n\r\n");
    let mut edits = Edits::new();
    edits.append_header(&big, "X-A: 1").unwrap();
    edits.remove_header(&big, "Contact");
    edits.set_max_forwards(&big, 3);
    let out = render(&small, &edits);
    assert!(out.starts_with(b"OPTIONS sip:a@b SIP/2.0\r\n"));
}
