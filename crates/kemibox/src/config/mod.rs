//! `kemibox run --config FILE`: the proxy's settings in TOML.
//!
//! ```toml
//! script = "relay.lua"                 # relative to this file; default: the embedded script
//! listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
//! log = "info"
//! log_format = "json"                  # one JSON object a line; default "plain"
//! error_reply = { code = 500, reason = "Server Error" }
//! auto_reload = true                   # reload scripts when their files change
//!
//! [limits]                             # per invocation
//! fuel = 10000000
//! memory = 33554432
//! deadline_ms = 500
//! recreations_per_second = 1           # instances replacing trapped ones
//!
//! [database]                           # default: SQLite in the data directory
//! sqlite = "kemibox.sqlite"
//! postgres = "postgresql://kemibox@127.0.0.1/kemibox"   # subscribers
//! redis = "redis://127.0.0.1:6379/"                     # locations, htable backend = "redis"
//!
//! [registrar]
//! default_expires = 3600
//! min_expires = 60
//!
//! [pike]                               # also [permissions], [ipops]; see sec.rs
//! reqs_density_per_unit = 30
//!
//! [auth]
//! nonce_expire = 300
//! secret = "…64 hex digits…"           # the same on every node
//!
//! unmatched_reply = { code = 404, reason = "Not Found" }   # before any table
//! defines = ["WITH_AUTH", "MAX_CALLS=20"]   # KSR.kx.ifdef (docs/modules/lua-libraries.md)
//! lua_path = ["lib"]                   # the tenants' own Lua modules (require "utils")
//!
//! [env]                                # os.getenv / KSR.kx.get_env; per tenant: [tenant.env]
//! REGION = "eu-1"
//!
//! [[htable]]                           # every tenant's hash table
//! name = "counters"
//! initval = 0
//! backend = "redis"                    # kept in [database] redis, shared by the nodes
//!
//! [[tenant]]                           # several tenants instead of `script`
//! id = "a"
//! script = "a.lua"
//! listen = ["udp:127.0.0.1:5060"]      # sockets it owns (also in `listen`)
//! domains = ["a.example"]              # R-URI hosts that are its
//! modules = ["sl", "tm"]               # granted KSR modules (default: all)
//! [tenant.limits]                      # default: the top-level [limits]
//! fuel = 10000000
//!
//! admin_token = "…"                    # admin API token for this tenant only
//! [[tenant.htable]]                    # its own hash table (docs/modules/htable.md)
//! name = "ipban"
//! size = 8
//! autoexpire = 300
//! dbtable = "ipban"                    # loaded at start
//! dbmode = 1                           # and written back
//!
//! [metrics]                            # Prometheus endpoint; absent: none
//! listen = "127.0.0.1:9090"
//!
//! [admin]                              # JSON-RPC admin API; absent: none
//! listen = "127.0.0.1:9091"
//! token = "…"                          # required unless listen is loopback
//! ```
//!
//! Without `[[tenant]]` the top-level `script` and settings are the one
//! tenant "default", so [`Settings::tenants`] is never empty and
//! `kemibox run` has one code path; the command line (no `--config`) makes
//! the same shape.
//!
//! The code is in three parts: `schema` (the file as serde reads it,
//! values kept [`toml::Spanned`]), `validate` (every check, written once,
//! on tenant settings merged over the top level's) and `locate` (span to
//! file, line, column, key and fix). Unknown keys are refused, and every
//! error names the file, the line and column, the key and the fix.

mod acc;
mod dialog;
mod dialog_profiles;
mod dispatcher;
mod locate;
mod schema;
mod sec;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kemibox_kemi::{RelayTo, TenantId};
use kemibox_proxy::{Listen, RateLimit};
use kemibox_sandbox::Limits;
use serde::Deserialize;

pub use dialog_profiles::{DialogNode, DialogProfiles};
pub use locate::ConfigError;
pub use sec::SecModules;
use validate::{Checked, Given, Scope};

/// What `kemibox run` serves, from a config file ([`load`]) or the
/// command line ([`Settings::command_line`]), checked.
pub struct Settings {
    pub listen: Vec<Listen>,
    pub log: String,
    pub log_format: crate::LogFormat,
    /// The answer to failed routes, `(code, reason)`; `None`: the proxy's.
    pub error_reply: Option<(u16, String)>,
    /// The answer to requests no tenant takes; `None`: the proxy's.
    pub unmatched_reply: Option<(u16, String)>,
    pub database: Database,
    pub registrar: Registrar,
    pub auth: Auth,
    /// Where to serve `GET /metrics`, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The admin API, if served.
    pub admin: Option<AdminSettings>,
    /// Never empty: the `[[tenant]]` entries in file order, else the one
    /// tenant "default".
    pub tenants: Vec<Tenant>,
    /// This process as a node sharing dialog state (`[dialog] node`,
    /// `node_ttl`).
    pub dialog_node: DialogNode,
}

/// One tenant: a `[[tenant]]` with the top-level defaults filled in, or
/// the top level itself as the tenant "default".
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    /// Its script file; `None`: the embedded default script (only the
    /// tenant "default" when no script is given).
    pub script: Option<PathBuf>,
    /// The sockets it owns; with `domains`, empty for a tenant that takes
    /// what no other takes.
    pub listen: Vec<Listen>,
    pub domains: Vec<String>,
    /// Granted KSR modules.
    pub modules: Vec<String>,
    pub limits: Limits,
    /// Its rate limit (`None`: none).
    pub rate: Option<RateLimit>,
    /// Where its script may relay (`None`: anywhere).
    pub relay_to: Option<RelayTo>,
    pub recreations_per_second: u32,
    /// Reload the script when its file changes.
    pub auto_reload: bool,
    /// Its admin API token, if any.
    pub admin_token: Option<String>,
    /// Its pike, permissions and ipops settings.
    pub sec: SecModules,
    /// Its variables (`[tenant.env]`, over the top-level `[env]`): what
    /// `os.getenv` and `KSR.kx.get_env` read.
    pub env: BTreeMap<String, String>,
    /// Its defines (`defines`), name to value: `KSR.kx.ifdef`.
    pub defines: BTreeMap<String, String>,
    /// Directories of its own Lua modules (`lua_path`), read at load and
    /// reload.
    pub lua_path: Vec<PathBuf>,
    /// Its acc module settings (`[acc]`, `[tenant.acc]`).
    pub acc: kemibox_kemi::AccSettings,
    /// Its hash tables (`KSR.htable`): the top-level `[[htable]]`
    /// entries with its own `[[tenant.htable]]` over them.
    pub htables: Vec<kemibox_kemi::htable::TableSpec>,
    /// Its dialog profiles and where they live (`[dialog]`,
    /// `[tenant.dialog]`).
    pub dialog_profiles: DialogProfiles,
    /// Its dialog settings and `max_calls` (`[dialog]`, `[limits]`).
    pub dialog: kemibox_kemi::dialog::DialogSettings,
    /// Its dispatcher settings (`[dispatcher]`, `[tenant.dispatcher]`).
    pub dispatcher: kemibox_kemi::dispatcher::Settings,
}

/// The admin API's settings, checked.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// `None`: loopback only, and requests need no token.
    pub token: Option<String>,
}

/// `kemibox run` without `--config`: its options.
pub struct CommandLine {
    pub script: Option<PathBuf>,
    pub listen: Vec<Listen>,
    pub fuel: u64,
    pub memory: u64,
    pub deadline_ms: u64,
    pub log: String,
    /// The SQLite file (`--db`).
    pub db: Option<PathBuf>,
}

impl Settings {
    /// The options as the tenant "default", its limits checked as a
    /// file's would be (the error names the option).
    pub fn command_line(options: CommandLine) -> anyhow::Result<Settings> {
        let limits = validate::limits(
            &Given::flag(options.fuel, "--fuel"),
            &Given::flag(options.memory, "--memory"),
            &Given::flag(options.deadline_ms, "--deadline-ms"),
        )
        .map_err(ConfigError::from)?;
        Ok(Settings {
            listen: options.listen,
            log: options.log,
            log_format: crate::LogFormat::Plain,
            error_reply: None,
            unmatched_reply: None,
            database: Database {
                sqlite: options.db,
                ..Database::default()
            },
            registrar: Registrar::default(),
            auth: Auth::default(),
            metrics_listen: None,
            admin: None,
            tenants: vec![Tenant {
                limits,
                ..Tenant::default_tenant(options.script)
            }],
            dialog_node: DialogNode::default(),
        })
    }
}

impl Tenant {
    /// The tenant "default" running `script`, with the built-in settings.
    fn default_tenant(script: Option<PathBuf>) -> Tenant {
        Tenant {
            id: TenantId::default_tenant(),
            script,
            listen: Vec::new(),
            domains: Vec::new(),
            modules: all_modules(),
            limits: Limits::default(),
            rate: None,
            relay_to: None,
            recreations_per_second: kemibox_sandbox::DEFAULT_RECREATIONS_PER_SECOND,
            auto_reload: false,
            admin_token: None,
            sec: SecModules::builtin(),
            env: BTreeMap::new(),
            defines: BTreeMap::new(),
            lua_path: Vec::new(),
            acc: kemibox_kemi::AccSettings::default(),
            htables: Vec::new(),
            dialog_profiles: DialogProfiles::default(),
            dialog: kemibox_kemi::dialog::DialogSettings::default(),
            dispatcher: kemibox_kemi::dispatcher::Settings::default(),
        }
    }
}

fn all_modules() -> Vec<String> {
    kemibox_kemi::MODULES
        .iter()
        .map(|m| m.to_string())
        .collect()
}

/// Read and check `path`; the error says which file, where, the key and
/// the fix ([`ConfigError`]).
pub fn load(path: &Path) -> anyhow::Result<Settings> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
    let file: schema::File =
        toml::from_str(&text).map_err(|e| ConfigError::parse(path, &text, &e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(settings(file, base).map_err(|p| p.locate(path, &text))?)
}

/// `path` relative to the config file's folder.
fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

fn settings(file: schema::File, base: &Path) -> Checked<Settings> {
    let listen = match &file.listen {
        Some(list) => validate::listen(list)?,
        None => vec![Listen::default()],
    };
    let error_reply = (file.error_reply.as_ref())
        .map(|r| validate::reply("error_reply", r, 500))
        .transpose()?;
    let unmatched_reply = (file.unmatched_reply.as_ref())
        .map(|r| validate::reply("unmatched_reply", r, 404))
        .transpose()?;
    let registrar = validate::registrar(&file.registrar)?;
    let auth = validate::auth(&file.auth)?;
    let metrics_listen = match &file.metrics {
        Some(table) => validate::metrics(table)?,
        None => None,
    };
    let admin = validate::admin(&file.admin)?;
    // The top level's own values are checked even when every tenant
    // overrides them: they are the default tenant's, or every tenant's
    // defaults.
    let defaults = validate::quotas(&validate::merge(file.defaults(), None))?;
    let sec_defaults = sec::sec_modules(file.sec_tables(), None)?;
    let default_acc = acc::settings(file.acc.as_ref(), None)?;
    let default_dispatcher = dispatcher::settings(file.dispatcher.as_ref(), None, base)?;
    let htables = validate::htables(Scope::Top, &file.htable, file.database.redis.is_some())?;
    let redis = file.database.redis.is_some();
    let dialog_node = dialog_profiles::node(file.dialog.as_ref())?;
    let default_profiles = dialog_profiles::settings(file.dialog.as_ref(), None, redis)?;
    let tenants = if file.tenants.is_empty() {
        let lua = validate::lua_settings(file.defaults(), None, base)?;
        vec![Tenant {
            env: lua.env,
            defines: lua.defines,
            lua_path: lua.lua_path,
            limits: defaults.limits,
            rate: defaults.rate,
            relay_to: defaults.relay_to,
            recreations_per_second: defaults.recreations_per_second,
            auto_reload: defaults.auto_reload,
            sec: sec_defaults,
            acc: default_acc,
            dispatcher: default_dispatcher,
            htables,
            dialog_profiles: default_profiles,
            dialog: dialog::settings((file.dialog.as_ref(), &file.limits), None)?,
            ..Tenant::default_tenant(file.script.as_ref().map(|s| resolve(base, s.get_ref())))
        }]
    } else if let Some(script) = &file.script {
        return Err(validate::script_beside_tenants(script));
    } else {
        tenants(&file, &listen, admin.as_ref(), &htables, base)?
    };
    let mut database = file.database;
    database.sqlite = database.sqlite.map(|s| resolve(base, &s));
    Ok(Settings {
        listen,
        log: file.log.unwrap_or_else(|| "info".into()),
        log_format: file.log_format.unwrap_or_default(),
        error_reply,
        unmatched_reply,
        database,
        registrar,
        auth,
        metrics_listen,
        admin,
        tenants,
        dialog_node,
    })
}

/// The `[[tenant]]` entries, each merged over the top level and checked.
fn tenants(
    file: &schema::File,
    listen: &[Listen],
    admin: Option<&AdminSettings>,
    htables: &[kemibox_kemi::htable::TableSpec],
    base: &Path,
) -> Checked<Vec<Tenant>> {
    let mut out: Vec<Tenant> = Vec::new();
    let mut catch_all: Option<TenantId> = None;
    let mut tokens: Vec<String> = admin.and_then(|a| a.token.clone()).into_iter().collect();
    for entry in &file.tenants {
        let seen: Vec<TenantId> = out.iter().map(|t| t.id.clone()).collect();
        let id = validate::tenant_id(&entry.id, &seen)?;
        let scope = Scope::Tenant(entry.id.get_ref());
        let owned = validate::tenant_listen(scope, &entry.listen, listen)?;
        let domains = validate::domains(scope, &entry.domains)?;
        if owned.is_empty() && domains.is_empty() {
            validate::one_catch_all(catch_all.as_ref(), &entry.id)?;
            catch_all = Some(id.clone());
        }
        let modules = validate::modules(scope, entry.modules.as_deref())?;
        let quotas = validate::quotas(&validate::merge(
            file.defaults(),
            Some((scope, entry.settings())),
        ))?;
        let admin_token = (entry.admin_token.as_ref())
            .map(|t| validate::tenant_token(scope, t, admin.is_some(), &tokens))
            .transpose()?;
        tokens.extend(admin_token.clone());
        let sec = sec::sec_modules(file.sec_tables(), Some((scope, entry.sec_tables())))?;
        let lua = validate::lua_settings(file.defaults(), Some((scope, entry.settings())), base)?;
        let own_htables = validate::htables(scope, &entry.htable, file.database.redis.is_some())?;
        out.push(Tenant {
            env: lua.env,
            defines: lua.defines,
            lua_path: lua.lua_path,
            id,
            script: Some(resolve(base, &entry.script)),
            listen: owned,
            domains,
            modules,
            limits: quotas.limits,
            rate: quotas.rate,
            relay_to: quotas.relay_to,
            recreations_per_second: quotas.recreations_per_second,
            auto_reload: quotas.auto_reload,
            admin_token,
            sec,
            acc: acc::settings(file.acc.as_ref(), entry.acc.as_ref().map(|a| (scope, a)))?,
            htables: validate::merge_htables(htables, own_htables),
            dialog_profiles: dialog_profiles::settings(
                file.dialog.as_ref(),
                entry.dialog.as_ref().map(|d| (scope, d)),
                file.database.redis.is_some(),
            )?,
            dialog: dialog::settings(
                (file.dialog.as_ref(), &file.limits),
                Some((scope, entry.dialog.as_ref(), &entry.limits)),
            )?,
            dispatcher: dispatcher::settings(
                file.dispatcher.as_ref(),
                entry.dispatcher.as_ref().map(|d| (scope, d)),
                base,
            )?,
        });
    }
    Ok(out)
}

/// Where subscribers and locations are kept. SQLite holds whatever no
/// networked database is given for; `postgres` and `redis` let several
/// kemibox nodes share subscribers and registrations.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// SQLite file, relative to the config file (default: kemibox.sqlite
    /// in the data directory).
    pub sqlite: Option<PathBuf>,
    /// PostgreSQL URL for subscribers (and htable `dbtable` rows, acc).
    pub postgres: Option<String>,
    /// Redis URL for locations and htable tables with `backend = "redis"`.
    pub redis: Option<String>,
}

/// The registrar's expiry rules, in seconds (Kamailio's registrar
/// parameters of the same names).
#[derive(Debug, Clone, Copy)]
pub struct Registrar {
    pub default_expires: u32,
    pub min_expires: u32,
    /// 0: no maximum.
    pub max_expires: u32,
    /// Bindings per AOR; 0: no limit.
    pub max_contacts: u32,
}

impl Default for Registrar {
    fn default() -> Registrar {
        let d = kemibox_kemi::RegistrarSettings::default();
        Registrar {
            default_expires: d.default_expires,
            min_expires: d.min_expires,
            max_expires: d.max_expires,
            max_contacts: d.max_contacts,
        }
    }
}

impl From<Registrar> for kemibox_kemi::RegistrarSettings {
    fn from(r: Registrar) -> Self {
        kemibox_kemi::RegistrarSettings {
            default_expires: r.default_expires,
            min_expires: r.min_expires,
            max_expires: r.max_expires,
            max_contacts: r.max_contacts,
        }
    }
}

/// Digest authentication settings.
#[derive(Debug, Clone)]
pub struct Auth {
    /// Seconds a nonce stays valid (Kamailio's nonce_expire).
    pub nonce_expire: u64,
    /// 64 hex digits keying the nonces; nodes sharing subscribers share it
    /// so a nonce from one node is good on another. Default: random at
    /// start.
    pub secret: Option<String>,
}

impl Default for Auth {
    fn default() -> Auth {
        Auth {
            nonce_expire: kemibox_kemi::Nonces::DEFAULT_EXPIRY.as_secs(),
            secret: None,
        }
    }
}

impl Auth {
    /// The nonce secret as bytes, or why it is unusable.
    pub fn secret_bytes(&self) -> Result<Option<[u8; 32]>, String> {
        let Some(hex) = &self.secret else {
            return Ok(None);
        };
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok())
            })
            .collect::<Option<Vec<u8>>>();
        match bytes.and_then(|b| <[u8; 32]>::try_from(b).ok()) {
            Some(b) => Ok(Some(b)),
            None => Err(
                "secret must be 64 hex digits (32 bytes), e.g. from `openssl rand -hex 32`".into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kemibox_proxy::LimitedReply;

    fn load_text(name: &str, text: &str) -> anyhow::Result<Settings> {
        let dir =
            std::env::temp_dir().join(format!("kemibox-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kemibox.toml");
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    #[test]
    fn rates_replies_and_relay_to_are_read_with_their_defaults() {
        let loaded = load_text(
            "quotas",
            r#"
listen = ["udp:127.0.0.1:0", "udp:127.0.0.2:0"]
rate_limited_reply = { code = 486, reason = "Busy Here" }
relay_to = ["10.0.0.0/8"]

[limits]
invocations_per_second = 100
burst = 200

[[tenant]]
id = "a"
script = "a.lua"
listen = ["udp:127.0.0.1:0"]

[[tenant]]
id = "b"
script = "b.lua"
domains = ["b.example"]
rate_limited_reply = { code = 503, reason = "Later", retry_after = 7 }
relay_to = ["sip.example.com", "127.0.0.1:5080"]
[tenant.limits]
invocations_per_second = 5
"#,
        )
        .unwrap();
        let (a, b) = (&loaded.tenants[0], &loaded.tenants[1]);
        let ra = a.rate.as_ref().unwrap();
        assert_eq!((ra.per_second, ra.burst), (100, 200));
        assert_eq!(
            ra.reply,
            LimitedReply {
                code: 486,
                reason: "Busy Here".into(),
                retry_after: None
            }
        );
        assert_eq!(a.relay_to, RelayTo::parse(&["10.0.0.0/8"]).ok());
        // Its own rate bursts to that rate, not to the top-level burst.
        let rb = b.rate.as_ref().unwrap();
        assert_eq!((rb.per_second, rb.burst), (5, 5));
        assert_eq!(rb.reply.retry_after, Some(7));
        assert_eq!(
            b.relay_to,
            RelayTo::parse(&["sip.example.com", "127.0.0.1:5080"]).ok()
        );
    }

    #[test]
    fn without_the_keys_there_is_no_limit_and_the_default_reply() {
        let loaded = load_text(
            "none",
            "listen = [\"udp:127.0.0.1:0\"]\n[limits]\nburst = 3\n",
        );
        let err = loaded.err().unwrap().to_string();
        assert!(
            err.contains("line 3: limits: burst without invocations_per_second"),
            "{err}"
        );
        let loaded = load_text("plain", "[limits]\ninvocations_per_second = 4\n").unwrap();
        assert!(loaded.tenants[0].relay_to.is_none());
        let rate = loaded.tenants[0].rate.clone().unwrap();
        assert_eq!((rate.per_second, rate.burst), (4, 4));
        assert_eq!(rate.reply, LimitedReply::default());
        assert!(load_text("nolimit", "").unwrap().tenants[0].rate.is_none());
    }

    #[test]
    fn admin_needs_a_token_off_loopback_and_log_format_is_read() {
        let loaded = load_text(
            "admin-ok",
            "log_format = \"json\"\n[admin]\nlisten = \"[::1]:9091\"\n",
        )
        .unwrap();
        assert_eq!(loaded.log_format, crate::LogFormat::Json);
        let admin = loaded.admin.unwrap();
        assert_eq!(admin.listen, "[::1]:9091".parse().unwrap());
        assert_eq!(admin.token, None);
        assert!(load_text("no-admin", "").unwrap().admin.is_none());
        assert_eq!(
            load_text("plain", "").unwrap().log_format,
            crate::LogFormat::Plain
        );
        let err = load_text(
            "admin-open",
            "listen = [\"udp:127.0.0.1:0\"]\n\n[metrics]\nlisten = \"127.0.0.1:9090\"\n\n[admin]\n# exposed\nlisten = \"10.0.0.1:9091\"\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains(
                "kemibox.toml: line 8: admin.listen = \"10.0.0.1:9091\" is not a loopback address"
            ),
            "{err}"
        );
        let err = load_text("admin-bad", "[admin]\nlisten = \"localhost:1\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("line 2: admin.listen = \"localhost:1\""),
            "{err}"
        );
        let err = load_text("fmt-bad", "log_format = \"xml\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("line 1") && err.contains("xml"), "{err}");
        let err = load_text(
            "tokens-shared",
            "listen = [\"udp:127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:1\"\ntoken = \"t\"\n[[tenant]]\nid = \"a\"\nscript = \"a.lua\"\nadmin_token = \"t\"\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("line 8: tenant a: admin_token is also"),
            "{err}"
        );
    }
}
