//! Behaviour of the KSR modules added after the first set (sanity, kx,
//! corex, textops, and the additions to core, pv, rr and siputils), checked
//! against Kamailio's documented semantics the same way as
//! `ksr_modules.rs`: real Lua scripts run in the sandbox on SIP messages,
//! and each test checks what the script observed, the events it caused and
//! the message it would forward.
//!
//! The proxy's own address ("myself") is 127.0.0.1:5060; messages arrive
//! over UDP from 127.0.0.1:5070 unless a test says otherwise.

mod common;

use std::net::SocketAddr;

use common::ksr::*;
use common::*;
use kemibox_kemi::{Event, Message, Transport};
use kemibox_sip::SipMessage;

/// `text` received from `source` over `transport` on our socket.
fn received(text: &str, source: SocketAddr, transport: Transport) -> Message {
    let parsed = SipMessage::parse(text.as_bytes().to_vec()).expect("test message parses");
    Message::new(parsed, source, local(), transport)
}

fn strings(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|s| s.to_string()).collect()
}

fn reply(code: i32, reason: &str, headers: &[&str]) -> Event {
    Event::Reply {
        code,
        reason: reason.into(),
        stateful: false,
        headers: strings(headers),
    }
}

/// An INVITE with an SDP body, one Via, out of dialog; `replace` swaps
/// header lines (`(old, new)`, an empty new line removes the header) and
/// `extra` lines go before Content-Length.
fn invite_with(replace: &[(&str, &str)], extra: &[&str]) -> String {
    let mut lines: Vec<String> = [
        "INVITE sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-s1",
        "Max-Forwards: 70",
        "From: \"Alice\" <sip:alice@example.com>;tag=a1",
        "To: <sip:bob@example.com>",
        "Call-ID: sanity-1@127.0.0.1",
        "CSeq: 10 INVITE",
        "Contact: <sip:alice@127.0.0.1:5070>",
        "User-Agent: more-ua/2.0",
        "Content-Type: application/sdp",
    ]
    .iter()
    .map(|l| l.to_string())
    .collect();
    for (old, new) in replace {
        let i = lines
            .iter()
            .position(|l| l.starts_with(old))
            .unwrap_or_else(|| panic!("no line {old}"));
        if new.is_empty() {
            lines.remove(i);
        } else {
            lines[i] = new.to_string();
        }
    }
    lines.extend(extra.iter().map(|l| l.to_string()));
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    sip(&refs, SDP)
}

const SDP: &str = "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";

// ---------------------------------------------------------------- sanity

/// A well-formed INVITE passes `sanity_check_defaults` (3047) and every
/// other check; `sanity_reply` has nothing to send (Kamailio's default
/// `noreply=0`) and returns 1.
#[tokio::test]
async fn sanity_passes_a_good_request() {
    let inv = route(
        r#"function ksr_request_route()
    say("defaults", KSR.sanity.sanity_check_defaults())
    say("all", KSR.sanity.sanity_check(32767, 15))
    say("reply", KSR.sanity.sanity_reply())
end"#,
        message(&invite_with(
            &[],
            &["Expires: 300", "Authorization: Digest username=\"alice\", realm=\"example.com\", nonce=\"n1\", uri=\"sip:bob@example.com\", response=\"0123\""],
        )),
    )
    .await;
    assert_eq!(
        logs(&inv),
        strings(&["defaults number 1", "all number 1", "reply number 1"])
    );
    assert_eq!(actions(&inv), vec![]);
}

/// Each failed check answers the request with Kamailio's reply and returns
/// -1: bad CSeq number, CSeq method mismatch, Content-Length mismatch,
/// missing required header, bad Expires, unsupported Proxy-Require
/// extension (420 with `Unsupported:`), unsupported R-URI scheme (416),
/// bad From URI, incomplete digest credentials, duplicated From tags.
#[tokio::test]
async fn sanity_failures_send_the_documented_reply() {
    let mut i = instance(
        r#"function ksr_request_route()
    local mflags = tonumber(KSR.hdr.gete("X-Checks"))
    return KSR.sanity.sanity_check(mflags, 7)
end"#,
    )
    .await;
    let long_body = invite_with(&[], &["X-Checks: 128"]).replacen(
        &format!("Content-Length: {}", SDP.len()),
        &format!("Content-Length: {}", SDP.len() - 4),
        1,
    );
    let cases: Vec<(String, Event)> = vec![
        (
            invite_with(&[("CSeq:", "CSeq: 1x INVITE")], &["X-Checks: 64"]),
            reply(400, "CSeq number is illegal", &[]),
        ),
        (
            invite_with(&[("CSeq:", "CSeq: 99999999999 INVITE")], &["X-Checks: 64"]),
            reply(400, "CSeq number is illegal", &[]),
        ),
        (
            invite_with(&[("CSeq:", "CSeq: 10 BYE")], &["X-Checks: 32"]),
            reply(400, "CSeq method does not match request method", &[]),
        ),
        (
            invite_with(&[("CSeq:", "CSeq: 10")], &["X-Checks: 32"]),
            reply(400, "Missing method in CSeq header", &[]),
        ),
        (long_body, reply(400, "Content-Length mis-match", &[])),
        (
            invite_with(&[("Call-ID:", "")], &["X-Checks: 4"]),
            reply(400, "Missing Required Header in Request", &[]),
        ),
        (
            invite_with(&[("To:", "")], &["X-Checks: 3047"]),
            reply(400, "Missing Required Header in Request", &[]),
        ),
        (
            invite_with(&[], &["Expires: soon", "X-Checks: 256"]),
            reply(400, "Expires value is illegal", &[]),
        ),
        (
            invite_with(&[], &["Proxy-Require: foo, bar", "X-Checks: 512"]),
            reply(420, "Bad Extension", &["Unsupported: foo"]),
        ),
        (
            invite_with(
                &[("INVITE", "INVITE mailto:bob@example.com SIP/2.0")],
                &["X-Checks: 2"],
            ),
            reply(416, "Unsupported URI Scheme in Request URI", &[]),
        ),
        (
            invite_with(
                &[("From:", "From: <bob.example.com>;tag=a1")],
                &["X-Checks: 1024"],
            ),
            reply(400, "Bad From URI", &[]),
        ),
        (
            invite_with(
                &[],
                &[
                    "Authorization: Digest username=\"alice\", realm=\"example.com\", uri=\"sip:bob@example.com\", response=\"0123\"",
                    "X-Checks: 2048",
                ],
            ),
            reply(400, "Bad Auth Credentials", &[]),
        ),
        (
            invite_with(
                &[("From:", "From: <sip:alice@example.com>;tag=a1;tag=a2")],
                &["X-Checks: 4096"],
            ),
            reply(400, "Many From Tag Params", &[]),
        ),
    ];
    for (text, want) in cases {
        let inv = i.invoke("ksr_request_route", Some(message(&text))).await;
        assert_eq!(ret(&inv), -1, "{text}");
        assert_eq!(actions(&inv), vec![want], "{text}");
        // The message itself is not changed by a check.
        assert!(inv.message.as_ref().unwrap().edits.is_empty(), "{text}");
    }
}

/// Failures that cannot or must not be answered: an ACK is never replied
/// to; a non-digest Authorization fails check 2048 silently but passes
/// check 8192; a missing CSeq fails check 64 without a reply. Flags out of
/// range are refused. A reply passes the request-only checks.
#[tokio::test]
async fn sanity_silent_failures_and_bad_flags() {
    let mut i = instance(
        r#"function ksr_request_route()
    local mflags = tonumber(KSR.hdr.gete("X-Checks"))
    return KSR.sanity.sanity_check(mflags, 7)
end"#,
    )
    .await;
    let ack = sip(
        &[
            "ACK sip:bob@example.com SIP/2.0",
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-ack",
            "From: <sip:alice@example.com>;tag=a1",
            "To: <sip:bob@example.com>;tag=b2",
            "Call-ID: sanity-2@127.0.0.1",
            "CSeq: x ACK",
            "X-Checks: 64",
        ],
        "",
    );
    let basic = invite_with(
        &[],
        &["Authorization: Basic YWxpY2U6cw==", "X-Checks: 2048"],
    );
    let basic_8192 = basic.replace("X-Checks: 2048", "X-Checks: 8192");
    let no_cseq = invite_with(&[("CSeq:", "")], &["X-Checks: 64"]);
    let ringing = sip(
        &[
            "SIP/2.0 180 Ringing",
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-r",
            "From: <sip:alice@example.com>;tag=a1",
            "To: <sip:bob@example.com>;tag=b2",
            "Call-ID: sanity-3@127.0.0.1",
            "CSeq: 10 INVITE",
            "X-Checks: 3047",
        ],
        "",
    );
    for (text, want) in [
        (ack, -1),
        (basic, -1),
        (basic_8192, 1),
        (no_cseq, -1),
        (ringing, 1),
    ] {
        let inv = i.invoke("ksr_request_route", Some(message(&text))).await;
        assert_eq!(ret(&inv), want, "{text}");
        assert_eq!(actions(&inv), vec![], "{text}");
    }

    let inv = route(
        r#"function ksr_request_route()
    say("0", KSR.sanity.sanity_check(0, 7))
    say("32768", KSR.sanity.sanity_check(32768, 7))
    say("uri16", KSR.sanity.sanity_check(1, 16))
end"#,
        invite(),
    )
    .await;
    assert_eq!(
        logs(&inv),
        strings(&[
            "modules.lua:6: KSR.sanity.sanity_check: check flags 0 out of range 1..32767",
            "0 number -1",
            "modules.lua:7: KSR.sanity.sanity_check: check flags 32768 out of range 1..32767",
            "32768 number -1",
            "modules.lua:8: KSR.sanity.sanity_check: URI flags 16 out of range 0..15",
            "uri16 number -1",
        ])
    );
}

// ---------------------------------------------------------------- kx

/// The kx accessors on an INVITE: URIs and their parts, with nil, "" and
/// "<<null>>" for missing values, socket and transport facts, the body,
/// Call-ID, message buffer, digest user, and the define/environment stubs.
#[tokio::test]
async fn kx_accessors_on_a_request() {
    let text = invite_with(
        &[("INVITE", "INVITE sip:example.com;transport=udp SIP/2.0")],
        &["Proxy-Authorization: Digest username=\"alice@example.com\", realm=\"example.com\""],
    );
    let inv = route(
        r#"function ksr_request_route()
    local kx = KSR.kx
    KSR.seturi("sip:carol@example.net:5080")
    say("ruri", kx.get_ruri())
    say("ouri", kx.get_ouri())
    say("ruser", kx.get_ruser())
    say("rhost", kx.get_rhost())
    say("furi", kx.get_furi())
    say("fuser", kx.get_fuser())
    say("fhost", kx.get_fhost())
    say("turi", kx.get_turi())
    say("tuser", kx.get_tuser())
    say("thost", kx.get_thost())
    say("duri", kx.get_duri())
    say("gete_duri", kx.gete_duri())
    say("getw_duri", kx.getw_duri())
    say("nhuri", kx.get_nhuri())
    KSR.setdsturi("sip:192.0.2.9:5090")
    say("duri", kx.get_duri())
    say("nhuri", kx.get_nhuri())
    say("cturi", kx.get_cturi())
    say("srcuri", kx.get_srcuri())
    say("ua", kx.get_ua())
    say("srcip", kx.get_srcip())
    say("srcport", kx.get_srcport())
    say("rcvip", kx.get_rcvip())
    say("rcvport", kx.get_rcvport())
    say("rcvadvip", kx.get_rcvadvip())
    say("rcvadvport", kx.get_rcvadvport())
    say("proto", kx.get_proto())
    say("protoid", kx.get_protoid())
    say("send_sock", kx.get_send_sock())
    say("send_sock_port", kx.get_send_sock_port())
    say("au", kx.get_au())
    say("method", kx.get_method())
    say("status", kx.get_status())
    say("gets_status", kx.gets_status())
    say("bodylen", kx.get_bodylen())
    say("body", kx.get_body():sub(1, 3))
    say("callid", kx.get_callid())
    say("msglen", kx.get_msglen() == #kx.get_msgbuf())
    say("msgtype", kx.get_msgtype())
    say("timestamp", math.abs(kx.get_timestamp() - os.time()) < 5)
    say("def", kx.get_def("WITH_NAT"))
    say("defn", kx.get_defn("WITH_NAT"))
    say("ifdef", kx.ifdef("WITH_NAT"))
    say("ifndef", kx.ifndef("WITH_NAT"))
    say("env", kx.get_env("HOME"))
    say("envn", kx.get_envn("HOME"))
end"#,
        message(&text),
    )
    .await;
    assert_eq!(
        logs(&inv),
        strings(&[
            "ruri string sip:carol@example.net:5080",
            "ouri string sip:example.com;transport=udp",
            "ruser string carol",
            "rhost string example.net",
            "furi string sip:alice@example.com",
            "fuser string alice",
            "fhost string example.com",
            "turi string sip:bob@example.com",
            "tuser string bob",
            "thost string example.com",
            "duri nil nil",
            "gete_duri string ",
            "getw_duri string <<null>>",
            "nhuri string sip:carol@example.net:5080",
            "duri string sip:192.0.2.9:5090",
            "nhuri string sip:192.0.2.9:5090",
            "cturi string sip:alice@127.0.0.1:5070",
            "srcuri string sip:127.0.0.1:5070",
            "ua string more-ua/2.0",
            "srcip string 127.0.0.1",
            "srcport number 5070",
            "rcvip string 127.0.0.1",
            "rcvport number 5060",
            "rcvadvip string 127.0.0.1",
            "rcvadvport number 5060",
            "proto string udp",
            "protoid number 1",
            "send_sock nil nil",
            "send_sock_port number 0",
            "au string alice",
            "method string INVITE",
            "status number -1",
            "gets_status nil nil",
            &format!("bodylen number {}", SDP.len()),
            "body string v=0",
            "callid string sanity-1@127.0.0.1",
            "msglen boolean true",
            "msgtype number 1",
            "timestamp boolean true",
            "def string ",
            "defn number 0",
            "ifdef boolean false",
            "ifndef boolean true",
            "env string ",
            "envn number 0",
        ])
    );
}

/// Missing values in their three forms, on a reply received over TCP
/// without a body, User-Agent or Contact.
#[tokio::test]
async fn kx_accessors_on_a_reply_over_tcp() {
    let text = sip(
        &[
            "SIP/2.0 486 Busy Here",
            "Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-t",
            "From: <sip:alice@example.com>;tag=a1",
            "To: <tel:+4930123>;tag=b2",
            "Call-ID: kx-2@127.0.0.1",
            "CSeq: 3 INVITE",
        ],
        "",
    );
    let source: SocketAddr = "[2001:db8::7]:5071".parse().unwrap();
    let inv = route(
        r#"function ksr_request_route()
    local kx = KSR.kx
    say("ruri", kx.get_ruri())
    say("ruser", kx.get_ruser())
    say("gete_ruser", kx.gete_ruser())
    say("getw_rhost", kx.getw_rhost())
    say("tuser", kx.get_tuser())
    say("thost", kx.get_thost())
    say("gete_thost", kx.gete_thost())
    say("nhuri", kx.get_nhuri())
    say("cturi", kx.get_cturi())
    say("getw_cturi", kx.getw_cturi())
    say("ua", kx.get_ua())
    say("gete_ua", kx.gete_ua())
    say("getw_ua", kx.getw_ua())
    say("au", kx.get_au())
    say("getw_au", kx.getw_au())
    say("body", kx.get_body())
    say("gete_body", kx.gete_body())
    say("bodylen", kx.get_bodylen())
    say("method", kx.get_method())
    say("status", kx.get_status())
    say("gets_status", kx.gets_status())
    say("msgtype", kx.get_msgtype())
    say("srcip", kx.get_srcip())
    say("srcuri", kx.get_srcuri())
    say("proto", kx.get_proto())
    say("protoid", kx.get_protoid())
end"#,
        received(&text, source, Transport::Tcp),
    )
    .await;
    assert_eq!(
        logs(&inv),
        strings(&[
            "ruri nil nil",
            "ruser nil nil",
            "gete_ruser string ",
            "getw_rhost string <<null>>",
            "tuser string +4930123",
            "thost nil nil",
            "gete_thost string ",
            "nhuri nil nil",
            "cturi nil nil",
            "getw_cturi string <<null>>",
            "ua nil nil",
            "gete_ua string ",
            "getw_ua string <<null>>",
            "au nil nil",
            "getw_au string <<null>>",
            "body nil nil",
            "gete_body string ",
            "bodylen number 0",
            "method string INVITE",
            "status number 486",
            "gets_status string 486",
            "msgtype number 2",
            "srcip string 2001:db8::7",
            "srcuri string sip:[2001:db8::7]:5071;transport=tcp",
            "proto string tcp",
            "protoid number 2",
        ])
    );
}

// ---------------------------------------------------------------- corex

/// Extended flags 0..63 (64 and -1 refused), the R-URI user and
/// User-Agent tests, and the send socket: one of ours is recorded for the
/// proxy (and shown by `KSR.kx.get_send_sock`), another address only logs
/// a warning (1, as Kamailio), a malformed one is -1, "" clears it.
#[tokio::test]
async fn corex_flags_tests_and_send_socket() {
    let inv = route(
        r#"function ksr_request_route()
    local c = KSR.corex
    local r = {
        c.setxflag(0), c.setxflag(63), c.isxflagset(0), c.isxflagset(63), c.isxflagset(5),
        c.resetxflag(0), c.isxflagset(0), c.setxflag(64), c.isxflagset(-1),
        c.has_ruri_user(), c.has_user_agent(),
    }
    KSR.info(table.concat(r, " "))
    say("tcp", c.set_send_socket("tcp:127.0.0.1:5060"))
    say("sock", KSR.kx.get_send_sock())
    say("other", c.set_send_socket("udp:192.0.2.1:5060"))
    say("sock", KSR.kx.get_send_sock())
    say("bad", c.set_send_socket("udp:127.0.0.1:port"))
    say("clear", c.set_send_socket(""))
    say("sock", KSR.kx.get_send_sock())
    say("udp", c.set_send_socket("127.0.0.1"))
    say("port", KSR.kx.get_send_sock_port())
    KSR.seturi("sip:example.com")
    say("ruri user", c.has_ruri_user())
end"#,
        invite(),
    )
    .await;
    assert_eq!(
        logs(&inv),
        strings(&[
            "modules.lua:9: KSR.corex.setxflag: flag 64 out of range 0..63",
            "modules.lua:9: KSR.corex.isxflagset: flag -1 out of range 0..63",
            "1 1 1 1 -1 1 -1 -1 -1 1 1",
            "tcp number 1",
            "sock string tcp:127.0.0.1:5060",
            "KSR.corex.set_send_socket: no socket found to match \"udp:192.0.2.1:5060\"",
            "other number 1",
            "sock string tcp:127.0.0.1:5060",
            "modules.lua:17: KSR.corex.set_send_socket: invalid socket \"udp:127.0.0.1:port\"",
            "bad number -1",
            "clear number 1",
            "sock nil nil",
            "udp number 1",
            "port number 5060",
            "ruri user number -1",
        ])
    );
    let m = inv.message.as_ref().unwrap();
    assert_eq!(m.send_socket, Some((Transport::Udp, local())));
    assert_eq!(m.xflags, 1 << 63);
}

// ---------------------------------------------------------------- textops

/// Searches on the message as received (case-insensitive, per line),
/// header tests by name and by expression, an invalid expression, the
/// body tests, the Privacy test and the string helpers.
#[tokio::test]
async fn textops_searches_and_tests() {
    let text = invite_with(
        &[],
        &[
            "X-Tag: one",
            "X-Tag: two",
            "Privacy: id;header",
            "v: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-second",
        ],
    );
    let inv = route(
        r#"function ksr_request_route()
    local t = KSR.textops
    local r = {
        t.search("^call-id: sanity-1"), t.search("^CSeq: 10 BYE"), t.search(""),
        t.search("INVITE sip:bob"), t.search("m=audio"),
        t.search_body("^m=audio [0-9]+"), t.search_body("Call-ID"),
        t.search_hf("X-Tag", "^two$", "f"), t.search_hf("X-Tag", "^two$", "l"),
        t.search_hf("X-Tag", "^tw", ""), t.search_hf("X-Nope", ".", ""),
        t.is_present_hf("Via"), t.is_present_hf("v"), t.is_present_hf("X-Nope"),
        t.is_present_hf_re("^x-t"), t.is_present_hf_re("^P-"),
        t.has_body(), t.has_body_type("application/SDP"), t.has_body_type("text/plain"),
        t.has_body_type(""),
        t.is_privacy("id"), t.is_privacy("HEADER"), t.is_privacy("session"),
    }
    KSR.info(table.concat(r, " "))
    say("bad re", t.search("(unclosed"))
    say("bad mime", t.has_body_type("application/sdp, text/plain"))
    say("bad privacy", t.is_privacy("everything"))
    local s = {
        t.in_list("fi", "dk, fi ,no", ","), t.in_list("f", "dk,fi,no", ","),
        t.in_list("fi", "dk;fi", ";x"), t.in_list("", "a", ","), t.in_list("a", "a", ""),
        t.in_list_prefix("final", "dk,fi,no", ","), t.in_list_prefix("nope", "dk,fi", ","),
        t.cmp_str("abc", "abc"), t.cmp_str("abd", "abc"), t.cmp_str("abc", "abd"),
        t.cmp_str("ab", "abc"), t.cmp_istr("ABC", "abc"), t.cmp_istr("b", "A"),
        t.starts_with("+358401", "+358"), t.starts_with("+3", "+358"),
        t.starts_with("+459", "+358"), t.starts_with("+158", "+358"),
    }
    KSR.info(table.concat(s, " "))
end"#,
        message(&text),
    )
    .await;
    assert_eq!(
        logs(&inv),
        strings(&[
            "1 -1 1 1 1 1 -1 -1 1 1 -1 1 1 -1 1 -1 1 1 -1 1 1 1 -1",
            "modules.lua:20: KSR.textops.search: invalid regular expression \"(unclosed\": unclosed group",
            "bad re number -1",
            "modules.lua:21: KSR.textops.has_body_type: not a single type/subtype: \"application/sdp, text/plain\"",
            "bad mime number -1",
            "modules.lua:22: KSR.textops.is_privacy: unknown privacy value \"everything\"",
            "bad privacy number -1",
            "1 -1 1 -1 -1 1 -1 1 -1 -2 -2 1 -1 1 -1 -1 -2",
        ])
    );
    assert_eq!(forwarded(&inv), text);
}

/// `remove_hf_re` and `remove_hf_exp` remove headers by name expression
/// (1 when one matched, -1 otherwise); `set_body` replaces the body and
/// Content-Type, Content-Length following; an empty body is refused.
#[tokio::test]
async fn textops_header_removal_and_body() {
    let text = invite_with(
        &[],
        &[
            "P-Asserted-Identity: <sip:alice@example.com>",
            "P-Keep-Me: yes",
            "X-A: 1",
            "x-b: 2",
        ],
    );
    let inv = route(
        r#"function ksr_request_route()
    local t = KSR.textops
    local r = {
        t.remove_hf_re("^x-"), t.remove_hf_re("^X-None"),
        t.remove_hf_exp("^P-", "^P-Keep-"), t.remove_hf_exp("^P-", "^P-"),
        t.set_body("hello", "text/plain"), t.set_body("", "text/plain"),
    }
    KSR.info(table.concat(r, " "))
end"#,
        message(&text),
    )
    .await;
    assert_eq!(
        logs(&inv),
        strings(&[
            "modules.lua:10: KSR.textops.set_body: empty body or content type",
            "1 -1 1 -1 1 -1",
        ])
    );
    assert_eq!(
        actions(&inv),
        vec![
            Event::HeaderRemoved {
                name: "X-A".into(),
                count: 1
            },
            Event::HeaderRemoved {
                name: "x-b".into(),
                count: 1
            },
            Event::HeaderRemoved {
                name: "P-Asserted-Identity".into(),
                count: 1
            },
        ]
    );
    // The Content-Type is replaced where it was.
    let want = invite_with(
        &[("Content-Type:", "Content-Type: text/plain")],
        &["P-Keep-Me: yes"],
    )
    .replacen(
        &format!("Content-Length: {}\r\n\r\n{SDP}", SDP.len()),
        "Content-Length: 5\r\n\r\nhello",
        1,
    );
    assert_eq!(forwarded(&inv), want);
}

// ---------------------------------------------------------------- rr

/// `add_rr_param` before `record_route` goes into the Record-Route; after
/// it, the Record-Route is rewritten (`replace` event); a second
/// `record_route` is refused; a malformed parameter is refused.
#[tokio::test]
async fn rr_add_rr_param_and_double_record_route() {
    let inv = route(
        r#"function ksr_request_route()
    local rr = KSR.rr
    local r = {
        rr.add_rr_param(";nat=yes"), rr.record_route(), rr.add_rr_param(";did=42"),
        rr.record_route(), rr.record_route_params(";x=1"), rr.add_rr_param("bad"),
        rr.add_rr_param(";a b"),
    }
    KSR.info(table.concat(r, " "))
end"#,
        invite(),
    )
    .await;
    assert_eq!(
        logs(&inv),
        strings(&[
            "modules.lua:9: KSR.rr.record_route: double attempt to record-route",
            "modules.lua:9: KSR.rr.record_route_params: double attempt to record-route",
            "modules.lua:9: KSR.rr.add_rr_param: invalid URI parameter \"bad\"",
            "modules.lua:10: KSR.rr.add_rr_param: invalid URI parameter \";a b\"",
            "1 1 1 -1 -1 -1 -1",
        ])
    );
    assert_eq!(
        actions(&inv),
        vec![
            Event::HeaderAdded {
                header: "Record-Route: <sip:127.0.0.1:5060;lr;nat=yes>".into(),
                position: "record-route".into(),
            },
            Event::HeaderAdded {
                header: "Record-Route: <sip:127.0.0.1:5060;lr;nat=yes;did=42>".into(),
                position: "replace".into(),
            },
        ]
    );
    assert_eq!(
        forwarded(&inv),
        INVITE.replacen(
            "Via:",
            "Record-Route: <sip:127.0.0.1:5060;lr;nat=yes;did=42>\r\nVia:",
            1
        )
    );
}

/// The preset and advertised-address forms, `record_route_params`, and
/// `remove_record_route` (undone while nothing else changed; refused after
/// another change).
#[tokio::test]
async fn rr_preset_advertised_params_and_removal() {
    let mut i = instance(
        r#"function ksr_request_route()
    local rr = KSR.rr
    local how = KSR.hdr.gete("X-How")
    local r
    if how == "preset" then
        rr.add_rr_param(";ignored=1")
        r = rr.record_route_preset("192.0.2.1:5090", "sip:192.0.2.2")
    elseif how == "one" then
        r = rr.record_route_preset_one("proxy.example.com")
    elseif how == "advertised" then
        rr.add_rr_param(";p=1")
        r = rr.record_route_advertised_address("198.51.100.7:5062")
    elseif how == "params" then
        r = rr.record_route_params(";ob;k=v")
    elseif how == "remove" then
        rr.record_route()
        r = rr.remove_record_route()
    else
        rr.record_route()
        KSR.hdr.append("X-After: 1")
        r = rr.remove_record_route()
    end
    return r
end"#,
    )
    .await;
    let with_how =
        |how: &str| INVITE.replacen("User-Agent:", &format!("X-How: {how}\r\nUser-Agent:"), 1);
    let rr = |lines: &[&str], how: &str| {
        let top: String = lines
            .iter()
            .map(|l| format!("Record-Route: {l}\r\n"))
            .collect();
        with_how(how).replacen("Via:", &format!("{top}Via:"), 1)
    };
    for (how, want_ret, want) in [
        (
            "preset",
            1,
            rr(&["<sip:192.0.2.1:5090;lr>", "<sip:192.0.2.2;lr>"], "preset"),
        ),
        ("one", 1, rr(&["<sip:proxy.example.com;lr>"], "one")),
        (
            "advertised",
            1,
            rr(&["<sip:198.51.100.7:5062;lr;p=1>"], "advertised"),
        ),
        (
            "params",
            1,
            rr(&["<sip:127.0.0.1:5060;lr;ob;k=v>"], "params"),
        ),
        ("remove", 1, with_how("remove")),
        (
            "changed",
            -1,
            rr(&["<sip:127.0.0.1:5060;lr>"], "changed").replacen(
                "Content-Length: 0\r\n",
                "Content-Length: 0\r\nX-After: 1\r\n",
                1,
            ),
        ),
    ] {
        let inv = i
            .invoke("ksr_request_route", Some(message(&with_how(how))))
            .await;
        assert_eq!(ret(&inv), want_ret, "{how}");
        assert_eq!(forwarded(&inv), want, "{how}");
        if how == "remove" {
            assert_eq!(
                actions(&inv).last(),
                Some(&Event::HeaderRemoved {
                    name: "Record-Route".into(),
                    count: 1
                })
            );
        }
        if how == "changed" {
            assert_eq!(
                errors(&inv),
                strings(&[
                    "modules.lua:25: KSR.rr.remove_record_route: the message changed after the Record-Route was added; it cannot be removed alone"
                ])
            );
        }
    }
}

/// After `loose_route` consumed our Route entry, `check_route_param`
/// matches its parameters and `is_direction` compares its `ftag` with the
/// From tag: the caller's BYE flows downstream, the callee's upstream.
/// Without a consumed Route both answer as without `ftag`; an unknown
/// direction is -6.
#[tokio::test]
async fn rr_route_params_and_direction() {
    let mut i = instance(
        r#"function ksr_request_route()
    local rr = KSR.rr
    local r = {
        rr.loose_route(), rr.check_route_param("nat=yes"), rr.check_route_param(";lr;ftag=A1"),
        rr.check_route_param("nat=no"), rr.is_direction("downstream"), rr.is_direction("upstream"),
    }
    KSR.info(table.concat(r, " "))
end"#,
    )
    .await;
    let bye = |from_tag: &str, to_tag: &str, route: &str| {
        let mut lines = vec![
            "BYE sip:bob@192.0.2.20:5080 SIP/2.0".to_string(),
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-dir".to_string(),
        ];
        if !route.is_empty() {
            lines.push(format!("Route: {route}"));
        }
        lines.extend([
            format!("From: <sip:x@example.com>;tag={from_tag}"),
            format!("To: <sip:y@example.com>;tag={to_tag}"),
            "Call-ID: dir-1@127.0.0.1".into(),
            "CSeq: 5 BYE".into(),
        ]);
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        sip(&refs, "")
    };
    let ours = "<sip:127.0.0.1:5060;lr;ftag=a1;nat=yes>";
    for (text, want) in [
        (bye("a1", "b2", ours), "1 1 1 -1 1 -1"),
        (bye("b2", "a1", ours), "1 1 1 -1 -1 1"),
        (
            bye("a1", "b2", "<sip:127.0.0.1:5060;lr>"),
            "1 -1 -1 -1 1 -1",
        ),
        (bye("a1", "b2", ""), "-1 -1 -1 -1 1 -1"),
    ] {
        let inv = i.invoke("ksr_request_route", Some(message(&text))).await;
        assert_eq!(logs(&inv), vec![want.to_string()], "{text}");
    }
    let inv = route(
        r#"function ksr_request_route() return KSR.rr.is_direction("sideways") end"#,
        invite(),
    )
    .await;
    assert_eq!(ret(&inv), -6);
    assert_eq!(
        errors(&inv),
        strings(&[
            "modules.lua:5: KSR.rr.is_direction: unknown direction \"sideways\" - use 'downstream' or 'upstream'"
        ])
    );
}

// ---------------------------------------------------------------- siputils

/// URI and string tests: `is_uri`, the R-URI parameter functions
/// (`uri_param_rm` rewrites the R-URI), the number and character tests,
/// `cmp_uri`, `cmp_aor`, `cmp_hdr_name` and `is_gruu`.
#[tokio::test]
async fn siputils_uri_and_string_tests() {
    let text = request_to("sip:bob@example.com;Transport=TCP;lr;gr;user=phone");
    let inv = route(
        r#"function ksr_request_route()
    local s = KSR.siputils
    local r = {
        s.is_uri("sip:a@b"), s.is_uri("tel:+123"), s.is_uri("http://x"), s.is_uri(""),
        s.uri_param("lr"), s.uri_param("LR"), s.uri_param("Transport"), s.uri_param("none"),
        s.uri_param_value("Transport", "TCP"), s.uri_param_value("Transport", "tcp"),
        s.uri_param_value("lr", ""), s.uri_param_any("transport"), s.uri_param_any("x"),
        s.is_gruu(),
    }
    KSR.info(table.concat(r, " "))
    local n = {
        s.is_tel_number("+4930123"), s.is_tel_number("0301"), s.is_tel_number("+0301"),
        s.is_tel_number("+"), s.is_tel_number("12a"), s.is_tel_number(""),
        s.is_numeric("0123"), s.is_numeric("1.5"), s.is_numeric(""),
        s.is_alphanum("abc123"), s.is_alphanum("a-b"), s.is_alphanum(""),
        s.is_alphanumex("a-b_c", "-_"), s.is_alphanumex("a b", "-"),
    }
    KSR.info(table.concat(n, " "))
    local c = {
        s.cmp_uri("sip:Bob@EXAMPLE.com;transport=udp", "sip:Bob@example.com;Transport=UDP"),
        s.cmp_uri("sip:bob@example.com", "sip:Bob@example.com"),
        s.cmp_uri("sip:bob@example.com", "sip:bob@example.com:5060"),
        s.cmp_uri("sip:bob@example.com", "sip:bob@example.com;maddr=192.0.2.1"),
        s.cmp_uri("sip:bob@example.com;foo=1", "sip:bob@example.com;bar=2"),
        s.cmp_uri("sip:bob@example.com", "sips:bob@example.com"),
        s.cmp_uri("sip:bob@example.com", "not a uri"),
        s.cmp_aor("sip:bob@example.com", "sip:bob@EXAMPLE.COM:5060;transport=tcp"),
        s.cmp_aor("sip:bob@example.com", "sip:bob@example.com:5070"),
        s.cmp_aor("sip:bob@example.com", "sip:alice@example.com"),
        s.cmp_aor("bob@example.com", "sip:bob@example.com"),
        s.cmp_hdr_name("Call-ID", "call-id"), s.cmp_hdr_name("f", "From"),
        s.cmp_hdr_name("To", "From"),
    }
    KSR.info(table.concat(c, " "))
    say("rm", s.uri_param_rm("TRANSPORT"))
    say("rm absent", s.uri_param_rm("nope"))
    say("ruri", KSR.pv.get("$ru"))
end"#,
        message(&text),
    )
    .await;
    assert_eq!(
        logs(&inv),
        strings(&[
            "1 1 -1 -1 1 -1 -1 -1 1 -1 1 1 -1 2",
            "1 1 -2 -2 -2 -2 1 -2 -2 1 -3 -2 1 -3",
            "1 -1 -1 -1 1 -1 -2 1 -1 -1 -2 1 -2 -1",
            "rm number 1",
            "rm absent number 1",
            "ruri string sip:bob@example.com;lr;gr;user=phone",
        ])
    );
    assert!(
        forwarded(&inv).starts_with("OPTIONS sip:bob@example.com;lr;gr;user=phone SIP/2.0\r\n")
    );
}

/// An OPTIONS request to the proxy itself.
fn request_to(ruri: &str) -> String {
    sip(
        &[
            &format!("OPTIONS {ruri} SIP/2.0"),
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-o1",
            "From: <sip:alice@example.com>;tag=a1",
            "To: <sip:127.0.0.1>",
            "Call-ID: options-1@127.0.0.1",
            "CSeq: 1 OPTIONS",
        ],
        "",
    )
}

/// `options_reply` answers an OPTIONS without R-URI user with 200 OK and
/// the capability headers (0, Kamailio's "reply sent" code); it refuses an
/// R-URI with a user and other methods (-1).
#[tokio::test]
async fn siputils_options_reply() {
    let mut i =
        instance("function ksr_request_route() return KSR.siputils.options_reply() end").await;
    let inv = i
        .invoke(
            "ksr_request_route",
            Some(message(&request_to("sip:127.0.0.1:5060"))),
        )
        .await;
    assert_eq!(ret(&inv), 0);
    assert_eq!(
        actions(&inv),
        vec![reply(
            200,
            "OK",
            &[
                "Accept: */*",
                "Accept-Encoding: ",
                "Accept-Language: en",
                "Supported: "
            ]
        )]
    );
    let inv = i
        .invoke(
            "ksr_request_route",
            Some(message(&request_to("sip:bob@127.0.0.1"))),
        )
        .await;
    assert_eq!(ret(&inv), -1);
    assert_eq!(
        errors(&inv),
        strings(&["modules.lua:5: KSR.siputils.options_reply: the R-URI contains a user"])
    );
    let inv = i.invoke("ksr_request_route", Some(invite())).await;
    assert_eq!(ret(&inv), -1);
    assert_eq!(
        errors(&inv),
        strings(&["modules.lua:5: KSR.siputils.options_reply: called for a non-OPTIONS request"])
    );
    assert_eq!(actions(&inv), vec![]);
}

// ---------------------------------------------------------------- core

/// Transport, port and address tests on `KSR`: UDP from 127.0.0.1:5070 and
/// TCP from our own socket address.
#[tokio::test]
async fn core_transport_port_and_myself_tests() {
    let mut i = instance(
        r#"function ksr_request_route()
    local r = {
        KSR.is_UDP(), KSR.is_TCP(), KSR.is_TLS(), KSR.is_WS(), KSR.is_WSS(), KSR.is_WSX(),
        KSR.is_SCTP(), KSR.is_proto("u"), KSR.is_proto("TE"), KSR.is_proto("xyz"),
        KSR.is_src_port(5070), KSR.is_dst_port(5060), KSR.is_dst_port(5070),
        KSR.is_myself_suri(), KSR.is_myself_duri(), KSR.is_myself_nhuri(),
    }
    KSR.setdsturi("sip:127.0.0.1:5060")
    r[#r + 1] = KSR.is_myself_duri()
    r[#r + 1] = KSR.is_myself_nhuri()
    for k, v in ipairs(r) do r[k] = tostring(v) end
    KSR.info(table.concat(r, " "))
end"#,
    )
    .await;
    let inv = i.invoke("ksr_request_route", Some(invite())).await;
    assert_eq!(
        logs(&inv),
        vec![
            "true false false false false false false true false false true true false false false false true true"
        ]
    );
    let over_tcp = received(INVITE, local(), Transport::Tcp);
    let inv = i.invoke("ksr_request_route", Some(over_tcp)).await;
    assert_eq!(
        logs(&inv),
        vec![
            "false true false false false false false false true false false true false true false false true true"
        ]
    );
}

// ---------------------------------------------------------------- pv

/// `$dd`, `$dp` (5060 by default, 5061 for TLS) and `$dP` (udp by
/// default) from `$du`, nil while it is unset; `$rv` from the start line;
/// `$Ts` the current time.
#[tokio::test]
async fn pv_destination_version_and_time() {
    let inv = route(
        r#"function ksr_request_route()
    local g = KSR.pv.get
    say("dd", g("$dd"))
    say("dp", g("$dp"))
    say("dP", g("$dP"))
    KSR.setdsturi("sip:proxy.example.net;transport=TCP")
    say("dd", g("$dd"))
    say("dp", g("$dp"))
    say("dP", g("$dP"))
    KSR.setdsturi("sip:192.0.2.4:5070")
    say("dp", g("$dp"))
    KSR.setdsturi("sips:secure.example.net")
    say("dp", g("$dp"))
    say("rv", g("$rv"))
    say("Ts", math.abs(g("$Ts") - os.time()) < 5)
end"#,
        invite(),
    )
    .await;
    assert_eq!(
        logs(&inv),
        strings(&[
            "dd nil nil",
            "dp nil nil",
            "dP nil nil",
            "dd string proxy.example.net",
            "dp number 5060",
            "dP string TCP",
            "dp number 5070",
            "dp number 5061",
            "rv string SIP/2.0",
            "Ts boolean true",
        ])
    );
    let ringing = sip(
        &[
            "SIP/2.0 200 OK",
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-v",
            "From: <sip:alice@example.com>;tag=a1",
            "To: <sip:bob@example.com>;tag=b2",
            "Call-ID: rv-1@127.0.0.1",
            "CSeq: 1 INVITE",
        ],
        "",
    );
    let inv = route(
        r#"function ksr_request_route() say("rv", KSR.pv.get("$rv")) end"#,
        message(&ringing),
    )
    .await;
    assert_eq!(logs(&inv), vec!["rv string SIP/2.0"]);
}

/// What the script printed with `p(v)`, without the error lines the KSR
/// functions logged.
fn said(inv: &kemibox_sandbox::Invocation) -> Vec<String> {
    logs(inv)
        .into_iter()
        .filter(|l| !l.contains(": KSR."))
        .collect()
}

#[tokio::test]
async fn forward_and_forward_uri_record_a_stateless_forward() {
    let inv = route(
        r#"
local function p(v) KSR.info(tostring(v)) end
function ksr_request_route()
    p(KSR.forward())
    KSR.setdsturi("sip:10.0.0.9:5080")
    p(KSR.forward())
    p(KSR.forward_uri("sip:127.0.0.1:5090;transport=tcp"))
    p(KSR.forward_uri("not a uri"))
end
"#,
        invite(),
    )
    .await;
    assert_eq!(said(&inv), strings(&["1", "1", "1", "-1"]));
    let forwards: Vec<Event> = actions(&inv)
        .into_iter()
        .filter(|e| matches!(e, Event::Forward { .. }))
        .collect();
    assert_eq!(
        forwards,
        vec![
            Event::Forward {
                destination: Some("sip:bob@example.com".into())
            },
            Event::Forward {
                destination: Some("sip:10.0.0.9:5080".into())
            },
            Event::Forward {
                destination: Some("sip:127.0.0.1:5090;transport=tcp".into())
            },
        ]
    );
    assert_eq!(errors(&inv).len(), 1, "{:?}", errors(&inv));
    // Not for a reply.
    let reply = message(&sip(
        &[
            "SIP/2.0 200 OK",
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-r1",
            "From: <sip:a@example.com>;tag=1",
            "To: <sip:b@example.com>;tag=2",
            "Call-ID: r@x",
            "CSeq: 1 INVITE",
        ],
        "",
    ));
    let inv = route("local function p(v) KSR.info(tostring(v)) end function ksr_request_route() p(KSR.forward()) end", reply).await;
    assert_eq!(said(&inv), strings(&["-1"]));
}

#[tokio::test]
async fn append_branch_variants_add_branches_for_t_relay() {
    let inv = route(
        r#"
local function p(v) KSR.info(tostring(v)) end
function ksr_request_route()
    KSR.setdsturi("sip:10.0.0.1")
    p(KSR.corex.append_branch())
    p(KSR.corex.append_branch_uri("sip:carol@10.0.0.2"))
    p(KSR.corex.append_branch_uri_q("sip:dave@10.0.0.3", "0.7"))
    p(KSR.corex.append_branch_uri_q("sip:erin@10.0.0.4", "1.5"))
    p(KSR.corex.append_branch_uri("sip:"))
end
"#,
        invite(),
    )
    .await;
    assert_eq!(said(&inv), strings(&["1", "1", "1", "-1", "-1"]));
    let m = inv.message.as_ref().unwrap();
    let branches: Vec<(&str, Option<&str>, Option<&str>)> = m
        .branches
        .iter()
        .map(|b| (b.uri.as_str(), b.dst_uri.as_deref(), b.q.as_deref()))
        .collect();
    assert_eq!(
        branches,
        vec![
            ("sip:bob@example.com", Some("sip:10.0.0.1"), None),
            ("sip:carol@10.0.0.2", None, None),
            ("sip:dave@10.0.0.3", None, Some("0.7")),
        ]
    );
}

#[tokio::test]
async fn t_set_fr_and_t_is_expired() {
    let inv = route(
        r#"
local function p(v) KSR.info(tostring(v)) end
function ksr_request_route()
    p(KSR.tm.t_set_fr(30000, 2000))
    p(KSR.tm.t_set_fr(-1, 0))
    p(KSR.tm.t_is_expired())
end
"#,
        invite(),
    )
    .await;
    assert_eq!(said(&inv), strings(&["1", "-1", "-1"]));
    let timers = inv.message.as_ref().unwrap().fr_timers;
    assert_eq!(timers.fr_inv, Some(std::time::Duration::from_secs(30)));
    assert_eq!(timers.fr, Some(std::time::Duration::from_secs(2)));
    let mut expired = invite();
    expired.tm.expired = true;
    let inv = route("local function p(v) KSR.info(tostring(v)) end function ksr_request_route() p(KSR.tm.t_is_expired()) end", expired).await;
    assert_eq!(said(&inv), strings(&["1"]));
}

#[tokio::test]
async fn snd_names_the_destination_only_while_sending() {
    let body = r#"
local function p(v) KSR.info(tostring(v)) end
function ksr_request_route()
    p(tostring(KSR.pv.get("$snd(ip)")))
    p(tostring(KSR.pv.get("$snd(port)")))
    p(tostring(KSR.pv.get("$snd(proto)")))
    p(tostring(KSR.pv.get("$snd(af)")))
end
"#;
    let inv = route(body, invite()).await;
    assert_eq!(said(&inv), strings(&["nil", "nil", "nil", "nil"]));
    let mut sending = invite();
    sending.sending_to = Some((Transport::Tcp, "[::1]:5080".parse().unwrap()));
    let inv = route(body, sending).await;
    assert_eq!(said(&inv), strings(&["::1", "5080", "tcp", "ipv6"]));
}

#[tokio::test]
async fn t_suspend_gives_ids_and_t_continue_records_the_resume() {
    let inv = route(
        r#"
local function p(v) KSR.info(tostring(v)) end
function ksr_request_route()
    p(KSR.pv.get("$T(id_index)"))
    p(KSR.tmx.t_suspend())
    p(KSR.tmx.t_suspend())
    p(KSR.pv.get("$T(id_index)") > 0 and KSR.pv.get("$T(id_label)") >= 0)
    p(KSR.tmx.t_continue(7, 99, "resume"))
    p(KSR.tmx.t_continue(-1, 99, "resume"))
    p(KSR.tmx.t_continue(7, 99, ""))
end
"#,
        invite(),
    )
    .await;
    assert_eq!(
        said(&inv),
        strings(&["nil", "1", "-1", "true", "1", "-1", "-1"])
    );
    let (index, label) = inv.message.as_ref().unwrap().tm.suspended.unwrap();
    let actions = actions(&inv);
    assert!(
        actions.contains(&Event::Suspend { index, label }),
        "{actions:?}"
    );
    assert!(
        actions.contains(&Event::Continue {
            index: 7,
            label: 99,
            route: "resume".into()
        }),
        "{actions:?}"
    );
    // A second suspension gets other ids.
    let again = route(
        "function ksr_request_route() KSR.tmx.t_suspend() end",
        invite(),
    )
    .await;
    assert_ne!(again.message.unwrap().tm.suspended, Some((index, label)));
}
