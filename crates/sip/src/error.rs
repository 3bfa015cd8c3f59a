//! The single error type of the crate.

use std::fmt;

/// Why a message, a header value or a requested edit was rejected.
///
/// The proxy answers a malformed request with `400 Bad Request` and puts
/// [`ParseError::reason`] in the reason phrase, so every reason is a short,
/// fixed ASCII phrase without control characters: safe to copy into a
/// status line and never echoing attacker-controlled bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    reason: &'static str,
}

impl ParseError {
    /// Builds an error from one of the crate's fixed phrases.
    pub(crate) const fn new(reason: &'static str) -> Self {
        ParseError { reason }
    }

    /// The short phrase explaining what was wrong, e.g.
    /// `"Content-Length larger than body"`; suitable as a reason phrase.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason)
    }
}

impl std::error::Error for ParseError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_the_reason() {
        let e = ParseError::new("header without colon");
        assert_eq!(e.to_string(), "header without colon");
        assert_eq!(e.reason(), "header without colon");
    }
}
