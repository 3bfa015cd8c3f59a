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
