//! Via header values (RFC 3261 20.42, RFC 3581).

use crate::error::ParseError;
use crate::lex::{is_lws, is_token, is_token_byte, trim_lws};
use crate::params::{Params, parse_header_params};
use crate::uri::{parse_hostport, parse_port};

/// One Via entry: `SIP/2.0/UDP host:port;branch=...;rport`.
///
/// The proxy matches transactions on the branch, routes replies by the
/// sent-by / `received` / `rport` of the top entry, and stamps the top entry
/// with where a request really came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via<'a> {
    /// Protocol name, normally `SIP`.
    pub protocol: &'a str,
    /// Protocol version, normally `2.0`.
    pub version: &'a str,
    /// Transport (`UDP`, `TCP`, `TLS`, `WS`, ...), as written.
    pub transport: &'a str,
    /// Sent-by host (bracketed when IPv6).
    pub host: &'a str,
    /// Sent-by port, when given.
    pub port: Option<u16>,
    /// Via parameters in order.
    pub params: Params<'a>,
}

const BAD_VIA: ParseError = ParseError::new("invalid Via");

impl<'a> Via<'a> {
    /// Parses one Via entry (one element of a comma-separated Via value).
    pub fn parse(s: &'a str) -> Result<Via<'a>, ParseError> {
        let t = trim_lws(s);
        let head_end = t.find(';').unwrap_or(t.len());
        let head = t.get(..head_end).ok_or(BAD_VIA)?;
        let params = parse_header_params(t.get(head_end..).ok_or(BAD_VIA)?)?;
        let mut parts = head.splitn(3, '/');
        let protocol = trim_lws(parts.next().ok_or(BAD_VIA)?);
        let version = trim_lws(parts.next().ok_or(BAD_VIA)?);
        let rest = trim_lws(parts.next().ok_or(BAD_VIA)?);
        if !is_token(protocol.as_bytes()) || !is_token(version.as_bytes()) {
            return Err(BAD_VIA);
        }
        let transport_end = rest
            .bytes()
            .position(|b| !is_token_byte(b))
            .unwrap_or(rest.len());
        let transport = rest.get(..transport_end).ok_or(BAD_VIA)?;
        let sent_by = rest.get(transport_end..).ok_or(BAD_VIA)?;
        if transport.is_empty() || !sent_by.bytes().next().is_some_and(is_lws) {
            return Err(BAD_VIA);
        }
        let (host, port) = parse_hostport(trim_lws(sent_by))?;
        let via = Via {
            protocol,
            version,
            transport,
            host,
            port,
            params,
        };
        if let Some(Some(rport)) = via.params.get("rport") {
            parse_port(rport).ok_or(ParseError::new("invalid rport"))?;
        }
        Ok(via)
    }

    /// The `branch` parameter (transaction id, RFC 3261 17.2.3).
    pub fn branch(&self) -> Option<&'a str> {
        self.params.get("branch").flatten()
    }

    /// The `received` parameter: the source IP a previous hop saw.
    pub fn received(&self) -> Option<&'a str> {
        self.params.get("received").flatten()
    }

    /// The `rport` parameter (RFC 3581): `None` when absent, `Some(None)`
    /// when requested by the client (flag), `Some(Some(port))` when filled.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params.get("rport").map(|v| v.and_then(parse_port))
    }

    /// Looks a Via parameter up by name, ignoring case.
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        self.params.get(name)
    }
}

/// Where a request actually came from, used to stamp the top Via with
/// `received` and `rport` (RFC 3261 18.2.1, RFC 3581) so replies find their
/// way back through NATs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received<'a> {
    /// Source IP address (IPv6 without brackets).
    pub ip: &'a str,
    /// Source port.
    pub port: u16,
    /// Fill `rport` even when the client did not ask for it
    /// (Kamailio's `force_rport()`).
    pub force_rport: bool,
}

/// Rewrites one Via entry with `received`/`rport` per RFC 3581: `rport`
/// gets the source port when present (or forced), `received` is set when
/// the sent-by host differs from the source IP or `rport` is filled.
/// `None` when nothing needs to change or the entry cannot be parsed.
pub(crate) fn stamp_received(entry: &str, src: Received<'_>) -> Option<String> {
    let ip_ok = !src.ip.is_empty()
        && src
            .ip
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':');
    if !ip_ok {
        return None;
    }
    let via = Via::parse(entry).ok()?;
    let fill_rport = src.force_rport || via.rport().is_some();
    let host = via.host.trim_start_matches('[').trim_end_matches(']');
    let set_received = fill_rport || !host.eq_ignore_ascii_case(src.ip);
    if !fill_rport && !set_received {
        return None;
    }
    let t = trim_lws(entry);
    let head = t.get(..t.find(';').unwrap_or(t.len()))?.trim_end();
    let mut out = String::with_capacity(t.len() + src.ip.len() + 24);
    out.push_str(head);
    let mut rport_done = false;
    let mut received_done = false;
    for p in &via.params {
        if p.name.eq_ignore_ascii_case("rport") {
            out.push_str(&format!(";{}={}", p.name, src.port));
            rport_done = true;
        } else if p.name.eq_ignore_ascii_case("received") && set_received {
            out.push_str(&format!(";{}={}", p.name, src.ip));
            received_done = true;
        } else {
            out.push(';');
            out.push_str(p.name);
            if let Some(v) = p.value {
                out.push('=');
                out.push_str(v);
            }
        }
    }
    if set_received && !received_done {
        out.push_str(";received=");
        out.push_str(src.ip);
    }
    if fill_rport && !rport_done {
        out.push_str(&format!(";rport={}", src.port));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_typical_via() {
        let v =
            Via::parse("SIP/2.0/UDP pc33.atlanta.example.com:5066;branch=z9hG4bK776asdhds;rport")
                .unwrap();
        assert_eq!((v.protocol, v.version, v.transport), ("SIP", "2.0", "UDP"));
        assert_eq!((v.host, v.port), ("pc33.atlanta.example.com", Some(5066)));
        assert_eq!(v.branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.received(), None);
    }

    #[test]
    fn spaces_ipv6_and_values() {
        let v =
            Via::parse(" SIP / 2.0 / TCP  [2001:db8::9]:5070 ; received=2001:db8::1 ; rport=5071")
                .unwrap();
        assert_eq!(v.transport, "TCP");
        assert_eq!((v.host, v.port), ("[2001:db8::9]", Some(5070)));
        assert_eq!(v.received(), Some("2001:db8::1"));
        assert_eq!(v.rport(), Some(Some(5071)));
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            "SIP/2.0",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP ",
            "SIP/2.0/UDPhost",
            "SIP/2.0/UDP host:x",
            "SIP/2.0/UDP host;rport=abc",
            "/2.0/UDP host",
            "SIP/2.0/UDP host extra",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stamping() {
        let src = Received {
            ip: "198.51.100.7",
            port: 40000,
            force_rport: false,
        };
        assert_eq!(
            stamp_received("SIP/2.0/UDP 10.0.0.2:5060;rport;branch=z9hG4bKa", src).as_deref(),
            Some("SIP/2.0/UDP 10.0.0.2:5060;rport=40000;branch=z9hG4bKa;received=198.51.100.7")
        );
        assert_eq!(
            stamp_received("SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKa;received=1.1.1.1", src).as_deref(),
            Some("SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKa;received=198.51.100.7")
        );
        assert_eq!(
            stamp_received("SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKa", src),
            None
        );
        let forced = Received {
            force_rport: true,
            ..src
        };
        assert_eq!(
            stamp_received("SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKa", forced).as_deref(),
            Some("SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKa;received=198.51.100.7;rport=40000")
        );
        let bad_ip = Received {
            ip: "1.2.3.4\r\nX: y",
            ..src
        };
        assert_eq!(stamp_received("SIP/2.0/UDP h;branch=z", bad_ip), None);
    }
}
