//! `KSR.permissions` over real sockets with `kemibox run`: an address added
//! with `kemibox address add` lets the script skip its check (with the
//! row's tag in the peer tag AVP), a change reaches the running proxy at
//! `permissions.addressReload` (not before), the dump RPCs show the cached
//! rows, and the CLI refuses a malformed subnet.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::sipp::{kemibox_cli, kemibox_run};
use serde_json::{Value, json};

const SCRIPT: &str = r#"
function ksr_request_route()
    if KSR.permissions.allow_source_address(1) > 0 then
        KSR.sl.sl_send_reply(200, "Trusted " .. tostring(KSR.pv.get("$avp(peer)")))
        return
    end
    KSR.sl.sl_send_reply(403, "Forbidden")
end
"#;

/// `kemibox address ARGS... --db` on the test's SQLite file.
/// An OPTIONS from `from` (an address of the loopback network) to the
/// proxy on `port`: the status line of its answer, which must come.
fn options(from: &str, port: u16) -> String {
    let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    common::probe::options(proxy, from, "phone/1.0", Duration::from_secs(10)).expect("an answer")
}

fn address(db: &Path, args: &[&str]) -> (bool, String) {
    let db = db.display().to_string();
    let mut all = vec!["address"];
    all.extend(args);
    all.extend(["--db", &db]);
    kemibox_cli(&all)
}

/// `kemibox ctl --config CONFIG METHOD`: the printed result.
fn ctl(config: &Path, method: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_kemibox"))
        .args(["ctl", "--config"])
        .arg(config)
        .arg(method)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{method}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn an_added_address_is_trusted_and_a_reload_picks_up_changes() {
    let dir = common::temp_dir("permissions");
    let db = dir.join("kemibox.sqlite");
    let (port, admin) = (
        common::probe::free_udp_port(),
        common::probe::free_tcp_port(),
    );
    std::fs::write(dir.join("trust.lua"), SCRIPT).unwrap();
    let config = dir.join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "script = \"trust.lua\"\nlisten = [\"udp:127.0.0.1:{port}\"]\n[database]\nsqlite = \"kemibox.sqlite\"\n[permissions]\npeer_tag_avp = \"$avp(peer)\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"
        ),
    )
    .unwrap();
    assert!(address(&db, &["add", "1", "127.0.0.2", "0", "pbx"]).0);
    assert!(
        address(&db, &["add", "2", "127.0.0.0/8"]).0,
        "another group"
    );
    let (ok, list) = address(&db, &["list"]);
    assert!(ok);
    assert_eq!(list, "1 127.0.0.2/32 0 pbx\n2 127.0.0.0/8 0\n");

    let log = dir.join("kemibox.log");
    let _proxy = kemibox_run(&dir, &["--config", config.to_str().unwrap()], &log);
    assert_eq!(options("127.0.0.2", port), "SIP/2.0 200 Trusted pbx");
    assert_eq!(options("127.0.0.3", port), "SIP/2.0 403 Forbidden");

    // Added while running: not seen until the reload.
    assert!(address(&db, &["add", "1", "127.0.0.0/29", "0"]).0);
    assert_eq!(options("127.0.0.3", port), "SIP/2.0 403 Forbidden");
    assert_eq!(
        ctl(&config, "permissions.addressReload"),
        json!({"tenant": "default", "rows": 3})
    );
    assert_eq!(options("127.0.0.3", port), "SIP/2.0 200 Trusted nil");
    assert_eq!(options("127.0.0.9", port), "SIP/2.0 403 Forbidden");
    assert_eq!(
        ctl(&config, "permissions.addressDump"),
        json!([{"group": 1, "ip": "127.0.0.2", "port": 0, "tag": "pbx"}])
    );
    assert_eq!(
        ctl(&config, "permissions.subnetDump"),
        json!([
            {"group": 1, "ip": "127.0.0.0", "mask": 29, "port": 0, "tag": null},
            {"group": 2, "ip": "127.0.0.0", "mask": 8, "port": 0, "tag": null}
        ])
    );

    // Removed: after the reload the tag is gone (the subnet still trusts).
    assert!(address(&db, &["rm", "1", "127.0.0.2"]).0);
    assert_eq!(options("127.0.0.2", port), "SIP/2.0 200 Trusted pbx");
    ctl(&config, "permissions.addressReload");
    assert_eq!(options("127.0.0.2", port), "SIP/2.0 200 Trusted nil");

    // A malformed subnet never reaches the table.
    let out = Command::new(env!("CARGO_BIN_EXE_kemibox"))
        .args(["address", "add", "1", "127.0.0.0/33", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("\"127.0.0.0/33\" is not an IP address or subnet"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !address(&db, &["rm", "1", "127.0.0.2"]).0,
        "nothing left to remove"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
