//! The admin API's methods (docs/admin.md), over the running proxy's
//! [`Hosting`], metrics registry and location store. Framing and tokens
//! are kemibox-admin's; this module only says what each method does and
//! which tenant it acts on, so the token check knows what to allow.

use std::sync::Arc;

use kemibox_admin::{Caller, Methods, Params, RpcError};
use kemibox_kemi::PvValue;
use kemibox_kemi::htable::HtError;
use kemibox_metrics::Registry;
use kemibox_store::{Binding, LocationStore, unix_now};
use serde_json::{Map, Value, json};

use crate::hosting::{HostedTenant, Hosting, ReloadError};

/// Every method, with its parameter names (docs/admin.md).
pub const METHODS: &[(&str, &[&str])] = &[
    ("app_lua.reload", &["tenant"]),
    ("app_lua.list", &[]),
    ("app_lua.api_list", &["tenant"]),
    ("tenant.list", &[]),
    ("tenant.stats", &["tenant"]),
    ("core.version", &[]),
    ("core.uptime", &[]),
    ("ul.dump", &["tenant"]),
    ("ul.lookup", &["tenant", "aor", "table"]),
    ("stats.get", &["prefix"]),
    ("permissions.addressReload", &["tenant"]),
    ("permissions.addressDump", &["tenant"]),
    ("permissions.subnetDump", &["tenant"]),
    // Kamailio's htable RPCs, their parameters in Kamailio's order and
    // the tenant last.
    ("htable.dump", &["htable", "tenant"]),
    ("htable.get", &["htable", "key", "tenant"]),
    ("htable.sets", &["htable", "key", "value", "tenant"]),
    ("htable.seti", &["htable", "key", "value", "tenant"]),
    ("htable.delete", &["htable", "key", "tenant"]),
    ("htable.flush", &["htable", "tenant"]),
    ("htable.reload", &["htable", "tenant"]),
    ("htable.listTables", &["tenant"]),
    ("htable.stats", &["tenant"]),
    // Kamailio's dialog RPCs (dialog_rpc.rs), the tenant last.
    ("dlg.profile_get_size", crate::dialog_rpc::PROFILE_PARAMS),
    ("dlg.profile_list", crate::dialog_rpc::PROFILE_PARAMS),
    ("dlg.list", crate::dialog_rpc::LIST_PARAMS),
    ("dlg.list_ctx", crate::dialog_rpc::LIST_PARAMS),
    ("dlg.end_dlg", crate::dialog_rpc::END_PARAMS),
    // Kamailio's dispatcher RPCs, the tenant last.
    ("dispatcher.list", &["tenant"]),
    (
        "dispatcher.set_state",
        &["state", "group", "address", "tenant"],
    ),
    ("dispatcher.reload", &["tenant"]),
    ("dispatcher.ping_active", &["state", "tenant"]),
];

pub struct Admin {
    hosting: Arc<Hosting>,
    registry: Arc<Registry>,
    location: Arc<dyn LocationStore>,
}

impl Admin {
    pub fn new(
        hosting: Arc<Hosting>,
        registry: Arc<Registry>,
        location: Arc<dyn LocationStore>,
    ) -> Admin {
        Admin {
            hosting,
            registry,
            location,
        }
    }

    /// The tenant a tenant-scoped method acts on: the `tenant` parameter,
    /// else the caller's own tenant, else the only one; checked against
    /// the caller before it is looked up, so a tenant token learns
    /// nothing about other tenants.
    fn tenant(
        &self,
        caller: &Caller,
        method: &str,
        params: &Params,
    ) -> Result<&HostedTenant, RpcError> {
        let id = match (params.string("tenant")?, caller) {
            (Some(id), _) => id,
            (None, Caller::Tenant(own)) => own.clone(),
            (None, Caller::Admin) => match self.hosting.tenants() {
                [only] => only.id().to_string(),
                _ => {
                    return Err(RpcError::invalid_params(format!(
                        "{method}: give the tenant, one of {}",
                        self.ids().join(", ")
                    )));
                }
            },
        };
        caller.check_tenant(method, &id)?;
        self.hosting.find(&id).ok_or_else(|| {
            RpcError::invalid_params(format!(
                "no tenant {id:?}: one of {}",
                self.ids().join(", ")
            ))
        })
    }

    fn ids(&self) -> Vec<String> {
        self.hosting
            .tenants()
            .iter()
            .map(|t| t.id().to_string())
            .collect()
    }
}

impl Methods for Admin {
    async fn call(&self, caller: &Caller, method: &str, params: &Value) -> Result<Value, RpcError> {
        let names = METHODS
            .iter()
            .find(|(m, _)| *m == method)
            .map(|(_, names)| *names)
            .ok_or_else(|| RpcError::method_not_found(method))?;
        let params = Params::new(method, params, names)?;
        match method {
            "app_lua.reload" => {
                let id = self.tenant(caller, method, &params)?.id();
                match self.hosting.reload(id.as_str()).await {
                    Ok(r) => Ok(json!({"tenant": r.tenant.as_str(), "version": r.version})),
                    Err(e @ ReloadError::UnknownTenant(_)) => {
                        Err(RpcError::invalid_params(e.to_string()))
                    }
                    Err(e) => Err(RpcError::failed(e.to_string())),
                }
            }
            "app_lua.api_list" => {
                let t = self.tenant(caller, method, &params)?;
                Ok(api_list(t))
            }
            "tenant.stats" => {
                let t = self.tenant(caller, method, &params)?;
                Ok(tenant_stats(t, &self.registry))
            }
            "ul.lookup" => {
                let t = self.tenant(caller, method, &params)?;
                let id = t.id().as_str();
                let aor = params.required("aor")?;
                let aor = aor.strip_prefix("sip:").unwrap_or(&aor).to_string();
                let table = params.string("table")?.unwrap_or_else(|| "location".into());
                let now = unix_now();
                let found = self
                    .location
                    .lookup(id, &table, &aor, now)
                    .await
                    .map_err(|e| RpcError::failed(format!("location store: {e}")))?;
                Ok(json!({
                    "tenant": id,
                    "table": table,
                    "aor": aor,
                    "contacts": found.iter().map(|b| binding(b, now)).collect::<Vec<_>>(),
                }))
            }
            "permissions.addressReload" => {
                let t = self.tenant(caller, method, &params)?;
                let rows = t
                    .pool
                    .tenant()
                    .spec
                    .state
                    .permissions
                    .reload()
                    .await
                    .map_err(|e| {
                        RpcError::failed(format!(
                            "tenant {}: reloading the address table: {e}",
                            t.id()
                        ))
                    })?;
                Ok(json!({"tenant": t.id().as_str(), "rows": rows}))
            }
            "permissions.addressDump" | "permissions.subnetDump" => {
                let t = self.tenant(caller, method, &params)?;
                let dump = t.pool.tenant().spec.state.permissions.dump();
                let subnets = method == "permissions.subnetDump";
                let rows = if subnets {
                    dump.subnets
                } else {
                    dump.addresses
                };
                Ok(Value::Array(
                    rows.iter()
                        .map(|r| {
                            let mut row = json!({
                                "group": r.group,
                                "ip": r.ip,
                                "port": r.port,
                                "tag": r.tag,
                            });
                            if subnets {
                                row["mask"] = Value::from(r.mask);
                            }
                            row
                        })
                        .collect(),
                ))
            }
            "ul.dump" => {
                let only = match params.string("tenant")? {
                    Some(_) => Some(self.tenant(caller, method, &params)?.id().as_str()),
                    None => {
                        caller.check_process(method)?;
                        None
                    }
                };
                ul_dump(&self.ids(), only, &*self.location).await
            }
            m if m.starts_with("dispatcher.") => {
                let t = self.tenant(caller, method, &params)?;
                let state = t.pool.tenant().spec.state.clone();
                crate::dispatcher_rpc::call(t.id().as_str(), &state.dispatcher, method, &params)
                    .await
            }
            m if m.starts_with("htable.") => {
                let t = self.tenant(caller, method, &params)?;
                htable(t, method, &params).await
            }
            m if m.starts_with("dlg.") => {
                let t = self.tenant(caller, method, &params)?;
                let state = t.pool.tenant().spec.state.clone();
                crate::dialog_rpc::call(t.id().as_str(), &state, method, &params).await
            }
            _ => {
                caller.check_process(method)?;
                self.process_wide(method, &params)
            }
        }
    }
}

/// The `htable.*` methods on tenant `t`'s tables.
async fn htable(t: &HostedTenant, method: &str, params: &Params) -> Result<Value, RpcError> {
    let state = t.pool.tenant().spec.state.clone();
    let tables = &state.htable;
    let id = t.id().as_str();
    let now = unix_now();
    let failed = |name: &str, e: HtError| RpcError::failed(format!("htable {name}: {e}"));
    if method == "htable.listTables" || method == "htable.stats" {
        let mut list = Vec::new();
        for name in tables.names() {
            let Some(table) = tables.get(name) else {
                continue;
            };
            let spec = table.spec();
            list.push(if method == "htable.stats" {
                json!({
                    "name": name,
                    "slots": 1u64 << spec.size.min(kemibox_kemi::htable::MAX_EFFECTIVE_SIZE),
                    "items": table.len(now).await.map_err(|e| failed(name, e))?,
                    "max_items": spec.max_items,
                })
            } else {
                json!({
                    "name": name,
                    "dbtable": spec.dbtable,
                    "dbmode": u8::from(spec.dbmode),
                    "expire": spec.autoexpire,
                    "updateexpire": u8::from(spec.updateexpire),
                    "size": spec.size,
                    "max_items": spec.max_items,
                    "initval": spec.initval,
                })
            });
        }
        return Ok(json!({"tenant": id, "tables": list}));
    }
    let name = params.required("htable")?;
    let table = tables.get(&name).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "tenant {id} has no htable {name:?}: one of {}",
            tables.names().join(", ")
        ))
    })?;
    let item = |key: &str, value: &PvValue, expires: u64| {
        let value = match value {
            PvValue::Int(i) => json!(i),
            PvValue::Str(s) => json!(s),
        };
        json!({"name": key, "value": value, "expires": expires.saturating_sub(now)})
    };
    let set = async |key: &str, value: PvValue| {
        (table.set(key, value, None, now).await)
            .map(|()| json!({"tenant": id, "htable": name, "name": key}))
            .map_err(|e| RpcError::failed(format!("htable {name}, key {key:?}: {e}")))
    };
    match method {
        "htable.dump" => {
            let items = table.items(now).await.map_err(|e| failed(&name, e))?;
            let items: Vec<Value> = (items.iter())
                .map(|i| item(&i.key, &i.value, i.expires))
                .collect();
            Ok(json!({"tenant": id, "htable": name, "items": items}))
        }
        "htable.get" => {
            let key = params.required("key")?;
            let value = (table.get(&key, now).await)
                .map_err(|e| failed(&name, e))?
                .ok_or_else(|| RpcError::failed(format!("no item {key:?} in htable {name}")))?;
            let expires = match table.expires_in(&key, now).await {
                Ok(0) => 0,
                Ok(left) => now + left,
                Err(e) => return Err(failed(&name, e)),
            };
            Ok(item(&key, &value, expires))
        }
        "htable.sets" => {
            let key = params.required("key")?;
            set(&key, PvValue::Str(params.required("value")?)).await
        }
        "htable.seti" => {
            let key = params.required("key")?;
            let text = params.required("value")?;
            let value = text.trim().parse().map_err(|_| {
                RpcError::invalid_params(format!("value {text:?} is not a 32-bit integer"))
            })?;
            set(&key, PvValue::Int(value)).await
        }
        "htable.delete" => {
            let key = params.required("key")?;
            let deleted = table
                .remove(&key, now)
                .await
                .map_err(|e| failed(&name, e))?;
            Ok(json!({"tenant": id, "htable": name, "name": key, "deleted": deleted}))
        }
        "htable.flush" => {
            let removed = table.reset(now).await.map_err(|e| failed(&name, e))?;
            Ok(json!({"tenant": id, "htable": name, "removed": removed}))
        }
        "htable.reload" => {
            let items = tables
                .reload(&name, now)
                .await
                .map_err(|e| RpcError::failed(format!("{e:#}")))?;
            Ok(json!({"tenant": id, "htable": name, "items": items}))
        }
        _ => Err(RpcError::method_not_found(method)),
    }
}

impl Admin {
    /// The methods that need the process token.
    fn process_wide(&self, method: &str, params: &Params) -> Result<Value, RpcError> {
        match method {
            "core.version" => Ok(json!({"name": "kemibox", "version": env!("CARGO_PKG_VERSION")})),
            "core.uptime" => {
                let uptime = self.hosting.uptime().as_secs();
                let now = unix_now();
                Ok(json!({"now": now, "up_since": now.saturating_sub(uptime), "uptime": uptime}))
            }
            "app_lua.list" => Ok(Value::Array(
                self.hosting
                    .tenants()
                    .iter()
                    .map(|t| {
                        let current = t.pool.tenant();
                        json!({
                            "tenant": t.id().as_str(),
                            "script": current.spec.script_name,
                            "version": current.version,
                            "auto_reload": t.config.auto_reload,
                            "reloadable": t.config.script.is_some(),
                        })
                    })
                    .collect(),
            )),
            "tenant.list" => Ok(Value::Array(
                self.hosting
                    .tenants()
                    .iter()
                    .map(|t| {
                        let current = t.pool.tenant();
                        let listen: Vec<String> =
                            t.config.listen.iter().map(ToString::to_string).collect();
                        json!({
                            "id": t.id().as_str(),
                            "listen": listen,
                            "domains": t.config.domains,
                            "modules": current.spec.modules,
                            "version": current.version,
                        })
                    })
                    .collect(),
            )),
            "stats.get" => {
                let prefix = params.string("prefix")?.unwrap_or_default();
                let prefix = if prefix == "all" {
                    String::new()
                } else {
                    prefix
                };
                let mut out = Vec::new();
                for family in self.registry.families() {
                    for s in family
                        .samples
                        .iter()
                        .filter(|s| s.name.starts_with(&prefix))
                    {
                        let labels: Map<String, Value> = s
                            .labels
                            .iter()
                            .map(|(k, v)| (k.to_string(), Value::from(v.clone())))
                            .collect();
                        out.push(
                            json!({"name": s.name, "labels": labels, "value": value(s.value)}),
                        );
                    }
                }
                Ok(Value::Array(out))
            }
            _ => Err(RpcError::method_not_found(method)),
        }
    }
}

fn value(v: kemibox_metrics::Value) -> Value {
    match v {
        kemibox_metrics::Value::Int(n) => Value::from(n),
        kemibox_metrics::Value::Float(x) => Value::from(x),
    }
}

/// The KSR functions the tenant's script can call: `core` and `x`
/// always, the rest by its granted modules.
fn api_list(t: &HostedTenant) -> Value {
    let current = t.pool.tenant();
    let granted = &current.spec.modules;
    let functions: Vec<Value> = kemibox_kemi::api::EXPORTS
        .iter()
        .filter(|e| e.module == "core" || e.module == "x" || granted.iter().any(|g| g == e.module))
        .map(|e| {
            json!({
                "name": e.lua_path(),
                "module": e.module,
                "params": e.params.iter().map(|(n, ty)| json!({"name": n, "type": ty})).collect::<Vec<_>>(),
                "returns": e.result,
                "signature": e.signature(),
            })
        })
        .collect();
    json!({"tenant": t.id().as_str(), "modules": granted, "functions": functions})
}

/// A tenant's counters: invocations by outcome (all routes, and per
/// route), transactions, replies by class, and the rest of its metrics.
fn tenant_stats(t: &HostedTenant, registry: &Registry) -> Value {
    let id = t.id().as_str();
    let m = t.pool.metrics();
    let mut by_outcome: Map<String, Value> = kemibox_metrics::InvocationOutcome::ALL
        .iter()
        .map(|o| (o.name().to_string(), Value::from(0u64)))
        .collect();
    let mut routes: Map<String, Value> = Map::new();
    for family in registry.families() {
        if family.name != "kemibox_invocations_total" {
            continue;
        }
        for s in &family.samples {
            let label = |k: &str| {
                s.labels
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.as_str())
            };
            if label("tenant") != Some(id) {
                continue;
            }
            let (Some(route), Some(outcome), kemibox_metrics::Value::Int(n)) =
                (label("route"), label("outcome"), s.value)
            else {
                continue;
            };
            let total = by_outcome.get(outcome).and_then(Value::as_u64).unwrap_or(0);
            by_outcome.insert(outcome.to_string(), Value::from(total + n));
            let entry = routes
                .entry(route.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            entry[outcome] = Value::from(n);
        }
    }
    let replies: Map<String, Value> = (1..=6)
        .map(|c| (format!("{c}xx"), Value::from(m.replies(c))))
        .collect();
    json!({
        "tenant": id,
        "script_version": m.script_version.get(),
        "invocations": by_outcome,
        "routes": routes,
        "transactions": m.transactions.get(),
        "replies": replies,
        "rate_limited": m.rate_limited.get(),
        "instances_created": m.instances_created.get(),
        "reloads": {"ok": m.reloads.get(), "refused": m.reloads_refused.get()},
    })
}

/// Every registration, by tenant (each hosted tenant listed, even with
/// none), or only `only`'s.
async fn ul_dump(
    ids: &[String],
    only: Option<&str>,
    store: &dyn LocationStore,
) -> Result<Value, RpcError> {
    let now = unix_now();
    let mut located = store
        .dump(only, now)
        .await
        .map_err(|e| RpcError::failed(format!("location store: {e}")))?;
    located.sort_by(|a, b| {
        (&a.tenant, &a.table, &a.binding.aor).cmp(&(&b.tenant, &b.table, &b.binding.aor))
    });
    let mut out = Map::new();
    for id in ids
        .iter()
        .filter(|id| only.is_none_or(|o| o == id.as_str()))
    {
        out.insert(id.clone(), Value::Array(Vec::new()));
    }
    for l in located {
        let mut b = binding(&l.binding, now);
        b["table"] = Value::from(l.table.clone());
        if let Value::Array(list) = out
            .entry(l.tenant.clone())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            list.push(b);
        }
    }
    Ok(Value::Object(out))
}

/// One binding as JSON: what `kemibox ul show` prints, by name.
fn binding(b: &Binding, now: u64) -> Value {
    json!({
        "aor": b.aor,
        "contact": b.contact,
        "expires": b.expires,
        "expires_in": b.remaining(now),
        "q": b.q.map(|q| f64::from(q) / 1000.0),
        "call_id": b.call_id,
        "cseq": b.cseq,
        "path": b.path,
        "received": b.received,
        "socket": b.socket,
        "instance": b.instance,
        "reg_id": b.reg_id,
        "user_agent": b.user_agent,
        "updated": b.updated,
    })
}
