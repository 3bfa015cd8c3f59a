//! Per-tenant quotas over real UDP sockets: a tenant over its rate gets
//! the configured reply while another tenant is served, and a tenant's
//! `relay_to` keeps its requests from other destinations.

use std::net::SocketAddr;
use std::time::Duration;

use common::logs::logged;
use common::{Quota, TestTenant, Ua, request, respond};
use kemibox_proxy::{LimitedReply, ProxyConfig, RateLimit};

mod common;

/// Answers every request `200 <reason>`.
fn answering(reason: &str) -> String {
    format!("function ksr_request_route()\n  KSR.sl.sl_send_reply(200, \"{reason}\")\nend\n")
}

/// Send `n` OPTIONS from `ua` to `proxy` at once; the status lines of the
/// replies (waiting until none came for 1 s).
async fn burst(ua: &Ua, proxy: SocketAddr, n: usize, tag: &str) -> Vec<String> {
    for i in 0..n {
        let req = request(
            "OPTIONS",
            "sip:x@example.com",
            ua.addr,
            &format!("{tag}{i}"),
            &format!("{tag}{i}"),
            1,
        );
        ua.send(&req, proxy).await;
    }
    let mut replies = Vec::new();
    while let Some((msg, _)) = ua.recv_within(1.0).await {
        replies.push(msg);
    }
    replies
}

fn first_lines(replies: &[String], start: &str) -> Vec<String> {
    replies
        .iter()
        .filter(|r| r.starts_with(start))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_rate_gets_503_while_another_is_served() {
    common::logs::capture();
    let (a, b) = (answering("tenant A"), answering("tenant B"));
    let ta = TestTenant {
        id: "a",
        script: &a,
        listen: &["udp:127.0.0.1:0"],
        domains: &[],
    };
    let tb = TestTenant {
        id: "b",
        script: &b,
        listen: &["udp:127.0.0.2:0"],
        domains: &[],
    };
    // One token a second, so the refill while 20 requests are handled
    // cannot let a sixth one through on a slow machine.
    let limited = Quota {
        rate: Some(RateLimit {
            per_second: 1,
            burst: 5,
            reply: LimitedReply::default(),
        }),
        ..Quota::default()
    };
    let (addrs, stats) = common::start_tenants_quotas(
        &[(&ta, limited), (&tb, Quota::default())],
        &["udp:127.0.0.1:0", "udp:127.0.0.2:0"],
        ProxyConfig::default(),
    )
    .await;
    let (ua_a, ua_b) = (Ua::new().await, Ua::bind("127.0.0.2:0").await);
    let (got_a, got_b) = tokio::join!(
        burst(&ua_a, addrs[0].1, 20, "a"),
        burst(&ua_b, addrs[1].1, 20, "b")
    );
    assert_eq!(got_a.len(), 20, "{got_a:?}");
    assert_eq!(first_lines(&got_a, "SIP/2.0 200 tenant A").len(), 5);
    let refused = first_lines(&got_a, "SIP/2.0 503 Service Unavailable");
    assert_eq!(refused.len(), 15, "{got_a:?}");
    assert!(refused.iter().all(|r| r.contains("\r\nRetry-After: 1\r\n")));
    assert_eq!(first_lines(&got_b, "SIP/2.0 200 tenant B").len(), 20);
    let counts: Vec<(String, u64)> = stats
        .iter()
        .map(|m| (m.tenant().to_string(), m.rate_limited.get()))
        .collect();
    assert_eq!(counts, [("a".to_string(), 15), ("b".to_string(), 0)]);
    // 15 refusals within a second: one warning, naming the tenant.
    let warned = logged(&["rate limited", "tenant=a"]);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(logged(&["rate limited", "tenant=b"]).is_empty());
    // A second later a token is back.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = burst(&ua_a, addrs[0].1, 1, "again").await;
    assert_eq!(
        first_lines(&again, "SIP/2.0 200 tenant A").len(),
        1,
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limited_reply_is_configurable() {
    let c = answering("tenant C");
    let tc = TestTenant {
        id: "c",
        script: &c,
        listen: &[],
        domains: &[],
    };
    let quota = Quota {
        rate: Some(RateLimit {
            per_second: 1,
            burst: 1,
            reply: LimitedReply {
                code: 486,
                reason: "Slow Down".into(),
                retry_after: None,
            },
        }),
        ..Quota::default()
    };
    let (addrs, stats) = common::start_tenants_quotas(
        &[(&tc, quota)],
        &["udp:127.0.0.1:0"],
        ProxyConfig::default(),
    )
    .await;
    let ua = Ua::new().await;
    let got = burst(&ua, addrs[0].1, 3, "c").await;
    assert_eq!(
        first_lines(&got, "SIP/2.0 200 tenant C").len(),
        1,
        "{got:?}"
    );
    let refused = first_lines(&got, "SIP/2.0 486 Slow Down");
    assert_eq!(refused.len(), 2, "{got:?}");
    assert!(refused.iter().all(|r| !r.contains("Retry-After")));
    assert_eq!(stats[0].rate_limited.get(), 2);
}

/// Relays to the R-URI; a refused relay is answered `403 Relay Refused`.
const RELAY: &str = r#"
function ksr_request_route()
    if KSR.tm.t_relay() < 0 then
        KSR.sl.sl_send_reply(403, "Relay Refused")
    end
end
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_to_lets_requests_reach_listed_destinations_only() {
    common::logs::capture();
    let (uas1, uas2, uac) = (Ua::new().await, Ua::new().await, Ua::new().await);
    let t = TestTenant {
        id: "r",
        script: RELAY,
        listen: &[],
        domains: &[],
    };
    let quota = Quota {
        rate: None,
        relay_to: Some(vec![format!("127.0.0.1:{}", uas1.addr.port())]),
        ..Quota::default()
    };
    let (addrs, _) =
        common::start_tenants_quotas(&[(&t, quota)], &["udp:127.0.0.1:0"], ProxyConfig::default())
            .await;
    let proxy = addrs[0].1;

    let allowed = request(
        "OPTIONS",
        &format!("sip:bob@{}", uas1.addr),
        uac.addr,
        "ok",
        "ok",
        1,
    );
    uac.send(&allowed, proxy).await;
    let (relayed, from) = uas1.expect("OPTIONS").await;
    uas1.send(&respond(&relayed, 200, "OK", "u1"), from).await;
    let (reply, _) = uac.expect("SIP/2.0 200 OK").await;
    assert!(reply.contains("branch=z9hG4bK-ok"), "{reply}");

    let refused = request(
        "OPTIONS",
        &format!("sip:bob@{}", uas2.addr),
        uac.addr,
        "no",
        "no",
        1,
    );
    uac.send(&refused, proxy).await;
    let (reply, _) = uac.expect("SIP/2.0 403 Relay Refused").await;
    assert!(reply.contains("branch=z9hG4bK-no"), "{reply}");
    assert!(uas2.recv_within(0.5).await.is_none(), "UAS2 got a request");
    let warned = logged(&["t_relay refused", "tenant=r", &uas2.addr.to_string()]);
    assert_eq!(warned.len(), 1, "{warned:?}");
}

/// The proxy checks each branch as well: of two forked branches, only
/// the allowed one is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_branch_is_not_sent_beside_an_allowed_one() {
    common::logs::capture();
    let (uas1, uas2, uac) = (Ua::new().await, Ua::new().await, Ua::new().await);
    let script = format!(
        "function ksr_request_route()\n  KSR.corex.append_branch_uri('sip:bob@{}')\n  if KSR.tm.t_relay() < 0 then KSR.sl.sl_send_reply(403, 'Relay Refused') end\nend\n",
        uas2.addr
    );
    let t = TestTenant {
        id: "f",
        script: &script,
        listen: &[],
        domains: &[],
    };
    let quota = Quota {
        rate: None,
        relay_to: Some(vec![uas1.addr.to_string()]),
        ..Quota::default()
    };
    let (addrs, _) =
        common::start_tenants_quotas(&[(&t, quota)], &["udp:127.0.0.1:0"], ProxyConfig::default())
            .await;
    let req = request(
        "OPTIONS",
        &format!("sip:bob@{}", uas1.addr),
        uac.addr,
        "f",
        "f",
        1,
    );
    uac.send(&req, addrs[0].1).await;
    let (relayed, from) = uas1.expect("OPTIONS").await;
    uas1.send(&respond(&relayed, 200, "OK", "u1"), from).await;
    uac.expect("SIP/2.0 200 OK").await;
    assert!(uas2.recv_within(0.5).await.is_none(), "UAS2 got a request");
    let warned = logged(&["not relaying", "tenant=f", &uas2.addr.to_string()]);
    assert_eq!(warned.len(), 1, "{warned:?}");
}
