//! `kemibox route` with the text modules: `KSR.xlog` lines expanded and
//! shown as log events, `KSR.sdpops` edits in the forwarded message with
//! its Content-Length, `KSR.is_myself` on bare hosts.

mod common;

use common::*;

const SCRIPT: &str = r#"
function ksr_request_route()
    KSR.xlog.xinfo("x: $rm $fU->$tU from $si ua=$(ua{s.toupper}) $hdr(Subject) $nothing\n")
    KSR.xlog.xlog("L_NOTICE", "x: with PCMU,PCMA " .. KSR.sdpops.sdp_with_codecs_by_name("PCMU,PCMA"))
    KSR.xlog.xdbg("x: myself " .. tostring(KSR.is_myself("127.0.0.1")) .. " "
        .. tostring(KSR.is_myself("127.0.0.1:5060")) .. " "
        .. tostring(KSR.is_myself("127.0.0.1:5999")) .. " "
        .. tostring(KSR.is_myself("sip:127.0.0.1")))
    KSR.sdpops.remove_codecs_by_name("PCMU", "")
    KSR.sdpops.remove_line_by_prefix("a=sendrecv", "")
end
"#;

#[test]
fn route_shows_expanded_lines_and_the_edited_sdp() {
    let dir = std::env::temp_dir().join(format!("kemibox-text-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("text.lua");
    std::fs::write(&script, SCRIPT).unwrap();
    let out = kemibox(&[
        "route",
        script.to_str().unwrap(),
        "--message",
        "tests/fixtures/messages/invite.sip",
    ]);
    let text = stdout(&out);
    assert_eq!(status(&out), 0, "{text}{}", stderr(&out));
    let logs: Vec<(String, String)> = events(&text)
        .iter()
        .filter(|e| e["event"] == "log")
        .map(|e| {
            (
                e["level"].as_str().unwrap().to_string(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        (
            "info",
            "x: INVITE alice->bob from 127.0.0.1 ua=KEMIBOX-FIXTURE/1.0 kemibox fixture call <null>",
        ),
        ("notice", "x: with PCMU,PCMA 1"),
        ("dbg", "x: myself true true false true"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(l, m)| (l.to_string(), m.to_string()))
        .collect();
    assert_eq!(logs, expected, "{text}");

    let forwarded = result(&text)["forwarded"].as_str().unwrap().to_string();
    let (head, body) = forwarded.split_once("\r\n\r\n").unwrap();
    assert!(body.contains("m=audio 6000 RTP/AVP 8 101\r\n"), "{body}");
    assert!(
        !body.contains("PCMU") && !body.contains("sendrecv"),
        "{body}"
    );
    let has = |line: &str| head.split("\r\n").any(|l| l == line);
    assert!(
        has(&format!("Content-Length: {}", body.len())),
        "{forwarded}"
    );
    assert!(has("Content-Type: application/sdp"), "{forwarded}");
    std::fs::remove_dir_all(&dir).unwrap();
}
