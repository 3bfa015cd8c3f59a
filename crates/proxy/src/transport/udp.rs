//! The UDP receive loop.

use std::sync::Arc;

use kemibox_kemi::Transport;
use tokio::net::UdpSocket;

use super::Inbound;
use crate::Shared;

/// Receive datagrams and handle each in its own task, so a slow route
/// (waiting on I/O) never holds up the socket.
pub async fn receive_loop(shared: Arc<Shared>, socket: Arc<UdpSocket>) -> anyhow::Result<()> {
    let local = socket.local_addr()?;
    tracing::info!(%local, "listening on udp");
    let mut buf = vec![0u8; 65_536];
    loop {
        let (len, source) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors from earlier sends surface here on some systems.
                tracing::debug!(%local, error = %e, "udp receive error");
                continue;
            }
        };
        let Some(data) = buf.get(..len) else { continue };
        let inbound = Inbound {
            transport: Transport::Udp,
            local,
            source,
            data: data.to_vec(),
        };
        let shared = shared.clone();
        tokio::spawn(async move { crate::handler::handle(&shared, inbound).await });
    }
}
