//! `kemibox run --config FILE`: a good file starts the proxy; a bad one is
//! refused at start with the file, the line and what is expected.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/config")
        .join(name)
}

/// Run `kemibox run --config` on a file expected to be refused; its stderr.
fn refused(name: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kemibox"))
        .args(["run", "--config"])
        .arg(fixture(name))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{name} must be refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unknown_keys_are_refused_with_file_line_and_the_expected_keys() {
    let err = refused("unknown-key.toml");
    assert!(err.contains("unknown-key.toml"), "{err}");
    assert!(err.contains("line 5"), "{err}");
    assert!(
        err.contains("unknown field `fule`") && err.contains("`fuel`"),
        "{err}"
    );
}

#[test]
fn bad_listen_addresses_are_refused_with_the_line() {
    let err = refused("bad-listen.toml");
    assert!(err.contains("bad-listen.toml: line 2: listen:"), "{err}");
    assert!(err.contains("unknown transport \"sctp\""), "{err}");
}

#[test]
fn a_good_config_starts_the_proxy() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kemibox"))
        .args(["run", "--config"])
        .arg(fixture("good.toml"))
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let started = Instant::now();
    let mut log = String::new();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        let mut text = String::new();
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            if text.contains("kemibox proxy started") {
                break;
            }
        }
        text
    });
    while !reader.is_finished() && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if reader.is_finished() {
        log = reader.join().unwrap();
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(log.contains("kemibox proxy started"), "{log}");
}
