//! kemibox's admin API: JSON-RPC 2.0 over HTTP, one request per `POST`,
//! on its own listen address (Kamailio's `jsonrpcs` with `kamcmd`-style
//! method names).
//!
//! This crate knows the protocol, not kemibox: [`rpc`] frames requests
//! and responses, [`auth`] checks bearer tokens and says who is calling,
//! [`server`] serves HTTP (through `kemibox_metrics::http`, so the admin
//! and metrics endpoints share one bounded reader) and dispatches to a
//! [`server::Methods`] the binary implements, and [`client`] is the
//! `kemibox ctl` side. Keeping the binary's methods behind a trait lets
//! the framing and auth be tested here without a proxy.

pub mod auth;
pub mod client;
pub mod rpc;
pub mod server;

pub use auth::{Caller, Tokens};
pub use rpc::{Params, RpcError};
pub use server::{Methods, bind, serve};
