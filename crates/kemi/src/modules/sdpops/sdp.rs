//! A line-level SDP (RFC 4566) view for `KSR.sdpops`: the session lines,
//! the media streams (`m=` sections) with their payload types and names,
//! and edits that produce a new body, keeping every untouched line byte
//! for byte and the body's line ending.

use std::borrow::Cow;

/// Payload types with a static encoding (RFC 3551), used when a stream has
/// no `a=rtpmap` line for them.
const STATIC_PAYLOADS: &[(&str, &str)] = &[
    ("0", "PCMU"),
    ("3", "GSM"),
    ("4", "G723"),
    ("5", "DVI4"),
    ("6", "DVI4"),
    ("7", "LPC"),
    ("8", "PCMA"),
    ("9", "G722"),
    ("10", "L16"),
    ("11", "L16"),
    ("12", "QCELP"),
    ("13", "CN"),
    ("14", "MPA"),
    ("15", "G728"),
    ("16", "DVI4"),
    ("17", "DVI4"),
    ("18", "G729"),
    ("25", "CelB"),
    ("26", "JPEG"),
    ("28", "nv"),
    ("31", "H261"),
    ("32", "MPV"),
    ("33", "MP2T"),
    ("34", "H263"),
];

/// Attribute lines tied to one payload type, removed with it.
const PAYLOAD_ATTRIBUTES: &[&str] = &["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"];

/// A parsed SDP body.
#[derive(Debug, Clone)]
pub(crate) struct Sdp<'a> {
    lines: Vec<Cow<'a, str>>,
    eol: &'static str,
    final_eol: bool,
}

/// One media stream: its `m=` line and the lines up to the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stream<'s> {
    /// Index of the `m=` line.
    pub first: usize,
    /// Index just past the stream's last line.
    pub end: usize,
    pub media: &'s str,
    pub port: &'s str,
    pub transport: &'s str,
    /// The payload types (formats) of the `m=` line, in order.
    pub formats: Vec<&'s str>,
}

/// Why a body is not an SDP we can work on.
pub(crate) type Malformed = String;

impl<'a> Sdp<'a> {
    /// Parse `body`: a `v=` line first, then `x=value` lines; `m=` lines
    /// need a media, a numeric port (`port/count` allowed) and a transport.
    pub fn parse(body: &'a [u8]) -> Result<Sdp<'a>, Malformed> {
        let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8 text".to_string())?;
        let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
        let final_eol = text.ends_with('\n');
        let mut lines: Vec<Cow<'a, str>> = text
            .split('\n')
            .map(|l| Cow::Borrowed(l.strip_suffix('\r').unwrap_or(l)))
            .collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        if !lines.first().is_some_and(|l| l.starts_with("v=")) {
            return Err("no v= line first".into());
        }
        for (i, line) in lines.iter().enumerate() {
            let b = line.as_bytes();
            if b.len() < 2 || !b[0].is_ascii_alphabetic() || b[1] != b'=' {
                return Err(format!("line {} is not type=value: {line:?}", i + 1));
            }
            if line.starts_with("m=") && parse_media(line).is_none() {
                return Err(format!("malformed media line {line:?}"));
            }
        }
        Ok(Sdp {
            lines,
            eol,
            final_eol,
        })
    }

    /// The lines, without their line endings.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(|l| l.as_ref())
    }

    /// The media streams in order.
    pub fn streams(&self) -> Vec<Stream<'_>> {
        let starts: Vec<usize> = (0..self.lines.len())
            .filter(|&i| self.lines[i].starts_with("m="))
            .collect();
        starts
            .iter()
            .enumerate()
            .filter_map(|(n, &first)| {
                let (media, port, transport, formats) = parse_media(&self.lines[first])?;
                Some(Stream {
                    first,
                    end: starts.get(n + 1).copied().unwrap_or(self.lines.len()),
                    media,
                    port,
                    transport,
                    formats,
                })
            })
            .collect()
    }

    /// The attribute value of `a=name[:value]` lines of a stream
    /// (`Some("")` for a flag such as `a=inactive`).
    pub fn stream_attribute<'s>(&'s self, stream: &Stream<'_>, name: &str) -> Option<&'s str> {
        self.lines[stream.first + 1..stream.end]
            .iter()
            .find_map(|l| {
                let rest = l.strip_prefix("a=")?.strip_prefix(name)?;
                if rest.is_empty() {
                    Some("")
                } else {
                    rest.strip_prefix(':')
                }
            })
    }

    /// The encoding name of payload type `pt` in `stream`: its `a=rtpmap`,
    /// else the static one.
    pub fn payload_name<'s>(&'s self, stream: &Stream<'_>, pt: &str) -> Option<&'s str> {
        let prefix = format!("a=rtpmap:{pt} ");
        self.lines[stream.first + 1..stream.end]
            .iter()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map(|rest| rest.split('/').next().unwrap_or(rest).trim())
            .or_else(|| {
                STATIC_PAYLOADS
                    .iter()
                    .find(|(id, _)| *id == pt)
                    .map(|(_, name)| *name)
            })
    }

    /// The connection address (`c=`) in force for a stream: its own, else
    /// the session's.
    pub fn connection_address(&self, stream: &Stream<'_>) -> Option<&str> {
        let own = self.lines[stream.first + 1..stream.end]
            .iter()
            .find_map(|l| l.strip_prefix("c="));
        let session = self.lines[..self.streams().first().map_or(self.lines.len(), |s| s.first)]
            .iter()
            .find_map(|l| l.strip_prefix("c="));
        own.or(session)
            .and_then(|c| c.split_whitespace().nth(2))
            .map(|a| a.split('/').next().unwrap_or(a))
    }

    /// The body with the payload types `remove(stream)` names taken out of
    /// each stream: from the `m=` line and with their rtpmap, fmtp and
    /// rtcp-fb lines.
    pub fn without_payloads(&self, remove: impl Fn(&Stream<'_>) -> Vec<String>) -> String {
        let mut lines: Vec<Option<Cow<'_, str>>> = self
            .lines
            .iter()
            .map(|l| Some(Cow::Borrowed(l.as_ref())))
            .collect();
        for stream in self.streams() {
            let gone = remove(&stream);
            if gone.is_empty() {
                continue;
            }
            let kept: Vec<&str> = stream
                .formats
                .iter()
                .copied()
                .filter(|f| !gone.iter().any(|g| g == f))
                .collect();
            let mut m = format!("m={} {} {}", stream.media, stream.port, stream.transport);
            for f in kept {
                m.push(' ');
                m.push_str(f);
            }
            lines[stream.first] = Some(Cow::Owned(m));
            for (i, line) in self
                .lines
                .iter()
                .enumerate()
                .take(stream.end)
                .skip(stream.first + 1)
            {
                let tied = PAYLOAD_ATTRIBUTES.iter().any(|prefix| {
                    line.get(..prefix.len())
                        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
                        && line.get(prefix.len()..).is_some_and(|rest| {
                            gone.iter().any(|g| {
                                rest.strip_prefix(g.as_str())
                                    .is_some_and(|r| r.starts_with(' '))
                            })
                        })
                });
                if tied {
                    lines[i] = None;
                }
            }
        }
        self.join(lines.into_iter().flatten())
    }

    /// The body without the lines for which `drop(index, line)` holds, and
    /// how many were dropped.
    pub fn without_lines(&self, drop: impl Fn(usize, &str) -> bool) -> (String, usize) {
        let mut dropped = 0;
        let kept: Vec<&str> = self
            .lines()
            .enumerate()
            .filter(|&(i, l)| {
                let d = drop(i, l);
                dropped += usize::from(d);
                !d
            })
            .map(|(_, l)| l)
            .collect();
        (self.join(kept.into_iter()), dropped)
    }

    fn join<S: AsRef<str>>(&self, lines: impl Iterator<Item = S>) -> String {
        let mut out = String::new();
        let mut first = true;
        for line in lines {
            if !first {
                out.push_str(self.eol);
            }
            out.push_str(line.as_ref());
            first = false;
        }
        if self.final_eol && !out.is_empty() {
            out.push_str(self.eol);
        }
        out
    }
}

/// `m=<media> <port>[/<count>] <transport> <fmt>...`.
fn parse_media(line: &str) -> Option<(&str, &str, &str, Vec<&str>)> {
    let mut fields = line.strip_prefix("m=")?.split_whitespace();
    let media = fields.next()?;
    let port = fields.next()?;
    let number = port.split('/').next().unwrap_or(port);
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let transport = fields.next()?;
    Some((media, port, transport, fields.collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const OFFER: &str = "v=0\r\n\
o=- 1 1 IN IP4 192.0.2.7\r\n\
s=-\r\n\
c=IN IP4 192.0.2.7\r\n\
t=0 0\r\n\
m=audio 4000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=sendrecv\r\n\
m=video 0 RTP/AVP 31\r\n";

    #[test]
    fn streams_and_payload_names() {
        let sdp = Sdp::parse(OFFER.as_bytes()).unwrap();
        let streams = sdp.streams();
        assert_eq!(streams.len(), 2);
        assert_eq!(streams[0].media, "audio");
        assert_eq!(streams[0].formats, vec!["0", "8", "101"]);
        assert_eq!((streams[0].first, streams[0].end), (5, 11));
        assert_eq!(
            sdp.payload_name(&streams[0], "101"),
            Some("telephone-event")
        );
        assert_eq!(sdp.payload_name(&streams[1], "31"), Some("H261"));
        assert_eq!(sdp.payload_name(&streams[1], "99"), None);
        assert_eq!(sdp.stream_attribute(&streams[0], "sendrecv"), Some(""));
        assert_eq!(
            sdp.stream_attribute(&streams[0], "rtpmap"),
            Some("0 PCMU/8000")
        );
        assert_eq!(sdp.connection_address(&streams[0]), Some("192.0.2.7"));
    }

    #[test]
    fn payloads_removed_with_their_attributes() {
        let sdp = Sdp::parse(OFFER.as_bytes()).unwrap();
        let out = sdp.without_payloads(|s| {
            if s.media == "audio" {
                vec!["0".into(), "101".into()]
            } else {
                vec![]
            }
        });
        assert_eq!(
            out,
            "v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n\
             m=audio 4000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n\
             m=video 0 RTP/AVP 31\r\n"
        );
        let (out, n) = sdp.without_lines(|_, l| l.starts_with("a=rtpmap"));
        assert_eq!(n, 3);
        assert!(!out.contains("rtpmap"));
        assert!(out.ends_with("a=sendrecv\r\nm=video 0 RTP/AVP 31\r\n"));
    }

    #[test]
    fn line_endings_are_kept() {
        let sdp = Sdp::parse(b"v=0\nm=audio 1 RTP/AVP 0 8").unwrap();
        assert_eq!(
            sdp.without_payloads(|_| vec!["8".into()]),
            "v=0\nm=audio 1 RTP/AVP 0"
        );
    }

    #[test]
    fn malformed_bodies() {
        for bad in [
            &b""[..],
            b"o=- 1 1 IN IP4 x\r\n",
            b"v=0\r\nnot a line\r\n",
            b"v=0\r\n\r\nm=audio 1 RTP/AVP 0\r\n",
            b"v=0\r\nm=audio\r\n",
            b"v=0\r\nm=audio x RTP/AVP 0\r\n",
            b"v=0\r\nm=audio 1\r\n",
            b"v=0\r\n\xff=1\r\n",
        ] {
            assert!(Sdp::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Sdp::parse(b"v=0\r\nm=audio 4000/2 RTP/AVP\r\n\r\n").is_ok());
    }
}
