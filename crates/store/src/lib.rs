//! Storage behind the registrar and authentication, one trait per kind of
//! data, scoped by tenant: what one tenant stores, another cannot read.
//!
//! [`SubscriberStore`] holds the users that digest authentication checks,
//! with their HA1 hashes (RFC 7616 section 3.4.2: `H(user:realm:password)`
//! for MD5 and SHA-256), never the password. [`SqliteStore`] is the
//! embedded default: one file, created on first use.

mod sqlite;
mod subscriber;

pub use sqlite::SqliteStore;
pub use subscriber::{Subscriber, SubscriberStore, ha1_md5, ha1_sha256};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    /// An argument that can never be stored (empty user, ...).
    #[error("{0}")]
    Invalid(String),
}
