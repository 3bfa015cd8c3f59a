//! Building the proxy's own replies to a request (RFC 3261 8.2.6).

use crate::edits::header_lines;
use crate::error::ParseError;
use crate::lex::{is_forbidden_ctl, is_token, split_commas};
use crate::message::SipMessage;
use crate::name_addr::NameAddr;
use crate::names::names_equal;
use crate::via::{Received, stamp_received};

/// Builds a reply to `req` (`sl_send_reply`, `t_reply`): status line, all
/// Via headers in received order (the top one stamped with `received` /
/// `rport` when `received` is given, RFC 3581), From, To (with `;tag=` added
/// when it has none, `to_tag` is given and `code > 100`), Call-ID and CSeq
/// copied as received, then `extra_headers` (validated header lines), then
/// `Content-Length: 0`.
///
/// Works on malformed requests too (copies whatever is there) so a
/// `400 Bad Request` can always be sent. Fails only on a reply as `req`,
/// a code outside 100..=699, or a reason, tag or extra header that would
/// corrupt the reply.
pub fn build_reply(
    req: &SipMessage,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    received: Option<Received<'_>>,
    extra_headers: &[String],
) -> Result<Vec<u8>, ParseError> {
    if !req.is_request() {
        return Err(ParseError::new("cannot reply to a reply"));
    }
    if !(100..=699).contains(&code) {
        return Err(ParseError::new("invalid status code"));
    }
    if reason.bytes().any(is_forbidden_ctl) {
        return Err(ParseError::new("invalid reason phrase"));
    }
    if to_tag.is_some_and(|t| !is_token(t.as_bytes())) {
        return Err(ParseError::new("invalid To tag"));
    }
    let extra = extra_headers
        .iter()
        .map(|h| header_lines(h))
        .collect::<Result<Vec<_>, _>>()?;

    let mut out = Vec::with_capacity(req.raw().len().min(2048) + 64);
    out.extend_from_slice(format!("SIP/2.0 {code} {reason}\r\n").as_bytes());
    let mut top_via = true;
    for h in req.fields() {
        let name = req.name_bytes(h);
        // The header as received, from its name to the end of its value
        // (folding kept), without the original line terminator.
        let as_received = req.raw().get(h.name.start..h.value.end).unwrap_or_default();
        if names_equal(name, b"Via") {
            let stamped = received
                .filter(|_| top_via)
                .and_then(|src| stamp_top_entry(req.value_of(h), src));
            top_via = false;
            match stamped {
                Some(v) => {
                    out.extend_from_slice(name);
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(v.as_bytes());
                }
                None => out.extend_from_slice(as_received),
            }
        } else if names_equal(name, b"To") {
            out.extend_from_slice(as_received);
            let untagged = NameAddr::parse(req.value_of(h)).is_ok_and(|na| na.tag().is_none());
            if let (Some(tag), true, true) = (to_tag, untagged, code > 100) {
                out.extend_from_slice(b";tag=");
                out.extend_from_slice(tag.as_bytes());
            }
        } else if names_equal(name, b"From")
            || names_equal(name, b"Call-ID")
            || names_equal(name, b"CSeq")
        {
            out.extend_from_slice(as_received);
        } else {
            continue;
        }
        out.extend_from_slice(b"\r\n");
    }
    for h in &extra {
        out.extend_from_slice(h.as_bytes());
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Ok(out)
}

/// The Via value with its first entry stamped, or `None` if unchanged.
fn stamp_top_entry(value: &str, src: Received<'_>) -> Option<String> {
    let (a, b) = split_commas(value.as_bytes()).next()?;
    let stamped = stamp_received(value.get(a..b)?, src)?;
    Some(format!("{}{stamped}{}", value.get(..a)?, value.get(b..)?))
}
