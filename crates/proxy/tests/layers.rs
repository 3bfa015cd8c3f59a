//! The proxy's files depend on each other one way (docs/architecture.md):
//! dispatch, handler, stateful, the route runner and egress, transport.
//! This reads every `crate::` path in `src/` and fails when a module
//! reaches a layer above its own, so a cycle cannot come back unnoticed.

use std::collections::BTreeSet;
use std::path::Path;

/// The layers, lowest first; modules of one layer may use each other's
/// items only when listed in a lower layer too. `lib.rs` (the crate root,
/// which wires the layers together) is not a layer.
const LAYERS: &[&[&str]] = &[
    &["listen", "quota"],
    &["transport"],
    &["tenants", "route"],
    &["egress"],
    &["stateful"],
    &["dispatch"],
    &["handler"],
];

/// Items `lib.rs` re-exports, by the module that defines them.
const REEXPORTS: &[(&str, &str)] = &[
    ("Listen", "listen"),
    ("Transports", "transport"),
    ("Hosted", "tenants"),
    ("RateLimit", "quota"),
    ("LimitedReply", "quota"),
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every Rust file under `dir`, with the top-level module it belongs to.
fn files(dir: &Path, top: Option<&str>, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            files(&path, Some(top.unwrap_or(&name)), out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let module = top.map_or(name, str::to_string);
            out.push((module, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

/// The modules `text` names through `crate::` paths (`use crate::{a, b::c}`
/// included), re-exported items resolved to their modules.
fn uses(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group
                .split('}')
                .next()
                .unwrap_or("")
                .split(',')
                .map(|p| p.trim().split("::").next().unwrap_or("").trim())
                .collect(),
            None => vec![
                rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or(""),
            ],
        };
        for name in names {
            let module = REEXPORTS
                .iter()
                .find(|(item, _)| *item == name)
                .map_or(name, |(_, m)| m);
            if layer(module).is_some() {
                out.insert(module.to_string());
            }
        }
    }
    out
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, None, &mut all);
    let mut checked = BTreeSet::new();
    let mut wrong = Vec::new();
    for (module, text) in &all {
        if module == "lib" {
            continue;
        }
        let Some(own) = layer(module) else {
            panic!("src/{module}: not in any layer of this test; add it to LAYERS");
        };
        checked.insert(module.clone());
        for used in uses(text) {
            let theirs = layer(&used).unwrap_or(0);
            if used != *module && theirs >= own {
                wrong.push(format!("{module} uses {used}"));
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken: {wrong:?}");
    // Not vacuous: every layer was seen.
    for l in LAYERS {
        for m in *l {
            assert!(checked.contains(*m), "src/{m} not found");
        }
    }
}

#[test]
fn the_reader_finds_grouped_and_single_uses() {
    let text = "use crate::{Shared, Listen, route::{self, Ran}};\nuse crate::egress::Egress;";
    let found: Vec<String> = uses(text).into_iter().collect();
    assert_eq!(found, ["egress", "listen", "route"]);
}
