//! `kemibox route SCRIPT --message FILE`: unit-test a route offline.
//!
//! Output (documented in docs/route-output.md): one JSON object per line,
//! first one per event in the order the script caused them (`log`, `reply`,
//! `header-added`, `header-removed`, `pv-set`, `callback`, `tm`, `exit`,
//! `drop`), then one `result` line (also when the script cannot be loaded:
//! outcome `load-error`). Exit status: 0 when the outcome is `ok`,
//! 1 for any other outcome, 2 when the script or message cannot be read.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use kemibox_kemi::{Message, Myself, Transport};
use kemibox_sandbox::{Instance, Invocation, Outcome, Tenant, TenantSpec};
use kemibox_sip::SipMessage;
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct Args {
    /// The routing script.
    script: PathBuf,
    /// File holding one SIP message, or `-` for standard input.
    #[arg(long)]
    message: PathBuf,
    /// Address the message came from ($si, $sp).
    #[arg(long, default_value = "127.0.0.1:5070")]
    source: SocketAddr,
    /// Address it arrived on ($Ri, $Rp; what is_myself and record_route use).
    #[arg(long, default_value = "127.0.0.1:5060")]
    local: SocketAddr,
    /// Route function to run.
    #[arg(long, default_value = "ksr_request_route")]
    function: String,
    /// Fuel budget for the invocation.
    #[arg(long)]
    fuel: Option<u64>,
    /// Memory cap in bytes.
    #[arg(long)]
    memory: Option<u64>,
    /// Wall-clock deadline in milliseconds.
    #[arg(long)]
    deadline_ms: Option<u64>,
    /// The tenant's variables, defines and Lua modules.
    #[command(flatten)]
    lua: crate::script_env::LuaArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::init_logging("warn,kemibox::script=off", crate::LogFormat::Plain);
    let source = crate::read_script(&args.script)?;
    let raw = read_message(&args.message)?;
    let sip = SipMessage::parse(raw)
        .map_err(|e| anyhow::anyhow!("{}: not a SIP message: {e}", args.message.display()))?;

    let runtime = kemibox_sandbox::Runtime::new(None)?;
    let mut spec = TenantSpec::new("route".parse()?, crate::script_name(&args.script), source);
    spec.entry = Some(args.function.clone());
    args.lua.apply(&mut spec)?;
    spec.myself = Arc::new(Myself {
        addresses: vec![args.local],
        domains: Vec::new(),
    });
    if let Some(fuel) = args.fuel {
        spec.limits.fuel = fuel;
    }
    if let Some(memory) = args.memory {
        spec.limits.memory = memory;
    }
    if let Some(deadline_ms) = args.deadline_ms {
        spec.limits.deadline_ms = deadline_ms;
    }
    let loaded = crate::block_on(Tenant::load(&runtime, spec))?;
    let (_, mut instance) = match loaded {
        Ok(loaded) => loaded,
        Err(failure) => {
            let result = json!({
                "event": "result",
                "error": failure.to_string(),
                "function": args.function,
                "line": failure.line,
                "message": failure.message,
                "outcome": "load-error",
                "ret": null,
            });
            println!("{result}");
            return Ok(ExitCode::from(1));
        }
    };
    let message = Message::new(sip, args.source, args.local, Transport::Udp);
    let invocation = crate::block_on(invoke(&mut instance, &args.function, message))?;
    for event in &invocation.events {
        println!("{}", serde_json::to_string(event)?);
    }
    println!("{}", summary(&invocation));
    Ok(if invocation.outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn invoke(instance: &mut Instance, function: &str, message: Message) -> Invocation {
    instance.ctx().record_logs = true;
    instance.invoke(function, Some(message)).await
}

fn read_message(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    let mut raw = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut raw)
            .context("reading the message from stdin")?;
    } else {
        raw = std::fs::read(path)
            .with_context(|| format!("cannot read message {}", path.display()))?;
    }
    Ok(raw)
}

/// The final `result` line.
fn summary(inv: &Invocation) -> Value {
    let mut out = match serde_json::to_value(&inv.outcome) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    out.insert("event".into(), json!("result"));
    out.insert("function".into(), json!(inv.function));
    let ret = match inv.outcome {
        Outcome::Ok { ret } => json!(ret),
        _ => Value::Null,
    };
    out.insert("ret".into(), ret);
    out.insert("fuel_used".into(), json!(inv.fuel_used));
    if let Some(m) = &inv.message {
        out.insert("dropped".into(), json!(m.drop));
        out.insert("dst_uri".into(), json!(m.dst_uri));
        out.insert("ruri".into(), json!(m.ruri()));
        let forwarded = kemibox_sip::render(&m.sip, &m.edits);
        out.insert(
            "forwarded".into(),
            json!(String::from_utf8_lossy(&forwarded)),
        );
    }
    // Stable key order for diffing: "event" first, then alphabetical.
    let mut ordered = serde_json::Map::new();
    if let Some(v) = out.remove("event") {
        ordered.insert("event".into(), v);
    }
    let mut keys: Vec<String> = out.keys().cloned().collect();
    keys.sort();
    for k in keys {
        if let Some(v) = out.remove(&k) {
            ordered.insert(k, v);
        }
    }
    Value::Object(ordered)
}
