//! The dispatcher's RPCs (Kamailio's `dispatcher.list`, `set_state`,
//! `reload`, `ping_active`) on one tenant's destination sets, with
//! Kamailio's arguments and answers.

use kemibox_admin::{Params, RpcError};
use kemibox_kemi::dispatcher::Dispatcher;
use serde_json::{Value, json};

/// The `dispatcher.*` `method` on tenant `id`'s sets `ds`, with Kamailio's
/// arguments and answers (its structure names: `NRSETS`, `RECORDS`,
/// `SET`, `ID`, `TARGETS`, `DEST`, `URI`, `FLAGS`, ...).
pub async fn call(
    id: &str,
    ds: &Dispatcher,
    method: &str,
    params: &Params,
) -> Result<Value, RpcError> {
    match method {
        "dispatcher.list" => {
            let sets = ds.sets();
            if sets.sets.is_empty() {
                return Err(RpcError::failed(format!(
                    "tenant {id}: no destination sets"
                )));
            }
            let records: Vec<Value> = (sets.sets.values())
                .map(|set| {
                    let targets: Vec<Value> = (set.dests.iter())
                        .map(|d| {
                            let a = &d.attrs;
                            let mut dest = json!({
                                "URI": d.uri,
                                "FLAGS": d.health().letters(),
                                "PRIORITY": d.priority,
                                "ATTRS": {
                                    "BODY": a.body,
                                    "DUID": a.duid.clone().unwrap_or_default(),
                                    "MAXLOAD": a.maxload,
                                    "WEIGHT": a.weight,
                                    "RWEIGHT": a.rweight,
                                    "SOCKET": a.socket.clone().unwrap_or_default(),
                                    "SOCKNAME": "",
                                    "OBPROXY": a.obproxy.clone().unwrap_or_default(),
                                },
                                "LATENCY": {
                                    "EST": d.latency().estimate,
                                    "MAX": d.latency().max,
                                    "TIMEOUT": d.latency().timeouts,
                                },
                                "SELECTED": d.selected.load(std::sync::atomic::Ordering::Relaxed),
                            });
                            if ds.settings.hash_size > 0 {
                                let load =
                                    a.duid.as_deref().map_or(0, |u| ds.call_load(d.setid, u));
                                dest["RUNTIME"] = json!({"DLGLOAD": load});
                            }
                            json!({"DEST": dest})
                        })
                        .collect();
                    json!({"SET": {"ID": set.id, "TARGETS": targets}})
                })
                .collect();
            Ok(json!({"NRSETS": sets.sets.len(), "RECORDS": records}))
        }
        "dispatcher.set_state" => {
            let text = params.required("state")?;
            let state = kemibox_kemi::dispatcher::parse_state(&text).ok_or_else(|| {
                RpcError::invalid_params(format!(
                    "state {text:?}: a, i, t or d (or 1, 0, 3, 2), optionally followed by p"
                ))
            })?;
            let group = params.required("group")?;
            let group: i32 = group.trim().parse().map_err(|_| {
                RpcError::invalid_params(format!("group {group:?} is not an integer"))
            })?;
            let address = params.required("address")?;
            let only = (address != "all").then_some(address.as_str());
            let changed = ds
                .set_state(group, only, state)
                .map_err(|e| RpcError::failed(format!("tenant {id}: {e}")))?;
            Ok(
                json!({"tenant": id, "updated": changed, "message": "Ok. Dispatcher state updated."}),
            )
        }
        "dispatcher.reload" => {
            let n = ds
                .reload(id)
                .await
                .map_err(|e| RpcError::failed(format!("tenant {id}: reload failed: {e}")))?;
            tracing::info!(tenant = id, destinations = n, "dispatcher reloaded (admin)");
            Ok(
                json!({"tenant": id, "destinations": n, "message": "Ok. Dispatcher successfully reloaded."}),
            )
        }
        "dispatcher.ping_active" => {
            let old = i32::from(ds.ping_active());
            match params.string("state")? {
                None => Ok(json!({"OldPingState": old})),
                Some(v) => {
                    let on = match v.trim() {
                        "0" => false,
                        "1" => true,
                        _ => {
                            return Err(RpcError::invalid_params(format!(
                                "state {v:?}: 0 (stop probing) or 1 (probe)"
                            )));
                        }
                    };
                    ds.set_ping_active(on);
                    Ok(json!({"NewPingState": i32::from(on), "OldPingState": old}))
                }
            }
        }
        _ => Err(RpcError::method_not_found(method)),
    }
}
