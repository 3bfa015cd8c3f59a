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

#[test]
fn two_tenants_load_and_the_proxy_starts() {
    let data = std::env::temp_dir().join(format!("kemibox-config-tenants-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_kemibox"))
        .args(["run", "--config"])
        .arg(fixture("tenants.toml"))
        .env("NO_COLOR", "1")
        .env("KEMIBOX_DATA_DIR", &data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
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
    let started = Instant::now();
    while !reader.is_finished() && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = reader.join().unwrap();
    let _ = std::fs::remove_dir_all(&data);
    assert!(log.contains("kemibox proxy started"), "{log}");
    let loaded = |id: &str| {
        log.lines()
            .any(|l| l.contains("tenant loaded") && l.contains(&format!("tenant={id} ")))
    };
    assert!(loaded("a") && loaded("b"), "{log}");
}

#[test]
fn a_tenant_id_used_twice_is_refused_with_its_line() {
    let err = refused("tenant-dup-id.toml");
    assert!(err.contains("tenant-dup-id.toml: line 9:"), "{err}");
    assert!(err.contains("tenant id \"a\" is used twice"), "{err}");
}

#[test]
fn a_tenant_id_with_other_characters_is_refused() {
    let err = refused("tenant-bad-id.toml");
    assert!(err.contains("tenant-bad-id.toml: line 4:"), "{err}");
    assert!(err.contains("letters, digits, '_' and '-' only"), "{err}");
}

#[test]
fn a_tenant_listen_address_missing_from_listen_is_refused() {
    let err = refused("tenant-listen.toml");
    assert!(err.contains("tenant-listen.toml: line 7:"), "{err}");
    assert!(
        err.contains("listen udp:127.0.0.1:5099 is not in the top-level listen"),
        "{err}"
    );
}

#[test]
fn an_unknown_module_is_refused_with_the_known_ones() {
    let err = refused("tenant-module.toml");
    assert!(err.contains("tenant-module.toml: line 7:"), "{err}");
    assert!(err.contains("unknown module \"sqlops\""), "{err}");
    assert!(err.contains("registrar"), "{err}");
}

#[test]
fn two_catch_all_tenants_are_refused() {
    let err = refused("tenant-catch-all.toml");
    assert!(err.contains("tenant-catch-all.toml: line 8:"), "{err}");
    assert!(
        err.contains("both have neither listen nor domains"),
        "{err}"
    );
}

#[test]
fn a_top_level_script_beside_tenants_is_refused() {
    let err = refused("tenant-script.toml");
    assert!(err.contains("tenant-script.toml: line 2: script:"), "{err}");
    assert!(err.contains("move this one into a [[tenant]]"), "{err}");
}

#[test]
fn a_bad_relay_to_entry_is_refused_with_its_line() {
    let err = refused("quota-bad-cidr.toml");
    assert!(
        err.contains("quota-bad-cidr.toml: line 8: relay_to:"),
        "{err}"
    );
    assert!(
        err.contains("\"10.0.0.0/33\": the prefix length must be 0-32"),
        "{err}"
    );
    assert!(err.contains("tenant a"), "{err}");
}

#[test]
fn a_rate_of_zero_is_refused() {
    let err = refused("quota-rate-zero.toml");
    assert!(
        err.contains("quota-rate-zero.toml: line 6: limits:"),
        "{err}"
    );
    assert!(err.contains("invocations_per_second = 0"), "{err}");
    assert!(err.contains("remove it for no limit"), "{err}");
}

#[test]
fn a_burst_below_one_is_refused_with_its_line() {
    let err = refused("quota-burst-zero.toml");
    assert!(
        err.contains("quota-burst-zero.toml: line 10: tenant a: limits:"),
        "{err}"
    );
    assert!(err.contains("burst = 0 must be at least 1"), "{err}");
}

#[test]
fn a_rate_limited_reply_that_is_no_error_is_refused() {
    let err = refused("quota-reply.toml");
    assert!(err.contains("quota-reply.toml: line 7: tenant a:"), "{err}");
    assert!(
        err.contains("rate_limited_reply.code = 200 must be a final error status"),
        "{err}"
    );
}
