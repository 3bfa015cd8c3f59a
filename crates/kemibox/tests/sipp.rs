//! End to end with SIPp: `kemibox run` relays real calls (INVITE, 100, 180,
//! 200, ACK, BYE, 200) between a SIPp caller and a SIPp callee, with the
//! benchmark's relay script and seed 003's script unchanged, and the
//! scripts' branch, reply and failure routes run.
//!
//! The scripts send to the callee at 127.0.0.1:5080 (fixed in them), so
//! the scenarios here run one after another in a single test.

mod common;

use std::path::Path;
use std::time::Duration;

use common::sipp::{Running, count, kemibox_run, scenario, sipp};

const PROXY: &str = "127.0.0.1:15060";

/// Start `kemibox run` with `script`; its log goes to `log`.
fn proxy(script: &Path, log: &Path) -> Running {
    let dir = log.parent().unwrap();
    let script = script.display().to_string();
    kemibox_run(
        dir,
        &[
            "--listen",
            &format!("udp:{PROXY}"),
            "--log",
            "info",
            "--script",
            &script,
        ],
        log,
    )
}

/// A SIPp callee running `scenario` on 127.0.0.1:5080.
fn callee(dir: &Path, name: &str) -> Running {
    let child = sipp(dir, &["-sf", &scenario(name), "-p", "5080"])
        .spawn()
        .expect("sipp installed (scripts/setup.sh)");
    std::thread::sleep(Duration::from_millis(500));
    Running(child)
}

/// Place `calls` calls with `scenario` at `rate` per second; true when
/// every call succeeded (SIPp's exit status 0). Leaves SIPp's statistics in
/// `dir`.
fn place_calls(dir: &Path, name: &str, calls: u32, rate: u32) -> bool {
    let status = sipp(
        dir,
        &[
            "-sf",
            &scenario(name),
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

#[test]
fn sipp_calls_through_the_relay_and_seed_scripts() {
    let dir = std::env::temp_dir().join(format!("kemibox-sipp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // The benchmark's relay script, unchanged: 1,000 calls, none failed.
    {
        let log = dir.join("relay.log");
        let _uas = callee(&dir, "uas_rr.xml");
        let _proxy = proxy(&common::root().join("scripts/relay.lua"), &log);
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
        let _proxy = proxy(
            &common::root().join("tests/fixtures/seeds/seed003-route.lua"),
            &log,
        );
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
        let _proxy = proxy(
            &common::root().join("tests/fixtures/seeds/seed003-route.lua"),
            &log,
        );
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
