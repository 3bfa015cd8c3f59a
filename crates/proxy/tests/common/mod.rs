//! Starting a proxy for a test.
#![allow(
    dead_code,
    reason = "each test binary uses only some of the shared helpers"
)]

pub mod logs;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kemibox_kemi::{RelayTo, Transport};
use kemibox_metrics::TenantMetrics;
use kemibox_proxy::{Hosted, Listen, Proxy, ProxyConfig, RateLimit};
use kemibox_sandbox::{Limits, Pool, Runtime, TenantSpec};
use tokio::net::UdpSocket;

/// A proxy configuration with RFC 3261 timers scaled down (T1 = 20 ms:
/// Timer B 1.28 s), so retransmissions and timeouts come soon.
pub fn fast() -> ProxyConfig {
    let mut config = ProxyConfig::default();
    config.transactions.timers.t1 = Duration::from_millis(20);
    config.transactions.timers.t2 = Duration::from_millis(160);
    config.transactions.timers.t4 = Duration::from_millis(200);
    config.transactions.timers.d_unreliable = Duration::from_millis(1280);
    config
}

/// Start a proxy running `script` on `listen` (e.g. `udp:127.0.0.1:0`);
/// returns the bound addresses, in the order given.
pub async fn start(script: &str, listen: &[&str]) -> Vec<(Transport, SocketAddr)> {
    start_with(script, listen, ProxyConfig::default()).await
}

/// Like [`start`] with a configuration (its listen list is replaced).
pub async fn start_with(
    script: &str,
    listen: &[&str],
    config: ProxyConfig,
) -> Vec<(Transport, SocketAddr)> {
    let (addrs, stop, _serving) = start_stoppable(script, listen, config).await;
    // Serves until the test ends: dropping the sender would stop it.
    std::mem::forget(stop);
    addrs
}

/// Like [`start_with`], returning what stops the proxy (send on it) and the
/// task serving it (done once shutdown finished).
pub async fn start_stoppable(
    script: &str,
    listen: &[&str],
    config: ProxyConfig,
) -> (
    Vec<(Transport, SocketAddr)>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let (addrs, stop, serving, _pool) = start_pool(script, listen, config).await;
    (addrs, stop, serving)
}

/// Like [`start_stoppable`], also returning the tenant's pool (to reload
/// its script while the proxy serves).
pub async fn start_pool(
    script: &str,
    listen: &[&str],
    config: ProxyConfig,
) -> (
    Vec<(Transport, SocketAddr)>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    Arc<Pool>,
) {
    let runtime = Runtime::new(None).unwrap();
    let (config, transports) = bind(listen, config).await;
    let pool = Arc::new(
        Pool::new(&runtime, spec(script, &transports), 4)
            .await
            .unwrap(),
    );
    let proxy = Proxy::new(config, pool.clone(), transports);
    let addrs = proxy.local_addrs();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(proxy.serve(async move {
        let _ = stopped.await;
    }));
    (addrs, stop, serving, pool)
}

/// `config` listening on `listen`, its sockets bound.
async fn bind(listen: &[&str], config: ProxyConfig) -> (ProxyConfig, kemibox_proxy::Transports) {
    let config = ProxyConfig {
        listen: listen
            .iter()
            .map(|l| l.parse::<Listen>().unwrap())
            .collect(),
        ..config
    };
    let transports = Proxy::bind(&config).await.unwrap();
    (config, transports)
}

/// The test tenant's spec for `script` on `transports`.
pub fn spec(script: &str, transports: &kemibox_proxy::Transports) -> TenantSpec {
    let mut spec = TenantSpec::new(
        "test".parse().expect("a valid tenant id"),
        "test.lua",
        script,
    );
    spec.myself = Arc::new(Proxy::myself(transports));
    spec
}

/// One tenant for [`start_tenants`]: id, script, the listen addresses it
/// owns and its domains.
pub struct TestTenant<'a> {
    pub id: &'a str,
    pub script: &'a str,
    pub listen: &'a [&'a str],
    pub domains: &'a [&'a str],
}

/// Start a proxy hosting several tenants on `listen`; returns the bound
/// addresses (UDP first, then TCP, each in the order given).
pub async fn start_tenants(
    tenants: &[TestTenant<'_>],
    listen: &[&str],
    config: ProxyConfig,
) -> Vec<(Transport, SocketAddr)> {
    let plain: Vec<(&TestTenant<'_>, Quota)> =
        tenants.iter().map(|t| (t, Quota::default())).collect();
    start_tenants_quotas(&plain, listen, config).await.0
}

/// A tenant's quotas for [`start_tenants_quotas`].
#[derive(Default, Clone)]
pub struct Quota {
    pub rate: Option<RateLimit>,
    pub relay_to: Option<Vec<String>>,
    /// Per-invocation limits (default: [`Limits::default`]).
    pub limits: Option<Limits>,
}

/// Like [`start_tenants`], each tenant with its quotas; also returns each
/// tenant's metrics, in the order given.
pub async fn start_tenants_quotas(
    tenants: &[(&TestTenant<'_>, Quota)],
    listen: &[&str],
    config: ProxyConfig,
) -> (Vec<(Transport, SocketAddr)>, Vec<Arc<TenantMetrics>>) {
    let runtime = Runtime::new(None).unwrap();
    let (config, transports) = bind(listen, config).await;
    let mut hosted = Vec::new();
    let mut metrics = Vec::new();
    for (t, quota) in tenants {
        let mut spec = TenantSpec::new(
            t.id.parse().expect("a valid tenant id"),
            format!("{}.lua", t.id),
            t.script,
        );
        spec.relay_to = quota
            .relay_to
            .as_ref()
            .map(|r| Arc::new(RelayTo::parse(r).unwrap()));
        if let Some(limits) = quota.limits {
            spec.limits = limits;
        }
        let mut myself = Proxy::myself(&transports);
        myself.domains = t.domains.iter().map(|d| d.to_string()).collect();
        spec.myself = Arc::new(myself);
        let pool = Arc::new(Pool::new(&runtime, spec, 4).await.unwrap());
        metrics.push(pool.metrics().clone());
        hosted.push(Hosted {
            pool,
            listen: t.listen.iter().map(|l| l.parse().unwrap()).collect(),
            domains: t.domains.iter().map(|d| d.to_string()).collect(),
            rate: quota.rate.clone(),
        });
    }
    let proxy = Proxy::with_tenants(config, hosted, transports).unwrap();
    let addrs = proxy.local_addrs();
    tokio::spawn(proxy.serve(std::future::pending()));
    (addrs, metrics)
}

/// A UDP user agent for tests.
pub struct Ua {
    pub socket: UdpSocket,
    pub addr: SocketAddr,
}

impl Ua {
    pub async fn new() -> Ua {
        Ua::bind("127.0.0.1:0").await
    }

    /// A user agent on `addr` (e.g. `[::1]:0`).
    pub async fn bind(addr: &str) -> Ua {
        let socket = UdpSocket::bind(addr).await.unwrap();
        let addr = socket.local_addr().unwrap();
        Ua { socket, addr }
    }

    pub async fn send(&self, text: &str, to: SocketAddr) {
        self.socket.send_to(text.as_bytes(), to).await.unwrap();
    }

    /// The next message, within `secs` seconds.
    pub async fn recv_within(&self, secs: f64) -> Option<(String, SocketAddr)> {
        let mut buf = vec![0u8; 65536];
        let got = tokio::time::timeout(
            Duration::from_secs_f64(secs),
            self.socket.recv_from(&mut buf),
        )
        .await;
        match got {
            Ok(Ok((n, from))) => Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from)),
            _ => None,
        }
    }

    /// The next message whose first line starts with `start`, skipping
    /// others (e.g. `100 Trying`), within 5 s.
    pub async fn expect(&self, start: &str) -> (String, SocketAddr) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .as_secs_f64();
            let Some((msg, from)) = self.recv_within(left).await else {
                panic!(
                    "{}: no message starting with {start:?} within 5 s",
                    self.addr
                );
            };
            if msg.starts_with(start) {
                return (msg, from);
            }
        }
    }
}

/// A request from `ua` (Via with rport, branch `branch`).
pub fn request(
    method: &str,
    ruri: &str,
    ua: SocketAddr,
    branch: &str,
    call: &str,
    cseq: u32,
) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {ua};branch=z9hG4bK-{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=a1\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: {call}@test\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:alice@{ua}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// A MESSAGE from `ua` asking the test scripts' request route to resume
/// the transaction suspended under `ids` (`X-Resume: INDEX LABEL`).
pub fn resume_request(ua: SocketAddr, ids: &str, call: &str) -> String {
    request("MESSAGE", "sip:proxy@example.com", ua, call, call, 1).replace(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\nX-Resume: {ids}\r\n"),
    )
}

/// A response to `req` as a UAS makes it: its Vias, From, To with `tag`,
/// Call-ID and CSeq.
pub fn respond(req: &str, status: u16, reason: &str, tag: &str) -> String {
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    for line in req.split("\r\n").skip(1) {
        if line.is_empty() {
            break;
        }
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        match name.as_str() {
            "via" | "from" | "call-id" | "cseq" | "record-route" => {
                out.push_str(&format!("{line}\r\n"))
            }
            "to" if line.contains(";tag=") => out.push_str(&format!("{line}\r\n")),
            "to" => out.push_str(&format!("{line};tag={tag}\r\n")),
            _ => {}
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}
