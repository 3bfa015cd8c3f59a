//! Script replacement: a broken script never replaces a working one, and a
//! good one serves every invocation after the swap.

mod common;

use common::*;
use kemibox_sandbox::Outcome;

#[tokio::test]
async fn broken_reload_keeps_the_previous_version_serving() {
    let pool = pool("reload", "function ksr_request_route() return 1 end").await;
    assert_eq!(
        pool.invoke("ksr_request_route", None)
            .await
            .unwrap()
            .outcome,
        Outcome::Ok { ret: 1 }
    );

    for broken in [
        "function ksr_request_route( return 2 end", // syntax error
        "error('fails while loading')",             // runtime error at load
        "function other() return 2 end",            // no entry point
        "while true do end",                        // spins at top level
    ] {
        let failure = pool.reload(spec("reload", broken)).await.expect_err(broken);
        assert_eq!(failure.tenant, "reload");
        assert_eq!(
            pool.invoke("ksr_request_route", None)
                .await
                .unwrap()
                .outcome,
            Outcome::Ok { ret: 1 },
            "still the old version after refusing {broken:?}"
        );
    }

    pool.reload(spec("reload", "function ksr_request_route() return 2 end"))
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            pool.invoke("ksr_request_route", None)
                .await
                .unwrap()
                .outcome,
            Outcome::Ok { ret: 2 }
        );
    }
}

#[tokio::test]
async fn instances_of_an_old_version_are_not_reused() {
    let pool = pool("versions", "function ksr_request_route() return 1 end").await;
    let old = pool.checkout().await.unwrap();
    pool.reload(spec(
        "versions",
        "function ksr_request_route() return 2 end",
    ))
    .await
    .unwrap();
    pool.checkin(old);
    let mut fresh = pool.checkout().await.unwrap();
    assert_eq!(
        fresh.invoke("ksr_request_route", None).await.outcome,
        Outcome::Ok { ret: 2 }
    );
}

#[tokio::test]
async fn reloads_are_numbered_and_a_pinned_script_keeps_its_version() {
    let pool =
        std::sync::Arc::new(pool("pinned", "function ksr_request_route() return 1 end").await);
    let m = pool.metrics().clone();
    assert_eq!(pool.tenant().version, 1);
    assert_eq!(m.script_version.get(), 1);
    let pinned = pool.pin();

    let two = pool
        .reload(spec("pinned", "function ksr_request_route() return 2 end"))
        .await
        .unwrap();
    assert_eq!(two, 2);
    pool.reload(spec("pinned", "function ksr_request_route( return 3 end"))
        .await
        .expect_err("syntax error");
    assert_eq!(pool.tenant().version, 2, "a refused reload takes no number");
    assert_eq!(
        (
            m.script_version.get(),
            m.reloads.get(),
            m.reloads_refused.get()
        ),
        (2, 1, 1)
    );

    let ret = |inv: kemibox_sandbox::Invocation| inv.outcome;
    for _ in 0..3 {
        assert_eq!(
            ret(pool.invoke("ksr_request_route", None).await.unwrap()),
            Outcome::Ok { ret: 2 }
        );
        assert_eq!(
            ret(pinned.invoke("ksr_request_route", None).await.unwrap()),
            Outcome::Ok { ret: 1 }
        );
    }
    assert_eq!(pinned.tenant().version, 1);
    // Two validations (the refused one made none: it did not parse) and
    // one instance per version, reused: the old version's idle one was
    // kept for the pin.
    assert_eq!(m.instances_created.get(), 4);

    // Unpinned, the old version's idle instance goes at the next checkin.
    let old = std::sync::Arc::downgrade(pinned.tenant());
    drop(pinned);
    pool.invoke("ksr_request_route", None).await.unwrap();
    assert!(
        old.upgrade().is_none(),
        "version 1 and its instance are gone"
    );
}

#[tokio::test]
async fn idle_instances_are_trimmed_and_made_again_on_demand() {
    let pool = pool("trim", "function ksr_request_route() return 1 end").await;
    let m = pool.metrics().clone();
    pool.invoke("ksr_request_route", None).await.unwrap();
    assert_eq!(
        pool.trim(std::time::Duration::from_secs(60)),
        0,
        "just used"
    );
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(pool.trim(std::time::Duration::from_millis(10)), 1);
    let created = m.instances_created.get();
    assert_eq!(
        pool.invoke("ksr_request_route", None)
            .await
            .unwrap()
            .outcome,
        Outcome::Ok { ret: 1 }
    );
    assert_eq!(m.instances_created.get(), created + 1);
}
