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
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(Loaded {
        script: config
            .script
            .map(|s| if s.is_absolute() { s } else { base.join(s) }),
        listen,
        log: config.log,
        error_reply: config.error_reply.map(|r| (r.code, r.reason)),
        limits: config.limits,
    })
}
