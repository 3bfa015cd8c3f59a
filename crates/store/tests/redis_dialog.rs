//! `RedisDialogs` against a private redis-server: memberships counted per
//! node and summed over the other live nodes, a node's memberships gone
//! once it stops heartbeating, tenants apart, and dialog records saved,
//! listed and deleted per tenant and node.

#[allow(dead_code, reason = "this test does not pause the server")]
mod common;

use std::time::Duration;

use common::servers::{redis, redis_url as url};
use kemibox_store::{DialogBackup, Membership, RedisDialogs};

fn member(profile: &str, value: Option<&str>, dialog: &str) -> Membership {
    Membership {
        profile: profile.into(),
        value: value.map(Into::into),
        dialog: dialog.into(),
    }
}

const TTL: Duration = Duration::from_secs(30);

#[tokio::test]
async fn sizes_sum_the_other_live_nodes() {
    let server = redis();
    let r = RedisDialogs::connect(&url(&server)).await.unwrap();
    let a = [
        member("caller", Some("alice"), "a1"),
        member("caller", Some("bob"), "a2"),
        member("inbound", None, "a1"),
    ];
    assert_eq!(r.add_memberships("t", "A", TTL, &a).await.unwrap(), 3);
    assert_eq!(
        r.add_memberships("t", "A", TTL, &a[..1]).await.unwrap(),
        0,
        "a membership is there once"
    );
    let b = [member("caller", Some("alice"), "b1")];
    assert_eq!(r.add_memberships("t", "B", TTL, &b).await.unwrap(), 1);

    // Seen from B: A's; seen from C (no memberships of its own): both.
    assert_eq!(r.others_size("t", "B", "caller", None).await.unwrap(), 2);
    assert_eq!(
        r.others_size("t", "B", "caller", Some("alice"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        r.others_size("t", "C", "caller", Some("alice"))
            .await
            .unwrap(),
        2
    );
    assert_eq!(r.others_size("t", "C", "inbound", None).await.unwrap(), 1);
    assert_eq!(
        r.others_size("other", "C", "caller", None).await.unwrap(),
        0,
        "tenants apart"
    );
    let listed = r
        .others_members("t", "C", "caller", Some("alice"))
        .await
        .unwrap();
    let who: Vec<(&str, &str)> = listed
        .iter()
        .map(|m| (m.node.as_str(), m.membership.dialog.as_str()))
        .collect();
    assert_eq!(who, [("A", "a1"), ("B", "b1")]);

    assert_eq!(
        r.remove_memberships("t", "A", TTL, &a[..2]).await.unwrap(),
        2
    );
    assert_eq!(
        r.remove_memberships("t", "A", TTL, &a[..2]).await.unwrap(),
        0
    );
    assert_eq!(r.others_size("t", "C", "caller", None).await.unwrap(), 1);
    assert_eq!(r.heartbeat("t", "A", TTL).await.unwrap(), 1);

    r.replace_memberships("t", "A", TTL, &[member("caller", Some("x"), "a9")])
        .await
        .unwrap();
    assert_eq!(r.others_size("t", "C", "inbound", None).await.unwrap(), 0);
    assert_eq!(r.others_size("t", "C", "caller", None).await.unwrap(), 2);
}

#[tokio::test]
async fn a_node_that_stops_heartbeating_stops_counting() {
    let server = redis();
    let r = RedisDialogs::connect(&url(&server)).await.unwrap();
    let short = Duration::from_millis(800);
    let m = [member("p", None, "d1")];
    r.add_memberships("t", "gone", short, &m).await.unwrap();
    r.add_memberships("t", "stays", short, &[member("p", None, "d2")])
        .await
        .unwrap();
    assert_eq!(r.others_size("t", "x", "p", None).await.unwrap(), 2);
    // "stays" heartbeats, "gone" does not.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(r.heartbeat("t", "stays", short).await.unwrap(), 1);
    }
    assert_eq!(r.others_size("t", "x", "p", None).await.unwrap(), 1);
    assert_eq!(
        r.heartbeat("t", "gone", short).await.unwrap(),
        0,
        "Redis dropped the dead node's memberships: it must write them again"
    );
}

#[tokio::test]
async fn dialog_records_are_kept_per_tenant_and_node() {
    let server = redis();
    let r = RedisDialogs::connect(&url(&server)).await.unwrap();
    r.save("t", "A", "d2", r#"{"state":"confirmed"}"#)
        .await
        .unwrap();
    r.save("t", "A", "d1", r#"{"state":"early"}"#)
        .await
        .unwrap();
    r.save("t", "A", "d1", r#"{"state":"confirmed"}"#)
        .await
        .unwrap();
    r.save("t", "B", "d3", "{}").await.unwrap();
    r.save("u", "A", "d4", "{}").await.unwrap();
    let all = r.load_all("t", "A").await.unwrap();
    assert_eq!(
        all,
        [
            ("d1".to_string(), r#"{"state":"confirmed"}"#.to_string()),
            ("d2".to_string(), r#"{"state":"confirmed"}"#.to_string()),
        ]
    );
    assert!(r.delete("t", "A", "d1").await.unwrap());
    assert!(!r.delete("t", "A", "d1").await.unwrap());
    assert_eq!(r.load_all("t", "A").await.unwrap().len(), 1);
    assert_eq!(r.load_all("t", "C").await.unwrap(), []);

    // Many records come back through several HSCAN rounds.
    for i in 0..1200 {
        r.save("big", "A", &format!("d{i}"), "{}").await.unwrap();
    }
    assert_eq!(r.load_all("big", "A").await.unwrap().len(), 1200);
}
