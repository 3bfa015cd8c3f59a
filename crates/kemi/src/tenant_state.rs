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
    /// `KSR.dispatcher`: destination sets, their states, call loads.
    pub dispatcher: crate::dispatcher::Dispatcher,
    /// The proxy, for requests modules send on their own (dispatcher
    /// probes, dialog BYEs).
    pub uac: crate::uac::UacHandle,
    /// Dialog profiles (`set_dlg_profile`, `get_profile_size`, ...) and
    /// the tenant's call count for its `max_calls` quota.
    pub profiles: crate::dialog_profiles::Profiles,
    /// `KSR.dialog`, `$dlg...` and the proxy's call tracking (`max_calls`).
    pub dialog: crate::dialog::DialogState,
}

/// What the tenant's modules report to the metrics registry at a scrape.
impl kemibox_metrics::ModuleMetrics for TenantState {
    fn series(&self, out: &mut Vec<kemibox_metrics::ModuleSeries>) {
        self.dispatcher.metric_series(out);
        self.htable.metric_series(kemibox_store::unix_now(), out);
        self.pike.metric_series(out);
        self.dialog.table.metrics().metric_series(out);
        if self.profiles.is_shared() {
            self.profiles.metrics().metric_series(out);
        }
    }
}
