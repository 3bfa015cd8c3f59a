//! kemibox's admin API: JSON-RPC 2.0 over HTTP, one request or a batch
//! per `POST`, on its own listen address (Kamailio's `jsonrpcs` with
//! `kamcmd`-style method names).
//!
//! This crate knows the protocol, not kemibox: [`rpc`] holds the requests
//! and responses as serde types, [`auth`] checks bearer tokens (in
//! constant time) and says who is calling, [`server`] serves HTTP
//! (through `kemibox_metrics::http`, hyper with the limits both endpoints
//! share) and dispatches to a [`server::Methods`] the binary implements,
//! and [`client`] is the `kemibox ctl` side (hyper's client). Keeping the binary's methods behind a trait lets
//! the framing and auth be tested here without a proxy.

pub mod auth;
pub mod client;
pub mod rpc;
pub mod server;

pub use auth::{Caller, Keyring, Tokens};
pub use rpc::{Params, RpcError};
pub use server::{Methods, bind, serve};
