use super::*;
use crate::bindings::kemibox::ksr::pv::Host as _;
use crate::testing::{INVITE, ctx, logs, ready, rendered, s, value};

const OFFER: &str = "v=0\r\n\
o=- 1 1 IN IP4 192.0.2.7\r\n\
s=-\r\n\
c=IN IP4 192.0.2.7\r\n\
t=0 0\r\n\
m=audio 4000 RTP/AVP 0 8 18 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=candidate:1 1 UDP 2130706431 192.0.2.7 4000 typ host\r\n\
a=sendrecv\r\n\
m=video 5000 RTP/SAVP 96\r\n\
a=rtpmap:96 H264/90000\r\n\
a=inactive\r\n";

/// An INVITE carrying `body` as `content_type` (none when empty).
fn invite_with_body(body: &str, content_type: &str) -> String {
    let ct = if content_type.is_empty() {
        String::new()
    } else {
        format!("Content-Type: {content_type}\r\n")
    };
    INVITE.replace(
        "Content-Length: 0\r\n\r\n",
        &format!("{ct}Content-Length: {}\r\n\r\n{body}", body.len()),
    )
}

/// The body of the message as it would be forwarded, after checking its
/// Content-Length.
fn forwarded_body(c: &Ctx) -> String {
    let out = rendered(c);
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(length, body.len(), "{out}");
    body.to_string()
}

#[test]
fn codecs_removed_by_name_and_id() {
    let mut c = ctx(&invite_with_body(OFFER, "application/sdp"));
    assert_eq!(
        ready(c.remove_codecs_by_name("pcmu,G729".into(), "".into())),
        0
    );
    let body = forwarded_body(&c);
    assert!(body.contains("m=audio 4000 RTP/AVP 8 101\r\n"), "{body}");
    assert!(!body.contains("PCMU") && !body.contains("G729") && !body.contains("annexb"));
    assert!(body.contains("a=fmtp:101 0-15\r\n"));
    // Edits build on each other; tests still read the body as received.
    assert_eq!(
        ready(c.remove_codecs_by_id("101".into(), "audio".into())),
        0
    );
    let body = forwarded_body(&c);
    assert!(body.contains("m=audio 4000 RTP/AVP 8\r\n"), "{body}");
    assert!(!body.contains("telephone-event"));
    // Found in the audio stream, missing in the video one: 2, as Kamailio
    // counts per stream.
    assert_eq!(ready(c.sdp_with_codecs_by_name("PCMU".into())), 2);
    // The media filter leaves other streams alone.
    assert_eq!(ready(c.remove_codecs_by_id("96".into(), "audio".into())), 0);
    assert!(forwarded_body(&c).contains("m=video 5000 RTP/SAVP 96\r\n"));
    assert_eq!(
        ready(c.sdp_remove_codecs_by_name("H264".into(), "".into())),
        0
    );
    assert!(forwarded_body(&c).contains("m=video 5000 RTP/SAVP\r\n"));
    assert!(logs(&c).is_empty());
}

#[test]
fn codecs_kept() {
    let mut c = ctx(&invite_with_body(OFFER, "application/sdp"));
    assert_eq!(
        ready(c.keep_codecs_by_name("PCMA,telephone-event".into(), "audio".into())),
        0
    );
    let body = forwarded_body(&c);
    assert!(body.contains("m=audio 4000 RTP/AVP 8 101\r\n"), "{body}");
    assert!(body.contains("m=video 5000 RTP/SAVP 96\r\n"), "{body}");
    assert_eq!(ready(c.keep_codecs_by_id("8".into(), "".into())), 0);
    let body = forwarded_body(&c);
    assert!(body.contains("m=audio 4000 RTP/AVP 8\r\n"), "{body}");
    assert!(body.contains("m=video 5000 RTP/SAVP\r\n"), "{body}");
    assert_eq!(
        ready(c.sdp_keep_codecs_by_name("PCMA".into(), "".into())),
        0
    );
}

#[test]
fn lines_and_streams_removed() {
    let mut c = ctx(&invite_with_body(OFFER, "application/sdp"));
    assert_eq!(
        ready(c.remove_line_by_prefix("a=rtpmap:".into(), "video".into())),
        1
    );
    assert_eq!(
        ready(c.remove_line_by_prefix("a=fmtp".into(), "".into())),
        2
    );
    assert_eq!(
        ready(c.remove_line_by_prefix("a=nothing".into(), "".into())),
        0
    );
    assert_eq!(ready(c.remove_line_by_prefix("".into(), "".into())), -1);
    let body = forwarded_body(&c);
    assert!(!body.contains("fmtp") && !body.contains("H264"), "{body}");
    assert_eq!(ready(c.remove_media("VIDEO".into())), 1);
    assert_eq!(ready(c.remove_media("video".into())), 0);
    assert_eq!(ready(c.sdp_remove_media("text".into())), 0);
    let body = forwarded_body(&c);
    assert!(body.ends_with("a=sendrecv\r\n"), "{body}");
    assert_eq!(
        ready(c.sdp_remove_line_by_prefix("a=candidate".into(), "".into())),
        1
    );
    assert_eq!(
        logs(&c),
        vec!["KSR.sdpops.remove_line_by_prefix: empty prefix"]
    );
}

#[test]
fn tests_on_the_received_sdp() {
    let mut c = ctx(&invite_with_body(OFFER, "application/sdp"));
    assert_eq!(ready(c.sdp_content()), 1);
    assert_eq!(ready(c.sdp_content_flags(1)), 1);
    assert_eq!(ready(c.sdp_with_ice()), 1);
    assert_eq!(ready(c.sdp_with_media("audio".into())), 1);
    assert_eq!(ready(c.sdp_with_media("text".into())), 0);
    assert_eq!(ready(c.sdp_with_active_media("audio".into())), 1);
    assert_eq!(ready(c.sdp_with_active_media("video".into())), 0);
    assert_eq!(ready(c.sdp_with_codecs_by_name("PCMA,pcmu".into())), 2);
    assert_eq!(ready(c.sdp_with_codecs_by_id("0,8".into())), 2);
    assert_eq!(ready(c.sdp_with_codecs_by_name("OPUS".into())), 0);
    assert_eq!(ready(c.sdp_with_transport("rtp/avp".into())), 1);
    assert_eq!(ready(c.sdp_with_transport("SAVP".into())), -1);
    assert_eq!(ready(c.sdp_with_transport_like("SAVP".into())), 1);
    assert_eq!(ready(c.sdp_transport("$avp(t)".into())), -2);
    assert_eq!(
        ready(c.sdp_get_line_startswith("$avp(m)".into(), "m=video".into())),
        1
    );
    assert_eq!(
        value(ready(c.get("$avp(m)".into()))),
        s("m=video 5000 RTP/SAVP 96")
    );
    assert_eq!(
        ready(c.sdp_get_line_startswith("$avp(m)".into(), "x=".into())),
        -1
    );
    assert_eq!(ready(c.sdp_get("$avp(sdp)".into())), 1);
    assert_eq!(value(ready(c.get("$avp(sdp)".into()))), s(OFFER));
    assert_eq!(ready(c.sdp_get("$var(sdp)".into())), -1);
    assert_eq!(
        c.take_script_error().as_deref(),
        Some("KSR.sdpops.sdp_get: not an AVP: \"$var(sdp)\"")
    );
    assert_eq!(ready(c.sdp_print(2)), 1);
    let l = logs(&c);
    assert_eq!(
        l[0],
        "SDP: 2 stream(s): audio port 4000 RTP/AVP [0:PCMU 8:PCMA 18:G729 \
         101:telephone-event]; video port 5000 RTP/SAVP [96:H264]"
    );
}

#[test]
fn no_sdp_and_other_bodies() {
    let mut c = ctx(INVITE);
    assert_eq!(ready(c.sdp_content()), -1);
    assert_eq!(ready(c.sdp_with_media("audio".into())), 0);
    assert_eq!(ready(c.remove_codecs_by_name("PCMU".into(), "".into())), -1);
    assert_eq!(ready(c.remove_media("audio".into())), 0);
    assert_eq!(ready(c.sdp_with_codecs_by_id("0".into())), -1);
    assert_eq!(ready(c.sdp_get("$avp(x)".into())), -2);
    assert_eq!(
        ready(c.sdp_get_line_startswith("$avp(x)".into(), "m=".into())),
        -2
    );
    assert_eq!(ready(c.sdp_transport("$avp(x)".into())), 1);
    assert_eq!(ready(c.sdp_with_ice()), -1);
    assert_eq!(ready(c.sdp_print(3)), 1);

    let mut c = ctx(&invite_with_body("hello", "text/plain"));
    assert_eq!(ready(c.sdp_content()), -1);
    assert_eq!(ready(c.sdp_content_flags(1)), -1);
    let mixed = "--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--b--\r\n";
    let mut c = ctx(&invite_with_body(mixed, "multipart/mixed;boundary=b"));
    assert_eq!(ready(c.sdp_content_flags(1)), 1);
    // No Content-Type: SDP assumed, as Kamailio.
    let mut c = ctx(&invite_with_body(OFFER, ""));
    assert_eq!(ready(c.sdp_content()), 1);
    assert!(logs(&c).is_empty());
}

/// A body that claims to be SDP but does not parse: -1 and a log line
/// naming the function, the message untouched.
#[test]
fn malformed_sdp_is_refused() {
    let bad = "v=0\r\nm=audio none RTP/AVP 0\r\n";
    let mut c = ctx(&invite_with_body(bad, "application/sdp"));
    assert_eq!(ready(c.sdp_content()), -1);
    assert_eq!(ready(c.sdp_with_media("audio".into())), -1);
    assert_eq!(ready(c.remove_codecs_by_name("PCMU".into(), "".into())), -1);
    assert_eq!(ready(c.remove_line_by_prefix("a=".into(), "".into())), -1);
    assert_eq!(ready(c.remove_media("audio".into())), -1);
    assert_eq!(ready(c.sdp_print(1)), -1);
    assert_eq!(forwarded_body(&c), bad);
    let l = logs(&c);
    assert_eq!(l.len(), 6);
    assert_eq!(
        l[0],
        "KSR.sdpops.sdp_content: malformed SDP: malformed media line \"m=audio none RTP/AVP 0\""
    );
    assert!(l[2].starts_with("KSR.sdpops.remove_codecs_by_name: malformed SDP"));
}

#[test]
fn numeric_levels() {
    assert_eq!(numeric_level(-5), Level::Crit);
    assert_eq!(numeric_level(-1), Level::Err);
    assert_eq!(numeric_level(0), Level::Warn);
    assert_eq!(numeric_level(1), Level::Notice);
    assert_eq!(numeric_level(2), Level::Info);
    assert_eq!(numeric_level(3), Level::Dbg);
}

/// `KSR.textops.is_audio_on_hold` reads the same SDP view.
#[test]
fn audio_on_hold() {
    use crate::bindings::kemibox::ksr::textops::Host as _;
    let held = OFFER.replace("a=sendrecv", "a=sendonly");
    assert_eq!(
        ready(ctx(&invite_with_body(&held, "")).is_audio_on_hold()),
        1
    );
    let held = OFFER.replace("c=IN IP4 192.0.2.7", "c=IN IP4 0.0.0.0");
    assert_eq!(
        ready(ctx(&invite_with_body(&held, "")).is_audio_on_hold()),
        1
    );
    let held = OFFER
        .replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n")
        .replace("a=sendrecv\r\n", "");
    assert_eq!(
        ready(ctx(&invite_with_body(&held, "")).is_audio_on_hold()),
        1
    );
    assert_eq!(
        ready(ctx(&invite_with_body(OFFER, "")).is_audio_on_hold()),
        -1
    );
    assert_eq!(ready(ctx(INVITE).is_audio_on_hold()), -1);
}
