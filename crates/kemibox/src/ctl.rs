//! `kemibox ctl METHOD [ARGS...]`: one admin API call (docs/admin.md),
//! the result printed as JSON. Kamailio's `kamcmd`, for kemibox.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use kemibox_admin::client::{self, CallError, Endpoint};

/// The environment variable holding the token when `--token` is not given.
pub const TOKEN_ENV: &str = "KEMIBOX_ADMIN_TOKEN";

#[derive(clap::Args)]
pub struct Args {
    /// Method, e.g. `app_lua.reload`, `core.version` (see docs/admin.md).
    method: String,
    /// Parameters, in order; those that parse as JSON numbers are sent as
    /// numbers, the others as strings.
    #[arg(allow_hyphen_values = true)]
    args: Vec<String>,
    /// Take the address and token from this file's `[admin]` section.
    #[arg(long, conflicts_with = "url")]
    config: Option<PathBuf>,
    /// The admin API, `http://IP:PORT/`.
    #[arg(long)]
    url: Option<String>,
    /// Bearer token (default: $KEMIBOX_ADMIN_TOKEN, else the config
    /// file's `[admin] token`).
    #[arg(long)]
    token: Option<String>,
    /// Seconds to wait for the connection, and again for the answer.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

/// 0 with the result on stdout; 1 with the error on stderr.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (endpoint, config_token) = match (&args.url, &args.config) {
        (Some(url), _) => (url.parse::<Endpoint>().map_err(anyhow::Error::msg)?, None),
        (None, Some(path)) => {
            let loaded = crate::config::load(path)?;
            let Some(admin) = loaded.admin else {
                anyhow::bail!(
                    "{}: no [admin] listen: add [admin] with listen = \"127.0.0.1:9091\" (and restart kemibox run), or give --url",
                    path.display()
                );
            };
            (Endpoint::for_listen(admin.listen), admin.token)
        }
        (None, None) => anyhow::bail!(
            "where is the admin API? give --config FILE (its [admin] section) or --url http://IP:PORT/"
        ),
    };
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()))
        .or(config_token);
    let params = client::params_from_args(&args.args);
    let timeout = Duration::from_secs(args.timeout.max(1));
    let called = crate::block_on(client::call(
        &endpoint,
        token.as_deref(),
        &args.method,
        params,
        timeout,
    ))?;
    match called {
        Ok(result) => {
            // A closed pipe (`| head`) is not an error worth a panic.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stdout(),
                "{}",
                serde_json::to_string_pretty(&result)?
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(CallError::Rpc(e)) => {
            eprintln!(
                "kemibox ctl: {}: {} (code {})",
                args.method, e.message, e.code
            );
            Ok(ExitCode::from(1))
        }
        Err(e @ CallError::Transport(_)) => {
            eprintln!("kemibox ctl: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
