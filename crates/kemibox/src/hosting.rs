//! The tenants a running `kemibox run` serves, and what changes them while
//! it runs: script reloads, asked for (admin API) or on a file change
//! (`auto_reload`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kemibox_kemi::TenantId;
use kemibox_sandbox::{LoadFailure, Pool, TenantSpec};

use crate::config;

/// Instances left idle this long are dropped; a tenant's next request
/// makes a new one (a fraction of a millisecond; docs/density.md).
pub const INSTANCE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One hosted tenant: what it was configured with (its id, script file,
/// sockets, domains, `auto_reload`) and the pool running its script.
pub struct HostedTenant {
    pub config: config::Tenant,
    pub pool: Arc<Pool>,
}

impl HostedTenant {
    /// Its id, as configured ("default" for a run without `[[tenant]]`).
    pub fn id(&self) -> &TenantId {
        &self.config.id
    }
}

/// Every hosted tenant, in configuration order.
pub struct Hosting {
    started: Instant,
    tenants: Vec<HostedTenant>,
}

/// A reload that took: the tenant's new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub tenant: TenantId,
    pub version: u64,
}

/// Why a reload did not happen; the old version still serves.
#[derive(Debug)]
pub enum ReloadError {
    UnknownTenant(String),
    /// The tenant runs the embedded default script: there is no file.
    Embedded(TenantId),
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The tenant's Lua modules (`lua_path`) could not be read.
    LuaModules(anyhow::Error),
    /// The new script did not load (`script:line: message`).
    Refused(LoadFailure),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::UnknownTenant(id) => write!(f, "no tenant {id:?}"),
            ReloadError::Embedded(id) => write!(
                f,
                "tenant {id} runs the embedded default script: there is no file to reload"
            ),
            ReloadError::Read { path, error } => write!(
                f,
                "cannot read {}: {error}; the old version still serves",
                path.display()
            ),
            ReloadError::LuaModules(error) => {
                write!(f, "{error:#}; the old version still serves")
            }
            ReloadError::Refused(failure) => {
                write!(f, "{failure}; the old version still serves")
            }
        }
    }
}

impl std::error::Error for ReloadError {}

impl Hosting {
    pub fn new(tenants: Vec<HostedTenant>) -> Hosting {
        Hosting {
            started: Instant::now(),
            tenants,
        }
    }

    pub fn tenants(&self) -> &[HostedTenant] {
        &self.tenants
    }

    pub fn find(&self, id: &str) -> Option<&HostedTenant> {
        self.tenants.iter().find(|t| *t.id() == *id)
    }

    /// Time since start.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Read tenant `id`'s script file again and make it the tenant's next
    /// version if it loads (see [`Pool::reload`]). Logged either way.
    pub async fn reload(&self, id: &str) -> Result<Reloaded, ReloadError> {
        let tenant = self
            .find(id)
            .ok_or_else(|| ReloadError::UnknownTenant(id.to_string()))?;
        let result = reload(tenant).await;
        match &result {
            Ok(r) => tracing::info!(tenant = %r.tenant, version = r.version, "script reloaded"),
            Err(e) => tracing::warn!(tenant = %id, "reload refused: {e}"),
        }
        result
    }

    /// Every 10 s, drop instances idle for [`INSTANCE_IDLE_TIMEOUT`], so
    /// tenants that went quiet give their memory back.
    pub fn spawn_trim(self: &Arc<Self>) {
        let hosting = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                let dropped: usize = hosting
                    .tenants
                    .iter()
                    .map(|t| t.pool.trim(INSTANCE_IDLE_TIMEOUT))
                    .sum();
                if dropped > 0 {
                    tracing::debug!(dropped, "idle instances dropped");
                }
            }
        });
    }

    /// Watch the files of the tenants with `auto_reload`, once a second,
    /// and reload on a change (size or modification time) of the script
    /// or of any of its Lua modules (`lua_path`; a module added or
    /// removed is a change too). A file that fails to load is tried again
    /// only when something changes again.
    pub fn spawn_watch(self: &Arc<Self>) {
        let watched: Vec<usize> = (0..self.tenants.len())
            .filter(|&i| {
                let config = &self.tenants[i].config;
                config.auto_reload && config.script.is_some()
            })
            .collect();
        if watched.is_empty() {
            return;
        }
        let hosting = self.clone();
        tokio::spawn(async move {
            let mut seen: Vec<Option<Stamp>> = watched
                .iter()
                .map(|&i| stamp(&hosting.tenants[i]))
                .collect();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                for (k, &i) in watched.iter().enumerate() {
                    let tenant = &hosting.tenants[i];
                    let now = stamp(tenant);
                    if now.is_none() || now == seen[k] {
                        continue;
                    }
                    seen[k] = now;
                    let _ = hosting.reload(tenant.id().as_str()).await;
                }
            }
        });
    }
}

/// The modification time and size of the files a tenant's script loads:
/// the script, then each Lua module file (`None` for one that vanished
/// between the listing and its metadata).
type Stamp = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

fn file_stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// `tenant`'s [`Stamp`]; `None` while its script cannot be read (being
/// rewritten): nothing to compare.
fn stamp(tenant: &HostedTenant) -> Option<Stamp> {
    let script = tenant.config.script.as_ref()?;
    let mut stamp = vec![(script.clone(), Some(file_stamp(script)?))];
    for module in crate::lua_modules::files(&tenant.config.lua_path) {
        let at = file_stamp(&module);
        stamp.push((module, at));
    }
    Some(stamp)
}

async fn reload(tenant: &HostedTenant) -> Result<Reloaded, ReloadError> {
    let id = tenant.id().clone();
    let Some(path) = &tenant.config.script else {
        return Err(ReloadError::Embedded(id));
    };
    // A script is small: read it in place.
    let source = std::fs::read_to_string(path).map_err(|error| ReloadError::Read {
        path: path.clone(),
        error,
    })?;
    // Its modules too: a reload picks up changed modules.
    let lua_modules =
        crate::lua_modules::read(&tenant.config.lua_path).map_err(ReloadError::LuaModules)?;
    let spec = TenantSpec {
        source,
        lua_modules: lua_modules.into(),
        ..tenant.pool.tenant().spec.clone()
    };
    let version = tenant
        .pool
        .reload(spec)
        .await
        .map_err(ReloadError::Refused)?;
    Ok(Reloaded {
        tenant: id,
        version,
    })
}
