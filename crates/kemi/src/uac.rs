//! Requests the proxy sends on its own, not relayed from anyone: the
//! dispatcher's OPTIONS probes, and the dialog module's BYEs and in-dialog
//! keep-alives. Modules describe the request ([`LocalRequest`]) and await
//! its final reply; the proxy ([`Uac`], implemented in crates/proxy) adds
//! the Via, Max-Forwards and Content-Length, runs a client transaction
//! (retransmissions, Timer B/F) and answers with the final status, a
//! timeout being the 408 the transaction layer makes up.
//!
//! Tenant state is built before the proxy exists, so modules hold a
//! [`UacHandle`] the proxy is put into once it runs.

use std::fmt;
use std::sync::{Arc, OnceLock};

/// A request the proxy originates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalRequest {
    /// "OPTIONS", "BYE", ...
    pub method: String,
    /// The Request-URI.
    pub ruri: String,
    /// The From header's value, tag included (`<sip:a@b>;tag=x`).
    pub from: String,
    /// The To header's value (with the remote tag for in-dialog requests).
    pub to: String,
    pub call_id: String,
    pub cseq: u32,
    /// Route header values in order (a dialog's route set); the request
    /// goes to the first when it is a loose router, as RFC 3261 12.2.1.1.
    pub route: Vec<String>,
    /// Where to send instead of what the route set or Request-URI says
    /// (as `$du`: a dispatcher destination, a contact's received address).
    pub next_hop: Option<String>,
    /// The socket to send from, Kamailio's `proto:ip:port` form; `None`:
    /// one of the proxy's sockets for the destination's transport.
    pub socket: Option<String>,
    /// More header lines, each ending with CRLF (Contact, Reason, ...).
    pub headers: String,
    /// The body, with its type (`Content-Type` value) when there is one.
    pub body: Option<(String, Vec<u8>)>,
}

/// The final reply to a [`LocalRequest`] (or the 408 of its timeout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub reason: String,
}

/// Why a [`LocalRequest`] was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UacError {
    /// The destination does not resolve, or names no transport we have.
    Unroutable(String),
    /// The request could not be built or sent (socket error, table full).
    Send(String),
}

impl fmt::Display for UacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UacError::Unroutable(why) => write!(f, "unroutable: {why}"),
            UacError::Send(why) => write!(f, "not sent: {why}"),
        }
    }
}

impl std::error::Error for UacError {}

/// Sends [`LocalRequest`]s: the proxy's side of this interface.
#[async_trait::async_trait]
pub trait Uac: Send + Sync {
    /// Send `request` in a client transaction of its own and wait for its
    /// final reply (provisional ones are absorbed).
    async fn send(&self, request: LocalRequest) -> Result<LocalReply, UacError>;
}

/// Where modules find the proxy's [`Uac`] once it runs. Cloned into every
/// tenant's state; set once at start.
#[derive(Clone, Default)]
pub struct UacHandle(Arc<OnceLock<Arc<dyn Uac>>>);

impl UacHandle {
    /// Put the proxy in; later calls are ignored (one proxy per process).
    pub fn set(&self, uac: Arc<dyn Uac>) {
        let _ = self.0.set(uac);
    }

    /// The proxy's UAC, or `None` before the proxy runs (`kemibox route`,
    /// `kemibox check`, unit tests): callers log and skip the request.
    pub fn get(&self) -> Option<&Arc<dyn Uac>> {
        self.0.get()
    }
}

impl fmt::Debug for UacHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UacHandle")
            .field(&self.0.get().is_some())
            .finish()
    }
}
