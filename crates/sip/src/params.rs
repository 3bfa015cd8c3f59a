//! `;name=value` parameter lists.

use crate::error::ParseError;
use crate::lex::{is_lws, is_token_byte, quoted_end, skip_lws};

/// One parameter: `;lr` has no value, `;transport=udp` has one.
///
/// Kept as borrowed slices of the header so reading `tag` or `branch`
/// allocates nothing; quoted values keep their quotes so a parameter can be
/// written back exactly as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    /// Parameter name as received (compare case-insensitively).
    pub name: &'a str,
    /// Value after `=`, or `None` for a flag parameter.
    pub value: Option<&'a str>,
}

/// An ordered list of parameters with case-insensitive lookup.
///
/// Order is preserved because proxies re-serialise parameter lists (Via
/// `received`, URI params) and must not reshuffle what they did not touch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params<'a>(Vec<Param<'a>>);

impl<'a> Params<'a> {
    pub(crate) fn from_vec(params: Vec<Param<'a>>) -> Self {
        Params(params)
    }

    /// Looks a parameter up by name, ignoring case: `None` when absent,
    /// `Some(None)` for a flag such as `;lr`, `Some(Some(v))` otherwise.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.0
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value)
    }

    /// Whether a parameter with this name (any case) is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The parameters in the order received.
    pub fn as_slice(&self) -> &[Param<'a>] {
        &self.0
    }

    /// Iterates over the parameters in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Param<'a>> {
        self.0.iter()
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'p, 'a> IntoIterator for &'p Params<'a> {
    type Item = &'p Param<'a>;
    type IntoIter = std::slice::Iter<'p, Param<'a>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Parses header parameters (`generic-param` of RFC 3261 25.1): the input
/// is empty or starts with `;`. White space is allowed around `;` and `=`;
/// values are tokens, hosts or quoted strings.
pub(crate) fn parse_header_params(s: &str) -> Result<Params<'_>, ParseError> {
    const BAD: ParseError = ParseError::new("invalid header parameter");
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        i = skip_lws(b, i);
        match b.get(i) {
            None => break,
            Some(b';') => {}
            Some(_) => return Err(BAD),
        }
        i = skip_lws(b, i + 1);
        let name_start = i;
        while b.get(i).is_some_and(|&c| is_token_byte(c)) {
            i += 1;
        }
        if i == name_start {
            return Err(BAD);
        }
        let name = s.get(name_start..i).ok_or(BAD)?;
        let after = skip_lws(b, i);
        let mut value = None;
        if b.get(after) == Some(&b'=') {
            let vs = skip_lws(b, after + 1);
            let ve = if b.get(vs) == Some(&b'"') {
                quoted_end(b, vs).ok_or(ParseError::new("unterminated quoted string"))?
            } else {
                let mut e = vs;
                while b
                    .get(e)
                    .is_some_and(|&c| !is_lws(c) && c != b';' && c != b'"')
                {
                    e += 1;
                }
                e
            };
            if ve == vs {
                return Err(BAD);
            }
            value = Some(s.get(vs..ve).ok_or(BAD)?);
            i = ve;
        }
        out.push(Param { name, value });
    }
    Ok(Params(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags_values_and_quotes() {
        let p = parse_header_params(r#" ;tag=abc ; lr;q = 0.7;+sip.instance="<urn:uuid:1;2>""#)
            .unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p.get("TAG"), Some(Some("abc")));
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(p.get("q"), Some(Some("0.7")));
        assert_eq!(p.get("+sip.instance"), Some(Some(r#""<urn:uuid:1;2>""#)));
        assert_eq!(p.get("missing"), None);
        assert!(parse_header_params("").unwrap().is_empty());
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["x", ";", ";=v", ";a=", r#";a="open"#, ";a=b c"] {
            assert!(parse_header_params(bad).is_err(), "{bad:?}");
        }
    }
}
