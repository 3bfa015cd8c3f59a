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
//! redis = "redis://127.0.0.1:6379/"                     # locations
//!
//! [registrar]
//! default_expires = 3600
//! min_expires = 60
//!
//! [auth]
//! nonce_expire = 300
//! secret = "…64 hex digits…"           # the same on every node
//!
//! unmatched_reply = { code = 404, reason = "Not Found" }   # before any table
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
//!
//! [metrics]                            # Prometheus endpoint; absent: none
//! listen = "127.0.0.1:9090"
//!
//! [admin]                              # JSON-RPC admin API; absent: none
//! listen = "127.0.0.1:9091"
//! token = "…"                          # required unless listen is loopback
//! ```
//!
//! Unknown keys are refused, and every error names the file, the line and
//! what is expected there.

use std::path::{Path, PathBuf};

use kemibox_kemi::RelayTo;
use kemibox_proxy::{LimitedReply, Listen, RateLimit};
use kemibox_sandbox::Limits;
use serde::Deserialize;
use toml::Spanned;

/// The file's contents.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Routing script, relative to the config file.
    pub script: Option<PathBuf>,
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    #[serde(default = "default_log")]
    pub log: String,
    /// `plain` (default) or `json`.
    #[serde(default)]
    pub log_format: crate::LogFormat,
    #[serde(default)]
    pub error_reply: Option<ErrorReply>,
    #[serde(default)]
    pub limits: TenantLimits,
    /// Reply to a request over its tenant's rate (default `503 Service
    /// Unavailable` with `Retry-After: 1`); tenants may give their own.
    #[serde(default)]
    pub rate_limited_reply: Option<LimitedReplyConfig>,
    /// Where the script may relay (default: anywhere); the default of
    /// every tenant.
    #[serde(default)]
    pub relay_to: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub database: Database,
    #[serde(default)]
    pub registrar: Registrar,
    #[serde(default)]
    pub auth: Auth,
    /// Reply to requests no tenant takes (default `404 Not Found`).
    #[serde(default)]
    pub unmatched_reply: Option<ErrorReply>,
    /// Several tenants, each with its script; instead of `script`.
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<TenantConfig>,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: Metrics,
    /// The admin API (JSON-RPC over HTTP).
    #[serde(default)]
    pub admin: Admin,
    /// Reload a script when its file changes (checked every second);
    /// the default of every tenant.
    #[serde(default)]
    pub auto_reload: bool,
}

/// `[metrics]`: where `GET /metrics` is served (absent: nowhere).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// `IP:PORT`.
    pub listen: Option<String>,
}

/// `[admin]`: where the JSON-RPC admin API is served (absent: nowhere)
/// and the token every request must bear.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `IP:PORT`.
    pub listen: Option<String>,
    /// Required unless `listen` is a loopback address.
    pub token: Option<String>,
}

/// The admin API's settings, checked.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: std::net::SocketAddr,
    /// `None`: loopback only, and requests need no token.
    pub token: Option<String>,
}

/// One `[[tenant]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Unique, `[A-Za-z0-9_-]+`; on every log line, and what the stores
    /// are scoped by.
    pub id: Spanned<String>,
    /// Routing script, relative to the config file.
    pub script: PathBuf,
    /// Listen addresses the tenant owns; each must be in `listen`.
    #[serde(default)]
    pub listen: Vec<Spanned<String>>,
    /// Domains whose requests (by R-URI host) are the tenant's.
    #[serde(default)]
    pub domains: Vec<Spanned<String>>,
    /// Granted KSR modules (default: all).
    pub modules: Option<Vec<Spanned<String>>>,
    /// Reply to its requests over its rate (default: the top-level one).
    #[serde(default)]
    pub rate_limited_reply: Option<LimitedReplyConfig>,
    /// Reload its script when the file changes (default: the top-level
    /// `auto_reload`).
    pub auto_reload: Option<bool>,
    /// Where its script may relay (default: the top-level `relay_to`,
    /// else anywhere).
    #[serde(default)]
    pub relay_to: Option<Vec<Spanned<String>>>,
    /// Per-invocation limits; a key not given is the top-level one.
    #[serde(default)]
    pub limits: TenantLimits,
    /// A token for the admin API that may only act on this tenant.
    pub admin_token: Option<Spanned<String>>,
}

/// `[limits]` and `[tenant.limits]`: each key of a tenant's defaults to
/// the top-level one, and the top-level ones to the sandbox defaults.
/// `fuel`, `memory` and `deadline_ms` are the sandbox's per-invocation
/// [`Limits`]; `invocations_per_second` and `burst` are the proxy's rate
/// limit ([`RateLimit`]), kept out of the sandbox, which only runs one
/// invocation at a time and knows nothing of rates.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    pub fuel: Option<u64>,
    pub memory: Option<u64>,
    pub deadline_ms: Option<u64>,
    /// Requests per second the request route takes (absent: no limit).
    pub invocations_per_second: Option<u32>,
    /// Requests at once (default: `invocations_per_second`).
    pub burst: Option<u32>,
    /// Instances re-created per second (and at most at once) to replace
    /// trapped ones; past it the tenant's invocations are refused with
    /// `error_reply` until the budget refills.
    pub recreations_per_second: Option<u32>,
}

impl TenantLimits {
    /// The sandbox limits, each key not given from `base`.
    fn sandbox(&self, base: Limits) -> Limits {
        Limits {
            fuel: self.fuel.unwrap_or(base.fuel),
            memory: self.memory.unwrap_or(base.memory),
            deadline_ms: self.deadline_ms.unwrap_or(base.deadline_ms),
        }
    }

    /// The re-creation budget, from `top` when not given here.
    fn recreations(&self, top: &TenantLimits) -> Result<u32, String> {
        match self
            .recreations_per_second
            .or(top.recreations_per_second)
            .unwrap_or(kemibox_sandbox::DEFAULT_RECREATIONS_PER_SECOND)
        {
            0 => Err("recreations_per_second = 0 would never replace a trapped instance: give at least 1".into()),
            n => Ok(n),
        }
    }

    /// The rate and burst; a tenant without its own rate takes the
    /// top-level rate and burst, one with its own rate bursts to that
    /// rate unless it gives `burst`.
    fn rate(&self, top: &TenantLimits) -> Result<Option<(u32, u32)>, String> {
        let (rate, burst) = match self.invocations_per_second {
            Some(rate) => (Some(rate), self.burst),
            None => (top.invocations_per_second, self.burst.or(top.burst)),
        };
        match (rate, burst) {
            (Some(0), _) => Err(
                "invocations_per_second = 0 would refuse every request: give at least 1, or remove it for no limit".into(),
            ),
            (Some(_), Some(0)) => Err("burst = 0 must be at least 1 (default: invocations_per_second)".into()),
            (Some(rate), burst) => Ok(Some((rate, burst.unwrap_or(rate)))),
            (None, Some(_)) => Err("burst without invocations_per_second: add invocations_per_second, or remove burst".into()),
            (None, None) => Ok(None),
        }
    }
}

/// `rate_limited_reply = { code = 503, reason = "...", retry_after = 1 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitedReplyConfig {
    pub code: u16,
    pub reason: String,
    /// Seconds for `Retry-After` (absent: no such header).
    pub retry_after: Option<u32>,
}

impl LimitedReplyConfig {
    fn checked(&self) -> Result<LimitedReply, String> {
        if !(300..=699).contains(&self.code) {
            return Err(format!(
                "rate_limited_reply.code = {} must be a final error status (300-699), e.g. 503",
                self.code
            ));
        }
        Ok(LimitedReply {
            code: self.code,
            reason: self.reason.clone(),
            retry_after: self.retry_after,
        })
    }
}

/// A `[[tenant]]` read and checked.
#[derive(Debug, Clone)]
pub struct LoadedTenant {
    pub id: String,
    pub script: PathBuf,
    pub listen: Vec<Listen>,
    pub domains: Vec<String>,
    pub modules: Vec<String>,
    pub limits: Limits,
    /// Its rate limit (`None`: none).
    pub rate: Option<RateLimit>,
    /// Where its script may relay (`None`: anywhere).
    pub relay_to: Option<RelayTo>,
    pub recreations_per_second: u32,
    pub auto_reload: bool,
    /// Its admin API token, if any.
    pub admin_token: Option<String>,
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
    /// PostgreSQL URL for subscribers.
    pub postgres: Option<String>,
    /// Redis URL for locations.
    pub redis: Option<String>,
}

/// The registrar's expiry rules, in seconds (Kamailio's registrar
/// parameters of the same names).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
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

/// The reply sent when a request route fails.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorReply {
    pub code: u16,
    pub reason: String,
}

fn default_listen() -> Vec<String> {
    vec![Listen::default().to_string()]
}

fn default_log() -> String {
    "info".into()
}

/// A config file read and checked: listen addresses parsed, limits valid,
/// script path resolved against the file's folder.
pub struct Loaded {
    pub script: Option<PathBuf>,
    pub listen: Vec<Listen>,
    pub log: String,
    pub log_format: crate::LogFormat,
    pub error_reply: Option<(u16, String)>,
    pub limits: Limits,
    /// The single script's rate limit (`None`: none).
    pub rate: Option<RateLimit>,
    /// Where the single script may relay (`None`: anywhere).
    pub relay_to: Option<RelayTo>,
    pub database: Database,
    pub registrar: Registrar,
    pub auth: Auth,
    pub unmatched_reply: Option<(u16, String)>,
    /// Empty: `script` is the one tenant, "default".
    pub tenants: Vec<LoadedTenant>,
    /// Where to serve `GET /metrics`, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The admin API, if served.
    pub admin: Option<AdminSettings>,
    /// The single script's re-creation budget.
    pub recreations_per_second: u32,
    /// Reload the single script when its file changes.
    pub auto_reload: bool,
}

/// Read and check `path`; the error says which file, where and why.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
    let config: Config =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let line_of = |needle: &str| {
        text.lines()
            .position(|l| l.contains(needle))
            .map(|i| format!("line {}", i + 1))
            .unwrap_or_else(|| "".into())
    };
    let mut listen = Vec::new();
    for entry in &config.listen {
        let parsed = entry
            .parse::<Listen>()
            .map_err(|e| anyhow::anyhow!("{}: {}: listen: {e}", path.display(), line_of(entry)))?;
        listen.push(parsed);
    }
    if listen.is_empty() {
        anyhow::bail!(
            "{}: {}: listen is empty: give at least one udp:IP:PORT or tcp:IP:PORT",
            path.display(),
            line_of("listen")
        );
    }
    let limits = config.limits.sandbox(Limits::default());
    limits
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {}: limits: {e}", path.display(), line_of("[limits]")))?;
    let top_rate = config.limits.rate(&TenantLimits::default()).map_err(|e| {
        let key = if e.starts_with("burst") {
            "burst"
        } else {
            "invocations_per_second"
        };
        anyhow::anyhow!("{}: {}: limits: {e}", path.display(), line_of(key))
    })?;
    let recreations = config
        .limits
        .recreations(&TenantLimits::default())
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: {}: limits: {e}",
                path.display(),
                line_of("recreations_per_second")
            )
        })?;
    let top_reply = match &config.rate_limited_reply {
        Some(r) => r.checked().map_err(|e| {
            anyhow::anyhow!("{}: {}: {e}", path.display(), line_of("rate_limited_reply"))
        })?,
        None => LimitedReply::default(),
    };
    let relay_to = match &config.relay_to {
        Some(entries) => Some(relay_to(path, &text, entries)?),
        None => None,
    };
    if let Some(r) = &config.error_reply
        && !(300..=699).contains(&r.code)
    {
        anyhow::bail!(
            "{}: {}: error_reply.code = {} must be a final error status (300-699)",
            path.display(),
            line_of("error_reply"),
            r.code
        );
    }
    let r = &config.registrar;
    if r.default_expires == 0 || (r.max_expires != 0 && r.min_expires > r.max_expires) {
        anyhow::bail!(
            "{}: {}: registrar: default_expires must be above 0 and min_expires at most max_expires (0: no maximum)",
            path.display(),
            line_of("[registrar]")
        );
    }
    if config.auth.nonce_expire == 0 {
        anyhow::bail!(
            "{}: {}: auth.nonce_expire must be at least 1 (seconds)",
            path.display(),
            line_of("nonce_expire")
        );
    }
    config
        .auth
        .secret_bytes()
        .map_err(|e| anyhow::anyhow!("{}: {}: auth.{e}", path.display(), line_of("secret")))?;
    if let Some(r) = &config.unmatched_reply
        && !(300..=699).contains(&r.code)
    {
        anyhow::bail!(
            "{}: {}: unmatched_reply.code = {} must be a final error status (300-699)",
            path.display(),
            line_of("unmatched_reply"),
            r.code
        );
    }
    let metrics_listen = match &config.metrics.listen {
        None => None,
        Some(addr) => Some(addr.parse().map_err(|e| {
            anyhow::anyhow!(
                "{}: {}: metrics.listen = {addr:?}: {e}; expected IP:PORT, e.g. \"127.0.0.1:9090\"",
                path.display(),
                line_of("[metrics]")
            )
        })?),
    };
    let admin = check_admin(path, &text, &config.admin)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let tenants = check_tenants(path, &text, &config, &listen, base, &top_reply, &relay_to)?;
    check_tenant_tokens(path, &text, &config, &admin)?;
    let mut database = config.database;
    database.sqlite = database
        .sqlite
        .map(|s| if s.is_absolute() { s } else { base.join(s) });
    Ok(Loaded {
        script: config
            .script
            .map(|s| if s.is_absolute() { s } else { base.join(s) }),
        listen,
        log: config.log,
        log_format: config.log_format,
        error_reply: config.error_reply.map(|r| (r.code, r.reason)),
        limits,
        rate: top_rate.map(|(per_second, burst)| RateLimit {
            per_second,
            burst,
            reply: top_reply,
        }),
        relay_to,
        database,
        registrar: config.registrar,
        auth: config.auth,
        unmatched_reply: config.unmatched_reply.map(|r| (r.code, r.reason)),
        tenants,
        metrics_listen,
        admin,
        recreations_per_second: recreations,
        auto_reload: config.auto_reload,
    })
}

/// Check the `[[tenant]]` entries: every error names the file, the line
/// and the fix.
fn check_tenants(
    path: &Path,
    text: &str,
    config: &Config,
    listen: &[Listen],
    base: &Path,
    top_reply: &LimitedReply,
    top_relay_to: &Option<RelayTo>,
) -> anyhow::Result<Vec<LoadedTenant>> {
    let at = |offset: usize| {
        let line = text.get(..offset).unwrap_or(text).matches('\n').count() + 1;
        format!("{}: line {line}", path.display())
    };
    if config.tenants.is_empty() {
        return Ok(Vec::new());
    }
    if config.script.is_some() {
        let line = text
            .lines()
            .position(|l| l.trim_start().starts_with("script"))
            .unwrap_or(0);
        anyhow::bail!(
            "{}: line {}: script: with [[tenant]] entries each tenant names its own script; move this one into a [[tenant]]",
            path.display(),
            line + 1
        );
    }
    let mut out: Vec<LoadedTenant> = Vec::new();
    let mut catch_all: Option<String> = None;
    for t in &config.tenants {
        let id = t.id.get_ref();
        let here = at(t.id.span().start);
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            anyhow::bail!(
                "{here}: tenant id {id:?}: use letters, digits, '_' and '-' only (e.g. \"acme-1\")"
            );
        }
        if out.iter().any(|o| &o.id == id) {
            anyhow::bail!("{here}: tenant id {id:?} is used twice: give each tenant its own id");
        }
        let mut owned = Vec::new();
        for entry in &t.listen {
            let l = entry.get_ref().parse::<Listen>().map_err(|e| {
                anyhow::anyhow!("{}: tenant {id}: listen: {e}", at(entry.span().start))
            })?;
            if !listen.contains(&l) {
                anyhow::bail!(
                    "{}: tenant {id}: listen {l} is not in the top-level listen: add it there or remove it here",
                    at(entry.span().start)
                );
            }
            owned.push(l);
        }
        let mut domains = Vec::new();
        for d in &t.domains {
            let name = d.get_ref().trim();
            let bare = name.strip_prefix("*.").unwrap_or(name);
            if bare.is_empty() || bare.contains(['*', ' ', ':', '/', '@']) {
                anyhow::bail!(
                    "{}: tenant {id}: domain {:?}: give a host name, e.g. \"example.com\" or \"*.example.com\"",
                    at(d.span().start),
                    d.get_ref()
                );
            }
            domains.push(name.to_ascii_lowercase());
        }
        if owned.is_empty() && domains.is_empty() {
            if let Some(other) = &catch_all {
                anyhow::bail!(
                    "{here}: tenants {other:?} and {id:?} both have neither listen nor domains, so both would take every request no other tenant takes: give one of them listen or domains"
                );
            }
            catch_all = Some(id.clone());
        }
        let modules = match &t.modules {
            None => kemibox_kemi::MODULES
                .iter()
                .map(|m| m.to_string())
                .collect(),
            Some(list) => {
                let mut modules = Vec::new();
                for m in list {
                    if !kemibox_kemi::MODULES.contains(&m.get_ref().as_str()) {
                        anyhow::bail!(
                            "{}: tenant {id}: unknown module {:?}: expected one of {}",
                            at(m.span().start),
                            m.get_ref(),
                            kemibox_kemi::MODULES.join(", ")
                        );
                    }
                    modules.push(m.get_ref().clone());
                }
                modules
            }
        };
        let limits = t.limits.sandbox(config.limits.sandbox(Limits::default()));
        limits
            .validate()
            .map_err(|e| anyhow::anyhow!("{here}: tenant {id}: limits: {e}"))?;
        // The line of `key` in this tenant's entry, else the id's.
        let key_at = |key: &str| {
            let from = t.id.span().start;
            at(text
                .get(from..)
                .and_then(|rest| rest.find(key))
                .map_or(from, |i| from + i))
        };
        let rate = t.limits.rate(&config.limits).map_err(|e| {
            let key = if e.starts_with("burst") {
                "burst"
            } else {
                "invocations_per_second"
            };
            anyhow::anyhow!("{}: tenant {id}: limits: {e}", key_at(key))
        })?;
        let recreations = t.limits.recreations(&config.limits).map_err(|e| {
            anyhow::anyhow!(
                "{}: tenant {id}: limits: {e}",
                key_at("recreations_per_second")
            )
        })?;
        let reply = match &t.rate_limited_reply {
            Some(r) => r.checked().map_err(|e| {
                anyhow::anyhow!("{}: tenant {id}: {e}", key_at("rate_limited_reply"))
            })?,
            None => top_reply.clone(),
        };
        let relay = match &t.relay_to {
            Some(entries) => Some(
                relay_to(path, text, entries).map_err(|e| anyhow::anyhow!("{e} (tenant {id})"))?,
            ),
            None => top_relay_to.clone(),
        };
        let script = if t.script.is_absolute() {
            t.script.clone()
        } else {
            base.join(&t.script)
        };
        out.push(LoadedTenant {
            id: id.clone(),
            script,
            listen: owned,
            domains,
            modules,
            limits,
            rate: rate.map(|(per_second, burst)| RateLimit {
                per_second,
                burst,
                reply,
            }),
            relay_to: relay,
            recreations_per_second: recreations,
            auto_reload: t.auto_reload.unwrap_or(config.auto_reload),
            admin_token: t.admin_token.as_ref().map(|t| t.get_ref().clone()),
        });
    }
    Ok(out)
}

/// The line (`line N`) of the first line starting with `key` after the
/// line starting with `section`, else the section's line.
fn line_in_section(text: &str, section: &str, key: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = lines
        .iter()
        .position(|l| l.trim_start().starts_with(section))
    else {
        return String::new();
    };
    let found = lines[start + 1..]
        .iter()
        .take_while(|l| !l.trim_start().starts_with('['))
        .position(|l| l.trim_start().starts_with(key))
        .map_or(start, |i| start + 1 + i);
    format!("line {}", found + 1)
}

/// Check `[admin]`: an address that parses, and a token unless only this
/// host can connect.
fn check_admin(path: &Path, text: &str, admin: &Admin) -> anyhow::Result<Option<AdminSettings>> {
    let at = |key: &str| line_in_section(text, "[admin]", key);
    if let Some(token) = &admin.token
        && token.trim().is_empty()
    {
        anyhow::bail!(
            "{}: {}: admin.token is empty: give a long random one (e.g. from `openssl rand -hex 32`), or remove it to serve loopback without a token",
            path.display(),
            at("token")
        );
    }
    let Some(listen) = &admin.listen else {
        if admin.token.is_some() {
            anyhow::bail!(
                "{}: {}: [admin] has a token but no listen: add listen = \"127.0.0.1:9091\" (IP:PORT) to serve the admin API",
                path.display(),
                at("[admin]")
            );
        }
        return Ok(None);
    };
    let addr: std::net::SocketAddr = listen.parse().map_err(|e| {
        anyhow::anyhow!(
            "{}: {}: admin.listen = {listen:?}: {e}; expected IP:PORT, e.g. \"127.0.0.1:9091\"",
            path.display(),
            at("listen")
        )
    })?;
    if admin.token.is_none() && !addr.ip().is_loopback() {
        anyhow::bail!(
            "{}: {}: admin.listen = {listen:?} is not a loopback address and [admin] has no token, so anyone who can reach it could reload scripts: add token = \"...\" under [admin] (e.g. from `openssl rand -hex 32`), or listen on 127.0.0.1",
            path.display(),
            at("listen")
        );
    }
    Ok(Some(AdminSettings {
        listen: addr,
        token: admin.token.clone(),
    }))
}

/// Check the tenants' `admin_token`s: not empty, each different (a token
/// names one caller), and only with an admin API to use them on.
fn check_tenant_tokens(
    path: &Path,
    text: &str,
    config: &Config,
    admin: &Option<AdminSettings>,
) -> anyhow::Result<()> {
    let mut seen: Vec<&str> = config.admin.token.iter().map(String::as_str).collect();
    for t in &config.tenants {
        let Some(token) = &t.admin_token else {
            continue;
        };
        let line = text
            .get(..token.span().start)
            .unwrap_or(text)
            .matches('\n')
            .count()
            + 1;
        let here = format!("{}: line {line}: tenant {}", path.display(), t.id.get_ref());
        if admin.is_none() {
            anyhow::bail!(
                "{here}: admin_token without an admin API: add [admin] with listen = \"127.0.0.1:9091\", or remove admin_token"
            );
        }
        if token.get_ref().trim().is_empty() {
            anyhow::bail!(
                "{here}: admin_token is empty: give a long random one (e.g. from `openssl rand -hex 32`)"
            );
        }
        if seen.contains(&token.get_ref().as_str()) {
            anyhow::bail!(
                "{here}: admin_token is also another tenant's or the [admin] token: give each its own"
            );
        }
        seen.push(token.get_ref());
    }
    Ok(())
}

/// A `relay_to` list checked; the error names the entry's line.
fn relay_to(path: &Path, text: &str, entries: &[Spanned<String>]) -> anyhow::Result<RelayTo> {
    let mut rules = Vec::new();
    for e in entries {
        let rule = e.get_ref().parse().map_err(|why| {
            let line = text
                .get(..e.span().start)
                .unwrap_or(text)
                .matches('\n')
                .count()
                + 1;
            anyhow::anyhow!("{}: line {line}: relay_to: {why}", path.display())
        })?;
        rules.push(rule);
    }
    Ok(RelayTo { rules })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(name: &str, text: &str) -> anyhow::Result<Loaded> {
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
        assert!(loaded.relay_to.is_none());
        let rate = loaded.rate.unwrap();
        assert_eq!((rate.per_second, rate.burst), (4, 4));
        assert_eq!(rate.reply, LimitedReply::default());
        assert!(load_text("nolimit", "").unwrap().rate.is_none());
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
