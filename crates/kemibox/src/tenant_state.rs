//! A tenant's module state ([`TenantState`]) built from its configuration:
//! one place where each KEMI module that keeps state across messages
//! (htable, pike, permissions, acc, ...) turns its settings into that state.

use std::sync::Arc;
use std::time::Duration;

use kemibox_kemi::dispatcher::{Dispatcher, Table};
use kemibox_kemi::htable::Htables;
use kemibox_kemi::uac::UacHandle;
use kemibox_kemi::{Ipops, Permissions, Pike, TenantState};
use kemibox_store::{AddressStore, DispatcherStore, unix_now};

use crate::config::Tenant;
use crate::storage::{DialogStore, HtableBackends};
use kemibox_kemi::dialog::backup::Backup;
use kemibox_kemi::dialog_profiles::{DEFAULT_SIZE_CACHE, Profiles, Shared};

/// The module state `tenant`'s configuration asks for, its address table
/// read from `addresses`. Errors name the tenant and the setting. `acc`:
/// the process's accounting writer, which every tenant's records go to
/// (the tenant a column). `htables`: where its tables with a `dbtable`
/// keep their rows, and the Redis of those with `backend = "redis"`.
/// `uac`: the proxy, set once it runs. `dialogs`: where dialog profiles
/// and records with `backend = "redis"` are shared; this node's dialogs
/// saved there are restored. `dispatchers`: the dispatcher table, read
/// with `[dispatcher] db = true`.
pub async fn open(
    tenant: &Tenant,
    addresses: &Arc<dyn AddressStore>,
    dispatchers: &Arc<dyn DispatcherStore>,
    acc: &kemibox_store::AccWriter,
    htables: &HtableBackends,
    uac: &UacHandle,
    dialogs: Option<&DialogStore>,
) -> anyhow::Result<TenantState> {
    let id = tenant.id.as_str();
    let sec = &tenant.sec;
    let permissions = Permissions::open(id, addresses.clone(), sec.peer_tag_avp.clone())
        .await
        .map_err(|e| anyhow::anyhow!("tenant {id}: loading the permissions address table: {e}"))?;
    let (specs, db) = (tenant.htables.clone(), htables.db.clone());
    let htable = match &htables.redis {
        Some(redis) => Htables::with_redis(specs, id, db, redis.clone()),
        None => Htables::new(specs, id, db),
    };
    htable.load(unix_now()).await?;
    let table = Some(Table(dispatchers.clone())).filter(|_| tenant.dispatcher.db);
    let dispatcher = Dispatcher::open(id, tenant.dispatcher.clone(), table)
        .await
        .map_err(|e| anyhow::anyhow!("tenant {id}: {e}"))?;
    let profiles = profiles(tenant, dialogs);
    let state = TenantState {
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
        htable,
        dispatcher,
        uac: uac.clone(),
        dialog: kemibox_kemi::dialog::DialogState::new(
            tenant.dialog.clone(),
            backup(tenant, dialogs),
        ),
        profiles,
    };
    // Calls in progress when this node stopped: back in its table.
    let restored = state.dialog.restore(id, &state.profiles).await;
    if restored > 0 {
        tracing::info!(
            tenant = id,
            restored,
            "dialogs of this node restored from Redis"
        );
    }
    Ok(state)
}

/// Where the tenant's confirmed dialogs are saved so this node finds them
/// after a restart: with `[dialog] backend = "redis"`, as its profiles.
fn backup(tenant: &Tenant, dialogs: Option<&DialogStore>) -> Option<Backup> {
    let d = dialogs.filter(|_| tenant.dialog_profiles.redis)?;
    let store: Arc<dyn kemibox_store::DialogBackup> = d.redis.clone();
    Some(Backup::new(store, &d.node.name, tenant.dialog.max_dialogs))
}

/// The tenant's dialog profiles (and call count), shared when its
/// `[dialog] backend` is `"redis"`.
fn profiles(tenant: &Tenant, dialogs: Option<&DialogStore>) -> Profiles {
    let p = &tenant.dialog_profiles;
    let shared = dialogs.filter(|_| p.redis).map(|d| Shared {
        redis: d.redis.clone(),
        node: d.node.name.clone(),
        ttl: d.node.ttl,
        size_cache: DEFAULT_SIZE_CACHE,
    });
    Profiles::new(tenant.id.as_str(), &p.specs, p.max_memberships, shared)
}

/// How often the upkeep writes htable changes back.
const WRITE_BACK_EVERY: Duration = Duration::from_secs(1);
/// How many write-back periods between removals of expired htable items
/// (they are invisible from the moment they expire).
const PURGE_EVERY: u64 = 5;

/// Keep `state` for as long as the proxy runs (and it is held): the
/// dialog profiles' heartbeat, dispatcher probes, dialog lifetimes and
/// keep-alives, expired htable items removed, changes of tables with
/// `dbmode` written back.
/// A failed write stays pending, is retried at the next period, and is
/// logged once until a write succeeds again.
pub fn spawn_upkeep(tenant: &str, state: &Arc<TenantState>) {
    // Shared dialog profiles: this node's heartbeat and resync.
    state.profiles.spawn_heartbeat();
    // Dispatcher probes and call load expiry (when configured).
    kemibox_kemi::dispatcher::spawn(tenant, state);
    // Dialog lifetimes and keep-alives.
    tokio::spawn(kemibox_kemi::dialog::upkeep(
        tenant.to_string(),
        Arc::downgrade(state),
    ));
    if state.htable.is_empty() {
        return;
    }
    let tenant = tenant.to_string();
    let state = Arc::downgrade(state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(WRITE_BACK_EVERY);
        let mut failing = false;
        for n in 0u64.. {
            tick.tick().await;
            let Some(state) = state.upgrade() else {
                return;
            };
            let now = unix_now();
            if n % PURGE_EVERY == 0 {
                let removed = state.htable.purge_expired(now);
                if removed > 0 {
                    tracing::debug!(tenant, removed, "expired htable items removed");
                }
            }
            match state.htable.write_back(now).await {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!(tenant, "htable write-back works again");
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::error!(tenant, "{e:#}; retrying every second");
                }
                Err(_) => {}
            }
        }
    });
}

/// At shutdown: write back what is still pending.
pub async fn close(tenant: &str, state: &TenantState) {
    match state.htable.write_back(unix_now()).await {
        Ok(0) => {}
        Ok(rows) => tracing::info!(tenant, rows, "htable changes written back at shutdown"),
        Err(e) => tracing::error!(tenant, "{e:#}: lost at shutdown"),
    }
}
