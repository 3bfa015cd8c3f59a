//! Two kemibox nodes sharing PostgreSQL (subscribers) and Redis
//! (registrations), both real servers started here on loopback: a phone
//! registered through node A is reached by a call through node B, and
//! `kemibox user` / `kemibox ul` work on the configured databases. When
//! Redis goes away calls are answered (404) rather than lost, and both
//! nodes reconnect once it is back.

mod common;
// The store tests' private servers (this test uses only some of it).
#[path = "../../store/tests/common/mod.rs"]
#[allow(dead_code, reason = "this test uses only some of the store servers")]
mod db;

use std::path::Path;

use common::sipp::{answer_one_call, finished, kemibox_cli, kemibox_run, register, uac};
use db::servers::{postgres, postgres_url, redis, redis_url};

const NODE_A: &str = "127.0.0.1:26060";
const NODE_B: &str = "127.0.0.1:26061";
const BOB_PORT: &str = "26090";
/// Both nodes key their nonces alike, so either accepts the other's.
const SECRET: &str = "5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1";

/// A node's config file in `dir`: the default script on `listen`, the
/// shared databases.
fn config(dir: &Path, name: &str, listen: &str, pg: &str, redis: &str) -> String {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "listen = [\"udp:{listen}\"]\nlog = \"info\"\n\n[database]\npostgres = \"{pg}\"\nredis = \"{redis}\"\n\n[auth]\nsecret = \"{SECRET}\"\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn a_phone_registered_through_one_node_is_called_through_the_other() {
    let pg = postgres();
    let mut rd = redis();
    let dir = std::env::temp_dir().join(format!("kemibox-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (pg_url, redis_url) = (postgres_url(&pg), redis_url(&rd));
    let a = config(&dir, "a.toml", NODE_A, &pg_url, &redis_url);
    let b = config(&dir, "b.toml", NODE_B, &pg_url, &redis_url);

    // Subscribers go to PostgreSQL, through either node's config.
    assert!(kemibox_cli(&["user", "add", "--config", &a, "alice@127.0.0.1", "alice-pw"]).0);
    assert!(kemibox_cli(&["user", "add", "--config", &b, "bob@127.0.0.1", "bob-pw"]).0);
    let (ok, users) = kemibox_cli(&["user", "list", "--config", &a]);
    assert!(ok);
    assert_eq!(users, "alice@127.0.0.1\nbob@127.0.0.1\n");

    let _node_a = kemibox_run(&dir, &["--config", &a], &dir.join("a.log"));
    let _node_b = kemibox_run(&dir, &["--config", &b], &dir.join("b.log"));

    // bob registers through A ...
    assert!(
        register(&dir, NODE_A, "bob", "bob-pw", BOB_PORT, "3600"),
        "bob registers through node A; see {}",
        dir.display()
    );
    // ... node B sees the registration ...
    let (ok, listing) = kemibox_cli(&["ul", "show", "--config", &b]);
    assert!(ok);
    assert!(
        listing.contains(&format!("bob@127.0.0.1 <sip:bob@127.0.0.1:{BOB_PORT}>")),
        "{listing}"
    );
    // ... and alice's call through B reaches him.
    let bob = answer_one_call(&dir, BOB_PORT);
    assert!(
        uac(
            &dir,
            "uac_auth.xml",
            NODE_B,
            "26072",
            &[("user", "alice"), ("callee", "bob")],
            ("alice", "alice-pw"),
        ),
        "alice reaches bob through node B; see {}",
        dir.display()
    );
    assert!(finished(bob), "bob's phone got the call");

    // Redis goes away: lookups fail (the default script answers 404), the
    // nodes keep running and say why in their logs ...
    rd.kill();
    assert!(
        uac(
            &dir,
            "uac_auth_404.xml",
            NODE_B,
            "26072",
            &[("user", "alice"), ("callee", "bob")],
            ("alice", "alice-pw"),
        ),
        "with Redis down the call is refused, not lost; see {}",
        dir.display()
    );
    let log_b = std::fs::read_to_string(dir.join("b.log")).unwrap();
    assert!(
        log_b.contains("location store failed for bob@127.0.0.1")
            && log_b.contains("redis unavailable"),
        "node B logs the lost database: {log_b}"
    );
    // ... and once Redis is back (empty: it persists nothing), they
    // reconnect by themselves: bob registers again and is reached.
    rd.restart();
    assert!(
        register(&dir, NODE_A, "bob", "bob-pw", BOB_PORT, "3600"),
        "node A reconnected to Redis; see {}",
        dir.display()
    );
    let bob = answer_one_call(&dir, BOB_PORT);
    assert!(
        uac(
            &dir,
            "uac_auth.xml",
            NODE_B,
            "26072",
            &[("user", "alice"), ("callee", "bob")],
            ("alice", "alice-pw"),
        ),
        "node B reconnected to Redis; see {}",
        dir.display()
    );
    assert!(
        finished(bob),
        "bob's phone got the call after Redis came back"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
