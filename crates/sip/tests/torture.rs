//! RFC 4475 ("SIP Torture Test Messages") against our parser.
//!
//! The messages live in `tests/fixtures/torture/{valid,invalid}/NAME.sip`
//! (see the README there for where each comes from and what a proxy does
//! with it). Valid ones must parse, read back the fields the RFC describes,
//! render byte for byte, and survive the edits a proxy makes. Invalid ones
//! must be refused with a reason, either by the parser or by
//! `SipMessage::validate` (the check the proxy runs before routing, whose
//! reason goes into a `400`), or - where the RFC leaves the decision to
//! the application - we assert exactly what our parser does.

use std::path::PathBuf;

use bytes::Bytes;
use kemibox_sip::{
    Contacts, Edits, Method, NameAddr, Scheme, SipMessage, Uri, Via, build_reply, render,
    stream_frame_len,
};

const VALID: &[&str] = &[
    // 3.1.1 syntactically valid messages
    "wsinv",
    "intmeth",
    "esc01",
    "escnull",
    "esc02",
    "lwsdisp",
    "longreq",
    "dblreq",
    "semiuri",
    "transports",
    "mpart01",
    "unreason",
    "noreason",
    // 3.2.1, 3.3 and 3.4: well formed, the application decides
    "badbranch",
    "unkscm",
    "novelsc",
    "unksm2",
    "bext01",
    "invut",
    "regaut01",
    "bcast",
    "zeromf",
    "cparam01",
    "cparam02",
    "regescrt",
    "sdp01",
    "inv2543",
];

const INVALID: &[&str] = &[
    "badinv01",
    "clerr",
    "ncl",
    "scalar02",
    "scalarlg",
    "quotbal",
    "ltgtruri",
    "lwsruri",
    "lwsstart",
    "trws",
    "escruri",
    "baddate",
    "regbadct",
    "badaspec",
    "baddn",
    "badvers",
    "mismatch01",
    "mismatch02",
    "bigcode",
    "insuf",
    "multi01",
    "mcl01",
];

fn dir(kind: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../tests/fixtures/torture/{kind}"))
}

fn bytes_of(kind: &str, name: &str) -> Vec<u8> {
    let path = dir(kind).join(format!("{name}.sip"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn valid(name: &str) -> SipMessage {
    assert!(VALID.contains(&name), "{name} is not listed as valid");
    SipMessage::parse(bytes_of("valid", name))
        .unwrap_or_else(|e| panic!("{name} must parse: {}", e.reason()))
}

fn invalid(name: &str) -> SipMessage {
    SipMessage::parse(bytes_of("invalid", name))
        .unwrap_or_else(|e| panic!("{name} parses here: {}", e.reason()))
}

fn vias(msg: &SipMessage) -> Vec<Via<'_>> {
    msg.header_elements("Via")
        .map(|v| Via::parse(v).expect("Via entry parses"))
        .collect()
}

fn contacts(msg: &SipMessage) -> Vec<NameAddr<'_>> {
    match msg.contacts().expect("Contact parses") {
        Contacts::List(list) => list,
        Contacts::Star => panic!("unexpected Contact: *"),
    }
}

fn uri(s: &str) -> Uri<'_> {
    Uri::parse(s).unwrap_or_else(|e| panic!("{s}: {}", e.reason()))
}

/// Where the datagram's first message ends (dblreq carries noise after it).
fn message_end(data: &[u8], msg: &SipMessage) -> usize {
    let head = data.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    head + msg.body().len()
}

#[test]
fn fixture_folders_hold_exactly_the_listed_messages() {
    for (kind, names) in [("valid", VALID), ("invalid", INVALID)] {
        let mut on_disk: Vec<String> = std::fs::read_dir(dir(kind))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = names.iter().map(|n| format!("{n}.sip")).collect();
        listed.sort();
        assert_eq!(on_disk, listed, "{kind}/");
    }
}

#[test]
fn valid_messages_parse_validate_and_render_byte_for_byte() {
    for &name in VALID {
        let data = bytes_of("valid", name);
        let msg = valid(name);
        // Every one of them is something a proxy must be able to route or
        // answer: the mandatory headers are usable.
        assert_eq!(msg.validate(), Ok(()), "{name}");
        let out = render(&msg, &Edits::new());
        match name {
            // RFC 4475 3.1.1.8: the INVITE-looking octets after the
            // REGISTER's (empty) body must not be forwarded.
            "dblreq" => assert_eq!(out, &data[..message_end(&data, &msg)], "{name}"),
            // No Content-Length (RFC 2543 style): the renderer adds one so
            // the message can also go over a stream transport.
            "inv2543" => {
                let head = data.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
                let mut expected = data[..head].to_vec();
                expected.extend_from_slice(b"Content-Length: 105\r\n");
                expected.extend_from_slice(&data[head..]);
                assert_eq!(out, expected, "{name}");
            }
            _ => assert_eq!(
                out,
                data,
                "{name}: render without edits changed the bytes:\n{}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
}

#[test]
fn valid_messages_survive_proxy_edits() {
    for &name in VALID {
        let msg = valid(name);
        let mut edits = Edits::new();
        edits.append_header(&msg, "X-Torture: yes").unwrap();
        if msg.is_request() {
            edits.set_ruri("sip:edited@192.0.2.99;lr").unwrap();
            edits
                .add_via(&msg, "SIP/2.0/UDP 192.0.2.99;branch=z9hG4bKtorture")
                .unwrap();
            edits.add_record_route(&msg, "<sip:192.0.2.99;lr>").unwrap();
            edits.set_max_forwards(&msg, 69);
        } else {
            assert!(edits.remove_top_via(&msg), "{name}");
        }
        let out = render(&msg, &edits);
        let again = SipMessage::parse(out.clone()).unwrap_or_else(|e| {
            panic!(
                "{name}: edited render does not parse ({}):\n{}",
                e.reason(),
                String::from_utf8_lossy(&out)
            )
        });
        assert_eq!(again.header("X-Torture"), Some("yes"), "{name}");
        assert_eq!(again.call_id(), msg.call_id(), "{name}");
        assert_eq!(again.cseq(), msg.cseq(), "{name}");
        assert_eq!(again.body(), msg.body(), "{name}");
        assert_eq!(again.content_length(), Some(msg.body().len()), "{name}");
        if msg.is_request() {
            assert_eq!(again.validate(), Ok(()), "{name}");
            assert_eq!(again.ruri(), Some("sip:edited@192.0.2.99;lr"), "{name}");
            assert_eq!(again.via_count(), msg.via_count() + 1, "{name}");
            let top = again.top_via().unwrap();
            assert_eq!(
                (top.host, top.branch()),
                ("192.0.2.99", Some("z9hG4bKtorture")),
                "{name}"
            );
            assert_eq!(again.max_forwards(), Some(69), "{name}");
            assert_eq!(
                again.record_routes().unwrap().first(),
                Some(&"sip:192.0.2.99;lr"),
                "{name}"
            );
        } else {
            assert_eq!(again.via_count(), msg.via_count() - 1, "{name}");
        }
        // Rendering the re-parsed message without edits is stable.
        assert_eq!(render(&again, &Edits::new()), out, "{name}");
    }
}

#[test]
fn valid_messages_frame_on_streams() {
    for &name in VALID {
        let data = bytes_of("valid", name);
        let msg = valid(name);
        match name {
            // No Content-Length: cannot be framed on a stream.
            "inv2543" => assert_eq!(
                stream_frame_len(&data).unwrap_err().reason(),
                "missing Content-Length"
            ),
            _ => assert_eq!(
                stream_frame_len(&data),
                Ok(Some(message_end(&data, &msg))),
                "{name}"
            ),
        }
    }
}

// ---------------------------------------------------------------------
// 3.1.1 valid messages, field by field
// ---------------------------------------------------------------------

#[test]
fn wsinv_short_tortuous_invite() {
    let msg = valid("wsinv");
    assert_eq!(msg.method(), Some(&Method::Invite));
    let ruri = msg.ruri().unwrap();
    assert_eq!(ruri, "sip:vivekg@chair-dnrc.example.com;unknownparam");
    assert_eq!(uri(ruri).param("unknownparam"), Some(None));
    // 14 header lines, with folding, odd case and compact forms.
    assert_eq!(msg.headers().len(), 14);
    let to = msg.to().unwrap();
    assert_eq!(
        (to.uri, to.tag()),
        ("sip:vivekg@chair-dnrc.example.com", Some("1918181833n"))
    );
    let from = msg.from().unwrap();
    assert_eq!(from.display_name.as_deref(), Some(r#"J Rosenberg \""#));
    assert_eq!(
        (from.uri, from.tag()),
        ("sip:jdrosen@example.com", Some("98asjd8"))
    );
    // Leading zeros in integers.
    assert_eq!(msg.max_forwards(), Some(68));
    assert_eq!(msg.cseq(), Some((9, "INVITE")));
    assert_eq!(msg.call_id(), Some("wsinv.ndaksdj@192.0.2.1"));
    assert_eq!(msg.content_length(), Some(150));
    assert_eq!(msg.body().len(), 150);
    assert_eq!(msg.content_type(), Some("application/sdp"));
    // Three Vias: one long-form header folded over three lines and a
    // compact `v:` header with two comma-separated entries.
    assert_eq!(msg.header_count("Via"), 2);
    let v = vias(&msg);
    let seen: Vec<_> = v
        .iter()
        .map(|v| (v.transport, v.host, v.branch().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("UDP", "192.0.2.2", "390skdjuw"),
            ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
            ("UDP", "192.168.255.111", "z9hG4bK30239"),
        ]
    );
    assert_eq!(msg.header("Subject"), Some(""));
    assert_eq!(
        msg.header("NewFangledHeader"),
        Some("newfangled value continued newfangled value")
    );
    assert_eq!(
        msg.header("UnknownHeaderWithUnusualValue"),
        Some(";;,,;;,;")
    );
    assert_eq!(
        msg.routes().unwrap(),
        ["sip:services.example.com;lr;unknownwith=value;unknown-no-value"]
    );
    let contact = contacts(&msg);
    assert_eq!(contact.len(), 1);
    assert_eq!(
        contact[0].display_name.as_deref(),
        Some(r#"Quoted string """#)
    );
    assert_eq!(contact[0].uri, "sip:jdrosen@example.com");
    assert_eq!(contact[0].param("newparam"), Some(Some("newvalue")));
    assert_eq!(contact[0].param("secondparam"), Some(None));
    assert_eq!(contact[0].param("q"), Some(Some("0.33")));
}

#[test]
fn intmeth_wide_range_of_valid_characters() {
    let msg = valid("intmeth");
    let method = "!interesting-Method0123456789_*+`.%indeed'~";
    assert_eq!(msg.method(), Some(&Method::Other(method.into())));
    assert_eq!(msg.cseq(), Some((139_122_385, method)));
    let ruri = uri(msg.ruri().unwrap());
    assert_eq!(
        ruri.user,
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        ruri.password,
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    assert_eq!(ruri.host, "example.com");
    assert_eq!(msg.top_via().unwrap().branch(), Some("z9hG4bK-.!%66*_+`'~"));
    // Quoted-pairs escaping BEL, NUL and DEL in the To display name.
    let to = msg.to().unwrap();
    assert_eq!(
        to.display_name.as_deref(),
        Some("BEL:\u{7} NUL:\u{0} DEL:\u{7f}")
    );
    assert_eq!(
        to.parse_uri().unwrap().user,
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    let from = msg.from().unwrap();
    assert_eq!(
        from.display_name.as_deref(),
        Some("token1~` token2'+_ token3*%!.-")
    );
    assert_eq!(
        from.param("fromParam''~+*_!.-%"),
        Some(Some("\"работающий\""))
    );
    assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
    assert_eq!(
        msg.call_id(),
        Some(r#"intmeth.word%ZK-!.*_+'@word`~)(><:\/"][?}{"#)
    );
    assert_eq!(msg.max_forwards(), Some(255));
    assert_eq!(
        msg.header("extensionHeader-!.%*+_`'~"),
        Some("\u{feff}大停電")
    );
    assert_eq!(msg.content_length(), Some(0));
}

#[test]
fn esc01_percent_escapes_are_kept_as_received() {
    let msg = valid("esc01");
    let ruri = uri(msg.ruri().unwrap());
    assert_eq!(
        (ruri.user, ruri.host),
        (Some("sips%3Auser%40example.com"), "example.net")
    );
    assert_eq!(
        msg.to().unwrap().parse_uri().unwrap().user,
        Some("%75se%72")
    );
    let from = msg.from().unwrap();
    assert_eq!(from.display_name, None);
    assert_eq!(from.parse_uri().unwrap().user, Some("I%20have%20spaces"));
    assert_eq!(from.tag(), Some("938"));
    // Compact `i:` and `C:` (Content-Type).
    assert_eq!(msg.call_id(), Some("esc01.239409asdfakjkn23onasd0-3234"));
    assert_eq!(msg.content_type(), Some("application/sdp"));
    let contact = contacts(&msg);
    let curi = contact[0].parse_uri().unwrap();
    assert_eq!(curi.user, Some("cal%6Cer"));
    assert_eq!(curi.param("%6C%72"), Some(None));
    // Not unescaped, and certainly not twice (RFC 3986).
    assert_eq!(curi.param("n%61me"), Some(Some("v%61lue%25%34%31")));
    assert_eq!(msg.body().len(), 150);
}

#[test]
fn escnull_escaped_nulls_in_uris() {
    let msg = valid("escnull");
    assert_eq!(msg.method(), Some(&Method::Register));
    assert_eq!(
        msg.to().unwrap().parse_uri().unwrap().user,
        Some("null-%00-null")
    );
    let users: Vec<_> = contacts(&msg)
        .iter()
        .map(|c| c.parse_uri().unwrap().user.unwrap())
        .collect();
    // Two distinct contacts: the %00 must not shorten anything.
    assert_eq!(users, ["%00", "%00%00"]);
    assert_eq!(msg.content_length(), Some(0));
}

#[test]
fn esc02_percent_is_not_an_escape_outside_uris() {
    let msg = valid("esc02");
    // An unknown method, not REGISTER.
    assert_eq!(msg.method(), Some(&Method::Other("RE%47IST%45R".into())));
    assert_eq!(msg.cseq(), Some((29344, "RE%47IST%45R")));
    assert_eq!(msg.to().unwrap().display_name.as_deref(), Some("%Z%45"));
    assert_eq!(
        msg.top_via().unwrap().branch(),
        Some("z9hG4bK209%fzsnel234")
    );
    // Two Contacts; `C%6Fntact` is another header.
    assert_eq!(msg.header_count("Contact"), 2);
    let hosts: Vec<_> = contacts(&msg).iter().map(|c| c.uri).collect();
    assert_eq!(
        hosts,
        [
            "sip:alias1@host1.example.com",
            "sip:alias3@host3.example.com"
        ]
    );
    assert_eq!(
        msg.header("C%6Fntact"),
        Some("<sip:alias2@host2.example.com>")
    );
}

#[test]
fn lwsdisp_no_space_before_angle_bracket() {
    let msg = valid("lwsdisp");
    let from = msg.from().unwrap();
    assert_eq!(from.display_name.as_deref(), Some("caller"));
    assert_eq!(
        (from.uri, from.tag()),
        ("sip:caller@example.com", Some("323"))
    );
}

#[test]
fn longreq_long_values_and_34_vias() {
    let msg = valid("longreq");
    let to = msg.to().unwrap();
    let display = format!("I have a user name of {} proportion", "extreme".repeat(10));
    assert_eq!(to.display_name.as_deref(), Some(display.as_str()));
    let turi = to.parse_uri().unwrap();
    assert_eq!((turi.host, turi.port), ("example.com", Some(6000)));
    assert_eq!(turi.params.len(), 3);
    let long_value = format!("very{}value", "long".repeat(20));
    assert_eq!(turi.param("unknownparam1"), Some(Some(long_value.as_str())));
    let tag = format!("12{}424", "982".repeat(50));
    let from = msg.from().unwrap();
    assert_eq!(from.tag(), Some(tag.as_str()));
    assert_eq!(from.params.len(), 3);
    let call_id = format!("longreq.one{}longcallid", "really".repeat(20));
    assert_eq!(msg.call_id(), Some(call_id.as_str()));
    assert_eq!(msg.cseq(), Some((3_882_340, "INVITE")));
    // Via, v, V, ViA, `V  :` ...: 34 headers, one entry each.
    assert_eq!(msg.header_count("Via"), 34);
    let v = vias(&msg);
    assert_eq!(v.len(), 34);
    for (i, via) in v.iter().take(33).enumerate() {
        assert_eq!(via.host, format!("sip{}.example.com", 33 - i));
        assert_eq!(via.branch(), None);
    }
    let last = &v[33];
    let branch = format!("very{}branchvalue", "long".repeat(50));
    assert_eq!(
        (last.host, last.received(), last.branch()),
        ("host.example.com", Some("192.0.2.5"), Some(branch.as_str()))
    );
    assert_eq!(
        contacts(&msg)[0].parse_uri().unwrap().user,
        Some("amazinglylongcallername".repeat(5).as_str())
    );
    assert_eq!(msg.content_length(), Some(150));
}

#[test]
fn dblreq_extra_octets_after_the_body_are_ignored() {
    let data = bytes_of("valid", "dblreq");
    let msg = valid("dblreq");
    assert_eq!(msg.method(), Some(&Method::Register));
    assert_eq!(
        msg.call_id(),
        Some("dblreq.0ha0isndaksdj99sdfafnl3lk233412")
    );
    assert_eq!(msg.content_length(), Some(0));
    assert!(msg.body().is_empty());
    // The INVITE is in the datagram, but not in what we forward.
    assert!(msg.raw().windows(6).any(|w| w == b"INVITE"));
    assert!(
        !render(&msg, &Edits::new())
            .windows(6)
            .any(|w| w == b"INVITE")
    );
    assert!(message_end(&data, &msg) < data.len());
}

#[test]
fn semiuri_semicolon_in_the_user_part() {
    let msg = valid("semiuri");
    let ruri = uri(msg.ruri().unwrap());
    assert_eq!(
        (ruri.user, ruri.host),
        (Some("user;par=u%40example.net"), "example.com")
    );
    assert!(ruri.params.is_empty());
    // Accept folded over three lines.
    assert_eq!(msg.header_elements("Accept").count(), 6);
}

#[test]
fn transports_all_known_and_an_unknown_transport() {
    let msg = valid("transports");
    let t: Vec<_> = vias(&msg).iter().map(|v| v.transport).collect();
    assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
    assert_eq!(msg.call_id(), Some("transports.kijh4akdnaqjkwendsasfdj"));
}

#[test]
fn mpart01_binary_multipart_body_is_framed_by_content_length() {
    let msg = valid("mpart01");
    assert_eq!(msg.method(), Some(&Method::Message));
    assert_eq!(msg.content_length(), Some(553));
    assert_eq!(msg.body().len(), 553);
    assert!(msg.body().contains(&0), "the S/MIME part contains NULs");
    assert!(msg.body().ends_with(b"--7a9cbec02ceef655--\r\n"));
    assert_eq!(
        msg.content_type(),
        Some("multipart/mixed;boundary=7a9cbec02ceef655")
    );
    let via = msg.top_via().unwrap();
    assert_eq!((via.port, via.rport()), (Some(5070), Some(None)));
}

#[test]
fn unreason_utf8_reason_phrase() {
    let msg = valid("unreason");
    assert_eq!(msg.status(), Some(200));
    assert_eq!(
        msg.reason(),
        Some("= 2**3 * 5**2 но сто девяносто девять - простое")
    );
    assert_eq!(msg.method_str(), "INVITE");
    assert_eq!(msg.body().len(), 154);
}

#[test]
fn noreason_empty_reason_phrase() {
    let msg = valid("noreason");
    assert_eq!((msg.status(), msg.reason()), (Some(100), Some("")));
}

// ---------------------------------------------------------------------
// 3.2 / 3.3 / 3.4: well-formed messages whose handling is up to the
// application; the parser must hand it what it needs to decide.
// ---------------------------------------------------------------------

#[test]
fn application_layer_messages_expose_what_the_application_needs() {
    // 3.2.1: the magic cookie and nothing else.
    assert_eq!(
        valid("badbranch").top_via().unwrap().branch(),
        Some("z9hG4bK")
    );
    // 3.3.2, 3.3.3: unknown schemes in the Request-URI (a proxy answers
    // 416 Unsupported URI Scheme).
    let msg = valid("unkscm");
    let ruri = uri(msg.ruri().unwrap());
    assert_eq!(ruri.scheme_kind(), Scheme::Other);
    assert_eq!(ruri.user, Some("totallyopaquecontent"));
    let msg = valid("novelsc");
    let ruri = uri(msg.ruri().unwrap());
    assert_eq!(
        (ruri.scheme, ruri.scheme_kind()),
        ("soap.beep", Scheme::Other)
    );
    // 3.3.4: unknown schemes in To, From and Contact.
    let msg = valid("unksm2");
    assert_eq!(
        msg.to().unwrap().parse_uri().unwrap().scheme_kind(),
        Scheme::Other
    );
    assert_eq!(msg.from().unwrap().uri, "http://www.example.com");
    assert_eq!(contacts(&msg)[0].uri, "name:John_Smith");
    // 3.3.5: extensions nobody supports (a proxy answers 420).
    let msg = valid("bext01");
    assert_eq!(
        msg.header_elements("Proxy-Require").collect::<Vec<_>>(),
        ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]
    );
    assert_eq!(msg.header_elements("Require").count(), 2);
    // 3.3.6: unknown body type (forwarded; a UAS answers 415).
    let msg = valid("invut");
    assert_eq!(msg.content_type(), Some("application/unknownformat"));
    assert_eq!(msg.body().len(), 40);
    // 3.3.7: unknown authorization scheme.
    assert_eq!(
        valid("regaut01").header("Authorization"),
        Some("NoOneKnowsThisScheme opaque-data=here")
    );
    // 3.3.10: a broadcast sent-by in the second Via (a proxy must not
    // send the response there).
    let msg = valid("bcast");
    assert_eq!(vias(&msg)[1].host, "255.255.255.255");
    // 3.3.11: Max-Forwards 0 (a proxy answers 483).
    assert_eq!(valid("zeromf").max_forwards(), Some(0));
    // 3.3.12 vs 3.3.13: the same text, once a header parameter, once a
    // URI parameter.
    let msg = valid("cparam01");
    let c = &contacts(&msg)[0];
    assert_eq!(c.uri, "sip:+19725552222@gw1.example.net");
    assert_eq!(c.param("unknownparam"), Some(None));
    let msg = valid("cparam02");
    let c = &contacts(&msg)[0];
    assert_eq!(c.uri, "sip:+19725552222@gw1.example.net;unknownparam");
    assert_eq!(c.param("unknownparam"), None);
    assert_eq!(c.parse_uri().unwrap().param("unknownparam"), Some(None));
    // 3.3.14: an escaped Route header inside a Contact URI (compact `M:`).
    let msg = valid("regescrt");
    let curi = contacts(&msg)[0].parse_uri().unwrap();
    assert_eq!(
        curi.headers.get("Route"),
        Some(Some("%3Csip:sip.example.com%3E"))
    );
    // 3.3.15: Accept without the type of the body.
    let msg = valid("sdp01");
    assert_eq!(msg.header("Accept"), Some("text/nobodyKnowsThis"));
    assert_eq!(msg.content_type(), Some("application/sdp"));
    // 3.4.1: RFC 2543 request: no branch, no Max-Forwards, no
    // Content-Length (the body runs to the end of the datagram).
    let msg = valid("inv2543");
    assert_eq!(msg.top_via().unwrap().branch(), None);
    assert_eq!(msg.max_forwards(), None);
    assert_eq!(msg.content_length(), None);
    assert_eq!(msg.body().len(), 105);
    assert_eq!(msg.from().unwrap().tag(), None);
}

// ---------------------------------------------------------------------
// 3.1.2 invalid messages (and the invalid ones of 3.3)
// ---------------------------------------------------------------------

/// What our parser does with an invalid message.
enum Outcome {
    /// `SipMessage::parse` refuses it with this reason: the proxy has no
    /// message to answer, it drops the datagram.
    Parse(&'static str),
    /// It parses, `validate()` refuses it with this reason: the proxy
    /// answers `400 <reason>` (or drops it, for a response).
    Validate(&'static str),
    /// Accepted: the RFC allows a liberal element to take it (or the
    /// problem is for the application); see the dedicated test.
    Accepted,
}

const INVALID_OUTCOMES: &[(&str, Outcome)] = &[
    ("badinv01", Outcome::Validate("invalid Via header")),
    ("clerr", Outcome::Parse("Content-Length larger than body")),
    ("ncl", Outcome::Parse("invalid Content-Length")),
    ("scalar02", Outcome::Validate("invalid CSeq header")),
    ("scalarlg", Outcome::Validate("invalid CSeq header")),
    ("quotbal", Outcome::Validate("invalid To header")),
    ("ltgtruri", Outcome::Validate("invalid Request-URI")),
    ("lwsruri", Outcome::Parse("invalid request line")),
    ("lwsstart", Outcome::Parse("invalid request line")),
    ("trws", Outcome::Parse("invalid request line")),
    ("escruri", Outcome::Validate("invalid Request-URI")),
    ("baddate", Outcome::Accepted),
    ("regbadct", Outcome::Accepted),
    ("badaspec", Outcome::Accepted),
    ("baddn", Outcome::Validate("invalid From header")),
    ("badvers", Outcome::Parse("unsupported SIP version")),
    (
        "mismatch01",
        Outcome::Validate("CSeq method does not match request method"),
    ),
    (
        "mismatch02",
        Outcome::Validate("CSeq method does not match request method"),
    ),
    ("bigcode", Outcome::Parse("invalid status code")),
    ("insuf", Outcome::Validate("missing From header")),
    ("multi01", Outcome::Validate("duplicate From header")),
    (
        "mcl01",
        Outcome::Parse("conflicting Content-Length headers"),
    ),
];

#[test]
fn invalid_messages_are_refused_with_a_reason() {
    assert_eq!(INVALID_OUTCOMES.len(), INVALID.len());
    for (name, outcome) in INVALID_OUTCOMES {
        assert!(INVALID.contains(name), "{name}");
        let data = bytes_of("invalid", name);
        let parsed = SipMessage::parse(data.clone());
        match outcome {
            Outcome::Parse(reason) => {
                let err = parsed.expect_err(name);
                assert_eq!(err.reason(), *reason, "{name}");
            }
            Outcome::Validate(reason) => {
                let msg = parsed.unwrap_or_else(|e| panic!("{name}: {}", e.reason()));
                assert_eq!(msg.validate().unwrap_err().reason(), *reason, "{name}");
                // Still renderable as received (for logging or a capture).
                assert_eq!(render(&msg, &Edits::new()), data, "{name}");
                if msg.is_request() {
                    // The proxy can always answer it.
                    let reply = build_reply(&msg, 400, reason, Some("t0"), None, &[]).unwrap();
                    let reply = SipMessage::parse(reply).unwrap();
                    assert_eq!(reply.status(), Some(400), "{name}");
                    assert_eq!(reply.reason(), Some(*reason), "{name}");
                }
            }
            Outcome::Accepted => {
                let msg = parsed.unwrap_or_else(|e| panic!("{name}: {}", e.reason()));
                assert_eq!(msg.validate(), Ok(()), "{name}");
                assert_eq!(render(&msg, &Edits::new()), data, "{name}");
            }
        }
    }
}

#[test]
fn accepted_invalid_messages_read_as_documented() {
    // 3.1.2.12: a non-GMT Date. A proxy does not interpret Date: the
    // header is carried untouched.
    let msg = invalid("baddate");
    assert_eq!(msg.header("Date"), Some("Fri, 01 Jan 2010 16:00:00 EST"));
    // 3.1.2.13: a Contact addr-spec with an escaped header and no <>.
    // Unambiguous here, so we take it; a registrar decides what to do
    // with a binding that carries URI headers.
    let msg = invalid("regbadct");
    let c = &contacts(&msg)[0];
    assert_eq!(
        c.uri,
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E"
    );
    assert_eq!(
        c.parse_uri().unwrap().headers.get("Route"),
        Some(Some("%3Csip:sip.example.com%3E"))
    );
    // 3.1.2.14: spaces inside <> around the To URI: ignored, as the RFC
    // allows a liberal element to do.
    let msg = invalid("badaspec");
    let to = msg.to().unwrap();
    assert_eq!(to.display_name.as_deref(), Some("Watson, Thomas"));
    assert_eq!(to.uri, "sip:t.watson@example.org");
    // 3.1.2.4: besides the CSeq, Max-Forwards > 255 and huge expiry values.
    let msg = invalid("scalar02");
    assert_eq!(msg.cseq(), None);
    assert_eq!(msg.max_forwards(), Some(300));
    assert_eq!(msg.expires(), None);
    // 3.1.2.2 over a stream: wait for the rest of the body.
    let clerr = bytes_of("invalid", "clerr");
    let head = clerr.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(stream_frame_len(&clerr), Ok(Some(head + 9999)));
    // 3.1.2.3 and 3.3.9 over a stream: unrecoverable framing errors.
    for (name, reason) in [
        ("ncl", "invalid Content-Length"),
        ("mcl01", "conflicting Content-Length headers"),
    ] {
        let data = bytes_of("invalid", name);
        assert_eq!(stream_frame_len(&data).unwrap_err().reason(), reason);
    }
    // 3.3.8: every duplicated header is reported by header_count.
    let msg = invalid("multi01");
    for name in ["From", "To", "Call-ID", "CSeq", "Max-Forwards", "Contact"] {
        assert_eq!(msg.header_count(name), 2, "{name}");
    }
}

// ---------------------------------------------------------------------
// Regression tests for the parser fixes the torture messages exposed
// ---------------------------------------------------------------------

fn options_with(header: &[u8]) -> Vec<u8> {
    let mut m = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n".to_vec();
    m.extend_from_slice(header);
    m.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    m
}

#[test]
fn control_characters_only_as_quoted_pairs() {
    // intmeth: a quoted-pair may escape any octet but CR and LF.
    for ok in [
        &b"To: \"a\\\x00b\" <sip:a@b>"[..],
        b"To: \"\\\x07\\\x7f\\\x1b\" <sip:a@b>",
        // A quoted string continued over a folded line.
        b"To: \"a\r\n b\\\x00\" <sip:a@b>",
    ] {
        let msg = SipMessage::parse(options_with(ok)).unwrap();
        assert!(msg.to().is_some(), "{}", String::from_utf8_lossy(ok));
    }
    for bad in [
        // Unescaped, inside or outside quotes.
        &b"To: \"a\x00b\" <sip:a@b>"[..],
        b"To: a\x07 <sip:a@b>",
        // Escaped, but outside a quoted string.
        b"To: a\\\x00 <sip:a@b>",
        b"To: \"a\" \\\x00 <sip:a@b>",
        // CR cannot be escaped.
        b"To: \"a\\\rb\" <sip:a@b>",
    ] {
        assert_eq!(
            SipMessage::parse(options_with(bad)).unwrap_err().reason(),
            "invalid control character",
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

fn request(ruri: &str, extra: &str) -> SipMessage {
    let text = format!(
        "OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
         From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    );
    SipMessage::parse(Bytes::from(text)).unwrap()
}

#[test]
fn validate_refuses_request_uri_headers_for_sip_only() {
    assert_eq!(request("sip:a@b", "").validate(), Ok(()));
    for bad in ["sip:a@b?Route=%3Csip:x%3E", "sips:a@b;lr?x=y"] {
        assert_eq!(
            request(bad, "").validate().unwrap_err().reason(),
            "invalid Request-URI"
        );
    }
    // Other schemes are opaque to us (a proxy answers 416 for those).
    assert_eq!(request("http://example.com/a?b=c", "").validate(), Ok(()));
}

#[test]
fn validate_refuses_duplicated_single_headers() {
    for (extra, reason) in [
        ("From: <sip:x@y>;tag=2\r\n", "duplicate From header"),
        ("t: <sip:x@y>\r\n", "duplicate To header"),
        ("i: y\r\n", "duplicate Call-ID header"),
        ("CSeq: 2 OPTIONS\r\n", "duplicate CSeq header"),
        (
            "Max-Forwards: 70\r\nMax-Forwards: 69\r\n",
            "duplicate Max-Forwards header",
        ),
    ] {
        assert_eq!(
            request("sip:a@b", extra).validate().unwrap_err().reason(),
            reason
        );
    }
    // Headers that may repeat do not count.
    let ok = "Contact: <sip:x@y>\r\nContact: <sip:z@y>\r\nVia: SIP/2.0/UDP g;branch=z9hG4bK2\r\n";
    assert_eq!(request("sip:a@b", ok).validate(), Ok(()));
}

#[test]
fn unquoted_display_names_are_tokens() {
    for ok in [
        "A. Bell <sip:a@b>",
        "token1~` token2'+_ token3*%!.- <sip:a@b>",
        "caller<sip:a@b>",
        "\"Bell, Alexander\" <sip:a@b>",
        // Not a token, but sent by phones and harmless: UTF-8 letters.
        "Jörg <sip:a@b>",
    ] {
        assert!(NameAddr::parse(ok).is_ok(), "{ok}");
    }
    for bad in ["Bell, Alexander <sip:a@b>", "a@b <sip:a@b>"] {
        assert_eq!(
            NameAddr::parse(bad).unwrap_err().reason(),
            "invalid display name",
            "{bad}"
        );
    }
}
