//! Dialog profiles shared through a private redis-server, two `Profiles`
//! of one tenant standing for two nodes: each counts the other's calls; a
//! node that stops heartbeating stops counting after its ttl; with Redis
//! killed, every operation still answers (local counts, a metric, no
//! error), and once Redis is back (empty) the heartbeat writes each
//! node's memberships again and sizes count both nodes once more.

// The store tests' private servers (only Redis here).
#[path = "../../store/tests/common/mod.rs"]
#[allow(dead_code, reason = "this test uses only some of the store servers")]
mod db;

use std::sync::Arc;
use std::time::{Duration, Instant};

use db::servers::{redis, redis_url};
use kemibox_kemi::dialog_profiles::{ProfileSpecs, Profiles, Shared};
use kemibox_store::RedisDialogs;

fn specs() -> ProfileSpecs {
    ProfileSpecs {
        with_value: vec!["caller".into()],
        no_value: vec!["inbound".into()],
    }
}

async fn node(url: &str, name: &str, ttl: Duration) -> Profiles {
    let redis = Arc::new(RedisDialogs::connect(url).await.unwrap());
    Profiles::new(
        "acme",
        &specs(),
        1000,
        Some(Shared {
            redis,
            node: name.into(),
            ttl,
            size_cache: Duration::ZERO,
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_count_each_others_calls() {
    let server = redis();
    let url = redis_url(&server);
    let ttl = Duration::from_secs(30);
    let (a, b) = (node(&url, "a", ttl).await, node(&url, "b", ttl).await);
    a.heartbeat().await;
    b.heartbeat().await;

    a.add("caller", Some("alice"), "a1").await.unwrap();
    a.add("caller", Some("bob"), "a2").await.unwrap();
    b.add("caller", Some("alice"), "b1").await.unwrap();
    b.add("inbound", None, "b1").await.unwrap();
    a.call_started("a1").await.unwrap();
    b.call_started("b1").await.unwrap();
    b.call_started("b2").await.unwrap();

    for p in [&a, &b] {
        assert_eq!(p.size("caller", None).await, Ok(3));
        assert_eq!(p.size("caller", Some("alice")).await, Ok(2));
        assert_eq!(p.size("inbound", None).await, Ok(1));
        assert_eq!(p.calls().await, 3);
    }
    // Membership is a dialog's own node's matter.
    assert_eq!(a.is_in("inbound", None, "b1"), Ok(false));
    assert_eq!(b.is_in("inbound", None, "b1"), Ok(true));

    let listed = a.list("caller", Some("alice")).await.unwrap();
    let who: Vec<(Option<&str>, &str)> = listed
        .iter()
        .map(|m| (m.node.as_deref(), m.dialog.as_str()))
        .collect();
    assert_eq!(who, [(None, "a1"), (Some("b"), "b1")]);

    assert_eq!(b.forget("b1").await, 3);
    assert_eq!(a.size("caller", Some("alice")).await, Ok(1));
    assert_eq!(a.size("inbound", None).await, Ok(0));
    assert_eq!(a.calls().await, 2);
    assert!(a.call_ended("a1").await);
    assert_eq!(b.calls().await, 1);
    assert!(!a.is_degraded() && !b.is_degraded());
    assert_eq!(a.metrics().failures.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_heartbeating_stops_counting() {
    let server = redis();
    let url = redis_url(&server);
    let ttl = Duration::from_millis(900);
    let live = node(&url, "live", ttl).await;
    {
        let crashed = node(&url, "crashed", ttl).await;
        crashed.call_started("c1").await.unwrap();
        crashed.add("inbound", None, "c1").await.unwrap();
        // Dropped without a word, as a crashed process.
    }
    live.spawn_heartbeat();
    live.call_started("l1").await.unwrap();
    assert_eq!(live.calls().await, 2);
    assert_eq!(live.size("inbound", None).await, Ok(1));
    let started = Instant::now();
    while live.calls().await != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the crashed node's call still counts"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "gone only once its ttl ran out"
    );
    assert_eq!(live.size("inbound", None).await, Ok(0));
    // The live node heartbeats: its own call still counts for the other
    // nodes well past its ttl.
    tokio::time::sleep(ttl * 2).await;
    let observer = node(&url, "observer", ttl).await;
    assert_eq!(observer.calls().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_degrades_to_local_counts_then_resyncs() {
    let mut server = redis();
    let url = redis_url(&server);
    let ttl = Duration::from_secs(30);
    let (a, b) = (node(&url, "a", ttl).await, node(&url, "b", ttl).await);
    a.call_started("a1").await.unwrap();
    b.call_started("b1").await.unwrap();
    assert_eq!(a.calls().await, 2);

    server.kill();
    // Every operation answers, from this node's state, quickly.
    let started = Instant::now();
    assert_eq!(a.call_started("a2").await, Ok(true));
    assert_eq!(a.add("caller", Some("x"), "a2").await, Ok(true));
    assert_eq!(a.calls().await, 2, "this node's two calls");
    assert_eq!(a.size("caller", None).await, Ok(1));
    assert!(a.forget("a1").await > 0);
    assert_eq!(a.calls().await, 1);
    a.heartbeat().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(a.is_degraded());
    assert_eq!(a.metrics().degraded.get(), 1);
    assert!(a.metrics().failures.get() >= 1);
    assert_eq!(b.calls().await, 1, "b finds out too, and counts its own");
    assert!(b.is_degraded());

    // Back, empty (it persisted nothing): the heartbeats write both
    // nodes' memberships again.
    server.restart();
    let started = Instant::now();
    while a.is_degraded() || b.is_degraded() {
        assert!(started.elapsed() < Duration::from_secs(10), "no resync");
        a.heartbeat().await;
        b.heartbeat().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(a.metrics().degraded.get(), 0);
    assert!(a.metrics().resyncs.get() >= 1);
    assert_eq!(a.calls().await, 2, "a2 and b1, from both nodes again");
    assert_eq!(b.calls().await, 2);
    assert_eq!(b.size("caller", Some("x")).await, Ok(1));
    a.call_ended("a2").await;
    assert_eq!(b.calls().await, 1);
}
