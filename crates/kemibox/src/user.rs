//! `kemibox user add|rm|list`: the subscribers digest authentication
//! checks, in the embedded SQLite database (or `--db FILE`). Passwords are
//! turned into HA1 hashes at once; they are never stored or printed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args as ClapArgs, Subcommand};
use kemibox_store::{SqliteStore, SubscriberStore};

#[derive(ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    /// The database file (default: kemibox.sqlite in the data directory,
    /// `$KEMIBOX_DATA_DIR`, else `$XDG_DATA_HOME/kemibox`, else
    /// `~/.local/share/kemibox`).
    #[arg(long, global = true)]
    db: Option<PathBuf>,
    /// The tenant whose subscribers these are.
    #[arg(long, global = true, default_value = "default")]
    tenant: String,
}

#[derive(Subcommand)]
enum Action {
    /// Add (or replace) a subscriber: `kemibox user add alice@example.com PASSWORD`.
    Add { aor: String, password: String },
    /// Remove a subscriber.
    Rm { aor: String },
    /// List the tenant's subscribers, one `user@domain` a line.
    List,
}

/// Where kemibox keeps its data when not told otherwise.
pub fn default_db() -> PathBuf {
    let dir = std::env::var_os("KEMIBOX_DATA_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_DATA_HOME").map(|d| PathBuf::from(d).join("kemibox")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/kemibox")))
        .unwrap_or_else(|| PathBuf::from("kemibox-data"));
    dir.join("kemibox.sqlite")
}

fn split_aor(aor: &str) -> anyhow::Result<(&str, &str)> {
    let aor = aor.strip_prefix("sip:").unwrap_or(aor);
    aor.split_once('@')
        .filter(|(u, d)| !u.is_empty() && !d.is_empty())
        .ok_or_else(|| anyhow::anyhow!("expected user@domain, got {aor:?}"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = args.db.unwrap_or_else(default_db);
    let store = SqliteStore::open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    let tenant = &args.tenant;
    match args.action {
        Action::Add { aor, password } => {
            let (user, domain) = split_aor(&aor)?;
            store.add(tenant, user, domain, &password)?;
            println!("added {user}@{domain} (tenant {tenant})");
        }
        Action::Rm { aor } => {
            let (user, domain) = split_aor(&aor)?;
            if !store.remove(tenant, user, domain)? {
                eprintln!("kemibox: no subscriber {user}@{domain} in tenant {tenant}");
                return Ok(ExitCode::from(1));
            }
            println!("removed {user}@{domain} (tenant {tenant})");
        }
        Action::List => {
            for s in store.list(tenant)? {
                println!("{}@{}", s.username, s.domain);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
