//! Behaviour of every KSR module as a routing script sees it, checked
//! against Kamailio's documented semantics: real Lua scripts run in the
//! sandbox on SIP messages, and each test checks what the script observed
//! (its log lines or its return value), the events it caused and the
//! message it would forward, byte for byte.
//!
//! The proxy's own address ("myself") is 127.0.0.1:5060; messages arrive
//! over UDP from 127.0.0.1:5070 (see `common`). `KSR.x` is covered by
//! `errors.rs`.

mod common;

use std::net::SocketAddr;

use common::ksr::*;
use common::*;
use kemibox_kemi::{CallbackKind, Event, Level, Message, RouteType, TmFunction, Transport};
use kemibox_sandbox::Invocation;
use kemibox_sip::SipMessage;

/// `text` received from `source` on our UDP socket.
fn from_source(text: &str, source: SocketAddr) -> Message {
    let parsed = SipMessage::parse(text.as_bytes().to_vec()).expect("test message parses");
    Message::new(parsed, source, local(), Transport::Udp)
}

/// A minimal request with `method`, out of dialog, one Via.
fn request(method: &str) -> String {
    sip(
        &[
            &format!("{method} sip:bob@example.com SIP/2.0"),
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-m1",
            "From: <sip:alice@example.com>;tag=a1",
            "To: <sip:bob@example.com>",
            "Call-ID: method-1@127.0.0.1",
            &format!("CSeq: 1 {method}"),
        ],
        "",
    )
}

/// A 180 to an INVITE, as a proxy at 127.0.0.1:5060 receives it, with
/// `extra` headers (Record-Route...) before Content-Length.
fn ringing(extra: &[&str]) -> String {
    let mut lines = vec![
        "SIP/2.0 180 Ringing",
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-proxy-1",
        "Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-uac-1",
        "From: <sip:alice@example.com>;tag=a1",
        "To: <sip:bob@example.com>;tag=b2",
        "Call-ID: reply-1@192.0.2.10",
        "CSeq: 7 INVITE",
    ];
    lines.extend_from_slice(extra);
    sip(&lines, "")
}

/// `$du` after the route.
fn dst_uri(inv: &Invocation) -> Option<String> {
    inv.message.as_ref().and_then(|m| m.dst_uri.clone())
}

fn strings(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|s| s.to_string()).collect()
}

/// `is_INVITE` ... `is_PRACK` are true for their method only,
/// `is_method` ignores case, `is_method_in` matches the documented letters
/// (none for REFER, INFO, PRACK), and a reply is tested by its CSeq method.
#[tokio::test]
async fn core_method_tests() {
    let mut i = instance(
        r#"
local methods = { "INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "MESSAGE",
    "SUBSCRIBE", "PUBLISH", "NOTIFY", "REFER", "INFO", "UPDATE", "PRACK" }
function ksr_request_route()
    local hits = {}
    for _, m in ipairs(methods) do
        if KSR["is_" .. m]() then hits[#hits + 1] = m end
    end
    local letters = {}
    for c in ("IABCRMOSPNUKGTVD"):gmatch(".") do
        if KSR.is_method_in(c) then letters[#letters + 1] = c end
    end
    local rm = KSR.pv.get("$rm")
    KSR.info(table.concat(hits, ",") .. " [" .. table.concat(letters) .. "] "
        .. tostring(KSR.is_method(rm:lower())) .. " " .. tostring(KSR.is_method(rm .. "X")))
end
"#,
    )
    .await;
    for (method, letter) in [
        ("INVITE", "I"),
        ("ACK", "A"),
        ("BYE", "B"),
        ("CANCEL", "C"),
        ("REGISTER", "R"),
        ("OPTIONS", "O"),
        ("MESSAGE", "M"),
        ("SUBSCRIBE", "S"),
        ("PUBLISH", "P"),
        ("NOTIFY", "N"),
        ("REFER", ""),
        ("INFO", ""),
        ("UPDATE", "U"),
        ("PRACK", ""),
    ] {
        let inv = i
            .invoke("ksr_request_route", Some(message(&request(method))))
            .await;
        assert_eq!(
            logs(&inv),
            vec![format!("{method} [{letter}] true false")],
            "{method}"
        );
    }
    let reply = i
        .invoke("ksr_request_route", Some(message(&ringing(&[]))))
        .await;
    assert_eq!(logs(&reply), vec!["INVITE [I] true false".to_string()]);

    let inv = route(
        r#"function ksr_request_route()
    say("IABC", KSR.is_method_in("IABC"))
    say("ABC", KSR.is_method_in("ABC"))
end"#,
        invite(),
    )
    .await;
    assert_eq!(
        logs(&inv),
        strings(&["IABC boolean true", "ABC boolean false"])
    );
}

/// `is_KDMQ` is true for a KDMQ request and a reply to one (by its CSeq
/// method), false for any other method, and agrees with `is_method_in("K")`.
#[tokio::test]
async fn core_is_kdmq() {
    let mut i = instance(
        r#"function ksr_request_route()
    say("kdmq", KSR.is_KDMQ())
    say("K", KSR.is_method_in("K"))
end"#,
    )
    .await;
    let kdmq_reply = sip(
        &[
            "SIP/2.0 200 OK",
            "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-proxy-1",
            "From: <sip:node1@127.0.0.1>;tag=a1",
            "To: <sip:node2@127.0.0.1>;tag=b2",
            "Call-ID: dmq-1@127.0.0.1",
            "CSeq: 3 KDMQ",
        ],
        "",
    );
    for (text, want) in [
        (request("KDMQ"), "true"),
        (kdmq_reply, "true"),
        (request("INVITE"), "false"),
        (request("OPTIONS"), "false"),
    ] {
        let inv = i.invoke("ksr_request_route", Some(message(&text))).await;
        assert_eq!(
            logs(&inv),
            strings(&[
                &format!("kdmq boolean {want}"),
                &format!("K boolean {want}")
            ]),
            "{text}"
        );
    }
}

/// The script of [`core_flags`]: `first` and `second` run on two messages.
const FLAGS: &str = r#"
function first()
    say("setflag(0)", KSR.setflag(0))
    say("setflag(5)", KSR.setflag(5))
    say("setflag(31)", KSR.setflag(31))
    say("isflagset(31)", KSR.isflagset(31))
    say("resetflag(31)", KSR.resetflag(31))
    say("isflagset(31)", KSR.isflagset(31))
    say("isflagset(1)", KSR.isflagset(1))
    say("$mf", KSR.pv.get("$mf"))
    say("resetflag(0)", KSR.resetflag(0))
    say("isflagset(0)", KSR.isflagset(0))
    say("$mf", KSR.pv.get("$mf"))
    say("setflag(32)", KSR.setflag(32))
    say("setflag(-1)", KSR.setflag(-1))
    say("isflagset(32)", KSR.isflagset(32))

    say("setbflag(3)", KSR.setbflag(3))
    say("isbiflagset(3, 0)", KSR.isbiflagset(3, 0))
    say("setbiflag(4, 2)", KSR.setbiflag(4, 2))
    say("isbiflagset(4, 2)", KSR.isbiflagset(4, 2))
    say("isbiflagset(4, 1)", KSR.isbiflagset(4, 1))
    say("isbflagset(4)", KSR.isbflagset(4))
    say("$bf", KSR.pv.get("$bf"))
    say("resetbiflag(4, 2)", KSR.resetbiflag(4, 2))
    say("isbiflagset(4, 2)", KSR.isbiflagset(4, 2))
    say("resetbflag(3)", KSR.resetbflag(3))
    say("$bf", KSR.pv.get("$bf"))
    say("setbiflag(1, 12)", KSR.setbiflag(1, 12))

    say("setsflag(7)", KSR.setsflag(7))
    say("issflagset(7)", KSR.issflagset(7))
    say("$sf", KSR.pv.get("$sf"))
end
function second()
    say("isflagset(5)", KSR.isflagset(5))
    say("$mf", KSR.pv.get("$mf"))
    say("issflagset(7)", KSR.issflagset(7))
    say("resetsflag(7)", KSR.resetsflag(7))
    say("issflagset(7)", KSR.issflagset(7))
end
function ksr_request_route() end
"#;

/// Message flags 0..31 set, reset and test; 32 and -1 are refused with
/// false and a log line. Branch flags live per branch (`setbflag` is branch
/// 0, `$bf` shows branch 0). Script flags stay with the instance across
/// messages; message flags start empty with each message.
#[tokio::test]
async fn core_flags() {
    let mut i = instance(FLAGS).await;
    let inv = i.invoke("first", Some(invite())).await;
    assert_eq!(
        logs(&inv),
        strings(&[
            "setflag(0) boolean true",
            "setflag(5) boolean true",
            "setflag(31) boolean true",
            "isflagset(31) boolean true",
            "resetflag(31) boolean true",
            "isflagset(31) boolean false",
            "isflagset(1) boolean false",
            "$mf number 33",
            "resetflag(0) boolean true",
            "isflagset(0) boolean false",
            "$mf number 32",
            "modules.lua:18: KSR.setflag: flag 32 out of range 0..31",
            "setflag(32) boolean false",
            "modules.lua:19: KSR.setflag: flag -1 out of range 0..31",
            "setflag(-1) boolean false",
            "modules.lua:20: KSR.isflagset: flag 32 out of range 0..31",
            "isflagset(32) boolean false",
            "setbflag(3) boolean true",
            "isbiflagset(3, 0) boolean true",
            "setbiflag(4, 2) boolean true",
            "isbiflagset(4, 2) boolean true",
            "isbiflagset(4, 1) boolean false",
            "isbflagset(4) boolean false",
            "$bf number 8",
            "resetbiflag(4, 2) boolean true",
            "isbiflagset(4, 2) boolean false",
            "resetbflag(3) boolean true",
            "$bf number 0",
            "modules.lua:33: KSR.setbiflag: branch 12 out of range 0..11",
            "setbiflag(1, 12) boolean false",
            "setsflag(7) boolean true",
            "issflagset(7) boolean true",
            "$sf number 128",
        ])
    );
    assert_eq!(errors(&inv).len(), 4, "every refusal is an error line");
    assert_eq!(inv.message.as_ref().unwrap().flags, 32);

    let inv = i.invoke("second", Some(invite())).await;
    assert_eq!(
        logs(&inv),
        strings(&[
            "isflagset(5) boolean false",
            "$mf number 0",
            "issflagset(7) boolean true",
            "resetsflag(7) boolean true",
            "issflagset(7) boolean false",
        ])
    );
}

/// `seturi` replaces the R-URI; `setuser` and `sethost` replace one part
/// and keep the rest (port, parameters); `$ru`/`$rU`/`$rd`/`$rp` follow.
/// An invalid URI is refused. `setdsturi`/`resetdsturi`/`isdsturiset`
/// manage `$du`. Only the start line of the forwarded request changes.
#[tokio::test]
async fn core_request_uri_and_destination() {
    let inv = route(
        r#"function ksr_request_route()
    say("$ru", KSR.pv.get("$ru"))
    say("seturi", KSR.seturi("sip:dave@example.net:5070;transport=tcp"))
    say("setuser", KSR.setuser("carol"))
    say("$ru", KSR.pv.get("$ru"))
    say("sethost", KSR.sethost("192.0.2.5"))
    say("$ru", KSR.pv.get("$ru"))
    say("$rU", KSR.pv.get("$rU"))
    say("$rd", KSR.pv.get("$rd"))
    say("$rp", KSR.pv.get("$rp"))
    say("seturi bad", KSR.seturi("not a uri"))
    say("$ru", KSR.pv.get("$ru"))

    say("isdsturiset", KSR.isdsturiset())
    say("setdsturi", KSR.setdsturi("sip:192.0.2.9:5080"))
    say("isdsturiset", KSR.isdsturiset())
    say("$du", KSR.pv.get("$du"))
    say("resetdsturi", KSR.resetdsturi())
    say("isdsturiset", KSR.isdsturiset())
    say("$du", KSR.pv.get("$du"))
    say("setdsturi bad", KSR.setdsturi("nope"))
    say("setdsturi", KSR.setdsturi("sip:192.0.2.9:5080;transport=tcp"))
end"#,
        invite(),
    )
    .await;
    assert_eq!(
        logs(&inv),
        strings(&[
            "$ru string sip:bob@example.com",
            "seturi boolean true",
            "setuser boolean true",
            "$ru string sip:carol@example.net:5070;transport=tcp",
            "sethost boolean true",
            "$ru string sip:carol@192.0.2.5:5070;transport=tcp",
            "$rU string carol",
            "$rd string 192.0.2.5",
            "$rp number 5070",
            "modules.lua:15: KSR.seturi: invalid URI \"not a uri\": invalid URI",
            "seturi bad boolean false",
            "$ru string sip:carol@192.0.2.5:5070;transport=tcp",
            "isdsturiset boolean false",
            "setdsturi boolean true",
            "isdsturiset boolean true",
            "$du string sip:192.0.2.9:5080",
            "resetdsturi boolean true",
            "isdsturiset boolean false",
            "$du nil nil",
            "modules.lua:25: KSR.setdsturi: invalid URI \"nope\": missing URI scheme",
            "setdsturi bad boolean false",
            "setdsturi boolean true",
        ])
    );
    assert_eq!(
        forwarded(&inv),
        INVITE.replacen(
            "INVITE sip:bob@example.com ",
            "INVITE sip:carol@192.0.2.5:5070;transport=tcp ",
            1
        )
    );
    assert_eq!(
        dst_uri(&inv).as_deref(),
        Some("sip:192.0.2.9:5080;transport=tcp")
    );
}

/// `is_myself` matches our address (127.0.0.1:5060; a URI without port
/// matches any of our ports on that host); the `_ruri`/`_furi`/`_turi`
/// variants apply it to the message's URIs and `_srcip` to the source IP.
#[tokio::test]
async fn core_is_myself() {
    let body = r#"function ksr_request_route()
    local r = {}
    for _, u in ipairs({ "sip:127.0.0.1:5060", "sip:127.0.0.1", "sip:alice@127.0.0.1:5060;transport=udp",
            "sip:127.0.0.1:5070", "sip:example.com", "garbage" }) do
        r[#r + 1] = tostring(KSR.is_myself(u))
    end
    KSR.info(table.concat(r, " "))
    KSR.info(tostring(KSR.is_myself_ruri()) .. " " .. tostring(KSR.is_myself_furi()) .. " "
        .. tostring(KSR.is_myself_turi()) .. " " .. tostring(KSR.is_myself_srcip()))
end"#;
    let mut i = instance(body).await;
    let inv = i.invoke("ksr_request_route", Some(invite())).await;
    assert_eq!(
        logs(&inv),
        strings(&["true true true false false false", "false false false true"])
    );

    let to_us = sip(
        &[
            "OPTIONS sip:127.0.0.1:5060 SIP/2.0",
            "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-o1",
            "From: <sip:monitor@127.0.0.1>;tag=m1",
            "To: <sip:127.0.0.1:5060>",
            "Call-ID: myself-1@192.0.2.1",
            "CSeq: 1 OPTIONS",
        ],
        "",
    );
    let foreign_source = "192.0.2.1:5060".parse().unwrap();
    let inv = i
        .invoke(
            "ksr_request_route",
            Some(from_source(&to_us, foreign_source)),
        )
        .await;
    assert_eq!(logs(&inv)[1], "true true true false");
}

/// `set_drop` marks the message dropped without ending the script; every
/// log function writes at its level (`KSR.log` with an unknown level logs
/// at ERROR) with the trailing line break removed.
#[tokio::test]
async fn core_set_drop_and_log_levels() {
    let inv = route(
        r#"function ksr_request_route()
    KSR.set_drop()
    KSR.dbg("d")
    KSR.info("i\r\n")
    KSR.notice("n")
    KSR.warn("w")
    KSR.err("e")
    KSR.crit("c")
    for _, level in ipairs({ "dbg", "info", "notice", "warn", "err", "crit", "bogus" }) do
        KSR.log(level, "log " .. level .. "\n")
    end
    return 7
end"#,
        invite(),
    )
    .await;
    assert_eq!(ret(&inv), 7, "the script kept running after set_drop");
    assert!(inv.message.as_ref().unwrap().drop);
    let log = |level, message: &str| Event::Log {
        level,
        message: message.to_string(),
    };
    assert_eq!(
        inv.events,
        vec![
            Event::Drop,
            log(Level::Dbg, "d"),
            log(Level::Info, "i"),
            log(Level::Notice, "n"),
            log(Level::Warn, "w"),
            log(Level::Err, "e"),
            log(Level::Crit, "c"),
            log(Level::Dbg, "log dbg"),
            log(Level::Info, "log info"),
            log(Level::Notice, "log notice"),
            log(Level::Warn, "log warn"),
            log(Level::Err, "log err"),
            log(Level::Crit, "log crit"),
            log(Level::Err, "log bogus"),
        ]
    );
}

/// Digest credentials whose username has a domain part.
const AUTHORIZATION: &str = "Authorization: Digest username=\"alice@atlanta.example.com\", \
realm=\"atlanta.example.com\", nonce=\"84a4cc6f3082121f32b42a2187831a9e\", \
uri=\"sip:bob@biloxi.example.com\", response=\"7587245234b3434cc3412213e5f113a5\"";

/// The body of [`rich_invite`].
const SDP: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\n\
c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\n";

/// A re-INVITE with display names, both tags, Contact, User-Agent,
/// credentials, a repeated header and an SDP body.
fn rich_invite() -> String {
    sip(
        &[
            "INVITE sip:bob@biloxi.example.com:5080;transport=udp SIP/2.0",
            "Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK776asdhds",
            "Max-Forwards: 70",
            "From: \"Alice Liddell\" <sip:alice@atlanta.example.com>;tag=1928301774",
            "To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf",
            "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
            "CSeq: 314159 INVITE",
            "Contact: <sip:alice@192.0.2.10:5070;transport=udp>",
            "User-Agent: Softphone/2.1",
            AUTHORIZATION,
            "X-Tag: one",
            "X-Tag: two",
            "Content-Type: application/sdp",
        ],
        SDP,
    )
}

/// Every pseudo-variable `modules/pv.rs` reads, on a realistic request:
/// strings and integers as Kamailio types them, `nil` for what the
/// message does not have. `$au`/`$ad` are the user and domain parts of the
/// digest username, `$ar` the realm.
#[tokio::test]
async fn pv_reads_on_a_realistic_invite() {
    let text = rich_invite();
    let body = SDP.trim_end();
    let whole = text.trim_end();
    let cases: Vec<(&str, String)> = vec![
        (
            "$ru",
            "string sip:bob@biloxi.example.com:5080;transport=udp".into(),
        ),
        ("$rU", "string bob".into()),
        ("$rd", "string biloxi.example.com".into()),
        ("$rp", "number 5080".into()),
        ("$rz", "string sip".into()),
        ("$du", "nil nil".into()),
        ("$fu", "string sip:alice@atlanta.example.com".into()),
        ("$fU", "string alice".into()),
        ("$fd", "string atlanta.example.com".into()),
        ("$fn", "string Alice Liddell".into()),
        ("$ft", "string 1928301774".into()),
        ("$tu", "string sip:bob@biloxi.example.com".into()),
        ("$tU", "string bob".into()),
        ("$td", "string biloxi.example.com".into()),
        ("$tn", "string Bob".into()),
        ("$tt", "string a6c85cf".into()),
        (
            "$ci",
            "string a84b4c76e66710@pc33.atlanta.example.com".into(),
        ),
        ("$cs", "number 314159".into()),
        ("$rm", "string INVITE".into()),
        ("$rs", "nil nil".into()),
        ("$rr", "nil nil".into()),
        ("$si", "string 127.0.0.1".into()),
        ("$sp", "number 5070".into()),
        ("$Ri", "string 127.0.0.1".into()),
        ("$Rp", "number 5060".into()),
        ("$pr", "string udp".into()),
        ("$proto", "string udp".into()),
        ("$ua", "string Softphone/2.1".into()),
        (
            "$ct",
            "string <sip:alice@192.0.2.10:5070;transport=udp>".into(),
        ),
        ("$cT", "string application/sdp".into()),
        ("$cl", format!("number {}", SDP.len())),
        ("$rb", format!("string {body}")),
        ("$ml", format!("number {}", text.len())),
        ("$mb", format!("string {whole}")),
        ("$mf", "number 0".into()),
        ("$bf", "number 0".into()),
        ("$T_branch_idx", "number 0".into()),
        ("$au", "string alice".into()),
        ("$ar", "string atlanta.example.com".into()),
        ("$ad", "string atlanta.example.com".into()),
        ("$hdr(X-Tag)", "string one".into()),
        ("$hdrc(X-Tag)", "number 2".into()),
        ("$hdr(user-agent)", "string Softphone/2.1".into()),
        ("$hdrc(Via)", "number 1".into()),
        ("$hdr(X-Missing)", "nil nil".into()),
        ("$hdrc(X-Missing)", "number 0".into()),
        (
            "$(ru)",
            "string sip:bob@biloxi.example.com:5080;transport=udp".into(),
        ),
    ];
    let names: Vec<String> = cases.iter().map(|(n, _)| format!("{n:?}")).collect();
    let script = format!(
        "local names = {{ {} }}\n\
         function ksr_request_route()\n\
             for _, n in ipairs(names) do say(n, KSR.pv.get(n)) end\n\
         end\n",
        names.join(", ")
    );
    let inv = route(&script, message(&text)).await;
    let want: Vec<String> = cases.iter().map(|(n, v)| format!("{n} {v}")).collect();
    assert_eq!(logs(&inv), want);
}

/// `$rs`/`$rr` are the status and reason of a reply; `$rm` is the CSeq
/// method; the request-only names are `nil`.
#[tokio::test]
async fn pv_reads_on_a_reply() {
    let mut i = instance(
        r#"function ksr_request_route() end
function ksr_reply_route()
    for _, n in ipairs({ "$rs", "$rr", "$rm", "$cs", "$tt", "$ru", "$rU" }) do say(n, KSR.pv.get(n)) end
end"#,
    )
    .await;
    let inv = i
        .invoke("ksr_reply_route", Some(message(&ringing(&[]))))
        .await;
    assert_eq!(
        logs(&inv),
        strings(&[
            "$rs number 180",
            "$rr string Ringing",
            "$rm string INVITE",
            "$cs number 7",
            "$tt string b2",
            "$ru nil nil",
            "$rU nil nil",
        ])
    );
}

/// Writing `$ru`, `$rU`, `$rd`, `$rp` rewrites the R-URI (reads follow,
/// the forwarded start line changes); `$du` is set and reset with
/// `$null`.
#[tokio::test]
async fn pv_writes_of_request_uri_and_destination() {
    let inv = route(
        r#"function ksr_request_route()
    KSR.pv.sets("$ru", "sip:carol@example.net")
    say("$ru", KSR.pv.get("$ru"))
    KSR.pv.sets("$rU", "dave")
    KSR.pv.sets("$rd", "192.0.2.7")
    KSR.pv.seti("$rp", 5070)
    say("$ru", KSR.pv.get("$ru"))
    KSR.pv.sets("$du", "sip:192.0.2.9:5080;transport=tcp")
    say("$du", KSR.pv.get("$du"))
    say("isdsturiset", KSR.isdsturiset())
    KSR.pv.unset("$du")
    say("$du", KSR.pv.get("$du"))
end"#,
        invite(),
    )
    .await;
    assert_eq!(
        logs(&inv),
        strings(&[
            "$ru string sip:carol@example.net",
            "$ru string sip:dave@192.0.2.7:5070",
            "$du string sip:192.0.2.9:5080;transport=tcp",
            "isdsturiset boolean true",
            "$du nil nil",
        ])
    );
    assert_eq!(
        forwarded(&inv),
        INVITE.replacen("sip:bob@example.com SIP", "sip:dave@192.0.2.7:5070 SIP", 1)
    );
    assert_eq!(dst_uri(&inv), None);
}

/// The script of [`pv_var_per_instance_and_avp_stack_per_message`].
const VARIABLES: &str = r#"
function first()
    say("$var(n)", KSR.pv.get("$var(n)"))
    KSR.pv.seti("$var(n)", 41)
    KSR.pv.sets("$var(s)", "kept")
    KSR.pv.seti("$avp(x)", 1)
    KSR.pv.sets("$avp(x)", "two")
    KSR.pv.seti("$avp(x)", 3)
    say("$avp(x)", KSR.pv.get("$avp(x)"))
    KSR.pv.unset("$avp(x)")
    say("$avp(x)", KSR.pv.get("$avp(x)"))
    KSR.pv.unset("$avp(x)")
    say("$avp(x)", KSR.pv.get("$avp(x)"))
    KSR.pv.unset("$avp(x)")
    say("$avp(x)", KSR.pv.get("$avp(x)"))
    KSR.pv.sets("$avp(y)", "for this message")
end
function second()
    say("$var(n)", KSR.pv.get("$var(n)"))
    say("$var(s)", KSR.pv.get("$var(s)"))
    say("$avp(y)", KSR.pv.get("$avp(y)"))
    KSR.pv.unset("$var(n)")
    say("$var(n)", KSR.pv.get("$var(n)"))
    say("is_null $var(n)", KSR.pv.is_null("$var(n)"))
end
function ksr_request_route() end
"#;

/// `$var(x)` starts at 0, keeps its value across invocations of the same
/// instance and goes back to 0 when unset. `$avp(x)` belongs to one
/// message and is a stack: the newest value is read, `$null` removes the
/// newest.
#[tokio::test]
async fn pv_var_per_instance_and_avp_stack_per_message() {
    let mut i = instance(VARIABLES).await;
    let inv = i.invoke("first", Some(invite())).await;
    assert_eq!(
        logs(&inv),
        strings(&[
            "$var(n) number 0",
            "$avp(x) number 3",
            "$avp(x) string two",
            "$avp(x) number 1",
            "$avp(x) nil nil",
        ])
    );
    let inv = i.invoke("second", Some(invite())).await;
    assert_eq!(
        logs(&inv),
        strings(&[
            "$var(n) number 41",
            "$var(s) string kept",
            "$avp(y) nil nil",
            "$var(n) number 0",
            "is_null $var(n) boolean false",
        ])
    );
}

/// `getvn`/`getvs`/`getw`/`gete` give their default for `$null` (and for a
/// bad name, after logging it); `is_null`; unknown and malformed names read
/// as nil with an error line; read-only names refuse writes with an error
/// line and keep their value.
#[tokio::test]
async fn pv_defaults_bad_names_and_read_only_names() {
    let inv = route(
        r#"function ksr_request_route()
    say("getvn", KSR.pv.getvn("$avp(none)", 7))
    say("getvs", KSR.pv.getvs("$avp(none)", "dflt"))
    say("getw", KSR.pv.getw("$avp(none)"))
    say("gete", KSR.pv.gete("$avp(none)"))
    say("getvn set", KSR.pv.getvn("$rU", 7))
    say("is_null $avp(none)", KSR.pv.is_null("$avp(none)"))
    say("is_null $ru", KSR.pv.is_null("$ru"))
    say("unknown", KSR.pv.get("$nope"))
    say("unknown class", KSR.pv.get("$nope(x)"))
    say("malformed", KSR.pv.get("ru"))
    say("unclosed", KSR.pv.get("$var("))
    say("getvn unknown", KSR.pv.getvn("$nope", 3))
    KSR.pv.sets("$fu", "sip:mallory@example.com")
    KSR.pv.seti("$si", 1)
    KSR.pv.sets("$hdr(From)", "x")
    KSR.pv.sets("$nope", "x")
    KSR.pv.sets("$nope(x)", "x")
    say("$fu", KSR.pv.get("$fu"))
end"#,
        invite(),
    )
    .await;
    assert_eq!(
        logs(&inv),
        strings(&[
            "getvn number 7",
            "getvs string dflt",
            "getw string <<null>>",
            "gete string ",
            "getvn set string bob",
            "is_null $avp(none) boolean true",
            "is_null $ru boolean false",
            "modules.lua:13: KSR.pv.get: unknown pseudo-variable: $nope",
            "unknown nil nil",
            "modules.lua:14: KSR.pv.get: unknown pseudo-variable: $nope(x)",
            "unknown class nil nil",
            "modules.lua:15: KSR.pv.get: malformed pseudo-variable name: ru",
            "malformed nil nil",
            "modules.lua:16: KSR.pv.get: malformed pseudo-variable name: $var(",
            "unclosed nil nil",
            "KSR.pv.getvn: unknown pseudo-variable: $nope",
            "getvn unknown number 3",
            "KSR.pv.sets: pseudo-variable is read-only: $fu",
            "KSR.pv.seti: pseudo-variable is read-only: $si",
            "KSR.pv.sets: pseudo-variable is read-only: $hdr(From)",
            "KSR.pv.sets: unknown pseudo-variable: $nope",
            "KSR.pv.sets: unknown pseudo-variable: $nope(x)",
            "$fu string sip:alice@example.com",
        ])
    );
    assert_eq!(errors(&inv).len(), 10);
    assert_eq!(forwarded(&inv), INVITE, "nothing was changed");
}

/// The header edits produce exactly the expected forwarded message: lines
/// added where asked, removed lines gone, every other byte (odd spacing,
/// compact names, Content-Length) as received. Reads still see the message
/// as received. Header injection and non-header text are refused with -1.
#[tokio::test]
async fn hdr_edits_give_the_exact_forwarded_bytes() {
    let received = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-h1\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=a1\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: hdr-1@192.0.2.10\r\n\
CSeq: 1 INVITE\r\n\
X-Old: 1\r\n\
Subject:   odd    spacing\r\n\
X-Old: 2\r\n\
k:100rel\r\n\
Content-Length: 0\r\n\r\n";
    let inv = route(
        r#"function ksr_request_route()
    local r = {}
    r[#r + 1] = KSR.hdr.append("X-Appended: a")
    r[#r + 1] = KSR.hdr.insert("X-Inserted: i\r\n")
    r[#r + 1] = KSR.hdr.append_after("X-After-Call-ID: c", "call-id")
    r[#r + 1] = KSR.hdr.insert_before("X-Before-CSeq: b", "CSeq")
    r[#r + 1] = KSR.hdr.remove("X-Old")
    r[#r + 1] = KSR.hdr.remove("X-Absent")
    r[#r + 1] = KSR.hdr.rmappend("Subject", "Subject: replaced")
    KSR.info(table.concat(r, " "))
    r = {}
    r[#r + 1] = KSR.hdr.append("X-Injected: a\r\nY-Injected: b")
    r[#r + 1] = KSR.hdr.insert("X-Injected: a\nY-Injected: b")
    r[#r + 1] = KSR.hdr.append_after("X-Injected: a\r\n\r\nBODY", "To")
    r[#r + 1] = KSR.hdr.insert_before("X-Injected: a\rY: b", "To")
    r[#r + 1] = KSR.hdr.rmappend("To", "X-Injected: a\r\nY: b")
    r[#r + 1] = KSR.hdr.append("no colon here")
    KSR.info(table.concat(r, " "))
    say("X-Old", KSR.hdr.get("X-Old"))
    say("X-Appended", KSR.hdr.get("X-Appended"))
    say("Subject", KSR.hdr.get("Subject"))
end"#,
        message(received),
    )
    .await;
    assert_eq!(
        logs(&inv)
            .into_iter()
            .filter(|l| !l.contains(": KSR.hdr."))
            .collect::<Vec<_>>(),
        strings(&[
            "1 1 1 1 1 -1 1",
            "-1 -1 -1 -1 -1 -1",
            "X-Old string 1",
            "X-Appended nil nil",
            "Subject string odd    spacing",
        ])
    );
    assert_eq!(errors(&inv).len(), 6, "each refusal is logged");
    assert_eq!(
        forwarded(&inv),
        "INVITE sip:bob@example.com SIP/2.0\r\n\
X-Inserted: i\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-h1\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=a1\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: hdr-1@192.0.2.10\r\n\
X-After-Call-ID: c\r\n\
X-Before-CSeq: b\r\n\
CSeq: 1 INVITE\r\n\
k:100rel\r\n\
Content-Length: 0\r\n\
X-Appended: a\r\n\
Subject: replaced\r\n\r\n"
    );
}

/// Header reads: `get` is the first header, `get_idx` counts from 0 or from
/// the end with negative indexes, the `e`/`w` variants give "" and
/// "<<null>>" instead of nil; names ignore case and compact forms match.
/// `match_content` compares with eq/ne/sw/in on the first (`f`), last
/// (`l`), a numbered, all (`a`) or at least one (`o`) of the headers.
#[tokio::test]
async fn hdr_reads_and_match_content() {
    let text = sip(
        &[
            "INVITE sip:bob@example.com SIP/2.0",
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-r1",
            "From: <sip:alice@example.com>;tag=a1",
            "To: <sip:bob@example.com>",
            "Call-ID: reads-1@127.0.0.1",
            "CSeq: 1 INVITE",
            "X-Multi: id-first",
            "X-Multi: id-second",
            "X-Multi: id-third",
        ],
        "",
    );
    let inv = route(
        r#"function ksr_request_route()
    say("get", KSR.hdr.get("X-Multi"))
    say("get lower", KSR.hdr.get("x-multi"))
    say("get compact", KSR.hdr.get("f"))
    say("get_idx 1", KSR.hdr.get_idx("X-Multi", 1))
    say("get_idx -1", KSR.hdr.get_idx("X-Multi", -1))
    say("get_idx -3", KSR.hdr.get_idx("X-Multi", -3))
    say("get_idx 3", KSR.hdr.get_idx("X-Multi", 3))
    say("get_idx -4", KSR.hdr.get_idx("X-Multi", -4))
    say("get none", KSR.hdr.get("X-None"))
    say("gete none", KSR.hdr.gete("X-None"))
    say("gete_idx 5", KSR.hdr.gete_idx("X-Multi", 5))
    say("gete_idx 0", KSR.hdr.gete_idx("X-Multi", 0))
    say("getw none", KSR.hdr.getw("X-None"))
    say("getw_idx 9", KSR.hdr.getw_idx("X-Multi", 9))
    say("getw_idx -2", KSR.hdr.getw_idx("X-Multi", -2))
    say("is_present", KSR.hdr.is_present("X-Multi"))
    say("is_present compact", KSR.hdr.is_present("i"))
    say("is_present none", KSR.hdr.is_present("X-None"))
    local m = KSR.hdr.match_content
    local r = {
        m("X-Multi", "eq", "id-first", "f"), m("X-Multi", "eq", "id-second", "f"),
        m("X-Multi", "eq", "id-third", "l"), m("X-Multi", "eq", "id-second", "l"),
        m("X-Multi", "eq", "id-second", "1"), m("X-Multi", "eq", "id-second", "0"),
        m("X-Multi", "sw", "id-", "a"), m("X-Multi", "eq", "id-second", "a"),
        m("X-Multi", "eq", "id-second", "o"), m("X-Multi", "eq", "id-fourth", "o"),
        m("X-Multi", "in", "sec", "o"), m("X-Multi", "in", "sec", "f"),
        m("X-Multi", "ne", "id-second", "f"), m("X-Multi", "ne", "id-second", "a"),
        m("X-None", "ne", "x", "a"), m("X-Multi", "xx", "id-first", "f"),
    }
    KSR.info(table.concat(r, " "))
end"#,
        message(&text),
    )
    .await;
    assert_eq!(
        logs(&inv),
        strings(&[
            "get string id-first",
            "get lower string id-first",
            "get compact string <sip:alice@example.com>;tag=a1",
            "get_idx 1 string id-second",
            "get_idx -1 string id-third",
            "get_idx -3 string id-first",
            "get_idx 3 nil nil",
            "get_idx -4 nil nil",
            "get none nil nil",
            "gete none string ",
            "gete_idx 5 string ",
            "gete_idx 0 string id-first",
            "getw none string <<null>>",
            "getw_idx 9 string <<null>>",
            "getw_idx -2 string id-second",
            "is_present number 1",
            "is_present compact number 1",
            "is_present none number -1",
            "modules.lua:33: KSR.hdr.match_content: unknown operator \"xx\" (eq, ne, in, sw)",
            "1 -1 1 -1 1 -1 1 -1 1 -1 1 -1 1 -1 -1 -1",
        ])
    );
}

/// Headers added with `append_to_reply` go into the reply the proxy sends
/// (`Reply` event), not into the forwarded request; an injection attempt
/// is refused.
#[tokio::test]
async fn hdr_append_to_reply_reaches_the_reply() {
    let inv = route(
        r#"function ksr_request_route()
    say("1", KSR.hdr.append_to_reply("X-Reply-Info: r1"))
    say("2", KSR.hdr.append_to_reply("Retry-After: 30\r\n"))
    say("3", KSR.hdr.append_to_reply("X-Evil: a\r\nY: b"))
    say("reply", KSR.sl.send_reply(503, "Service Unavailable"))
end"#,
        invite(),
    )
    .await;
    assert_eq!(
        logs(&inv),
        strings(&[
            "1 number 1",
            "2 number 1",
            "modules.lua:8: KSR.hdr.append_to_reply: not a single header line: \"X-Evil: a\\r\\nY: b\"",
            "3 number -1",
            "reply number 1",
        ])
    );
    assert_eq!(
        actions(&inv),
        vec![Event::Reply {
            code: 503,
            reason: "Service Unavailable".into(),
            stateful: false,
            headers: strings(&["X-Reply-Info: r1", "Retry-After: 30"]),
        }]
    );
    assert_eq!(forwarded(&inv), INVITE);
}

/// `sl_send_reply`, `send_reply` and `sl_reply_error` (500) queue stateless
/// replies; codes outside 100..699 are refused; an ACK and a reply are
/// never answered.
#[tokio::test]
async fn sl_replies() {
    let body = r#"function ksr_request_route()
    local r = {
        KSR.sl.sl_send_reply(180, "Ringing"),
        KSR.sl.send_reply(486, "Busy Here"),
        KSR.sl.sl_reply_error(),
        KSR.sl.send_reply(99, "Too Low"),
        KSR.sl.sl_send_reply(700, "Too High"),
    }
    KSR.info(table.concat(r, " "))
end"#;
    let mut i = instance(body).await;
    let inv = i.invoke("ksr_request_route", Some(invite())).await;
    let reply = |code, reason: &str| Event::Reply {
        code,
        reason: reason.into(),
        stateful: false,
        headers: vec![],
    };
    assert_eq!(
        actions(&inv),
        vec![
            reply(180, "Ringing"),
            reply(486, "Busy Here"),
            reply(500, "Server Internal Error"),
        ]
    );
    assert_eq!(
        logs(&inv),
        strings(&[
            "modules.lua:10: KSR.sl.send_reply: invalid status code 99",
            "modules.lua:11: KSR.sl.sl_send_reply: invalid status code 700",
            "1 1 1 -1 -1",
        ])
    );

    for text in [request("ACK"), ringing(&[])] {
        let inv = i.invoke("ksr_request_route", Some(message(&text))).await;
        assert_eq!(actions(&inv), vec![], "{text}");
        assert_eq!(logs(&inv).last().unwrap(), "-1 -1 -1 -1 -1");
    }
}

/// `process_maxfwd`: 2 when the header was missing (added at the top with
/// the given value), 1 when decremented in place (a decremented value above
/// Kamailio's `max_limit` of 70 becomes 70), -1 at 0 and -2 for a
/// malformed value, both leaving the message as it was.
#[tokio::test]
async fn maxfwd_process_maxfwd() {
    let mut i =
        instance("function ksr_request_route() return KSR.maxfwd.process_maxfwd(10) end").await;
    let with = |value: Option<&str>| {
        let mut lines = vec![
            "OPTIONS sip:bob@example.com SIP/2.0",
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-mf",
        ];
        let header = value.map(|v| format!("Max-Forwards: {v}"));
        if let Some(h) = &header {
            lines.push(h);
        }
        lines.extend([
            "From: <sip:alice@example.com>;tag=a1",
            "To: <sip:bob@example.com>",
            "Call-ID: maxfwd-1@127.0.0.1",
            "CSeq: 1 OPTIONS",
        ]);
        sip(&lines, "")
    };
    let decremented = |from: &str, to: &str| {
        with(Some(from)).replace(
            &format!("Max-Forwards: {from}\r\n"),
            &format!("Max-Forwards: {to}\r\n"),
        )
    };
    for (received, want_ret, want_forwarded) in [
        (with(Some("70")), 1, decremented("70", "69")),
        (with(Some("1")), 1, decremented("1", "0")),
        (with(Some("71")), 1, decremented("71", "70")),
        (with(Some("200")), 1, decremented("200", "70")),
        (
            with(None),
            2,
            with(None).replacen("Via:", "Max-Forwards: 10\r\nVia:", 1),
        ),
        (with(Some("0")), -1, with(Some("0"))),
        (with(Some("ten")), -2, with(Some("ten"))),
    ] {
        let inv = i
            .invoke("ksr_request_route", Some(message(&received)))
            .await;
        assert_eq!(ret(&inv), want_ret, "{received}");
        assert_eq!(forwarded(&inv), want_forwarded, "{received}");
    }
}

/// `record_route` puts `Record-Route: <sip:127.0.0.1:5060;lr>` at the top
/// (above any received Record-Route), and refuses replies.
#[tokio::test]
async fn rr_record_route() {
    let mut i = instance("function ksr_request_route() return KSR.rr.record_route() end").await;
    let inv = i.invoke("ksr_request_route", Some(invite())).await;
    assert_eq!(ret(&inv), 1);
    assert_eq!(
        forwarded(&inv),
        INVITE.replacen("Via:", "Record-Route: <sip:127.0.0.1:5060;lr>\r\nVia:", 1)
    );

    let with_rr = INVITE.replacen(
        "Contact:",
        "Record-Route: <sip:192.0.2.50;lr>\r\nContact:",
        1,
    );
    let inv = i.invoke("ksr_request_route", Some(message(&with_rr))).await;
    assert_eq!(ret(&inv), 1);
    assert_eq!(
        forwarded(&inv),
        with_rr.replacen(
            "Record-Route:",
            "Record-Route: <sip:127.0.0.1:5060;lr>\r\nRecord-Route:",
            1
        )
    );

    let inv = i
        .invoke("ksr_request_route", Some(message(&ringing(&[]))))
        .await;
    assert_eq!(ret(&inv), -1);
    assert_eq!(
        errors(&inv),
        strings(&["modules.lua:5: KSR.rr.record_route: only requests are record-routed"])
    );
}

/// A BYE with `route` headers, in dialog (To-tag) or not.
fn bye(in_dialog: bool, route: &[&str]) -> String {
    let to = if in_dialog {
        "To: <sip:bob@example.com>;tag=b2"
    } else {
        "To: <sip:bob@example.com>"
    };
    let mut lines = vec![
        "BYE sip:bob@192.0.2.20:5080 SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-lr",
        "Max-Forwards: 70",
    ];
    lines.extend_from_slice(route);
    lines.extend([
        "From: <sip:alice@example.com>;tag=a1",
        to,
        "Call-ID: lr-1@127.0.0.1",
        "CSeq: 2 BYE",
    ]);
    sip(&lines, "")
}

/// `loose_route` (RFC 3261 16.12, Kamailio rr): our own Route entry first
/// is removed and `$du` set to the next one (1); only ours in dialog:
/// removed, no `$du`, 1; only ours on an out-of-dialog (preloaded) request:
/// removed and -1; a foreign first Route stays and becomes `$du` (1); no
/// Route: -1.
#[tokio::test]
async fn rr_loose_route() {
    let mut i = instance(
        r#"function ksr_request_route()
    local r = KSR.rr.loose_route()
    say("$du", KSR.pv.get("$du"))
    return r
end"#,
    )
    .await;
    let ours = "Route: <sip:127.0.0.1:5060;lr>";
    let next = "Route: <sip:192.0.2.30:5070;lr>";
    let cases: Vec<(String, i32, Option<&str>, String)> = vec![
        (
            bye(
                true,
                &["Route: <sip:127.0.0.1:5060;lr>, <sip:next.example.com;lr;x=1>"],
            ),
            1,
            Some("sip:next.example.com;lr;x=1"),
            bye(true, &["Route: <sip:next.example.com;lr;x=1>"]),
        ),
        (
            bye(true, &[ours, next]),
            1,
            Some("sip:192.0.2.30:5070;lr"),
            bye(true, &[next]),
        ),
        (bye(true, &[ours]), 1, None, bye(true, &[])),
        (bye(false, &[ours]), -1, None, bye(false, &[])),
        (
            bye(true, &["Route: <sip:proxy.example.com;lr>", ours]),
            1,
            Some("sip:proxy.example.com;lr"),
            bye(true, &["Route: <sip:proxy.example.com;lr>", ours]),
        ),
        (bye(true, &[]), -1, None, bye(true, &[])),
    ];
    for (received, want_ret, want_du, want_forwarded) in cases {
        let inv = i
            .invoke("ksr_request_route", Some(message(&received)))
            .await;
        assert_eq!(ret(&inv), want_ret, "{received}");
        assert_eq!(dst_uri(&inv).as_deref(), want_du, "{received}");
        let seen = match want_du {
            Some(du) => format!("$du string {du}"),
            None => "$du nil nil".to_string(),
        };
        assert_eq!(logs(&inv), vec![seen], "{received}");
        assert_eq!(forwarded(&inv), want_forwarded, "{received}");
    }
}

/// `has_totag`, `is_request`, `is_reply`; `is_first_hop` is a request with
/// one Via, or a reply whose top Record-Route is ours (not sent from that
/// address, which would be a loop) or that has no Record-Route.
#[tokio::test]
async fn siputils_message_tests() {
    let mut i = instance(
        r#"function ksr_request_route()
    local s = KSR.siputils
    KSR.info(s.has_totag() .. " " .. s.is_request() .. " " .. s.is_reply() .. " " .. s.is_first_hop())
end"#,
    )
    .await;
    let two_vias = bye(true, &[]).replacen(
        "Via:",
        "Via: SIP/2.0/UDP 192.0.2.40:5060;branch=z9hG4bK-up\r\nVia:",
        1,
    );
    let our_rr = ["Record-Route: <sip:127.0.0.1:5060;lr>, <sip:192.0.2.50;lr>"];
    let cases = [
        (invite(), "-1 1 -1 1"),
        (message(&bye(true, &[])), "1 1 -1 1"),
        (message(&two_vias), "1 1 -1 -1"),
        (message(&ringing(&our_rr)), "1 -1 1 1"),
        (message(&ringing(&[])), "1 -1 1 1"),
        (
            message(&ringing(&["Record-Route: <sip:192.0.2.50;lr>"])),
            "1 -1 1 -1",
        ),
        (from_source(&ringing(&our_rr), local()), "1 -1 1 -1"),
    ];
    for (msg, want) in cases {
        let text = String::from_utf8_lossy(msg.sip.raw()).into_owned();
        let inv = i.invoke("ksr_request_route", Some(msg)).await;
        assert_eq!(logs(&inv), vec![want.to_string()], "{text}");
    }
}

/// `t_relay` records a `Tm` event with the destination (`$du`, else the
/// R-URI); the `t_on_*` functions arm callbacks (an empty name is refused);
/// `t_check_trans` finds no transaction.
#[tokio::test]
async fn tm_relay_callbacks_and_check_trans() {
    let inv = route(
        r#"function ksr_request_route()
    local r = {
        KSR.tm.t_on_branch("ksr_branch"),
        KSR.tm.t_on_reply("ksr_reply"),
        KSR.tm.t_on_failure("ksr_failure"),
        KSR.tm.t_on_branch_failure("ksr_branch_failure"),
        KSR.tm.t_on_reply(""),
        KSR.tm.t_check_trans(),
        KSR.tm.t_relay(),
    }
    KSR.setdsturi("sip:192.0.2.30:5090")
    r[#r + 1] = KSR.tm.t_relay()
    KSR.info(table.concat(r, " "))
end"#,
        invite(),
    )
    .await;
    let callback = |kind: CallbackKind, function: &str| Event::Callback {
        kind,
        function: function.into(),
    };
    let relay = |to: &str| Event::Tm {
        function: TmFunction::Relay,
        destination: Some(to.into()),
    };
    assert_eq!(
        actions(&inv),
        vec![
            callback(CallbackKind::Branch, "ksr_branch"),
            callback(CallbackKind::Reply, "ksr_reply"),
            callback(CallbackKind::Failure, "ksr_failure"),
            callback(CallbackKind::BranchFailure, "ksr_branch_failure"),
            relay("sip:bob@example.com"),
            Event::PvSet {
                name: "$du".into(),
                value: Some("sip:192.0.2.30:5090".into()),
            },
            relay("sip:192.0.2.30:5090"),
        ]
    );
    assert_eq!(
        logs(&inv),
        strings(&[
            "modules.lua:11: KSR.tm.t_on_reply: empty function name",
            "1 1 1 1 -1 -1 1 1",
        ])
    );
}

/// tm's transaction facts: t_is_set sees routes armed in this route and
/// before it, t_check_status matches the reply's status (or the failure
/// status the proxy sets) as a whole-string regular expression, the
/// timeout and cancel tests and tmx's route kinds read `Message::tm`.
#[tokio::test]
async fn tm_transaction_facts() {
    let inv = route(
        r#"function ksr_request_route()
    local before = KSR.tm.t_is_set("failure_route")
    KSR.tm.t_on_failure("f")
    KSR.info(table.concat({before, KSR.tm.t_is_set("failure_route"), KSR.tm.t_is_set("branch_route"),
        KSR.tm.t_is_set("bogus"), KSR.tmx.t_precheck_trans(), KSR.tmx.t_is_failure_route()}, " "))
end"#,
        invite(),
    )
    .await;
    let lines = logs(&inv);
    assert_eq!(lines.last().map(String::as_str), Some("-1 1 -1 -1 -1 -1"));
    assert!(
        lines[0].contains("KSR.tm.t_is_set: unknown route type \"bogus\""),
        "{lines:?}"
    );

    let mut failing = invite();
    failing.tm.status = Some(408);
    failing.tm.branch_timeout = true;
    failing.route = RouteType::Failure;
    failing.tm.canceled = true;
    failing.tm.armed = vec![CallbackKind::Branch];
    let inv = route(
        r#"function ksr_request_route()
    KSR.info(table.concat({KSR.tm.t_check_status("408"), KSR.tm.t_check_status("4[0-9][0-9]"),
        KSR.tm.t_check_status("40"), KSR.tm.t_check_status("486|408"), KSR.tm.t_branch_timeout(),
        KSR.tm.t_any_timeout(), KSR.tm.t_is_canceled(), KSR.tm.t_is_set("branch_route"),
        KSR.tmx.t_is_failure_route(), KSR.tmx.t_is_branch_route(), KSR.tm.t_check_status("(")}, " "))
end"#,
        failing,
    )
    .await;
    let lines = logs(&inv);
    assert_eq!(
        lines.last().map(String::as_str),
        Some("1 1 -1 1 1 -1 1 1 1 -1 -1")
    );
    assert!(
        lines[0].contains("KSR.tm.t_check_status: bad regular expression"),
        "{lines:?}"
    );
}
