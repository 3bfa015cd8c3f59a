//! `KSR.sdpops`: Kamailio's sdpops on the SDP body ([`sdp::Sdp`]).
//!
//! Tests read the body as received, as Kamailio does until
//! `msg_apply_changes`; edits start from the body as the earlier edits
//! left it (so several edits compose) and replace it through the message's
//! [`kemibox_sip::Edits`], whose renderer writes the matching
//! Content-Length when the message is relayed.

pub(crate) mod sdp;

use bytes::Bytes;
use kemibox_sip::SipMessage;

use crate::bindings::kemibox::ksr::sdpops::Host;
use crate::pv_name::{self, PvName};
use crate::{Ctx, Level, PvValue};
use sdp::{Sdp, Stream};

/// What a look at the message's SDP found.
enum Look<T> {
    /// No message, no body, or a body that is not SDP.
    NoSdp,
    /// An SDP body that does not parse (logged).
    Malformed,
    Found(T),
}

/// Whether the message's body is SDP by its Content-Type (none counts, as
/// Kamailio assumes SDP then).
fn is_sdp_type(sip: &SipMessage) -> bool {
    sip.content_type().is_none_or(|ct| {
        ct.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case("application/sdp")
    })
}

/// The items of a comma-separated list, trimmed, empty ones dropped.
fn items(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .collect()
}

/// Whether `stream` is of type `media` ("" matches every stream).
fn media_matches(stream: &Stream<'_>, media: &str) -> bool {
    media.is_empty() || stream.media.eq_ignore_ascii_case(media)
}

/// Kamailio's numeric log levels (L_ALERT -5 ... L_DBG 3).
fn numeric_level(level: i32) -> Level {
    match level {
        i32::MIN..=-2 => Level::Crit,
        -1 => Level::Err,
        0 => Level::Warn,
        1 => Level::Notice,
        2 => Level::Info,
        _ => Level::Dbg,
    }
}

/// How codecs are named in a list: by payload type or by encoding name.
#[derive(Clone, Copy)]
enum CodecKey {
    Id,
    Name,
}

impl CodecKey {
    /// Whether payload type `pt` of `stream` is `wanted`.
    fn matches(self, sdp: &Sdp<'_>, stream: &Stream<'_>, pt: &str, wanted: &str) -> bool {
        match self {
            CodecKey::Id => pt == wanted,
            CodecKey::Name => sdp
                .payload_name(stream, pt)
                .is_some_and(|n| n.eq_ignore_ascii_case(wanted)),
        }
    }
}

impl Ctx {
    /// Parse the SDP body (the received one, or with `current` the one
    /// the edits so far leave) and run `f` on it; a malformed one is
    /// logged for `function`.
    fn look_sdp<T>(
        &mut self,
        function: &str,
        current: bool,
        f: impl FnOnce(&Sdp<'_>) -> T,
    ) -> Look<T> {
        let outcome = {
            let Some(m) = self.message.as_ref() else {
                return Look::NoSdp;
            };
            let body = if current {
                m.edits.body(&m.sip)
            } else {
                m.sip.body()
            };
            if body.is_empty() || !is_sdp_type(&m.sip) {
                return Look::NoSdp;
            }
            Sdp::parse(body).map(|sdp| f(&sdp))
        };
        match outcome {
            Ok(t) => Look::Found(t),
            Err(why) => {
                self.script_error(function, format!("malformed SDP: {why}"));
                Look::Malformed
            }
        }
    }

    /// Edit the SDP body: `f` gives the new body and the result; the body
    /// is replaced only when it changed. No SDP or a malformed one: -1.
    fn edit_sdp(&mut self, function: &str, f: impl FnOnce(&Sdp<'_>) -> (String, i32)) -> i32 {
        let (new, result) = match self.look_sdp(function, true, |sdp| {
            let (new, result) = f(sdp);
            let changed = !sdp
                .lines()
                .eq(new.lines().map(|l| l.trim_end_matches('\r')));
            (changed.then_some(new), result)
        }) {
            Look::Found(found) => found,
            Look::NoSdp | Look::Malformed => return -1,
        };
        if let (Some(new), Some(m)) = (new, self.message.as_mut()) {
            // No new Content-Type: the body stays application/sdp.
            if let Err(e) = m.edits.replace_body(Some(Bytes::from(new)), None) {
                self.script_error(function, format!("cannot replace the body: {e}"));
                return -1;
            }
        }
        result
    }

    /// Remove (`keep` false) or keep only (`keep` true) the codecs of
    /// `codecs` in the streams of type `media`: Kamailio's 0, or -1.
    fn filter_codecs(
        &mut self,
        function: &str,
        codecs: &str,
        media: &str,
        key: CodecKey,
        keep: bool,
    ) -> i32 {
        let wanted = items(codecs);
        self.edit_sdp(function, |sdp| {
            let body = sdp.without_payloads(|stream| {
                if !media_matches(stream, media) {
                    return Vec::new();
                }
                stream
                    .formats
                    .iter()
                    .filter(|pt| {
                        let listed = wanted.iter().any(|w| key.matches(sdp, stream, pt, w));
                        listed != keep
                    })
                    .map(|pt| pt.to_string())
                    .collect()
            });
            (body, 0)
        })
    }

    fn remove_lines_by_prefix(&mut self, function: &str, prefix: &str, media: &str) -> i32 {
        if prefix.is_empty() {
            self.script_error(function, "empty prefix");
            return -1;
        }
        self.edit_sdp(function, |sdp| {
            let streams = sdp.streams();
            let in_scope = |i: usize| {
                media.is_empty()
                    || streams
                        .iter()
                        .any(|s| media_matches(s, media) && (s.first..s.end).contains(&i))
            };
            let (body, n) = sdp.without_lines(|i, l| l.starts_with(prefix) && in_scope(i));
            (body, i32::try_from(n).unwrap_or(i32::MAX))
        })
    }

    fn remove_streams(&mut self, function: &str, media: &str) -> i32 {
        let found = self.look_sdp(function, true, |sdp| {
            sdp.streams().iter().any(|s| media_matches(s, media))
        });
        match found {
            Look::Found(true) => {}
            Look::Found(false) | Look::NoSdp => return 0,
            Look::Malformed => return -1,
        }
        self.edit_sdp(function, |sdp| {
            let gone: Vec<(usize, usize)> = sdp
                .streams()
                .iter()
                .filter(|s| media_matches(s, media))
                .map(|s| (s.first, s.end))
                .collect();
            let (body, _) =
                sdp.without_lines(|i, _| gone.iter().any(|&(a, b)| (a..b).contains(&i)));
            (body, i32::try_from(gone.len()).unwrap_or(i32::MAX))
        })
    }

    /// The name of an AVP for the functions that store into one, logging
    /// anything else.
    fn avp_target(&mut self, function: &str, name: &str) -> bool {
        let ok = matches!(pv_name::parse(name), Some(PvName::Named("avp", _)));
        if !ok {
            self.script_error(function, format!("not an AVP: {name:?}"));
        }
        ok
    }

    fn store_avp(&mut self, function: &str, name: &str, value: String) -> i32 {
        match self.pv_write(name, Some(PvValue::Str(value))) {
            Ok(()) => 1,
            Err(e) => {
                self.script_error(function, format!("{e}: {name}"));
                -1
            }
        }
    }

    /// Kamailio's `with_codecs` result: per stream and codec, found or
    /// not; 1 all found, 2 some found and some missing, 0 none found.
    fn with_codecs(&mut self, function: &str, codecs: &str, key: CodecKey) -> i32 {
        let wanted = items(codecs);
        match self.look_sdp(function, false, |sdp| {
            let (mut found, mut missing) = (false, false);
            for stream in sdp.streams() {
                for w in &wanted {
                    if stream
                        .formats
                        .iter()
                        .any(|pt| key.matches(sdp, &stream, pt, w))
                    {
                        found = true;
                    } else {
                        missing = true;
                    }
                }
            }
            i32::from(found) + i32::from(found && missing)
        }) {
            Look::Found(result) => result,
            Look::NoSdp | Look::Malformed => -1,
        }
    }

    /// 1 when a stream's transport is `transport` (`like`: contains it).
    fn with_transport(&mut self, function: &str, transport: &str, like: bool) -> i32 {
        match self.look_sdp(function, false, |sdp| {
            sdp.streams().iter().any(|s| {
                if like {
                    s.transport.contains(transport)
                } else {
                    s.transport.eq_ignore_ascii_case(transport)
                }
            })
        }) {
            Look::Found(true) => 1,
            _ => -1,
        }
    }

    /// `is_audio_on_hold` (Kamailio's textops): an audio stream with
    /// `a=sendonly` or `a=inactive` (its own or the session's), or the
    /// RFC 2543 hold address 0.0.0.0.
    pub(crate) fn audio_on_hold(&mut self, function: &str) -> bool {
        matches!(
            self.look_sdp(function, false, |sdp| {
                let streams = sdp.streams();
                let session_end = streams.first().map_or(0, |s| s.first);
                let session_mode = sdp
                    .lines()
                    .take(session_end)
                    .any(|l| l == "a=sendonly" || l == "a=inactive");
                streams.iter().any(|s| {
                    s.media.eq_ignore_ascii_case("audio")
                        && (sdp.stream_attribute(s, "sendonly").is_some()
                            || sdp.stream_attribute(s, "inactive").is_some()
                            || (session_mode && sdp.stream_attribute(s, "sendrecv").is_none())
                            || sdp.connection_address(s) == Some("0.0.0.0"))
                })
            }),
            Look::Found(true)
        )
    }
}

impl Host for Ctx {
    async fn remove_codecs_by_name(&mut self, codecs: String, media: String) -> i32 {
        let f = "KSR.sdpops.remove_codecs_by_name";
        self.filter_codecs(f, &codecs, &media, CodecKey::Name, false)
    }
    async fn remove_codecs_by_id(&mut self, codecs: String, media: String) -> i32 {
        let f = "KSR.sdpops.remove_codecs_by_id";
        self.filter_codecs(f, &codecs, &media, CodecKey::Id, false)
    }
    async fn keep_codecs_by_name(&mut self, codecs: String, media: String) -> i32 {
        let f = "KSR.sdpops.keep_codecs_by_name";
        self.filter_codecs(f, &codecs, &media, CodecKey::Name, true)
    }
    async fn keep_codecs_by_id(&mut self, codecs: String, media: String) -> i32 {
        let f = "KSR.sdpops.keep_codecs_by_id";
        self.filter_codecs(f, &codecs, &media, CodecKey::Id, true)
    }
    async fn remove_line_by_prefix(&mut self, prefix: String, media: String) -> i32 {
        self.remove_lines_by_prefix("KSR.sdpops.remove_line_by_prefix", &prefix, &media)
    }
    async fn remove_media(&mut self, media: String) -> i32 {
        self.remove_streams("KSR.sdpops.remove_media", &media)
    }
    async fn sdp_remove_codecs_by_name(&mut self, codecs: String, media: String) -> i32 {
        let f = "KSR.sdpops.sdp_remove_codecs_by_name";
        self.filter_codecs(f, &codecs, &media, CodecKey::Name, false)
    }
    async fn sdp_keep_codecs_by_name(&mut self, codecs: String, media: String) -> i32 {
        let f = "KSR.sdpops.sdp_keep_codecs_by_name";
        self.filter_codecs(f, &codecs, &media, CodecKey::Name, true)
    }
    async fn sdp_remove_media(&mut self, media: String) -> i32 {
        self.remove_streams("KSR.sdpops.sdp_remove_media", &media)
    }
    async fn sdp_remove_line_by_prefix(&mut self, prefix: String, media: String) -> i32 {
        self.remove_lines_by_prefix("KSR.sdpops.sdp_remove_line_by_prefix", &prefix, &media)
    }
    async fn sdp_content(&mut self) -> i32 {
        match self.look_sdp("KSR.sdpops.sdp_content", false, |_| ()) {
            Look::Found(()) => 1,
            _ => -1,
        }
    }
    async fn sdp_content_flags(&mut self, flags: i32) -> i32 {
        if flags == 0 {
            return self.sdp_content().await;
        }
        let Some(m) = self.message.as_ref() else {
            return -1;
        };
        let body = m.sip.body();
        if body.is_empty() {
            return -1;
        }
        let Some(ct) = m.sip.content_type() else {
            return 1;
        };
        let ct = ct
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let sdp_part = || {
            String::from_utf8_lossy(body)
                .to_ascii_lowercase()
                .contains("application/sdp")
        };
        super::kemi(ct == "application/sdp" || (ct == "multipart/mixed" && sdp_part()))
    }
    async fn sdp_with_ice(&mut self) -> i32 {
        super::kemi(self.message.as_ref().is_some_and(|m| {
            m.sip
                .body()
                .windows(b"a=candidate".len())
                .any(|w| w == b"a=candidate")
        }))
    }
    async fn sdp_with_media(&mut self, media: String) -> i32 {
        match self.look_sdp("KSR.sdpops.sdp_with_media", false, |sdp| {
            sdp.streams()
                .iter()
                .any(|s| s.media.eq_ignore_ascii_case(&media))
        }) {
            Look::Found(true) => 1,
            Look::Found(false) | Look::NoSdp => 0,
            Look::Malformed => -1,
        }
    }
    async fn sdp_with_active_media(&mut self, media: String) -> i32 {
        match self.look_sdp("KSR.sdpops.sdp_with_active_media", false, |sdp| {
            sdp.streams().iter().any(|s| {
                let port = s.port.split('/').next().unwrap_or(s.port);
                s.media.eq_ignore_ascii_case(&media)
                    && port.parse::<u32>().is_ok_and(|p| p != 0)
                    && sdp.stream_attribute(s, "inactive").is_none()
            })
        }) {
            Look::Found(true) => 1,
            Look::Found(false) | Look::NoSdp => 0,
            Look::Malformed => -1,
        }
    }
    async fn sdp_with_codecs_by_id(&mut self, codecs: String) -> i32 {
        self.with_codecs("KSR.sdpops.sdp_with_codecs_by_id", &codecs, CodecKey::Id)
    }
    async fn sdp_with_codecs_by_name(&mut self, codecs: String) -> i32 {
        self.with_codecs(
            "KSR.sdpops.sdp_with_codecs_by_name",
            &codecs,
            CodecKey::Name,
        )
    }
    async fn sdp_get(&mut self, avp: String) -> i32 {
        const FUNCTION: &str = "KSR.sdpops.sdp_get";
        if !self.avp_target(FUNCTION, &avp) {
            return -1;
        }
        match self.look_sdp(FUNCTION, false, |sdp| {
            let mut text = sdp.lines().collect::<Vec<_>>().join("\r\n");
            text.push_str("\r\n");
            text
        }) {
            Look::Found(text) => self.store_avp(FUNCTION, &avp, text),
            Look::NoSdp => -2,
            Look::Malformed => -1,
        }
    }
    async fn sdp_transport(&mut self, avp: String) -> i32 {
        const FUNCTION: &str = "KSR.sdpops.sdp_transport";
        if !self.avp_target(FUNCTION, &avp) {
            return -1;
        }
        let common = self.look_sdp(FUNCTION, false, |sdp| {
            let streams = sdp.streams();
            let first = streams.first().map(|s| s.transport.to_string());
            match &first {
                Some(t) if streams.iter().any(|s| !s.transport.eq_ignore_ascii_case(t)) => Err(()),
                _ => Ok(first),
            }
        });
        match common {
            Look::Found(Ok(Some(transport))) => self.store_avp(FUNCTION, &avp, transport),
            // No stream (or no SDP): nothing stored, 1 as Kamailio.
            Look::Found(Ok(None)) | Look::NoSdp => 1,
            Look::Found(Err(())) => -2,
            Look::Malformed => -1,
        }
    }
    async fn sdp_with_transport(&mut self, transport: String) -> i32 {
        self.with_transport("KSR.sdpops.sdp_with_transport", &transport, false)
    }
    async fn sdp_with_transport_like(&mut self, transport: String) -> i32 {
        self.with_transport("KSR.sdpops.sdp_with_transport_like", &transport, true)
    }
    async fn sdp_get_line_startswith(&mut self, avp: String, sline: String) -> i32 {
        const FUNCTION: &str = "KSR.sdpops.sdp_get_line_startswith";
        if sline.is_empty() || avp.is_empty() {
            self.script_error(FUNCTION, "empty AVP name or search string");
            return -1;
        }
        if !self.avp_target(FUNCTION, &avp) {
            return -1;
        }
        match self.look_sdp(FUNCTION, false, |sdp| {
            sdp.lines()
                .find(|l| l.starts_with(sline.as_str()))
                .map(str::to_string)
        }) {
            Look::Found(Some(line)) => self.store_avp(FUNCTION, &avp, line),
            Look::Found(None) | Look::Malformed => -1,
            Look::NoSdp => -2,
        }
    }
    async fn sdp_print(&mut self, llevel: i32) -> i32 {
        let summary = self.look_sdp("KSR.sdpops.sdp_print", false, |sdp| {
            let streams: Vec<String> = sdp
                .streams()
                .iter()
                .map(|s| {
                    let codecs: Vec<String> = s
                        .formats
                        .iter()
                        .map(|pt| format!("{pt}:{}", sdp.payload_name(s, pt).unwrap_or("?")))
                        .collect();
                    format!(
                        "{} port {} {} [{}]",
                        s.media,
                        s.port,
                        s.transport,
                        codecs.join(" ")
                    )
                })
                .collect();
            format!("SDP: {} stream(s): {}", streams.len(), streams.join("; "))
        });
        match summary {
            Look::Found(line) => {
                self.log(numeric_level(llevel), &line);
                1
            }
            Look::NoSdp => 1,
            Look::Malformed => -1,
        }
    }
}

#[cfg(test)]
mod tests;
