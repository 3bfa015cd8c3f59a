//! The dialog module's RPCs, on one tenant: Kamailio's `dlg.list`,
//! `dlg.list_ctx` and `dlg.end_dlg` on this node's dialogs, and
//! `dlg.profile_get_size` / `dlg.profile_list` (a profile and an optional
//! value) on its profiles: counted and listed on every live node when the
//! tenant shares them through Redis, this node's only while degraded (the
//! answer says which).

use kemibox_admin::{Params, RpcError};
use kemibox_kemi::TenantState;
use kemibox_kemi::dialog::{DialogId, DialogState, Side};
use kemibox_kemi::dialog_profiles::{ProfileError, Profiles};
use serde_json::{Value, json};

/// The parameters of the profile methods: Kamailio's order, the tenant
/// last.
pub const PROFILE_PARAMS: &[&str] = &["profile", "value", "tenant"];
/// The parameters of `dlg.list` and `dlg.list_ctx`.
pub const LIST_PARAMS: &[&str] = &["tenant"];
/// The parameters of `dlg.end_dlg`: Kamailio's, the tenant last.
pub const END_PARAMS: &[&str] = &["h_entry", "h_id", "tenant"];

/// The `dlg.*` method `method` on `tenant`'s `state`.
pub async fn call(
    tenant: &str,
    state: &TenantState,
    method: &str,
    params: &Params,
) -> Result<Value, RpcError> {
    match method {
        "dlg.profile_get_size" | "dlg.profile_list" => {
            profile(tenant, &state.profiles, method, params).await
        }
        "dlg.end_dlg" => end(tenant, state, params).await,
        "dlg.list" | "dlg.list_ctx" => Ok(list(tenant, state, method == "dlg.list_ctx")),
        _ => Err(RpcError::method_not_found(method)),
    }
}

/// `dlg.end_dlg h_entry h_id`: BYE to both sides of a confirmed dialog.
async fn end(tenant: &str, state: &TenantState, params: &Params) -> Result<Value, RpcError> {
    let number = |name: &str| -> Result<u32, RpcError> {
        let text = params.required(name)?;
        text.trim()
            .parse()
            .map_err(|_| RpcError::invalid_params(format!("{name} {text:?} is not a number")))
    };
    let dlg = DialogId {
        h_entry: number("h_entry")?,
        h_id: number("h_id")?,
    };
    if !DialogState::end(state, tenant, dlg, &[Side::Caller, Side::Callee]).await {
        return Err(RpcError::failed(format!(
            "tenant {tenant} has no confirmed dialog {dlg} (or the proxy cannot send BYE)"
        )));
    }
    Ok(json!({"tenant": tenant, "h_entry": dlg.h_entry, "h_id": dlg.h_id}))
}

/// `dlg.list` / `dlg.list_ctx`: this node's dialogs with their profiles.
fn list(tenant: &str, state: &TenantState, with_ctx: bool) -> Value {
    let list: Vec<Value> = (state.dialog.table.list().iter())
        .map(|d| {
            let profiles = state.profiles.memberships_of(&d.id.to_string());
            dialog_json(d, profiles, with_ctx)
        })
        .collect();
    json!({"tenant": tenant, "dialogs": list})
}

/// A profile method on `tenant`'s `profiles`.
async fn profile(
    tenant: &str,
    profiles: &Profiles,
    method: &str,
    params: &Params,
) -> Result<Value, RpcError> {
    let profile = params.required("profile")?;
    // `kemibox ctl dlg.profile_get_size caller "" acme`: no value.
    let value = params.string("value")?.filter(|v| !v.is_empty());
    let refused = |e: ProfileError| match e {
        ProfileError::Unknown(_) => {
            let names: Vec<String> = profiles.declared().into_iter().map(|(n, _)| n).collect();
            RpcError::invalid_params(format!(
                "tenant {tenant}: {e} (declared: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        }
        other => RpcError::failed(format!("tenant {tenant}: {other}")),
    };
    let mut out = match method {
        "dlg.profile_get_size" => {
            let count = profiles
                .size(&profile, value.as_deref())
                .await
                .map_err(refused)?;
            json!({"count": count})
        }
        "dlg.profile_list" => {
            let members = profiles
                .list(&profile, value.as_deref())
                .await
                .map_err(refused)?;
            let dialogs: Vec<Value> = members
                .into_iter()
                .map(|m| json!({"dialog": m.dialog, "value": m.value, "node": m.node}))
                .collect();
            json!({"dialogs": dialogs})
        }
        _ => return Err(RpcError::method_not_found(method)),
    };
    out["tenant"] = json!(tenant);
    out["profile"] = json!(profile);
    out["value"] = json!(value);
    // Whether other nodes' calls are in the answer.
    out["all_nodes"] = json!(profiles.is_shared() && !profiles.is_degraded());
    Ok(out)
}

/// One dialog as Kamailio's `dlg.list` shows it (`with_ctx`: and its
/// `context`, for `dlg.list_ctx`).
fn dialog_json(
    d: &kemibox_kemi::dialog::Dialog,
    profiles: Vec<(String, Option<String>)>,
    with_ctx: bool,
) -> Value {
    let leg = |l: &kemibox_kemi::dialog::Leg| {
        json!({
            "tag": l.tag,
            "contact": l.contact,
            "cseq": l.cseq.to_string(),
            "route_set": l.route_set.join(","),
            "socket": l.socket.clone().unwrap_or_default(),
        })
    };
    let mut entry = json!({
        "h_entry": d.id.h_entry,
        "h_id": d.id.h_id,
        "ref": 1,
        "call-id": d.call_id,
        "from_uri": d.from_uri,
        "to_uri": d.to_uri,
        "state": d.state as u8,
        "start_ts": d.start_ts,
        "init_ts": d.init_ts,
        "end_ts": d.end_ts,
        "timeout": d.timeout,
        "lifetime": d.timeout,
        "dflags": 0,
        "sflags": d.flags,
        "iflags": u8::from(d.timeout_bye),
        "caller": leg(&d.caller),
        "callee": leg(&d.callee),
        "profiles": profiles
            .into_iter()
            .map(|(p, v)| json!({ p: v.unwrap_or_default() }))
            .collect::<Vec<_>>(),
        "variables": d.vars.iter().map(|(k, v)| json!({ k: v })).collect::<Vec<_>>(),
    });
    if with_ctx {
        entry["context"] = json!({
            "managed": d.managed,
            "timeout_bye": d.timeout_bye,
            "ka_src": d.ka_src,
            "ka_dst": d.ka_dst,
        });
    }
    entry
}

#[cfg(test)]
mod tests {
    use kemibox_kemi::dialog_profiles::{DEFAULT_MAX_MEMBERSHIPS, ProfileSpecs};

    use super::*;

    fn params(method: &str, v: Value) -> Params {
        Params::new(method, &v, PROFILE_PARAMS).unwrap()
    }

    #[tokio::test]
    async fn sizes_and_lists_of_one_tenant() {
        let p = Profiles::new(
            "acme",
            &ProfileSpecs {
                with_value: vec!["caller".into()],
                no_value: vec![],
            },
            DEFAULT_MAX_MEMBERSHIPS,
            None,
        );
        p.add("caller", Some("alice"), "d1").await.unwrap();
        p.add("caller", Some("bob"), "d2").await.unwrap();
        let size = "dlg.profile_get_size";
        let got = profile("acme", &p, size, &params(size, json!(["caller"])))
            .await
            .unwrap();
        assert_eq!(got["count"], 2);
        assert_eq!(got["all_nodes"], false);
        let got = profile("acme", &p, size, &params(size, json!(["caller", "bob"])))
            .await
            .unwrap();
        assert_eq!(got["count"], 1);
        assert_eq!(got["value"], "bob");
        let list = "dlg.profile_list";
        let got = profile(
            "acme",
            &p,
            list,
            &params(list, json!({"profile": "caller", "value": "alice"})),
        )
        .await
        .unwrap();
        assert_eq!(
            got["dialogs"],
            json!([{"dialog": "d1", "value": "alice", "node": null}])
        );
        let err = profile("acme", &p, size, &params(size, json!(["nope"])))
            .await
            .unwrap_err();
        assert!(format!("{err:?}").contains("declared: caller"), "{err:?}");
        assert!(
            profile("acme", &p, list, &params(list, json!([])))
                .await
                .is_err()
        );
    }
}
