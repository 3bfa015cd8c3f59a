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

/// A networked store that cannot be reached, for the modules' tests of
/// how store failures reach scripts and logs.
#[cfg(test)]
pub(crate) mod unreachable {
    use async_trait::async_trait;
    use kemibox_store::{Binding, Located, LocationStore, StoreError, Subscriber, SubscriberStore};

    pub(crate) struct Unreachable;

    fn down() -> StoreError {
        StoreError::Unavailable {
            backend: "test",
            detail: "connection refused".into(),
        }
    }

    #[async_trait]
    impl SubscriberStore for Unreachable {
        async fn add(&self, _: &str, _: &str, _: &str, _: &str) -> Result<(), StoreError> {
            Err(down())
        }
        async fn remove(&self, _: &str, _: &str, _: &str) -> Result<bool, StoreError> {
            Err(down())
        }
        async fn get(&self, _: &str, _: &str, _: &str) -> Result<Option<Subscriber>, StoreError> {
            Err(down())
        }
        async fn list(&self, _: &str) -> Result<Vec<Subscriber>, StoreError> {
            Err(down())
        }
    }

    #[async_trait]
    impl LocationStore for Unreachable {
        async fn lookup(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: u64,
        ) -> Result<Vec<Binding>, StoreError> {
            Err(down())
        }
        async fn save(&self, _: &str, _: &str, _: &Binding) -> Result<(), StoreError> {
            Err(down())
        }
        async fn remove(&self, _: &str, _: &str, _: &str, _: &str) -> Result<bool, StoreError> {
            Err(down())
        }
        async fn remove_aor(&self, _: &str, _: &str, _: &str) -> Result<usize, StoreError> {
            Err(down())
        }
        async fn dump(&self, _: Option<&str>, _: u64) -> Result<Vec<Located>, StoreError> {
            Err(down())
        }
        async fn expire(&self, _: u64) -> Result<usize, StoreError> {
            Err(down())
        }
    }
}
