//! Starting a proxy for a test.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use kemibox_kemi::Transport;
use kemibox_proxy::{Listen, Proxy, ProxyConfig};
use kemibox_sandbox::{Pool, Runtime, TenantSpec};

/// Start a proxy running `script` on `listen` (e.g. `udp:127.0.0.1:0`);
/// returns the bound addresses, in the order given.
pub async fn start(script: &str, listen: &[&str]) -> Vec<(Transport, SocketAddr)> {
    let runtime = Runtime::new(None).unwrap();
    let config = ProxyConfig {
        listen: listen
            .iter()
            .map(|l| l.parse::<Listen>().unwrap())
            .collect(),
        ..ProxyConfig::default()
    };
    let transports = Proxy::bind(&config).await.unwrap();
    let mut spec = TenantSpec::new("test", "test.lua", script);
    spec.myself = Arc::new(Proxy::myself(&transports));
    let pool = Arc::new(Pool::new(&runtime, spec, 4).await.unwrap());
    let proxy = Proxy::new(config, pool, transports);
    let addrs = proxy.local_addrs();
    tokio::spawn(proxy.serve(std::future::pending()));
    addrs
}
