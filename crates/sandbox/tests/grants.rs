//! Every module of wit/world.wit, taken generically (no hand-written list):
//! granted, it is linked on the host and every one of its functions can be
//! called from Lua without a trap; not granted, it is `nil` in Lua and
//! nothing of it is reachable. A module whose generated grant check or
//! linker arm went missing fails here, not at a tenant's run time.

mod common;

use std::collections::BTreeSet;

use common::*;
use kemibox_kemi::api::{EXPORTS, Export};
use kemibox_kemi::{ALWAYS_GRANTED, MODULES};
use kemibox_sandbox::{Outcome, Tenant};

/// The modules (interfaces) `wit/world.wit` imports, read from the file
/// itself, so the generated [`MODULES`] is checked against the source, not
/// against itself. A function the world imports (`name: func(...)`) is the
/// guest runtime's, no module.
fn world_imports() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../wit/world.wit");
    let text = std::fs::read_to_string(path).expect("reading wit/world.wit");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("import "))
        .filter(|m| !m.contains(':'))
        .map(|m| m.trim_end_matches(';').trim().replace('-', "_"))
        .collect()
}

/// A Lua literal for an argument of KEMI type `kind`.
fn dummy(kind: &str) -> &'static str {
    match kind {
        "str" => "\"x\"",
        "int" => "0",
        other => panic!("unexpected parameter type {other}"),
    }
}

/// A Lua function `call_<i>` calling export `e` with dummy arguments.
fn caller(i: usize, e: &Export) -> String {
    let args: Vec<&str> = e.params.iter().map(|(_, kind)| dummy(kind)).collect();
    format!(
        "function call_{i}()\n    {}({})\n    return 1\nend\n",
        e.lua_path(),
        args.join(", ")
    )
}

#[test]
fn modules_are_those_of_the_world() {
    let imports = world_imports();
    assert!(
        imports.len() > 15,
        "only {} imports read from wit/world.wit",
        imports.len()
    );
    assert_eq!(MODULES, imports.as_slice());
    for always in ALWAYS_GRANTED {
        assert!(MODULES.contains(always), "{always}");
    }
}

#[tokio::test]
async fn every_module_is_linked_and_callable_when_granted_and_nil_when_not() {
    assert!(MODULES.len() > 15, "only {} modules", MODULES.len());
    let mut called = 0;
    for &module in MODULES {
        let functions: Vec<&Export> = EXPORTS.iter().filter(|e| e.module == module).collect();
        assert!(!functions.is_empty(), "module {module} has no function");

        // Lua: which module tables exist must match the grant exactly.
        let mut script = String::from("function check_grants()\n");
        for &other in MODULES.iter().filter(|&&m| m != "core") {
            let want = other == module || ALWAYS_GRANTED.contains(&other);
            script.push_str(&format!(
                "    if (KSR.{other} ~= nil) ~= {want} then error(\"KSR.{other}: expected present={want}\") end\n"
            ));
        }
        script.push_str("    return 1\nend\n");
        for (i, e) in functions.iter().enumerate() {
            script.push_str(&caller(i, e));
        }

        let mut s = spec(&format!("grant-{module}"), &script);
        s.entry = Some("check_grants".into());
        s.modules = if ALWAYS_GRANTED.contains(&module) {
            vec![]
        } else {
            vec![module.to_string()]
        };
        let (_, mut instance) = Tenant::load(&runtime(), s)
            .await
            .unwrap_or_else(|e| panic!("granted {module}: {e:?}"));

        // Reachable: exactly this module's functions and the always-granted ones.
        let reachable: BTreeSet<String> = instance.reachable().await.into_iter().collect();
        let expected: BTreeSet<String> = EXPORTS
            .iter()
            .filter(|e| e.module == module || ALWAYS_GRANTED.contains(&e.module))
            .map(Export::key)
            .collect();
        assert_eq!(reachable, expected, "granted only {module}");

        let check = instance.invoke("check_grants", Some(invite())).await;
        assert_eq!(
            check.outcome,
            Outcome::Ok { ret: 1 },
            "granted only {module}"
        );

        // Every function reaches its host implementation: an unlinked one
        // would trap ("not granted"), a missing binding would be a Lua error.
        for (i, e) in functions.iter().enumerate() {
            let inv = instance.invoke(&format!("call_{i}"), Some(invite())).await;
            assert!(
                inv.outcome.is_ok(),
                "{} with {module} granted: {:?}",
                e.signature(),
                inv.outcome
            );
            called += 1;
        }
    }
    assert_eq!(called, EXPORTS.len(), "every export was called once");
}
