//! `KSR.nathelper`: Kamailio's NAT traversal helpers. A UA behind NAT
//! writes its private address into Contact and Via; these functions detect
//! that and make requests and replies go to the address its messages
//! really come from (the rewritten Contact, an `alias` parameter that
//! `handle_ruri_alias` turns into `$du`, or the registrar's `received`).

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use kemibox_sip::{Contacts, Params, Uri};

use super::kemi;
use super::siputils::without_param;
use crate::bindings::kemibox::ksr::nathelper::Host;
use crate::{Ctx, Message, Transport};

/// Transport names by Kamailio's protocol number minus one: the `PROTO`
/// of an `alias=IP~PORT~PROTO` parameter is this number.
const PROTOS: [&str; 6] = ["udp", "tcp", "tls", "sctp", "ws", "wss"];

/// RFC 1918, RFC 6598 (carrier-grade NAT) and IPv6 unique-local
/// addresses: what a UA behind NAT puts in its Contact and Via.
pub(super) fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// Where a message came from as the SIP URI `sip:IP:PORT;transport=PROTO`:
/// the registrar's `received` address of a binding behind NAT.
pub(super) fn source_uri(source: SocketAddr, transport: Transport) -> String {
    format!(
        "sip:{}:{};transport={}",
        host_text(source.ip()),
        source.port(),
        transport.as_str()
    )
}

/// An IP address as a URI host (IPv6 in brackets).
fn host_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}

/// The IP address a URI or Via host names, `None` for a hostname.
fn ip_of(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Kamailio's protocol number of a transport name (case-insensitive).
fn proto_number(name: &str) -> Option<usize> {
    PROTOS
        .iter()
        .position(|p| p.eq_ignore_ascii_case(name))
        .map(|i| i + 1)
}

/// Kamailio's protocol number of the transport a message arrived on.
fn transport_number(transport: Transport) -> usize {
    match transport {
        Transport::Udp => 1,
        Transport::Tcp => 2,
    }
}

/// The transport a Contact URI asks for: its `transport` parameter, else
/// TLS for `sips:` and UDP otherwise (as a missing parameter means).
fn uri_proto(uri: &Uri<'_>) -> Option<usize> {
    match uri.param("transport").flatten() {
        Some(t) => proto_number(t),
        None if uri.scheme.eq_ignore_ascii_case("sips") => Some(3),
        None => Some(1),
    }
}

/// `uri` with the parameter `;name=value` added after its others.
fn with_param(uri: &Uri<'_>, name: &str, value: &str) -> String {
    let mut base = uri.clone();
    base.headers = Params::default();
    let mut text = format!("{base};{name}={value}");
    for (i, h) in uri.headers.iter().enumerate() {
        text.push(if i == 0 { '?' } else { '&' });
        text.push_str(h.name);
        if let Some(v) = h.value {
            text.push('=');
            text.push_str(v);
        }
    }
    text
}

/// The `c=` addresses of the SDP body (none without an SDP body).
fn sdp_addresses(m: &Message) -> Vec<IpAddr> {
    let is_sdp = m.sip.content_type().is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
    });
    if !is_sdp {
        return Vec::new();
    }
    String::from_utf8_lossy(m.sip.body())
        .lines()
        .filter_map(|line| {
            let mut parts = line.trim().strip_prefix("c=")?.split_ascii_whitespace();
            let address = parts.nth(2)?.split('/').next()?;
            address.parse().ok()
        })
        .collect()
}

/// The first Contact of a message, located for rewriting.
struct FirstContact<'m> {
    /// Position of its header among the received headers.
    index: usize,
    /// The header name as received (`Contact` or `m`).
    name: &'m str,
    /// The whole header value (it may hold further contacts).
    value: &'m str,
    /// Where the URI text lies in `value`.
    range: Range<usize>,
    /// The URI.
    uri: Uri<'m>,
}

/// Whether a received header name is Contact (or its compact form).
fn is_contact_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("Contact") || name.eq_ignore_ascii_case("m")
}

/// The message's first Contact, when it can be rewritten: present,
/// parsable, in the first Contact header, not removed or rewritten yet.
fn first_contact(m: &Message) -> Result<FirstContact<'_>, &'static str> {
    let Ok(Contacts::List(list)) = m.sip.contacts() else {
        return Err("no usable Contact");
    };
    let contact = list.into_iter().next().ok_or("no Contact")?;
    let uri = contact.parse_uri().map_err(|_| "unparsable Contact URI")?;
    // The URI is a slice of its header's value: find that header and
    // where in its value the URI lies.
    let at = contact.uri.as_ptr() as usize;
    let (index, name, value, start) = m
        .sip
        .headers()
        .enumerate()
        .find_map(|(i, (name, value))| {
            let start = at.checked_sub(value.as_ptr() as usize)?;
            (start + contact.uri.len() <= value.len()).then_some((i, name, value, start))
        })
        .ok_or("Contact header not found")?;
    let earlier = m.sip.headers().take(index).any(|(n, _)| is_contact_name(n));
    if earlier || m.edits.is_removed(index) {
        return Err("the first Contact header was removed or rewritten already");
    }
    Ok(FirstContact {
        index,
        name,
        value,
        range: start..start + contact.uri.len(),
        uri,
    })
}

/// Replace the URI of the first Contact with `new_uri` in the forwarded
/// message: the header is removed and written again in its place.
fn rewrite_contact(m: &mut Message, new_uri: &str) -> Result<(), &'static str> {
    let (index, line) = {
        let c = first_contact(m)?;
        let value = format!(
            "{}{new_uri}{}",
            &c.value[..c.range.start],
            &c.value[c.range.end..]
        );
        (c.index, format!("{}: {value}", c.name))
    };
    match m.edits.insert_before(&m.sip, "Contact", &line) {
        Ok(true) if m.edits.remove_header_at(&m.sip, index) => Ok(()),
        _ => Err("cannot rewrite the Contact header"),
    }
}

/// The alias parameter value `IP~PORT~PROTO` for the message's source.
fn source_alias(m: &Message) -> String {
    format!(
        "{}~{}~{}",
        host_text(m.source.ip()),
        m.source.port(),
        transport_number(m.transport)
    )
}

/// Read an alias value `IP~PORT~PROTO` as the URI to send to.
fn alias_destination(alias: &str) -> Option<String> {
    let mut parts = alias.split('~');
    let (Some(ip), Some(port), Some(proto), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let ip = ip_of(ip)?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let proto = PROTOS.get(proto.parse::<usize>().ok()?.checked_sub(1)?)?;
    Some(format!("sip:{}:{port};transport={proto}", host_text(ip)))
}

/// One of Kamailio's `nat_uac_test` bits: whether the message looks
/// behind NAT by that test.
fn nat_test(m: &Message, bit: i32) -> bool {
    let source = m.source;
    let contact = || {
        m.sip
            .contacts()
            .ok()
            .and_then(|c| match c {
                Contacts::List(list) => list.into_iter().next(),
                Contacts::Star => None,
            })
            .and_then(|c| c.parse_uri().ok())
    };
    let via = || m.sip.top_via();
    match bit {
        1 => contact().is_some_and(|u| ip_of(u.host).is_some_and(is_private)),
        2 => via().is_some_and(|v| ip_of(v.host) != Some(source.ip())),
        4 => via().is_some_and(|v| ip_of(v.host).is_some_and(is_private)),
        8 => sdp_addresses(m).into_iter().any(is_private),
        16 => via().is_some_and(|v| v.port.unwrap_or(5060) != source.port()),
        32 => is_private(source.ip()),
        128 => contact().is_some_and(|u| u.port.unwrap_or(5060) != source.port()),
        256 => sdp_addresses(m).into_iter().any(|ip| ip != source.ip()),
        // 64 (WebSocket): kemibox has no WebSocket transport.
        _ => false,
    }
}

impl Ctx {
    /// Add `;alias=<value>` to the first Contact URI and return 1. Without
    /// a `value` the alias is the source, and a Contact that already names
    /// the source (IP, port and transport) is left alone, returning 2.
    fn add_alias(&mut self, function: &str, value: Option<String>) -> i32 {
        let Some(m) = self.message.as_mut() else {
            return -1;
        };
        let result = first_contact(m).map(|c| {
            let same = ip_of(c.uri.host) == Some(m.source.ip())
                && c.uri.port.unwrap_or(5060) == m.source.port()
                && uri_proto(&c.uri) == Some(transport_number(m.transport));
            match &value {
                None if same => None,
                None => Some(with_param(&c.uri, "alias", &source_alias(m))),
                Some(v) => Some(with_param(&c.uri, "alias", v)),
            }
        });
        let outcome = match result {
            Ok(None) => Ok(2),
            Ok(Some(uri)) => rewrite_contact(m, &uri).map(|()| 1),
            Err(e) => Err(e),
        };
        outcome.unwrap_or_else(|e| {
            self.script_error(function, e);
            -1
        })
    }
}

impl Host for Ctx {
    async fn nat_uac_test(&mut self, iflags: i32) -> i32 {
        let Some(m) = self.message.as_ref() else {
            return -1;
        };
        let found = (0..9)
            .map(|shift| 1 << shift)
            .any(|bit| iflags & bit != 0 && nat_test(m, bit));
        kemi(found)
    }

    async fn fix_nated_contact(&mut self) -> i32 {
        const FUNCTION: &str = "KSR.nathelper.fix_nated_contact";
        let Some(m) = self.message.as_mut() else {
            return -1;
        };
        let host = host_text(m.source.ip());
        let outcome = first_contact(m)
            .map(|c| {
                c.uri
                    .with_host(&host)
                    .with_port(Some(m.source.port()))
                    .to_string()
            })
            .and_then(|uri| rewrite_contact(m, &uri));
        match outcome {
            Ok(()) => 1,
            Err(e) => {
                self.script_error(FUNCTION, e);
                -1
            }
        }
    }

    async fn fix_nated_register(&mut self) -> i32 {
        match self.message.as_mut() {
            Some(m) => {
                m.force_received = true;
                1
            }
            None => -1,
        }
    }

    async fn set_contact_alias(&mut self) -> i32 {
        match self.add_alias("KSR.nathelper.set_contact_alias", None) {
            2 => 1,
            rc => rc,
        }
    }

    async fn add_contact_alias(&mut self) -> i32 {
        self.add_alias("KSR.nathelper.add_contact_alias", None)
    }

    async fn add_contact_alias_addr(&mut self, ip: String, port: String, proto: String) -> i32 {
        const FUNCTION: &str = "KSR.nathelper.add_contact_alias_addr";
        let ip = ip_of(&ip);
        let port = port.parse::<u16>().ok().filter(|p| *p != 0);
        let (Some(ip), Some(port), Some(proto)) = (ip, port, proto_number(&proto)) else {
            self.script_error(FUNCTION, "bad IP address, port or protocol");
            return -1;
        };
        let value = format!("{}~{port}~{proto}", host_text(ip));
        self.add_alias(FUNCTION, Some(value))
    }

    async fn handle_ruri_alias(&mut self) -> i32 {
        const FUNCTION: &str = "KSR.nathelper.handle_ruri_alias";
        let Some(ruri) = self
            .message
            .as_ref()
            .filter(|m| m.sip.is_request())
            .and_then(Message::ruri)
        else {
            return -1;
        };
        let Ok(uri) = Uri::parse(&ruri) else {
            self.script_error(FUNCTION, format!("cannot parse R-URI {ruri:?}"));
            return -1;
        };
        let Some(alias) = uri.param("alias") else {
            return 2;
        };
        let (Some(destination), Some(rest)) = (
            alias.and_then(alias_destination),
            without_param(&uri, "alias"),
        ) else {
            self.script_error(FUNCTION, format!("bad alias parameter in {ruri:?}"));
            return -1;
        };
        kemi(self.set_ruri(FUNCTION, rest) && self.set_dst_uri(FUNCTION, Some(destination)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{INVITE, ctx, invite_with, message, ready, rendered};

    /// An INVITE from a phone behind NAT: private Contact and Via, from
    /// 192.0.2.7:5070 as the proxy sees it.
    fn natted() -> String {
        invite_with(
            &[
                ("Via:", "Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK-1"),
                ("Contact:", "Contact: <sip:alice@10.0.0.5:5062>;expires=60"),
            ],
            &[],
        )
    }

    /// Each `nat_uac_test` bit by itself, on a natted and a direct phone.
    #[test]
    fn nat_tests_by_bit() {
        let mut c = ctx(&natted());
        for (bit, expected) in [
            (1, 1),
            (2, 1),
            (4, 1),
            (16, 1),
            (32, -1),
            (64, -1),
            (128, 1),
        ] {
            assert_eq!(ready(c.nat_uac_test(bit)), expected, "bit {bit}");
        }
        let mut direct = ctx(INVITE);
        assert_eq!(ready(direct.nat_uac_test(1 | 2 | 4 | 16 | 32 | 128)), -1);
    }

    /// `fix_nated_contact` puts the source address in the first Contact,
    /// keeping the rest of the header.
    #[test]
    fn fix_nated_contact_uses_the_source() {
        let mut c = ctx(&natted());
        assert_eq!(ready(c.fix_nated_contact()), 1);
        let out = rendered(&c);
        assert!(
            out.contains("Contact: <sip:alice@192.0.2.7:5070>;expires=60\r\n"),
            "{out}"
        );
        assert!(!out.contains("10.0.0.5:5062>"), "{out}");
        assert_eq!(ready(c.fix_nated_register()), 1);
        assert!(message(&mut c).force_received);
    }

    /// The alias names the source (`IP~PORT~PROTO`); a Contact that
    /// already names it is left alone (2, or 1 for `set_contact_alias`).
    #[test]
    fn contact_alias() {
        let mut c = ctx(&natted());
        assert_eq!(ready(c.add_contact_alias()), 1);
        let out = rendered(&c);
        assert!(
            out.contains("<sip:alice@10.0.0.5:5062;alias=192.0.2.7~5070~1>"),
            "{out}"
        );
        let mut direct = ctx(INVITE);
        assert_eq!(ready(direct.add_contact_alias()), 2);
        assert_eq!(ready(direct.set_contact_alias()), 1);
        assert_eq!(rendered(&direct), INVITE);
        assert_eq!(
            ready(direct.add_contact_alias_addr("192.0.2.9".into(), "0".into(), "udp".into())),
            -1
        );
    }

    /// An R-URI alias becomes `$du`, and leaves the R-URI; none: 2.
    #[test]
    fn ruri_alias_becomes_the_destination() {
        let raw = invite_with(
            &[(
                "INVITE ",
                "INVITE sip:alice@10.0.0.5:5062;alias=192.0.2.7~5070~2 SIP/2.0",
            )],
            &[],
        );
        let mut c = ctx(&raw);
        assert_eq!(ready(c.handle_ruri_alias()), 1);
        assert_eq!(
            message(&mut c).dst_uri.as_deref(),
            Some("sip:192.0.2.7:5070;transport=tcp")
        );
        assert!(rendered(&c).starts_with("INVITE sip:alice@10.0.0.5:5062 SIP/2.0\r\n"));
        let mut plain = ctx(INVITE);
        assert_eq!(ready(plain.handle_ruri_alias()), 2);
    }
}
