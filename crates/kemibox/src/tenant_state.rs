//! A tenant's module state ([`TenantState`]) built from its configuration:
//! one place where each KEMI module that keeps state across messages
//! (htable, pike, permissions, acc, ...) turns its settings into that state.

use std::sync::Arc;

use kemibox_kemi::{Ipops, Permissions, Pike, TenantState};
use kemibox_store::AddressStore;

use crate::config::Tenant;

/// The module state `tenant`'s configuration asks for, its address table
/// read from `addresses`. Errors name the tenant and the setting. `acc`:
/// the process's accounting writer, which every tenant's records go to
/// (the tenant a column).
pub async fn open(
    tenant: &Tenant,
    addresses: &Arc<dyn AddressStore>,
    acc: &kemibox_store::AccWriter,
) -> anyhow::Result<TenantState> {
    let id = tenant.id.as_str();
    let sec = &tenant.sec;
    let permissions = Permissions::open(id, addresses.clone(), sec.peer_tag_avp.clone())
        .await
        .map_err(|e| anyhow::anyhow!("tenant {id}: loading the permissions address table: {e}"))?;
    Ok(TenantState {
        pike: Pike::new(sec.pike),
        permissions,
        ipops: Ipops::new(sec.dns_timeout, sec.dns_server),
        // Lua: os.getenv / KSR.kx.get_env, KSR.kx.ifdef.
        env: tenant.env.clone(),
        defines: tenant.defines.clone(),
        acc: kemibox_kemi::Acc {
            settings: tenant.acc.clone(),
            writer: Some(acc.clone()),
        },
    })
}
