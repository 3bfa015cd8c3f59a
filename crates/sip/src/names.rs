//! Header-name matching with compact forms.

/// Expands a one-letter compact header name (RFC 3261 7.3.3 and the IANA
/// registry) to its long form; other names are returned unchanged.
pub(crate) fn expand_compact(name: &[u8]) -> &[u8] {
    let [c] = name else {
        return name;
    };
    match c.to_ascii_lowercase() {
        b'a' => b"Accept-Contact",
        b'b' => b"Referred-By",
        b'c' => b"Content-Type",
        b'd' => b"Request-Disposition",
        b'e' => b"Content-Encoding",
        b'f' => b"From",
        b'i' => b"Call-ID",
        b'j' => b"Reject-Contact",
        b'k' => b"Supported",
        b'l' => b"Content-Length",
        b'm' => b"Contact",
        b'o' => b"Event",
        b'r' => b"Refer-To",
        b's' => b"Subject",
        b't' => b"To",
        b'u' => b"Allow-Events",
        b'v' => b"Via",
        b'x' => b"Session-Expires",
        b'y' => b"Identity",
        _ => name,
    }
}

/// Whether two header names denote the same header: case-insensitive and
/// treating compact forms as their long names (`i` == `Call-ID`).
pub fn names_equal(a: &[u8], b: &[u8]) -> bool {
    expand_compact(a).eq_ignore_ascii_case(expand_compact(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case_insensitive() {
        assert!(names_equal(b"i", b"call-id"));
        assert!(names_equal(b"Call-ID", b"I"));
        assert!(names_equal(b"v", b"VIA"));
        assert!(names_equal(b"l", b"Content-Length"));
        assert!(!names_equal(b"t", b"From"));
        assert!(!names_equal(b"q", b"Q-Header"));
        assert!(names_equal(b"X-Foo", b"x-foo"));
    }
}
