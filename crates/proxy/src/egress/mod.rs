//! What leaves the proxy: requests relayed on (our Via, `ksr_onsend_route`,
//! the next hop), replies of our own and replies forwarded back. Below the
//! transaction core and above the transport; it runs no route but
//! `ksr_onsend_route`, through the route runner.

mod forward;
mod onsend;
mod reply;

use std::collections::hash_map::RandomState;
use std::net::SocketAddr;
use std::sync::Arc;

use kemibox_kemi::{Message, Transport};

use crate::transport::{SendOptions, Transports};

pub use forward::{Hop, next_hop, our_via, resolve};
pub use onsend::allows as onsend_allows;
pub use reply::build as build_reply;

/// The sending side of the proxy: its sockets and the salt of its Via
/// branches.
pub struct Egress {
    transports: Arc<Transports>,
    branch_salt: RandomState,
}

impl Egress {
    pub fn new(transports: Arc<Transports>) -> Egress {
        Egress {
            transports,
            branch_salt: RandomState::new(),
        }
    }

    pub fn transports(&self) -> &Arc<Transports> {
        &self.transports
    }

    /// The socket a request relayed to `hop` leaves from, and its Via
    /// names: the one `KSR.corex.set_send_socket` chose when it is one of
    /// ours of the hop's transport, else the one the request arrived on
    /// when its transport is the hop's, else our first of that transport
    /// and IP family. `None` (logged) when there is no such listener.
    pub fn sending_socket(&self, message: &Message, hop: Hop) -> Option<SocketAddr> {
        self.socket_for(message.send_socket, message.local, hop)
    }

    /// [`Egress::sending_socket`] from its parts: the socket `chosen` (the
    /// script's or a local request's), and `near`, the address whose
    /// socket (or IP family) is preferred: the one a relayed request
    /// arrived on, or a local request's destination.
    pub fn socket_for(
        &self,
        chosen: Option<(Transport, SocketAddr)>,
        near: SocketAddr,
        hop: Hop,
    ) -> Option<SocketAddr> {
        if let Some((transport, local)) = chosen {
            if transport == hop.transport && self.transports.has_socket(transport, local) {
                return Some(local);
            }
            tracing::warn!(
                socket = %local,
                transport = transport.as_str(),
                peer = %hop.addr,
                "the send socket the script set cannot reach this hop: using the usual one"
            );
        }
        let own = self.transports.own_address(hop.transport, near);
        if own.is_none() {
            tracing::warn!(peer = %hop.addr, "cannot relay: no {} listener", hop.transport.as_str());
        }
        own
    }

    /// A Via branch (without the magic cookie) for `key`: the same key
    /// gives the same branch in this process, and no one outside can tell
    /// the next one (the hash is salted at start), so responses cannot be
    /// forged ahead of the request.
    pub fn branch_hash(&self, key: &str) -> u64 {
        reply::salted_hash(&self.branch_salt, &[key])
    }

    /// Send `bytes` from our socket `from` (or the nearest of that
    /// transport), logging a failure with `what` was sent.
    pub async fn send(
        &self,
        transport: Transport,
        from: SocketAddr,
        to: SocketAddr,
        bytes: Vec<u8>,
        options: SendOptions,
        what: &str,
    ) -> bool {
        let local = self.transports.own_address(transport, from).unwrap_or(from);
        match self
            .transports
            .send(transport, local, to, bytes, options)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::info!(peer = %to, error = %e, "sending {what} failed");
                false
            }
        }
    }
}

/// How the request in `m` may be relayed over TCP (`KSR.set_forward_*`).
pub fn forward_options(m: &Message) -> SendOptions {
    SendOptions {
        no_connect: m.forward_no_connect,
        close: m.forward_close,
    }
}

/// How replies to the request in `m` may be sent over TCP
/// (`KSR.set_reply_*`).
pub fn reply_options(m: &Message) -> SendOptions {
    SendOptions {
        no_connect: m.reply_no_connect,
        close: m.reply_close,
    }
}
