//! Several tenants in one proxy, over real UDP sockets: a request finds
//! its tenant by the socket it arrived on, else by its R-URI host; nobody's
//! requests get the configured reply; a transaction stays with the tenant
//! that created it; one tenant's failing script does not touch another.

use std::time::Duration;

use common::logs::logged;
use common::{Quota, TestTenant, Ua, request, respond};
use kemibox_proxy::ProxyConfig;
use kemibox_sandbox::Limits;

mod common;

/// Answers OPTIONS with `200 <reason>`.
fn answering(reason: &str) -> String {
    format!("function ksr_request_route()\n  KSR.sl.sl_send_reply(200, \"{reason}\")\nend\n")
}

/// The reason phrase of a response's status line.
fn reason(msg: &str) -> &str {
    let line = msg.lines().next().unwrap_or("");
    line.splitn(3, ' ').nth(2).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_socket_gets_the_answer_of_its_own_tenant() {
    let (a, b) = (answering("tenant A"), answering("tenant B"));
    let addrs = common::start_tenants(
        &[
            TestTenant {
                id: "a",
                script: &a,
                listen: &["udp:127.0.0.1:0"],
                domains: &[],
            },
            TestTenant {
                id: "b",
                script: &b,
                listen: &["udp:127.0.0.2:0"],
                domains: &["b.example"],
            },
        ],
        &["udp:127.0.0.1:0", "udp:127.0.0.2:0"],
        ProxyConfig::default(),
    )
    .await;
    let (sock_a, sock_b) = (addrs[0].1, addrs[1].1);
    assert_eq!(sock_b.ip().to_string(), "127.0.0.2");
    let uac = Ua::new().await;
    // The socket decides, even when the R-URI names the other tenant's domain.
    let opts = request("OPTIONS", "sip:x@b.example", uac.addr, "s1", "sock1", 1);
    uac.send(&opts, sock_a).await;
    let (reply, _) = uac.expect("SIP/2.0 200 ").await;
    assert_eq!(reason(&reply), "tenant A", "{reply}");
    let opts = request("OPTIONS", "sip:x@a.example", uac.addr, "s2", "sock2", 1);
    uac.send(&opts, sock_b).await;
    let (reply, _) = uac.expect("SIP/2.0 200 ").await;
    assert_eq!(reason(&reply), "tenant B", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_shared_socket_the_ruri_domain_picks_the_tenant_and_nobody_gets_the_configured_reply()
{
    common::logs::capture();
    let (a, b) = (answering("tenant A"), answering("tenant B"));
    let config = ProxyConfig {
        unmatched_reply: (404, "No Such Domain".into()),
        ..ProxyConfig::default()
    };
    let proxy = common::start_tenants(
        &[
            TestTenant {
                id: "a",
                script: &a,
                listen: &[],
                domains: &["a.example"],
            },
            TestTenant {
                id: "b",
                script: &b,
                listen: &[],
                domains: &["b.example", "*.b.example"],
            },
        ],
        &["udp:127.0.0.1:0"],
        config,
    )
    .await[0]
        .1;
    let uac = Ua::new().await;
    for (i, (ruri, status, expected)) in [
        ("sip:x@a.example", "SIP/2.0 200 ", "tenant A"),
        ("sip:x@A.EXAMPLE:5060", "SIP/2.0 200 ", "tenant A"),
        ("sip:x@b.example", "SIP/2.0 200 ", "tenant B"),
        ("sip:x@pbx.B.example", "SIP/2.0 200 ", "tenant B"),
        ("sip:x@c.example", "SIP/2.0 404 ", "No Such Domain"),
        ("sip:x@xb.example", "SIP/2.0 404 ", "No Such Domain"),
    ]
    .into_iter()
    .enumerate()
    {
        let opts = request("OPTIONS", ruri, uac.addr, &format!("d{i}"), "dom", i as u32);
        uac.send(&opts, proxy).await;
        let (reply, _) = uac.expect(status).await;
        assert_eq!(reason(&reply), expected, "{ruri}: {reply}");
    }
    assert!(
        !logged(&["no tenant for this request", "ruri=sip:x@c.example"]).is_empty(),
        "the unmatched request is logged at debug level"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_runs_its_failure_route_in_the_tenant_that_created_it() {
    let (uac, uas) = (Ua::new().await, Ua::new().await);
    // Both tenants define the same failure route name; only A relays.
    let tenant = |name: &str| {
        format!(
            r#"
function ksr_request_route()
    if KSR.pv.get("$rd") == "a.example" then
        KSR.pv.sets("$du", "sip:{}")
        KSR.tm.t_on_failure("failed")
        KSR.tm.t_relay()
        return
    end
    KSR.sl.sl_send_reply(403, "not here")
end
function failed()
    KSR.tm.t_reply(480, "failed over by {name}")
end
"#,
            uas.addr
        )
    };
    let (a, b) = (tenant("A"), tenant("B"));
    let mut config = ProxyConfig::default();
    config.transactions.timers.t1 = Duration::from_millis(20);
    let proxy = common::start_tenants(
        &[
            TestTenant {
                id: "a",
                script: &a,
                listen: &[],
                domains: &["a.example"],
            },
            TestTenant {
                id: "b",
                script: &b,
                listen: &[],
                domains: &["b.example"],
            },
        ],
        &["udp:127.0.0.1:0"],
        config,
    )
    .await[0]
        .1;
    let invite = request("INVITE", "sip:bob@a.example", uac.addr, "t1", "tx", 1);
    uac.send(&invite, proxy).await;
    let (inv, from) = uas.expect("INVITE ").await;
    uas.send(&respond(&inv, 486, "Busy Here", "u1"), from).await;
    uas.expect("ACK ").await;
    let (reply, _) = uac.expect("SIP/2.0 480 ").await;
    assert_eq!(reason(&reply), "failed over by A", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_script_is_logged_with_its_tenant_and_the_other_tenant_keeps_answering() {
    common::logs::capture();
    let a = "function ksr_request_route()\n  local t = nil\n  t.x = 1\nend\n";
    let b = answering("tenant B");
    let addrs = common::start_tenants(
        &[
            TestTenant {
                id: "broken-a",
                script: a,
                listen: &["udp:127.0.0.1:0"],
                domains: &[],
            },
            TestTenant {
                id: "b",
                script: &b,
                listen: &["udp:127.0.0.2:0"],
                domains: &[],
            },
        ],
        &["udp:127.0.0.1:0", "udp:127.0.0.2:0"],
        ProxyConfig::default(),
    )
    .await;
    let uac = Ua::new().await;
    for i in 0..3 {
        let opts = request(
            "OPTIONS",
            "sip:x@a.example",
            uac.addr,
            &format!("e{i}"),
            "err",
            i,
        );
        uac.send(&opts, addrs[0].1).await;
        uac.expect("SIP/2.0 500 ").await;
        let opts = request(
            "OPTIONS",
            "sip:x@b.example",
            uac.addr,
            &format!("f{i}"),
            "ok",
            i,
        );
        uac.send(&opts, addrs[1].1).await;
        let (reply, _) = uac.expect("SIP/2.0 200 ").await;
        assert_eq!(reason(&reply), "tenant B", "{reply}");
    }
    let failures = logged(&["tenant=broken-a", "broken-a.lua:3:"]);
    assert_eq!(failures.len(), 3, "{failures:?}");
}

/// One tenant's route busy for seconds (a loop with fuel to spare, ended
/// by its deadline) holds up none of another tenant's messages: each call
/// is handled in a task of its own, not queued behind whatever call
/// shares its worker. With the former 4 × cores workers, 64 calls of `b`
/// all missing the looping call's worker was a 1-in-5,000 chance on 2
/// cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_busy_in_its_route_holds_up_no_other_tenants_messages() {
    let looping = "function ksr_request_route()\n  while true do end\nend\n";
    let b = answering("tenant B");
    let (a, b) = (
        TestTenant {
            id: "a",
            script: looping,
            listen: &["udp:127.0.0.1:0"],
            domains: &[],
        },
        TestTenant {
            id: "b",
            script: &b,
            listen: &["udp:127.0.0.2:0"],
            domains: &[],
        },
    );
    let busy = Quota {
        limits: Some(Limits {
            fuel: u64::MAX / 2,
            deadline_ms: 3_000,
            ..Limits::default()
        }),
        ..Quota::default()
    };
    let (addrs, _) = common::start_tenants_quotas(
        &[(&a, busy), (&b, Quota::default())],
        &["udp:127.0.0.1:0", "udp:127.0.0.2:0"],
        ProxyConfig::default(),
    )
    .await;
    let (caller_a, caller_b) = (Ua::new().await, Ua::new().await);
    let opts = request("OPTIONS", "sip:x@a", caller_a.addr, "busy", "busy", 1);
    caller_a.send(&opts, addrs[0].1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..64 {
        let call = format!("b{i}");
        let opts = request("OPTIONS", "sip:x@b", caller_b.addr, &call, &call, 1);
        caller_b.send(&opts, addrs[1].1).await;
        let (reply, _) = caller_b.expect("SIP/2.0 200 ").await;
        assert_eq!(reason(&reply), "tenant B", "{reply}");
    }
    assert!(
        caller_a.recv_within(0.0).await.is_none(),
        "a's route ended before b's 64 calls were answered: b's messages waited for it"
    );
    let (reply, _) = caller_a.expect("SIP/2.0 500 ").await;
    assert!(reply.contains("Call-ID: busy@test"), "{reply}");
}
