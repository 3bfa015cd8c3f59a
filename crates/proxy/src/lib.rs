//! The SIP side of kemibox: sockets, and what happens to each message.
//!
//! A proxy hosts one tenant or several (see [`Hosted`]: a request belongs
//! to the tenant owning its socket, else to the one whose domain is its
//! R-URI host). Every request runs the tenant's `ksr_request_route`, every reply its
//! `ksr_reply_route` (when defined), in the sandbox; the proxy then acts on
//! what the route asked for: replies (`KSR.sl`) and relays
//! (`KSR.tm.t_relay`). A route that fails (Lua error, fuel, deadline,
//! memory) is answered with the configured error reply and logged with the
//! tenant, the script line and the cause.
//!
//! `t_relay` is stateful (RFC 3261 sections 16 and 17, see [`stateful`]):
//! retransmissions are absorbed, branches retransmit and time out, CANCEL
//! is answered and propagated, failure routes can re-route.
//!
//! Dependencies run one way (docs/architecture.md): dispatch -> handler ->
//! stateful -> route runner and egress -> transport.

mod dispatch;
mod egress;
mod handler;
mod listen;
mod quota;
mod route;
mod stateful;
mod tenants;
mod transport;

use std::net::SocketAddr;
use std::sync::Arc;

use kemibox_kemi::{Myself, Transport};
use kemibox_sandbox::Pool;

pub use listen::Listen;
pub use quota::{LimitedReply, RateLimit};
pub use tenants::Hosted;
pub use transport::Transports;

/// What the proxy needs besides its tenant.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: Vec<Listen>,
    /// Reply sent when the request route fails (default `500 Server Error`).
    pub error_reply: (u16, String),
    /// Reply sent statelessly to a request no tenant takes (default `404
    /// Not Found`); only when several tenants are hosted.
    pub unmatched_reply: (u16, String),
    /// Transaction timers and limits (RFC 3261 defaults).
    pub transactions: kemibox_tm::Config,
    /// The most requests of the proxy's own (dispatcher probes, dialog
    /// BYEs) waiting for their final response at once; more are refused
    /// (`UacError::Send`) rather than queued. Default 16,384.
    pub max_local_requests: usize,
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            listen: vec![Listen::default()],
            error_reply: (500, "Server Error".into()),
            unmatched_reply: (404, "Not Found".into()),
            transactions: proxy_transactions(),
            max_local_requests: 16_384,
        }
    }
}

/// The transaction settings of a proxy: RFC 3261 timers, except that a
/// finished non-INVITE server transaction is kept 5 s (Kamailio's
/// `wait_timer`) rather than 32 s, and room for 262,144 transactions. At
/// 5,000 calls/s the RFC's 32 s would keep 160,000 BYE transactions alive.
pub fn proxy_transactions() -> kemibox_tm::Config {
    let mut config = kemibox_tm::Config {
        max_transactions: 262_144,
        ..kemibox_tm::Config::default()
    };
    config.timers.j_unreliable = std::time::Duration::from_secs(5);
    config
}

/// How long a graceful shutdown waits for transactions in flight: Timer B/F
/// (32 s) ends every branch by then.
pub const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(33);

/// What the message handler works with (the top of the proxy).
pub(crate) struct Shared {
    pub tenants: tenants::Tenants,
    pub config: ProxyConfig,
    pub dispatch: dispatch::Dispatch,
    /// The transaction core, with the egress and transports below it.
    pub core: Arc<stateful::Stateful>,
    /// Set once shutdown began: new calls are refused.
    pub draining: std::sync::atomic::AtomicBool,
    /// Process-wide counters and every tenant's (see [`Proxy::metrics`]).
    pub metrics: Arc<kemibox_metrics::Registry>,
}

/// A proxy with its sockets bound, ready to serve.
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// Bind every listen address (the error names the one that failed).
    pub async fn bind(config: &ProxyConfig) -> anyhow::Result<Transports> {
        Transports::bind(&config.listen).await
    }

    /// The proxy's own addresses, for the tenant's `is_myself`.
    pub fn myself(transports: &Transports) -> Myself {
        Myself {
            addresses: transports
                .local_addrs()
                .into_iter()
                .map(|(_, a)| a)
                .collect(),
            domains: Vec::new(),
        }
    }

    /// A proxy with one tenant, which gets every message.
    pub fn new(config: ProxyConfig, pool: Arc<Pool>, transports: Transports) -> Proxy {
        Proxy::build(config, tenants::Tenants::single(pool), transports)
    }

    /// A proxy hosting several tenants, each recognised by the sockets it
    /// owns and its domains (see [`Hosted`]). Fails when a tenant names a
    /// socket that is not in `config.listen`.
    pub fn with_tenants(
        config: ProxyConfig,
        hosted: Vec<Hosted>,
        transports: Transports,
    ) -> anyhow::Result<Proxy> {
        let tenants = tenants::Tenants::new(hosted, &config.listen, &transports)?;
        Ok(Proxy::build(config, tenants, transports))
    }

    fn build(config: ProxyConfig, tenants: tenants::Tenants, transports: Transports) -> Proxy {
        let metrics = Arc::new(kemibox_metrics::Registry::new());
        for pool in tenants.pools() {
            metrics.register(pool.metrics().clone());
        }
        let settings = stateful::Settings {
            transactions: config.transactions,
            error_reply: config.error_reply.clone(),
            max_local_requests: config.max_local_requests,
        };
        let egress = egress::Egress::new(Arc::new(transports));
        let local = Arc::new(kemibox_metrics::LocalRequestMetrics::default());
        metrics.process.set_local_requests(local.clone());
        Proxy {
            shared: Arc::new(Shared {
                core: Arc::new(stateful::Stateful::new(settings, egress, local)),
                tenants,
                config,
                dispatch: dispatch::Dispatch::new(
                    4 * std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(2),
                ),
                draining: Default::default(),
                metrics,
            }),
        }
    }

    /// What sends requests of the proxy's own (dispatcher probes, dialog
    /// BYEs) for the modules: put into the tenants' `UacHandle`. Cheap; it
    /// stops working (an error, no panic) once the proxy stopped.
    pub fn uac(&self) -> Arc<dyn kemibox_kemi::uac::Uac> {
        Arc::new(stateful::ProxyUac(Arc::downgrade(&self.shared.core)))
    }

    /// Bound addresses with their transports.
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        self.shared.core.egress().transports().local_addrs()
    }

    /// The proxy's metrics: its tenants' and the process-wide ones, for
    /// the `/metrics` endpoint ([`kemibox_metrics::http`]).
    pub fn metrics(&self) -> Arc<kemibox_metrics::Registry> {
        self.shared.metrics.clone()
    }

    /// Serve until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        dispatch::Dispatch::start(&self.shared);
        let handler = self.shared.clone();
        self.shared.core.egress().transports().start(
            Arc::new(move |inbound| handler.dispatch.send(inbound)),
            &mut tasks,
        );
        tasks.spawn(self.shared.core.clone().drive_timers());
        tokio::select! {
            _ = shutdown => {}
            Some(result) = tasks.join_next() => {
                result??;
            }
        }
        self.drain().await;
        self.shared.core.stop_local();
        tasks.abort_all();
        self.shared.dispatch.stop();
        Ok(())
    }

    /// Graceful shutdown: refuse new calls (503) and keep serving until
    /// every relayed request has its final response, or [`DRAIN_LIMIT`].
    async fn drain(&self) {
        self.shared
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let pending = self.shared.core.pending();
        tracing::info!(pending, "shutting down: finishing transactions in flight");
        while self.shared.core.pending() > 0 && started.elapsed() < DRAIN_LIMIT {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let left = self.shared.core.pending();
        if left > 0 {
            tracing::warn!(
                left,
                "shutdown: transactions still without a final response"
            );
        }
    }
}
