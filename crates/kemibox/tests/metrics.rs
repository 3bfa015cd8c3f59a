//! `[metrics] listen` in `kemibox run --config`: the endpoint serves the
//! proxy's counters; an address that cannot be used is refused at start.

mod common;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::probe::{free_tcp_port, free_udp_port};

/// A fresh directory with `proxy.toml` (`config`) and `answer.lua`.
fn setup(name: &str, config: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kemibox-metrics-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("answer.lua"),
        "function ksr_request_route()\n  KSR.sl.sl_send_reply(200, \"OK\")\nend\n",
    )
    .unwrap();
    std::fs::write(dir.join("proxy.toml"), config).unwrap();
    dir
}

fn kemibox_run(dir: &PathBuf) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kemibox"));
    c.args(["run", "--config"])
        .arg(dir.join("proxy.toml"))
        .env("NO_COLOR", "1")
        .env("KEMIBOX_DATA_DIR", dir);
    c
}

#[test]
fn a_metrics_address_in_use_is_refused_with_its_name() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = setup(
        "taken",
        &format!(
            "script = \"answer.lua\"\nlisten = [\"udp:127.0.0.1:0\"]\n\n[metrics]\nlisten = \"{addr}\"\n"
        ),
    );
    let out = kemibox_run(&dir).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("kemibox: cannot listen for metrics on {addr}")),
        "{err}"
    );
}

#[test]
fn a_malformed_metrics_address_is_refused_with_the_line() {
    let dir = setup(
        "malformed",
        "listen = [\"udp:127.0.0.1:0\"]\n\n[metrics]\nlisten = \"localhost\"\n",
    );
    let out = kemibox_run(&dir).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("proxy.toml: line 3: metrics.listen = \"localhost\""),
        "{err}"
    );
    assert!(err.contains("expected IP:PORT"), "{err}");
}

#[test]
fn the_endpoint_serves_the_proxys_counters() {
    let (sip_port, http_port) = (free_udp_port(), free_tcp_port());
    let dir = setup(
        "serve",
        &format!(
            "script = \"answer.lua\"\nlisten = [\"udp:127.0.0.1:{sip_port}\"]\n\n[metrics]\nlisten = \"127.0.0.1:{http_port}\"\n"
        ),
    );
    let mut child = kemibox_run(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    let get = || common::http_get(http, "/metrics");
    let started = Instant::now();
    let mut first = None;
    while first.is_none() && started.elapsed() < Duration::from_secs(120) {
        first = get();
        std::thread::sleep(Duration::from_millis(50));
    }
    let ua = UdpSocket::bind("127.0.0.1:0").unwrap();
    ua.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let me = ua.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKm1\r\nMax-Forwards: 70\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: metrics-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    ua.send_to(options.as_bytes(), ("127.0.0.1", sip_port))
        .unwrap();
    let mut buf = [0u8; 4096];
    let answered = ua
        .recv(&mut buf)
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    let text = get();
    let _ = child.kill();
    let _ = child.wait();
    let first = first.expect("the endpoint answers");
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
    assert!(
        !first.contains("kemibox_invocations_total{tenant=\"default\""),
        "no invocation before the first request: {first}"
    );
    assert!(answered.unwrap().starts_with("SIP/2.0 200 "));
    let text = text.unwrap();
    for line in [
        "kemibox_invocations_total{tenant=\"default\",route=\"ksr_request_route\",outcome=\"ok\"} 1",
        "kemibox_replies_total{tenant=\"default\",class=\"2xx\"} 1",
        "kemibox_sip_messages_received_total{transport=\"udp\",kind=\"request\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}
