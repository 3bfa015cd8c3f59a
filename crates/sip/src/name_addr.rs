//! `name-addr` / `addr-spec` header values: From, To, Contact, Route, ...

use std::borrow::Cow;

use crate::error::ParseError;
use crate::lex::{is_lws, is_token_byte, quoted_end, trim_lws, unescape};
use crate::params::{Params, parse_header_params};
use crate::uri::Uri;

/// An address header value: optional display name, the URI, and the
/// header parameters (`tag`, `expires`, `q`, ...).
///
/// Scripts read `$fu`, `$fn`, `$tt` and friends from these; dialog and
/// registrar logic need the tag and expires parameters. The URI is kept
/// as text (parse it with [`NameAddr::parse_uri`]) so a value whose URI is
/// unusual still yields its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name without quotes and with escapes resolved; `None` when
    /// absent or empty.
    pub display_name: Option<Cow<'a, str>>,
    /// The URI text (inside the angle brackets when present).
    pub uri: &'a str,
    /// Header parameters after the URI (for a bare URI without angle
    /// brackets, everything after the first `;`, per RFC 3261 20.10).
    pub params: Params<'a>,
}

const BAD_ADDR: ParseError = ParseError::new("invalid address");

impl<'a> NameAddr<'a> {
    /// Parses `"Display" <sip:uri>;tag=x`, `Display <sip:uri>`,
    /// `<sip:uri>` or a bare `sip:uri;tag=x`.
    pub fn parse(s: &'a str) -> Result<NameAddr<'a>, ParseError> {
        let t = trim_lws(s);
        let b = t.as_bytes();
        if b.first() == Some(&b'"') {
            let end = quoted_end(b, 0).ok_or(ParseError::new("unterminated quoted string"))?;
            let inner = t.get(1..end.saturating_sub(1)).ok_or(BAD_ADDR)?;
            let rest = trim_lws(t.get(end..).ok_or(BAD_ADDR)?);
            let display = unescape(inner);
            let display = (!display.is_empty()).then_some(display);
            return bracketed(display, rest);
        }
        let lt = t.find('<');
        let stop = t.find([';', '"']);
        match (lt, stop) {
            (Some(lt), stop) if stop.is_none_or(|p| lt < p) => {
                let display = trim_lws(t.get(..lt).ok_or(BAD_ADDR)?);
                // An unquoted display name is `*(token LWS)` (RFC 3261
                // 25.1): `Bell, Alexander <sip:...>` is refused rather than
                // forwarded as received (RFC 4475 3.1.2.15). UTF-8 letters
                // are let through: phones send `Jörg <sip:...>` unquoted,
                // and they cannot be mistaken for a separator.
                if !display
                    .bytes()
                    .all(|b| is_token_byte(b) || is_lws(b) || !b.is_ascii())
                {
                    return Err(ParseError::new("invalid display name"));
                }
                let display = (!display.is_empty()).then_some(Cow::Borrowed(display));
                bracketed(display, t.get(lt..).ok_or(BAD_ADDR)?)
            }
            _ => {
                let uri_end = t.find(';').unwrap_or(t.len());
                let uri = trim_lws(t.get(..uri_end).ok_or(BAD_ADDR)?);
                if uri.is_empty() || uri.bytes().any(|c| c <= b' ') {
                    return Err(BAD_ADDR);
                }
                let params = parse_header_params(t.get(uri_end..).ok_or(BAD_ADDR)?)?;
                Ok(NameAddr {
                    display_name: None,
                    uri,
                    params,
                })
            }
        }
    }

    /// The `tag` parameter (dialog identification, RFC 3261 19.3).
    pub fn tag(&self) -> Option<&'a str> {
        self.params.get("tag").flatten()
    }

    /// Looks a header parameter up by name, ignoring case.
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        self.params.get(name)
    }

    /// Parses the URI text.
    pub fn parse_uri(&self) -> Result<Uri<'a>, ParseError> {
        Uri::parse(self.uri)
    }
}

/// Parses `<uri>;params` after an optional display name.
fn bracketed<'a>(
    display_name: Option<Cow<'a, str>>,
    rest: &'a str,
) -> Result<NameAddr<'a>, ParseError> {
    let inner_and_tail = rest
        .strip_prefix('<')
        .ok_or(ParseError::new("missing '<' in address"))?;
    let (uri, tail) = inner_and_tail
        .split_once('>')
        .ok_or(ParseError::new("missing '>' in address"))?;
    let uri = trim_lws(uri);
    if uri.is_empty() {
        return Err(BAD_ADDR);
    }
    Ok(NameAddr {
        display_name,
        uri,
        params: parse_header_params(tail)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_display_name_with_comma_and_escapes() {
        let na =
            NameAddr::parse(r#" "Doe, \"JD\" John" <sip:jd@example.com;transport=tcp> ;tag=a48s"#)
                .unwrap();
        assert_eq!(na.display_name.as_deref(), Some(r#"Doe, "JD" John"#));
        assert_eq!(na.uri, "sip:jd@example.com;transport=tcp");
        assert_eq!(na.tag(), Some("a48s"));
        assert_eq!(
            na.parse_uri().unwrap().param("transport"),
            Some(Some("tcp"))
        );
    }

    #[test]
    fn unquoted_utf8_display_name_is_accepted_but_separators_are_not() {
        let na = NameAddr::parse("Jörg Müller <sip:joerg@example.de>").unwrap();
        assert_eq!(na.display_name.as_deref(), Some("Jörg Müller"));
        assert!(NameAddr::parse("Bell, Alexander <sip:a.g.bell@example.com>").is_err());
    }

    #[test]
    fn token_display_name_and_plain_brackets() {
        let na = NameAddr::parse("Bob Smith <sip:bob@biloxi.example.com>").unwrap();
        assert_eq!(na.display_name.as_deref(), Some("Bob Smith"));
        assert_eq!(na.tag(), None);
        let na = NameAddr::parse("<sip:bob@biloxi.example.com>;expires=60").unwrap();
        assert_eq!(na.display_name, None);
        assert_eq!(na.param("EXPIRES"), Some(Some("60")));
        let na = NameAddr::parse(r#""" <sip:x@y>"#).unwrap();
        assert_eq!(na.display_name, None);
    }

    #[test]
    fn bare_uri_params_belong_to_the_header() {
        let na = NameAddr::parse("sip:alice@atlanta.example.com;tag=1928301774").unwrap();
        assert_eq!(na.uri, "sip:alice@atlanta.example.com");
        assert_eq!(na.tag(), Some("1928301774"));
        let na = NameAddr::parse(
            r#"sip:a@b;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>""#,
        )
        .unwrap();
        assert_eq!(na.uri, "sip:a@b");
        assert!(na.params.contains("+sip.instance"));
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            "   ",
            r#""unterminated <sip:a@b>"#,
            r#""name" sip:a@b"#,
            "<sip:a@b",
            "<>",
            "<sip:a@b> junk",
            "sip:a@b;",
            "sip:a b@c",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad:?}");
        }
    }
}
