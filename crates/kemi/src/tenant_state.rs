//! What one tenant's KEMI modules keep beyond a message and an instance:
//! hash tables, flood counters, address tables, accounting, its defines
//! and environment. One [`TenantState`] is shared by every instance of the
//! tenant's pool and survives script reloads (as Kamailio's shared memory
//! survives nothing but is shared by all its workers); no other tenant
//! ever holds it, so tenants cannot see each other's module state.
//!
//! Each module adds its field here and builds it from the tenant's
//! configuration in crates/kemibox/src/tenant_state.rs.

use std::collections::BTreeMap;

/// A tenant's module state (see the module docs).
#[derive(Debug, Default)]
pub struct TenantState {
    /// `KSR.pike`: flood counters per source address.
    pub pike: crate::Pike,
    /// `KSR.permissions`: the cached address table.
    pub permissions: crate::Permissions,
    /// `KSR.ipops`: DNS timeout and resolver.
    pub ipops: crate::Ipops,
    /// The tenant's variables (`[env]` / `[tenant.env]`): what `os.getenv`
    /// and `KSR.kx.get_env` read; never the process environment.
    pub env: BTreeMap<String, String>,
    /// The tenant's defines (`defines`), as Kamailio's `#!define NAME
    /// [VALUE]`: name to value ("" when none). `KSR.kx.ifdef` and
    /// `KSR.kx.get_def` read them.
    pub defines: BTreeMap<String, String>,
    /// Accounting settings and where its database records go (`KSR.acc`,
    /// and the proxy's transaction accounting).
    pub acc: crate::Acc,
    /// `KSR.htable` and `$sht(...)`: the tenant's hash tables.
    pub htable: crate::htable::Htables,
    /// The proxy, for requests modules send on their own (dispatcher
    /// probes, dialog BYEs).
    pub uac: crate::uac::UacHandle,
}

/// The htable and pike numbers the metrics export per tenant.
impl kemibox_metrics::ModuleSource for TenantState {
    fn read(&self) -> kemibox_metrics::ModuleReading {
        kemibox_metrics::ModuleReading {
            htables: self.htable.readings(kemibox_store::unix_now()),
            pike: kemibox_metrics::PikeReading {
                blocked: self.pike.blocked(),
                tracked: self.pike.tracked() as u64,
            },
        }
    }
}
