//! Two build steps:
//!
//! * the `KSR` table builder (`ksr_table.rs`, included by `src/ksr.rs`),
//!   generated from the `ksr` world in `wit/`: one `export!` per imported
//!   function and one grant check per module, so a function or module added
//!   to `wit/` reaches Lua without a hand-written line that could be
//!   forgotten;
//! * the setjmp/longjmp runtime Lua needs in wasm (see rt/setjmp.c) and an
//!   empty `libwasi-emulated-signal.a`: lua-src asks the linker for it, but
//!   Lua never calls signal().
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use heck::ToSnakeCase;
use wit_parser::{Resolve, Type, WorldItem};

/// Modules every tenant has, whatever it is granted (as the host links them:
/// crates/kemi/build.rs says the same).
const ALWAYS: &[&str] = &["core", "x"];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));

    let wit = manifest.join("../wit");
    println!("cargo:rerun-if-changed={}", wit.display());
    let table = ksr_table(&wit).unwrap_or_else(|e| panic!("generating the KSR table: {e}"));
    std::fs::write(out.join("ksr_table.rs"), table)
        .unwrap_or_else(|e| panic!("writing ksr_table.rs: {e}"));

    println!("cargo:rerun-if-changed=rt/setjmp.c");
    println!("cargo:rerun-if-changed=rt/tag.S");
    cc::Build::new()
        .file("rt/setjmp.c")
        .file("rt/tag.S")
        .flag("-mexception-handling")
        .opt_level(2)
        .compile("setjmp");

    let lib = out.join("libwasi-emulated-signal.a");
    if !lib.exists() {
        let ar = std::env::var("AR_wasm32_wasip2").unwrap_or_else(|_| "ar".into());
        let status = Command::new(&ar)
            .arg("rcs")
            .arg(&lib)
            .status()
            .unwrap_or_else(|e| panic!("running {ar}: {e}"));
        assert!(status.success(), "{ar} failed to create {}", lib.display());
    }
    println!("cargo:rustc-link-search=native={}", out.display());
}

/// The body of `ksr_table.rs`: `fn export_all(lua, ksr, grants)`, filling
/// `ksr` with every function of the `ksr` world's imports. Lua names are the
/// WIT names with `-` as `_` (`is-INVITE` is `KSR.is_INVITE`, `auth-db` is
/// `KSR.auth_db`); the Rust names are wit-bindgen's (`core::is_invite`).
fn ksr_table(wit: &Path) -> Result<String, String> {
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve
        .push_dir(wit)
        .map_err(|e| format!("parsing {}: {e:#}", wit.display()))?;
    let world = resolve
        .select_world(&[pkg], Some("ksr"))
        .map_err(|e| format!("{e:#}"))?;

    let mut body = String::new();
    let mut uses = Vec::new();
    for item in resolve.worlds[world].imports.values() {
        let WorldItem::Interface { id, .. } = item else {
            continue;
        };
        let iface = &resolve.interfaces[*id];
        // An interface without functions (`types`) only shares types.
        if iface.functions.is_empty() {
            continue;
        }
        let wit_name = iface.name.as_deref().ok_or("anonymous interface")?;
        let module = wit_name.replace('-', "_");
        let rust_module = rust_ident(wit_name);
        uses.push(rust_module.clone());

        let (table, lua_module) = if module == "core" {
            ("ksr", "KSR".to_string())
        } else {
            ("t", format!("KSR.{module}"))
        };
        if module != "core" {
            let guard = if ALWAYS.contains(&module.as_str()) {
                "{".to_string()
            } else {
                format!("if grants({module:?}) {{")
            };
            writeln!(body, "    {guard}\n        let t = lua.create_table()?;").unwrap();
        }
        for (name, func) in &iface.functions {
            let mut params = Vec::new();
            for param in &func.params {
                let kind = match param.ty {
                    Type::String => "str",
                    Type::S32 => "int",
                    other => {
                        return Err(format!(
                            "wit/{wit_name}.wit: `{name}` takes {other:?}: KSR parameters are string or s32"
                        ));
                    }
                };
                params.push(format!("{}: {kind}", rust_ident(&param.name)));
            }
            let result = match &func.result {
                None => "void",
                Some(Type::S32) => "int",
                Some(Type::Bool) => "bool",
                Some(Type::Id(t)) if resolve.types[*t].name.as_deref() == Some("xval") => "xval",
                Some(other) => {
                    return Err(format!(
                        "wit/{wit_name}.wit: `{name}` returns {other:?}: KSR results are s32, bool, xval or nothing"
                    ));
                }
            };
            writeln!(
                body,
                "    export!(lua, {table}, {lua_module:?}, {:?}, {rust_module}::{}({}) -> {result});",
                name.replace('-', "_"),
                rust_ident(name),
                params.join(", "),
            )
            .unwrap();
        }
        if module != "core" {
            writeln!(body, "        ksr.raw_set({module:?}, t)?;\n    }}").unwrap();
        }
    }
    Ok(format!(
        "// Generated by guest-lua/build.rs from wit/: do not edit.\n\
         /// Fill `ksr` with every KSR function: `core` on `KSR` itself, each\n\
         /// other module in a table of its own, present only when `grants`\n\
         /// says the tenant has it ({ALWAYS:?} always).\n\
         fn export_all(lua: &Lua, ksr: &Table, grants: &dyn Fn(&str) -> bool) -> Result<()> {{\n    \
         use crate::kemibox::ksr::{{{}}};\n{body}    Ok(())\n}}\n",
        uses.join(", ")
    ))
}

/// The Rust name wit-bindgen gives a WIT name: snake case, with Rust
/// keywords followed by `_`.
fn rust_ident(name: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn",
        "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
        "return", "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use",
        "where", "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final",
        "macro", "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "guest",
    ];
    if KEYWORDS.contains(&name) {
        format!("{name}_")
    } else {
        name.to_snake_case()
    }
}
