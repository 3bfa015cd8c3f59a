//! Every KSR export, generated at build time from `wit/`.
//!
//! `kemibox api` prints [`listing`]; `docs/api.md` is [`markdown`]; a test
//! checks both against the guest's reachable functions.

use std::fmt::Write as _;

/// One KSR function as a script sees it.
#[derive(Debug, Clone, Copy)]
pub struct Export {
    /// WIT interface name; `core` functions sit directly on `KSR`.
    pub module: &'static str,
    /// The interface's doc comment.
    pub module_doc: &'static str,
    /// Lua name (`t_relay`).
    pub name: &'static str,
    /// Parameter names and KEMI types (`str`, `int`).
    pub params: &'static [(&'static str, &'static str)],
    /// KEMI result type: `int`, `bool`, `xval` or `void`.
    pub result: &'static str,
    /// The function's doc comment.
    pub doc: &'static str,
}

/// All exports, in WIT order.
pub const EXPORTS: &[Export] = include!(concat!(env!("OUT_DIR"), "/api_table.rs"));

impl Export {
    /// `KSR.tm.t_relay` or `KSR.info`.
    pub fn lua_path(&self) -> String {
        if self.module == "core" {
            format!("KSR.{}", self.name)
        } else {
            format!("KSR.{}.{}", self.module, self.name)
        }
    }

    /// `module.name`, as the guest's `reachable` export reports it.
    pub fn key(&self) -> String {
        format!("{}.{}", self.module, self.name)
    }

    /// `KSR.pv.sets(pvname: str, val: str) -> void`
    pub fn signature(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(n, t)| format!("{n}: {t}"))
            .collect();
        format!(
            "{}({}) -> {}",
            self.lua_path(),
            params.join(", "),
            self.result
        )
    }
}

/// One export a line, as `kemibox api` prints it.
pub fn listing() -> String {
    EXPORTS.iter().map(|e| e.signature() + "\n").collect()
}

/// The KSR reference in Markdown, one section per module (docs/api.md).
pub fn markdown() -> String {
    let mut out = String::from(
        "# KSR API reference\n\nGenerated from `wit/` by `kemibox api --markdown`; do not edit by hand.\n\
         Types: `str` string, `int` 32-bit integer, `bool` boolean, `xval` string, integer or nil.\n",
    );
    let mut module = "";
    for e in EXPORTS {
        if e.module != module {
            module = e.module;
            let title = if module == "core" {
                "KSR (core)".to_string()
            } else {
                format!("KSR.{module}")
            };
            let _ = write!(out, "\n## {title}\n\n{}\n", e.module_doc);
        }
        let _ = write!(out, "\n### `{}`\n\n{}\n", e.signature(), e.doc);
    }
    out
}
