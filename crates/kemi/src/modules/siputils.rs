//! `KSR.siputils`: tests on the SIP message.

use super::kemi;
use std::cmp::Ordering;
use std::net::IpAddr;

use kemibox_sip::{Params, Uri};

use crate::bindings::kemibox::ksr::siputils::Host;
use crate::{Ctx, Message, Myself};

/// Kamailio's `is_first_hop()`: a request with a single Via; a reply
/// without Record-Route, or whose top Record-Route is an IP address of ours
/// that the reply did not come from (that would be a local loop).
fn first_hop(m: &Message, myself: &Myself) -> bool {
    if m.sip.is_request() {
        return m.sip.via_count() == 1;
    }
    let Ok(record_routes) = m.sip.record_routes() else {
        return false;
    };
    let Some(top) = record_routes.first() else {
        return true;
    };
    let Ok(uri) = Uri::parse(top) else {
        return false;
    };
    let Ok(ip) = uri.host.trim_matches(['[', ']']).parse::<IpAddr>() else {
        return false;
    };
    let from_itself = ip == m.source.ip() && uri.port.unwrap_or(5060) == m.source.port();
    myself.matches(uri.host, uri.port) && !from_itself
}

/// Schemes Kamailio's URI parser accepts: sip, sips, tel, tels.
fn kamailio_uri(text: &str) -> Option<Uri<'_>> {
    Uri::parse(text).ok().filter(|u| {
        ["sip", "sips", "tel", "tels"]
            .iter()
            .any(|s| u.scheme.eq_ignore_ascii_case(s))
    })
}

/// The port as written (`""` when absent), as Kamailio compares it.
fn port_text(uri: &Uri<'_>) -> String {
    uri.port.map(|p| p.to_string()).unwrap_or_default()
}

/// Kamailio's `cmp_uri` (RFC 3261 19.1.4 as far as Kamailio goes).
fn same_uri(a: &Uri<'_>, b: &Uri<'_>) -> bool {
    if !a.scheme.eq_ignore_ascii_case(b.scheme)
        || a.user != b.user
        || a.password != b.password
        || port_text(a) != port_text(b)
        || !a.host.eq_ignore_ascii_case(b.host)
    {
        return false;
    }
    // Parameters that must match when only one URI has parameters.
    let special = |p: &Params<'_>| {
        ["user", "ttl", "method", "maddr"]
            .iter()
            .any(|n| p.contains(n))
    };
    if a.params.is_empty() && b.params.is_empty() {
        return true;
    }
    if (a.params.is_empty() && special(&b.params)) || (b.params.is_empty() && special(&a.params)) {
        return false;
    }
    a.params.iter().all(|pa| {
        b.params
            .iter()
            .filter(|pb| pb.name.eq_ignore_ascii_case(pa.name))
            .all(|pb| {
                pa.value
                    .unwrap_or("")
                    .eq_ignore_ascii_case(pb.value.unwrap_or(""))
            })
    })
}

/// Kamailio's `cmp_aor`: user, host and port (missing means 5060).
fn same_aor(a: &Uri<'_>, b: &Uri<'_>) -> bool {
    a.user == b.user
        && a.host.eq_ignore_ascii_case(b.host)
        && a.port.unwrap_or(5060) == b.port.unwrap_or(5060)
}

/// 1 equal, -1 different, -2 a value is not a URI (Kamailio's codes).
fn compare_uris(a: &str, b: &str, same: fn(&Uri<'_>, &Uri<'_>) -> bool) -> i32 {
    match (kamailio_uri(a), kamailio_uri(b)) {
        (Some(a), Some(b)) => kemi(same(&a, &b)),
        _ => -2,
    }
}

/// `uri` without its first parameter named `name` (case-insensitive);
/// `None` when it has no such parameter.
pub(super) fn without_param(uri: &Uri<'_>, name: &str) -> Option<String> {
    let position = uri
        .params
        .iter()
        .position(|p| p.name.eq_ignore_ascii_case(name))?;
    let mut base = uri.clone();
    base.params = Params::default();
    base.headers = Params::default();
    let mut text = base.to_string();
    for (i, p) in uri.params.iter().enumerate() {
        if i == position {
            continue;
        }
        text.push(';');
        text.push_str(p.name);
        if let Some(v) = p.value {
            text.push('=');
            text.push_str(v);
        }
    }
    for (i, h) in uri.headers.iter().enumerate() {
        text.push(if i == 0 { '?' } else { '&' });
        text.push_str(h.name);
        if let Some(v) = h.value {
            text.push('=');
            text.push_str(v);
        }
    }
    Some(text)
}

/// Kamailio's `is_alphanumex` check: -2 empty, -3 a character outside
/// letters, digits and `extra`, 1 otherwise.
fn alphanumeric(text: &str, extra: &str) -> i32 {
    if text.is_empty() {
        return -2;
    }
    let ok = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || extra.contains(c));
    if ok { 1 } else { -3 }
}

/// Headers of Kamailio's `options_reply` with the siputils defaults
/// (`options_accept`, `options_accept_encoding`, `options_accept_language`,
/// `options_support`).
const OPTIONS_HEADERS: [&str; 4] = [
    "Accept: */*",
    "Accept-Encoding: ",
    "Accept-Language: en",
    "Supported: ",
];

impl Ctx {
    /// The current R-URI, parsed by `read`; `None` (logged) when it does
    /// not parse.
    fn with_ruri<T>(&mut self, function: &str, read: impl FnOnce(&Uri<'_>) -> T) -> Option<T> {
        let ruri = self
            .message
            .as_ref()
            .filter(|m| m.sip.is_request())
            .and_then(Message::ruri)?;
        match Uri::parse(&ruri) {
            Ok(uri) => Some(read(&uri)),
            Err(e) => {
                self.script_error(function, format!("cannot parse R-URI {ruri:?}: {e}"));
                None
            }
        }
    }
}

impl Host for Ctx {
    async fn has_totag(&mut self) -> i32 {
        kemi(
            self.message
                .as_ref()
                .is_some_and(|m| m.sip.to().is_some_and(|t| t.tag().is_some())),
        )
    }
    async fn is_request(&mut self) -> i32 {
        kemi(self.message.as_ref().is_some_and(|m| m.sip.is_request()))
    }
    async fn is_reply(&mut self) -> i32 {
        kemi(self.message.as_ref().is_some_and(|m| !m.sip.is_request()))
    }
    async fn is_first_hop(&mut self) -> i32 {
        kemi(
            self.message
                .as_ref()
                .is_some_and(|m| first_hop(m, &self.myself)),
        )
    }
    async fn is_uri(&mut self, suri: String) -> i32 {
        kemi(kamailio_uri(&suri).is_some())
    }

    async fn uri_param(&mut self, sparam: String) -> i32 {
        let found = self.with_ruri("KSR.siputils.uri_param", |u| {
            u.params
                .iter()
                .find(|p| p.name == sparam)
                .is_some_and(|p| p.value.is_none_or(str::is_empty))
        });
        kemi(found == Some(true))
    }

    async fn uri_param_value(&mut self, sparam: String, svalue: String) -> i32 {
        let found = self.with_ruri("KSR.siputils.uri_param_value", |u| {
            u.params
                .iter()
                .find(|p| p.name == sparam)
                .is_some_and(|p| p.value.unwrap_or("") == svalue)
        });
        kemi(found == Some(true))
    }

    async fn uri_param_any(&mut self, sparam: String) -> i32 {
        let found = self.with_ruri("KSR.siputils.uri_param_any", |u| {
            u.params
                .iter()
                .any(|p| p.name.eq_ignore_ascii_case(&sparam))
        });
        kemi(found == Some(true))
    }

    async fn uri_param_rm(&mut self, sparam: String) -> i32 {
        const FUNCTION: &str = "KSR.siputils.uri_param_rm";
        match self.with_ruri(FUNCTION, |u| without_param(u, &sparam)) {
            None => -1,
            Some(None) => 1,
            Some(Some(uri)) => kemi(self.set_ruri(FUNCTION, uri)),
        }
    }

    async fn is_tel_number(&mut self, tval: String) -> i32 {
        let digits = match tval.strip_prefix('+') {
            Some(rest) if rest.starts_with(|c: char| ('1'..='9').contains(&c)) => rest,
            Some(_) => return -2,
            None => tval.as_str(),
        };
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            1
        } else {
            -2
        }
    }

    async fn is_numeric(&mut self, tval: String) -> i32 {
        if !tval.is_empty() && tval.bytes().all(|b| b.is_ascii_digit()) {
            1
        } else {
            -2
        }
    }

    async fn is_alphanum(&mut self, tval: String) -> i32 {
        alphanumeric(&tval, "")
    }

    async fn is_alphanumex(&mut self, tval: String, eset: String) -> i32 {
        alphanumeric(&tval, &eset)
    }

    async fn options_reply(&mut self) -> i32 {
        const FUNCTION: &str = "KSR.siputils.options_reply";
        let is_options = self
            .message
            .as_ref()
            .is_some_and(|m| m.sip.is_request() && m.sip.method_str() == "OPTIONS");
        if !is_options {
            self.script_error(FUNCTION, "called for a non-OPTIONS request");
            return -1;
        }
        match self.with_ruri(FUNCTION, |u| u.user.is_some_and(|s| !s.is_empty())) {
            None => return -1,
            Some(true) => {
                self.script_error(FUNCTION, "the R-URI contains a user");
                return -1;
            }
            Some(false) => {}
        }
        if let Some(m) = self.message.as_mut() {
            m.reply_headers
                .extend(OPTIONS_HEADERS.iter().map(|h| h.to_string()));
        }
        match self.reply(FUNCTION, 200, "OK".into(), false) {
            crate::REFUSED => return crate::REFUSED,
            r if r < 0 => return -1,
            _ => {}
        }
        // Kamailio returns 0 once the reply is sent.
        0
    }

    async fn cmp_uri(&mut self, uri1: String, uri2: String) -> i32 {
        compare_uris(&uri1, &uri2, same_uri)
    }

    async fn cmp_aor(&mut self, uri1: String, uri2: String) -> i32 {
        compare_uris(&uri1, &uri2, same_aor)
    }

    async fn cmp_hdr_name(&mut self, shname1: String, shname2: String) -> i32 {
        let order = shname1
            .to_ascii_lowercase()
            .as_bytes()
            .cmp(shname2.to_ascii_lowercase().as_bytes());
        match order {
            Ordering::Equal => 1,
            Ordering::Greater => -1,
            Ordering::Less => -2,
        }
    }

    async fn is_gruu(&mut self) -> i32 {
        let gr = self.with_ruri("KSR.siputils.is_gruu", |u| {
            u.param("gr").map(|v| v.is_some_and(|v| !v.is_empty()))
        });
        match gr.flatten() {
            Some(true) => 1,
            Some(false) => 2,
            None => -1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;
    use crate::testing::{INVITE, actions, ctx, invite_with, logs, ready};

    /// The request/reply tests and the To tag.
    #[test]
    fn message_kind_and_to_tag() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(c.is_request()), 1);
        assert_eq!(ready(c.is_reply()), -1);
        assert_eq!(ready(c.has_totag()), -1);
        let mut c = ctx(&invite_with(
            &[("To:", "To: <sip:bob@example.com>;tag=b1")],
            &[],
        ));
        assert_eq!(ready(c.has_totag()), 1);
        let mut c = ctx(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-2\r\n\
            From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>;tag=b1\r\n\
            Call-ID: c2\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(ready(c.is_request()), -1);
        assert_eq!(ready(c.is_reply()), 1);
    }

    /// A request is a first hop when it has one Via.
    #[test]
    fn first_hop_counts_vias() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(c.is_first_hop()), 1);
        let two = invite_with(&[], &["Via: SIP/2.0/UDP 198.51.100.9;branch=z9hG4bK-0"]);
        let mut c = ctx(&two);
        assert_eq!(ready(c.is_first_hop()), -1);
    }

    /// `cmp_uri` (1 equal, -1 different, -2 not a URI) compares host and
    /// parameter values without case; `cmp_aor` takes a missing port as
    /// 5060.
    #[test]
    fn uri_and_aor_comparison() {
        let mut c = ctx(INVITE);
        let mut cmp = |a: &str, b: &str| ready(c.cmp_uri(a.into(), b.into()));
        assert_eq!(
            cmp("sip:a@x.com;transport=udp", "sip:a@X.COM;transport=UDP"),
            1
        );
        assert_eq!(cmp("sip:a@x.com", "sip:A@x.com"), -1);
        assert_eq!(cmp("sip:a@x.com", "sip:a@x.com;user=phone"), -1);
        assert_eq!(cmp("sip:a@x.com", "sip:a@x.com;foo=1"), 1);
        assert_eq!(cmp("sip:a@x.com", "sip:a@x.com:5060"), -1);
        assert_eq!(cmp("http://x.com", "sip:x.com"), -2);
        let mut aor = |a: &str, b: &str| ready(c.cmp_aor(a.into(), b.into()));
        assert_eq!(aor("sip:a@x.com", "sip:a@X.com:5060;transport=tcp"), 1);
        assert_eq!(aor("sip:a@x.com", "sip:a@x.com:5080"), -1);
        assert_eq!(aor("sip:a@x.com", "nonsense"), -2);
    }

    /// R-URI parameters: presence, value, any case, removal (the R-URI is
    /// rewritten without it).
    #[test]
    fn ruri_parameters() {
        let raw = invite_with(
            &[(
                "INVITE ",
                "INVITE sip:bob@example.com;lr;transport=tcp SIP/2.0",
            )],
            &[],
        );
        let mut c = ctx(&raw);
        assert_eq!(ready(c.uri_param("lr".into())), 1);
        assert_eq!(ready(c.uri_param("transport".into())), -1);
        assert_eq!(
            ready(c.uri_param_value("transport".into(), "tcp".into())),
            1
        );
        assert_eq!(
            ready(c.uri_param_value("transport".into(), "udp".into())),
            -1
        );
        assert_eq!(ready(c.uri_param_any("TRANSPORT".into())), 1);
        assert_eq!(ready(c.uri_param_rm("transport".into())), 1);
        assert_eq!(
            crate::testing::rendered(&c).lines().next(),
            Some("INVITE sip:bob@example.com;lr SIP/2.0")
        );
        assert_eq!(ready(c.uri_param_any("transport".into())), -1);
        // Removing what is not there succeeds without a change.
        assert_eq!(ready(c.uri_param_rm("maddr".into())), 1);
        assert_eq!(
            actions(&c),
            vec![Event::PvSet {
                name: "$ru".into(),
                value: Some("sip:bob@example.com;lr".into()),
            }]
        );
    }

    /// Kamailio's character-class tests and their codes.
    #[test]
    fn character_classes() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(c.is_tel_number("+15551234".into())), 1);
        assert_eq!(ready(c.is_tel_number("5551234".into())), 1);
        assert_eq!(ready(c.is_tel_number("+0123".into())), -2);
        assert_eq!(ready(c.is_tel_number("+1-555".into())), -2);
        assert_eq!(ready(c.is_numeric("0042".into())), 1);
        assert_eq!(ready(c.is_numeric("".into())), -2);
        assert_eq!(ready(c.is_alphanum("abc123".into())), 1);
        assert_eq!(ready(c.is_alphanum("a-b".into())), -3);
        assert_eq!(ready(c.is_alphanum("".into())), -2);
        assert_eq!(ready(c.is_alphanumex("a-b_c".into(), "-_".into())), 1);
        assert_eq!(ready(c.is_alphanumex("a.b".into(), "-_".into())), -3);
    }

    /// Header names compare without case: 1 equal, -1 after, -2 before.
    #[test]
    fn header_name_comparison() {
        let mut c = ctx(INVITE);
        assert_eq!(ready(c.cmp_hdr_name("Via".into(), "VIA".into())), 1);
        assert_eq!(ready(c.cmp_hdr_name("To".into(), "From".into())), -1);
        assert_eq!(ready(c.cmp_hdr_name("From".into(), "To".into())), -2);
    }

    /// `options_reply` answers an OPTIONS to the proxy itself with 200 and
    /// the capability headers (0, as Kamailio), and refuses anything else.
    #[test]
    fn options_reply_answers_only_options_to_the_proxy() {
        let options = invite_with(
            &[
                ("INVITE ", "OPTIONS sip:proxy.example.com SIP/2.0"),
                ("CSeq:", "CSeq: 1 OPTIONS"),
            ],
            &[],
        );
        let mut c = ctx(&options);
        assert_eq!(ready(c.options_reply()), 0);
        assert_eq!(
            actions(&c),
            vec![Event::Reply {
                code: 200,
                reason: "OK".into(),
                stateful: false,
                headers: OPTIONS_HEADERS.iter().map(|h| h.to_string()).collect(),
            }]
        );

        let mut c = ctx(INVITE);
        assert_eq!(ready(c.options_reply()), -1);
        assert_eq!(
            logs(&c),
            vec!["KSR.siputils.options_reply: called for a non-OPTIONS request"]
        );
        let to_user = options.replace("OPTIONS sip:proxy", "OPTIONS sip:bob@proxy");
        let mut c = ctx(&to_user);
        assert_eq!(ready(c.options_reply()), -1);
        assert_eq!(
            logs(&c),
            vec!["KSR.siputils.options_reply: the R-URI contains a user"]
        );
        assert!(actions(&c).is_empty());
    }

    /// A GRUU R-URI: 1 with a `gr` value, 2 with a bare `gr`, -1 without.
    #[test]
    fn gruu() {
        let with = |ruri: &str| {
            let raw = invite_with(&[("INVITE ", &format!("INVITE {ruri} SIP/2.0"))], &[]);
            let mut c = ctx(&raw);
            ready(c.is_gruu())
        };
        assert_eq!(with("sip:bob@example.com;gr=urn:uuid:f81d"), 1);
        assert_eq!(with("sip:bob@example.com;gr"), 2);
        assert_eq!(with("sip:bob@example.com"), -1);
    }
}
