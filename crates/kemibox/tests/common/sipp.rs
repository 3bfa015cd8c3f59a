//! Driving real calls: `kemibox run` as a child process and SIPp
//! scenarios from tests/sipp.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::root;

/// A child process killed when the test ends, however it ends.
pub struct Running(pub Child);

impl Running {
    /// The child's process id (for `/proc/PID/status`).
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Running {
    /// SIGTERM, and wait (up to 40 s) for a graceful exit with status 0:
    /// what the proxy writes at shutdown is written.
    pub fn stop(mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                assert!(status.success(), "kemibox exited with {status}");
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(40),
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SIPp on 127.0.0.1 running in `dir` (its logs and statistics go there),
/// with unexpected messages failing the call.
pub fn sipp(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("sipp");
    cmd.current_dir(dir)
        .args(["-i", "127.0.0.1", "-nostdin", "-buff_size", "4194304"])
        .args(["-default_behaviors", "all,-abortunexp"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// The path of a scenario in tests/sipp.
pub fn scenario(name: &str) -> String {
    root().join("tests/sipp").join(name).display().to_string()
}

/// `kemibox run ARGS...` with its data directory in `dir` and its log in
/// `log`, once it says it started.
pub fn kemibox_run(dir: &Path, args: &[&str], log: &Path) -> Running {
    let file = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kemibox"))
        .arg("run")
        .args(args)
        .env("NO_COLOR", "1")
        .env("KEMIBOX_DATA_DIR", dir)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("kemibox starts");
    let mut running = Running(child);
    let started = Instant::now();
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    while !log_text().contains("kemibox proxy started") {
        let exited = running.0.try_wait().ok().flatten();
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

/// How many times `needle` is in the file at `log`.
pub fn count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

/// Run one call of a SIPp scenario as a UAC to `proxy` from `local_port`,
/// with `-key` values and credentials (`-au`, `-ap`); true when it
/// succeeded. SIPp's error and message logs stay in `dir`.
pub fn uac(
    dir: &Path,
    name: &str,
    proxy: &str,
    local_port: &str,
    keys: &[(&str, &str)],
    auth: (&str, &str),
) -> bool {
    let sf = scenario(name);
    let mut args: Vec<&str> = vec!["-sf", &sf, proxy, "-p", local_port, "-m", "1"];
    args.extend([
        "-au",
        auth.0,
        "-ap",
        auth.1,
        "-timeout",
        "20s",
        "-timeout_error",
    ]);
    for (k, v) in keys {
        args.extend(["-key", k, v]);
    }
    args.extend(["-trace_err", "-trace_msg"]);
    sipp(dir, &args)
        .status()
        .expect("sipp installed (scripts/setup.sh)")
        .success()
}

/// REGISTER `user` (contact `user@127.0.0.1:contact_port`) through `proxy`
/// with `reg_auth.xml`: 401, then 200 with the credentials.
pub fn register(
    dir: &Path,
    proxy: &str,
    user: &str,
    password: &str,
    contact_port: &str,
    expires: &str,
) -> bool {
    uac(
        dir,
        "reg_auth.xml",
        proxy,
        "25071",
        &[
            ("user", user),
            ("contact_port", contact_port),
            ("expires", expires),
        ],
        (user, password),
    )
}

/// A phone that answers one call on `port` (uas_rr.xml).
pub fn answer_one_call(dir: &Path, port: &str) -> Running {
    let sf = scenario("uas_rr.xml");
    let child = sipp(dir, &["-sf", &sf, "-p", port, "-m", "1"])
        .spawn()
        .expect("sipp installed (scripts/setup.sh)");
    std::thread::sleep(Duration::from_millis(300));
    Running(child)
}

/// Wait (up to 10 s) for a SIPp that should end by itself; true when it
/// succeeded.
pub fn finished(mut sipp: Running) -> bool {
    for _ in 0..100 {
        if let Some(status) = sipp.0.try_wait().unwrap() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// `kemibox ARGS...` to completion: (success, stdout).
#[allow(
    clippy::print_stderr,
    reason = "a failed command's stderr explains the test's failure"
)]
pub fn kemibox_cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kemibox"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("kemibox runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        eprintln!("kemibox {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    (out.status.success(), text)
}

/// A SIPp UAS echoing Record-Route (uas_rr.xml) on `port`, for `calls`
/// calls (0: until killed).
pub fn uas(dir: &Path, port: &str, calls: &str) -> Running {
    let sf = scenario("uas_rr.xml");
    let mut args = vec!["-sf", sf.as_str(), "-p", port, "-trace_err"];
    if calls != "0" {
        args.extend(["-m", calls]);
    }
    Running(sipp(dir, &args).spawn().expect("sipp installed"))
}

/// `calls` calls of scenario `sf` to `proxy` from `local_port`, all at
/// once, each up for `hold_ms` (when the scenario hangs up itself), with
/// the `timeout` arguments, statistics in `dir/stats` (read them with
/// [`calls`]). A call refused (any unexpected reply) fails at once: SIPp
/// does not retry its INVITE.
pub fn offer(
    dir: &Path,
    sf: &str,
    proxy: &str,
    local_port: &str,
    calls: &str,
    hold_ms: &str,
    timeout: &[&str],
) -> Child {
    let sf = scenario(sf);
    let mut args = vec![
        "-sf",
        sf.as_str(),
        proxy,
        "-p",
        local_port,
        "-m",
        calls,
        "-l",
        calls,
        "-r",
        calls,
        "-d",
        hold_ms,
    ];
    args.extend(timeout);
    args.extend([
        "-trace_stat",
        "-stf",
        "stats",
        "-fd",
        "1",
        "-trace_err",
        "-default_behaviors",
        "all",
    ]);
    sipp(dir, &args).spawn().expect("sipp installed")
}

/// Wait for `child` to exit (at most `limit`, then kill it): its success.
pub fn exited_ok(child: &mut Child, limit: Duration) -> bool {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The final `SuccessfulCall(C)` and `FailedCall(C)` of a SIPp statistics
/// file (`-trace_stat -stf FILE`).
pub fn calls(stats: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(stats).unwrap_or_default();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().unwrap_or_default().split(';').collect();
    let last: Vec<&str> = lines.next_back().unwrap_or_default().split(';').collect();
    let column = |name: &str| {
        let i = header.iter().position(|h| *h == name);
        i.and_then(|i| last.get(i)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {}: {text}", stats.display()))
    };
    (column("SuccessfulCall(C)"), column("FailedCall(C)"))
}

/// `kemibox run --config FILE` with the config `text` written to
/// `dir/file`, its data directory `dir` and its log `dir/kemibox.log`,
/// once it says it started: the proxy and the log's path.
pub fn run_config(dir: &Path, file: &str, text: &str) -> (Running, PathBuf) {
    let config = dir.join(file);
    std::fs::write(&config, text).unwrap();
    let log = dir.join("kemibox.log");
    let proxy = kemibox_run(dir, &["--config", config.to_str().unwrap()], &log);
    (proxy, log)
}
