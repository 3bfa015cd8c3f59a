//! `kemibox run`: the proxy.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use kemibox_proxy::{Hosted, Listen, Proxy, ProxyConfig, RateLimit};
use kemibox_sandbox::{Limits, Pool, Runtime, TenantSpec};

use crate::hosting::{HostedTenant, Hosting};

/// The script `kemibox run` uses when none is given.
const DEFAULT_SCRIPT: &str = include_str!("../../../scripts/default.lua");

#[derive(clap::Args)]
pub struct Args {
    /// Settings from a TOML file (see docs/config.md) instead of the
    /// options below.
    #[arg(long, conflicts_with_all = ["script", "listen", "fuel", "memory", "deadline_ms", "log", "db"])]
    config: Option<PathBuf>,
    /// Routing script (default: the embedded scripts/default.lua).
    #[arg(long)]
    script: Option<PathBuf>,
    /// Socket to listen on, `udp:IP:PORT` or `tcp:IP:PORT`; repeat for
    /// several.
    #[arg(long = "listen", default_value = "udp:127.0.0.1:5060")]
    listen: Vec<Listen>,
    /// Fuel per invocation.
    #[arg(long, default_value_t = Limits::default().fuel)]
    fuel: u64,
    /// Memory cap per instance, in bytes.
    #[arg(long, default_value_t = Limits::default().memory)]
    memory: u64,
    /// Wall-clock deadline per invocation, in milliseconds.
    #[arg(long, default_value_t = Limits::default().deadline_ms)]
    deadline_ms: u64,
    /// Log filter (`info`, `debug`, `warn,kemibox::script=info`, ...);
    /// RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    log: String,
    /// Log line format: `plain`, or `json` (one object a line); overrides
    /// the config file's `log_format`.
    #[arg(long, value_enum)]
    log_format: Option<crate::LogFormat>,
    /// SQLite file for subscribers and registrations (default:
    /// kemibox.sqlite in the data directory; see `kemibox user --help`).
    #[arg(long)]
    db: Option<PathBuf>,
}

pub fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    let mut error_reply = None;
    let mut unmatched_reply = None;
    let mut tenants = Vec::new();
    let mut database = crate::config::Database::default();
    let mut registrar = crate::config::Registrar::default();
    let mut auth = crate::config::Auth::default();
    let mut rate = None;
    let mut relay_to = None;
    let mut metrics_listen = None;
    let mut recreations_per_second = kemibox_sandbox::DEFAULT_RECREATIONS_PER_SECOND;
    let mut auto_reload = false;
    let mut log_format = crate::LogFormat::Plain;
    let mut admin = None;
    if let Some(path) = &args.config {
        let loaded = crate::config::load(path)?;
        args.script = loaded.script;
        args.listen = loaded.listen;
        args.log = loaded.log;
        log_format = loaded.log_format;
        admin = loaded.admin;
        args.fuel = loaded.limits.fuel;
        args.memory = loaded.limits.memory;
        args.deadline_ms = loaded.limits.deadline_ms;
        error_reply = loaded.error_reply;
        unmatched_reply = loaded.unmatched_reply;
        tenants = loaded.tenants;
        rate = loaded.rate;
        relay_to = loaded.relay_to;
        database = loaded.database;
        registrar = loaded.registrar;
        auth = loaded.auth;
        metrics_listen = loaded.metrics_listen;
        recreations_per_second = loaded.recreations_per_second;
        auto_reload = loaded.auto_reload;
    }
    if args.db.is_some() {
        database.sqlite = args.db.clone();
    }
    crate::init_logging(&args.log, args.log_format.unwrap_or(log_format));
    let limits = Limits {
        fuel: args.fuel,
        memory: args.memory,
        deadline_ms: args.deadline_ms,
    };
    limits
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid limits: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (services, location) = runtime.block_on(async {
        let stores = crate::storage::open(&database).await?;
        tracing::info!("{}", stores.describe);
        let services = crate::storage::services(&stores, registrar, &auth)?;
        crate::storage::spawn_expiry(stores.location.clone());
        anyhow::Ok((services, stores.location))
    })?;
    let plans = if tenants.is_empty() {
        let (name, source) = match &args.script {
            Some(path) => (crate::script_name(path), crate::read_script(path)?),
            None => (
                "default.lua (embedded)".to_string(),
                DEFAULT_SCRIPT.to_string(),
            ),
        };
        let mut spec = TenantSpec::with_services("default", name, source, services.clone());
        spec.limits = limits;
        spec.relay_to = relay_to.map(Arc::new);
        spec.recreations_per_second = recreations_per_second;
        vec![Plan {
            spec,
            listen: Vec::new(),
            domains: Vec::new(),
            rate,
            script: args.script.clone(),
            auto_reload,
            admin_token: None,
        }]
    } else {
        let mut plans = Vec::new();
        for t in tenants {
            let source = crate::read_script(&t.script)?;
            let mut spec = TenantSpec::with_services(
                t.id,
                crate::script_name(&t.script),
                source,
                services.clone(),
            );
            spec.limits = t.limits;
            spec.modules = t.modules;
            spec.relay_to = t.relay_to.map(Arc::new);
            spec.recreations_per_second = t.recreations_per_second;
            plans.push(Plan {
                spec,
                listen: t.listen,
                domains: t.domains,
                rate: t.rate,
                script: Some(t.script),
                auto_reload: t.auto_reload,
                admin_token: t.admin_token,
            });
        }
        plans
    };
    let defaults = ProxyConfig::default();
    let config = ProxyConfig {
        listen: args.listen.clone(),
        error_reply: error_reply.unwrap_or(defaults.error_reply.clone()),
        unmatched_reply: unmatched_reply.unwrap_or(defaults.unmatched_reply.clone()),
        ..defaults
    };
    runtime.block_on(serve(config, plans, metrics_listen, admin, location))
}

/// A tenant to start.
struct Plan {
    spec: TenantSpec,
    /// The sockets it owns.
    listen: Vec<Listen>,
    domains: Vec<String>,
    rate: Option<RateLimit>,
    /// Its script file (`None`: the embedded default script).
    script: Option<PathBuf>,
    auto_reload: bool,
    /// Its admin API token.
    admin_token: Option<String>,
}

async fn serve(
    config: ProxyConfig,
    plans: Vec<Plan>,
    metrics_listen: Option<std::net::SocketAddr>,
    admin: Option<crate::config::AdminSettings>,
    location: Arc<dyn kemibox_store::LocationStore>,
) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(None)?;
    let transports = Proxy::bind(&config).await?;
    let metrics_listener = match metrics_listen {
        Some(addr) => Some(kemibox_metrics::http::bind(addr).await?),
        None => None,
    };
    let admin_listener = match &admin {
        Some(a) => Some(kemibox_admin::bind(a.listen).await?),
        None => None,
    };
    let mut tokens = kemibox_admin::Tokens {
        admin: admin.as_ref().and_then(|a| a.token.clone()),
        tenants: Vec::new(),
    };
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    // One tenant takes every message, whatever its sockets and domains.
    let single = plans.len() == 1;
    let mut hosted = Vec::new();
    let mut tenants = Vec::new();
    for Plan {
        mut spec,
        listen,
        domains,
        rate,
        script,
        auto_reload,
        admin_token,
    } in plans
    {
        let mut myself = Proxy::myself(&transports);
        myself.domains = domains.clone();
        spec.myself = Arc::new(myself);
        let id = spec.id.clone();
        let pool = match Pool::new(&runtime, spec, workers * 4).await {
            Ok(pool) => Arc::new(pool),
            Err(failure) if single => {
                eprintln!("kemibox: script refused: {failure}");
                return Ok(ExitCode::from(1));
            }
            Err(failure) => {
                eprintln!("kemibox: tenant {id}: script refused: {failure}");
                return Ok(ExitCode::from(1));
            }
        };
        if !single {
            tracing::info!(
                tenant = %id,
                listen = ?listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
                domains = ?domains,
                "tenant loaded"
            );
        }
        if let Some(token) = admin_token {
            tokens.tenants.push((id.clone(), token));
        }
        tenants.push(HostedTenant {
            pool: pool.clone(),
            script,
            auto_reload,
            listen: listen.iter().map(ToString::to_string).collect(),
            domains: domains.clone(),
        });
        hosted.push(Hosted {
            pool,
            listen,
            domains,
            rate,
        });
    }
    let hosting = Arc::new(Hosting::new(tenants));
    hosting.spawn_watch();
    hosting.spawn_trim();
    // A single tenant owns no sockets or domains, so it takes every message.
    let proxy = Proxy::with_tenants(config, hosted, transports)?;
    if let Some(listener) = metrics_listener {
        tracing::info!(address = ?listener.local_addr().ok(), "serving GET /metrics");
        tokio::spawn(kemibox_metrics::http::serve(listener, proxy.metrics()));
    }
    if let Some(listener) = admin_listener {
        let address = listener.local_addr().ok();
        if tokens.admin.is_none() {
            tracing::warn!(
                address = ?address,
                "the admin API has no [admin] token: any local user can reload scripts and read registrations; set one"
            );
        }
        tracing::info!(address = ?address, "serving the admin API (JSON-RPC over HTTP POST)");
        let methods = crate::admin::Admin::new(hosting.clone(), proxy.metrics(), location);
        tokio::spawn(kemibox_admin::serve(listener, tokens, Arc::new(methods)));
    }
    tracing::info!(addresses = ?proxy.local_addrs(), "kemibox proxy started");
    proxy.serve(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
