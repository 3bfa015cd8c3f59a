//! A tenant's module state ([`TenantState`]) built from its configuration:
//! one place where each KEMI module that keeps state across messages
//! (htable, pike, permissions, acc, ...) turns its settings into that state.

use kemibox_kemi::TenantState;

use crate::config::Tenant;

/// The module state `tenant`'s configuration asks for. Errors name the
/// tenant and the setting.
pub async fn open(tenant: &Tenant) -> anyhow::Result<TenantState> {
    let mut state = TenantState::default();
    // Lua: os.getenv / KSR.kx.get_env, KSR.kx.ifdef.
    (state.env, state.defines) = (tenant.env.clone(), tenant.defines.clone());
    Ok(state)
}
