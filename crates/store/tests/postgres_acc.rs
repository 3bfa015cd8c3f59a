//! Accounting records in a private PostgreSQL server: tables and extra
//! columns created on first use, rows scoped by tenant, and an outage
//! (the server killed, then started again) that loses no record.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Server;
use common::servers::{postgres, postgres_url as url};
use kemibox_metrics::AccMetrics;
use kemibox_store::{AccRecord, AccWriter, PostgresAcc};

/// A plain client, to read the tables behind the writer's back.
async fn raw(server: &Server) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&url(server), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

fn record(tenant: &str, table: &str, callid: &str, code: &str) -> AccRecord {
    AccRecord {
        tenant: tenant.into(),
        table: table.into(),
        method: "INVITE".into(),
        from_tag: format!("from-{callid}"),
        to_tag: format!("to-{callid}"),
        callid: callid.into(),
        sip_code: code.into(),
        sip_reason: if code == "200" { "OK" } else { "Busy Here" }.into(),
        time: 1_700_000_000,
        extra: vec![("src_ip".into(), Some("192.0.2.7".into()))],
    }
}

/// `(tenant, callid, sip_code, src_ip, time as text)` of `table`'s rows.
async fn rows(
    server: &Server,
    table: &str,
) -> Vec<(String, String, String, Option<String>, String)> {
    raw(server)
        .await
        .query(
            &format!(
                "SELECT tenant, callid, sip_code, src_ip, to_char(time, 'YYYY-MM-DD HH24:MI:SS') \
                 FROM {table} ORDER BY id"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_an_outage_and_are_written_once_it_ends() {
    let mut server = postgres();
    let backend = PostgresAcc::connect(&url(&server)).await.unwrap();
    let metrics = Arc::new(AccMetrics::default());
    let writer = AccWriter::spawn(Box::new(backend), 100, metrics.clone());

    writer.submit(record("a", "acc", "c1", "200"));
    writer.submit(record("b", "missed_calls", "c2", "486"));
    assert_eq!(writer.flush(Duration::from_secs(20)).await, 0);
    assert_eq!(
        rows(&server, "acc").await,
        [(
            "a".into(),
            "c1".into(),
            "200".into(),
            Some("192.0.2.7".into()),
            "2023-11-14 22:13:20".into()
        )]
    );
    assert_eq!(rows(&server, "missed_calls").await[0].0, "b");

    // The database goes away: records wait and are retried.
    server.kill();
    writer.submit(record("a", "acc", "c3", "200"));
    writer.submit(record("a", "acc", "c4", "200"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(metrics.retried.get() >= 2, "retried while down");
    assert_eq!(metrics.queued.get(), 2, "still queued");
    assert_eq!(metrics.written.get(), 2);

    // Back on the same port: the queue drains, each record once.
    server.restart();
    assert_eq!(writer.flush(Duration::from_secs(30)).await, 0);
    let callids: Vec<String> = rows(&server, "acc")
        .await
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(callids, ["c1", "c3", "c4"]);
    assert_eq!(metrics.written.get(), 4);
    assert_eq!((metrics.dropped.get(), metrics.failed.get()), (0, 0));
}

#[tokio::test]
async fn a_second_node_adds_its_extra_columns_to_the_shared_table() {
    let server = postgres();
    let metrics = Arc::new(AccMetrics::default());
    let a = AccWriter::spawn(
        Box::new(PostgresAcc::connect(&url(&server)).await.unwrap()),
        10,
        metrics.clone(),
    );
    let b = AccWriter::spawn(
        Box::new(PostgresAcc::connect(&url(&server)).await.unwrap()),
        10,
        metrics.clone(),
    );
    a.submit(record("a", "acc", "c1", "200"));
    assert_eq!(a.flush(Duration::from_secs(20)).await, 0);
    let mut other = record("b", "acc", "c2", "200");
    other.extra = vec![("dst_user".into(), Some("bob".into()))];
    b.submit(other);
    assert_eq!(b.flush(Duration::from_secs(20)).await, 0);
    let found: Vec<(String, Option<String>, Option<String>)> = raw(&server)
        .await
        .query("SELECT tenant, src_ip, dst_user FROM acc ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        found,
        [
            ("a".into(), Some("192.0.2.7".into()), None),
            ("b".into(), None, Some("bob".into()))
        ]
    );
    assert_eq!(metrics.written.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_database_times_out_and_its_records_wait() {
    let server = postgres();
    let metrics = Arc::new(AccMetrics::default());
    let writer = AccWriter::spawn(
        Box::new(PostgresAcc::connect(&url(&server)).await.unwrap()),
        10,
        metrics.clone(),
    );
    server.pause();
    writer.submit(record("a", "acc", "c1", "200"));
    // The write cannot finish while the server is stopped; the writer
    // gives the attempt up after its timeout and keeps the record.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(metrics.retried.get() >= 1);
    assert_eq!(metrics.written.get(), 0);
    server.resume();
    assert_eq!(writer.flush(Duration::from_secs(30)).await, 0);
    assert_eq!(rows(&server, "acc").await.len(), 1);
    assert_eq!(metrics.written.get(), 1);
}
