//! `kemibox ul show`: the registrations in the configured location store,
//! one binding a line, as Kamailio's `kamctl ul show` lists usrloc.

use std::process::ExitCode;

use clap::Subcommand;
use kemibox_store::{Located, unix_now};

use crate::storage::TargetArgs;

pub type Args = TargetArgs<Action>;

#[derive(Subcommand)]
pub enum Action {
    /// List the tenant's current bindings: AOR, contact, seconds left,
    /// q, received address, Path, instance, User-Agent.
    Show {
        /// Only this AOR (`user@domain`).
        aor: Option<String>,
        /// Every tenant's bindings, not only `--tenant`'s.
        #[arg(long)]
        all: bool,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::block_on(show(args))?
}

async fn show(args: Args) -> anyhow::Result<ExitCode> {
    let Action::Show { aor, all } = args.action;
    let store = args.target.open().await?.location;
    let now = unix_now();
    let tenant = (!all).then_some(args.target.tenant.as_str());
    let aor = aor.map(|a| a.strip_prefix("sip:").unwrap_or(&a).to_string());
    let mut found: Vec<Located> = store
        .dump(tenant, now)
        .await?
        .into_iter()
        .filter(|l| aor.as_ref().is_none_or(|a| &l.binding.aor == a))
        .collect();
    found.sort_by(|a, b| {
        (&a.tenant, &a.table, &a.binding.aor).cmp(&(&b.tenant, &b.table, &b.binding.aor))
    });
    for l in &found {
        println!("{}", line(l, now));
    }
    if found.is_empty() {
        eprintln!("no registrations");
    }
    Ok(ExitCode::SUCCESS)
}

/// One binding as `ul show` prints it.
fn line(l: &Located, now: u64) -> String {
    let b = &l.binding;
    let mut out = format!(
        "{} {} {} <{}> expires={}",
        l.tenant,
        l.table,
        b.aor,
        b.contact,
        b.remaining(now)
    );
    if let Some(q) = b.q {
        out += &format!(" q={}.{:03}", q / 1000, q % 1000);
    }
    if let Some(r) = &b.received {
        out += &format!(" received={r}");
    }
    if !b.path.is_empty() {
        out += &format!(" path={}", b.path.join(","));
    }
    if let Some(i) = &b.instance {
        out += &format!(" instance={i}");
    }
    if let Some(r) = b.reg_id {
        out += &format!(" reg-id={r}");
    }
    if let Some(ua) = &b.user_agent {
        out += &format!(" ua={ua:?}");
    }
    out
}
