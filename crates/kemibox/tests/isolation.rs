//! Tenant isolation over real sockets: two tenants in one `kemibox run`.
//! Tenant "a" (127.0.0.1:27060) loops forever on every INVITE; tenant "b"
//! (127.0.0.1:27061) relays calls to a SIPp callee on 127.0.0.1:27080.
//! While 200 INVITEs hit a (10 ms apart), 1,000 SIPp calls go through b:
//! none fails, every INVITE to a is answered `error_reply` (500), and the
//! proxy still answers b afterwards. SIPp's statistics and response
//! times (`-trace_stat`, `-trace_rtt`) stay in the run's directory; the
//! test prints the INVITE→200 p50/p99 (not asserted: timings are noisy).
//! docs/isolation.md has the measurement.

mod common;

use std::collections::HashMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::sipp::{Running, kemibox_run, scenario, sipp};

const A: &str = "127.0.0.1:27060";
const B: &str = "127.0.0.1:27061";
const UAS_PORT: &str = "27080";
const UAC_PORT: &str = "27070";
const A_INVITES: usize = 200;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kemibox-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture(name: &str) -> String {
    common::root()
        .join("tests/fixtures/scripts")
        .join(name)
        .display()
        .to_string()
}

/// The two tenants' config file in `dir`.
fn write_config(dir: &Path) -> PathBuf {
    let file = dir.join("kemibox.toml");
    let text = format!(
        r#"listen = ["udp:{A}", "udp:{B}"]
log = "info"
error_reply = {{ code = 500, reason = "Server Error" }}

[[tenant]]
id = "a"
script = {a:?}
listen = ["udp:{A}"]
[tenant.limits]
deadline_ms = 50

[[tenant]]
id = "b"
script = {b:?}
listen = ["udp:{B}"]
"#,
        a = fixture("isolation-loop.lua"),
        b = fixture("isolation-relay.lua"),
    );
    std::fs::write(&file, text).unwrap();
    file
}

fn request(method: &str, target: &str, local: &str, call_id: &str) -> String {
    format!(
        "{method} sip:service@{target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:loop@{local}>;tag=t-{call_id}\r\n\
         To: <sip:service@{target}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:loop@{local}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Send `count` INVITEs to tenant a, `gap` apart, and collect every
/// answer's status line by Call-ID until `wait` after the last one.
fn hammer_a(count: usize, gap: Duration, wait: Duration) -> HashMap<String, Vec<String>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = socket.local_addr().unwrap().to_string();
    let receiver = socket.try_clone().unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let total = gap * count as u32 + wait;
    let collect = std::thread::spawn(move || {
        let mut answers: HashMap<String, Vec<String>> = HashMap::new();
        let mut buf = [0u8; 65535];
        let start = Instant::now();
        while start.elapsed() < total {
            let Ok(n) = receiver.recv(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]);
            let status = text.lines().next().unwrap_or("").to_string();
            let call_id = text
                .lines()
                .find_map(|l| l.strip_prefix("Call-ID: "))
                .unwrap_or("")
                .trim()
                .to_string();
            answers.entry(call_id).or_default().push(status);
            let done =
                answers.len() >= count && answers.values().all(|v| v.iter().any(|s| is_final(s)));
            if done {
                break;
            }
        }
        answers
    });
    for i in 0..count {
        let call_id = format!("loop-{i}-{}", std::process::id());
        socket
            .send_to(request("INVITE", A, &local, &call_id).as_bytes(), A)
            .unwrap();
        std::thread::sleep(gap);
    }
    collect.join().unwrap()
}

fn is_final(status: &str) -> bool {
    status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .is_some_and(|c| c >= 200)
}

/// INVITE→200 response times (rtd 1) from SIPp's `*_rtt.csv` in `dir`:
/// (count, p50, p99) in ms.
fn rtt_percentiles(dir: &Path) -> Option<(usize, f64, f64)> {
    let file = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("_rtt.csv"))?;
    let mut times: Vec<f64> = std::fs::read_to_string(file)
        .ok()?
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(';').collect();
            (f.len() >= 3 && f[2].trim() == "1")
                .then(|| f[1].trim().parse::<f64>().ok())
                .flatten()
        })
        .collect();
    if times.is_empty() {
        return None;
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    Some((times.len(), at(0.50), at(0.99)))
}

#[test]
fn a_looping_tenant_does_not_fail_another_tenants_calls() {
    let dir = temp_dir("isolation");
    let config = write_config(&dir);
    let log = dir.join("kemibox.log");
    let mut proxy = kemibox_run(&dir, &["--config", config.to_str().unwrap()], &log);

    let uas_sf = scenario("uas_rr.xml");
    let uas = sipp(&dir, &["-sf", &uas_sf, "-p", UAS_PORT])
        .spawn()
        .expect("sipp installed (scripts/setup.sh)");
    let _uas = Running(uas);
    std::thread::sleep(Duration::from_millis(500));

    // b: 1,000 calls at 100 per second, while a loops.
    let uac_sf = scenario("uac_rr.xml");
    let uac_dir = dir.clone();
    let calls = std::thread::spawn(move || {
        sipp(
            &uac_dir,
            &[
                "-sf",
                &uac_sf,
                B,
                "-p",
                UAC_PORT,
                "-r",
                "100",
                "-m",
                "1000",
                "-timeout",
                "90s",
                "-timeout_error",
                "-trace_stat",
                "-stf",
                "uac.csv",
                "-trace_rtt",
                "-rtt_freq",
                "1",
                "-trace_err",
            ],
        )
        .status()
        .expect("sipp runs")
    });
    let answers = hammer_a(
        A_INVITES,
        Duration::from_millis(10),
        Duration::from_secs(20),
    );
    let status = calls.join().unwrap();

    if let Some((n, p50, p99)) = rtt_percentiles(&dir) {
        eprintln!("b INVITE->200 with a looping: {n} calls, p50 {p50:.1} ms, p99 {p99:.1} ms");
    }
    assert!(
        status.success(),
        "b: SIPp reported failed calls ({status}); see {}",
        dir.display()
    );
    let errors = answers
        .values()
        .filter(|v| v.iter().any(|s| s == "SIP/2.0 500 Server Error"))
        .count();
    eprintln!("a: {errors} of {A_INVITES} INVITEs answered 500 Server Error");
    assert_eq!(
        answers.len(),
        A_INVITES,
        "a: answers by Call-ID: {answers:?}"
    );
    for (call_id, statuses) in &answers {
        assert!(
            statuses.iter().all(|s| s == "SIP/2.0 500 Server Error"),
            "a: {call_id} got {statuses:?}"
        );
    }

    // The proxy is still up and b still answers.
    assert!(
        proxy.0.try_wait().unwrap().is_none(),
        "kemibox is still running"
    );
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let local = socket.local_addr().unwrap().to_string();
    socket
        .send_to(
            request("OPTIONS", B, &local, "isolation-options").as_bytes(),
            B,
        )
        .unwrap();
    let mut buf = [0u8; 65535];
    let n = socket.recv(&mut buf).expect("b answers OPTIONS");
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(
        reply.starts_with("SIP/2.0 200 b\r\n"),
        "b's OPTIONS answer: {reply}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
