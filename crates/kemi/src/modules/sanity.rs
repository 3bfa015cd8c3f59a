//! `KSR.sanity`: Kamailio's sanity checks on the received message, with
//! the module's default parameters (the failing check answers the request
//! itself, `noreply` is off, no extension is supported in Proxy-Require).

use kemibox_sip::{NameAddr, SipMessage, Uri, Via};

use crate::bindings::kemibox::ksr::sanity::Host;
use crate::{Ctx, Message};

/// Check bits of `sanity_check` (Kamailio's `SANITY_*`).
const RURI_SIP_VERSION: i32 = 1;
const RURI_SCHEME: i32 = 1 << 1;
const REQUIRED_HEADERS: i32 = 1 << 2;
const CSEQ_METHOD: i32 = 1 << 5;
const CSEQ_VALUE: i32 = 1 << 6;
const CONTENT_LENGTH: i32 = 1 << 7;
const EXPIRES_VALUE: i32 = 1 << 8;
const PROXY_REQUIRE: i32 = 1 << 9;
const PARSE_URIS: i32 = 1 << 10;
const DIGEST: i32 = 1 << 11;
const DUPTAGS: i32 = 1 << 12;
const AUTHORIZATION: i32 = 1 << 13;
const VIA1_HEADER: i32 = 1 << 14;
/// One past the highest check bit.
const MAX_CHECKS: i32 = 1 << 15;

/// URI bits for check 1024.
const URI_RURI: i32 = 1;
const URI_FROM: i32 = 1 << 1;
const URI_TO: i32 = 1 << 2;
const URI_CONTACT: i32 = 1 << 3;
const URI_MAX_CHECKS: i32 = 1 << 4;

/// Kamailio's `default_checks` and `uri_checks` defaults.
const DEFAULT_CHECKS: i32 = RURI_SIP_VERSION
    | RURI_SCHEME
    | REQUIRED_HEADERS
    | CSEQ_METHOD
    | CSEQ_VALUE
    | CONTENT_LENGTH
    | EXPIRES_VALUE
    | PROXY_REQUIRE
    | DIGEST;
const DEFAULT_URI_CHECKS: i32 = URI_RURI | URI_FROM | URI_TO;

/// A failed check: the reply the module sends (none when the message cannot
/// be answered meaningfully), and a header line for it.
struct Failure {
    reply: Option<(i32, &'static str)>,
    header: Option<String>,
}

impl Failure {
    fn reply(code: i32, reason: &'static str) -> Failure {
        Failure {
            reply: Some((code, reason)),
            header: None,
        }
    }

    fn silent() -> Failure {
        Failure {
            reply: None,
            header: None,
        }
    }
}

type Check = Result<(), Failure>;

fn bad(code: i32, reason: &'static str) -> Check {
    Err(Failure::reply(code, reason))
}

fn silent() -> Check {
    Err(Failure::silent())
}

/// Run the checks of `mflags` in Kamailio's order.
fn run_checks(m: &Message, mflags: i32, uflags: i32) -> Check {
    let request = m.sip.is_request();
    let on = |bit: i32| mflags & bit != 0;
    if request && on(RURI_SIP_VERSION) {
        ruri_sip_version(&m.sip)?;
    }
    if request && on(RURI_SCHEME) {
        ruri_scheme(m)?;
    }
    if on(REQUIRED_HEADERS) {
        required_headers(&m.sip)?;
    }
    if on(VIA1_HEADER) {
        via1_header(&m.sip)?;
    }
    // 8 (Via SIP version) and 16 (Via protocol) are disabled in Kamailio.
    if request && on(CSEQ_METHOD) {
        cseq_method(&m.sip)?;
    }
    if on(CSEQ_VALUE) {
        cseq_value(&m.sip)?;
    }
    if on(CONTENT_LENGTH) {
        content_length(&m.sip)?;
    }
    if on(EXPIRES_VALUE) {
        expires_value(&m.sip)?;
    }
    if request && on(PROXY_REQUIRE) {
        proxy_require(&m.sip)?;
    }
    if on(PARSE_URIS) {
        parse_uris(m, uflags)?;
    }
    if on(DIGEST) {
        credentials(&m.sip, true)?;
    }
    if on(AUTHORIZATION) {
        credentials(&m.sip, false)?;
    }
    if on(DUPTAGS) {
        duplicated_tags(&m.sip)?;
    }
    Ok(())
}

/// The first line of the message as received.
fn start_line(sip: &SipMessage) -> &str {
    let raw = sip.raw();
    let end = raw.iter().position(|&b| b == b'\r' || b == b'\n');
    std::str::from_utf8(&raw[..end.unwrap_or(raw.len())]).unwrap_or_default()
}

fn ruri_sip_version(sip: &SipMessage) -> Check {
    let version = start_line(sip).rsplit(' ').next().unwrap_or_default();
    let Some((_, number)) = version.split_once('/') else {
        return silent();
    };
    if number == "2.0" {
        Ok(())
    } else {
        bad(505, "Version Not Supported (R-URI)")
    }
}

/// Schemes Kamailio routes: sip, sips, tel, tels.
fn supported_scheme(uri: &Uri<'_>) -> bool {
    ["sip", "sips", "tel", "tels"]
        .iter()
        .any(|s| uri.scheme.eq_ignore_ascii_case(s))
}

fn ruri_scheme(m: &Message) -> Check {
    let ruri = m.ruri().unwrap_or_default();
    match Uri::parse(&ruri) {
        Err(_) => bad(400, "Bad Request URI"),
        Ok(uri) if !supported_scheme(&uri) => bad(416, "Unsupported URI Scheme in Request URI"),
        Ok(_) => Ok(()),
    }
}

fn required_headers(sip: &SipMessage) -> Check {
    let missing = ["From", "To", "Call-ID", "CSeq", "Via"]
        .iter()
        .any(|h| sip.header_count(h) == 0);
    if missing {
        bad(400, "Missing Required Header in Request")
    } else {
        Ok(())
    }
}

fn via1_header(sip: &SipMessage) -> Check {
    match sip.top_via() {
        Some(Via { host, .. }) if !host.is_empty() => Ok(()),
        _ => silent(),
    }
}

/// The CSeq number and method tokens; `Err` when there is no CSeq or it
/// has more than two tokens (Kamailio's parser refuses it: no reply).
fn cseq_parts(sip: &SipMessage) -> Result<(Option<&str>, Option<&str>), Failure> {
    let Some(value) = sip.header("CSeq") else {
        return Err(Failure::silent());
    };
    let mut tokens = value.split_ascii_whitespace();
    let (number, method) = (tokens.next(), tokens.next());
    if tokens.next().is_some() {
        return Err(Failure::silent());
    }
    Ok((number, method))
}

fn cseq_method(sip: &SipMessage) -> Check {
    let (_, method) = cseq_parts(sip)?;
    match method {
        None => bad(400, "Missing method in CSeq header"),
        Some(m) if m != sip.method_str() => bad(400, "CSeq method does not match request method"),
        Some(_) => Ok(()),
    }
}

/// A valid unsigned 32-bit decimal number (Kamailio's `str2valid_uint`).
fn valid_uint(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u32>().is_ok()
}

fn cseq_value(sip: &SipMessage) -> Check {
    match cseq_parts(sip)?.0 {
        None => bad(400, "Missing number in CSeq header"),
        Some(n) if !valid_uint(n) => bad(400, "CSeq number is illegal"),
        Some(_) => Ok(()),
    }
}

/// Bytes from the end of the headers to the end of what was received.
fn received_body_len(sip: &SipMessage) -> usize {
    let raw = sip.raw();
    let end_of_headers = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
        .unwrap_or(raw.len());
    raw.len() - end_of_headers
}

fn content_length(sip: &SipMessage) -> Check {
    match sip.content_length() {
        Some(declared) if declared != received_body_len(sip) => {
            bad(400, "Content-Length mis-match")
        }
        _ => Ok(()),
    }
}

fn expires_value(sip: &SipMessage) -> Check {
    match sip.header("Expires") {
        None => Ok(()),
        Some(v) if v.trim().is_empty() => bad(400, "Missing number in Expires header"),
        Some(v) if !valid_uint(v.trim()) => bad(400, "Expires value is illegal"),
        Some(_) => Ok(()),
    }
}

/// kemibox supports no extension a proxy must understand, so any
/// Proxy-Require option is refused (Kamailio's empty `proxy_require`).
fn proxy_require(sip: &SipMessage) -> Check {
    let Some(value) = sip.header("Proxy-Require") else {
        return Ok(());
    };
    let Some(option) = value.split(',').map(str::trim).find(|o| !o.is_empty()) else {
        return bad(400, "Bad Proxy Require Header");
    };
    Err(Failure {
        reply: Some((420, "Bad Extension")),
        header: Some(format!("Unsupported: {option}")),
    })
}

fn parse_uris(m: &Message, uflags: i32) -> Check {
    let sip = &m.sip;
    if sip.is_request() && uflags & URI_RURI != 0 {
        let ruri = m.ruri().unwrap_or_default();
        if Uri::parse(&ruri).is_err() {
            return bad(400, "Bad Request URI");
        }
    }
    for (bit, name, missing, bad_header, bad_uri) in [
        (
            URI_FROM,
            "From",
            "Missing From Header",
            "Bad From header",
            "Bad From URI",
        ),
        (
            URI_TO,
            "To",
            "Missing To Header",
            "Bad To URI",
            "Bad To URI",
        ),
    ] {
        if uflags & bit == 0 {
            continue;
        }
        let Some(value) = sip.header(name) else {
            return bad(400, missing);
        };
        let Ok(addr) = NameAddr::parse(value) else {
            return bad(400, bad_header);
        };
        if addr.parse_uri().is_err() {
            return bad(400, bad_uri);
        }
    }
    if uflags & URI_CONTACT != 0 && sip.header_count("Contact") > 0 {
        let Some(first) = sip.header_elements("Contact").next() else {
            return bad(400, "Bad Contact Header");
        };
        if first.trim() != "*" {
            let Ok(addr) = NameAddr::parse(first) else {
                return bad(400, "Bad Contact Header");
            };
            if addr.parse_uri().is_err() {
                return bad(400, "Bad Contact URI");
            }
        }
    }
    Ok(())
}

/// The `name=value` parameters of digest credentials (after `Digest`).
fn digest_params(rest: &str) -> Option<Vec<(String, String)>> {
    let mut params = Vec::new();
    for part in split_quoted(rest) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (name, value) = part.split_once('=')?;
        let value = value.trim();
        let value = match value.strip_prefix('"') {
            Some(v) => v.strip_suffix('"')?,
            None => value,
        };
        params.push((name.trim().to_ascii_lowercase(), value.to_string()));
    }
    Some(params)
}

/// Split at commas outside double quotes.
fn split_quoted(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Checks 2048 (`strict`: every credential must be digest) and 8192
/// (credentials of another scheme pass) on Authorization, then
/// Proxy-Authorization headers.
fn credentials(sip: &SipMessage, strict: bool) -> Check {
    let values = sip
        .header_values("Authorization")
        .chain(sip.header_values("Proxy-Authorization"));
    for value in values {
        let value = value.trim();
        let scheme_end = value.find([' ', '\t']).unwrap_or(value.len());
        let (scheme, rest) = value.split_at(scheme_end);
        if !scheme.eq_ignore_ascii_case("Digest") {
            // Kamailio: not applicable; a failure for check 2048, without
            // a reply.
            return if strict { silent() } else { Ok(()) };
        }
        let Some(params) = digest_params(rest) else {
            return bad(400, "Bad Auth Header");
        };
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let mut required = vec!["username", "realm", "nonce", "uri", "response"];
        if get("qop").is_some() {
            required.extend(["nc", "cnonce"]);
        }
        if required.iter().any(|p| get(p).is_none()) {
            return bad(400, "Bad Auth Credentials");
        }
        if get("username").is_some_and(str::is_empty) {
            return bad(400, "Auth Empty User");
        }
        if get("nonce").is_some_and(str::is_empty) {
            return bad(400, "Auth Empty Nonce");
        }
        if get("response").is_some_and(str::is_empty) {
            return bad(400, "Auth Empty Response");
        }
    }
    Ok(())
}

fn duplicated_tags(sip: &SipMessage) -> Check {
    for (name, reason) in [
        ("From", "Many From Tag Params"),
        ("To", "Many To Tag Params"),
    ] {
        let Some(addr) = sip.header(name).and_then(|v| NameAddr::parse(v).ok()) else {
            return silent();
        };
        let tags = addr
            .params
            .iter()
            .filter(|p| p.name.eq_ignore_ascii_case("tag"))
            .count();
        if tags > 1 {
            return bad(400, reason);
        }
    }
    Ok(())
}

impl Ctx {
    /// `sanity_check`: run the checks and on failure answer the request
    /// with the check's reply (not an ACK, nor a reply).
    fn sanity(&mut self, function: &str, mflags: i32, uflags: i32) -> i32 {
        if !(1..MAX_CHECKS).contains(&mflags) {
            self.script_error(
                function,
                format!("check flags {mflags} out of range 1..{}", MAX_CHECKS - 1),
            );
            return -1;
        }
        if !(0..URI_MAX_CHECKS).contains(&uflags) {
            self.script_error(
                function,
                format!("URI flags {uflags} out of range 0..{}", URI_MAX_CHECKS - 1),
            );
            return -1;
        }
        let Some(m) = self.message.as_mut() else {
            return -1;
        };
        let Err(failure) = run_checks(m, mflags, uflags) else {
            return 1;
        };
        let answerable = m.sip.is_request() && m.sip.method_str() != "ACK";
        if let (true, Some((code, reason))) = (answerable, failure.reply) {
            if let Some(header) = failure.header {
                m.reply_headers.push(header);
            }
            self.internal_reply(function, code, reason.into());
        }
        -1
    }
}

impl Host for Ctx {
    async fn sanity_check(&mut self, mflags: i32, uflags: i32) -> i32 {
        self.sanity("KSR.sanity.sanity_check", mflags, uflags)
    }
    async fn sanity_check_defaults(&mut self) -> i32 {
        self.sanity(
            "KSR.sanity.sanity_check_defaults",
            DEFAULT_CHECKS,
            DEFAULT_URI_CHECKS,
        )
    }
    async fn sanity_reply(&mut self) -> i32 {
        // With Kamailio's default `noreply=0` the failed check has already
        // answered; there is nothing left to send.
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;
    use crate::testing::{INVITE, actions, ctx, invite_with, logs, ready, reply};

    /// A well-formed request passes the defaults and every check: 1, and
    /// nothing is sent.
    #[test]
    fn a_well_formed_request_passes() {
        let mut c = ctx(&invite_with(&[], &["Expires: 300"]));
        assert_eq!(ready(c.sanity_check_defaults()), 1);
        assert_eq!(ready(c.sanity_check(MAX_CHECKS - 1, URI_MAX_CHECKS - 1)), 1);
        assert!(c.events.is_empty(), "{:?}", c.events);
    }

    /// Each failing check returns -1 and answers with Kamailio's reply.
    #[test]
    fn a_failing_check_answers_with_its_reply() {
        let cases = [
            (
                invite_with(&[("CSeq:", "CSeq: 1 BYE")], &[]),
                CSEQ_METHOD,
                reply(400, "CSeq method does not match request method"),
            ),
            (
                invite_with(&[("CSeq:", "CSeq: 1x INVITE")], &[]),
                CSEQ_VALUE,
                reply(400, "CSeq number is illegal"),
            ),
            (
                invite_with(&[("Call-ID:", "")], &[]),
                REQUIRED_HEADERS,
                reply(400, "Missing Required Header in Request"),
            ),
            (
                invite_with(&[], &["Expires: soon"]),
                EXPIRES_VALUE,
                reply(400, "Expires value is illegal"),
            ),
            (
                invite_with(&[("INVITE ", "INVITE http://example.com/bob SIP/2.0")], &[]),
                RURI_SCHEME,
                reply(416, "Unsupported URI Scheme in Request URI"),
            ),
            (
                invite_with(
                    &[("From:", "From: <sip:alice@example.com>;tag=1;tag=2")],
                    &[],
                ),
                DUPTAGS,
                reply(400, "Many From Tag Params"),
            ),
            (
                invite_with(
                    &[],
                    &["Authorization: Digest username=\"alice\", realm=\"example.com\""],
                ),
                DIGEST,
                reply(400, "Bad Auth Credentials"),
            ),
            (
                INVITE.replace("Content-Length: 0\r\n\r\n", "Content-Length: 2\r\n\r\nabcd"),
                CONTENT_LENGTH,
                reply(400, "Content-Length mis-match"),
            ),
        ];
        for (raw, check, expected) in cases {
            let mut c = ctx(&raw);
            assert_eq!(ready(c.sanity_check(check, 0)), -1, "check {check}");
            assert_eq!(actions(&c), vec![expected], "check {check}");
        }
    }

    /// An unsupported Proxy-Require extension is refused with 420 and an
    /// Unsupported header naming it.
    #[test]
    fn proxy_require_is_refused_with_unsupported() {
        let mut c = ctx(&invite_with(&[], &["Proxy-Require: foo, bar"]));
        assert_eq!(ready(c.sanity_check(PROXY_REQUIRE, 0)), -1);
        assert_eq!(
            actions(&c),
            vec![Event::Reply {
                code: 420,
                reason: "Bad Extension".into(),
                stateful: false,
                headers: vec!["Unsupported: foo".into()],
            }]
        );
    }

    /// The URI checks (1024) cover the R-URI, From, To and Contact as the
    /// URI flags ask.
    #[test]
    fn uri_checks_follow_the_uri_flags() {
        let bad_contact = invite_with(&[("Contact:", "Contact: <sip:@>")], &[]);
        let mut c = ctx(&bad_contact);
        assert_eq!(
            ready(c.sanity_check(PARSE_URIS, URI_RURI | URI_FROM | URI_TO)),
            1
        );
        assert_eq!(ready(c.sanity_check(PARSE_URIS, URI_CONTACT)), -1);
        assert_eq!(actions(&c), vec![reply(400, "Bad Contact URI")]);
    }

    /// An ACK that fails a check is not answered; -1 all the same.
    #[test]
    fn a_failing_ack_is_not_answered() {
        let ack = invite_with(
            &[
                ("INVITE ", "ACK sip:bob@example.com SIP/2.0"),
                ("CSeq:", "CSeq: 1 INVITE"),
            ],
            &[],
        );
        let mut c = ctx(&ack);
        assert_eq!(ready(c.sanity_check(CSEQ_METHOD, 0)), -1);
        assert!(c.events.is_empty(), "{:?}", c.events);
    }

    /// Flags out of range are the script's mistake: -1, logged, no reply.
    #[test]
    fn flags_out_of_range_are_refused() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(c.sanity_check(0, 7)), -1);
        assert_eq!(ready(c.sanity_check(1, 16)), -1);
        assert_eq!(
            logs(&c),
            vec![
                "KSR.sanity.sanity_check: check flags 0 out of range 1..32767",
                "KSR.sanity.sanity_check: URI flags 16 out of range 0..15",
            ]
        );
        assert!(actions(&c).is_empty());
    }

    /// With the default `noreply=0` the check already answered:
    /// `sanity_reply` has nothing to send.
    #[test]
    fn sanity_reply_sends_nothing_more() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(c.sanity_reply()), 1);
        assert!(c.events.is_empty());
    }
}
