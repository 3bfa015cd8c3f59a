//! Listen addresses and the UDP receive loop.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use tokio::net::UdpSocket;

use crate::Shared;

/// A socket to listen on: `udp:IP:PORT` (IPv6 as `udp:[::1]:5060`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
}

impl Default for Listen {
    fn default() -> Listen {
        Listen {
            addr: SocketAddr::from(([127, 0, 0, 1], 5060)),
        }
    }
}

impl FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Listen, String> {
        let (proto, addr) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected udp:IP:PORT"))?;
        if !proto.eq_ignore_ascii_case("udp") {
            return Err(format!("{s:?}: only udp listeners are supported so far"));
        }
        let addr = addr
            .parse()
            .map_err(|e| format!("{s:?}: bad address {addr:?} ({e}); expected udp:IP:PORT"))?;
        Ok(Listen { addr })
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "udp:{}", self.addr)
    }
}

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
        let data = data.to_vec();
        let shared = shared.clone();
        let socket = socket.clone();
        tokio::spawn(async move {
            crate::handler::handle(&shared, &socket, local, source, data).await;
        });
    }
}
