//! Dialog profiles in a running `kemibox run` sharing them through a
//! redis-server started here: the admin API's `dlg.profile_get_size` and
//! `dlg.profile_list` count another node's memberships (written by this
//! test as node "c", beside the proxy's node "a"), which stop counting
//! once "c" stops heartbeating; Redis killed, the proxy answers from its
//! own state, says so, and shows it in its metrics; Redis restarted
//! empty, its heartbeat writes its memberships back and the metrics say
//! it is shared again. `[dialog]` keys that cannot work are refused at
//! start with the file and line.

mod common;
// The store tests' private servers (this test uses only Redis).
#[path = "../../store/tests/common/mod.rs"]
#[allow(dead_code, reason = "this test uses only some of the store servers")]
mod db;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::admin::{eventually, metric, result, rpc};
use common::probe::{free_tcp_port, free_udp_port};
use common::sipp::kemibox_run;
use db::servers::{redis, redis_url};
use kemibox_store::{Membership, RedisDialogs};
use serde_json::{Value, json};

const NODE_TTL: u64 = 2;

#[test]
fn profiles_count_another_nodes_calls_and_survive_a_redis_outage() {
    let mut server = redis();
    let url = redis_url(&server);
    let dir = common::temp_dir("dialog-profiles");
    std::fs::write(
        dir.join("s.lua"),
        "function ksr_request_route() KSR.sl.sl_send_reply(200, 'OK') end\n",
    )
    .unwrap();
    let (port, admin_port, metrics_port) = (free_udp_port(), free_tcp_port(), free_tcp_port());
    let config = dir.join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            r#"script = "s.lua"
listen = ["udp:127.0.0.1:{port}"]

[database]
sqlite = "kemibox.sqlite"
redis = "{url}"

[admin]
listen = "127.0.0.1:{admin_port}"

[metrics]
listen = "127.0.0.1:{metrics_port}"

[dialog]
profiles_with_value = ["caller"]
profiles_no_value = ["inbound"]
backend = "redis"
node = "a"
node_ttl = {NODE_TTL}
"#
        ),
    )
    .unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let log = dir.join("kemibox.log");
    let proxy = kemibox_run(&dir, &["--config", config.to_str().unwrap()], &log);
    let size = |params: Value| result(admin, "dlg.profile_get_size", params);
    let got = size(json!(["caller"]));
    assert_eq!(got["count"], 0);
    assert_eq!(got["all_nodes"], true);
    assert_eq!(got["tenant"], "default");

    // Another node, "c", holds two calls of caller alice and one inbound.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = runtime.block_on(RedisDialogs::connect(&url)).unwrap();
    let ttl = Duration::from_secs(NODE_TTL);
    let member = |profile: &str, value: Option<&str>, dialog: &str| Membership {
        profile: profile.into(),
        value: value.map(Into::into),
        dialog: dialog.into(),
    };
    let held = [
        member("caller", Some("alice"), "c1"),
        member("caller", Some("alice"), "c2"),
        member("inbound", None, "c1"),
    ];
    runtime
        .block_on(c.add_memberships("default", "c", ttl, &held))
        .unwrap();
    let last_write = Instant::now();
    // Past the proxy's size cache.
    eventually("c's calls counted", Duration::from_secs(5), || {
        size(json!(["caller", "alice"]))["count"] == 2
    });
    assert_eq!(size(json!(["caller", "bob"]))["count"], 0);
    // Asked at start, so cached for a moment.
    eventually("every value counted", Duration::from_secs(5), || {
        size(json!(["caller"]))["count"] == 2
    });
    assert_eq!(size(json!({"profile": "inbound"}))["count"], 1);
    let listed = result(admin, "dlg.profile_list", json!(["caller"]));
    assert_eq!(
        listed["dialogs"],
        json!([
            {"dialog": "c1", "value": "alice", "node": "c"},
            {"dialog": "c2", "value": "alice", "node": "c"},
        ])
    );
    let unknown = rpc(admin, "dlg.profile_get_size", json!(["nope"]));
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
    assert!(
        unknown["error"]["message"]
            .as_str()
            .unwrap()
            .contains("declared: caller, inbound"),
        "{unknown}"
    );

    // "c" is silent: its calls stop counting its ttl after its last
    // write, not before.
    eventually(
        "a silent node's calls dropped",
        Duration::from_secs(10),
        || size(json!(["caller"]))["count"] == 0,
    );
    assert!(
        last_write.elapsed() >= ttl - Duration::from_millis(200),
        "dropped after {:?}",
        last_write.elapsed()
    );
    assert_eq!(
        metric(metrics, "kemibox_dialog_store_degraded{tenant=\"default\"}"),
        Some(0)
    );

    // Redis gone: answers keep coming, from this node's state.
    server.kill();
    // (A size cached before the outage may answer first.)
    eventually(
        "answers from this node only",
        Duration::from_secs(5),
        || {
            let got = size(json!(["caller"]));
            assert_eq!(got["count"], 0);
            got["all_nodes"] == false
        },
    );
    eventually("degraded in the metrics", Duration::from_secs(5), || {
        metric(metrics, "kemibox_dialog_store_degraded{tenant=\"default\"}") == Some(1)
    });
    assert!(
        metric(
            metrics,
            "kemibox_dialog_store_failures_total{tenant=\"default\"}"
        )
        .is_some_and(|n| n >= 1)
    );
    let resyncs = metric(
        metrics,
        "kemibox_dialog_store_resyncs_total{tenant=\"default\"}",
    )
    .expect("resyncs series");
    assert!(resyncs >= 1, "at start");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("dialog profiles: Redis failed").count(),
        1,
        "one line per outage:\n{text}"
    );

    // Back, empty: the heartbeat writes this node's memberships again.
    server.restart();
    eventually("shared again", Duration::from_secs(10), || {
        metric(metrics, "kemibox_dialog_store_degraded{tenant=\"default\"}") == Some(0)
    });
    assert!(
        metric(
            metrics,
            "kemibox_dialog_store_resyncs_total{tenant=\"default\"}"
        )
        .is_some_and(|n| n > resyncs)
    );
    assert_eq!(size(json!(["caller"]))["all_nodes"], true);
    runtime
        .block_on(c.add_memberships("default", "c", ttl, &held[..1]))
        .unwrap();
    eventually("c counted again", Duration::from_secs(5), || {
        size(json!(["caller"]))["count"] == 1
    });
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("dialog profiles: Redis answers again")
    );
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_dialog_keys_are_refused_with_the_line() {
    let dir = common::temp_dir("dialog-profiles-refused");
    for (config, line, what) in [
        (
            "[dialog]\nprofiles_with_value = [\"ca ller\"]\n",
            2,
            "dialog: profiles_with_value has \"ca ller\", not a profile name",
        ),
        (
            "[dialog]\nprofiles_with_value = [\"a\"]\nprofiles_no_value = [\"a\"]\n",
            3,
            "dialog: profile \"a\" is declared twice",
        ),
        (
            "[dialog]\nbackend = \"redis\"\n",
            2,
            "dialog: backend = \"redis\" without a Redis server",
        ),
        (
            "[dialog]\nbackend = \"disk\"\n",
            2,
            "dialog: backend = \"disk\" is not known",
        ),
        (
            "[dialog]\nnode_ttl = 0\n",
            2,
            "dialog: node_ttl = 0 is out of range",
        ),
        (
            "[dialog]\nmax_memberships = -1\n",
            2,
            "dialog: max_memberships = -1 is out of range",
        ),
        (
            "[dialog]\nnode = \"a:b\"\n",
            2,
            "dialog: node = \"a:b\" is not a node name",
        ),
        (
            "[[tenant]]\nid = \"acme\"\nscript = \"s.lua\"\n[tenant.dialog]\nnode = \"x\"\n",
            5,
            "tenant acme: dialog: node is the process's, not a tenant's",
        ),
    ] {
        let (file, err) = common::refused_config(&dir, config);
        assert!(
            err.contains(&format!("{file}:{line}")) && err.contains(what),
            "want {what:?} at line {line} for:\n{config}\ngot:\n{err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
