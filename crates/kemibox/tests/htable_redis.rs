//! An htable kept in Redis (`backend = "redis"`) and shared by two
//! `kemibox run` nodes, over real UDP sockets and a redis-server started
//! here: a scanner's User-Agent sent to node A bans its source, node B
//! then drops that source's requests while serving others, the ban
//! expires (autoexpire) and B serves the source again. With Redis gone the
//! functions give their negative result (requests are still answered) and
//! the failure is logged once, not once per request; once Redis is back
//! the nodes use it again. `[[htable]]` entries that cannot live in Redis
//! are refused at start with the file and line.

mod common;
// The store tests' private servers (this test uses only Redis).
#[path = "../../store/tests/common/mod.rs"]
#[allow(dead_code, reason = "this test uses only some of the store servers")]
mod db;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::probe::{free_udp_port, ignored, options, served};
use common::sipp::kemibox_run;
use db::servers::{redis, redis_url};

/// The reference script's layout (tests/fixtures/scripts/ipban.lua).
const SCRIPT: &str = include_str!("../../../tests/fixtures/scripts/ipban.lua");

/// The banned client's address, and a client that stays served.
const SCANNER: &str = "127.0.0.2";
const CLIENT: &str = "127.0.0.3";
/// The ban's lifetime in the test.
const AUTOEXPIRE: u64 = 6;

/// A node's config in `dir`: the script on `port`, `ipban` in Redis.
fn config(dir: &Path, name: &str, port: u16, redis: &str) -> String {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            r#"script = "ban.lua"
listen = ["udp:127.0.0.1:{port}"]

[database]
sqlite = "{name}.sqlite"
redis = "{redis}"

[[htable]]
name = "ipban"
size = 8
autoexpire = {AUTOEXPIRE}
backend = "redis"
"#
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn a_ban_set_through_one_node_holds_on_the_other_until_it_expires() {
    let mut rd = redis();
    let url = redis_url(&rd);
    let dir = common::temp_dir("htable-redis-nodes");
    std::fs::write(dir.join("ban.lua"), SCRIPT).unwrap();
    let (port_a, port_b) = (free_udp_port(), free_udp_port());
    let a = config(&dir, "a.toml", port_a, &url);
    let b = config(&dir, "b.toml", port_b, &url);
    let node_a: SocketAddr = format!("127.0.0.1:{port_a}").parse().unwrap();
    let node_b: SocketAddr = format!("127.0.0.1:{port_b}").parse().unwrap();
    let _a = kemibox_run(&dir, &["--config", &a], &dir.join("a.log"));
    let _b = kemibox_run(&dir, &["--config", &b], &dir.join("b.log"));

    assert_eq!(served(node_b, SCANNER), "SIP/2.0 200 Served 0");
    // The scanner shows itself to node A, which bans its address ...
    let banned_at = Instant::now();
    assert!(ignored(node_a, SCANNER, "friendly-scanner"));
    // ... and node B drops it from then on, whatever its User-Agent,
    // while it serves the others (and counts the ban).
    assert!(
        ignored(node_b, SCANNER, "phone/1.0"),
        "node B honours node A's ban"
    );
    assert_eq!(served(node_b, CLIENT), "SIP/2.0 200 Served 1");
    assert_eq!(served(node_a, CLIENT), "SIP/2.0 200 Served 1");

    // The ban expires in Redis after autoexpire: B serves the source again.
    let answer = loop {
        if let Some(answer) = options(node_b, SCANNER, "phone/1.0", Duration::from_millis(500)) {
            break answer;
        }
        assert!(
            banned_at.elapsed() < Duration::from_secs(AUTOEXPIRE + 10),
            "the ban never expired"
        );
    };
    assert!(
        banned_at.elapsed() >= Duration::from_secs(AUTOEXPIRE - 1),
        "the ban lasted its autoexpire"
    );
    assert_eq!(answer, "SIP/2.0 200 Served 0");

    // Redis goes away: the ban check fails (-1, logged once), requests
    // are answered, and the table's count reads as nil.
    rd.kill();
    for _ in 0..3 {
        assert_eq!(served(node_b, CLIENT), "SIP/2.0 200 Served ?");
    }
    let log_b = std::fs::read_to_string(dir.join("b.log")).unwrap();
    let failures = log_b
        .lines()
        .filter(|l| l.contains("KSR.htable.sht_match_name") && l.contains("redis unavailable"))
        .count();
    assert_eq!(
        failures, 1,
        "one log line for the outage, not one per request: {log_b}"
    );
    // Back (empty: it persists nothing): both nodes use it again.
    rd.restart();
    let started = Instant::now();
    while served(node_b, CLIENT) != "SIP/2.0 200 Served 0" {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "node B never reconnected"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(ignored(node_b, SCANNER, "sipvicious"));
    assert!(
        ignored(node_a, SCANNER, "phone/1.0"),
        "banned again, through B"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tables_that_cannot_live_in_redis_are_refused_with_the_line() {
    let dir = common::temp_dir("htable-redis-refused");
    let redis = "listen = [\"udp:127.0.0.1:0\"]\n[database]\nredis = \"redis://127.0.0.1:1/\"\n";
    for (config, line, what) in [
        (
            "[[htable]]\nname = \"ipban\"\nbackend = \"redis\"\n".to_string(),
            3,
            "htable ipban: backend = \"redis\" without a Redis server",
        ),
        (
            format!(
                "{redis}[[htable]]\nname = \"ipban\"\nbackend = \"redis\"\ndbtable = \"ipban\"\n"
            ),
            7,
            "htable ipban: dbtable with backend = \"redis\": Redis is the table's storage",
        ),
        (
            format!("{redis}[[htable]]\nname = \"ipban\"\nbackend = \"redis\"\ndbmode = 0\n"),
            7,
            "htable ipban: dbmode with backend = \"redis\"",
        ),
        (
            format!("{redis}[[htable]]\nname = \"ipban\"\nbackend = \"disk\"\n"),
            6,
            "htable ipban: backend \"disk\" is not one",
        ),
        (
            format!(
                "{redis}[[tenant]]\nid = \"t\"\nscript = \"t.lua\"\n[[tenant.htable]]\nname = \"x\"\nbackend = \"redis\"\ndbtable = \"x\"\n"
            ),
            10,
            "tenant t: htable x: dbtable with backend = \"redis\"",
        ),
    ] {
        let (file, err) = common::refused_config(&dir, &config);
        let headline = format!("{file}: line {line}: {what}");
        assert!(err.contains(&headline), "{headline:?} not in:\n{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
