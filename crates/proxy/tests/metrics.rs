//! The metrics over real sockets: SIP over UDP to two tenants, then
//! `GET /metrics` over TCP; each tenant's counters carry its label and
//! only its own traffic.

use std::net::SocketAddr;
use std::sync::Arc;

use common::{Ua, request, respond};
use kemibox_proxy::{Hosted, Listen, Proxy, ProxyConfig};
use kemibox_sandbox::{Pool, Runtime, TenantSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

/// Tenant a answers everything 200, but a request for `boom` raises.
const A: &str = r#"
function ksr_request_route()
    if KSR.pv.get("$rU") == "boom" then
        error("boom")
    end
    KSR.sl.sl_send_reply(200, "OK")
end
"#;

/// Tenant b relays INVITEs to `$du`, answers the rest 200.
fn b(uas: SocketAddr) -> String {
    format!(
        r#"
function ksr_request_route()
    if KSR.pv.get("$rm") == "INVITE" then
        KSR.pv.sets("$du", "sip:{uas}")
        KSR.tm.t_relay()
        return
    end
    KSR.sl.sl_send_reply(200, "OK")
end
"#
    )
}

/// Start tenants a (on 127.0.0.1) and b (on 127.0.0.2) and the metrics
/// endpoint; the SIP sockets and the endpoint's address.
async fn start(uas: SocketAddr) -> (SocketAddr, SocketAddr, SocketAddr) {
    let runtime = Runtime::new(None).unwrap();
    let listen: Vec<Listen> = ["udp:127.0.0.1:0", "udp:127.0.0.2:0"]
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    let config = ProxyConfig {
        listen: listen.clone(),
        ..ProxyConfig::default()
    };
    let transports = Proxy::bind(&config).await.unwrap();
    let mut hosted = Vec::new();
    for (id, script, l) in [("a", A.to_string(), listen[0]), ("b", b(uas), listen[1])] {
        let mut spec = TenantSpec::new(
            id.parse().expect("a valid tenant id"),
            format!("{id}.lua"),
            script,
        );
        spec.myself = Arc::new(Proxy::myself(&transports));
        hosted.push(Hosted {
            pool: Arc::new(Pool::new(&runtime, spec, 4).await.unwrap()),
            listen: vec![l],
            domains: Vec::new(),
            rate: None,
        });
    }
    let proxy = Proxy::with_tenants(config, hosted, transports).unwrap();
    let addrs = proxy.local_addrs();
    let http = kemibox_metrics::http::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let http_addr = http.local_addr().unwrap();
    tokio::spawn(kemibox_metrics::http::serve(http, proxy.metrics()));
    tokio::spawn(proxy.serve(std::future::pending()));
    (addrs[0].1, addrs[1].1, http_addr)
}

/// `GET path` over TCP: the status line and the body.
async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: kemibox\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The value of the sample `series` (`name{labels}`), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_each_tenants_invocations_replies_and_transactions() {
    let (uac, uas) = (Ua::new().await, Ua::new().await);
    let (sock_a, sock_b, http) = start(uas.addr).await;

    for i in 0..3 {
        let opts = request(
            "OPTIONS",
            "sip:x@a.example",
            uac.addr,
            &format!("o{i}"),
            "ok",
            i,
        );
        uac.send(&opts, sock_a).await;
        uac.expect("SIP/2.0 200 ").await;
    }
    let boom = request("OPTIONS", "sip:boom@a.example", uac.addr, "boom", "err", 1);
    uac.send(&boom, sock_a).await;
    uac.expect("SIP/2.0 500 ").await;

    let opts = request("OPTIONS", "sip:x@b.example", uac.addr, "ob", "ok", 1);
    uac.send(&opts, sock_b).await;
    uac.expect("SIP/2.0 200 ").await;
    let invite = request("INVITE", "sip:bob@b.example", uac.addr, "ib", "tx", 1);
    uac.send(&invite, sock_b).await;
    let (inv, from) = uas.expect("INVITE ").await;
    uas.send(&respond(&inv, 486, "Busy Here", "u1"), from).await;
    uac.expect("SIP/2.0 486 ").await;

    let (status, text) = get(http, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let value =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    let inv = |t: &str, outcome: &str| {
        value(&format!(
            r#"kemibox_invocations_total{{tenant="{t}",route="ksr_request_route",outcome="{outcome}"}}"#
        ))
    };
    assert_eq!(inv("a", "ok"), 3.0);
    assert_eq!(inv("a", "lua_error"), 1.0);
    assert_eq!(inv("a", "out_of_fuel"), 0.0);
    assert_eq!(inv("b", "ok"), 2.0);
    assert_eq!(inv("b", "lua_error"), 0.0);
    assert_eq!(
        value(r#"kemibox_invocation_seconds_count{tenant="a",route="ksr_request_route"}"#),
        4.0
    );
    assert_eq!(value(r#"kemibox_fuel_used_count{tenant="a"}"#), 4.0);
    assert!(value(r#"kemibox_fuel_used_sum{tenant="a"}"#) > 0.0);
    assert_eq!(value(r#"kemibox_fuel_used_count{tenant="b"}"#), 2.0);
    assert_eq!(
        value(r#"kemibox_replies_total{tenant="a",class="2xx"}"#),
        3.0
    );
    assert_eq!(
        value(r#"kemibox_replies_total{tenant="a",class="5xx"}"#),
        1.0
    );
    assert_eq!(
        value(r#"kemibox_replies_total{tenant="a",class="4xx"}"#),
        0.0
    );
    assert_eq!(
        value(r#"kemibox_replies_total{tenant="b",class="2xx"}"#),
        1.0
    );
    assert_eq!(
        value(r#"kemibox_replies_total{tenant="b",class="4xx"}"#),
        1.0
    );
    assert_eq!(
        value(r#"kemibox_replies_total{tenant="b",class="5xx"}"#),
        0.0
    );
    assert_eq!(value(r#"kemibox_transactions_total{tenant="a"}"#), 0.0);
    assert_eq!(value(r#"kemibox_transactions_total{tenant="b"}"#), 1.0);
    assert!(value(r#"kemibox_instances_created_total{tenant="a"}"#) >= 1.0);
    assert!(value(r#"kemibox_instances_created_total{tenant="b"}"#) >= 1.0);
    assert_eq!(
        value(r#"kemibox_sip_messages_received_total{transport="udp",kind="request"}"#),
        6.0
    );
    assert_eq!(
        value(r#"kemibox_sip_messages_received_total{transport="udp",kind="reply"}"#),
        1.0
    );
    assert_eq!(value("kemibox_sip_malformed_total"), 0.0);

    // Garbage is counted as malformed, and an unknown path is 404.
    uac.send("this is not SIP\r\n\r\n", sock_a).await;
    let mut malformed = 0.0;
    for _ in 0..50 {
        malformed = sample(
            &get(http, "/metrics").await.1,
            "kemibox_sip_malformed_total",
        )
        .unwrap();
        if malformed > 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(malformed, 1.0);
    assert_eq!(get(http, "/other").await.0, "HTTP/1.1 404 Not Found");
}
