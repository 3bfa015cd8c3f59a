//! Shared helpers for the `kemibox` command-line tests: run the binary from
//! the workspace root (so file names in its output are stable relative
//! paths), and compare output with golden files.
#![allow(
    dead_code,
    reason = "each test binary uses only some of the shared helpers"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Map, Value};

/// `kemibox run --config` on `config` written to `dir/proxy.toml`, which
/// must be refused (exit 2): the file's path and stderr.
pub fn refused_config(dir: &Path, config: &str) -> (String, String) {
    let path = dir.join("proxy.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kemibox"))
        .args(["run", "--config"])
        .arg(&path)
        .env("KEMIBOX_DATA_DIR", dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "must be refused: {config}\n{err}"
    );
    (path.display().to_string(), err)
}

/// The workspace root: every path given to `kemibox` is relative to it.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `kemibox ARGS...` run in the workspace root, with `stdin` as input.
pub fn kemibox_with_stdin(args: &[&str], stdin: Stdio) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kemibox"))
        .args(args)
        .current_dir(root())
        .env_remove("RUST_LOG")
        .stdin(stdin)
        .output()
        .expect("kemibox runs")
}

/// `kemibox ARGS...` run in the workspace root.
pub fn kemibox(args: &[&str]) -> Output {
    kemibox_with_stdin(args, Stdio::null())
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The exit status; the process must have exited (not been killed).
pub fn status(out: &Output) -> i32 {
    out.status.code().expect("kemibox exited with a status")
}

/// The lines of `kemibox route` output, each parsed as a JSON object whose
/// first key is `event`, the last one being the `result` line; or what is
/// wrong with the output.
pub fn try_events(stdout: &str) -> Result<Vec<Map<String, Value>>, String> {
    let mut lines = Vec::new();
    for line in stdout.lines() {
        let Ok(Value::Object(map)) = serde_json::from_str(line) else {
            return Err(format!("not a JSON object: {line}"));
        };
        if map.keys().next().map(String::as_str) != Some("event") {
            return Err(format!("`event` is not the first key: {line}"));
        }
        lines.push(map);
    }
    match lines.last() {
        Some(last) if last["event"] == "result" => Ok(lines),
        _ => Err(format!("the last line is not the result line:\n{stdout}")),
    }
}

/// [`try_events`], panicking on malformed output.
pub fn events(stdout: &str) -> Vec<Map<String, Value>> {
    try_events(stdout).unwrap_or_else(|e| panic!("{e}"))
}

/// The `result` line of `kemibox route` output.
pub fn result(stdout: &str) -> Map<String, Value> {
    events(stdout).pop().expect("a result line")
}

/// Placeholder for `fuel_used` in golden files: the exact count varies a
/// little between runs and builds (Lua's string hash seed).
pub const FUEL: &str = "<fuel>";

/// Placeholder for digest nonces in golden files: each run keys them with
/// a fresh random secret.
pub const NONCE: &str = "nonce=\\\"<nonce>\\\"";

/// `kemibox route` output with `fuel_used` replaced by [`FUEL`], after
/// checking it is a positive integer, and digest nonces by [`NONCE`].
/// Lines are re-serialized compactly, as `kemibox` writes them, so nothing
/// else changes.
pub fn try_normalize(stdout: &str) -> Result<String, String> {
    let nonce = regex::Regex::new(r#"nonce=\\"[0-9a-f]+\\""#).expect("valid regex");
    let mut text = String::new();
    for mut line in try_events(stdout)? {
        if let Some(fuel) = line.get_mut("fuel_used") {
            if fuel.as_u64().is_none_or(|used| used == 0) {
                return Err(format!("fuel_used is not a positive integer: {fuel}"));
            }
            *fuel = Value::from(FUEL);
        }
        let serialized = serde_json::to_string(&line).expect("serializes");
        text.push_str(&nonce.replace_all(&serialized, NONCE));
        text.push('\n');
    }
    Ok(text)
}

/// [`try_normalize`], panicking on malformed output.
pub fn normalize(stdout: &str) -> String {
    try_normalize(stdout).unwrap_or_else(|e| panic!("{e}"))
}

/// True when golden files are to be rewritten (`KEMIBOX_BLESS=1`).
pub fn blessing() -> bool {
    std::env::var_os("KEMIBOX_BLESS").is_some_and(|v| v == "1")
}

/// Compare `actual` with the golden file `tests/golden/NAME`, or rewrite
/// the file when blessing. `Err` describes a difference or a missing file.
pub fn golden(name: &str, actual: &str) -> Result<(), String> {
    let path = root().join("tests/golden").join(name);
    if blessing() {
        std::fs::create_dir_all(path.parent().unwrap()).expect("create tests/golden");
        std::fs::write(&path, actual).expect("write golden file");
        return Ok(());
    }
    let Ok(expected) = std::fs::read_to_string(&path) else {
        return Err(format!(
            "tests/golden/{name} is missing; run with KEMIBOX_BLESS=1 to create it"
        ));
    };
    if expected == actual {
        return Ok(());
    }
    Err(format!(
        "tests/golden/{name} differs (rerun with KEMIBOX_BLESS=1 to accept):\n{}",
        diff(&expected, actual)
    ))
}

/// The lines that differ, `-` golden and `+` actual, by line number.
fn diff(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let mut out = String::new();
    for i in 0..e.len().max(a.len()) {
        let (old, new) = (e.get(i), a.get(i));
        if old != new {
            out.push_str(&format!("line {}:\n", i + 1));
            if let Some(old) = old {
                out.push_str(&format!("- {old}\n"));
            }
            if let Some(new) = new {
                out.push_str(&format!("+ {new}\n"));
            }
        }
    }
    out
}
pub mod admin;
pub mod probe;
pub mod sipp;

/// A fresh, empty directory for one test: `kemibox-NAME-PID` in the
/// system's temporary directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kemibox-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `GET path` over HTTP/1.1 to `addr`: the whole response, or `None` when
/// the server does not answer (yet).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}
