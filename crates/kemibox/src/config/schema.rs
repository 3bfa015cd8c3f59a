//! The file as written: serde structs, every key optional, unknown keys
//! refused. A value that a check may refuse is [`Spanned`], so the error
//! can point at it (locate.rs); nothing here is checked or defaulted
//! beyond what serde does, so a value not given stays `None` and the
//! merge (validate.rs) can tell a tenant's own value from an inherited one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

/// A list whose entries can each be refused, itself spanned so an empty
/// list can be pointed at too.
pub type SpannedList = Spanned<Vec<Spanned<String>>>;

/// `[env]` / `[tenant.env]`: variable name to value.
pub type EnvTable = Spanned<BTreeMap<String, String>>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// The default tenant's script; beside `[[tenant]]` it is refused.
    pub script: Option<Spanned<PathBuf>>,
    pub listen: Option<SpannedList>,
    pub log: Option<String>,
    pub log_format: Option<crate::LogFormat>,
    pub error_reply: Option<Reply>,
    pub unmatched_reply: Option<Reply>,
    /// Every tenant's defaults (see [`File::defaults`]).
    #[serde(default)]
    pub limits: LimitsTable,
    pub rate_limited_reply: Option<LimitedReply>,
    pub relay_to: Option<SpannedList>,
    pub auto_reload: Option<bool>,
    /// The Lua side (docs/modules/lua-libraries.md): variables for
    /// `os.getenv`, defines for `KSR.kx.ifdef`, module directories.
    pub env: Option<EnvTable>,
    pub defines: Option<SpannedList>,
    pub lua_path: Option<SpannedList>,
    #[serde(default)]
    pub database: super::Database,
    #[serde(default)]
    pub registrar: RegistrarTable,
    #[serde(default)]
    pub auth: AuthTable,
    /// Spanned: a bad address is pointed at by the table's header (see
    /// validate::metrics).
    pub metrics: Option<Spanned<MetricsTable>>,
    #[serde(default)]
    pub admin: AdminTable,
    /// `[[htable]]`: every tenant's tables (a tenant's own of the same
    /// name replace them).
    #[serde(default)]
    pub htable: Vec<HtableEntry>,
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<TenantEntry>,
    /// `[pike]`, `[permissions]`, `[ipops]`: every tenant's defaults.
    #[serde(default)]
    pub pike: super::sec::PikeTable,
    #[serde(default)]
    pub permissions: super::sec::PermissionsTable,
    #[serde(default)]
    pub ipops: super::sec::IpopsTable,
    /// Every tenant's acc settings (see config/acc.rs).
    pub acc: Option<super::acc::AccTable>,
    /// Every tenant's dialog settings and profiles (see config/dialog.rs).
    pub dialog: Option<super::dialog::DialogTable>,
    /// Every tenant's dispatcher settings (see config/dispatcher.rs).
    pub dispatcher: Option<super::dispatcher::DispatcherTable>,
}

/// The keys a tenant may give and the top level gives every tenant as
/// its default, seen the same way at either level so that one merge and
/// one set of checks serve both. (serde's `flatten` would share the
/// fields, but it loses the spans and `deny_unknown_fields`.)
#[derive(Debug, Clone, Copy)]
pub struct TenantSettings<'a> {
    pub limits: &'a LimitsTable,
    pub rate_limited_reply: Option<&'a LimitedReply>,
    pub relay_to: Option<&'a SpannedList>,
    pub auto_reload: Option<bool>,
    pub env: Option<&'a EnvTable>,
    pub defines: Option<&'a SpannedList>,
    pub lua_path: Option<&'a SpannedList>,
}

impl File {
    /// The top level's tenant keys: every tenant's defaults.
    pub fn defaults(&self) -> TenantSettings<'_> {
        TenantSettings {
            limits: &self.limits,
            rate_limited_reply: self.rate_limited_reply.as_ref(),
            relay_to: self.relay_to.as_ref(),
            auto_reload: self.auto_reload,
            env: self.env.as_ref(),
            defines: self.defines.as_ref(),
            lua_path: self.lua_path.as_ref(),
        }
    }
}

impl File {
    /// The top level's pike, permissions and ipops tables.
    pub fn sec_tables(&self) -> super::sec::SecTables<'_> {
        super::sec::SecTables {
            pike: &self.pike,
            permissions: &self.permissions,
            ipops: &self.ipops,
        }
    }
}

impl TenantEntry {
    /// The tenant's own pike, permissions and ipops tables.
    pub fn sec_tables(&self) -> super::sec::SecTables<'_> {
        super::sec::SecTables {
            pike: &self.pike,
            permissions: &self.permissions,
            ipops: &self.ipops,
        }
    }

    /// The tenant's own values of the keys the top level defaults.
    pub fn settings(&self) -> TenantSettings<'_> {
        TenantSettings {
            limits: &self.limits,
            rate_limited_reply: self.rate_limited_reply.as_ref(),
            relay_to: self.relay_to.as_ref(),
            auto_reload: self.auto_reload,
            env: self.env.as_ref(),
            defines: self.defines.as_ref(),
            lua_path: self.lua_path.as_ref(),
        }
    }
}

/// One `[[tenant]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantEntry {
    pub id: Spanned<String>,
    pub script: PathBuf,
    #[serde(default)]
    pub listen: Vec<Spanned<String>>,
    #[serde(default)]
    pub domains: Vec<Spanned<String>>,
    pub modules: Option<Vec<Spanned<String>>>,
    pub admin_token: Option<Spanned<String>>,
    /// Its own values of the keys the top level defaults (see
    /// [`TenantEntry::settings`]).
    #[serde(default)]
    pub limits: LimitsTable,
    pub rate_limited_reply: Option<LimitedReply>,
    pub relay_to: Option<SpannedList>,
    pub auto_reload: Option<bool>,
    /// Its own `[tenant.pike]`, `[tenant.permissions]`, `[tenant.ipops]`.
    #[serde(default)]
    pub pike: super::sec::PikeTable,
    #[serde(default)]
    pub permissions: super::sec::PermissionsTable,
    #[serde(default)]
    pub ipops: super::sec::IpopsTable,
    pub env: Option<EnvTable>,
    pub defines: Option<SpannedList>,
    pub lua_path: Option<SpannedList>,
    /// Its own acc settings, key by key over the top level's `[acc]`.
    pub acc: Option<super::acc::AccTable>,
    /// Its own dialog settings and profiles, key by key over the top level's `[dialog]`.
    pub dialog: Option<super::dialog::DialogTable>,
    /// Its own dispatcher settings, key by key over `[dispatcher]`.
    pub dispatcher: Option<super::dispatcher::DispatcherTable>,
    /// `[[tenant.htable]]`: its own tables, beside or replacing the
    /// top level's.
    #[serde(default)]
    pub htable: Vec<HtableEntry>,
}

/// `[[htable]]` and `[[tenant.htable]]`: one hash table, with Kamailio's
/// table options (its `htable` parameter,
/// `name=>size=..;autoexpire=..;...`). Integers are read wide and checked
/// in validate.rs, so a refusal says the allowed range.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HtableEntry {
    pub name: Spanned<String>,
    pub size: Option<Spanned<i64>>,
    pub max_items: Option<Spanned<i64>>,
    pub autoexpire: Option<Spanned<i64>>,
    pub initval: Option<Spanned<i64>>,
    pub updateexpire: Option<Spanned<i64>>,
    pub dbtable: Option<Spanned<String>>,
    pub dbmode: Option<Spanned<i64>>,
    /// `"memory"` (the default) or `"redis"`: the table lives in the
    /// Redis of `[database] redis`, shared by every node using it.
    pub backend: Option<Spanned<String>>,
}

/// `[limits]` and `[tenant.limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsTable {
    pub fuel: Option<Spanned<u64>>,
    pub memory: Option<Spanned<u64>>,
    pub deadline_ms: Option<Spanned<u64>>,
    pub invocations_per_second: Option<Spanned<u32>>,
    pub burst: Option<Spanned<u32>>,
    pub recreations_per_second: Option<Spanned<u32>>,
    /// Concurrent calls (see config/dialog.rs).
    pub max_calls: Option<Spanned<u32>>,
}

/// `error_reply` and `unmatched_reply`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    pub code: Spanned<u16>,
    pub reason: String,
}

/// `rate_limited_reply`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitedReply {
    pub code: Spanned<u16>,
    pub reason: String,
    pub retry_after: Option<u32>,
}

/// `[registrar]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrarTable {
    pub default_expires: Option<Spanned<u32>>,
    pub min_expires: Option<Spanned<u32>>,
    pub max_expires: Option<Spanned<u32>>,
    pub max_contacts: Option<u32>,
}

/// `[auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthTable {
    pub nonce_expire: Option<Spanned<u64>>,
    pub secret: Option<Spanned<String>>,
}

/// `[metrics]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsTable {
    pub listen: Option<String>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTable {
    pub listen: Option<Spanned<String>>,
    pub token: Option<Spanned<String>>,
}
