//! Reload under load, over real sockets: while SIPp places 2,000 calls
//! through `kemibox run`, the script file is replaced three times
//! (`auto_reload`): a good version 2, a broken script, a good version 3.
//! No call fails, the broken script never serves (OPTIONS keep answering
//! the version before it, no request gets an error reply), and the
//! metrics show the versions and the refused reload.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::sipp::{Running, count, kemibox_run, scenario, sipp};

const PROXY: &str = "127.0.0.1:27161";
const METRICS: &str = "127.0.0.1:27169";
const UAS_PORT: &str = "27180";
const UAC_PORT: &str = "27170";

/// The relay fixture, calling the UAS on `UAS_PORT`, answering OPTIONS
/// with `version`.
fn version(version: &str) -> String {
    let relay =
        std::fs::read_to_string(common::root().join("tests/fixtures/scripts/isolation-relay.lua"))
            .unwrap();
    relay
        .replace("127.0.0.1:27080", &format!("127.0.0.1:{UAS_PORT}"))
        .replace(
            r#"KSR.sl.sl_send_reply(200, "b")"#,
            &format!(r#"KSR.sl.sl_send_reply(200, "{version}")"#),
        )
}

/// Replace the script file the way an editor or a deploy does: write
/// aside, rename over.
fn replace(script: &Path, text: &str) {
    let aside = script.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, script).unwrap();
}

/// The reason phrase of the answer to an OPTIONS.
fn options(ua: &UdpSocket, n: u32) -> String {
    let me = ua.local_addr().unwrap();
    let text = format!(
        "OPTIONS sip:x@{PROXY} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-reload-{n}\r\nMax-Forwards: 70\r\nFrom: <sip:a@x>;tag={n}\r\nTo: <sip:x@{PROXY}>\r\nCall-ID: reload-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    ua.send_to(text.as_bytes(), PROXY).unwrap();
    let mut buf = [0u8; 4096];
    match ua.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        Err(e) => format!("no answer: {e}"),
    }
}

/// Wait until OPTIONS are answered `200 {expected}` (the watcher looks
/// once a second).
fn serving(ua: &UdpSocket, n: &mut u32, expected: &str) {
    let started = Instant::now();
    loop {
        *n += 1;
        let status = options(ua, *n);
        if status == format!("SIP/2.0 200 {expected}") {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still {status:?}, expected 200 {expected}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

#[test]
fn three_reloads_one_broken_under_2000_calls_fail_none() {
    let dir = std::env::temp_dir().join(format!("kemibox-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("route.lua");
    std::fs::write(&script, version("v1")).unwrap();
    let config = dir.join("kemibox.toml");
    std::fs::write(
        &config,
        format!(
            "script = \"route.lua\"\nlisten = [\"udp:{PROXY}\"]\nauto_reload = true\n\n[metrics]\nlisten = \"{METRICS}\"\n"
        ),
    )
    .unwrap();
    let log = dir.join("kemibox.log");
    let _proxy = kemibox_run(&dir, &["--config", config.to_str().unwrap()], &log);
    let uas = sipp(&dir, &["-sf", &scenario("uas_rr.xml"), "-p", UAS_PORT])
        .spawn()
        .expect("sipp installed (scripts/setup.sh)");
    let _uas = Running(uas);
    std::thread::sleep(Duration::from_millis(500));

    // 2,000 calls at 200 per second: about 10 s.
    let uac_dir = dir.clone();
    let calls = std::thread::spawn(move || {
        sipp(
            &uac_dir,
            &[
                "-sf",
                &scenario("uac_rr.xml"),
                PROXY,
                "-p",
                UAC_PORT,
                "-r",
                "200",
                "-m",
                "2000",
                "-timeout",
                "120s",
                "-timeout_error",
                "-trace_stat",
                "-stf",
                "uac.csv",
                "-trace_err",
            ],
        )
        .status()
        .unwrap()
    });

    let ua = UdpSocket::bind("127.0.0.1:0").unwrap();
    ua.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut n = 0;
    serving(&ua, &mut n, "v1");
    std::thread::sleep(Duration::from_secs(2));
    replace(&script, &version("v2"));
    serving(&ua, &mut n, "v2");

    std::thread::sleep(Duration::from_secs(1));
    let refused_before = count(&log, "reload refused");
    replace(&script, "function ksr_request_route(\n  broken(\nend\n");
    let started = Instant::now();
    while count(&log, "reload refused") == refused_before {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no refusal logged"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    serving(&ua, &mut n, "v2");

    std::thread::sleep(Duration::from_secs(1));
    replace(&script, &version("v3"));
    serving(&ua, &mut n, "v3");

    let status = calls.join().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        status.success(),
        "SIPp reported failed calls ({status}); see {}",
        dir.display()
    );
    assert!(
        text.contains("route.lua:2: ')' expected"),
        "the refusal names the script and line: {text}"
    );

    let metrics_addr: SocketAddr = METRICS.parse().unwrap();
    let metrics = common::http_get(metrics_addr, "/metrics").expect("metrics served");
    let tenant = r#"tenant="default""#;
    assert_eq!(
        metric(&metrics, &format!("kemibox_script_version{{{tenant}}}")),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            &format!(r#"kemibox_reloads_total{{{tenant},result="ok"}}"#)
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &metrics,
            &format!(r#"kemibox_reloads_total{{{tenant},result="refused"}}"#)
        ),
        Some(1.0)
    );
    // Nothing answered with an error: every INVITE, ACK, BYE went through.
    assert_eq!(
        metric(
            &metrics,
            &format!(r#"kemibox_replies_total{{{tenant},class="5xx"}}"#)
        ),
        Some(0.0)
    );
    for outcome in ["lua_error", "not_found", "trap", "load_failure"] {
        assert!(
            !metrics
                .lines()
                .any(|l| l.contains(&format!("outcome=\"{outcome}\"")) && !l.ends_with(" 0")),
            "an invocation ended {outcome}: {metrics}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
