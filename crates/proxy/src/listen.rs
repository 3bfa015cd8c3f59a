//! Listen addresses as operators write them: `udp:IP:PORT`, `tcp:IP:PORT`.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use kemibox_kemi::Transport;

/// A socket to listen on (IPv6 as `udp:[::1]:5060`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl Default for Listen {
    fn default() -> Listen {
        Listen {
            transport: Transport::Udp,
            addr: SocketAddr::from(([127, 0, 0, 1], 5060)),
        }
    }
}

impl FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Listen, String> {
        let (proto, addr) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected udp:IP:PORT or tcp:IP:PORT"))?;
        let transport = match proto.to_ascii_lowercase().as_str() {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            other => return Err(format!("{s:?}: unknown transport {other:?} (udp or tcp)")),
        };
        let addr = addr
            .parse()
            .map_err(|e| format!("{s:?}: bad address {addr:?} ({e}); expected {proto}:IP:PORT"))?;
        Ok(Listen { transport, addr })
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport.as_str(), self.addr)
    }
}
