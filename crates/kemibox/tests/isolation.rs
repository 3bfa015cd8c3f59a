//! Tenant isolation over real sockets: two tenants in one `kemibox run`.
//! Tenant "a" (127.0.0.1:27060) misbehaves on every INVITE: it loops
//! forever, or it allocates without bound (a memory bomb); tenant "b"
//! (127.0.0.1:27061) relays calls to a SIPp callee on 127.0.0.1:27080.
//! While a gets INVITEs, 1,000 SIPp calls go through b: none fails, every
//! INVITE to a is answered `error_reply` (500), and the proxy still
//! answers b afterwards. With the loop, b's responses also keep their
//! order (a call's 180 before its 200); with the bomb, kemibox's RSS stays
//! under a bound derived from the memory caps. SIPp's statistics and
//! response times (`-trace_stat`, `-trace_rtt`) stay in the run's
//! directory; the loop test prints b's INVITE→200 p50/p99 (not asserted:
//! timings are noisy). docs/isolation.md has the measurements.

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

/// The two tenants' config file in `dir`: a runs `script` under
/// `a_limits` (lines of its `[tenant.limits]`), b relays under `b_limits`.
fn write_config(dir: &Path, script: &str, a_limits: &str, b_limits: &str) -> PathBuf {
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
{a_limits}

[[tenant]]
id = "b"
script = {b:?}
listen = ["udp:{B}"]
[tenant.limits]
{b_limits}
"#,
        a = fixture(script),
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

/// Send `count` INVITEs to tenant a, `burst` at a time, `gap` between
/// bursts, and collect every answer's status line by Call-ID until `wait`
/// after the last one.
fn hammer_a(
    count: usize,
    burst: usize,
    gap: Duration,
    wait: Duration,
) -> HashMap<String, Vec<String>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = socket.local_addr().unwrap().to_string();
    let receiver = socket.try_clone().unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let total = gap * count.div_ceil(burst) as u32 + wait;
    let collect = std::thread::spawn(move || {
        let mut answers: HashMap<String, Vec<String>> = HashMap::new();
        let mut buf = [0u8; 65535];
        let start = Instant::now();
        while start.elapsed() < total {
            let Ok(n) = receiver.recv(&mut buf) else {
                continue;
            };
            let (status, call_id) = status_and_call_id(&buf[..n]);
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
        let call_id = format!("a-{i}-{}", std::process::id());
        socket
            .send_to(request("INVITE", A, &local, &call_id).as_bytes(), A)
            .unwrap();
        if (i + 1) % burst == 0 {
            std::thread::sleep(gap);
        }
    }
    collect.join().unwrap()
}

/// A message's first line and its Call-ID.
fn status_and_call_id(data: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(data);
    let status = text.lines().next().unwrap_or("").to_string();
    let call_id = text
        .lines()
        .find_map(|l| l.strip_prefix("Call-ID: "))
        .unwrap_or("")
        .trim()
        .to_string();
    (status, call_id)
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

/// The tests share ports (the relay script names the callee's): one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `kemibox run` with the two tenants and b's callee (SIPp UAS), started.
struct Setup {
    dir: PathBuf,
    proxy: Running,
    _uas: Running,
}

fn start(name: &str, script: &str, a_limits: &str, b_limits: &str) -> Setup {
    let dir = temp_dir(name);
    let config = write_config(&dir, script, a_limits, b_limits);
    let log = dir.join("kemibox.log");
    let proxy = kemibox_run(&dir, &["--config", config.to_str().unwrap()], &log);
    let uas_sf = scenario("uas_rr.xml");
    let uas = sipp(&dir, &["-sf", &uas_sf, "-p", UAS_PORT])
        .spawn()
        .expect("sipp installed (scripts/setup.sh)");
    std::thread::sleep(Duration::from_millis(500));
    Setup {
        dir,
        proxy,
        _uas: Running(uas),
    }
}

/// b: 1,000 SIPp calls at 100 per second, in a thread.
fn calls_to_b(dir: &Path) -> std::thread::JoinHandle<std::process::ExitStatus> {
    let uac_sf = scenario("uac_rr.xml");
    let uac_dir = dir.to_path_buf();
    std::thread::spawn(move || {
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
    })
}

/// Every INVITE sent to a (`sent`) was answered `500 Server Error`, and
/// nothing else.
#[allow(clippy::print_stderr, reason = "the test reports what it measured")]
fn assert_all_errors(answers: &HashMap<String, Vec<String>>, sent: usize) {
    let errors = answers
        .values()
        .filter(|v| v.iter().any(|s| s == "SIP/2.0 500 Server Error"))
        .count();
    eprintln!("a: {errors} of {sent} INVITEs answered 500 Server Error");
    assert_eq!(answers.len(), sent, "a: answers by Call-ID: {answers:?}");
    for (call_id, statuses) in answers {
        assert!(
            statuses.iter().all(|s| s == "SIP/2.0 500 Server Error"),
            "a: {call_id} got {statuses:?}"
        );
    }
}

/// The proxy is still up and b still answers an OPTIONS.
fn assert_b_answers(proxy: &mut Running) {
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
}

#[test]
fn a_looping_tenant_does_not_fail_another_tenants_calls() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Setup {
        dir,
        mut proxy,
        _uas,
    } = start("isolation", "isolation-loop.lua", "deadline_ms = 50", "");

    let calls = calls_to_b(&dir);
    let answers = hammer_a(
        A_INVITES,
        1,
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
    assert_all_errors(&answers, A_INVITES);
    assert_b_answers(&mut proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The bomb's hard cap on each instance's linear memory, in bytes.
const BOMB_MEMORY: u64 = 16 << 20;
/// b's cap (it needs far less; set so b's share of the bound is known).
const B_MEMORY: u64 = 8 << 20;
/// INVITEs to the bomb: 20 bursts of 10, 500 ms apart (the bursts make
/// several invocations run at once, so several instances fill up).
const BOMB_INVITES: usize = 200;
const BOMB_BURST: usize = 10;

/// A line of `/proc/PID/status` in bytes (`VmRSS`, `VmHWM`: given in kB).
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[test]
fn a_memory_bomb_tenant_is_capped_and_does_not_fail_another_tenants_calls() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Setup {
        dir,
        mut proxy,
        _uas,
    } = start(
        "isolation-bomb",
        "isolation-bomb.lua",
        // Fuel to spare (the bomb fills its heap with some 20 M), so the
        // memory cap is what ends it.
        &format!("memory = {BOMB_MEMORY}\nfuel = 100000000"),
        &format!("memory = {B_MEMORY}"),
    );
    let pid = proxy.pid();
    let before = proc_status_bytes(pid, "VmRSS");

    // Sample the RSS while the bomb goes off (VmHWM, the kernel's peak,
    // is read too).
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(proc_status_bytes(pid, "VmRSS"));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let calls = calls_to_b(&dir);
    let answers = hammer_a(
        BOMB_INVITES,
        BOMB_BURST,
        Duration::from_millis(500),
        Duration::from_secs(20),
    );
    let status = calls.join().unwrap();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let sampled = sampler.join().unwrap();
    let hwm = proc_status_bytes(pid, "VmHWM");
    let after = proc_status_bytes(pid, "VmRSS");

    // The bound. Per tenant, instances exist only while an invocation
    // holds one or while idle in the pool; a new one is made only when
    // none is idle, so a tenant has at most as many as its invocations
    // ever ran at once, which the 4 x cores message workers bound (and
    // the pool keeps at most 4 x cores idle). Each instance's linear
    // memory is at most its tenant's cap. Both tenants' instances
    // at their caps, over the RSS before: everything the bomb can add.
    let workers = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(2);
    let bound = before + workers * 4 * (BOMB_MEMORY + B_MEMORY);
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    eprintln!(
        "kemibox RSS: before {:.1} MiB, peak {:.1} MiB sampled / {:.1} MiB VmHWM, after {:.1} MiB; bound {:.1} MiB ({workers} cores)",
        mib(before),
        mib(sampled),
        mib(hwm),
        mib(after),
        mib(bound)
    );
    let log = std::fs::read_to_string(dir.join("kemibox.log")).unwrap_or_default();
    let oom = log
        .lines()
        .filter(|l| l.contains("tenant=a") && l.contains("outcome=\"out-of-memory\""))
        .count();
    eprintln!("a: {oom} invocations logged out-of-memory");
    assert!(
        status.success(),
        "b: SIPp reported failed calls ({status}); see {}",
        dir.display()
    );
    assert_all_errors(&answers, BOMB_INVITES);
    assert!(
        oom > 0,
        "the bomb's invocations end out of memory: {}",
        dir.display()
    );
    assert!(
        hwm.max(sampled) < bound,
        "kemibox RSS peaked at {:.1} MiB, over the {:.1} MiB bound",
        mib(hwm.max(sampled)),
        mib(bound)
    );
    assert!(after < bound, "kemibox RSS after: {:.1} MiB", mib(after));
    assert_b_answers(&mut proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 180 and then a 200 of call `i`, as b's callee would send them back
/// through the proxy: the proxy's Via on top (so the proxy removes it)
/// and the caller's, `caller`, below (where the proxy sends them on).
fn provisional_then_final(i: usize, caller: &str) -> [String; 2] {
    [(180, "Ringing"), (200, "OK")].map(|(code, reason)| {
        format!(
            "SIP/2.0 {code} {reason}\r\n\
             Via: SIP/2.0/UDP {B};branch=z9hG4bK-proxy-{i}\r\n\
             Via: SIP/2.0/UDP {caller};branch=z9hG4bK-caller-{i}\r\n\
             From: <sip:caller@{caller}>;tag=f-{i}\r\n\
             To: <sip:service@{B}>;tag=t-{i}\r\n\
             Call-ID: order-{i}\r\n\
             CSeq: 1 INVITE\r\n\
             Content-Length: 0\r\n\r\n"
        )
    })
}

/// The failure of 1 call in 1,000 that docs/isolation.md tracked down: with
/// two receive tasks per UDP socket, a 180 and the 200 right behind it
/// could be read by different tasks and reach the call's worker in the
/// wrong order when the task holding the 180 lost its CPU (as it does
/// when a's loop keeps the cores busy); the caller then got the 180 after
/// the 200 (and SIPp, past the 200, aborted the call). Here b's socket
/// gets 4,000 such pairs while a loops: every 200 must come out after its
/// 180.
#[test]
fn a_looping_tenant_does_not_reorder_another_tenants_responses() {
    const PAIRS: usize = 4000;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Setup {
        dir,
        mut proxy,
        _uas,
    } = start(
        "isolation-order",
        "isolation-loop.lua",
        "deadline_ms = 50",
        "",
    );

    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    caller
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    // Room for every response in the caller's socket, so none is lost
    // there while this process waits for a core.
    let room: libc::c_int = 4 << 20;
    // SAFETY: a valid socket and an int option of the right size.
    #[allow(unsafe_code, reason = "std has no setsockopt for SO_RCVBUF")]
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&caller),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&room as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let caller_addr = caller.local_addr().unwrap().to_string();
    let collect = std::thread::spawn(move || {
        let mut statuses: HashMap<String, Vec<String>> = HashMap::new();
        let mut received = 0;
        let mut buf = [0u8; 65535];
        while let Ok(n) = caller.recv(&mut buf) {
            received += 1;
            let (status, call_id) = status_and_call_id(&buf[..n]);
            statuses.entry(call_id).or_default().push(status);
        }
        (received, statuses)
    });
    let looping =
        std::thread::spawn(|| hammer_a(300, 1, Duration::from_millis(10), Duration::from_secs(10)));
    let callee = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..PAIRS {
        for response in provisional_then_final(i, &caller_addr) {
            callee.send_to(response.as_bytes(), B).unwrap();
        }
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let (received, statuses) = collect.join().unwrap();
    let answers = looping.join().unwrap();

    // Calls whose 200 came out first (of those that got both).
    let reordered: Vec<&String> = statuses
        .iter()
        .filter(|(_, s)| s.len() == 2 && s[0].starts_with("SIP/2.0 200"))
        .map(|(call_id, _)| call_id)
        .collect();
    eprintln!(
        "b: {received} of {} responses relayed, {} calls got the 200 before the 180",
        2 * PAIRS,
        reordered.len()
    );
    assert!(
        reordered.is_empty(),
        "b: 200 relayed before its 180 in {} calls: {reordered:?}",
        reordered.len()
    );
    assert_eq!(received, 2 * PAIRS, "b: every response relayed");
    assert!(statuses.values().all(|s| s.len() == 2));
    assert_all_errors(&answers, 300);
    assert_b_answers(&mut proxy);
    let _ = std::fs::remove_dir_all(&dir);
}
