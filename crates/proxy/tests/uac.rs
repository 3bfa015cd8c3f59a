//! Requests of the proxy's own (`Proxy::uac`, what the dispatcher's probes
//! and the dialog module's BYEs use) over real sockets: the request as it
//! leaves, where it goes (R-URI, next hop, loose and strict routers, UDP
//! and TCP), its final reply or Timer F's 408, retransmissions, the limit
//! of outstanding requests, shutdown, and that a response to it is never
//! relayed by Via nor seen by the tenant's reply route.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Ua, fast, logs, respond};
use kemibox_kemi::Transport;
use kemibox_kemi::uac::{LocalReply, LocalRequest, Uac, UacError};
use kemibox_proxy::{Listen, Proxy, ProxyConfig};
use kemibox_sandbox::{Pool, Runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

mod common;

/// The tenant's script: it answers requests itself, and its reply route
/// logs every reply it sees (a local request's must not be among them).
const SCRIPT: &str = r#"
function ksr_request_route()
    KSR.sl.send_reply(200, "OK")
end
function ksr_reply_route()
    KSR.info("reply route saw " .. KSR.pv.get("$ci"))
end
"#;

/// A running proxy and its UAC.
struct Started {
    addrs: Vec<(Transport, SocketAddr)>,
    uac: Arc<dyn Uac>,
    metrics: Arc<kemibox_metrics::Registry>,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Started {
    fn udp(&self) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(t, _)| *t == Transport::Udp)
            .expect("a UDP socket")
            .1
    }
}

/// A proxy on `listen` with `config`'s settings, serving [`SCRIPT`].
async fn start(listen: &[&str], config: ProxyConfig) -> Started {
    logs::capture();
    let config = ProxyConfig {
        listen: listen
            .iter()
            .map(|l| l.parse::<Listen>().unwrap())
            .collect(),
        ..config
    };
    let transports = Proxy::bind(&config).await.unwrap();
    let runtime = Runtime::new(None).unwrap();
    let pool = Pool::new(&runtime, common::spec(SCRIPT, &transports), 2)
        .await
        .unwrap();
    let proxy = Proxy::new(config, Arc::new(pool), transports);
    let (addrs, uac, metrics) = (proxy.local_addrs(), proxy.uac(), proxy.metrics());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(proxy.serve(async move {
        let _ = stopped.await;
    }));
    Started {
        addrs,
        uac,
        metrics,
        stop,
        serving,
    }
}

/// An OPTIONS of the proxy's own to `ruri`, as the dispatcher probes.
fn options(ruri: &str, call: &str) -> LocalRequest {
    LocalRequest {
        method: "OPTIONS".into(),
        ruri: ruri.into(),
        from: "<sip:dispatcher@kemibox.test>;tag=uac1".into(),
        to: format!("<{ruri}>"),
        call_id: format!("{call}@kemibox"),
        cseq: 7,
        ..LocalRequest::default()
    }
}

/// Send `request` in the background, so the test can answer it.
fn send(
    uac: &Arc<dyn Uac>,
    request: LocalRequest,
) -> tokio::task::JoinHandle<Result<LocalReply, UacError>> {
    let uac = uac.clone();
    tokio::spawn(async move { uac.send(request).await })
}

/// The value of header `name` in `msg`.
fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n")
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
}

/// `answer`'s final reply within 5 s.
async fn outcome(
    answer: tokio::task::JoinHandle<Result<LocalReply, UacError>>,
) -> Result<LocalReply, UacError> {
    tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("no outcome within 5 s")
        .unwrap()
}

fn reply(status: u16, reason: &str) -> Result<LocalReply, UacError> {
    Ok(LocalReply {
        status,
        reason: reason.into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_options_answered_200_gives_ok_200_and_is_counted() {
    let proxy = start(&["udp:127.0.0.1:0"], fast()).await;
    let peer = Ua::new().await;
    let answer = send(
        &proxy.uac,
        options(&format!("sip:gw@{}", peer.addr), "ok200"),
    );
    let (req, from) = peer.expect("OPTIONS ").await;
    assert_eq!(from, proxy.udp(), "sent from our UDP socket");
    assert!(
        req.starts_with(&format!("OPTIONS sip:gw@{} SIP/2.0\r\n", peer.addr)),
        "{req}"
    );
    let via = header(&req, "Via").unwrap();
    assert!(
        via.starts_with(&format!("SIP/2.0/UDP {};branch=z9hG4bK", proxy.udp())),
        "{via}"
    );
    assert!(via.ends_with(";rport"), "{via}");
    assert_eq!(header(&req, "Max-Forwards"), Some("70"));
    assert_eq!(header(&req, "CSeq"), Some("7 OPTIONS"));
    assert_eq!(header(&req, "Call-ID"), Some("ok200@kemibox"));
    assert_eq!(
        header(&req, "From"),
        Some("<sip:dispatcher@kemibox.test>;tag=uac1")
    );
    assert_eq!(header(&req, "Content-Length"), Some("0"));
    peer.send(&respond(&req, 200, "OK", "gw1"), from).await;
    assert_eq!(outcome(answer).await, reply(200, "OK"));

    let text = proxy.metrics.render();
    for line in [
        "kemibox_local_requests_total 1",
        r#"kemibox_local_request_outcomes_total{outcome="2xx"} 1"#,
        r#"kemibox_local_request_outcomes_total{outcome="timeout"} 0"#,
        "kemibox_local_requests_pending 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_is_the_outcome_and_branches_differ_per_request() {
    let proxy = start(&["udp:127.0.0.1:0"], fast()).await;
    let peer = Ua::new().await;
    let mut branches = Vec::new();
    for call in ["nf1", "nf2"] {
        let answer = send(&proxy.uac, options(&format!("sip:gw@{}", peer.addr), call));
        let (req, from) = peer.expect("OPTIONS ").await;
        branches.push(header(&req, "Via").unwrap().to_string());
        peer.send(&respond(&req, 404, "Not Here", "gw1"), from)
            .await;
        assert_eq!(outcome(answer).await, reply(404, "Not Here"));
    }
    assert_ne!(branches[0], branches[1], "a fresh branch per request");
    let text = proxy.metrics.render();
    assert!(
        text.contains(r#"kemibox_local_request_outcomes_total{outcome="4xx"} 2"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_sees_retransmissions_and_timer_f_gives_408() {
    // T1 = 20 ms: Timer F = 64 * T1 = 1.28 s.
    let proxy = start(&["udp:127.0.0.1:0"], fast()).await;
    let peer = Ua::new().await;
    let started = Instant::now();
    let answer = send(
        &proxy.uac,
        options(&format!("sip:gw@{}", peer.addr), "silent"),
    );
    let mut copies = Vec::new();
    while let Some((req, _)) = peer.recv_within(2.0).await {
        copies.push(req);
    }
    let got = outcome(answer).await;
    let elapsed = started.elapsed();
    assert_eq!(got, reply(408, "Request Timeout"));
    assert!(
        elapsed >= Duration::from_millis(1200),
        "408 before Timer F: {elapsed:?}"
    );
    assert!(
        copies.len() >= 4,
        "retransmissions (Timer E) expected, got {}",
        copies.len()
    );
    assert!(
        copies.iter().all(|c| c == &copies[0]),
        "retransmissions are the same request"
    );
    let text = proxy.metrics.render();
    assert!(
        text.contains(r#"kemibox_local_request_outcomes_total{outcome="timeout"} 1"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_the_proxy_connects_and_reads_the_reply_on_that_connection() {
    let proxy = start(&["udp:127.0.0.1:0", "tcp:127.0.0.1:0"], fast()).await;
    let tcp = proxy
        .addrs
        .iter()
        .find(|(t, _)| *t == Transport::Tcp)
        .unwrap()
        .1;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = listener.local_addr().unwrap();
    let answer = send(
        &proxy.uac,
        options(&format!("sip:gw@{peer};transport=tcp"), "tcp1"),
    );
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("no connection")
        .unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.contains("\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("no request")
            .unwrap();
        assert!(n > 0, "closed: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(text.starts_with("OPTIONS "), "{text}");
    let via = header(&text, "Via").unwrap();
    assert!(
        via.starts_with(&format!("SIP/2.0/TCP {tcp};branch=z9hG4bK")),
        "{via}"
    );
    conn.write_all(respond(&text, 200, "OK", "t1").as_bytes())
        .await
        .unwrap();
    assert_eq!(outcome(answer).await, reply(200, "OK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_hop_overrides_the_request_uri_as_du_does() {
    let proxy = start(&["udp:127.0.0.1:0"], fast()).await;
    let (target, hop) = (Ua::new().await, Ua::new().await);
    let mut request = options(&format!("sip:bob@{}", target.addr), "nexthop");
    request.next_hop = Some(format!("sip:{}", hop.addr));
    let answer = send(&proxy.uac, request);
    let (req, from) = hop.expect("OPTIONS ").await;
    assert!(
        req.starts_with(&format!("OPTIONS sip:bob@{} SIP/2.0", target.addr)),
        "R-URI kept: {req}"
    );
    hop.send(&respond(&req, 200, "OK", "h1"), from).await;
    assert_eq!(outcome(answer).await, reply(200, "OK"));
    assert!(
        target.recv_within(0.3).await.is_none(),
        "the R-URI's host got it too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loose_router_gets_the_request_with_the_route_set() {
    let proxy = start(&["udp:127.0.0.1:0"], fast()).await;
    let (callee, router) = (Ua::new().await, Ua::new().await);
    let mut request = options(&format!("sip:bob@{}", callee.addr), "loose");
    request.method = "BYE".into();
    request.route = vec![
        format!("<sip:{};lr>", router.addr),
        "<sip:second.example;lr>".into(),
    ];
    request.headers = "Reason: Q.850;cause=16\r\n".into();
    let answer = send(&proxy.uac, request);
    let (req, from) = router.expect("BYE ").await;
    assert!(
        req.starts_with(&format!("BYE sip:bob@{} SIP/2.0", callee.addr)),
        "{req}"
    );
    let routes: Vec<&str> = req
        .split("\r\n")
        .filter_map(|l| l.strip_prefix("Route: "))
        .collect();
    assert_eq!(
        routes,
        vec![
            format!("<sip:{};lr>", router.addr).as_str(),
            "<sip:second.example;lr>"
        ]
    );
    assert_eq!(header(&req, "CSeq"), Some("7 BYE"));
    assert_eq!(header(&req, "Reason"), Some("Q.850;cause=16"));
    router.send(&respond(&req, 200, "OK", "r1"), from).await;
    assert_eq!(outcome(answer).await, reply(200, "OK"));
    assert!(
        callee.recv_within(0.3).await.is_none(),
        "went past the router"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_router_gets_the_request_as_its_request_uri() {
    let proxy = start(&["udp:127.0.0.1:0"], fast()).await;
    let (callee, router) = (Ua::new().await, Ua::new().await);
    let mut request = options(&format!("sip:bob@{}", callee.addr), "strict");
    request.route = vec![format!("<sip:{}>", router.addr)];
    let answer = send(&proxy.uac, request);
    let (req, from) = router.expect("OPTIONS ").await;
    assert!(
        req.starts_with(&format!("OPTIONS sip:{} SIP/2.0", router.addr)),
        "{req}"
    );
    assert_eq!(
        header(&req, "Route").map(str::to_string),
        Some(format!("<sip:bob@{}>", callee.addr)),
        "the remote target is the last Route (RFC 3261 12.2.1.1)"
    );
    router.send(&respond(&req, 200, "OK", "r1"), from).await;
    assert_eq!(outcome(answer).await, reply(200, "OK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_to_a_local_request_goes_nowhere_else_and_runs_no_route() {
    let proxy = start(&["udp:127.0.0.1:0"], fast()).await;
    let (peer, behind) = (Ua::new().await, Ua::new().await);
    let answer = send(
        &proxy.uac,
        options(&format!("sip:gw@{}", peer.addr), "nowhere"),
    );
    let (req, from) = peer.expect("OPTIONS ").await;
    // A reply with a Via below ours, as if it were to be relayed there.
    let behind_via = format!("Via: SIP/2.0/UDP {};branch=z9hG4bKbehind\r\n", behind.addr);
    let ok = respond(&req, 200, "OK", "gw1").replacen(
        "\r\nFrom:",
        &format!("\r\n{}From:", behind_via),
        1,
    );
    assert!(ok.contains(&behind_via), "{ok}");
    peer.send(&ok, from).await;
    assert_eq!(outcome(answer).await, reply(200, "OK"));
    // A retransmission after the transaction ended (Timer K = T4 = 200 ms).
    tokio::time::sleep(Duration::from_millis(400)).await;
    peer.send(&ok, from).await;
    assert!(
        behind.recv_within(0.5).await.is_none(),
        "a response to a local request was relayed by Via"
    );

    // The control: a response that is not to a local request goes on by
    // Via, through the reply route, so the checks above can fail.
    let stray = ok
        .replace("Call-ID: nowhere@kemibox", "Call-ID: stray@kemibox")
        .replacen("branch=z9hG4bKkbxuac", "branch=z9hG4bKother", 1);
    peer.send(&stray, from).await;
    let (relayed, _) = behind.expect("SIP/2.0 200 ").await;
    assert!(relayed.contains("Call-ID: stray@kemibox"), "{relayed}");
    assert!(!logs::logged(&["reply route saw stray@kemibox"]).is_empty());
    assert!(
        logs::logged(&["reply route saw nowhere@kemibox"]).is_empty(),
        "the reply route saw a local request's response"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisional_replies_are_absorbed_and_the_first_final_completes_once() {
    let proxy = start(&["udp:127.0.0.1:0"], fast()).await;
    let peer = Ua::new().await;
    let answer = send(
        &proxy.uac,
        options(&format!("sip:gw@{}", peer.addr), "prov"),
    );
    let (req, from) = peer.expect("OPTIONS ").await;
    peer.send(&respond(&req, 100, "Trying", "gw1"), from).await;
    peer.send(&respond(&req, 183, "Progress", "gw1"), from)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!answer.is_finished(), "a provisional reply completed it");
    peer.send(&respond(&req, 486, "Busy Here", "gw1"), from)
        .await;
    peer.send(&respond(&req, 200, "OK", "gw1"), from).await;
    assert_eq!(outcome(answer).await, reply(486, "Busy Here"));
    let text = proxy.metrics.render();
    for line in [
        r#"kemibox_local_request_outcomes_total{outcome="4xx"} 1"#,
        r#"kemibox_local_request_outcomes_total{outcome="2xx"} 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outstanding_requests_are_bounded_and_bad_ones_are_refused() {
    let config = ProxyConfig {
        max_local_requests: 1,
        ..fast()
    };
    let proxy = start(&["udp:127.0.0.1:0"], config).await;
    let peer = Ua::new().await;
    let first = send(&proxy.uac, options(&format!("sip:gw@{}", peer.addr), "b1"));
    peer.expect("OPTIONS ").await;
    let second = proxy
        .uac
        .send(options(&format!("sip:gw@{}", peer.addr), "b2"))
        .await;
    assert!(
        matches!(&second, Err(UacError::Send(why)) if why.contains("too many")),
        "{second:?}"
    );
    let sctp = proxy
        .uac
        .send(options(
            &format!("sip:gw@{};transport=sctp", peer.addr),
            "b3",
        ))
        .await;
    assert!(matches!(sctp, Err(UacError::Unroutable(_))), "{sctp:?}");
    let mut injected = options(&format!("sip:gw@{}", peer.addr), "b4");
    injected.call_id = "x\r\nVia: SIP/2.0/UDP 192.0.2.9".into();
    assert!(matches!(
        proxy.uac.send(injected).await,
        Err(UacError::Send(_))
    ));
    assert_eq!(outcome(first).await, reply(408, "Request Timeout"));
    let text = proxy.metrics.render();
    assert!(
        text.contains(r#"kemibox_local_request_outcomes_total{outcome="failed"} 3"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_pending_requests_with_an_error() {
    let proxy = start(&["udp:127.0.0.1:0"], ProxyConfig::default()).await;
    let peer = Ua::new().await;
    let pending = send(&proxy.uac, options(&format!("sip:gw@{}", peer.addr), "bye"));
    peer.expect("OPTIONS ").await;
    proxy.stop.send(()).unwrap();
    let got = outcome(pending).await;
    assert!(matches!(got, Err(UacError::Send(_))), "{got:?}");
    tokio::time::timeout(Duration::from_secs(5), proxy.serving)
        .await
        .expect("the proxy did not stop")
        .unwrap()
        .unwrap();
    let after = proxy
        .uac
        .send(options(&format!("sip:gw@{}", peer.addr), "after"))
        .await;
    assert!(matches!(after, Err(UacError::Send(_))), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_tcp_connection_fails_the_request_at_once() {
    let proxy = start(&["tcp:127.0.0.1:0"], ProxyConfig::default()).await;
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let started = Instant::now();
    let got = proxy
        .uac
        .send(options(
            &format!("sip:gw@{closed};transport=tcp"),
            "refused",
        ))
        .await;
    assert!(matches!(got, Err(UacError::Send(_))), "{got:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited for a timeout"
    );
    let text = proxy.metrics.render();
    assert!(
        text.contains(r#"kemibox_local_request_outcomes_total{outcome="failed"} 1"#)
            && text.contains("kemibox_local_requests_pending 0"),
        "{text}"
    );
}
