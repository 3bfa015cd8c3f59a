//! Messages of one call are handled in the order they arrived, even when
//! the first has to wait; other calls do not wait behind it. Over real UDP
//! sockets, with a route that runs for a while on INVITE.

use common::{Quota, TestTenant, Ua, request};
use kemibox_proxy::ProxyConfig;
use kemibox_sandbox::Limits;

mod common;

/// INVITE: spins for a while (long enough to yield many times), then 486;
/// anything else: 200 at once.
const SLOW_INVITE: &str = r#"
function ksr_request_route()
  if KSR.pv.get("$rm") == "INVITE" then
    local x = 0
    for i = 1, 20000000 do x = x + i end
    KSR.sl.sl_send_reply(486, "Busy Here")
    return
  end
  KSR.sl.sl_send_reply(200, "OK")
end
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_message_holds_up_its_own_call_in_order_and_no_other() {
    let tenant = TestTenant {
        id: "slow",
        script: SLOW_INVITE,
        listen: &["udp:127.0.0.1:0"],
        domains: &[],
    };
    let quota = Quota {
        limits: Some(Limits {
            fuel: u64::MAX / 2,
            deadline_ms: 10_000,
            ..Limits::default()
        }),
        ..Quota::default()
    };
    let (addrs, _) = common::start_tenants_quotas(
        &[(&tenant, quota)],
        &["udp:127.0.0.1:0"],
        ProxyConfig::default(),
    )
    .await;
    let proxy = addrs[0].1;
    let ua = Ua::new().await;
    ua.send(
        &request("INVITE", "sip:x@h", ua.addr, "i1", "same", 1),
        proxy,
    )
    .await;
    // Behind the INVITE: the same call, then another call.
    ua.send(
        &request("OPTIONS", "sip:x@h", ua.addr, "o1", "same", 2),
        proxy,
    )
    .await;
    ua.send(
        &request("OPTIONS", "sip:x@h", ua.addr, "o2", "other", 1),
        proxy,
    )
    .await;
    let mut order = Vec::new();
    while order.len() < 3 {
        let (msg, _) = ua
            .recv_within(10.0)
            .await
            .unwrap_or_else(|| panic!("only {order:?} answered"));
        let status = msg.lines().next().unwrap_or("").to_string();
        let call = msg
            .lines()
            .find_map(|l| l.strip_prefix("Call-ID: "))
            .unwrap_or("")
            .to_string();
        order.push(format!("{call} {status}"));
    }
    assert_eq!(
        order,
        [
            "other@test SIP/2.0 200 OK",
            "same@test SIP/2.0 486 Busy Here",
            "same@test SIP/2.0 200 OK",
        ]
    );
}
