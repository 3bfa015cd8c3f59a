//! The SIP side of kemibox: sockets, and what happens to each message.
//!
//! Every request runs the tenant's `ksr_request_route`, every reply its
//! `ksr_reply_route` (when defined), in the sandbox; the proxy then acts on
//! what the route asked for: replies (`KSR.sl`), relays (`KSR.tm.t_relay`,
//! `KSR.forward`). A route that fails (Lua error, fuel, deadline, memory) is
//! answered with the configured error reply and logged with the tenant, the
//! script line and the cause.
//!
//! Transactions (RFC 3261 section 17) are not kept yet: `t_relay` forwards
//! statelessly (section 16.11), replies are routed back by their Via.

mod forward;
mod handler;
mod listen;
mod reply;

use std::net::SocketAddr;
use std::sync::Arc;

use kemibox_kemi::Myself;
use kemibox_sandbox::Pool;
use tokio::net::UdpSocket;

pub use listen::Listen;

/// What the proxy needs besides its tenant.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: Vec<Listen>,
    /// Reply sent when the request route fails (default `500 Server Error`).
    pub error_reply: (u16, String),
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            listen: vec![Listen::default()],
            error_reply: (500, "Server Error".into()),
        }
    }
}

/// Shared by every message handler.
pub(crate) struct Shared {
    pub pool: Arc<Pool>,
    pub config: ProxyConfig,
    pub branch_salt: std::collections::hash_map::RandomState,
}

/// A bound proxy, ready to serve.
pub struct Proxy {
    shared: Arc<Shared>,
    sockets: Vec<Arc<UdpSocket>>,
}

impl Proxy {
    /// Bind every listen address. The addresses (with the ports actually
    /// bound) are what `is_myself` and Record-Route use: see [`Proxy::myself`].
    pub async fn bind(config: ProxyConfig) -> anyhow::Result<Vec<Arc<UdpSocket>>> {
        let mut sockets = Vec::new();
        for listen in &config.listen {
            let socket = UdpSocket::bind(listen.addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
            sockets.push(Arc::new(socket));
        }
        Ok(sockets)
    }

    /// The proxy's own addresses, for the tenant's `is_myself`.
    pub fn myself(sockets: &[Arc<UdpSocket>]) -> Myself {
        Myself {
            addresses: sockets.iter().filter_map(|s| s.local_addr().ok()).collect(),
            domains: Vec::new(),
        }
    }

    pub fn new(config: ProxyConfig, pool: Arc<Pool>, sockets: Vec<Arc<UdpSocket>>) -> Proxy {
        Proxy {
            shared: Arc::new(Shared {
                pool,
                config,
                branch_salt: Default::default(),
            }),
            sockets,
        }
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// Serve until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for socket in &self.sockets {
            tasks.spawn(listen::receive_loop(self.shared.clone(), socket.clone()));
        }
        tokio::select! {
            _ = shutdown => {
                tracing::info!("shutting down");
            }
            Some(result) = tasks.join_next() => {
                result??;
            }
        }
        tasks.abort_all();
        Ok(())
    }
}
