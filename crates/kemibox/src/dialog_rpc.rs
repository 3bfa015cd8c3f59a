//! The dialog module's profile RPCs (Kamailio's `dlg.profile_get_size`
//! and `dlg.profile_list`, a profile and an optional value), on one
//! tenant's profiles: counted and listed on every live node when the
//! tenant shares them through Redis, this node's only while degraded
//! (the answer says which).

use kemibox_admin::{Params, RpcError};
use kemibox_kemi::dialog_profiles::{ProfileError, Profiles};
use serde_json::{Value, json};

/// The parameters of both methods: Kamailio's order, the tenant last.
pub const PARAMS: &[&str] = &["profile", "value", "tenant"];

/// `method` on `tenant`'s `profiles`.
pub async fn call(
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

#[cfg(test)]
mod tests {
    use kemibox_kemi::dialog_profiles::{DEFAULT_MAX_MEMBERSHIPS, ProfileSpecs};

    use super::*;

    fn params(method: &str, v: Value) -> Params {
        Params::new(method, &v, PARAMS).unwrap()
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
        let got = call("acme", &p, size, &params(size, json!(["caller"])))
            .await
            .unwrap();
        assert_eq!(got["count"], 2);
        assert_eq!(got["all_nodes"], false);
        let got = call("acme", &p, size, &params(size, json!(["caller", "bob"])))
            .await
            .unwrap();
        assert_eq!(got["count"], 1);
        assert_eq!(got["value"], "bob");
        let list = "dlg.profile_list";
        let got = call(
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
        let err = call("acme", &p, size, &params(size, json!(["nope"])))
            .await
            .unwrap_err();
        assert!(format!("{err:?}").contains("declared: caller"), "{err:?}");
        assert!(
            call("acme", &p, list, &params(list, json!([])))
                .await
                .is_err()
        );
    }
}
