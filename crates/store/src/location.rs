//! Locations (usrloc): where each address-of-record can be reached now.

use std::cmp::Ordering;

use async_trait::async_trait;

use crate::StoreError;

/// One registered contact of an address-of-record (RFC 3261 section 10),
/// with what the registrar learned about it when it was saved.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The address-of-record, `user@domain` (domain lower-cased).
    pub aor: String,
    /// The Contact URI as registered.
    pub contact: String,
    /// When the binding ends, in Unix seconds.
    pub expires: u64,
    /// The q-value times 1000 (0..=1000); `None` when the Contact had none.
    pub q: Option<u16>,
    pub call_id: String,
    pub cseq: u32,
    /// Path header values of the REGISTER, in order (RFC 3327): requests
    /// to this contact are routed through them.
    pub path: Vec<String>,
    /// Where the REGISTER came from (`sip:IP:PORT;transport=udp`), kept
    /// when the contact is behind NAT, so requests reach it there.
    pub received: Option<String>,
    /// The local socket the REGISTER arrived on (`udp:IP:PORT`).
    pub socket: Option<String>,
    /// The `+sip.instance` Contact parameter (RFC 5626/5627 GRUU), as given.
    pub instance: Option<String>,
    /// The `reg-id` Contact parameter (RFC 5626).
    pub reg_id: Option<u32>,
    pub user_agent: Option<String>,
    /// When the binding was last saved, in Unix seconds.
    pub updated: u64,
}

impl Binding {
    /// Seconds left at `now` (0 once expired).
    pub fn remaining(&self, now: u64) -> u64 {
        self.expires.saturating_sub(now)
    }

    /// Whether `other` is the same binding as this one: the same instance
    /// and reg-id when the contact has an instance (RFC 5626), else the same
    /// Contact URI.
    pub fn same_as(&self, other: &Binding) -> bool {
        match (&self.instance, &other.instance) {
            (Some(a), Some(b)) => a == b && self.reg_id == other.reg_id,
            _ => self.contact == other.contact,
        }
    }

    /// The order requests try bindings in (lookup, `ul show`): highest q
    /// first, a binding without q ranking as q=0 (Kamailio's `default_q`),
    /// then the most recently saved. Every store sorts with this so that
    /// lookups agree whatever the backend.
    pub fn priority_cmp(&self, other: &Binding) -> Ordering {
        other
            .q
            .unwrap_or(0)
            .cmp(&self.q.unwrap_or(0))
            .then(other.updated.cmp(&self.updated))
    }
}

/// One binding with the tenant and table it belongs to (`kemibox ul show`).
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub tenant: String,
    pub table: String,
    pub binding: Binding,
}

/// Where bindings live. Every call names the tenant and the table (the
/// `"location"` of `KSR.registrar.save("location", 0)`): a tenant only
/// ever sees its own.
#[async_trait]
pub trait LocationStore: Send + Sync {
    /// The bindings of `aor` not expired at `now`, highest q first.
    async fn lookup(
        &self,
        tenant: &str,
        table: &str,
        aor: &str,
        now: u64,
    ) -> Result<Vec<Binding>, StoreError>;
    /// Add `binding`, or replace the one it is the same as
    /// ([`Binding::same_as`]).
    async fn save(&self, tenant: &str, table: &str, binding: &Binding) -> Result<(), StoreError>;
    /// `save` for Kamailio's save flag 1 ("memory only"): a store that
    /// keeps a cache in front of its database may skip the database, so
    /// the binding is lost on restart. By default the same as `save`.
    async fn save_in_memory(
        &self,
        tenant: &str,
        table: &str,
        binding: &Binding,
    ) -> Result<(), StoreError> {
        self.save(tenant, table, binding).await
    }
    /// Remove the binding of `aor` with this Contact URI; false when none.
    async fn remove(
        &self,
        tenant: &str,
        table: &str,
        aor: &str,
        contact: &str,
    ) -> Result<bool, StoreError>;
    /// Remove every binding of `aor`; how many there were.
    async fn remove_aor(&self, tenant: &str, table: &str, aor: &str) -> Result<usize, StoreError>;
    /// Every binding not expired at `now`, of one tenant or of all.
    async fn dump(&self, tenant: Option<&str>, now: u64) -> Result<Vec<Located>, StoreError>;
    /// Delete the bindings expired at `now`; how many.
    async fn expire(&self, now: u64) -> Result<usize, StoreError>;
}
