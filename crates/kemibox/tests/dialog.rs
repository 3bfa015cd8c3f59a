//! Dialog tracking over real sockets (`kemibox run`, SIPp): the tenant's
//! concurrent-call quota (`max_calls`), a dialog lifetime ended by the
//! proxy with BYE to both sides, and `is_known_dlg` in a BYE's route.
//! The script is tests/fixtures/scripts/dialog-relay.lua; SIPp's logs and
//! statistics stay in each run's directory.
//!
//! The lifetime test needs the proxy's UAC (the BYEs it sends on its
//! own): without it the dialog ends but no BYE leaves, and SIPp's caller
//! waits for one in vain.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::admin::rpc;
use common::sipp::{Running, calls, count, exited_ok, run_config, scenario, sipp, uas};
use serde_json::json;

fn temp_dir(name: &str) -> PathBuf {
    common::temp_dir(&format!("dialog-{name}"))
}

fn script() -> String {
    common::root()
        .join("tests/fixtures/scripts/dialog-relay.lua")
        .display()
        .to_string()
}

/// `calls` calls of `uac_rr.xml` to `proxy`, all at once, each up for
/// `hold_ms`, statistics in `dir/stats`.
fn offer(dir: &Path, proxy: &str, local_port: &str, calls: &str, hold_ms: &str) -> Child {
    common::sipp::offer(
        dir,
        "uac_rr.xml",
        proxy,
        local_port,
        calls,
        hold_ms,
        &["-timeout", "30s"],
    )
}

/// `kemibox run` on the script alone on `proxy_addr`, relaying to a SIPp
/// UAS for one call on `uas_port` (started here), with `env` (lines
/// `NAME = "value"`) added to its `[env]`: the proxy, its log and the UAS.
fn one_call(
    dir: &Path,
    proxy_addr: &str,
    uas_port: &str,
    env: &str,
) -> (Running, PathBuf, Running) {
    let (proxy, log) = run_config(
        dir,
        "kemibox.toml",
        &format!(
            "listen = [\"udp:{proxy_addr}\"]\nscript = {:?}\n[env]\nUAS = \"sip:127.0.0.1:{uas_port}\"\n{env}[dialog]\nprofiles_with_value = [\"calls\"]\n",
            script()
        ),
    );
    let callee = uas(dir, uas_port, "1");
    std::thread::sleep(Duration::from_millis(300));
    (proxy, log, callee)
}

#[test]
fn max_calls_answers_the_calls_over_the_quota_503_and_spares_other_tenants() {
    let dir = temp_dir("max-calls");
    let (a, b, uas_port) = ("127.0.0.1:27160", "127.0.0.1:27161", "27180");
    let admin: SocketAddr = "127.0.0.1:27190".parse().unwrap();
    let (proxy, log) = run_config(
        &dir,
        "kemibox.toml",
        &format!(
            r#"listen = ["udp:{a}", "udp:{b}"]
log = "info"
[admin]
listen = "{admin}"
[env]
UAS = "sip:127.0.0.1:{uas_port}"
[dialog]
profiles_with_value = ["calls"]

[[tenant]]
id = "a"
script = {script:?}
listen = ["udp:{a}"]
[tenant.limits]
max_calls = 10

[[tenant]]
id = "b"
script = {script:?}
listen = ["udp:{b}"]
"#,
            script = script()
        ),
    );
    let _uas = uas(&dir, uas_port, "0");
    std::thread::sleep(Duration::from_millis(300));
    let (a_dir, b_dir) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let mut to_a = offer(&a_dir, a, "27170", "20", "6000");
    // b's calls start while a holds its 10.
    std::thread::sleep(Duration::from_millis(1500));
    // Tenant a's 10 calls, as Kamailio's dlg.list shows them.
    let listed = rpc(admin, "dlg.list", json!({"tenant": "a"}));
    let dialogs = listed["result"]["dialogs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(dialogs.len(), 10, "{listed}");
    for d in &dialogs {
        assert_eq!(d["state"], 4, "confirmed and ACKed: {d}");
        assert_eq!(d["profiles"], json!([{"calls": "all"}]), "{d}");
        assert!(
            d["caller"]["tag"].as_str().unwrap().contains("SIPpTag00"),
            "{d}"
        );
        assert!(
            d["callee"]["tag"].as_str().unwrap().contains("SIPpTag01"),
            "{d}"
        );
    }
    let unknown = rpc(
        admin,
        "dlg.end_dlg",
        json!({"h_entry": 1, "h_id": 999999, "tenant": "a"}),
    );
    assert!(unknown.get("error").is_some(), "{unknown}");
    let mut to_b = offer(&b_dir, b, "27171", "5", "1000");
    let b_done = exited_ok(&mut to_b, Duration::from_secs(30));
    exited_ok(&mut to_a, Duration::from_secs(40));
    assert_eq!(
        calls(&a_dir.join("stats")),
        (10, 10),
        "tenant a: 10 answered, 10 refused"
    );
    assert!(b_done, "tenant b's calls all succeeded");
    assert_eq!(
        calls(&b_dir.join("stats")),
        (5, 0),
        "tenant b: none refused"
    );
    assert_eq!(count(&log, "initial INVITE refused: MaxCalls(10)"), 10);
    // The quota is free again once the calls ended.
    let mut again = offer(&b_dir.join(".."), a, "27172", "3", "200");
    assert!(
        exited_ok(&mut again, Duration::from_secs(30)),
        "a takes calls again"
    );
    proxy.stop();
}

#[test]
fn is_known_dlg_is_1_in_a_bye_route() {
    let dir = temp_dir("known");
    let (proxy_addr, uas_port) = ("127.0.0.1:27260", "27280");
    let (proxy, log, mut callee) = one_call(&dir, proxy_addr, uas_port, "");
    let mut caller = offer(&dir, proxy_addr, "27270", "1", "200");
    assert!(
        exited_ok(&mut caller, Duration::from_secs(20)),
        "the call succeeded"
    );
    assert!(
        exited_ok(&mut callee.0, Duration::from_secs(20)),
        "the callee saw it end"
    );
    assert_eq!(
        count(&log, "BYE is_known_dlg=1"),
        1,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    proxy.stop();
}

#[test]
fn a_dialog_lifetime_of_2_s_ends_the_call_with_bye_to_both_sides() {
    let dir = temp_dir("timeout");
    let (proxy_addr, uas_port) = ("127.0.0.1:27360", "27380");
    let (proxy, log, mut callee) = one_call(&dir, proxy_addr, uas_port, "DLG_TIMEOUT = \"2\"\n");
    let sf = scenario("uac_dlg_timeout.xml");
    let started = Instant::now();
    let mut caller = sipp(
        &dir,
        &[
            "-sf",
            &sf,
            proxy_addr,
            "-p",
            "27370",
            "-m",
            "1",
            "-timeout",
            "15s",
            "-timeout_error",
            "-trace_err",
            "-trace_msg",
        ],
    )
    .spawn()
    .expect("sipp installed");
    assert!(
        exited_ok(&mut caller, Duration::from_secs(20)),
        "the caller got the proxy's BYE: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(
        exited_ok(&mut callee.0, Duration::from_secs(20)),
        "the callee got the proxy's BYE"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "not before the lifetime: {took:?}"
    );
    assert_eq!(count(&log, "dialog lifetime over: BYE"), 2);
    proxy.stop();
}

#[test]
fn bad_dialog_settings_are_refused_with_the_line_and_the_fix() {
    let dir = temp_dir("config");
    for (text, line, says, fix) in [
        (
            "listen = [\"udp:127.0.0.1:0\"]\n[limits]\nmax_calls = 0\n",
            3,
            "limits: max_calls = 0 would refuse every call",
            "remove it for no limit",
        ),
        (
            "listen = [\"udp:127.0.0.1:0\"]\n[[tenant]]\nid = \"a\"\nscript = \"a.lua\"\n[tenant.dialog]\nmax_calls_reply = { code = 200, reason = \"OK\" }\n",
            6,
            "tenant a: dialog: max_calls_reply code 200 is not a negative final reply",
            "from 300 to 699",
        ),
        (
            "listen = [\"udp:127.0.0.1:0\"]\n[dialog]\ndefault_timeout = 0\n",
            3,
            "dialog.default_timeout = 0 is out of range",
            "from 1 to",
        ),
    ] {
        let (file, err) = common::refused_config(&dir, text);
        assert!(
            err.contains(&format!("{file}: line {line}: {says}")),
            "{err}"
        );
        assert!(err.contains(fix), "{err}");
    }
}
