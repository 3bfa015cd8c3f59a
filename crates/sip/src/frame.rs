//! Message framing for stream transports (TCP, TLS).

use crate::error::ParseError;
use crate::names::names_equal;
use crate::parse::{MAX_MESSAGE_SIZE, parse_decimal, skip_leading_crlf};

/// How many bytes at the start of `buf` make up the first complete SIP
/// message of a stream (RFC 3261 18.3), including keep-alive line breaks
/// before it: `Ok(None)` while more bytes are needed.
///
/// Streams carry messages back to back, so a transport must know where one
/// ends before handing it to [`crate::SipMessage::parse`]. Content-Length
/// is mandatory on streams; its absence, an invalid value or a message
/// larger than [`crate::MAX_MESSAGE_SIZE`] is an error (the connection
/// should then be closed).
pub fn stream_frame_len(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    let start = skip_leading_crlf(buf);
    let Some(headers_len) = end_of_headers(buf.get(start..).unwrap_or_default()) else {
        return if buf.len() > MAX_MESSAGE_SIZE {
            Err(ParseError::new("message too large"))
        } else {
            Ok(None)
        };
    };
    let header_end = start + headers_len;
    let head = buf.get(start..header_end).unwrap_or_default();
    let mut length = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line.get(..colon).unwrap_or_default().trim_ascii_end();
        if !names_equal(name, b"Content-Length") {
            continue;
        }
        let value = line.get(colon + 1..).unwrap_or_default().trim_ascii();
        let n = parse_decimal(value).ok_or(ParseError::new("invalid Content-Length"))?;
        if length.is_some_and(|prev| prev != n) {
            return Err(ParseError::new("conflicting Content-Length headers"));
        }
        length = Some(n);
    }
    let length = length.ok_or(ParseError::new("missing Content-Length"))?;
    let total = header_end + length;
    if total > MAX_MESSAGE_SIZE {
        return Err(ParseError::new("message too large"));
    }
    Ok(Some(total))
}

/// Length of the header section including the empty line that ends it.
fn end_of_headers(b: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', b).find_map(|nl| match b.get(nl + 1..) {
        Some([b'\n', ..]) => Some(nl + 2),
        Some([b'\r', b'\n', ..]) => Some(nl + 3),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] =
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: 4\r\n\r\nbody";

    #[test]
    fn frames_back_to_back_messages() {
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(MSG);
        stream.extend_from_slice(MSG);
        assert_eq!(stream_frame_len(&stream), Ok(Some(4 + MSG.len())));
        assert_eq!(stream_frame_len(MSG), Ok(Some(MSG.len())));
    }

    #[test]
    fn waits_for_more_bytes() {
        for n in 0..MSG.len() - 4 {
            assert_eq!(stream_frame_len(&MSG[..n]), Ok(None), "{n}");
        }
        // Headers complete: the length is known before the body arrives.
        assert_eq!(stream_frame_len(&MSG[..MSG.len() - 2]), Ok(Some(MSG.len())));
    }

    #[test]
    fn errors() {
        let no_len = b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n";
        assert_eq!(
            stream_frame_len(no_len).unwrap_err().reason(),
            "missing Content-Length"
        );
        let bad = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: x\r\n\r\n";
        assert!(stream_frame_len(bad).is_err());
        let huge = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 999999\r\n\r\n";
        assert_eq!(
            stream_frame_len(huge).unwrap_err().reason(),
            "message too large"
        );
        let endless = vec![b'a'; MAX_MESSAGE_SIZE + 1];
        assert!(stream_frame_len(&endless).is_err());
    }
}
