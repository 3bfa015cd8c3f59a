//! The dispatcher table in PostgreSQL (beside the subscribers) against a
//! private server: rows shared by two nodes, per tenant, in the order
//! added; created when missing.

#[allow(dead_code, reason = "this test does not pause the server")]
mod common;

use common::servers::{postgres, postgres_url as url};
use kemibox_store::{DispatcherRow, DispatcherStore, PostgresSubscribers};

fn row(setid: i32, destination: &str, flags: i32, priority: i32, attrs: &str) -> DispatcherRow {
    DispatcherRow {
        id: 0,
        setid,
        destination: destination.into(),
        flags,
        priority,
        attrs: attrs.into(),
        description: format!("set {setid}"),
    }
}

#[tokio::test]
async fn destinations_are_shared_between_nodes_and_scoped_by_tenant() {
    let server = postgres();
    let a = PostgresSubscribers::connect(&url(&server)).await.unwrap();
    let first = a
        .add_destination(
            "t",
            &row(2, "sip:10.0.0.2:5060", 8, 5, "weight=50;duid=gw2"),
        )
        .await
        .unwrap();
    let second = a
        .add_destination("t", &row(1, "sip:10.0.0.1:5060", 0, 0, ""))
        .await
        .unwrap();
    assert!(second > first, "ids in the order added");
    a.add_destination("u", &row(1, "sip:10.9.9.9", 0, 0, ""))
        .await
        .unwrap();

    // Another node reads the same rows, each tenant its own.
    let b = PostgresSubscribers::connect(&url(&server)).await.unwrap();
    let rows = b.destinations("t").await.unwrap();
    assert_eq!(
        rows,
        vec![
            DispatcherRow {
                id: first,
                ..row(2, "sip:10.0.0.2:5060", 8, 5, "weight=50;duid=gw2")
            },
            DispatcherRow {
                id: second,
                ..row(1, "sip:10.0.0.1:5060", 0, 0, "")
            },
        ]
    );
    assert_eq!(b.destinations("u").await.unwrap().len(), 1);
    assert!(b.destinations("nobody").await.unwrap().is_empty());

    assert_eq!(
        b.remove_destination("u", 2, "sip:10.0.0.2:5060")
            .await
            .unwrap(),
        0,
        "tenant u cannot remove tenant t's row"
    );
    assert_eq!(
        b.remove_destination("t", 2, "sip:10.0.0.2:5060")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        a.destinations("t").await.unwrap(),
        vec![DispatcherRow {
            id: second,
            ..row(1, "sip:10.0.0.1:5060", 0, 0, "")
        }]
    );
}
