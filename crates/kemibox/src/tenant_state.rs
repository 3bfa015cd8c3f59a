//! A tenant's module state ([`TenantState`]) built from its configuration:
//! one place where each KEMI module that keeps state across messages
//! (htable, pike, permissions, acc, ...) turns its settings into that state.

use kemibox_kemi::TenantState;

use crate::config::Tenant;

/// The module state `tenant`'s configuration asks for. Errors name the
/// tenant and the setting. `acc`: the process's accounting writer, which
/// every tenant's records go to (the tenant a column).
#[allow(
    clippy::field_reassign_with_default,
    reason = "each module sets its own field on its own lines"
)]
pub async fn open(tenant: &Tenant, acc: &kemibox_store::AccWriter) -> anyhow::Result<TenantState> {
    let mut state = TenantState::default();
    state.acc = kemibox_kemi::Acc {
        settings: tenant.acc.clone(),
        writer: Some(acc.clone()),
    };
    Ok(state)
}
