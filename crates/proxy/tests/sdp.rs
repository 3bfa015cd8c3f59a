//! SDP and message edits over real UDP sockets: a script removes a codec
//! and a stream from an INVITE's SDP with `KSR.sdpops` and the callee
//! receives the changed SDP with a matching Content-Length; `KSR.xlog`
//! lines carry the expanded pseudo-variables; `KSR.textopsx` applies the
//! edits for later reads and rewrites a reply's status.

use std::net::SocketAddr;

use common::{Ua, fast, logs, request, respond};

mod common;

const OFFER: &str = "v=0\r\n\
o=- 1 1 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 4000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
m=video 5000 RTP/AVP 96\r\n\
a=rtpmap:96 H264/90000\r\n";

fn script(uas: SocketAddr) -> String {
    format!(
        r#"
function ksr_request_route()
    if KSR.siputils.has_totag() > 0 then
        KSR.tm.t_relay()
        return
    end
    KSR.xlog.xinfo("sdp-test: $rm from $si to $ru, call-id of $(hdr(Call-ID){{s.len}}) bytes, $(ua{{s.tolower}})\n")
    if KSR.sdpops.sdp_with_codecs_by_name("PCMU") > 0 then
        KSR.sdpops.remove_codecs_by_name("PCMU", "")
    end
    KSR.sdpops.remove_media("video")
    KSR.textopsx.append_hf_value("X-Codecs", "edited")
    if KSR.textops.search_body("PCMU") > 0 then
        KSR.xlog.xlog("L_INFO", "sdp-test: before apply, PCMU still read\n")
    end
    KSR.textopsx.msg_apply_changes()
    if KSR.textops.search_body("PCMU") < 0 and KSR.sdpops.sdp_with_media("video") == 0 then
        KSR.xlog.xlog("L_INFO", "sdp-test: after apply, $hdr(X-Codecs) body of $cl bytes\n")
    end
    KSR.tm.t_on_reply("rewrite")
    KSR.pv.sets("$du", "sip:{uas}")
    KSR.tm.t_relay()
end

function rewrite()
    if KSR.pv.get("$rs") == 486 then
        KSR.textopsx.change_reply_status(404, "Not Here")
    end
end
"#
    )
}

/// The header value of `name` in `msg`.
fn header<'m>(msg: &'m str, name: &str) -> Option<&'m str> {
    msg.split("\r\n")
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callee_receives_the_edited_sdp() {
    logs::capture();
    let (uac, uas) = (Ua::new().await, Ua::new().await);
    let proxy = common::start_with(&script(uas.addr), &["udp:127.0.0.1:0"], fast()).await[0].1;

    let invite = request("INVITE", "sip:bob@example.com", uac.addr, "s1", "sdp", 1).replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "User-Agent: Test-Phone\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{OFFER}",
            OFFER.len()
        ),
    );
    uac.send(&invite, proxy).await;
    let (got, from) = uas.expect("INVITE ").await;

    let (head, body) = got.split_once("\r\n\r\n").expect("a header section");
    let length: usize = header(head, "Content-Length")
        .expect("Content-Length")
        .parse()
        .expect("a number");
    assert_eq!(length, body.len(), "{got}");
    assert_eq!(
        body,
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio 4000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
    );
    assert_eq!(header(head, "Content-Type"), Some("application/sdp"));
    assert_eq!(header(head, "X-Codecs"), Some("edited"));

    // The callee refuses; the reply route rewrites the status.
    uas.send(&respond(&got, 486, "Busy Here", "b1"), from).await;
    let (reply, _) = uac.expect("SIP/2.0 4").await;
    assert!(reply.starts_with("SIP/2.0 404 Not Here\r\n"), "{reply}");
    uas.expect("ACK ").await;

    let line = format!(
        "sdp-test: INVITE from 127.0.0.1 to sip:bob@example.com, call-id of {} bytes, test-phone",
        "sdp@test".len()
    );
    assert_eq!(
        logs::logged(&[&line]).len(),
        1,
        "{:?}",
        logs::logged(&["sdp-test"])
    );
    assert_eq!(
        logs::logged(&["sdp-test: before apply, PCMU still read"]).len(),
        1
    );
    let applied = format!("sdp-test: after apply, edited body of {} bytes", body.len());
    assert_eq!(
        logs::logged(&[&applied]).len(),
        1,
        "{:?}",
        logs::logged(&["sdp-test"])
    );
    // Every script line names the tenant.
    assert!(
        logs::logged(&["sdp-test"])
            .iter()
            .all(|l| l.contains("tenant"))
    );
}
