//! The RFC 3261 section 17 transaction layer of the kemibox proxy, as a
//! sans-IO library.
//!
//! A stateful proxy needs transactions to absorb retransmissions, to
//! retransmit over UDP itself, to ACK the non-2xx responses it receives,
//! and to know when a branch timed out. This crate does all of that as
//! pure state machines in a [`TransactionTable`]: no sockets, no async
//! runtime, no clock. The proxy feeds it
//!
//! * received messages ([`TransactionTable::on_received`]),
//! * its own decisions ([`TransactionTable::new_server`],
//!   [`TransactionTable::send_response`], [`TransactionTable::send_request`]),
//! * fired timers ([`TransactionTable::on_timer`]) and failed sends
//!   ([`TransactionTable::on_transport_error`]),
//!
//! each with the current time as [`Millis`], and carries out the
//! [`Effect`]s it gets back: send bytes, arm a timer, tell the proxy core
//! ([`TuEvent`]). Every timer rule can therefore be tested on a virtual
//! clock.
//!
//! Timers are never cancelled: a [`TimerId`] names its transaction, kind
//! and deadline, and a firing that no longer matches what the transaction
//! expects is ignored.
//!
//! The four machines follow RFC 3261 17.1.1 (INVITE client), 17.1.2
//! (non-INVITE client), 17.2.1 (INVITE server) and 17.2.2 (non-INVITE
//! server), with the 2xx handling of RFC 3261 itself: a 2xx ends an INVITE
//! transaction, and its retransmissions and ACK pass through the proxy
//! without one ([`Received::Stray`], [`Received::Ack`]). Matching is
//! described at [`ServerKey`] and [`ClientKey`].
//!
//! ```
//! use kemibox_sip::SipMessage;
//! use kemibox_tm::{Config, Effect, Millis, Received, TransactionTable};
//!
//! let mut table = TransactionTable::new(Config::default());
//! let options = SipMessage::parse(&b"OPTIONS sip:bob@192.0.2.4 SIP/2.0\r\n\
//!     Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx1\r\n\
//!     From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\n\
//!     Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"[..])?;
//! let (from, to) = ("192.0.2.1:5060".parse()?, "192.0.2.4:5060".parse()?);
//! let (client, effects) = table.send_request(options, from, to, false, Millis(0))?;
//! assert!(matches!(effects[0], Effect::Send { from: f, .. } if f == from));
//!
//! let ok = SipMessage::parse(&b"SIP/2.0 200 OK\r\n\
//!     Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx1\r\n\
//!     From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>;tag=b\r\n\
//!     Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"[..])?;
//! let Received::Response { client: matched, .. } = table.on_received(&ok, Millis(20)) else {
//!     panic!("not matched");
//! };
//! assert_eq!(matched, client);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::string_slice,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

mod client_invite;
mod client_non_invite;
mod effects;
mod error;
mod generate;
mod key;
mod machine;
mod peer;
mod server_invite;
mod server_non_invite;
mod table;
mod timers;

pub use effects::{ClientId, Effect, ServerId, TuEvent, TxId};
pub use error::TxError;
pub use key::{ClientKey, KeyError, MAGIC_COOKIE, ServerKey, has_magic_cookie};
pub use machine::{ClientState, ServerState};
pub use peer::Peer;
pub use server_invite::AutoTrying;
pub use table::{Config, Received, TransactionTable};
pub use timers::{Millis, TimerId, TimerKind, Timers};
