//! Storage behind the registrar and authentication, one trait per kind of
//! data, scoped by tenant: what one tenant stores, another cannot read.
//!
//! [`SubscriberStore`] holds the users that digest authentication checks,
//! with their HA1 hashes (RFC 7616 section 3.4.2: `H(user:realm:password)`
//! for MD5 and SHA-256), never the password. [`SqliteStore`] is the
//! embedded default: one file, created on first use.
//!
//! Several kemibox nodes share their users and registrations through
//! networked stores instead: [`PostgresSubscribers`] and [`RedisLocation`].
//!
//! [`HtableStore`] keeps the rows of htable tables declared with a
//! `dbtable`, so they survive a restart; [`RedisHtables`] keeps whole
//! tables in Redis, shared by several nodes.
//!
//! [`DispatcherStore`] holds the dispatcher's destinations of tenants
//! that read them from the database (`[dispatcher] db = true`).
//!
//! [`RedisDialogs`] shares dialog-profile memberships (profile sizes and
//! the call quota count every node's calls) and keeps each node's dialog
//! records ([`DialogBackup`]) so a restarted node finds its dialogs.

mod acc;
mod address;
mod dialog;
mod dispatcher;
mod htable;
mod location;
mod postgres;
mod redis;
mod redis_htable;
mod sqlite;
mod subscriber;

pub use self::redis::RedisLocation;
pub use self::redis_htable::{AddOutcome, HtableValue, RedisHtables, RedisItem, RedisTableRules};
pub use acc::{
    AccBackend, AccRecord, AccWriter, DEFAULT_QUEUE, MAX_REFUSALS, PostgresAcc, SqliteAcc,
    is_core_column, is_identifier,
};
pub use address::{AddressRow, AddressStore};
pub use dialog::{BACKUP_TTL, DialogBackup, Membership, NodeMembership, RedisDialogs};
pub use dispatcher::{DispatcherRow, DispatcherStore};
pub use htable::{
    HtableChanges, HtableRow, HtableStore, KEY_ARRAY, KEY_PLAIN, PostgresHtable, VALUE_INT,
    VALUE_STR,
};
pub use location::{Binding, Located, LocationStore};
pub use postgres::PostgresSubscribers;
pub use sqlite::SqliteStore;
pub use subscriber::{Subscriber, SubscriberStore, ha1_md5, ha1_sha256};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    /// A networked database (PostgreSQL, Redis) could not be reached or
    /// dropped the connection; the caller reports a negative result and
    /// the store reconnects on a later call.
    #[error("{backend} unavailable: {detail}")]
    Unavailable {
        backend: &'static str,
        detail: String,
    },
    /// An argument that can never be stored (empty user, ...).
    #[error("{0}")]
    Invalid(String),
}

/// The current time in Unix seconds, the clock binding expiries use.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
