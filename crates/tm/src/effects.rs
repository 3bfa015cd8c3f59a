//! What the transaction layer asks its caller to do, and the ids it hands out.

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::timers::{Millis, TimerId};

/// Identifies a client transaction (one per request the proxy sends on,
/// i.e. per branch, plus one per CANCEL it sends).
///
/// A branch sent with [`crate::TransactionTable::send_branch`] carries the
/// server transaction it belongs to and its index there
/// ([`ClientId::branch_of`]), so the proxy finds its branch state even
/// after the client transaction ended (Timer B, a 2xx): no map from client
/// to server is kept beside the table. Ids are never reused within one
/// [`crate::TransactionTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId {
    pub(crate) id: u64,
    pub(crate) branch: Option<(ServerId, u32)>,
}

/// Identifies a server transaction (one per request received and accepted
/// with [`crate::TransactionTable::new_server`]).
///
/// Distinct from [`ClientId`] so a response cannot be sent on a client
/// transaction by mistake; ids are never reused within one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerId(pub(crate) u64);

/// Either kind of transaction, for what applies to both (timers,
/// termination, transport errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TxId {
    /// A client transaction.
    Client(ClientId),
    /// A server transaction.
    Server(ServerId),
}

impl ClientId {
    #[cfg(test)]
    pub(crate) fn new(id: u64) -> ClientId {
        ClientId { id, branch: None }
    }

    /// The number behind the id, for logs.
    pub fn get(self) -> u64 {
        self.id
    }

    /// The server transaction this client transaction is a branch of, and
    /// the branch's index there (as given to
    /// [`crate::TransactionTable::send_branch`]).
    pub fn branch_of(self) -> Option<(ServerId, u32)> {
        self.branch
    }
}

impl ServerId {
    /// The number behind the id, for logs and for the proxy's own maps.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl From<ClientId> for TxId {
    fn from(id: ClientId) -> TxId {
        TxId::Client(id)
    }
}

impl From<ServerId> for TxId {
    fn from(id: ServerId) -> TxId {
        TxId::Server(id)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.id)
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxId::Client(c) => c.fmt(f),
            TxId::Server(s) => s.fmt(f),
        }
    }
}

/// One thing the caller must do on the layer's behalf.
///
/// The layer never touches sockets or clocks: every call returns the
/// effects in the order they must be carried out, which is what makes each
/// timer rule testable on a virtual clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send `bytes` from `from` to `to` (over the connection to `to` when
    /// `reliable`). A failure to send should be reported back with
    /// [`crate::TransactionTable::on_transport_error`].
    Send {
        /// The local socket to send from: for a server transaction the
        /// address its request arrived on ([`crate::Peer::local`]), for a
        /// client transaction the one given to
        /// [`crate::TransactionTable::send_request`].
        from: SocketAddr,
        /// Destination address.
        to: SocketAddr,
        /// The complete message.
        bytes: Bytes,
        /// Whether this goes over a reliable transport (TCP, TLS, ...).
        reliable: bool,
    },
    /// Call [`crate::TransactionTable::on_timer`] with `timer` at `at`.
    ///
    /// Timers are never cancelled: when a transaction changes state or
    /// ends, its pending timers simply become stale and `on_timer` ignores
    /// them. The caller may therefore keep every armed timer until it
    /// fires (or drop timers of transactions it saw terminate).
    Arm {
        /// What to report when the timer fires.
        timer: TimerId,
        /// When it fires (same clock as the `now` arguments).
        at: Millis,
    },
    /// Something the transaction user (the proxy core) must act on.
    Tu(TuEvent),
}

/// Events for the transaction user that do not come straight out of a
/// received message (responses are returned by
/// [`crate::TransactionTable::on_received`] itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TuEvent {
    /// Timer B (INVITE, still Calling) or Timer F (non-INVITE) fired: no
    /// final response came. The transaction is terminated; a proxy treats
    /// the branch as if it had received a 408 (RFC 3261 16.7, 16.8).
    Timeout {
        /// The transaction that timed out.
        client: ClientId,
    },
    /// Timer C (RFC 3261 16.6 step 11, 16.8) fired on an INVITE client
    /// transaction that is still without a final response. The transaction
    /// stays alive: the proxy sends a CANCEL (see
    /// [`crate::TransactionTable::build_cancel`]) when a provisional
    /// response arrived, or treats the branch as a 408 and terminates it.
    TimerC {
        /// The INVITE client transaction.
        client: ClientId,
    },
    /// A send reported with
    /// [`crate::TransactionTable::on_transport_error`] failed in a state
    /// where the TU must know (RFC 3261 17.1.4, 17.2.4). The transaction
    /// is terminated.
    TransportError {
        /// The transaction whose message could not be sent.
        id: TxId,
    },
    /// Timer H fired: the final non-2xx response to an INVITE was never
    /// acknowledged (RFC 3261 17.2.1). The transaction is terminated.
    AckTimeout {
        /// The INVITE server transaction.
        server: ServerId,
    },
    /// The transaction reached the Terminated state and was removed from
    /// the table; the proxy can drop whatever it kept for it.
    Terminated {
        /// The transaction that ended.
        id: TxId,
    },
}
