//! `kemibox run`: the proxy.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use kemibox_kemi::Services;
use kemibox_proxy::{Hosted, Listen, Proxy, ProxyConfig};
use kemibox_sandbox::{Limits, Pool, Runtime, TenantSpec};

use crate::config::{CommandLine, Settings, Tenant};
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

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let settings = match &args.config {
        Some(path) => crate::config::load(path)?,
        None => Settings::command_line(CommandLine {
            script: args.script,
            listen: args.listen,
            fuel: args.fuel,
            memory: args.memory,
            deadline_ms: args.deadline_ms,
            log: args.log,
            db: args.db,
        })?,
    };
    crate::init_logging(
        &settings.log,
        args.log_format.unwrap_or(settings.log_format),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (services, location, tables, acc, htables) = runtime.block_on(async {
        let stores = crate::storage::open(&settings.database).await?;
        tracing::info!("{}", stores.describe);
        let services = crate::storage::services(&stores, settings.registrar, &settings.auth)?;
        crate::storage::spawn_expiry(stores.location.clone());
        let acc = crate::storage::acc_writer(&settings.database).await?;
        let htables =
            crate::storage::htable_backends(&settings.database, &stores, &settings.tenants).await?;
        let tables = (stores.addresses, stores.dispatcher);
        anyhow::Ok((services, stores.location, tables, acc, htables))
    })?;
    runtime.block_on(serve(settings, services, location, tables, acc, htables))
}

/// The tenant's spec for the sandbox: its script read (the embedded
/// default one for a tenant without a file) and its settings.
fn spec(tenant: &Tenant, services: &Arc<Services>) -> anyhow::Result<TenantSpec> {
    let (name, source) = match &tenant.script {
        Some(path) => (crate::script_name(path), crate::read_script(path)?),
        None => (
            "default.lua (embedded)".to_string(),
            DEFAULT_SCRIPT.to_string(),
        ),
    };
    let mut spec = TenantSpec::with_services(tenant.id.clone(), name, source, services.clone());
    spec.limits = tenant.limits;
    spec.modules = tenant.modules.clone();
    spec.relay_to = tenant.relay_to.clone().map(Arc::new);
    spec.recreations_per_second = tenant.recreations_per_second;
    spec.lua_modules = crate::lua_modules::read(&tenant.lua_path)
        .map_err(|e| anyhow::anyhow!("tenant {}: {e:#}", tenant.id))?
        .into();
    Ok(spec)
}

async fn serve(
    settings: Settings,
    services: Arc<Services>,
    location: Arc<dyn kemibox_store::LocationStore>,
    (addresses, dispatchers): (
        Arc<dyn kemibox_store::AddressStore>,
        Arc<dyn kemibox_store::DispatcherStore>,
    ),
    acc: kemibox_store::AccWriter,
    htables: crate::storage::HtableBackends,
) -> anyhow::Result<ExitCode> {
    let defaults = ProxyConfig::default();
    let config = ProxyConfig {
        listen: settings.listen.clone(),
        error_reply: settings.error_reply.unwrap_or(defaults.error_reply.clone()),
        unmatched_reply: settings
            .unmatched_reply
            .unwrap_or(defaults.unmatched_reply.clone()),
        ..defaults
    };
    let runtime = Runtime::new(None)?;
    let transports = Proxy::bind(&config).await?;
    let metrics_listener = match settings.metrics_listen {
        Some(addr) => Some(kemibox_metrics::http::bind(addr).await?),
        None => None,
    };
    let admin = settings.admin;
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
    // One tenant takes every message, whatever its sockets and domains,
    // and its messages need not name it.
    let single = settings.tenants.len() == 1;
    let mut hosted = Vec::new();
    let mut tenants = Vec::new();
    let mut states = Vec::new();
    let uac = kemibox_kemi::uac::UacHandle::default();
    let dialogs =
        crate::storage::dialog_store(&settings.database, &settings.tenants, &settings.dialog_node)
            .await?;
    for tenant in settings.tenants {
        let mut spec = spec(&tenant, &services)?;
        spec.state = Arc::new(
            crate::tenant_state::open(
                &tenant,
                &addresses,
                &dispatchers,
                &acc,
                &htables,
                &uac,
                dialogs.as_ref(),
            )
            .await?,
        );
        crate::tenant_state::spawn_upkeep(tenant.id.as_str(), &spec.state);
        states.push((tenant.id.clone(), spec.state.clone()));
        let mut myself = Proxy::myself(&transports);
        myself.domains = tenant.domains.clone();
        spec.myself = Arc::new(myself);
        let id = &tenant.id;
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
                listen = ?tenant.listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
                domains = ?tenant.domains,
                "tenant loaded"
            );
        }
        if let Some(token) = &tenant.admin_token {
            tokens.tenants.push((id.to_string(), token.clone()));
        }
        hosted.push(Hosted {
            pool: pool.clone(),
            listen: tenant.listen.clone(),
            domains: tenant.domains.clone(),
            rate: tenant.rate.clone(),
        });
        tenants.push(HostedTenant {
            config: tenant,
            pool,
        });
    }
    let hosting = Arc::new(Hosting::new(tenants));
    hosting.spawn_watch();
    hosting.spawn_trim();
    // A single tenant owns no sockets or domains, so it takes every message.
    let proxy = Proxy::with_tenants(config, hosted, transports)?;
    // The modules' requests of their own (dispatcher probes, dialog BYEs).
    uac.set(proxy.uac());
    proxy.metrics().process.set_acc(acc.metrics().clone());
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
    for (id, state) in &states {
        crate::tenant_state::close(id.as_str(), state).await;
    }
    let left = acc.flush(ACC_FLUSH).await;
    if left > 0 {
        tracing::error!(
            records = left,
            "acc records not written at exit: the database did not take them within {ACC_FLUSH:?}"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// How long `kemibox run` waits at exit for queued acc records to be
/// written.
const ACC_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

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
