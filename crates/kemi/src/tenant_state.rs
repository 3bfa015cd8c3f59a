//! What one tenant's KEMI modules keep beyond a message and an instance:
//! hash tables, flood counters, address tables, accounting, its defines
//! and environment. One [`TenantState`] is shared by every instance of the
//! tenant's pool and survives script reloads (as Kamailio's shared memory
//! survives nothing but is shared by all its workers); no other tenant
//! ever holds it, so tenants cannot see each other's module state.
//!
//! Each module adds its field here and builds it from the tenant's
//! configuration in crates/kemibox/src/tenant_state.rs.

/// A tenant's module state (see the module docs).
#[derive(Debug, Default)]
pub struct TenantState {
    /// `KSR.htable` and `$sht(...)`: the tenant's hash tables.
    pub htable: crate::htable::Htables,
}
