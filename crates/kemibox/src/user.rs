//! `kemibox user add|rm|list`: the subscribers digest authentication
//! checks, in the configured database (`--config FILE`), a given SQLite
//! file (`--db FILE`) or the embedded default. Passwords are turned into
//! HA1 hashes at once; they are never stored or printed.

use std::process::ExitCode;

use clap::Subcommand;

use crate::storage::TargetArgs;

pub type Args = TargetArgs<Action>;

#[derive(Subcommand)]
pub enum Action {
    /// Add (or replace) a subscriber: `kemibox user add alice@example.com PASSWORD`.
    Add { aor: String, password: String },
    /// Remove a subscriber.
    Rm { aor: String },
    /// List the tenant's subscribers, one `user@domain` a line.
    List,
}

fn split_aor(aor: &str) -> anyhow::Result<(&str, &str)> {
    let aor = aor.strip_prefix("sip:").unwrap_or(aor);
    aor.split_once('@')
        .filter(|(u, d)| !u.is_empty() && !d.is_empty())
        .ok_or_else(|| anyhow::anyhow!("expected user@domain, got {aor:?}"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::block_on(manage(args))?
}

async fn manage(args: Args) -> anyhow::Result<ExitCode> {
    let store = args.target.open().await?.subscribers;
    let tenant = args.target.tenant.as_str();
    match args.action {
        Action::Add { aor, password } => {
            let (user, domain) = split_aor(&aor)?;
            store.add(tenant, user, domain, &password).await?;
            println!("added {user}@{domain} (tenant {tenant})");
        }
        Action::Rm { aor } => {
            let (user, domain) = split_aor(&aor)?;
            if !store.remove(tenant, user, domain).await? {
                eprintln!("kemibox: no subscriber {user}@{domain} in tenant {tenant}");
                return Ok(ExitCode::from(1));
            }
            println!("removed {user}@{domain} (tenant {tenant})");
        }
        Action::List => {
            for s in store.list(tenant).await? {
                println!("{}@{}", s.username, s.domain);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
