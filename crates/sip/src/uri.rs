//! SIP, SIPS, tel and generic URIs (RFC 3261 19.1, RFC 3966).

use std::fmt;

use crate::error::ParseError;
use crate::params::{Param, Params};

/// The kind of a URI scheme, for code that must treat SIP URIs specially
/// (routing, `is_myself`) while still carrying other schemes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `sip:`
    Sip,
    /// `sips:`
    Sips,
    /// `tel:` (RFC 3966)
    Tel,
    /// Any other scheme (`urn:`, `http:`, ...), carried opaquely.
    Other,
}

/// A parsed URI borrowing from the text it was parsed from.
///
/// Routing scripts read and rewrite URI parts (`$rU`, `$rd`, `sethost`);
/// borrowing keeps reads free, and the `with_*` helpers build modified
/// copies whose [`Display`](fmt::Display) gives the new URI string.
///
/// For `tel:` and other non-SIP schemes the part before the parameters
/// (the telephone number, or the opaque part) is in [`Uri::user`] and
/// [`Uri::host`] is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri<'a> {
    /// Scheme as written (`sip`, `SIP`, `tel`, ...), without the colon.
    pub scheme: &'a str,
    /// User part; for non-SIP schemes the number or opaque part.
    pub user: Option<&'a str>,
    /// Password after `user:` (deprecated by RFC 3261 but still seen).
    pub password: Option<&'a str>,
    /// Host: a hostname, an IPv4 address or a bracketed IPv6 reference
    /// (`[2001:db8::1]`); empty for non-SIP schemes.
    pub host: &'a str,
    /// Port, when given.
    pub port: Option<u16>,
    /// URI parameters (`;lr`, `;transport=tcp`) in order.
    pub params: Params<'a>,
    /// URI headers (`?subject=x&priority=urgent`) in order.
    pub headers: Params<'a>,
}

const BAD_URI: ParseError = ParseError::new("invalid URI");

impl<'a> Uri<'a> {
    /// Parses a URI. The text must be the bare URI (no `<>`, no white
    /// space); `sip:` and `sips:` URIs need a valid host, an optional port
    /// in range, and non-empty parameters.
    pub fn parse(s: &'a str) -> Result<Uri<'a>, ParseError> {
        if s.bytes()
            .any(|b| b <= b' ' || b == 0x7f || matches!(b, b'<' | b'>' | b'"'))
        {
            return Err(BAD_URI);
        }
        let (scheme, rest) = s
            .split_once(':')
            .ok_or(ParseError::new("missing URI scheme"))?;
        let mut sb = scheme.bytes();
        let scheme_ok = sb.next().is_some_and(|b| b.is_ascii_alphabetic())
            && sb.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !scheme_ok {
            return Err(ParseError::new("invalid URI scheme"));
        }
        if rest.is_empty() {
            return Err(BAD_URI);
        }
        let kind = scheme_kind(scheme);
        let (main, tail) = match kind {
            Scheme::Sip | Scheme::Sips => {
                // The user part may itself contain ';' (telephone-subscriber
                // parameters), so the host part starts after the '@'.
                let host_start = rest.find('@').map_or(0, |at| at + 1);
                let split = rest
                    .get(host_start..)
                    .and_then(|h| h.find([';', '?']))
                    .map_or(rest.len(), |p| p + host_start);
                (rest.get(..split), rest.get(split..))
            }
            Scheme::Tel | Scheme::Other => {
                let split = rest.find([';', '?']).unwrap_or(rest.len());
                (rest.get(..split), rest.get(split..))
            }
        };
        let (main, tail) = (main.ok_or(BAD_URI)?, tail.ok_or(BAD_URI)?);
        let (params_part, headers_part) = match tail.split_once('?') {
            Some((p, h)) => (p, Some(h)),
            None => (tail, None),
        };
        let params = parse_list(params_part.strip_prefix(';'), ';')?;
        let headers = parse_list(headers_part, '&')?;
        let mut uri = Uri {
            scheme,
            user: None,
            password: None,
            host: "",
            port: None,
            params,
            headers,
        };
        match kind {
            Scheme::Sip | Scheme::Sips => {
                let hostport = match main.split_once('@') {
                    Some((userinfo, hostport)) => {
                        let (user, password) = match userinfo.split_once(':') {
                            Some((u, p)) => (u, Some(p)),
                            None => (userinfo, None),
                        };
                        if user.is_empty() {
                            return Err(ParseError::new("empty URI user"));
                        }
                        uri.user = Some(user);
                        uri.password = password;
                        hostport
                    }
                    None => main,
                };
                let (host, port) = parse_hostport(hostport)?;
                uri.host = host;
                uri.port = port;
            }
            Scheme::Tel | Scheme::Other => {
                if main.is_empty() {
                    return Err(BAD_URI);
                }
                uri.user = Some(main);
            }
        }
        Ok(uri)
    }

    /// The scheme classified case-insensitively.
    pub fn scheme_kind(&self) -> Scheme {
        scheme_kind(self.scheme)
    }

    /// Looks a URI parameter up by name, ignoring case: `None` when absent,
    /// `Some(None)` for a flag such as `lr`.
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        self.params.get(name)
    }

    /// A copy with another user part (`None` removes it, and the password).
    pub fn with_user<'b>(&self, user: Option<&'b str>) -> Uri<'b>
    where
        'a: 'b,
    {
        let mut uri: Uri<'b> = self.clone();
        uri.user = user;
        if user.is_none() {
            uri.password = None;
        }
        uri
    }

    /// A copy with another host. The caller supplies a valid host
    /// (bracket IPv6 addresses).
    pub fn with_host<'b>(&self, host: &'b str) -> Uri<'b>
    where
        'a: 'b,
    {
        let mut uri: Uri<'b> = self.clone();
        uri.host = host;
        uri
    }

    /// A copy with another port (`None` removes it).
    pub fn with_port(&self, port: Option<u16>) -> Uri<'a> {
        let mut uri = self.clone();
        uri.port = port;
        uri
    }
}

impl fmt::Display for Uri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme)?;
        match self.scheme_kind() {
            Scheme::Sip | Scheme::Sips => {
                if let Some(user) = self.user {
                    f.write_str(user)?;
                    if let Some(password) = self.password {
                        write!(f, ":{password}")?;
                    }
                    f.write_str("@")?;
                }
                f.write_str(self.host)?;
                if let Some(port) = self.port {
                    write!(f, ":{port}")?;
                }
            }
            Scheme::Tel | Scheme::Other => f.write_str(self.user.unwrap_or(""))?,
        }
        for p in &self.params {
            write_param(f, ";", p)?;
        }
        for (i, h) in self.headers.iter().enumerate() {
            write_param(f, if i == 0 { "?" } else { "&" }, h)?;
        }
        Ok(())
    }
}

fn write_param(f: &mut fmt::Formatter<'_>, sep: &str, p: &Param<'_>) -> fmt::Result {
    f.write_str(sep)?;
    f.write_str(p.name)?;
    if let Some(v) = p.value {
        write!(f, "={v}")?;
    }
    Ok(())
}

fn scheme_kind(scheme: &str) -> Scheme {
    if scheme.eq_ignore_ascii_case("sip") {
        Scheme::Sip
    } else if scheme.eq_ignore_ascii_case("sips") {
        Scheme::Sips
    } else if scheme.eq_ignore_ascii_case("tel") {
        Scheme::Tel
    } else {
        Scheme::Other
    }
}

/// Parses `a;b=c` (with `sep` = `;`) or `a=b&c=d` (with `&`).
fn parse_list(s: Option<&str>, sep: char) -> Result<Params<'_>, ParseError> {
    let Some(s) = s else {
        return Ok(Params::default());
    };
    let mut out = Vec::new();
    for item in s.split(sep) {
        let (name, value) = match item.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (item, None),
        };
        if name.is_empty() {
            return Err(ParseError::new("empty URI parameter"));
        }
        out.push(Param { name, value });
    }
    Ok(Params::from_vec(out))
}

/// Parses `host[:port]` where host is a hostname, IPv4 address or
/// bracketed IPv6 reference. Shared with the Via sent-by.
pub(crate) fn parse_hostport(s: &str) -> Result<(&str, Option<u16>), ParseError> {
    const BAD_HOST: ParseError = ParseError::new("invalid host");
    let (host, port) = if s.starts_with('[') {
        let close = s.find(']').ok_or(BAD_HOST)?;
        let host = s.get(..=close).ok_or(BAD_HOST)?;
        let inner = host.get(1..close).ok_or(BAD_HOST)?;
        let v6_ok = inner.contains(':')
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !v6_ok {
            return Err(BAD_HOST);
        }
        let after = s.get(close + 1..).ok_or(BAD_HOST)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(BAD_HOST)?),
        };
        (host, port)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let host_ok = host.starts_with('[')
        || (!host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
    if !host_ok {
        return Err(BAD_HOST);
    }
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p).ok_or(ParseError::new("invalid port"))?),
    };
    Ok((host, port))
}

/// Parses a decimal port number (1 to 5 digits, at most 65535).
pub(crate) fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_sip_uri() {
        let s = "sip:alice:secret@atlanta.example.com:5061;transport=tcp;lr?subject=project%20x&priority=urgent";
        let u = Uri::parse(s).unwrap();
        assert_eq!(u.scheme_kind(), Scheme::Sip);
        assert_eq!(u.user, Some("alice"));
        assert_eq!(u.password, Some("secret"));
        assert_eq!(u.host, "atlanta.example.com");
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.param("TRANSPORT"), Some(Some("tcp")));
        assert_eq!(u.param("lr"), Some(None));
        assert_eq!(u.param("maddr"), None);
        assert_eq!(u.headers.get("priority"), Some(Some("urgent")));
        assert_eq!(u.to_string(), s);
    }

    #[test]
    fn hosts() {
        let u = Uri::parse("sips:[2001:db8::10]:5061").unwrap();
        assert_eq!(u.scheme_kind(), Scheme::Sips);
        assert_eq!(
            (u.user, u.host, u.port),
            (None, "[2001:db8::10]", Some(5061))
        );
        let u = Uri::parse("sip:bob@[::1];lr").unwrap();
        assert_eq!(u.host, "[::1]");
        assert_eq!(u.to_string(), "sip:bob@[::1];lr");
        let u = Uri::parse("sip:192.0.2.4").unwrap();
        assert_eq!((u.host, u.port), ("192.0.2.4", None));
    }

    #[test]
    fn user_with_semicolons() {
        let u = Uri::parse("sip:+12125551212;npdi;rn=+1212@gw.example.com;user=phone").unwrap();
        assert_eq!(u.user, Some("+12125551212;npdi;rn=+1212"));
        assert_eq!(u.host, "gw.example.com");
        assert_eq!(u.param("user"), Some(Some("phone")));
    }

    #[test]
    fn tel_and_other_schemes() {
        let u = Uri::parse("tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!(u.scheme_kind(), Scheme::Tel);
        assert_eq!(u.user, Some("+1-201-555-0123"));
        assert_eq!(u.host, "");
        assert_eq!(u.param("phone-context"), Some(Some("example.com")));
        assert_eq!(
            u.to_string(),
            "tel:+1-201-555-0123;phone-context=example.com"
        );
        let u = Uri::parse("urn:service:sos").unwrap();
        assert_eq!(u.scheme_kind(), Scheme::Other);
        assert_eq!(u.to_string(), "urn:service:sos");
    }

    #[test]
    fn modified_copies() {
        let u = Uri::parse("sip:alice@a.example.com:5060;transport=udp").unwrap();
        let new_user = String::from("bob");
        assert_eq!(
            u.with_user(Some(&new_user)).to_string(),
            "sip:bob@a.example.com:5060;transport=udp"
        );
        assert_eq!(
            u.with_host("10.0.0.1").with_port(None).to_string(),
            "sip:alice@10.0.0.1;transport=udp"
        );
        assert_eq!(
            u.with_user(None).to_string(),
            "sip:a.example.com:5060;transport=udp"
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "alice@example.com",
            "1sip:a@b",
            "sip:",
            "sip:a@",
            "sip:@host",
            "sip:a@host:",
            "sip:a@host:99999",
            "sip:a@host:5x",
            "sip:a@ho st",
            "sip:a@[::1",
            "sip:a@[zz]",
            "sip:a@[::1]x",
            "sip:a@host;;lr",
            "sip:a@host;=x",
            "sip:a@b\r\n",
            "sip:<a@b>",
            "tel:",
            "tel:;x",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad:?}");
        }
    }
}
