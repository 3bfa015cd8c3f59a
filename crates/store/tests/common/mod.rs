//! Private database servers for the store tests: each test starts its own
//! on a free port in a temporary directory and stops it when done, so the
//! tests need no running service and do not disturb one.

pub mod servers;

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a server may take to accept connections (a loaded machine
/// with two cores running several builds is slow).
const STARTUP: Duration = Duration::from_secs(60);

/// The executable `name`, from the first of `dirs` (which `described`
/// names for the error) that has it, else from `PATH`. Fails the test
/// when missing: the servers are part of the test set-up, which
/// scripts/setup.sh installs.
pub fn binary(name: &str, dirs: &[PathBuf], described: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    dirs.iter()
        .cloned()
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed (looked in {described} and PATH): \
                 run scripts/setup.sh to install the database servers the store tests start"
            )
        })
}

/// A directory removed with everything in it when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory named after `what`, this process and a counter.
    pub fn new(what: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("kemibox-store-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Where it is, for the server's files.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nothing listens on now. Servers cannot be told to pick one
/// (redis-server takes port 0 as "no TCP"), so the port is found by
/// binding and released before the server binds it.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// Builds the command line of a server listening on a port.
type Launch = Box<dyn Fn(u16) -> Command>;
/// Whether the server on a port answers yet.
type Ready = Box<dyn Fn(u16) -> bool>;

/// A server process, killed when dropped; it can be stopped and started
/// again on the same port (a database going away and coming back).
pub struct Server {
    name: &'static str,
    dir: TempDir,
    port: u16,
    launch: Launch,
    ready: Ready,
    /// How `kill` stops it: the signal a crash or an operator would send.
    stop_signal: libc::c_int,
    child: Option<Child>,
}

impl Server {
    /// Start `name` with the command `launch` builds for a free port, in
    /// `dir` (its output goes to `dir/server.log`), and wait until `ready`.
    pub fn start(
        name: &'static str,
        dir: TempDir,
        stop_signal: libc::c_int,
        launch: impl Fn(u16) -> Command + 'static,
        ready: impl Fn(u16) -> bool + 'static,
    ) -> Server {
        let mut server = Server {
            name,
            dir,
            port: free_port(),
            launch: Box::new(launch),
            ready: Box::new(ready),
            stop_signal,
            child: None,
        };
        server.restart();
        server
    }

    /// The port it listens on, on 127.0.0.1, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Start it again on its port, after [`Server::kill`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log_path = self.dir.path().join("server.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut command = (self.launch)(self.port);
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches no memory of the
        // parent. It kills the server if the test process dies without
        // dropping it (a test harness timeout), so none is left running.
        #[allow(unsafe_code, reason = "pre_exec and prctl have no safe form")]
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) before accepting connections:\n{}",
                    self.name,
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            if (self.ready)(self.port) {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not accept connections within {STARTUP:?}:\n{}",
                    self.name,
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        self.child = Some(child);
    }

    /// Stop it with its stop signal and wait until it is gone (SIGKILL
    /// if it lingers).
    pub fn kill(&mut self) {
        if self.child.is_none() {
            return;
        }
        // A paused server would never handle the stop signal.
        self.resume();
        let mut child = self.child.take().unwrap();
        // SAFETY: plain kill(2) on our own child's pid.
        #[allow(unsafe_code, reason = "std can only send SIGKILL")]
        unsafe {
            libc::kill(child.id() as libc::pid_t, self.stop_signal)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.wait();
    }

    /// Freeze it (SIGSTOP to it and its workers): it keeps its
    /// connections open and answers nothing, as a hung server or a cut
    /// network.
    pub fn pause(&self) {
        self.signal_all(libc::SIGSTOP);
    }

    /// Let it run again after [`Server::pause`].
    pub fn resume(&self) {
        self.signal_all(libc::SIGCONT);
    }

    /// Send `signal` to the server and every process under it
    /// (PostgreSQL's backends each lead their own session, so a process
    /// group would miss them).
    fn signal_all(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("the server is not running");
        let mut pids = vec![child.id()];
        let mut i = 0;
        while i < pids.len() {
            pids.extend(children(pids[i]));
            i += 1;
        }
        for pid in pids {
            // SAFETY: kill(2) on our child and its descendants.
            #[allow(unsafe_code, reason = "std cannot signal a descendant")]
            unsafe {
                libc::kill(pid as libc::pid_t, signal)
            };
        }
    }
}

/// The processes whose parent is `pid`, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold spaces and ')'.
            let ppid: u32 = stat[stat.rfind(')')? + 1..]
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
