//! Zero-copy SIP (RFC 3261) message model for the kemibox proxy.
//!
//! A received datagram is parsed into a [`SipMessage`] that keeps the bytes
//! and records where the start line, each header and the body are. A
//! routing script's changes are collected in an [`Edits`] value beside it
//! (Kamailio's "lumps"): reads keep seeing the message as received, and
//! [`render`] produces the forwarded message with every untouched header
//! copied byte for byte. [`build_reply`] makes the proxy's own replies and
//! [`stream_frame_len`] splits TCP/TLS streams into messages.
//!
//! The input is untrusted network data: nothing here panics on any input
//! (indexing goes through `get`, there is no recursion, sizes are bounded
//! by [`MAX_MESSAGE_SIZE`] and [`MAX_HEADERS`]), and every rejection carries
//! a short [`ParseError::reason`] fit for a `400 Bad Request`.
//!
//! ```
//! use kemibox_sip::{Edits, SipMessage, render};
//!
//! let msg = SipMessage::parse(&b"OPTIONS sip:bob@example.com SIP/2.0\r\n\
//!     Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n"[..])?;
//! let mut edits = Edits::new();
//! edits.set_ruri("sip:bob@192.0.2.20")?;
//! edits.append_header(&msg, "X-Routed: yes")?;
//! let out = render(&msg, &edits);
//! assert!(out.starts_with(b"OPTIONS sip:bob@192.0.2.20 SIP/2.0\r\n"));
//! # Ok::<(), kemibox_sip::ParseError>(())
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

mod edits;
mod error;
mod frame;
mod lex;
mod message;
mod method;
mod name_addr;
mod names;
mod params;
mod parse;
mod render;
mod reply;
mod uri;
mod via;

pub use edits::Edits;
pub use error::ParseError;
pub use frame::stream_frame_len;
pub use message::{Contacts, SipMessage};
pub use method::Method;
pub use name_addr::NameAddr;
pub use names::names_equal;
pub use params::{Param, Params};
pub use parse::{MAX_HEADERS, MAX_MESSAGE_SIZE};
pub use render::{render, render_into};
pub use reply::build_reply;
pub use uri::{Scheme, Uri};
pub use via::{Received, Via};
