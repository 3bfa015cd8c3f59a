//! The global `KSR` table, built from the WIT imports.
//!
//! One line per KSR export: its Lua name, the imported function, its
//! parameter kinds (`str`, `int`) and its result kind (`int`, `bool`, `xval`,
//! `void`). A module the tenant is not granted is left out, so it is `nil` in
//! Lua (`if not KSR.auth then ... end`). The test suite compares what is
//! reachable here with the WIT world, so a forgotten line fails a test.

use mlua::{Lua, Result, Table, Value};

use crate::args::{KemiResult, bad_argument, int_arg, str_arg};
use crate::kemibox::ksr::{core, hdr, maxfwd, pv, rr, siputils, sl, tm, x};

macro_rules! arg_value {
    (str, $v:expr, $function:expr, $position:expr) => {
        str_arg($v, $function, $position)?
    };
    (int, $v:expr, $function:expr, $position:expr) => {
        int_arg($v)
    };
}

macro_rules! arg_pass {
    (str, $v:ident) => {
        &$v
    };
    (int, $v:ident) => {
        $v
    };
}

macro_rules! expected {
    (str) => {
        "string"
    };
    (int) => {
        "integer"
    };
}

macro_rules! result_type {
    (int) => {
        i32
    };
    (bool) => {
        bool
    };
    (xval) => {
        crate::kemibox::ksr::types::Xval
    };
    (void) => {
        ()
    };
}

/// `export!(lua, table, "KSR.mod", "lua_name", wit::function(a: str, b: int) -> int)`
macro_rules! export {
    ($lua:ident, $table:ident, $module:literal, $name:literal,
     $m:ident :: $f:ident ( $($arg:ident : $kind:ident),* ) -> $ret:ident) => {{
        #[allow(dead_code)]
        const FULL: &str = concat!($module, ".", $name);
        #[allow(unused_variables, unused_mut, unused_assignments)]
        let f = $lua.create_function(move |lua, ($($arg,)*): ($(export!(@value $arg),)*)| {
            let mut position = 0usize;
            $(
                position += 1;
                let Some($arg) = arg_value!($kind, &$arg, FULL, position) else {
                    return bad_argument::<result_type!($ret)>(
                        lua, FULL, position, expected!($kind), &$arg);
                };
            )*
            let result: result_type!($ret) = $m::$f($(arg_pass!($kind, $arg)),*);
            KemiResult::into_lua(result, lua)
        })?;
        $table.raw_set($name, f)?;
    }};
    (@value $arg:ident) => { Value };
}

/// Build the `KSR` table with the modules in `granted` (core and x always).
pub fn build(lua: &Lua, granted: &[String]) -> Result<Table> {
    let ksr = lua.create_table()?;
    let grants = |m: &str| granted.iter().any(|g| g == m);

    export!(lua, ksr, "KSR", "dbg", core::dbg(msg: str) -> void);
    export!(lua, ksr, "KSR", "info", core::info(msg: str) -> void);
    export!(lua, ksr, "KSR", "notice", core::notice(msg: str) -> void);
    export!(lua, ksr, "KSR", "warn", core::warn(msg: str) -> void);
    export!(lua, ksr, "KSR", "err", core::err(msg: str) -> void);
    export!(lua, ksr, "KSR", "crit", core::crit(msg: str) -> void);
    export!(lua, ksr, "KSR", "log", core::log(level: str, msg: str) -> void);
    export!(lua, ksr, "KSR", "is_method", core::is_method(method: str) -> bool);
    export!(lua, ksr, "KSR", "is_method_in", core::is_method_in(methods: str) -> bool);
    export!(lua, ksr, "KSR", "is_INVITE", core::is_invite() -> bool);
    export!(lua, ksr, "KSR", "is_ACK", core::is_ack() -> bool);
    export!(lua, ksr, "KSR", "is_BYE", core::is_bye() -> bool);
    export!(lua, ksr, "KSR", "is_CANCEL", core::is_cancel() -> bool);
    export!(lua, ksr, "KSR", "is_REGISTER", core::is_register() -> bool);
    export!(lua, ksr, "KSR", "is_OPTIONS", core::is_options() -> bool);
    export!(lua, ksr, "KSR", "is_MESSAGE", core::is_message() -> bool);
    export!(lua, ksr, "KSR", "is_SUBSCRIBE", core::is_subscribe() -> bool);
    export!(lua, ksr, "KSR", "is_PUBLISH", core::is_publish() -> bool);
    export!(lua, ksr, "KSR", "is_NOTIFY", core::is_notify() -> bool);
    export!(lua, ksr, "KSR", "is_REFER", core::is_refer() -> bool);
    export!(lua, ksr, "KSR", "is_INFO", core::is_info() -> bool);
    export!(lua, ksr, "KSR", "is_UPDATE", core::is_update() -> bool);
    export!(lua, ksr, "KSR", "is_PRACK", core::is_prack() -> bool);
    export!(lua, ksr, "KSR", "is_myself", core::is_myself(uri: str) -> bool);
    export!(lua, ksr, "KSR", "is_myself_ruri", core::is_myself_ruri() -> bool);
    export!(lua, ksr, "KSR", "is_myself_furi", core::is_myself_furi() -> bool);
    export!(lua, ksr, "KSR", "is_myself_turi", core::is_myself_turi() -> bool);
    export!(lua, ksr, "KSR", "is_myself_srcip", core::is_myself_srcip() -> bool);
    export!(lua, ksr, "KSR", "setflag", core::setflag(flag: int) -> bool);
    export!(lua, ksr, "KSR", "resetflag", core::resetflag(flag: int) -> bool);
    export!(lua, ksr, "KSR", "isflagset", core::isflagset(flag: int) -> bool);
    export!(lua, ksr, "KSR", "setbflag", core::setbflag(flag: int) -> bool);
    export!(lua, ksr, "KSR", "resetbflag", core::resetbflag(flag: int) -> bool);
    export!(lua, ksr, "KSR", "isbflagset", core::isbflagset(flag: int) -> bool);
    export!(lua, ksr, "KSR", "setbiflag", core::setbiflag(flag: int, branch: int) -> bool);
    export!(lua, ksr, "KSR", "resetbiflag", core::resetbiflag(flag: int, branch: int) -> bool);
    export!(lua, ksr, "KSR", "isbiflagset", core::isbiflagset(flag: int, branch: int) -> bool);
    export!(lua, ksr, "KSR", "setsflag", core::setsflag(flag: int) -> bool);
    export!(lua, ksr, "KSR", "resetsflag", core::resetsflag(flag: int) -> bool);
    export!(lua, ksr, "KSR", "issflagset", core::issflagset(flag: int) -> bool);
    export!(lua, ksr, "KSR", "seturi", core::seturi(uri: str) -> bool);
    export!(lua, ksr, "KSR", "setuser", core::setuser(user: str) -> bool);
    export!(lua, ksr, "KSR", "sethost", core::sethost(host: str) -> bool);
    export!(lua, ksr, "KSR", "setdsturi", core::setdsturi(uri: str) -> bool);
    export!(lua, ksr, "KSR", "resetdsturi", core::resetdsturi() -> bool);
    export!(lua, ksr, "KSR", "isdsturiset", core::isdsturiset() -> bool);
    export!(lua, ksr, "KSR", "force_rport", core::force_rport() -> bool);
    export!(lua, ksr, "KSR", "add_local_rport", core::add_local_rport() -> bool);
    export!(lua, ksr, "KSR", "set_drop", core::set_drop() -> void);
    export!(lua, ksr, "KSR", "set_reply_no_connect", core::set_reply_no_connect() -> bool);
    export!(lua, ksr, "KSR", "set_reply_close", core::set_reply_close() -> bool);
    export!(lua, ksr, "KSR", "set_forward_no_connect", core::set_forward_no_connect() -> bool);
    export!(lua, ksr, "KSR", "set_forward_close", core::set_forward_close() -> bool);

    // KSR.x: exit and drop notify the host here; the Lua side (sandbox.rs)
    // then unwinds the script.
    let t = lua.create_table()?;
    export!(lua, t, "KSR.x", "exit", x::exit() -> void);
    export!(lua, t, "KSR.x", "drop", x::drop() -> void);
    ksr.raw_set("x", t)?;

    if grants("pv") {
        let t = lua.create_table()?;
        export!(lua, t, "KSR.pv", "get", pv::get(pvname: str) -> xval);
        export!(lua, t, "KSR.pv", "gete", pv::gete(pvname: str) -> xval);
        export!(lua, t, "KSR.pv", "getvn", pv::getvn(pvname: str, vn: int) -> xval);
        export!(lua, t, "KSR.pv", "getvs", pv::getvs(pvname: str, vs: str) -> xval);
        export!(lua, t, "KSR.pv", "getw", pv::getw(pvname: str) -> xval);
        export!(lua, t, "KSR.pv", "seti", pv::seti(pvname: str, val: int) -> void);
        export!(lua, t, "KSR.pv", "sets", pv::sets(pvname: str, val: str) -> void);
        export!(lua, t, "KSR.pv", "unset", pv::unset(pvname: str) -> void);
        export!(lua, t, "KSR.pv", "is_null", pv::is_null(pvname: str) -> bool);
        ksr.raw_set("pv", t)?;
    }
    if grants("hdr") {
        let t = lua.create_table()?;
        export!(lua, t, "KSR.hdr", "append", hdr::append(hdrval: str) -> int);
        export!(lua, t, "KSR.hdr", "append_after", hdr::append_after(hdrval: str, hdrname: str) -> int);
        export!(lua, t, "KSR.hdr", "insert", hdr::insert(hdrval: str) -> int);
        export!(lua, t, "KSR.hdr", "insert_before", hdr::insert_before(hdrval: str, hdrname: str) -> int);
        export!(lua, t, "KSR.hdr", "remove", hdr::remove(hdrname: str) -> int);
        export!(lua, t, "KSR.hdr", "rmappend", hdr::rmappend(hrm: str, hadd: str) -> int);
        export!(lua, t, "KSR.hdr", "is_present", hdr::is_present(hdrname: str) -> int);
        export!(lua, t, "KSR.hdr", "append_to_reply", hdr::append_to_reply(hdrval: str) -> int);
        export!(lua, t, "KSR.hdr", "get", hdr::get(hdrname: str) -> xval);
        export!(lua, t, "KSR.hdr", "get_idx", hdr::get_idx(hdrname: str, idx: int) -> xval);
        export!(lua, t, "KSR.hdr", "gete", hdr::gete(hdrname: str) -> xval);
        export!(lua, t, "KSR.hdr", "gete_idx", hdr::gete_idx(hdrname: str, idx: int) -> xval);
        export!(lua, t, "KSR.hdr", "getw", hdr::getw(hdrname: str) -> xval);
        export!(lua, t, "KSR.hdr", "getw_idx", hdr::getw_idx(hdrname: str, idx: int) -> xval);
        export!(lua, t, "KSR.hdr", "match_content", hdr::match_content(hname: str, op: str, mval: str, hidx: str) -> int);
        ksr.raw_set("hdr", t)?;
    }
    if grants("sl") {
        let t = lua.create_table()?;
        export!(lua, t, "KSR.sl", "sl_send_reply", sl::sl_send_reply(code: int, reason: str) -> int);
        export!(lua, t, "KSR.sl", "send_reply", sl::send_reply(code: int, reason: str) -> int);
        export!(lua, t, "KSR.sl", "sl_reply_error", sl::sl_reply_error() -> int);
        ksr.raw_set("sl", t)?;
    }
    if grants("tm") {
        let t = lua.create_table()?;
        export!(lua, t, "KSR.tm", "t_relay", tm::t_relay() -> int);
        export!(lua, t, "KSR.tm", "t_on_branch", tm::t_on_branch(rname: str) -> int);
        export!(lua, t, "KSR.tm", "t_on_reply", tm::t_on_reply(rname: str) -> int);
        export!(lua, t, "KSR.tm", "t_on_failure", tm::t_on_failure(rname: str) -> int);
        export!(lua, t, "KSR.tm", "t_on_branch_failure", tm::t_on_branch_failure(rname: str) -> int);
        export!(lua, t, "KSR.tm", "t_check_trans", tm::t_check_trans() -> int);
        export!(lua, t, "KSR.tm", "t_newtran", tm::t_newtran() -> int);
        export!(lua, t, "KSR.tm", "t_reply", tm::t_reply(code: int, reason: str) -> int);
        ksr.raw_set("tm", t)?;
    }
    if grants("rr") {
        let t = lua.create_table()?;
        export!(lua, t, "KSR.rr", "record_route", rr::record_route() -> int);
        export!(lua, t, "KSR.rr", "loose_route", rr::loose_route() -> int);
        ksr.raw_set("rr", t)?;
    }
    if grants("maxfwd") {
        let t = lua.create_table()?;
        export!(lua, t, "KSR.maxfwd", "process_maxfwd", maxfwd::process_maxfwd(limit: int) -> int);
        ksr.raw_set("maxfwd", t)?;
    }
    if grants("siputils") {
        let t = lua.create_table()?;
        export!(lua, t, "KSR.siputils", "has_totag", siputils::has_totag() -> int);
        export!(lua, t, "KSR.siputils", "is_request", siputils::is_request() -> int);
        export!(lua, t, "KSR.siputils", "is_reply", siputils::is_reply() -> int);
        export!(lua, t, "KSR.siputils", "is_first_hop", siputils::is_first_hop() -> int);
        ksr.raw_set("siputils", t)?;
    }
    Ok(ksr)
}
