//! UDP sockets and their receive loops.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use kemibox_kemi::Transport;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::Inbound;
use super::Transports;
use super::batch::Batch;

/// Kernel buffer sizes asked for (capped by net.core.rmem_max/wmem_max):
/// bursts of thousands of messages must queue in the kernel, not be dropped
/// there, while the workers are busy.
const BUFFER_BYTES: usize = 4 << 20;

/// Receive tasks per socket: one. The dispatcher keeps the messages of a
/// call in the order it is handed them, and only a single reader hands
/// them over in the order the socket received them: with two, a 180 and
/// the 200 right behind it could be read by different tasks, and the one
/// holding the 180 could lose its CPU before queueing it, so the 200 was
/// relayed first (docs/isolation.md: SIPp calls failed that way, 1 in
/// 1,000 while another tenant's loop kept the cores busy, and a few in
/// 10,000 at 2,000-4,000 calls/s).
pub const RECEIVERS: usize = 1;

/// Bind a UDP socket with large kernel buffers.
pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(BUFFER_BYTES) {
        tracing::warn!(%addr, error = %e, "cannot enlarge the receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(BUFFER_BYTES) {
        tracing::warn!(%addr, error = %e, "cannot enlarge the send buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Receive datagrams, many per system call, and hand each to the
/// dispatcher, which keeps the messages of one call in order.
pub async fn receive_loop(
    transports: Arc<Transports>,
    local: SocketAddr,
    socket: Arc<UdpSocket>,
) -> anyhow::Result<()> {
    tracing::info!(%local, "listening on udp");
    let mut batch = Batch::default();
    loop {
        let datagrams = match batch.recv(&socket).await {
            Ok(d) => d,
            Err(e) => {
                // ICMP errors from earlier sends surface here on some systems.
                tracing::debug!(%local, error = %e, "udp receive error");
                continue;
            }
        };
        for (data, source) in datagrams {
            transports.deliver(Inbound {
                transport: Transport::Udp,
                local,
                source,
                data,
            });
        }
    }
}
