//! A pool counts its invocations by route and outcome, and the instances
//! it creates.

mod common;

use common::*;
use kemibox_metrics::InvocationOutcome as O;
use kemibox_sandbox::{Limits, Pool};

const SCRIPT: &str = r#"
function ksr_request_route() return 1 end
function boom() error("boom") end
function spin() while true do end end
"#;

#[tokio::test]
async fn invocations_are_counted_by_route_and_outcome_and_instances_as_created() {
    let limits = Limits {
        fuel: 2_000_000,
        ..Limits::default()
    };
    let pool = Pool::new(&runtime(), spec_with("counted", SCRIPT, limits), 4)
        .await
        .unwrap();
    let m = pool.metrics().clone();
    assert_eq!(m.tenant(), "counted");
    assert_eq!(
        m.instances_created.get(),
        1,
        "the instance that validated the script (not kept)"
    );
    for function in ["ksr_request_route", "ksr_request_route", "boom", "missing"] {
        pool.invoke(function, None).await.unwrap();
    }
    assert_eq!(
        m.instances_created.get(),
        2,
        "one, reused while nothing trapped"
    );
    pool.invoke("spin", None).await.unwrap();
    pool.invoke("ksr_request_route", None).await.unwrap();
    assert_eq!(m.instances_created.get(), 3, "a new one after the trap");

    let count = |route: &str, outcome: O| m.route(route).map_or(0, |r| r.invocations(outcome));
    assert_eq!(count("ksr_request_route", O::Ok), 3);
    assert_eq!(count("ksr_request_route", O::LuaError), 0);
    assert_eq!(count("boom", O::LuaError), 1);
    assert_eq!(count("missing", O::NotFound), 1);
    assert_eq!(count("spin", O::OutOfFuel), 1);
    assert_eq!(m.fuel_observations(), 6);

    pool.reload(spec("counted", SCRIPT)).await.unwrap();
    assert_eq!(m.instances_created.get(), 4, "the reload's validation");
    assert!(
        std::sync::Arc::ptr_eq(&m, pool.metrics()),
        "kept across reloads"
    );
}

#[tokio::test]
async fn a_tenant_that_keeps_trapping_is_throttled_by_its_recreation_budget() {
    let limits = Limits {
        fuel: 1_000_000,
        ..Limits::default()
    };
    let mut s = spec_with("trapping", SCRIPT, limits);
    // 2 per second, 2 at most at once.
    s.recreations_per_second = 2;
    let pool = Pool::new(&runtime(), s, 4).await.unwrap();
    let m = pool.metrics().clone();
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        outcomes.push(pool.invoke("spin", None).await.unwrap().outcome);
    }
    use kemibox_sandbox::Outcome;
    assert_eq!(
        outcomes,
        [
            Outcome::OutOfFuel, // the first instance
            Outcome::OutOfFuel, // re-created: budget 2 -> 1
            Outcome::OutOfFuel, // re-created: budget 1 -> 0
            Outcome::Throttled,
            Outcome::Throttled,
        ]
    );
    // The validation, the first instance, two re-created.
    assert_eq!(m.instances_created.get(), 4);
    let count = |outcome: O| m.route("spin").map_or(0, |r| r.invocations(outcome));
    assert_eq!((count(O::OutOfFuel), count(O::Throttled)), (3, 2));
    // The budget refills at 2/s: a working route runs again.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(
        pool.invoke("ksr_request_route", None)
            .await
            .unwrap()
            .outcome,
        Outcome::Ok { ret: 1 }
    );
}

/// A pool runs at most its `max_instances` invocations at once: the others
/// wait for an instance (they are not refused), so a tenant flooding its
/// own routes makes no more instances, and takes no more memory, than
/// that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_instances_invocations_run_at_once_and_the_others_wait() {
    // Each call is long enough (tens of millions of fuel) to yield its
    // thread many times, so the eight overlap.
    let script =
        "function ksr_request_route() local x = 0 for i = 1, 3000000 do x = x + i end return 1 end";
    let limits = Limits {
        fuel: 10_000_000_000,
        deadline_ms: 60_000,
        ..Limits::default()
    };
    let pool = std::sync::Arc::new(
        Pool::new(&runtime(), spec_with("capped", script, limits), 2)
            .await
            .unwrap(),
    );
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.invoke("ksr_request_route", None)
                    .await
                    .unwrap()
                    .outcome
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), kemibox_sandbox::Outcome::Ok { ret: 1 });
    }
    assert_eq!(
        pool.metrics().instances_created.get(),
        1 + 2,
        "the validating instance, then two shared by the eight calls"
    );
}
