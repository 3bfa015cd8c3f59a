//! `KSR.htable` in a running `kemibox run`, over real UDP sockets and a
//! real SQLite file: the reference script's ban (a scanner's User-Agent
//! bans its source address into `ipban`, a banned source gets no answer,
//! other sources are served), the ban surviving a SIGTERM restart through
//! the table's `dbtable`, the htable admin methods, and `[[htable]]`
//! entries refused at start with the file and line.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::admin::{result, rpc};
use common::probe::{free_tcp_port, free_udp_port, ignored, served};
use common::sipp::{Running, kemibox_run};
use kemibox_store::{HtableChanges, HtableRow, HtableStore, SqliteStore};
use serde_json::json;

/// The reference script's layout (tests/fixtures/scripts/ipban.lua).
const SCRIPT: &str = include_str!("../../../tests/fixtures/scripts/ipban.lua");

/// The banned client's address, and a client that stays served.
const SCANNER: &str = "127.0.0.2";
const CLIENT: &str = "127.0.0.3";

struct Setup {
    dir: PathBuf,
    config: PathBuf,
    sqlite: PathBuf,
    proxy: SocketAddr,
    admin: SocketAddr,
}

fn setup(name: &str) -> Setup {
    let dir = common::temp_dir(&format!("htable-{name}"));
    std::fs::write(dir.join("ban.lua"), SCRIPT).unwrap();
    let (port, admin_port) = (free_udp_port(), free_tcp_port());
    let config = dir.join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            r#"script = "ban.lua"
listen = ["udp:127.0.0.1:{port}"]

[database]
sqlite = "kemibox.sqlite"

[admin]
listen = "127.0.0.1:{admin_port}"

[[htable]]
name = "ipban"
size = 8
autoexpire = 300
dbtable = "ipban"
dbmode = 1
"#
        ),
    )
    .unwrap();
    Setup {
        sqlite: dir.join("kemibox.sqlite"),
        dir,
        config,
        proxy: format!("127.0.0.1:{port}").parse().unwrap(),
        admin: format!("127.0.0.1:{admin_port}").parse().unwrap(),
    }
}

fn start(s: &Setup, log: &str) -> Running {
    let config = s.config.display().to_string();
    kemibox_run(&s.dir, &["--config", config.as_str()], &s.dir.join(log))
}

/// The stored rows of the tenant's `ipban` dbtable.
fn stored(sqlite: &Path) -> Vec<HtableRow> {
    let store = SqliteStore::open(sqlite).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(store.load("default", "ipban")).unwrap()
}

#[test]
fn a_scanner_is_banned_and_the_ban_survives_a_restart() {
    let s = setup("ban");
    let proxy = start(&s, "first.log");
    assert_eq!(served(s.proxy, CLIENT), "SIP/2.0 200 Served 0");
    assert_eq!(served(s.proxy, SCANNER), "SIP/2.0 200 Served 0");
    // The scanner's User-Agent bans its address; from then on nothing
    // from it is answered, whatever its User-Agent.
    assert!(ignored(s.proxy, SCANNER, "friendly-scanner"));
    assert!(ignored(s.proxy, SCANNER, "phone/1.0"));
    assert_eq!(served(s.proxy, CLIENT), "SIP/2.0 200 Served 1");

    let dump = result(s.admin, "htable.dump", json!(["ipban"]));
    let items = dump["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{dump}");
    assert_eq!(items[0]["name"], SCANNER);
    assert_eq!(items[0]["value"], 1);
    let left = items[0]["expires"].as_u64().unwrap();
    assert!((295..=300).contains(&left), "autoexpire 300: {left}");

    // SIGTERM: the table is written back; the restarted proxy loads it.
    proxy.stop();
    let rows = stored(&s.sqlite);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].key_name.as_str(), rows[0].key_value.as_str()),
        (SCANNER, "1")
    );
    let proxy = start(&s, "second.log");
    assert!(ignored(s.proxy, SCANNER, "phone/1.0"), "the ban survived");
    assert_eq!(served(s.proxy, CLIENT), "SIP/2.0 200 Served 1");

    // The admin API lifts the ban, and the lifting is written back
    // within a second, without a shutdown.
    let deleted = result(s.admin, "htable.delete", json!(["ipban", SCANNER]));
    assert_eq!(deleted["deleted"], true);
    assert_eq!(served(s.proxy, SCANNER), "SIP/2.0 200 Served 0");
    let started = Instant::now();
    while !stored(&s.sqlite).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not written back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(proxy);
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[test]
fn admin_methods_read_write_flush_and_reload_tables() {
    let s = setup("rpc");
    let proxy = start(&s, "proxy.log");
    let tables = result(s.admin, "htable.listTables", json!([]));
    assert_eq!(
        tables["tables"],
        json!([{
            "name": "ipban", "dbtable": "ipban", "dbmode": 1, "expire": 300,
            "updateexpire": 1, "size": 8, "max_items": 4096, "initval": null,
        }])
    );
    result(s.admin, "htable.seti", json!(["ipban", SCANNER, 1]));
    assert!(
        ignored(s.proxy, SCANNER, "phone/1.0"),
        "banned through the API"
    );
    result(
        s.admin,
        "htable.sets",
        json!({"htable": "ipban", "key": "note", "value": "x"}),
    );
    let got = result(s.admin, "htable.get", json!(["ipban", "note"]));
    assert_eq!(
        (got["name"].clone(), got["value"].clone()),
        (json!("note"), json!("x"))
    );
    let stats = result(s.admin, "htable.stats", json!([]));
    assert_eq!(stats["tables"][0]["items"], 2);
    assert_eq!(stats["tables"][0]["slots"], 256);

    let missing = rpc(s.admin, "htable.get", json!(["ipban", "nobody"]));
    assert!(
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no item \"nobody\""),
        "{missing}"
    );
    let unknown = rpc(s.admin, "htable.dump", json!(["nope"]));
    assert!(
        unknown["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has no htable \"nope\": one of ipban"),
        "{unknown}"
    );
    let bad = rpc(s.admin, "htable.seti", json!(["ipban", "k", "ten"]));
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a 32-bit integer"),
        "{bad}"
    );

    let flushed = result(s.admin, "htable.flush", json!(["ipban"]));
    assert_eq!(flushed["removed"], 2);
    assert_eq!(served(s.proxy, SCANNER), "SIP/2.0 200 Served 0");

    // A row put into the database by hand shows after htable.reload.
    let started = Instant::now();
    while !stored(&s.sqlite).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "flush not written back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let store: Arc<dyn HtableStore> = Arc::new(SqliteStore::open(&s.sqlite).unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let row = HtableRow {
        key_name: CLIENT.into(),
        key_type: 0,
        value_type: 1,
        key_value: "1".into(),
        expires: 0,
    };
    let changes = HtableChanges {
        upserts: vec![row],
        ..HtableChanges::default()
    };
    runtime
        .block_on(store.write("default", "ipban", &changes))
        .unwrap();
    assert_eq!(served(s.proxy, CLIENT), "SIP/2.0 200 Served 0");
    let reloaded = result(s.admin, "htable.reload", json!(["ipban"]));
    assert_eq!(reloaded["items"], 1);
    assert!(
        ignored(s.proxy, CLIENT, "phone/1.0"),
        "banned by the reloaded row"
    );
    drop(proxy);
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[test]
fn bad_htable_entries_are_refused_with_the_line() {
    let dir = common::temp_dir("htable-refused");
    for (config, line, what) in [
        (
            "[[htable]]\nname = \"ipban\"\nsize = 40\n",
            3,
            "htable ipban: size = 40 is out of range (2 to 31)",
        ),
        (
            "[[htable]]\nname = \"ipban\"\ndmqreplicate = 1\n",
            3,
            "unknown field `dmqreplicate`",
        ),
        (
            "[[htable]]\nname = \"ipban\"\ndbmode = 1\n",
            3,
            "htable ipban: dbmode = 1 without a dbtable",
        ),
        (
            "[[htable]]\nname = \"a\"\n[[htable]]\nname = \"a\"\n",
            4,
            "htable: \"a\" is declared twice",
        ),
        (
            "listen = [\"udp:127.0.0.1:0\"]\n[[tenant]]\nid = \"t\"\nscript = \"t.lua\"\n[[tenant.htable]]\nname = \"x=>y\"\n",
            6,
            "tenant t: htable: name \"x=>y\" cannot name a table",
        ),
    ] {
        let (file, err) = common::refused_config(&dir, config);
        let headline = format!("{file}: line {line}: {what}");
        assert!(err.contains(&headline), "{headline:?} not in:\n{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
