//! `KSR.nathelper` against Kamailio's documented nathelper semantics: real
//! Lua scripts run in the sandbox on SIP messages from a UA behind NAT
//! (private Contact, Via and SDP 192.168.1.10:5060, sent from the NAT's
//! public 203.0.113.7:40000 over UDP), and each test checks the return
//! codes, the message as it would be forwarded, the R-URI and `$du`.

mod common;

use std::net::SocketAddr;

use common::ksr::*;
use common::*;
use kemibox_kemi::{Message, Services, Transport};
use kemibox_sandbox::Tenant;
use kemibox_sip::SipMessage;

/// The NAT's public address the UA's messages come from.
fn nat() -> SocketAddr {
    "203.0.113.7:40000".parse().unwrap()
}

/// `text` received from `source` over UDP on our socket.
fn from(text: &str, source: SocketAddr) -> Message {
    let parsed = SipMessage::parse(text.as_bytes().to_vec()).expect("test message parses");
    Message::new(parsed, source, local(), Transport::Udp)
}

const PRIVATE_SDP: &str = "v=0\r\no=alice 1 1 IN IP4 192.168.1.10\r\ns=-\r\nc=IN IP4 192.168.1.10\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";

/// An INVITE from the UA at `host:port` (Via, Contact and SDP), with
/// `contact` as its Contact header value and `ruri` as R-URI.
fn invite(ruri: &str, host: &str, port: u16, contact: &str) -> String {
    let sdp = PRIVATE_SDP.replace("192.168.1.10", host);
    sip(
        &[
            &format!("INVITE {ruri} SIP/2.0"),
            &format!("Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-nat1;rport"),
            "Max-Forwards: 70",
            "From: <sip:alice@example.com>;tag=a1",
            "To: <sip:bob@example.com>",
            "Call-ID: nat-1@example.com",
            "CSeq: 1 INVITE",
            &format!("Contact: {contact}"),
            "Content-Type: application/sdp",
        ],
        &sdp,
    )
}

/// The INVITE of a UA behind NAT, as it arrives from the NAT.
fn natted_invite() -> Message {
    from(
        &invite(
            "sip:bob@example.com",
            "192.168.1.10",
            5060,
            "\"Alice\" <sip:alice@192.168.1.10:5060;transport=udp>;+sip.instance=\"<urn:x>\", <sip:alice@192.168.1.10:5062>",
        ),
        nat(),
    )
}

/// The same UA on a public address, sent from where it says.
fn direct_invite() -> Message {
    from(
        &invite(
            "sip:bob@example.com",
            "203.0.113.7",
            40000,
            "<sip:alice@203.0.113.7:40000>",
        ),
        nat(),
    )
}

/// What the script said: its log lines without the error lines of the
/// KSR functions (checked with `errors` where they matter).
fn said(inv: &kemibox_sandbox::Invocation) -> Vec<String> {
    let errors = errors(inv);
    logs(inv)
        .into_iter()
        .filter(|l| !errors.contains(l))
        .collect()
}

/// The Contact header lines of the forwarded message.
fn forwarded_contacts(inv: &kemibox_sandbox::Invocation) -> Vec<String> {
    forwarded(inv)
        .lines()
        .filter(|l| l.starts_with("Contact:"))
        .map(str::to_string)
        .collect()
}

const TESTS: &str = r#"
function ksr_request_route()
    for _, bit in ipairs({1, 2, 4, 8, 16, 32, 64, 128, 256}) do
        say(tostring(bit), KSR.nathelper.nat_uac_test(bit))
    end
    say("all", KSR.nathelper.nat_uac_test(511))
    say("none", KSR.nathelper.nat_uac_test(0))
    return 1
end
"#;

/// Each `nat_uac_test` bit on its own: the NATed UA trips every test but
/// 32 (the source itself is public) and 64 (no WebSocket).
#[tokio::test]
async fn nat_uac_test_bits_on_a_natted_invite() {
    let inv = route(TESTS, natted_invite()).await;
    assert_eq!(
        said(&inv),
        [
            "1 number 1",
            "2 number 1",
            "4 number 1",
            "8 number 1",
            "16 number 1",
            "32 number -1",
            "64 number -1",
            "128 number 1",
            "256 number 1",
            "all number 1",
            "none number -1",
        ]
    );
}

/// A UA on a public address, sending from where its Contact, Via and SDP
/// say: no test finds NAT.
#[tokio::test]
async fn nat_uac_test_passes_a_direct_ua() {
    let inv = route(TESTS, direct_invite()).await;
    let logs = said(&inv);
    assert!(logs.iter().all(|l| l.ends_with(" -1")), "{logs:?}");
}

/// A private source trips 32 only among the tests that agree otherwise.
#[tokio::test]
async fn nat_uac_test_32_is_a_private_source() {
    let text = invite(
        "sip:bob@example.com",
        "10.0.0.8",
        5060,
        "<sip:alice@10.0.0.8:5060>",
    );
    let inv = route(TESTS, from(&text, "10.0.0.8:5060".parse().unwrap())).await;
    let logs = said(&inv);
    assert_eq!(logs[5], "32 number 1");
    assert_eq!(logs[1], "2 number -1");
    assert_eq!(logs[4], "16 number -1");
    assert_eq!(logs[7], "128 number -1");
    assert_eq!(logs[8], "256 number -1");
}

const FIX: &str = r#"
function ksr_request_route()
    say("fix", KSR.nathelper.fix_nated_contact())
    say("again", KSR.nathelper.fix_nated_contact())
    return 1
end
"#;

/// `fix_nated_contact` puts the source into the first Contact URI only,
/// keeping its user, parameters, display name, header parameters and the
/// other contacts; the Contact can be rewritten once.
#[tokio::test]
async fn fix_nated_contact_rewrites_the_first_contact() {
    let inv = route(FIX, natted_invite()).await;
    assert_eq!(said(&inv), ["fix number 1", "again number -1"]);
    assert_eq!(
        errors(&inv),
        [
            "modules.lua:8: KSR.nathelper.fix_nated_contact: the first Contact header was removed or rewritten already"
        ]
    );
    assert_eq!(
        forwarded_contacts(&inv),
        [
            "Contact: \"Alice\" <sip:alice@203.0.113.7:40000;transport=udp>;+sip.instance=\"<urn:x>\", <sip:alice@192.168.1.10:5062>"
        ]
    );
    // The Contact stays where it was, right after CSeq.
    assert!(forwarded(&inv).contains("CSeq: 1 INVITE\r\nContact: \"Alice\""));
}

/// Without a Contact there is nothing to fix: -1.
#[tokio::test]
async fn fix_nated_contact_without_contact_fails() {
    let text =
        invite("sip:bob@example.com", "192.168.1.10", 5060, "x").replace("Contact: x\r\n", "");
    let inv = route(FIX, from(&text, nat())).await;
    assert_eq!(said(&inv)[0], "fix number -1");
}

const ALIAS: &str = r#"
function ksr_request_route()
    if KSR.hdr.is_present("X-Addr") > 0 then
        say("addr", KSR.nathelper.add_contact_alias_addr("10.1.1.1", "5070", "tcp"))
        say("bad", KSR.nathelper.add_contact_alias_addr("10.1.1.1", "5070", "pigeon"))
        return 1
    end
    say("add", KSR.nathelper.add_contact_alias())
    say("set", KSR.nathelper.set_contact_alias())
    return 1
end
"#;

/// `add_contact_alias` tags the NATed Contact with the source
/// (`IP~PORT~1` for UDP); a second attempt finds it rewritten already.
#[tokio::test]
async fn contact_alias_names_the_source() {
    let inv = route(ALIAS, natted_invite()).await;
    assert_eq!(said(&inv), ["add number 1", "set number -1"]);
    assert_eq!(
        forwarded_contacts(&inv),
        [
            "Contact: \"Alice\" <sip:alice@192.168.1.10:5060;transport=udp;alias=203.0.113.7~40000~1>;+sip.instance=\"<urn:x>\", <sip:alice@192.168.1.10:5062>"
        ]
    );
}

/// A Contact that already is the source gets no alias: `add_contact_alias`
/// says 2, `set_contact_alias` 1, the message is unchanged.
#[tokio::test]
async fn contact_alias_not_needed_for_a_direct_ua() {
    let inv = route(ALIAS, direct_invite()).await;
    assert_eq!(said(&inv), ["add number 2", "set number 1"]);
    assert_eq!(
        forwarded_contacts(&inv),
        ["Contact: <sip:alice@203.0.113.7:40000>"]
    );
}

/// `set_contact_alias` works on replies too (the 200 OK of a UA behind
/// NAT), and `add_contact_alias_addr` takes the address from the script.
#[tokio::test]
async fn contact_alias_on_a_reply_and_from_given_address() {
    let reply = sip(
        &[
            "SIP/2.0 200 OK",
            "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-nat2",
            "From: <sip:alice@example.com>;tag=a1",
            "To: <sip:bob@example.com>;tag=b1",
            "Call-ID: nat-2@example.com",
            "CSeq: 1 INVITE",
            "m: <sip:bob@192.168.7.20>",
        ],
        "",
    );
    let script = r#"
function ksr_request_route()
    say("set", KSR.nathelper.set_contact_alias())
    return 1
end
"#;
    let inv = route(script, from(&reply, nat())).await;
    assert_eq!(said(&inv), ["set number 1"]);
    assert!(
        forwarded(&inv).contains("\r\nm: <sip:bob@192.168.7.20;alias=203.0.113.7~40000~1>\r\n"),
        "{}",
        forwarded(&inv)
    );

    let text = invite(
        "sip:bob@example.com",
        "192.168.1.10",
        5060,
        "<sip:alice@192.168.1.10>",
    )
    .replace("CSeq: 1 INVITE\r\n", "CSeq: 1 INVITE\r\nX-Addr: yes\r\n");
    let inv = route(ALIAS, from(&text, nat())).await;
    assert_eq!(said(&inv), ["addr number 1", "bad number -1"]);
    assert_eq!(
        forwarded_contacts(&inv),
        ["Contact: <sip:alice@192.168.1.10;alias=10.1.1.1~5070~2>"]
    );
}

const HANDLE: &str = r#"
function ksr_request_route()
    say("rc", KSR.nathelper.handle_ruri_alias())
    say("ru", KSR.pv.get("$ru"))
    say("du", KSR.pv.get("$du"))
    return 1
end
"#;

/// An in-dialog request to an aliased Contact: `handle_ruri_alias` takes
/// the alias out of the R-URI and sends to its address.
#[tokio::test]
async fn handle_ruri_alias_routes_to_the_alias() {
    let ruri = "sip:alice@192.168.1.10:5060;alias=203.0.113.7~40000~2;foo=bar";
    let text = invite(ruri, "127.0.0.1", 5070, "<sip:bob@127.0.0.1:5070>");
    let inv = route(HANDLE, from(&text, source())).await;
    assert_eq!(
        said(&inv),
        [
            "rc number 1",
            "ru string sip:alice@192.168.1.10:5060;foo=bar",
            "du string sip:203.0.113.7:40000;transport=tcp",
        ]
    );
    assert!(forwarded(&inv).starts_with("INVITE sip:alice@192.168.1.10:5060;foo=bar SIP/2.0\r\n"));

    let v6 = "sip:alice@[fd00::10];alias=[2001:db8::7]~5062~1";
    let text = invite(v6, "127.0.0.1", 5070, "<sip:bob@127.0.0.1:5070>");
    let inv = route(HANDLE, from(&text, source())).await;
    assert_eq!(
        said(&inv)[1..],
        [
            "ru string sip:alice@[fd00::10]",
            "du string sip:[2001:db8::7]:5062;transport=udp",
        ]
    );
}

/// No alias parameter: 2 and nothing changes; an alias that is not
/// `IP~PORT~PROTO`: -1 and nothing changes.
#[tokio::test]
async fn handle_ruri_alias_without_or_with_a_bad_alias() {
    for (ruri, rc) in [
        ("sip:alice@192.168.1.10:5060", 2),
        ("sip:alice@192.168.1.10;alias=host~5060~1", -1),
        ("sip:alice@192.168.1.10;alias=10.0.0.1~5060~9", -1),
        ("sip:alice@192.168.1.10;alias=10.0.0.1~5060", -1),
    ] {
        let text = invite(ruri, "127.0.0.1", 5070, "<sip:bob@127.0.0.1:5070>");
        let inv = route(HANDLE, from(&text, source())).await;
        assert_eq!(
            said(&inv)[..],
            [
                format!("rc number {rc}"),
                format!("ru string {ruri}"),
                "du nil nil".to_string(),
            ],
            "{ruri}"
        );
    }
}

const REGISTRAR: &str = r#"
function ksr_request_route()
    if KSR.pv.get("$rm") == "REGISTER" then
        if KSR.hdr.is_present("X-Fix") > 0 then
            say("fix", KSR.nathelper.fix_nated_register())
        end
        return KSR.registrar.save("location", 0)
    end
    local rc = KSR.registrar.lookup("location")
    say("du", KSR.pv.get("$du"))
    return rc
end
"#;

/// A REGISTER from the NAT whose Contact is a public address elsewhere and
/// whose Via is the source does not look behind NAT, so the registrar keeps
/// no received address; after `fix_nated_register` it does, and calls to
/// the user go to the source (`$du`).
#[tokio::test]
async fn fix_nated_register_makes_lookup_use_the_source() {
    for (fix, du) in [
        (false, "du nil nil"),
        (true, "du string sip:203.0.113.7:40000;transport=udp"),
    ] {
        let mut spec = spec("nat", &format!("{SAY}{REGISTRAR}"));
        spec.services = Services::in_memory();
        let (_, mut instance) = Tenant::load(&runtime(), spec).await.expect("script loads");
        instance.ctx().record_logs = true;
        let mut lines = vec![
            "REGISTER sip:example.com SIP/2.0",
            "Via: SIP/2.0/UDP 203.0.113.7:40000;branch=z9hG4bK-reg1",
            "Max-Forwards: 70",
            "From: <sip:alice@example.com>;tag=r1",
            "To: <sip:alice@example.com>",
            "Call-ID: nat-reg@example.com",
            "CSeq: 1 REGISTER",
            "Contact: <sip:alice@198.51.100.20:5060>",
            "Expires: 600",
        ];
        if fix {
            lines.push("X-Fix: yes");
        }
        let register = from(&sip(&lines, ""), nat());
        let inv = instance.invoke("ksr_request_route", Some(register)).await;
        assert_eq!(ret(&inv), 1);
        assert_eq!(said(&inv), if fix { vec!["fix number 1"] } else { vec![] });

        let call = from(
            &invite(
                "sip:alice@example.com",
                "127.0.0.1",
                5070,
                "<sip:bob@127.0.0.1:5070>",
            ),
            source(),
        );
        let inv = instance.invoke("ksr_request_route", Some(call)).await;
        assert_eq!(ret(&inv), 1);
        assert_eq!(said(&inv), [du], "fix_nated_register: {fix}");
    }
}
