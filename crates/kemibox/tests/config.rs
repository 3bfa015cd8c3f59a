//! `kemibox run --config FILE`: a good file starts the proxy; a bad one is
//! refused at start with the file, the line and what is expected.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::probe::free_udp_port;

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

/// A fresh directory for one test, with `a.lua` (answers 200 and logs
/// "hello from the script").
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kemibox-config-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("a.lua"),
        "function ksr_request_route()\n  KSR.info(\"hello from the script\")\n  KSR.sl.sl_send_reply(200, \"OK\")\nend\n",
    )
    .unwrap();
    dir
}

/// One check's refusal: the file, what it says is wrong and the fix.
struct Refusal {
    /// The headline after `FILE: line N: `.
    what: String,
    fix: String,
}

/// Refuse `text` and check that the error names the file, the line and
/// column of `needle` (its first occurrence: the refused value), the key
/// `key` (and the tenant, for a key in a `[[tenant]]`), the line itself,
/// and a fix.
fn located(dir: &Path, text: &str, needle: &str, key: &str, tenant: Option<&str>) -> Refusal {
    located_after(dir, text, "", needle, key, tenant)
}

/// [`located`] at the first `needle` after the first `anchor`.
fn located_after(
    dir: &Path,
    text: &str,
    anchor: &str,
    needle: &str,
    key: &str,
    tenant: Option<&str>,
) -> Refusal {
    let (file, err) = common::refused_config(dir, text);
    let from = text.find(anchor).expect("anchor") + anchor.len();
    let offset = from
        + text[from..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in {text}"));
    let line = text[..offset].matches('\n').count() + 1;
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    let headline = format!("kemibox: {file}: line {line}: ");
    let what = err
        .lines()
        .find_map(|l| l.strip_prefix(&headline))
        .unwrap_or_else(|| panic!("no {headline:?} in {err}"))
        .to_string();
    let mut at = format!("  --> {file}:{line}:{column}, key `{key}`");
    if let Some(id) = tenant {
        at.push_str(&format!(" of tenant {id}"));
    }
    assert!(err.lines().any(|l| l == at), "no {at:?} in {err}");
    let source = text[line_start..].lines().next().unwrap();
    assert!(
        err.lines().any(|l| l == format!("{line} | {source}")),
        "the line itself is not shown: {err}"
    );
    let fix = err
        .lines()
        .find_map(|l| l.strip_prefix("  fix: "))
        .unwrap_or_else(|| panic!("no fix in {err}"))
        .to_string();
    assert!(!fix.is_empty(), "{err}");
    Refusal { what, fix }
}

/// The same check refusing a top-level value and a tenant's override of
/// it: one message and one fix, the tenant's prefixed with its name.
fn same_check(top: &Refusal, tenant: &Refusal) {
    assert_eq!(top.fix, tenant.fix);
    let own = tenant
        .what
        .strip_prefix("tenant a: ")
        .unwrap_or(&tenant.what);
    let shape = |s: &str| {
        s.chars()
            .filter(|c| !c.is_ascii_digit())
            .collect::<String>()
    };
    assert_eq!(
        shape(&top.what),
        shape(own),
        "{} / {}",
        top.what,
        tenant.what
    );
}

const TENANT: &str = "[[tenant]]\nid = \"a\"\nscript = \"a.lua\"\n";

#[test]
fn limits_are_checked_once_for_the_top_level_and_a_tenant() {
    let dir = temp_dir("limits");
    let d = dir.as_path();
    let cases = [
        ("fuel = 5", "limits.fuel", "fuel = 5 is too small"),
        ("memory = 7", "limits.memory", "memory = 7 is too small"),
        (
            "deadline_ms = 0",
            "limits.deadline_ms",
            "deadline_ms must be at least 1",
        ),
        (
            "invocations_per_second = 0",
            "limits.invocations_per_second",
            "invocations_per_second = 0 would refuse every request",
        ),
        (
            "recreations_per_second = 0",
            "limits.recreations_per_second",
            "recreations_per_second = 0 would never replace",
        ),
    ];
    for (line, key, says) in cases {
        let (name, value) = line.split_once(" = ").unwrap();
        let top = located_after(
            d,
            &format!("[limits]\n{line}\n"),
            &format!("{name} = "),
            value,
            key,
            None,
        );
        assert!(
            top.what.starts_with(&format!("limits: {says}")),
            "{}",
            top.what
        );
        // The same key overriding a good default in a tenant.
        let tenant = located_after(
            d,
            &format!("[limits]\nfuel = 20000000\n\n{TENANT}[tenant.limits]\n{line}\n"),
            &format!("[tenant.limits]\n{name} = "),
            value,
            &format!("tenant.{key}"),
            Some("a"),
        );
        assert!(
            tenant
                .what
                .starts_with(&format!("tenant a: limits: {says}")),
            "{}",
            tenant.what
        );
        same_check(&top, &tenant);
    }
    // A burst of 0, and a burst without a rate (inherited or not).
    let top = located(
        d,
        "[limits]\ninvocations_per_second = 5\nburst = 0\n",
        "0\n",
        "limits.burst",
        None,
    );
    let tenant = located(
        d,
        &format!("[limits]\ninvocations_per_second = 5\n\n{TENANT}[tenant.limits]\nburst = 0\n"),
        "0\n",
        "tenant.limits.burst",
        Some("a"),
    );
    same_check(&top, &tenant);
    assert!(
        top.what.contains("burst = 0 must be at least 1"),
        "{}",
        top.what
    );
    let top = located(d, "[limits]\nburst = 3\n", "3", "limits.burst", None);
    let tenant = located(
        d,
        &format!("{TENANT}[tenant.limits]\nburst = 3\n"),
        "3",
        "tenant.limits.burst",
        Some("a"),
    );
    same_check(&top, &tenant);
    assert!(
        top.fix.contains("add invocations_per_second"),
        "{}",
        top.fix
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn replies_and_relay_to_are_checked_once_for_the_top_level_and_a_tenant() {
    let dir = temp_dir("replies");
    let d = dir.as_path();
    let top = located(
        d,
        "rate_limited_reply = { code = 200, reason = \"OK\" }\n",
        "200",
        "rate_limited_reply.code",
        None,
    );
    let tenant = located(
        d,
        &format!("{TENANT}rate_limited_reply = {{ code = 180, reason = \"Ringing\" }}\n"),
        "180",
        "tenant.rate_limited_reply.code",
        Some("a"),
    );
    same_check(&top, &tenant);
    assert!(top.fix.contains("300 to 699"), "{}", top.fix);
    // error_reply and unmatched_reply go through the same status check.
    for key in ["error_reply", "unmatched_reply"] {
        let r = located(
            d,
            &format!("{key} = {{ code = 100, reason = \"Trying\" }}\n"),
            "100",
            &format!("{key}.code"),
            None,
        );
        assert_eq!(
            r.what,
            format!("{key}.code = 100 must be a final error status (300-699)")
        );
        assert!(r.fix.contains("300 to 699"), "{}", r.fix);
    }
    let top = located(
        d,
        "relay_to = [\"10.0.0.0/8\", \"10.0.0.0/40\"]\n",
        "\"10.0.0.0/40\"",
        "relay_to[1]",
        None,
    );
    let tenant = located(
        d,
        &format!("relay_to = [\"10.0.0.0/8\"]\n{TENANT}relay_to = [\"1.2.3.4/99\"]\n"),
        "\"1.2.3.4/99\"",
        "tenant.relay_to[0]",
        Some("a"),
    );
    same_check(&top, &tenant);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn listen_tokens_and_tenant_entries_name_line_column_key_and_fix() {
    let dir = temp_dir("entries");
    let d = dir.as_path();
    // The same listen check at the top level and in a tenant.
    let top = located(
        d,
        "listen = [\"udp:127.0.0.1:0\", \"sctp:127.0.0.1:1\"]\n",
        "\"sctp",
        "listen[1]",
        None,
    );
    let tenant = located(
        d,
        &format!("listen = [\"udp:127.0.0.1:0\"]\n{TENANT}listen = [\"sctp:127.0.0.1:1\"]\n"),
        "\"sctp",
        "tenant.listen[0]",
        Some("a"),
    );
    same_check(&top, &tenant);
    located(d, "listen = []\n", "[]", "listen", None);
    let r = located(
        d,
        &format!("listen = [\"udp:127.0.0.1:0\"]\n{TENANT}listen = [\"udp:127.0.0.1:7\"]\n"),
        "\"udp:127.0.0.1:7\"",
        "tenant.listen[0]",
        Some("a"),
    );
    assert!(
        r.what.contains("is not in the top-level listen"),
        "{}",
        r.what
    );
    // The same token check for [admin] and a tenant's admin_token.
    let top = located(
        d,
        "[admin]\nlisten = \"127.0.0.1:9\"\ntoken = \" \"\n",
        "\" \"",
        "admin.token",
        None,
    );
    let tenant = located(
        d,
        &format!("[admin]\nlisten = \"127.0.0.1:9\"\n\n{TENANT}admin_token = \"\"\n"),
        "\"\"",
        "tenant.admin_token",
        Some("a"),
    );
    assert_eq!(top.what, "admin.token is empty");
    assert_eq!(tenant.what, "tenant a: admin_token is empty");
    assert_eq!(top.fix, tenant.fix);
    let r = located_after(
        d,
        &format!(
            "[admin]\nlisten = \"127.0.0.1:9\"\ntoken = \"t\"\n\n{TENANT}admin_token = \"t\"\n"
        ),
        "admin_token",
        "\"t\"",
        "tenant.admin_token",
        Some("a"),
    );
    assert!(
        r.what
            .contains("admin_token is also another tenant's or the [admin] token")
    );
    let r = located(
        d,
        &format!("{TENANT}admin_token = \"t\"\n"),
        "\"t\"",
        "tenant.admin_token",
        Some("a"),
    );
    assert!(r.fix.contains("add [admin]"), "{}", r.fix);
    let r = located(d, "[admin]\ntoken = \"t\"\n", "\"t\"", "admin.token", None);
    assert!(r.fix.contains("add listen = "), "{}", r.fix);
    let r = located(
        d,
        "[admin]\nlisten = \"10.1.2.3:9\"\n",
        "\"10.1.2.3:9\"",
        "admin.listen",
        None,
    );
    assert!(r.fix.contains("add token = "), "{}", r.fix);
    // One address check for [admin] and [metrics] (which points at its
    // header, the line its message always named).
    let admin = located(
        d,
        "[admin]\nlisten = \"nowhere\"\n",
        "\"nowhere\"",
        "admin.listen",
        None,
    );
    let metrics = located(
        d,
        "[metrics]\nlisten = \"nowhere\"\n",
        "[metrics]",
        "metrics.listen",
        None,
    );
    assert_eq!(
        admin.what.replace("admin", "metrics"),
        metrics.what,
        "{} / {}",
        admin.what,
        metrics.what
    );
    assert!(admin.fix.starts_with("expected IP:PORT"), "{}", admin.fix);
    // Tenant entries.
    located(
        d,
        "[[tenant]]\nid = \"a.b\"\nscript = \"a.lua\"\n",
        "\"a.b\"",
        "tenant.id",
        Some("a.b"),
    );
    let r = located_after(
        d,
        &format!("{TENANT}domains = [\"a.example\"]\n\n{TENANT}"),
        "\n\n",
        "\"a\"",
        "tenant.id",
        Some("a"),
    );
    assert!(r.what.contains("is used twice"), "{}", r.what);
    let r = located(
        d,
        &format!("{TENANT}domains = [\"a.example\", \"a b\"]\n"),
        "\"a b\"",
        "tenant.domains[1]",
        Some("a"),
    );
    assert!(r.fix.contains("*.example.com"), "{}", r.fix);
    let r = located(
        d,
        &format!("{TENANT}modules = [\"sl\", \"nope\"]\n"),
        "\"nope\"",
        "tenant.modules[1]",
        Some("a"),
    );
    assert!(r.fix.contains("registrar"), "{}", r.fix);
    located_after(
        d,
        "[[tenant]]\nid = \"a\"\nscript = \"a.lua\"\n[[tenant]]\nid = \"b\"\nscript = \"a.lua\"\n",
        "",
        "\"b\"",
        "tenant.id",
        Some("b"),
    );
    let r = located(
        d,
        &format!("script = \"a.lua\"\n{TENANT}"),
        "\"a.lua\"",
        "script",
        None,
    );
    assert_eq!(r.fix, "move this one into a [[tenant]]");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn databases_auth_and_malformed_values_name_line_column_key_and_fix() {
    let dir = temp_dir("tables");
    let d = dir.as_path();
    located(
        d,
        "[registrar]\ndefault_expires = 0\n",
        "0",
        "registrar.default_expires",
        None,
    );
    let r = located(
        d,
        "[registrar]\nmin_expires = 600\nmax_expires = 60\n",
        "600",
        "registrar.min_expires",
        None,
    );
    assert!(r.fix.contains("at most max_expires"), "{}", r.fix);
    located(
        d,
        "[auth]\nnonce_expire = 0\n",
        "0",
        "auth.nonce_expire",
        None,
    );
    let r = located(
        d,
        "[auth]\nsecret = \"abc\"\n",
        "\"abc\"",
        "auth.secret",
        None,
    );
    assert!(r.what.contains("64 hex digits"), "{}", r.what);
    // What serde refuses is located the same way, with the key's path.
    let r = located(
        d,
        &format!("{TENANT}[tenant.limits]\nfule = 3\n"),
        "fule",
        "tenant.limits.fule",
        None,
    );
    assert!(r.fix.contains("`fuel`"), "{}", r.fix);
    let r = located(d, "auto_reload = 1\n", "1", "auto_reload", None);
    assert_eq!(r.fix, "give true or false");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Send OPTIONS to the proxy on `port` until it answers (it may still be
/// starting): the answer's status line.
fn options(port: u16) -> String {
    let ua = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    ua.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let me = ua.local_addr().unwrap();
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(120) {
        n += 1;
        let request = format!(
            "OPTIONS sip:alice@a.example SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKdefault{n}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@a.example>;tag=1\r\nTo: <sip:alice@a.example>\r\nCall-ID: default-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        ua.send_to(request.as_bytes(), ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 4096];
        if let Ok(len) = ua.recv(&mut buf) {
            return String::from_utf8_lossy(&buf[..len])
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
        }
    }
    panic!("no answer on udp port {port}");
}

/// Run `kemibox run ARGS --log-format json` in `dir`, have it answer one
/// request on `port`, and return its log lines and, if it serves metrics
/// at `metrics`, what `GET /metrics` shows then.
fn serve_one(
    dir: &Path,
    args: &[&str],
    port: u16,
    metrics: Option<std::net::SocketAddr>,
) -> (Vec<serde_json::Value>, String) {
    let log = dir.join("kemibox.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kemibox"))
        .arg("run")
        .args(args)
        .args(["--log-format", "json"])
        .current_dir(dir)
        .env("KEMIBOX_DATA_DIR", dir)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let answer = options(port);
    let served = metrics
        .and_then(|addr| common::http_get(addr, "/metrics"))
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answer, "SIP/2.0 200 OK");
    // The script's log line is written as it runs, before the answer.
    let lines = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (lines, served)
}

/// The script's own log line names tenant "default".
fn logged_as_default(lines: &[serde_json::Value]) {
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "hello from the script" && l["tenant"] == "default"),
        "{lines:?}"
    );
    // One tenant takes every message: no "tenant loaded" list is logged.
    assert!(
        !lines.iter().any(|l| l["message"] == "tenant loaded"),
        "{lines:?}"
    );
}

#[test]
fn a_run_without_tenant_entries_is_the_tenant_default() {
    let dir = temp_dir("default");
    // From the command line.
    let port = free_udp_port();
    let listen = format!("udp:127.0.0.1:{port}");
    let (lines, _) = serve_one(
        &dir,
        &["--script", "a.lua", "--listen", &listen],
        port,
        None,
    );
    logged_as_default(&lines);
    // From a file without [[tenant]]: the same, and its metrics are
    // labelled "default".
    let port = free_udp_port();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::write(
        dir.join("proxy.toml"),
        format!(
            "script = \"a.lua\"\nlisten = [\"udp:127.0.0.1:{port}\"]\n[metrics]\nlisten = \"{metrics}\"\n"
        ),
    )
    .unwrap();
    let (lines, served) = serve_one(&dir, &["--config", "proxy.toml"], port, Some(metrics));
    logged_as_default(&lines);
    assert!(
        served.contains(r#"kemibox_invocations_total{tenant="default""#),
        "{served}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
