//! The message parser: finds the start line, header and body spans of a
//! received datagram without copying it.

use crate::error::ParseError;
use crate::lex::{is_forbidden_ctl, is_lws, is_token, trim_range};
use crate::method::Method;
use crate::names::names_equal;

/// Largest message accepted, in bytes (64 KiB, the UDP datagram limit).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Largest number of header fields accepted; bounds the work an attacker
/// can cause per message.
pub const MAX_HEADERS: usize = 256;

/// A byte range of the raw message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub(crate) fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The bytes of the span, or an empty slice if it does not fit `buf`.
    pub(crate) fn of(self, buf: &[u8]) -> &[u8] {
        buf.get(self.start..self.end).unwrap_or(&[])
    }
}

/// One header field as found in the raw message.
#[derive(Debug, Clone)]
pub(crate) struct HeaderField {
    /// The header name (without the colon and white space before it).
    pub name: Span,
    /// The value, trimmed; for folded headers it spans the continuation
    /// lines.
    pub value: Span,
    /// The whole field including continuation lines and the final line
    /// terminator: what is skipped when the header is removed.
    pub line: Span,
    /// The value as text when the raw bytes cannot be used directly:
    /// folded headers (unfolded) and invalid UTF-8 (lossily decoded).
    pub text: Option<Box<str>>,
}

/// The parsed start line.
#[derive(Debug, Clone)]
pub(crate) enum StartLine {
    Request { method: Method, uri: Span },
    Reply { code: u16, reason: Span },
}

/// Where everything is in the raw message.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub start_line: StartLine,
    /// Offset of the first byte of the start line (leading CRLFs skipped).
    pub start: usize,
    /// Offset of the first header line (just after the start line).
    pub headers_start: usize,
    pub headers: Vec<HeaderField>,
    /// Offset of the empty line that ends the headers.
    pub headers_end: usize,
    /// The body, truncated to Content-Length when one is present.
    pub body: Span,
    /// The Content-Length value, when present.
    pub content_length: Option<usize>,
}

/// The line starting at `pos`: `(end of content, start of next line)`,
/// accepting CRLF and bare LF; `None` when no line terminator follows.
fn next_line(buf: &[u8], pos: usize) -> Option<(usize, usize)> {
    let nl = pos + memchr::memchr(b'\n', buf.get(pos..)?)?;
    let end = if nl > pos && buf.get(nl - 1) == Some(&b'\r') {
        nl - 1
    } else {
        nl
    };
    Some((end, nl + 1))
}

fn check_chars(line: &[u8]) -> Result<(), ParseError> {
    if line.iter().any(|&b| is_forbidden_ctl(b)) {
        Err(ParseError::new("invalid control character"))
    } else {
        Ok(())
    }
}

/// Like [`check_chars`] for a header line, except that inside a quoted
/// string a backslash may escape any octet but CR and LF (RFC 3261 25.1:
/// `quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)`), so `"NUL:\<00>"`
/// is legal (RFC 4475 3.1.1.2). `in_quote` is the state at the start of the
/// line (a quoted string may continue over a folded line); the state at its
/// end is returned.
fn check_header_chars(line: &[u8], mut in_quote: bool) -> Result<bool, ParseError> {
    const BAD: ParseError = ParseError::new("invalid control character");
    let mut i = 0;
    while let Some(&b) = line.get(i) {
        match b {
            b'\\' if in_quote => {
                if line.get(i + 1).is_some_and(|&c| c == b'\r') {
                    return Err(BAD);
                }
                i += 2;
                continue;
            }
            b'"' => in_quote = !in_quote,
            _ if is_forbidden_ctl(b) => return Err(BAD),
            _ => {}
        }
        i += 1;
    }
    Ok(in_quote)
}

/// Skips keep-alive line breaks that may precede a message (RFC 3261 7.5).
pub(crate) fn skip_leading_crlf(buf: &[u8]) -> usize {
    let mut pos = 0;
    loop {
        match buf.get(pos..) {
            Some([b'\r', b'\n', ..]) => pos += 2,
            Some([b'\n', ..]) => pos += 1,
            _ => return pos,
        }
    }
}

pub(crate) fn parse(buf: &[u8]) -> Result<Layout, ParseError> {
    if buf.len() > MAX_MESSAGE_SIZE {
        return Err(ParseError::new("message too large"));
    }
    let start = skip_leading_crlf(buf);
    if start >= buf.len() {
        return Err(ParseError::new("empty message"));
    }
    let (line_end, mut pos) =
        next_line(buf, start).ok_or(ParseError::new("truncated start line"))?;
    let line = buf.get(start..line_end).unwrap_or_default();
    check_chars(line)?;
    let start_line = parse_start_line(line, start)?;
    let headers_start = pos;

    let mut headers: Vec<HeaderField> = Vec::new();
    let headers_end;
    let body_start;
    let mut in_quote = false;
    loop {
        let (end, next) = next_line(buf, pos)
            .ok_or(ParseError::new("truncated message: headers not terminated"))?;
        if end == pos {
            headers_end = pos;
            body_start = next;
            break;
        }
        let line = buf.get(pos..end).unwrap_or_default();
        let folded = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
        in_quote = check_header_chars(line, in_quote && folded)?;
        if folded {
            let last = headers
                .last_mut()
                .ok_or(ParseError::new("folded line without header"))?;
            let (s, e) = trim_range(buf, pos, end);
            if s < e {
                if last.value.start == last.value.end {
                    last.value.start = s;
                }
                last.value.end = e;
            }
            last.line.end = next;
        } else {
            headers.push(parse_header_line(buf, pos, end, next)?);
            if headers.len() > MAX_HEADERS {
                return Err(ParseError::new("too many headers"));
            }
        }
        pos = next;
    }

    for h in &mut headers {
        let raw = h.value.of(buf);
        if raw.contains(&b'\n') {
            h.text = Some(unfold(raw));
        } else if std::str::from_utf8(raw).is_err() {
            h.text = Some(String::from_utf8_lossy(raw).into());
        }
    }

    let available = buf.len().saturating_sub(body_start);
    let content_length = content_length(buf, &headers)?;
    let body_len = match content_length {
        Some(cl) if cl > available => {
            return Err(ParseError::new("Content-Length larger than body"));
        }
        Some(cl) => cl,
        None => available,
    };
    Ok(Layout {
        start_line,
        start,
        headers_start,
        headers,
        headers_end,
        body: Span::new(body_start, body_start + body_len),
        content_length,
    })
}

fn parse_header_line(
    buf: &[u8],
    pos: usize,
    end: usize,
    next: usize,
) -> Result<HeaderField, ParseError> {
    let line = buf.get(pos..end).unwrap_or_default();
    let colon = memchr::memchr(b':', line).ok_or(ParseError::new("header without colon"))?;
    let name_end = line
        .get(..colon)
        .and_then(|n| n.iter().rposition(|&b| b != b' ' && b != b'\t'))
        .map_or(0, |p| p + 1);
    if !is_token(line.get(..name_end).unwrap_or_default()) {
        return Err(ParseError::new("invalid header name"));
    }
    let (vs, ve) = trim_range(buf, pos + colon + 1, end);
    Ok(HeaderField {
        name: Span::new(pos, pos + name_end),
        value: Span::new(vs, ve),
        line: Span::new(pos, next),
        text: None,
    })
}

/// Replaces each line break of a folded value, with the white space
/// around it, by a single space.
fn unfold(raw: &[u8]) -> Box<str> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b == b'\r' || b == b'\n' {
            while out.last().is_some_and(|&c| c == b' ' || c == b'\t') {
                out.pop();
            }
            while raw.get(i).is_some_and(|&c| is_lws(c)) {
                i += 1;
            }
            out.push(b' ');
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into()
}

/// The Content-Length of the message; every Content-Length header must
/// carry the same valid number.
fn content_length(buf: &[u8], headers: &[HeaderField]) -> Result<Option<usize>, ParseError> {
    let mut found = None;
    for h in headers {
        if !names_equal(h.name.of(buf), b"Content-Length") {
            continue;
        }
        let v = h.value.of(buf);
        let n = parse_decimal(v).ok_or(ParseError::new("invalid Content-Length"))?;
        match found {
            Some(prev) if prev != n => {
                return Err(ParseError::new("conflicting Content-Length headers"));
            }
            _ => found = Some(n),
        }
    }
    Ok(found)
}

/// Parses 1 to 9 ASCII digits (larger values exceed any SIP message).
pub(crate) fn parse_decimal(v: &[u8]) -> Option<usize> {
    if v.is_empty() || v.len() > 9 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        v.iter()
            .fold(0usize, |n, &d| n * 10 + usize::from(d - b'0')),
    )
}

fn parse_start_line(line: &[u8], offset: usize) -> Result<StartLine, ParseError> {
    let text =
        std::str::from_utf8(line).map_err(|_| ParseError::new("invalid UTF-8 in start line"))?;
    if text.len() >= 4
        && text
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    {
        return parse_status_line(text, offset);
    }
    let mut parts = text.split(' ');
    let method = parts.next().unwrap_or_default();
    let (Some(uri), version) = (parts.next(), parts.next()) else {
        return Err(ParseError::new("invalid request line"));
    };
    if parts.next().is_some() {
        return Err(ParseError::new("invalid request line"));
    }
    if !is_token(method.as_bytes()) {
        return Err(ParseError::new("invalid method"));
    }
    if uri.is_empty() || !uri.contains(':') || uri.bytes().any(|b| b == b'\t') {
        return Err(ParseError::new("invalid Request-URI"));
    }
    let version = version.ok_or(ParseError::new("missing SIP version"))?;
    check_version(version)?;
    let uri_start = offset + method.len() + 1;
    Ok(StartLine::Request {
        method: Method::parse(method),
        uri: Span::new(uri_start, uri_start + uri.len()),
    })
}

fn check_version(version: &str) -> Result<(), ParseError> {
    if version.eq_ignore_ascii_case("SIP/2.0") {
        Ok(())
    } else if version.len() >= 4
        && version
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    {
        Err(ParseError::new("unsupported SIP version"))
    } else {
        Err(ParseError::new("missing SIP version"))
    }
}

fn parse_status_line(text: &str, offset: usize) -> Result<StartLine, ParseError> {
    let (version, rest) = text
        .split_once(' ')
        .ok_or(ParseError::new("invalid status line"))?;
    check_version(version)?;
    const BAD_CODE: ParseError = ParseError::new("invalid status code");
    let code_text = rest.get(..3).ok_or(BAD_CODE)?;
    let after = rest.get(3..).ok_or(BAD_CODE)?;
    if !code_text.bytes().all(|b| b.is_ascii_digit())
        || !(after.is_empty() || after.starts_with(' '))
    {
        return Err(BAD_CODE);
    }
    let code: u16 = code_text.parse().map_err(|_| BAD_CODE)?;
    if !(100..=699).contains(&code) {
        return Err(BAD_CODE);
    }
    let reason_start = offset + version.len() + 1 + 3 + usize::from(!after.is_empty());
    Ok(StartLine::Reply {
        code,
        reason: Span::new(reason_start, offset + text.len()),
    })
}
