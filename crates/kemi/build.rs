//! Generates the KSR API table (`api_table.rs`) from `wit/`, the same source
//! the host and guest bindings come from, so `kemibox api`, docs/api and the
//! bindings cannot drift apart.
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use wit_parser::{Resolve, Type, WorldItem, WorldKey};

fn main() -> Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let wit = manifest.join("../../wit");
    println!("cargo:rerun-if-changed={}", wit.display());
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve.push_dir(&wit).context("parsing wit/")?;
    let world = resolve.select_world(&[pkg], Some("ksr"))?;

    let mut out = String::from("&[\n");
    for (key, item) in &resolve.worlds[world].imports {
        let WorldItem::Interface { id, .. } = item else {
            continue;
        };
        let WorldKey::Interface(_) = key else {
            continue;
        };
        let iface = &resolve.interfaces[*id];
        let module = iface
            .name
            .clone()
            .context("anonymous interface")?
            .replace('-', "_");
        if module == "types" {
            continue;
        }
        let mut module_doc = iface.docs.contents.clone().unwrap_or_default();
        module_doc = module_doc.trim().to_string();
        for (name, func) in &iface.functions {
            let mut params = String::from("&[");
            for (pname, ty) in &func.params {
                write!(
                    params,
                    "({:?}, {:?}),",
                    pname.replace('-', "_"),
                    kemi_type(&resolve, ty)?
                )?;
            }
            params.push(']');
            let result = match &func.result {
                None => "void".to_string(),
                Some(t) => kemi_type(&resolve, t)?.to_string(),
            };
            let doc = func.docs.contents.clone().unwrap_or_default();
            if doc.trim().is_empty() {
                bail!(
                    "wit/{module}.wit: function `{name}` has no doc comment; document it with `///`"
                );
            }
            writeln!(
                out,
                "    Export {{ module: {module:?}, module_doc: {module_doc:?}, name: {:?}, params: {params}, result: {result:?}, doc: {:?} }},",
                name.replace('-', "_"),
                doc.trim()
            )?;
        }
    }
    out.push(']');
    let dest = PathBuf::from(std::env::var("OUT_DIR")?).join("api_table.rs");
    std::fs::write(&dest, out)?;
    Ok(())
}

/// KEMI's names for the WIT types used at the KSR boundary.
fn kemi_type(resolve: &Resolve, ty: &Type) -> Result<&'static str> {
    Ok(match ty {
        Type::String => "str",
        Type::S32 => "int",
        Type::Bool => "bool",
        Type::Id(id) => match resolve.types[*id].name.as_deref() {
            Some("xval") => "xval",
            other => bail!(
                "unsupported KSR type {other:?}: KEMI functions take str/int and return int/bool/xval"
            ),
        },
        other => bail!(
            "unsupported KSR type {other:?}: KEMI functions take str/int and return int/bool/xval"
        ),
    })
}
