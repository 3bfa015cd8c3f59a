//! `PostgresHtable` (htable `dbtable` rows) against a private PostgreSQL
//! server: rows scoped by tenant and table, upserts, deletes and clears
//! in one transaction, two nodes on one database, and an outage.

mod common;

use std::time::{Duration, Instant};

use common::servers::{postgres, postgres_url as url};
use kemibox_store::{
    HtableChanges, HtableRow, HtableStore, KEY_PLAIN, PostgresHtable, StoreError, VALUE_INT,
    VALUE_STR,
};

fn row(key: &str, value: &str, value_type: i32, expires: u64) -> HtableRow {
    HtableRow {
        key_name: key.into(),
        key_type: KEY_PLAIN,
        value_type,
        key_value: value.into(),
        expires,
    }
}

fn upserts(rows: Vec<HtableRow>) -> HtableChanges {
    HtableChanges {
        upserts: rows,
        ..HtableChanges::default()
    }
}

#[tokio::test]
async fn rows_are_scoped_replaced_and_shared_between_nodes() {
    let server = postgres();
    let a = PostgresHtable::connect(&url(&server)).await.unwrap();
    let b = PostgresHtable::connect(&url(&server)).await.unwrap();
    let two = upserts(vec![
        row("10.0.0.1", "1", VALUE_INT, 0),
        row("10.0.0.2", "x", VALUE_STR, 99),
    ]);
    a.write("t1", "ipban", &two).await.unwrap();
    a.write("t2", "ipban", &two).await.unwrap();
    a.write(
        "t1",
        "ipban",
        &HtableChanges {
            clear: false,
            upserts: vec![row("10.0.0.1", "7", VALUE_INT, 0)],
            deletes: vec!["10.0.0.2".into()],
        },
    )
    .await
    .unwrap();
    // The other node reads what this one wrote.
    assert_eq!(
        b.load("t1", "ipban").await.unwrap(),
        vec![row("10.0.0.1", "7", VALUE_INT, 0)]
    );
    assert_eq!(
        b.load("t2", "ipban").await.unwrap(),
        two.upserts,
        "in the order written"
    );
    assert!(b.load("t1", "other").await.unwrap().is_empty());

    // A clear and new rows: all or nothing, in one write.
    b.write(
        "t2",
        "ipban",
        &HtableChanges {
            clear: true,
            upserts: vec![row("k", "v", VALUE_STR, 5)],
            deletes: vec![],
        },
    )
    .await
    .unwrap();
    assert_eq!(
        a.load("t2", "ipban").await.unwrap(),
        vec![row("k", "v", VALUE_STR, 5)]
    );
    assert_eq!(
        a.load("t1", "ipban").await.unwrap().len(),
        1,
        "t1 untouched"
    );
}

#[tokio::test]
async fn a_hung_or_lost_database_is_unavailable_until_it_is_back() {
    let mut server = postgres();
    let store = PostgresHtable::connect(&url(&server)).await.unwrap();
    store
        .write("t", "h", &upserts(vec![row("a", "1", VALUE_INT, 0)]))
        .await
        .unwrap();
    // A database that hangs: the call gives up within its bound.
    server.pause();
    let started = Instant::now();
    assert!(matches!(
        store.load("t", "h").await,
        Err(StoreError::Unavailable { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(8));
    server.resume();
    server.kill();
    match store.load("t", "h").await {
        Err(StoreError::Unavailable { backend, .. }) => assert_eq!(backend, "postgresql"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    let rows = loop {
        match store.load("t", "h").await {
            Ok(rows) => break rows,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("PostgreSQL did not come back: {e}"),
        }
    };
    assert_eq!(rows, vec![row("a", "1", VALUE_INT, 0)]);
}
