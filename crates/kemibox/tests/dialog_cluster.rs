//! Dialogs of two `kemibox run` nodes sharing one redis-server started
//! here, with SIPp keeping calls up through each: a profile's size and
//! the tenant's `max_calls` count the calls of both nodes; Redis killed
//! and restarted mid-calls, the calls in progress complete and the nodes
//! count each other's calls again; a node stopped and started again
//! finds its dialogs (`dlg.list`) and ends them with BYE to both sides
//! when their lifetime is over. The script is
//! tests/fixtures/scripts/dialog-relay.lua (every call in profile
//! `calls`, value `all`).

mod common;
// The store tests' private servers (this test uses only Redis).
#[path = "../../store/tests/common/mod.rs"]
#[allow(dead_code, reason = "this test uses only some of the store servers")]
mod db;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::admin::{eventually, metric, rpc};
use common::probe::{free_tcp_port, free_udp_port};
use common::sipp::{Running, count, exited_ok, kemibox_run};
use db::servers::{redis, redis_url};
use kemibox_store::{DialogBackup, RedisDialogs};
use serde_json::{Value, json};

/// One node: its SIP address, admin API, metrics, config and log.
struct Node {
    sip: String,
    admin: SocketAddr,
    metrics: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    dir: PathBuf,
}

impl Node {
    /// Node `name` in `dir`, on Redis `url`, relaying to the UAS on
    /// `uas_port`; `extra` goes at the end of the config's top level.
    fn new(dir: &Path, name: &str, url: &str, uas_port: u16, extra: &str) -> Node {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let (port, admin, metrics) = (free_udp_port(), free_tcp_port(), free_tcp_port());
        let script = common::root().join("tests/fixtures/scripts/dialog-relay.lua");
        let config = dir.join("kemibox.toml");
        std::fs::write(
            &config,
            format!(
                r#"script = {script:?}
listen = ["udp:127.0.0.1:{port}"]
log = "info"
{extra}
[database]
redis = "{url}"

[admin]
listen = "127.0.0.1:{admin}"

[metrics]
listen = "127.0.0.1:{metrics}"

[env]
UAS = "sip:127.0.0.1:{uas_port}"

[dialog]
profiles_with_value = ["calls"]
backend = "redis"
node = "{name}"
node_ttl = 2
"#
            ),
        )
        .unwrap();
        Node {
            sip: format!("127.0.0.1:{port}"),
            admin: format!("127.0.0.1:{admin}").parse().unwrap(),
            metrics: format!("127.0.0.1:{metrics}").parse().unwrap(),
            log: dir.join("kemibox.log"),
            config,
            dir,
        }
    }

    fn start(&self) -> Running {
        let proxy = kemibox_run(
            &self.dir,
            &["--config", self.config.to_str().unwrap()],
            &self.log,
        );
        eventually(
            "the node serves its admin API",
            Duration::from_secs(20),
            || TcpStream::connect(self.admin).is_ok(),
        );
        proxy
    }

    /// `dlg.profile_get_size calls`: the calls of every node.
    fn calls(&self) -> u64 {
        let answer = rpc(self.admin, "dlg.profile_get_size", json!(["calls"]));
        answer["result"]["count"]
            .as_u64()
            .unwrap_or_else(|| panic!("{answer}"))
    }

    /// `dlg.list`: this node's dialogs.
    fn dialogs(&self) -> Vec<Value> {
        let answer = rpc(self.admin, "dlg.list", json!([]));
        answer["result"]["dialogs"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("{answer}"))
    }

    /// The value of the metric line starting with `series`.
    fn metric(&self, series: &str) -> Option<u64> {
        metric(self.metrics, series)
    }
}

/// A SIPp UAS echoing Record-Route on `port` until killed.
fn uas(dir: &Path, port: u16) -> Running {
    common::sipp::uas(dir, &port.to_string(), "0")
}

/// `calls` calls of scenario `sf` to `proxy`, all at once, each up for
/// `hold_ms` (when the scenario hangs up itself), statistics in
/// `dir/stats`. A call refused fails at once: SIPp does not retry.
fn offer(dir: &Path, sf: &str, proxy: &str, calls: u32, hold_ms: u32) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    common::sipp::offer(
        dir,
        sf,
        proxy,
        &free_udp_port().to_string(),
        &calls.to_string(),
        &hold_ms.to_string(),
        &["-timeout", "40s", "-timeout_error"],
    )
}

/// The final `SuccessfulCall(C)` and `FailedCall(C)` of the SIPp
/// statistics file in `dir`.
fn calls(dir: &Path) -> (u64, u64) {
    common::sipp::calls(&dir.join("stats"))
}

#[test]
fn both_nodes_calls_count_in_profiles_and_in_max_calls() {
    let server = redis();
    let url = redis_url(&server);
    let dir = common::temp_dir("dialog-cluster-quota");
    let uas_port = free_udp_port();
    let _uas = uas(&dir, uas_port);
    let limits = "[limits]\nmax_calls = 6\n";
    let (a, b) = (
        Node::new(&dir, "a", &url, uas_port, limits),
        Node::new(&dir, "b", &url, uas_port, limits),
    );
    let (proxy_a, proxy_b) = (a.start(), b.start());
    let mut held_a = offer(&dir.join("held-a"), "uac_rr.xml", &a.sip, 3, 9000);
    let mut held_b = offer(&dir.join("held-b"), "uac_rr.xml", &b.sip, 2, 9000);
    eventually("each node holds its calls", Duration::from_secs(5), || {
        a.dialogs().len() == 3 && b.dialogs().len() == 2
    });
    eventually(
        "a's profile counts b's calls",
        Duration::from_secs(3),
        || a.calls() == 5,
    );
    eventually(
        "b's profile counts a's calls",
        Duration::from_secs(3),
        || b.calls() == 5,
    );
    assert_eq!(
        a.metric("kemibox_dialogs_active{tenant=\"default\"}"),
        Some(3)
    );
    assert_eq!(
        b.metric("kemibox_dialogs_active{tenant=\"default\"}"),
        Some(2)
    );
    // 5 of 6 calls are up, on two nodes: b takes one more, not three.
    let over = dir.join("over");
    let mut more = offer(&over, "uac_rr.xml", &b.sip, 3, 1000);
    assert!(
        !exited_ok(&mut more, Duration::from_secs(30)),
        "two refused"
    );
    assert_eq!(calls(&over), (1, 2), "one answered, two refused");
    assert_eq!(count(&b.log, "initial INVITE refused: MaxCalls(6)"), 2);
    assert_eq!(
        b.metric("kemibox_dialog_calls_refused_total{tenant=\"default\"}"),
        Some(2)
    );
    assert_eq!(
        a.metric("kemibox_dialog_calls_refused_total{tenant=\"default\"}"),
        Some(0)
    );
    assert!(exited_ok(&mut held_a, Duration::from_secs(30)));
    assert!(exited_ok(&mut held_b, Duration::from_secs(30)));
    assert_eq!(calls(&dir.join("held-a")), (3, 0));
    assert_eq!(calls(&dir.join("held-b")), (2, 0));
    eventually(
        "the calls ended on both nodes",
        Duration::from_secs(3),
        || a.calls() == 0 && b.calls() == 0,
    );
    proxy_a.stop();
    proxy_b.stop();
}

#[test]
fn calls_in_progress_complete_when_redis_is_killed_and_restarted() {
    let mut server = redis();
    let url = redis_url(&server);
    let dir = common::temp_dir("dialog-cluster-outage");
    let uas_port = free_udp_port();
    let _uas = uas(&dir, uas_port);
    let (a, b) = (
        Node::new(&dir, "a", &url, uas_port, ""),
        Node::new(&dir, "b", &url, uas_port, ""),
    );
    let (proxy_a, proxy_b) = (a.start(), b.start());
    let mut to_a = offer(&dir.join("to-a"), "uac_rr.xml", &a.sip, 4, 10_000);
    let mut to_b = offer(&dir.join("to-b"), "uac_rr.xml", &b.sip, 4, 10_000);
    eventually("both nodes' calls counted", Duration::from_secs(5), || {
        a.calls() == 8 && b.calls() == 8
    });
    let backup = |node: &str| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let redis = RedisDialogs::connect(&url).await.ok()?;
            redis.load_all("default", node).await.ok()
        })
    };
    eventually("a's dialogs saved", Duration::from_secs(3), || {
        backup("a").is_some_and(|r| r.len() == 4)
    });

    server.kill();
    eventually("a degraded", Duration::from_secs(5), || {
        a.metric("kemibox_dialog_store_degraded{tenant=\"default\"}") == Some(1)
    });
    // Sizes are this node's calls while Redis is away.
    assert_eq!(a.calls(), 4);
    server.restart();
    eventually(
        "a and b count each other again",
        Duration::from_secs(6),
        || a.calls() == 8 && b.calls() == 8,
    );
    eventually("a's records written back", Duration::from_secs(3), || {
        backup("a").is_some_and(|r| r.len() == 4)
    });
    assert!(exited_ok(&mut to_a, Duration::from_secs(40)), "a's calls");
    assert!(exited_ok(&mut to_b, Duration::from_secs(40)), "b's calls");
    assert_eq!(calls(&dir.join("to-a")), (4, 0), "0 failed through a");
    assert_eq!(calls(&dir.join("to-b")), (4, 0), "0 failed through b");
    eventually("the calls ended", Duration::from_secs(3), || {
        a.calls() == 0 && backup("a").is_some_and(|r| r.is_empty())
    });
    assert!(
        a.metric("kemibox_dialog_store_failures_total{tenant=\"default\"}")
            .is_some_and(|n| n >= 1)
    );
    proxy_a.stop();
    proxy_b.stop();
}

#[test]
fn a_restarted_node_finds_its_dialogs_and_ends_them_at_their_lifetime() {
    let server = redis();
    let url = redis_url(&server);
    let dir = common::temp_dir("dialog-cluster-restart");
    let uas_port = free_udp_port();
    let _callee = uas(&dir, uas_port);
    let a = Node::new(&dir, "a", &url, uas_port, "");
    // Each call's lifetime: 8 s, then the proxy sends BYE to both sides.
    let config = std::fs::read_to_string(&a.config).unwrap();
    std::fs::write(
        &a.config,
        config.replace("[env]\n", "[env]\nDLG_TIMEOUT = \"8\"\n"),
    )
    .unwrap();
    let first = a.start();
    let started = Instant::now();
    let callers = dir.join("callers");
    let mut caller = offer(&callers, "uac_dlg_timeout.xml", &a.sip, 3, 0);
    eventually("three confirmed dialogs", Duration::from_secs(5), || {
        let d = a.dialogs();
        d.len() == 3 && d.iter().all(|d| d["state"] == 4)
    });
    let before: Vec<Value> = a.dialogs();
    // Saved within the writer's period.
    std::thread::sleep(Duration::from_millis(500));
    first.stop();

    let second = a.start();
    let after = a.dialogs();
    assert_eq!(after.len(), 3, "{after:?}");
    for d in &before {
        let same = after.iter().find(|x| x["h_id"] == d["h_id"]).unwrap();
        for key in [
            "h_entry", "call-id", "state", "caller", "callee", "profiles",
        ] {
            assert_eq!(same[key], d[key], "{key} of {d}");
        }
    }
    assert_eq!(a.calls(), 3, "the restored calls count");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "restarted within the lifetime"
    );
    assert!(
        exited_ok(&mut caller, Duration::from_secs(30)),
        "the callers got the restarted proxy's BYE: {}",
        std::fs::read_to_string(&a.log).unwrap()
    );
    assert_eq!(calls(&callers), (3, 0));
    assert!(
        started.elapsed() >= Duration::from_secs(8),
        "not before the lifetime"
    );
    assert_eq!(count(&a.log, "dialog lifetime over: BYE"), 6);
    eventually("the dialogs are gone", Duration::from_secs(10), || {
        a.dialogs().is_empty() && a.calls() == 0
    });
    assert_eq!(
        count(&a.log, "dialog request failed"),
        0,
        "both sides answered their BYE"
    );
    second.stop();
}
