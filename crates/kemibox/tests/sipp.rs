//! End to end with SIPp: `kemibox run` relays real calls (INVITE, 100, 180,
//! 200, ACK, BYE, 200) between a SIPp caller and a SIPp callee, with the
//! benchmark's relay script and seed 003's script unchanged, and the
//! scripts' branch, reply and failure routes run.
//!
//! The scripts send to the callee at 127.0.0.1:5080 (fixed in them), so
//! the scenarios here run one after another in a single test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root: scripts and scenarios are found from there.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const PROXY: &str = "127.0.0.1:15060";

fn sipp(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("sipp");
    cmd.current_dir(dir)
        .args(["-i", "127.0.0.1", "-nostdin", "-buff_size", "4194304"])
        .args(["-default_behaviors", "all,-abortunexp"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Start `kemibox run` with `script`; its log goes to `log`.
fn proxy(script: &Path, log: &Path) -> Running {
    let file = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kemibox"))
        .args([
            "run",
            "--listen",
            &format!("udp:{PROXY}"),
            "--log",
            "info",
            "--script",
        ])
        .arg(script)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("kemibox starts");
    let mut running = Running(child);
    let started = Instant::now();
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains("kemibox proxy started")
    {
        let exited = running.0.try_wait().ok().flatten();
        let log_text = || std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            exited.is_none(),
            "kemibox exited ({exited:?}): {}",
            log_text()
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "proxy did not start: {}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    running
}

/// A SIPp callee running `scenario` on 127.0.0.1:5080.
fn callee(dir: &Path, scenario: &str) -> Running {
    let sf = root().join("tests/sipp").join(scenario);
    let child = sipp(dir, &["-sf", sf.to_str().unwrap(), "-p", "5080"])
        .spawn()
        .expect("sipp installed (scripts/setup.sh)");
    std::thread::sleep(Duration::from_millis(500));
    Running(child)
}

/// Place `calls` calls with `scenario` at `rate` per second; true when
/// every call succeeded (SIPp's exit status 0). Leaves SIPp's statistics in
/// `dir`.
fn place_calls(dir: &Path, scenario: &str, calls: u32, rate: u32) -> bool {
    let sf = root().join("tests/sipp").join(scenario);
    let status = sipp(
        dir,
        &[
            "-sf",
            sf.to_str().unwrap(),
            PROXY,
            "-p",
            "15070",
            "-r",
            &rate.to_string(),
            "-m",
            &calls.to_string(),
            "-timeout",
            "90s",
            "-timeout_error",
            "-trace_stat",
            "-stf",
            "uac.csv",
        ],
    )
    .status()
    .expect("sipp runs");
    status.success()
}

fn count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

#[test]
fn sipp_calls_through_the_relay_and_seed_scripts() {
    let dir = std::env::temp_dir().join(format!("kemibox-sipp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // The benchmark's relay script, unchanged: 1,000 calls, none failed.
    {
        let log = dir.join("relay.log");
        let _uas = callee(&dir, "uas_rr.xml");
        let _proxy = proxy(&root().join("scripts/relay.lua"), &log);
        assert!(
            place_calls(&dir, "uac_rr.xml", 1000, 200),
            "relay.lua: SIPp reported failed calls; see {}",
            dir.display()
        );
    }

    // Seed 003's script: calls succeed and its branch and reply routes run
    // (they log), for every call.
    {
        let log = dir.join("seed003.log");
        let _uas = callee(&dir, "uas_rr.xml");
        let _proxy = proxy(&root().join("tests/fixtures/seeds/seed003-route.lua"), &log);
        assert!(
            place_calls(&dir, "uac_rr.xml", 1000, 200),
            "seed003: SIPp reported failed calls; see {}",
            dir.display()
        );
        assert!(
            count(&log, "===== branch route") >= 1000,
            "branch route runs per relayed request"
        );
        assert!(
            count(&log, "===== onreply route") >= 1000,
            "reply route runs per reply"
        );
    }

    // A busy callee: the failure route runs and the 486 reaches the caller.
    {
        let log = dir.join("seed003-busy.log");
        let _uas = callee(&dir, "uas_486.xml");
        let _proxy = proxy(&root().join("tests/fixtures/seeds/seed003-route.lua"), &log);
        assert!(
            place_calls(&dir, "uac_486.xml", 100, 50),
            "busy: SIPp reported failed calls; see {}",
            dir.display()
        );
        assert!(
            count(&log, "===== failure route") >= 100,
            "failure route runs per failed call"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
