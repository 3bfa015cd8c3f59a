//! `RedisLocation` against a private redis-server (Debian's redis-server
//! package, installed by scripts/setup.sh).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use common::servers::{redis, redis_url as url};
use kemibox_store::{Binding, LocationStore, RedisLocation, StoreError, unix_now};
use tokio::task::JoinSet;

/// A plain connection, to look at the keys behind the store's back.
async fn raw(server: &Server) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url(server))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A binding of `aor` at `contact`, live for `ttl` seconds from `now`.
fn binding(aor: &str, contact: &str, now: u64, ttl: u64) -> Binding {
    Binding {
        aor: aor.into(),
        contact: contact.into(),
        expires: now + ttl,
        q: None,
        call_id: format!("call-{contact}"),
        cseq: 1,
        path: vec!["<sip:edge.example.com;lr>".into()],
        received: Some("sip:198.51.100.7:5060;transport=udp".into()),
        socket: Some("udp:192.0.2.1:5060".into()),
        instance: None,
        reg_id: None,
        user_agent: Some("test".into()),
        updated: now,
    }
}

fn contacts(bindings: &[Binding]) -> Vec<&str> {
    bindings.iter().map(|b| b.contact.as_str()).collect()
}

fn unavailable(result: Result<impl std::fmt::Debug, StoreError>) -> String {
    match result {
        Err(StoreError::Unavailable { backend, detail }) => {
            assert_eq!(backend, "redis");
            detail
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

const ALICE: &str = "alice@example.com";

#[tokio::test]
async fn bindings_are_saved_replaced_and_removed() {
    let server = redis();
    let store = RedisLocation::connect(&url(&server)).await.unwrap();
    let now = unix_now();

    let mut low = binding(ALICE, "sip:alice@192.0.2.10", now, 3600);
    low.q = Some(500);
    let mut none = binding(ALICE, "sip:alice@192.0.2.11", now + 1, 3600);
    none.q = None;
    let mut high = binding(ALICE, "sip:alice@192.0.2.12", now, 60);
    high.q = Some(1000);
    let mut older = binding(ALICE, "sip:alice@192.0.2.13", now - 1, 3600);
    older.q = Some(500);
    for b in [&low, &none, &high, &older] {
        store.save("t", "location", b).await.unwrap();
    }
    // Highest q first, then the most recently saved; no q ranks as 0.
    let found = store.lookup("t", "location", ALICE, now).await.unwrap();
    assert_eq!(
        contacts(&found),
        [&high, &low, &older, &none].map(|b| b.contact.as_str())
    );
    assert_eq!(found[1], low);
    // Expired bindings are not found.
    let later = store
        .lookup("t", "location", ALICE, now + 120)
        .await
        .unwrap();
    assert_eq!(
        contacts(&later),
        [&low, &older, &none].map(|b| b.contact.as_str())
    );

    // Saving the same Contact again replaces it.
    let mut refreshed = low.clone();
    refreshed.cseq = 2;
    refreshed.expires = now + 7200;
    store.save("t", "location", &refreshed).await.unwrap();
    let found = store.lookup("t", "location", ALICE, now).await.unwrap();
    assert_eq!(found.len(), 4);
    assert_eq!(found[1], refreshed);

    // The key lives as long as its last binding.
    let mut db = raw(&server).await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("kemibox:loc:t:location:{ALICE}"))
        .query_async(&mut db)
        .await
        .unwrap();
    let left = (now + 7200) as i64 - unix_now() as i64;
    assert!(
        (left - 2..=left).contains(&ttl),
        "TTL {ttl}, expected {left}"
    );

    assert!(
        store
            .remove("t", "location", ALICE, &low.contact)
            .await
            .unwrap()
    );
    assert!(
        !store
            .remove("t", "location", ALICE, &low.contact)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .lookup("t", "location", ALICE, now)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(store.remove_aor("t", "location", ALICE).await.unwrap(), 3);
    assert_eq!(store.remove_aor("t", "location", ALICE).await.unwrap(), 0);
    assert_eq!(store.lookup("t", "location", ALICE, now).await.unwrap(), []);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut db)
        .await
        .unwrap();
    assert_eq!(keys, Vec::<String>::new());
}

#[tokio::test]
async fn an_instance_is_one_binding_whatever_its_contact() {
    let server = redis();
    let store = RedisLocation::connect(&url(&server)).await.unwrap();
    let now = unix_now();
    let mut phone = binding(ALICE, "sip:alice@192.0.2.10;ob", now, 600);
    phone.instance = Some("<urn:uuid:00000000-0000-1000-8000-000a95a0e128>".into());
    phone.reg_id = Some(1);
    store.save("t", "location", &phone).await.unwrap();

    // Another flow of the same instance is another binding (RFC 5626).
    let mut second_flow = phone.clone();
    second_flow.reg_id = Some(2);
    second_flow.contact = "sip:alice@192.0.2.20;ob".into();
    store.save("t", "location", &second_flow).await.unwrap();
    assert_eq!(
        store
            .lookup("t", "location", ALICE, now)
            .await
            .unwrap()
            .len(),
        2
    );

    // The same instance and reg-id from a new address replaces the first.
    let mut moved = phone.clone();
    moved.contact = "sip:alice@192.0.2.30;ob".into();
    store.save("t", "location", &moved).await.unwrap();
    let found = store.lookup("t", "location", ALICE, now).await.unwrap();
    let mut found = contacts(&found);
    found.sort();
    assert_eq!(
        found,
        ["sip:alice@192.0.2.20;ob", "sip:alice@192.0.2.30;ob"]
    );

    // Without an instance, the Contact decides.
    let mut plain = binding(ALICE, "sip:alice@192.0.2.30;ob", now, 600);
    plain.cseq = 9;
    store.save("t", "location", &plain).await.unwrap();
    let found = store.lookup("t", "location", ALICE, now).await.unwrap();
    assert_eq!(found.len(), 2);
    assert!(found.contains(&plain));
}

#[tokio::test]
async fn tenants_and_tables_are_apart() {
    let server = redis();
    let store = RedisLocation::connect(&url(&server)).await.unwrap();
    let now = unix_now();
    let a = binding(ALICE, "sip:alice@192.0.2.1", now, 600);
    let b = binding(ALICE, "sip:alice@192.0.2.2", now, 600);
    let other_table = binding(ALICE, "sip:alice@192.0.2.3", now, 600);
    let odd = binding("bob@example.com", "sip:bob@192.0.2.4", now, 600);
    store.save("a", "location", &a).await.unwrap();
    store.save("b", "location", &b).await.unwrap();
    store.save("a", "other", &other_table).await.unwrap();
    // Names that look like key syntax stay apart too.
    store.save("a:location", "x*", &odd).await.unwrap();

    assert_eq!(
        store.lookup("a", "location", ALICE, now).await.unwrap(),
        std::slice::from_ref(&a)
    );
    assert_eq!(
        store.lookup("b", "location", ALICE, now).await.unwrap(),
        std::slice::from_ref(&b)
    );
    assert_eq!(
        store.lookup("a", "other", ALICE, now).await.unwrap(),
        std::slice::from_ref(&other_table)
    );
    assert!(
        !store
            .remove("b", "location", ALICE, &a.contact)
            .await
            .unwrap()
    );

    let row =
        |t: &str, table: &str, b: &Binding| (t.to_string(), table.to_string(), b.contact.clone());
    assert_eq!(
        listed(&store, now, Some("a")).await,
        [row("a", "location", &a), row("a", "other", &other_table)]
    );
    assert_eq!(
        listed(&store, now, Some("a:location")).await,
        [row("a:location", "x*", &odd)]
    );
    assert_eq!(listed(&store, now, Some("c")).await, []);
    assert_eq!(
        listed(&store, now, None).await,
        [
            row("a", "location", &a),
            row("a", "other", &other_table),
            row("a:location", "x*", &odd),
            row("b", "location", &b),
        ]
    );
    // Expired bindings are not listed.
    assert_eq!(store.dump(None, now + 600).await.unwrap(), []);
}

/// What `dump` lists: tenant, table and Contact.
async fn listed(
    store: &RedisLocation,
    now: u64,
    tenant: Option<&str>,
) -> Vec<(String, String, String)> {
    store
        .dump(tenant, now)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.tenant, l.table, l.binding.contact))
        .collect()
}

#[tokio::test]
async fn expiry_removes_dead_bindings() {
    let server = redis();
    let store = RedisLocation::connect(&url(&server)).await.unwrap();
    let now = unix_now();
    let live = binding(ALICE, "sip:alice@192.0.2.1", now, 600);
    let dying = binding(ALICE, "sip:alice@192.0.2.2", now, 10);
    let bob = binding("bob@example.com", "sip:bob@192.0.2.3", now, 10);
    store.save("a", "location", &live).await.unwrap();
    store.save("a", "location", &dying).await.unwrap();
    store.save("b", "location", &bob).await.unwrap();

    assert_eq!(store.expire(now).await.unwrap(), 0);
    assert_eq!(store.expire(now + 10).await.unwrap(), 2);
    assert_eq!(store.expire(now + 10).await.unwrap(), 0);
    // What is left, expired or not.
    let left: Vec<String> = store
        .dump(None, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.binding.contact)
        .collect();
    assert_eq!(left, std::slice::from_ref(&live.contact));
    let mut db = raw(&server).await;
    let bob_key: bool = redis::cmd("EXISTS")
        .arg("kemibox:loc:b:location:bob@example.com")
        .query_async(&mut db)
        .await
        .unwrap();
    assert!(!bob_key, "an AOR without bindings has no key");

    // Redis drops an AOR whose last binding expired by itself.
    let short = binding("carol@example.com", "sip:carol@192.0.2.5", unix_now(), 1);
    store.save("a", "location", &short).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let exists: bool = redis::cmd("EXISTS")
            .arg("kemibox:loc:a:location:carol@example.com")
            .query_async(&mut db)
            .await
            .unwrap();
        if !exists {
            break;
        }
        assert!(Instant::now() < deadline, "the key of carol did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_registrations() {
    let server = redis();
    let one = RedisLocation::connect(&url(&server)).await.unwrap();
    let two = RedisLocation::connect(&url(&server)).await.unwrap();
    let now = unix_now();

    one.save(
        "t",
        "location",
        &binding(ALICE, "sip:alice@192.0.2.1", now, 600),
    )
    .await
    .unwrap();
    let found = two.lookup("t", "location", ALICE, now).await.unwrap();
    assert_eq!(contacts(&found), ["sip:alice@192.0.2.1"]);

    // Both nodes saving at once: every binding lands.
    let (one, two) = (Arc::new(one), Arc::new(two));
    let mut saves = JoinSet::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { one.clone() } else { two.clone() };
        let b = binding(ALICE, &format!("sip:alice@192.0.2.{}", 100 + i), now, 600);
        saves.spawn(async move { store.save("t", "location", &b).await });
    }
    for result in saves.join_all().await {
        result.unwrap();
    }
    assert_eq!(
        one.lookup("t", "location", ALICE, now).await.unwrap().len(),
        21
    );

    assert_eq!(two.remove_aor("t", "location", ALICE).await.unwrap(), 21);
    assert_eq!(one.lookup("t", "location", ALICE, now).await.unwrap(), []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_goes_away_is_unavailable_until_it_comes_back() {
    let mut server = redis();
    let store = RedisLocation::connect(&url(&server)).await.unwrap();
    let now = unix_now();
    let a = binding(ALICE, "sip:alice@192.0.2.1", now, 600);
    store.save("t", "location", &a).await.unwrap();

    server.kill();
    for _ in 0..3 {
        let started = Instant::now();
        let detail = unavailable(store.lookup("t", "location", ALICE, now).await);
        let took = started.elapsed();
        eprintln!("down: failed in {took:?}: {detail}");
        assert!(took < Duration::from_millis(1500), "took {took:?}");
        assert!(detail.contains(&format!("127.0.0.1:{}", server.port())));
    }
    unavailable(store.save("t", "location", &a).await);

    // Let reconnection attempts made in the background fail meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Back on the same port (empty: it persists nothing); the same store
    // reconnects on its next call.
    server.restart();
    let started = Instant::now();
    store.save("t", "location", &a).await.unwrap();
    eprintln!("back: first call answered in {:?}", started.elapsed());
    assert_eq!(
        store.lookup("t", "location", ALICE, now).await.unwrap(),
        std::slice::from_ref(&a)
    );

    // Restarted while the store was idle: its next call goes through.
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    let started = Instant::now();
    store.save("t", "location", &a).await.unwrap();
    eprintln!(
        "restarted while idle: first call answered in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_redis_that_hangs_times_out() {
    let server = redis();
    let store = RedisLocation::connect(&url(&server)).await.unwrap();
    let now = unix_now();
    let a = binding(ALICE, "sip:alice@192.0.2.1", now, 600);
    store.save("t", "location", &a).await.unwrap();

    server.pause();
    for _ in 0..2 {
        let started = Instant::now();
        let detail = unavailable(store.lookup("t", "location", ALICE, now).await);
        let took = started.elapsed();
        eprintln!("hung: failed in {took:?}: {detail}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(2000),
            "took {took:?}"
        );
    }

    server.resume();
    let started = Instant::now();
    assert_eq!(
        store.lookup("t", "location", ALICE, now).await.unwrap(),
        [a]
    );
    eprintln!("resumed: first call answered in {:?}", started.elapsed());
}

#[tokio::test]
async fn connect_tells_a_bad_url_from_an_unreachable_redis() {
    assert!(matches!(
        RedisLocation::connect("http://example.com").await.map(drop),
        Err(StoreError::Invalid(_))
    ));
    let started = Instant::now();
    let detail = unavailable(
        RedisLocation::connect("redis://:s3cret@127.0.0.1:1/")
            .await
            .map(drop),
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(detail.contains("127.0.0.1:1"), "{detail}");
    assert!(!detail.contains("s3cret"), "{detail}");
}
