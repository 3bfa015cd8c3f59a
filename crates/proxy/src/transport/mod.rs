//! Sockets: UDP datagrams and TCP connections (framed by Content-Length),
//! behind one `send` so the rest of the proxy does not care which.

mod batch;
mod tcp;
mod udp;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use kemibox_kemi::Transport;
use tokio::net::{TcpListener, UdpSocket};

use crate::Listen;

pub(crate) use tcp::Connections;

/// One message as it arrived.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub transport: Transport,
    /// Our address it arrived on (the listener for TCP).
    pub local: SocketAddr,
    pub source: SocketAddr,
    pub data: Vec<u8>,
}

/// Where received messages go (the dispatcher): the transport layer knows
/// nothing above it.
pub(crate) type Sink = Arc<dyn Fn(Inbound) + Send + Sync>;

/// How one message is sent over a connection-oriented transport, as the
/// script asked (`KSR.set_forward_no_connect`, `KSR.set_forward_close`,
/// `KSR.set_reply_no_connect`, `KSR.set_reply_close`). UDP ignores both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Send only over a connection already open to the destination.
    pub no_connect: bool,
    /// Close the connection once the message is written.
    pub close: bool,
}

/// The proxy's bound sockets and open TCP connections.
pub struct Transports {
    /// UDP sockets with their bound address (read once: asking the kernel
    /// on every send is a syscall per message).
    udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
    tcp: std::sync::Mutex<Vec<TcpListener>>,
    tcp_local: Vec<SocketAddr>,
    connections: Connections,
    /// Set by [`Transports::start`].
    sink: OnceLock<Sink>,
}

impl Transports {
    /// Bind every listen address; the error names the one that failed.
    pub async fn bind(listen: &[Listen]) -> anyhow::Result<Transports> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let mut tcp_local = Vec::new();
        for l in listen {
            let failed = |e: io::Error| anyhow::anyhow!("cannot listen on {l}: {e}");
            match l.transport {
                Transport::Udp => {
                    let socket = udp::bind(l.addr).map_err(failed)?;
                    udp.push((socket.local_addr()?, Arc::new(socket)));
                }
                Transport::Tcp => {
                    let listener = TcpListener::bind(l.addr).await.map_err(failed)?;
                    tcp_local.push(listener.local_addr()?);
                    tcp.push(listener);
                }
            }
        }
        Ok(Transports {
            udp,
            tcp: std::sync::Mutex::new(tcp),
            tcp_local,
            connections: Connections::default(),
            sink: OnceLock::new(),
        })
    }

    pub(crate) fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Every bound address with its transport (ports as actually bound).
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        let udp = self.udp.iter().map(|(a, _)| (Transport::Udp, *a));
        let tcp = self.tcp_local.iter().map(|a| (Transport::Tcp, *a));
        udp.chain(tcp).collect()
    }

    /// Start receiving on every socket; each message goes to `sink`.
    pub(crate) fn start(
        self: &Arc<Self>,
        sink: Sink,
        tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
    ) {
        let _ = self.sink.set(sink);
        for (local, socket) in &self.udp {
            for _ in 0..udp::RECEIVERS {
                tasks.spawn(udp::receive_loop(self.clone(), *local, socket.clone()));
            }
        }
        let listeners = std::mem::take(&mut *self.tcp.lock().unwrap_or_else(|e| e.into_inner()));
        for listener in listeners {
            tasks.spawn(tcp::accept_loop(self.clone(), listener));
        }
    }

    /// Hand a received message on (to the sink given to `start`).
    fn deliver(&self, inbound: Inbound) {
        if let Some(sink) = self.sink.get() {
            sink(inbound);
        }
    }

    /// Our listening socket `local` of `transport`, if we have it (for
    /// `KSR.corex.set_send_socket`).
    pub fn has_socket(&self, transport: Transport, local: SocketAddr) -> bool {
        match transport {
            Transport::Udp => self.udp.iter().any(|(a, _)| *a == local),
            Transport::Tcp => self.tcp_local.contains(&local),
        }
    }

    /// Our address for `transport` to put in Via and Record-Route: the one
    /// a message arrived on when it is of that transport, else the first
    /// listener of that transport with the same IP family.
    pub fn own_address(&self, transport: Transport, arrived_on: SocketAddr) -> Option<SocketAddr> {
        fn pick<'a>(
            candidates: impl Iterator<Item = &'a SocketAddr> + Clone,
            arrived_on: SocketAddr,
        ) -> Option<SocketAddr> {
            candidates
                .clone()
                .find(|a| **a == arrived_on)
                .or_else(|| {
                    candidates
                        .into_iter()
                        .find(|a| a.is_ipv4() == arrived_on.is_ipv4())
                })
                .copied()
        }
        match transport {
            Transport::Udp => pick(self.udp.iter().map(|(a, _)| a), arrived_on),
            Transport::Tcp => pick(self.tcp_local.iter(), arrived_on),
        }
    }

    /// Send `bytes` to `to` over `transport`, from our address `local` for
    /// UDP; over TCP through the open connection to `to`, or a new one
    /// (see [`SendOptions`]).
    pub(crate) async fn send(
        self: &Arc<Self>,
        transport: Transport,
        local: SocketAddr,
        to: SocketAddr,
        bytes: Vec<u8>,
        options: SendOptions,
    ) -> io::Result<()> {
        match transport {
            Transport::Udp => {
                let (_, socket) = self
                    .udp
                    .iter()
                    .find(|(a, _)| *a == local)
                    .or_else(|| self.udp.iter().find(|(a, _)| a.is_ipv4() == to.is_ipv4()))
                    .ok_or_else(|| io::Error::other(format!("no UDP socket to reach {to}")))?;
                socket.send_to(&bytes, to).await.map(|_| ())
            }
            Transport::Tcp => self.connections.send(self, to, bytes, options).await,
        }
    }
}
