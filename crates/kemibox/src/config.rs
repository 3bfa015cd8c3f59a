//! `kemibox run --config FILE`: the proxy's settings in TOML.
//!
//! ```toml
//! script = "relay.lua"                 # relative to this file; default: the embedded script
//! listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
//! log = "info"
//! error_reply = { code = 500, reason = "Server Error" }
//!
//! [limits]                             # per invocation
//! fuel = 50000000
//! memory = 33554432
//! deadline_ms = 500
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
//! ```
//!
//! Unknown keys are refused, and every error names the file, the line and
//! what is expected there.

use std::path::{Path, PathBuf};

use kemibox_proxy::Listen;
use kemibox_sandbox::Limits;
use serde::Deserialize;

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
    #[serde(default)]
    pub error_reply: Option<ErrorReply>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub database: Database,
    #[serde(default)]
    pub registrar: Registrar,
    #[serde(default)]
    pub auth: Auth,
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
    pub error_reply: Option<(u16, String)>,
    pub limits: Limits,
    pub database: Database,
    pub registrar: Registrar,
    pub auth: Auth,
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
    config
        .limits
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {}: limits: {e}", path.display(), line_of("[limits]")))?;
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
    let base = path.parent().unwrap_or(Path::new("."));
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
        error_reply: config.error_reply.map(|r| (r.code, r.reason)),
        limits: config.limits,
        database,
        registrar: config.registrar,
        auth: config.auth,
    })
}
