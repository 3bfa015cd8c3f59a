//! `RedisHtables` against a private redis-server: the table rules applied
//! by the scripts, expiry by Redis itself, tenant scoping, and an outage.

mod common;

use std::time::{Duration, Instant};

use common::servers::{redis, redis_url as url};
use kemibox_store::{AddOutcome, HtableValue, RedisHtables, RedisTableRules, StoreError};

fn rules(max_items: usize, autoexpire: u64) -> RedisTableRules {
    RedisTableRules {
        max_items,
        autoexpire,
        updateexpire: true,
        initval: None,
    }
}

fn int(i: i32) -> Option<HtableValue> {
    Some(HtableValue::Int(i))
}

#[tokio::test]
async fn items_are_set_counted_capped_and_scoped() {
    let server = redis();
    let ht = RedisHtables::connect(&url(&server)).await.unwrap();
    let r = rules(2, 0);
    let s = |v: &str| HtableValue::Str(v.into());
    assert!(
        ht.set("a", "ipban", r, "k1", &HtableValue::Int(1), 0)
            .await
            .unwrap()
    );
    assert!(ht.set("a", "ipban", r, "k2", &s("x"), 0).await.unwrap());
    assert!(
        !ht.set("a", "ipban", r, "k3", &s("y"), 0).await.unwrap(),
        "full"
    );
    assert!(
        ht.set("a", "ipban", r, "k2", &s("z"), 0).await.unwrap(),
        "updates fit"
    );
    assert_eq!(ht.get("a", "ipban", "k1").await.unwrap(), int(1));
    assert_eq!(ht.get("a", "ipban", "k2").await.unwrap(), Some(s("z")));
    assert_eq!(ht.get("a", "ipban", "k3").await.unwrap(), None);
    assert_eq!(ht.len("a", "ipban").await.unwrap(), 2);
    assert!(ht.exists("a", "ipban", "k1").await.unwrap());
    // Another tenant, another table: nothing shared.
    assert_eq!(ht.get("b", "ipban", "k1").await.unwrap(), None);
    assert_eq!(ht.len("a", "other").await.unwrap(), 0);
    assert!(ht.set("b", "ipban", r, "k3", &s("b"), 0).await.unwrap());

    let items = ht.items("a", "ipban").await.unwrap();
    let names: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(names, ["k1", "k2"]);
    assert!(items.iter().all(|i| i.expires == 0));

    let names = ["k1".to_string(), "nope".to_string()];
    assert_eq!(ht.remove("a", "ipban", &names).await.unwrap(), 1);
    assert!(
        ht.set("a", "ipban", r, "k3", &s("y"), 0).await.unwrap(),
        "room again"
    );
    assert_eq!(ht.clear("a", "ipban").await.unwrap(), 2);
    assert_eq!(ht.len("a", "ipban").await.unwrap(), 0);
    assert_eq!(ht.len("b", "ipban").await.unwrap(), 1, "b's table stays");
}

#[tokio::test]
async fn increments_start_at_initval_wrap_and_refuse_strings() {
    let server = redis();
    let ht = RedisHtables::connect(&url(&server)).await.unwrap();
    let r = RedisTableRules {
        initval: Some(10),
        ..rules(3, 0)
    };
    assert_eq!(
        ht.add("t", "c", r, "n", 1).await.unwrap(),
        AddOutcome::Value(11)
    );
    assert_eq!(
        ht.add("t", "c", r, "n", -2).await.unwrap(),
        AddOutcome::Value(9)
    );
    ht.set("t", "c", r, "max", &HtableValue::Int(i32::MAX), 0)
        .await
        .unwrap();
    assert_eq!(
        ht.add("t", "c", r, "max", 1).await.unwrap(),
        AddOutcome::Value(i32::MIN)
    );
    ht.set("t", "c", r, "s", &HtableValue::Str("x".into()), 0)
        .await
        .unwrap();
    assert_eq!(
        ht.add("t", "c", r, "s", 1).await.unwrap(),
        AddOutcome::NotInteger
    );
    assert_eq!(
        ht.add("t", "c", r, "new", 1).await.unwrap(),
        AddOutcome::Full
    );
    assert_eq!(ht.get("t", "c", "n").await.unwrap(), int(9));
}

/// Items expire in Redis: autoexpire from the set, restarted by an update
/// only with updateexpire, an item's own expiry, and none without
/// autoexpire.
#[tokio::test]
async fn items_expire_in_redis() {
    let server = redis();
    let ht = RedisHtables::connect(&url(&server)).await.unwrap();
    let r = rules(10, 100);
    let one = HtableValue::Int(1);
    ht.set("t", "e", r, "auto", &one, 0).await.unwrap();
    assert!((99..=100).contains(&ht.expires_in("t", "e", "auto").await.unwrap()));
    ht.set("t", "e", r, "own", &one, 1).await.unwrap();
    assert_eq!(ht.expires_in("t", "e", "own").await.unwrap(), 1);
    ht.set_expire("t", "e", "auto", 0).await.unwrap();
    assert_eq!(ht.expires_in("t", "e", "auto").await.unwrap(), 0, "never");
    ht.set_expire("t", "e", "missing", 5).await.unwrap();
    assert!(!ht.exists("t", "e", "missing").await.unwrap());

    let kept = RedisTableRules {
        updateexpire: false,
        ..rules(10, 100)
    };
    ht.set("t", "k", kept, "a", &one, 2).await.unwrap();
    ht.set("t", "k", kept, "a", &HtableValue::Int(2), 0)
        .await
        .unwrap();
    assert!(
        ht.expires_in("t", "k", "a").await.unwrap() <= 2,
        "an update keeps the expiry"
    );
    let never = rules(10, 0);
    ht.set("t", "n", never, "a", &one, 1).await.unwrap();
    assert_eq!(ht.expires_in("t", "n", "a").await.unwrap(), 0);

    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(ht.get("t", "e", "own").await.unwrap(), None);
    assert_eq!(ht.get("t", "k", "a").await.unwrap(), None);
    assert_eq!(ht.get("t", "e", "auto").await.unwrap(), int(1));
    assert_eq!(ht.get("t", "n", "a").await.unwrap(), int(1));
    assert_eq!(
        ht.len("t", "e").await.unwrap(),
        1,
        "expired names leave the count"
    );
    let small = rules(1, 100);
    ht.set("t", "s", small, "a", &one, 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        ht.set("t", "s", small, "b", &one, 0).await.unwrap(),
        "an expired item leaves room"
    );
}

/// Redis hung or down: calls fail fast as Unavailable; back: they work
/// again.
#[tokio::test]
async fn an_outage_fails_fast_and_recovers() {
    let mut server = redis();
    let ht = RedisHtables::connect(&url(&server)).await.unwrap();
    let r = rules(10, 0);
    ht.set("t", "x", r, "a", &HtableValue::Int(1), 0)
        .await
        .unwrap();
    // A server that hangs: the call gives up within its bound.
    server.pause();
    let started = Instant::now();
    assert!(matches!(
        ht.get("t", "x", "a").await,
        Err(StoreError::Unavailable { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(3));
    server.resume();
    server.kill();
    let started = Instant::now();
    match ht.get("t", "x", "a").await {
        Err(StoreError::Unavailable { backend, .. }) => assert_eq!(backend, "redis"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(
        ht.add("t", "x", r, "a", 1).await,
        Err(StoreError::Unavailable { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(5));
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ht.set("t", "x", r, "b", &HtableValue::Int(2), 0).await {
            Ok(stored) => {
                assert!(stored);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("Redis did not come back: {e}"),
        }
    }
    assert_eq!(ht.get("t", "x", "b").await.unwrap(), int(2));
}
