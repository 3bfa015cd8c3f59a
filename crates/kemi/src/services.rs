//! What KEMI modules reach beyond the message: the stores behind the
//! registrar and authentication, and their settings. One `Services` is
//! shared by every instance of a tenant; the stores scope every call by
//! tenant, so one tenant never sees another's data.

use std::sync::Arc;

use kemibox_store::{LocationStore, SqliteStore, SubscriberStore};

use crate::nonce::Nonces;

/// The registrar's expiry rules (Kamailio's registrar parameters of the
/// same names), in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrarSettings {
    /// Expiry for a Contact with neither an expires parameter nor an
    /// Expires header.
    pub default_expires: u32,
    /// Shorter non-zero expiries are refused with 423 and Min-Expires.
    pub min_expires: u32,
    /// Longer expiries are cut to this; 0: no maximum.
    pub max_expires: u32,
    /// Bindings per AOR; 0: no limit. Over it, save fails with 503.
    pub max_contacts: u32,
}

impl Default for RegistrarSettings {
    fn default() -> RegistrarSettings {
        RegistrarSettings {
            default_expires: 3600,
            min_expires: 60,
            max_expires: 0,
            max_contacts: 0,
        }
    }
}

/// The stores and settings the registrar and auth modules use.
pub struct Services {
    pub location: Arc<dyn LocationStore>,
    pub subscribers: Arc<dyn SubscriberStore>,
    pub registrar: RegistrarSettings,
    /// Nonces issued by `auth_challenge` and checked by `auth_check`.
    pub nonces: Nonces,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("registrar", &self.registrar)
            .finish_non_exhaustive()
    }
}

impl Services {
    /// Everything in one in-memory SQLite database: for `kemibox route`
    /// and tests, nothing persists.
    pub fn in_memory() -> Arc<Services> {
        let store = Arc::new(SqliteStore::open_in_memory().expect("in-memory SQLite"));
        Arc::new(Services {
            location: store.clone(),
            subscribers: store,
            registrar: RegistrarSettings::default(),
            nonces: Nonces::new(Nonces::random_secret(), Nonces::DEFAULT_EXPIRY),
        })
    }
}
