//! `kemibox address add|rm|list`: the permissions address table
//! (`KSR.permissions.allow_source_address` and friends) in the tenant's
//! SQLite file (`--db FILE`, the `[database]` of `--config FILE`, or the
//! embedded default). A running proxy reads the change at its next
//! `permissions.addressReload` (`kemibox ctl permissions.addressReload`).

use std::process::ExitCode;

use clap::Subcommand;
use kemibox_kemi::Subnet;
use kemibox_store::AddressRow;

use crate::storage::TargetArgs;

pub type Args = TargetArgs<Action>;

#[derive(Subcommand)]
pub enum Action {
    /// Add a row: `kemibox address add 1 192.0.2.0/24 5060 pbx` (PORT 0 or
    /// none: any port).
    Add {
        group: u32,
        /// An IPv4 or IPv6 address, or a subnet in CIDR notation.
        address: String,
        port: Option<u16>,
        tag: Option<String>,
    },
    /// Remove the rows of GROUP for ADDRESS (and PORT, when given).
    Rm {
        group: u32,
        address: String,
        port: Option<u16>,
    },
    /// List the tenant's rows: `GROUP ADDRESS/MASK PORT [TAG]`, one a line.
    List,
}

/// `address` as the table keeps it: the address in its canonical text
/// and the mask.
fn parse(address: &str) -> anyhow::Result<(String, u8)> {
    let subnet = Subnet::parse(address).ok_or_else(|| {
        anyhow::anyhow!(
            "{address:?} is not an IP address or subnet: give e.g. 192.0.2.7, 10.0.0.0/8 or 2001:db8::/32"
        )
    })?;
    Ok((subnet.ip.to_string(), subnet.mask))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::block_on(manage(args))?
}

async fn manage(args: Args) -> anyhow::Result<ExitCode> {
    let store = args.target.open().await?.addresses;
    let tenant = args.target.tenant.as_str();
    match args.action {
        Action::Add {
            group,
            address,
            port,
            tag,
        } => {
            let (ip, mask) = parse(&address)?;
            let row = AddressRow {
                group,
                ip,
                mask,
                port: port.unwrap_or(0),
                tag: tag.filter(|t| !t.is_empty()),
            };
            store.add_address(tenant, &row).await?;
            println!(
                "added {} {}/{} port {} (tenant {tenant})",
                row.group, row.ip, row.mask, row.port
            );
        }
        Action::Rm {
            group,
            address,
            port,
        } => {
            let (ip, mask) = parse(&address)?;
            let removed = store.remove_address(tenant, group, &ip, mask, port).await?;
            if removed == 0 {
                eprintln!("kemibox: no address {group} {ip}/{mask} in tenant {tenant}");
                return Ok(ExitCode::from(1));
            }
            println!("removed {removed} row(s) {group} {ip}/{mask} (tenant {tenant})");
        }
        Action::List => {
            for row in store.addresses(tenant).await? {
                let tag = row.tag.map(|t| format!(" {t}")).unwrap_or_default();
                println!("{} {}/{} {}{tag}", row.group, row.ip, row.mask, row.port);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
