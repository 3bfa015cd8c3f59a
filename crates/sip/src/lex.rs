//! Lexical helpers shared by the parsers: character classes, trimming,
//! quoted strings and comma-separated lists.
//!
//! Everything here works on byte offsets found by scanning for ASCII
//! delimiters, so the offsets always fall on UTF-8 character boundaries,
//! and every access goes through `get` so hostile input cannot panic.

use std::borrow::Cow;

/// RFC 3261 `token` characters.
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// A non-empty run of `token` characters (method names, header names,
/// parameter names, transports).
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token_byte(b))
}

/// Linear white space, including the line breaks of folded headers.
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// A control character that may not appear in a header or start line
/// (everything below 0x20 except HTAB, and DEL).
pub(crate) fn is_forbidden_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// Strips linear white space from both ends.
pub(crate) fn trim_lws(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\r', '\n'])
}

/// Index of the first byte at or after `i` that is not linear white space.
pub(crate) fn skip_lws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|&c| is_lws(c)) {
        i += 1;
    }
    i
}

/// Narrows `start..end` of `b` so it neither starts nor ends with white space.
pub(crate) fn trim_range(b: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    while start < end && b.get(start).is_some_and(|&c| is_lws(c)) {
        start += 1;
    }
    while end > start && b.get(end - 1).is_some_and(|&c| is_lws(c)) {
        end -= 1;
    }
    (start, end)
}

/// Given `b[start] == '"'`, the index just past the closing quote of the
/// quoted string, honouring backslash escapes; `None` when unterminated.
pub(crate) fn quoted_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match b.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// Removes the backslash escapes of a quoted string's content, borrowing
/// when there is nothing to unescape (the common case).
pub(crate) fn unescape(inner: &str) -> Cow<'_, str> {
    if !inner.contains('\\') {
        return Cow::Borrowed(inner);
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(escaped) = chars.next() {
                out.push(escaped);
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Iterator over the comma-separated elements of a header value, as
/// trimmed `(start, end)` byte ranges. Commas inside quoted strings or
/// inside `<...>` do not split; empty elements are skipped.
pub(crate) struct CommaSplit<'a> {
    b: &'a [u8],
    pos: usize,
}

/// Splits a header value (`Contact`, `Route`, `Via`, ...) into elements.
pub(crate) fn split_commas(b: &[u8]) -> CommaSplit<'_> {
    CommaSplit { b, pos: 0 }
}

impl Iterator for CommaSplit<'_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        while self.pos < self.b.len() {
            let start = self.pos;
            let mut i = start;
            let mut in_quote = false;
            let mut in_angle = false;
            while let Some(&c) = self.b.get(i) {
                if in_quote {
                    match c {
                        b'\\' => i += 1,
                        b'"' => in_quote = false,
                        _ => {}
                    }
                } else {
                    match c {
                        b'"' => in_quote = true,
                        b'<' => in_angle = true,
                        b'>' => in_angle = false,
                        b',' if !in_angle => break,
                        _ => {}
                    }
                }
                i += 1;
            }
            let end = i.min(self.b.len());
            self.pos = end + 1;
            let (s, e) = trim_range(self.b, start, end);
            if s < e {
                return Some((s, e));
            }
        }
        None
    }
}

/// The comma-separated elements of a header value as string slices.
pub(crate) fn split_list(s: &str) -> impl Iterator<Item = &str> {
    split_commas(s.as_bytes()).filter_map(move |(a, b)| s.get(a..b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> Vec<&str> {
        split_list(s).collect()
    }

    #[test]
    fn commas_split_outside_quotes_and_angles() {
        assert_eq!(
            parts(r#""Doe, John" <sip:a@b;x=1,2>;q=0.5 , <sip:c@d>"#),
            vec![r#""Doe, John" <sip:a@b;x=1,2>;q=0.5"#, "<sip:c@d>"]
        );
        assert_eq!(parts(r#""a \", b" <sip:x>, y"#).len(), 2);
        assert_eq!(parts(" , a,, b ,"), vec!["a", "b"]);
        assert!(parts("").is_empty());
        // An unterminated quote swallows the rest instead of panicking.
        assert_eq!(parts(r#""abc\"#), vec![r#""abc\"#]);
    }

    #[test]
    fn quoted_strings() {
        assert_eq!(quoted_end(br#""a\"b" x"#, 0), Some(6));
        assert_eq!(quoted_end(br#""abc"#, 0), None);
        assert_eq!(quoted_end(br#""abc\"#, 0), None);
        assert_eq!(unescape(r#"a\"b\\c"#), r#"a"b\c"#);
        assert!(matches!(unescape("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn trimming() {
        assert_eq!(trim_range(b"  ab \r\n", 0, 7), (2, 4));
        assert_eq!(trim_range(b"   ", 0, 3), (3, 3));
        assert_eq!(skip_lws(b" \t x", 0), 3);
        assert!(is_token(b"Call-ID"));
        assert!(!is_token(b"Bad Name"));
        assert!(!is_token(b""));
    }
}
