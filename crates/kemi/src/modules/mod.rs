//! One file per KEMI module, each implementing its WIT interface on [`Ctx`].
//!
//! Adding `KSR.foo.bar`: a line in `wit/foo.wit`, the function in `foo.rs`,
//! and (for a new module) one entry in [`MODULES`] and [`add_to_linker`].

mod auth;
mod auth_db;
mod core;
mod corex;
mod hdr;
mod kx;
mod maxfwd;
mod nathelper;
mod pv;
mod registrar;
mod rr;
mod sanity;
mod siputils;
mod sl;
mod textops;
mod tm;
mod tmx;
mod types;
mod x;

use wasmtime::component::{HasSelf, Linker};

use crate::Ctx;
use crate::bindings::kemibox::ksr;

/// Modules a tenant can be granted. `core` and `x` are always linked.
pub const MODULES: &[&str] = &[
    "core",
    "x",
    "pv",
    "hdr",
    "sl",
    "tm",
    "tmx",
    "rr",
    "maxfwd",
    "siputils",
    "sanity",
    "kx",
    "corex",
    "textops",
    "registrar",
    "auth",
    "auth_db",
    "nathelper",
];

/// KEMI's boolean as an integer result: 1 for true, -1 for false.
pub(crate) fn kemi(test: bool) -> i32 {
    if test { 1 } else { -1 }
}

/// Link the host side of every KSR module in `granted` into `linker`.
/// Imports of modules not granted are left undefined here; the sandbox
/// defines them as traps, so an instance can never reach them (the guest
/// already leaves them out of `KSR`).
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    granted: &[String],
    get: fn(&mut T) -> &mut Ctx,
) -> wasmtime::Result<()> {
    let has = |m: &str| m == "core" || m == "x" || granted.iter().any(|g| g == m);
    ksr::types::add_to_linker::<T, HasSelf<Ctx>>(linker, get)?;
    ksr::core::add_to_linker::<T, HasSelf<Ctx>>(linker, get)?;
    ksr::x::add_to_linker::<T, HasSelf<Ctx>>(linker, get)?;
    if has("pv") {
        ksr::pv::add_to_linker::<T, HasSelf<Ctx>>(linker, get)?;
    }
    if has("hdr") {
        ksr::hdr::add_to_linker::<T, HasSelf<Ctx>>(linker, get)?;
    }
    if has("sl") {
        ksr::sl::add_to_linker::<T, HasSelf<Ctx>>(linker, get)?;
    }
    if has("tm") {
        ksr::tm::add_to_linker::<T, HasSelf<Ctx>>(linker, get)?;
    }
    if has("tmx") {
        ksr::tmx::add_to_linker::<T, HasSelf<Ctx>>(linker, get)?;
    }
    if has("rr") {
        ksr::rr::add_to_linker::<T, HasSelf<Ctx>>(linker, get)?;
    }
    if has("maxfwd") {
        ksr::maxfwd::add_to_linker::<T, HasSelf<Ctx>>(linker, get)?;
    }
    if has("siputils") {
        ksr::siputils::add_to_linker::<T, HasSelf<Ctx>>(linker, get)?;
    }
    if has("sanity") {
        ksr::sanity::add_to_linker::<T, HasSelf<Ctx>>(linker, get)?;
    }
    if has("kx") {
        ksr::kx::add_to_linker::<T, HasSelf<Ctx>>(linker, get)?;
    }
    if has("corex") {
        ksr::corex::add_to_linker::<T, HasSelf<Ctx>>(linker, get)?;
    }
    if has("textops") {
        ksr::textops::add_to_linker::<T, HasSelf<Ctx>>(linker, get)?;
    }
    if has("registrar") {
        ksr::registrar::add_to_linker::<T, HasSelf<Ctx>>(linker, get)?;
    }
    if has("auth") {
        ksr::auth::add_to_linker::<T, HasSelf<Ctx>>(linker, get)?;
    }
    if has("auth_db") {
        ksr::auth_db::add_to_linker::<T, HasSelf<Ctx>>(linker, get)?;
    }
    if has("nathelper") {
        ksr::nathelper::add_to_linker::<T, HasSelf<Ctx>>(linker, get)?;
    }
    Ok(())
}
