//! `kemibox dispatcher add|rm|list`: the dispatcher table (Kamailio's
//! `dispatcher` table), read by tenants with `[dispatcher] db = true`, in
//! the tenant's database (`--db FILE`, the `[database]` of `--config FILE`,
//! or the embedded default). A running proxy reads the change at its next
//! `dispatcher.reload` (`kemibox ctl dispatcher.reload`) or `ds_reload()`.

use std::process::ExitCode;

use clap::Subcommand;
use kemibox_kemi::dispatcher::DestSpec;
use kemibox_store::DispatcherRow;

use crate::storage::TargetArgs;

pub type Args = TargetArgs<Action>;

#[derive(Subcommand)]
pub enum Action {
    /// Add a destination, the fields of a dispatcher.list line:
    /// `kemibox dispatcher add 1 sip:10.0.0.1:5060 8 0 "weight=50;duid=gw1" main gateway`.
    Add {
        setid: i32,
        /// The destination's SIP URI.
        destination: String,
        /// 1 inactive, 2 trying, 4 disabled, 8 probing, 16 no DNS lookup.
        #[arg(default_value_t = 0)]
        flags: u32,
        /// Higher first (algorithm 8) and in failover order.
        #[arg(default_value_t = 0, allow_hyphen_values = true)]
        priority: i32,
        /// `name=value;...` (weight, rweight, duid, maxload, socket,
        /// ping_from, obproxy, latency, or the script's own).
        #[arg(default_value = "")]
        attrs: String,
        /// The rest of the line.
        description: Vec<String>,
    },
    /// Remove destination DESTINATION of set SETID.
    Rm { setid: i32, destination: String },
    /// List the tenant's rows in dispatcher.list format (a list file;
    /// the description of a row without attributes is not shown).
    List,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::block_on(manage(args))?
}

async fn manage(args: Args) -> anyhow::Result<ExitCode> {
    let store = args.target.open().await?.dispatcher;
    let tenant = args.target.tenant.as_str();
    match args.action {
        Action::Add {
            setid,
            destination,
            flags,
            priority,
            attrs,
            description,
        } => {
            if attrs.contains(char::is_whitespace) {
                anyhow::bail!(
                    "attributes {attrs:?} hold a space: separate them with ';' (weight=50;duid=gw1)"
                );
            }
            let description = description.join(" ");
            if attrs.is_empty() && !description.is_empty() {
                anyhow::bail!(
                    "a description needs attributes before it, as in a list file: give e.g. \"duid=gw1\""
                );
            }
            // The module's own checks: what it could not load is refused.
            let spec = DestSpec::new(setid, &destination, flags, priority, &attrs, &description)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let row = DispatcherRow {
                id: 0,
                setid: spec.setid,
                destination: spec.uri,
                flags: i32::try_from(spec.flags)?,
                priority: spec.priority,
                attrs: spec.attrs.body,
                description: spec.description,
            };
            let id = store.add_destination(tenant, &row).await?;
            println!(
                "added {} {} as row {id} (tenant {tenant})",
                row.setid, row.destination
            );
        }
        Action::Rm { setid, destination } => {
            let removed = store
                .remove_destination(tenant, setid, &destination)
                .await?;
            if removed == 0 {
                eprintln!(
                    "kemibox: no destination {destination} in set {setid} of tenant {tenant}"
                );
                return Ok(ExitCode::from(1));
            }
            println!("removed {removed} row(s) {setid} {destination} (tenant {tenant})");
        }
        Action::List => {
            for r in store.destinations(tenant).await? {
                let mut line = format!("{} {} {} {}", r.setid, r.destination, r.flags, r.priority);
                // A description only follows attributes (the list's order).
                if !r.attrs.is_empty() {
                    line.push_str(&format!(" {} {}", r.attrs, r.description));
                }
                println!("{}", line.trim_end());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
