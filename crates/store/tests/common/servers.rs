//! The two servers the multi-node tests need: PostgreSQL (subscribers)
//! and Redis (locations), each private to a test.
//!
//! Each test binary uses only some of these.
#![allow(
    dead_code,
    reason = "each test binary uses only some of the shared helpers"
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{Server, TempDir, binary};

/// Where Debian installs each PostgreSQL version's binaries.
const DEBIAN_PG: &str = "/usr/lib/postgresql/*/bin";

/// Debian's PostgreSQL binary directories, newest version first.
fn pg_bin_dirs() -> Vec<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    versions.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

/// The uid and gid PostgreSQL runs as when the tests run as root, which
/// PostgreSQL refuses: `nobody`'s, made owner of `dir`. `None` otherwise.
fn unprivileged(dir: &Path) -> Option<(u32, u32)> {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    #[allow(unsafe_code, reason = "std has no safe geteuid")]
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let ids = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() > 3 && fields[0] == "nobody")
        .and_then(|fields| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
        .expect("running as root, PostgreSQL needs a user to run as: no `nobody` in /etc/passwd");
    std::os::unix::fs::chown(dir, Some(ids.0), Some(ids.1)).unwrap();
    Some(ids)
}

fn run_as(command: &mut Command, user: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
}

/// A fresh cluster (initdb, trust authentication, user `postgres`) and
/// its server on a free port of 127.0.0.1.
pub fn postgres() -> Server {
    let dirs = pg_bin_dirs();
    let initdb = binary("initdb", &dirs, DEBIAN_PG);
    let postgres = binary("postgres", &dirs, DEBIAN_PG);
    let pg_isready = binary("pg_isready", &dirs, DEBIAN_PG);
    let dir = TempDir::new("pg");
    let user = unprivileged(dir.path());
    let home = dir.path().to_path_buf();
    let data = home.join("data");
    let mut init = Command::new(&initdb);
    init.args([
        "--auth=trust",
        "--username=postgres",
        "--no-locale",
        "--encoding=UTF8",
        "--no-sync",
        "-D",
    ])
    .arg(&data)
    .current_dir(&home);
    run_as(&mut init, user);
    let out = init.output().unwrap();
    assert!(
        out.status.success(),
        "initdb failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // SIGQUIT: immediate shutdown, the closest to a crash that still lets
    // the same data directory start again at once.
    Server::start(
        "postgres",
        dir,
        libc::SIGQUIT,
        move |port| {
            let mut command = Command::new(&postgres);
            command
                .arg("-D")
                .arg(&data)
                .arg("-k")
                .arg(&home)
                .arg("-p")
                .arg(port.to_string())
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "fsync=off", "-c", "max_connections=20"])
                .current_dir(&home);
            run_as(&mut command, user);
            command
        },
        move |port| {
            Command::new(&pg_isready)
                .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-t", "1", "-p"])
                .arg(port.to_string())
                .status()
                .is_ok_and(|s| s.success())
        },
    )
}

/// The URL of `postgres()`'s database, as the `postgres` user.
pub fn postgres_url(server: &Server) -> String {
    format!("postgresql://postgres@127.0.0.1:{}/postgres", server.port())
}

/// A redis-server on a free port of 127.0.0.1, persisting nothing.
pub fn redis() -> Server {
    let redis_server = binary("redis-server", &[PathBuf::from("/usr/bin")], "/usr/bin");
    let dir = TempDir::new("redis");
    let data = dir.path().to_path_buf();
    Server::start(
        "redis-server",
        dir,
        libc::SIGKILL,
        move |port| {
            let mut command = Command::new(&redis_server);
            command
                .arg("--port")
                .arg(port.to_string())
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&data);
            command
        },
        |port| {
            let ping = || -> std::io::Result<bool> {
                let mut redis = TcpStream::connect(("127.0.0.1", port))?;
                redis.set_read_timeout(Some(Duration::from_secs(1)))?;
                redis.write_all(b"PING\r\n")?;
                let mut answer = [0; 5];
                redis.read_exact(&mut answer)?;
                Ok(&answer == b"+PONG")
            };
            ping().unwrap_or(false)
        },
    )
}

/// The URL of `redis()`'s server.
pub fn redis_url(server: &Server) -> String {
    format!("redis://127.0.0.1:{}/", server.port())
}
