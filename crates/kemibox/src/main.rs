//! `kemibox`: the command line.
//!
//! - `kemibox check SCRIPT`: does the script load and define `ksr_request_route`?
//! - `kemibox route SCRIPT --message FILE`: run a route on one SIP message
//!   offline and print what it did, one JSON object a line.
//! - `kemibox api`: every KSR function available to scripts.
//! - `kemibox run`: the proxy.
//! - `kemibox user add|rm|list`: subscribers for digest authentication.
//! - `kemibox address add|rm|list`: the permissions address table.
//! - `kemibox ul show`: registrations.
//! - `kemibox ctl METHOD [ARGS...]`: call the admin API of a running proxy.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool: what it prints is its output"
)]

/// The proxy allocates for every message (parsed message, edits, events,
/// rendered bytes); mimalloc's per-thread free lists serve that pattern
/// with less CPU than the system allocator (docs/benchmarks-kamailio.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod address;
mod admin;
mod api;
mod check;
mod config;
mod ctl;
mod dialog_rpc;
mod dispatcher_cli;
mod dispatcher_rpc;
mod hosting;
mod lua_modules;
mod route;
mod run;
mod script_env;
mod storage;
mod tenant_state;
mod ul;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kemibox",
    version,
    about = "SIP proxy running Kamailio KEMI Lua scripts in a wasm sandbox"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check that a script loads and defines ksr_request_route (exit 0), or
    /// print `SCRIPT:LINE: message` (exit 1).
    Check {
        script: PathBuf,
        /// Function the script must define.
        #[arg(long, default_value = "ksr_request_route")]
        entry: String,
        #[command(flatten)]
        lua: script_env::LuaArgs,
    },
    /// Run a route function on one SIP message, without network, and print
    /// one JSON object per thing the script did, then a summary line.
    Route(route::Args),
    /// Run the proxy: the embedded default script on udp:127.0.0.1:5060
    /// unless told otherwise.
    Run(run::Args),
    /// Subscribers for digest authentication: add, rm, list.
    User(user::Args),
    /// The permissions address table (allow_source_address): add, rm, list.
    Address(address::Args),
    /// The dispatcher table (`[dispatcher] db = true`): add, rm, list.
    Dispatcher(dispatcher_cli::Args),
    /// Registrations (user location): show.
    Ul(ul::Args),
    /// Call the admin API of a running `kemibox run` (docs/admin.md) and
    /// print the result as JSON: `kemibox ctl app_lua.reload acme`.
    Ctl(ctl::Args),
    /// List every KSR function (`KSR.tm.t_relay() -> int`).
    Api {
        /// Print the Markdown reference (docs/api.md) instead.
        #[arg(long)]
        markdown: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { script, entry, lua } => check::run(&script, &entry, &lua),
        Command::Route(args) => route::run(args),
        Command::Run(args) => run::run(args),
        Command::User(args) => user::run(args),
        Command::Address(args) => address::run(args),
        Command::Dispatcher(args) => dispatcher_cli::run(args),
        Command::Ul(args) => ul::run(args),
        Command::Ctl(args) => ctl::run(args),
        Command::Api { markdown } => {
            api::run(markdown);
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kemibox: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-01-01T00:00:00Z  INFO kemibox: message tenant=a`.
    #[default]
    Plain,
    /// One JSON object a line (tracing-subscriber's JSON format, the
    /// event's fields at the top level), for log collectors.
    Json,
}

/// Log to stderr through `tracing`; `RUST_LOG` overrides `default`.
fn init_logging(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// A single-threaded runtime for the offline commands.
fn block_on<F: Future>(f: F) -> anyhow::Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f))
}

/// Read a script, naming the file in the error.
fn read_script(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read script {}: {e}", path.display()))
}

/// The name a script is known by in messages: its path as given.
fn script_name(path: &std::path::Path) -> String {
    path.display().to_string()
}
