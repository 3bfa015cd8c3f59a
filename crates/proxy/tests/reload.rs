//! A script reload while calls are in flight: a transaction's later
//! routes (here its failure route) run on the script version its request
//! route ran on; requests after the reload run the new version.

use kemibox_proxy::ProxyConfig;
use kemibox_sandbox::TenantSpec;

use common::{Ua, request, respond};

mod common;

fn script(version: u32, callee: std::net::SocketAddr) -> String {
    format!(
        r#"
function ksr_request_route()
    KSR.pv.sets("$du", "sip:{callee}")
    KSR.tm.t_on_failure("failed")
    KSR.tm.t_relay()
end
function failed()
    KSR.tm.t_reply(480, "Version {version}")
end
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_finishes_on_the_version_that_started_it() {
    let (uac, callee) = (Ua::new().await, Ua::new().await);
    let (addrs, _stop, _serving, pool) = common::start_pool(
        &script(1, callee.addr),
        &["udp:127.0.0.1:0"],
        ProxyConfig::default(),
    )
    .await;
    let proxy = addrs[0].1;

    uac.send(
        &request("INVITE", "sip:bob@example.com", uac.addr, "t1", "before", 1),
        proxy,
    )
    .await;
    let (first, from) = callee.expect("INVITE ").await;
    assert!(first.contains("Call-ID: before@test"), "{first}");

    let v2 = TenantSpec {
        source: script(2, callee.addr),
        ..pool.tenant().spec.clone()
    };
    assert_eq!(pool.reload(v2).await.unwrap(), 2);

    uac.send(
        &request("INVITE", "sip:bob@example.com", uac.addr, "t2", "after", 1),
        proxy,
    )
    .await;
    let (second, _) = callee.expect("INVITE ").await;
    assert!(second.contains("Call-ID: after@test"), "{second}");

    // Both callees refuse; each caller hears its own version's failure route.
    callee
        .send(&respond(&first, 486, "Busy Here", "c1"), from)
        .await;
    let (reply, _) = uac.expect("SIP/2.0 480 ").await;
    assert!(reply.starts_with("SIP/2.0 480 Version 1"), "{reply}");
    assert!(reply.contains("Call-ID: before@test"), "{reply}");

    callee
        .send(&respond(&second, 486, "Busy Here", "c2"), from)
        .await;
    let (reply, _) = uac.expect("SIP/2.0 480 ").await;
    assert!(reply.starts_with("SIP/2.0 480 Version 2"), "{reply}");
    assert!(reply.contains("Call-ID: after@test"), "{reply}");
}
