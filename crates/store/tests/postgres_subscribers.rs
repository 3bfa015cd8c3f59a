//! `PostgresSubscribers` against a private PostgreSQL server (Debian's
//! postgresql package, installed by scripts/setup.sh).

mod common;

use std::time::{Duration, Instant};

use common::Server;
use common::servers::{postgres, postgres_url as url};
use kemibox_store::{
    PostgresSubscribers, StoreError, Subscriber, SubscriberStore, ha1_md5, ha1_sha256,
};

/// A plain client, to look at the table behind the store's back.
async fn raw(server: &Server) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&url(server), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

fn unavailable(result: Result<impl std::fmt::Debug, StoreError>) -> String {
    match result {
        Err(StoreError::Unavailable { backend, detail }) => {
            assert_eq!(backend, "postgresql");
            detail
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn subscribers_are_shared_between_nodes_and_scoped_by_tenant() {
    let server = postgres();
    let store = PostgresSubscribers::connect(&url(&server)).await.unwrap();
    store.add("a", "bob", "example.org", "pw-b").await.unwrap();
    store
        .add("a", "alice", "example.org", "pw-a")
        .await
        .unwrap();
    store.add("a", "zed", "example.com", "pw-z").await.unwrap();
    store
        .add("b", "alice", "example.org", "other")
        .await
        .unwrap();

    // A second node finds the table there and sees the same users.
    let other = PostgresSubscribers::connect(&url(&server)).await.unwrap();
    let listed: Vec<(String, String)> = other
        .list("a")
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.domain, s.username))
        .collect();
    let expected = [
        ("example.com", "zed"),
        ("example.org", "alice"),
        ("example.org", "bob"),
    ]
    .map(|(d, u)| (d.to_string(), u.to_string()));
    assert_eq!(listed, expected);
    assert_eq!(
        other.get("a", "alice", "example.org").await.unwrap(),
        Some(Subscriber {
            tenant: "a".into(),
            username: "alice".into(),
            domain: "example.org".into(),
            ha1_md5: ha1_md5("alice", "example.org", "pw-a"),
            ha1_sha256: ha1_sha256("alice", "example.org", "pw-a"),
        })
    );

    // Each tenant sees its own.
    let b_alice = store
        .get("b", "alice", "example.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b_alice.ha1_md5, ha1_md5("alice", "example.org", "other"));
    assert_eq!(store.get("c", "alice", "example.org").await.unwrap(), None);
    assert_eq!(store.list("c").await.unwrap(), []);
    assert_eq!(store.list("b").await.unwrap().len(), 1);

    // Adding again replaces.
    store.add("a", "alice", "example.org", "new").await.unwrap();
    let alice = other
        .get("a", "alice", "example.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(alice.ha1_md5, ha1_md5("alice", "example.org", "new"));
    assert_eq!(alice.ha1_sha256, ha1_sha256("alice", "example.org", "new"));
    assert_eq!(store.list("a").await.unwrap().len(), 3);

    assert!(store.remove("a", "alice", "example.org").await.unwrap());
    assert!(!other.remove("a", "alice", "example.org").await.unwrap());
    assert_eq!(other.get("a", "alice", "example.org").await.unwrap(), None);
    assert!(
        store
            .get("b", "alice", "example.org")
            .await
            .unwrap()
            .is_some()
    );

    assert!(matches!(
        store.add("a", "", "example.org", "pw").await,
        Err(StoreError::Invalid(_))
    ));
}

#[tokio::test]
async fn only_the_hashes_reach_the_database() {
    let server = postgres();
    let store = PostgresSubscribers::connect(&url(&server)).await.unwrap();
    store
        .add("a", "alice", "example.org", "Circle Of Life")
        .await
        .unwrap();
    let db = raw(&server).await;
    let columns: Vec<String> = db
        .query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_name = 'subscriber' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        columns,
        ["tenant", "username", "domain", "ha1", "ha1_sha256"]
    );
    let rows: Vec<String> = db
        .query("SELECT s::text FROM subscriber s", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].contains("Circle Of Life"), "{}", rows[0]);
    assert!(rows[0].contains(&ha1_md5("alice", "example.org", "Circle Of Life")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_is_unavailable_until_it_comes_back() {
    let mut server = postgres();
    let store = PostgresSubscribers::connect(&url(&server)).await.unwrap();
    store.add("a", "alice", "example.org", "pw").await.unwrap();

    server.kill();
    for _ in 0..3 {
        let started = Instant::now();
        let detail = unavailable(store.get("a", "alice", "example.org").await);
        let took = started.elapsed();
        eprintln!("down: failed in {took:?}: {detail}");
        assert!(took < Duration::from_millis(2500), "took {took:?}");
        assert!(detail.contains(&format!("127.0.0.1:{}", server.port())));
    }

    // Let reconnection attempts made in the background fail meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Back on the same port: the same store reconnects on its next call.
    server.restart();
    let started = Instant::now();
    let alice = store.get("a", "alice", "example.org").await.unwrap();
    eprintln!("back: first call answered in {:?}", started.elapsed());
    assert_eq!(
        alice.unwrap().ha1_md5,
        ha1_md5("alice", "example.org", "pw")
    );
    store.add("a", "bob", "example.org", "pw").await.unwrap();
    assert_eq!(store.list("a").await.unwrap().len(), 2);

    // Restarted while the store was idle: its next call goes through.
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    let started = Instant::now();
    assert_eq!(store.list("a").await.unwrap().len(), 2);
    eprintln!(
        "restarted while idle: first call answered in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_database_that_hangs_times_out() {
    let server = postgres();
    let store = PostgresSubscribers::connect(&url(&server)).await.unwrap();
    store.add("a", "alice", "example.org", "pw").await.unwrap();

    server.pause();
    for _ in 0..2 {
        let started = Instant::now();
        let detail = unavailable(store.list("a").await);
        let took = started.elapsed();
        eprintln!("hung: failed in {took:?}: {detail}");
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_millis(3500),
            "took {took:?}"
        );
    }

    server.resume();
    let started = Instant::now();
    assert_eq!(store.list("a").await.unwrap().len(), 1);
    eprintln!("resumed: first call answered in {:?}", started.elapsed());
}

#[tokio::test]
async fn connect_tells_a_bad_url_from_an_unreachable_database() {
    assert!(matches!(
        PostgresSubscribers::connect("postgresql://host:notaport/db").await,
        Err(StoreError::Invalid(_))
    ));
    // Nothing listens on port 1.
    let started = Instant::now();
    let detail = unavailable(
        PostgresSubscribers::connect("postgresql://kemi:s3cret@127.0.0.1:1/kemibox")
            .await
            .map(drop),
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(detail.contains("127.0.0.1:1/kemibox"), "{detail}");
    assert!(!detail.contains("s3cret"), "{detail}");
}

/// The permissions address table beside the subscribers: rows shared by
/// two nodes, scoped by tenant, replaced and removed as in SQLite.
#[tokio::test]
async fn address_rows_are_shared_between_nodes_and_scoped_by_tenant() {
    use kemibox_store::{AddressRow, AddressStore};
    let row = |group: u32, ip: &str, mask: u8, port: u16, tag: Option<&str>| AddressRow {
        group,
        ip: ip.into(),
        mask,
        port,
        tag: tag.map(Into::into),
    };
    let server = postgres();
    let a = PostgresSubscribers::connect(&url(&server)).await.unwrap();
    a.add_address("t", &row(2, "10.0.0.0", 8, 5060, None))
        .await
        .unwrap();
    a.add_address("t", &row(1, "192.0.2.7", 32, 0, Some("pbx")))
        .await
        .unwrap();
    a.add_address("t", &row(1, "192.0.2.7", 32, 0, Some("gw")))
        .await
        .unwrap();
    a.add_address("u", &row(4_000_000_000, "2001:db8::", 32, 65535, None))
        .await
        .unwrap();
    let b = PostgresSubscribers::connect(&url(&server)).await.unwrap();
    assert_eq!(
        b.addresses("t").await.unwrap(),
        vec![
            row(1, "192.0.2.7", 32, 0, Some("gw")),
            row(2, "10.0.0.0", 8, 5060, None)
        ]
    );
    assert_eq!(
        b.addresses("u").await.unwrap(),
        vec![row(4_000_000_000, "2001:db8::", 32, 65535, None)]
    );
    assert_eq!(
        b.remove_address("t", 2, "10.0.0.0", 8, Some(5061))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        b.remove_address("u", 1, "192.0.2.7", 32, None)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        b.remove_address("t", 2, "10.0.0.0", 8, None).await.unwrap(),
        1
    );
    assert_eq!(a.addresses("t").await.unwrap().len(), 1);
}
