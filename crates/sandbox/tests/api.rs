//! The KSR surface: what Lua can reach equals the WIT world, module grants
//! are honoured on both sides, and the generated reference is current.

mod common;

use common::*;
use kemibox_kemi::api::EXPORTS;
use kemibox_sandbox::{Outcome, Tenant};

#[tokio::test]
async fn every_wit_import_is_reachable_from_lua_and_nothing_else() {
    let (_, mut instance) =
        Tenant::load(&runtime(), spec("api", "function ksr_request_route() end"))
            .await
            .unwrap();
    let mut reachable = instance.reachable().await;
    reachable.sort();
    let mut declared: Vec<String> = EXPORTS.iter().map(|e| e.key()).collect();
    declared.sort();
    let missing: Vec<&String> = declared.iter().filter(|d| !reachable.contains(d)).collect();
    let extra: Vec<&String> = reachable.iter().filter(|r| !declared.contains(r)).collect();
    assert!(
        missing.is_empty(),
        "WIT imports not registered in guest-lua/src/ksr.rs: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "KSR functions without a WIT import: {extra:?}"
    );
}

#[tokio::test]
async fn modules_not_granted_are_nil_in_lua() {
    let mut s = spec(
        "grants",
        r#"
function ksr_request_route()
    if KSR.tm ~= nil or KSR.sl ~= nil then return -1 end
    if KSR.pv == nil or KSR.x == nil or KSR.info == nil then return -2 end
    return 1
end
"#,
    );
    s.modules = vec!["pv".into()];
    let (_, mut instance) = Tenant::load(&runtime(), s).await.unwrap();
    let mut reachable = instance.reachable().await;
    reachable.retain(|f| !f.starts_with("core."));
    assert!(
        reachable
            .iter()
            .all(|f| f.starts_with("pv.") || f.starts_with("x.")),
        "{reachable:?}"
    );
    assert_eq!(
        instance
            .invoke("ksr_request_route", Some(invite()))
            .await
            .outcome,
        Outcome::Ok { ret: 1 }
    );
}

#[test]
fn docs_api_md_is_generated_from_wit() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md");
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        on_disk == kemibox_kemi::api::markdown(),
        "docs/api.md is out of date: run `cargo run -p kemibox -- api --markdown > docs/api.md`"
    );
}

#[test]
fn every_export_is_documented_and_typed() {
    for e in EXPORTS {
        assert!(!e.doc.trim().is_empty(), "{} has no doc", e.signature());
        assert!(
            ["int", "bool", "xval", "void"].contains(&e.result),
            "{}",
            e.signature()
        );
        assert!(
            e.params.iter().all(|(_, t)| *t == "str" || *t == "int"),
            "{}",
            e.signature()
        );
    }
    assert!(
        EXPORTS
            .iter()
            .any(|e| e.signature() == "KSR.tm.t_relay() -> int")
    );
    assert!(
        EXPORTS
            .iter()
            .any(|e| e.signature() == "KSR.pv.sets(pvname: str, val: str) -> void")
    );
    assert!(
        EXPORTS
            .iter()
            .any(|e| e.signature() == "KSR.is_INVITE() -> bool")
    );
}
