//! The global `KSR` table, built from the WIT imports.
//!
//! One line per KSR export: its Lua name, the imported function, its
//! parameter kinds (`str`, `int`) and its result kind (`int`, `bool`, `xval`,
//! `void`). A module the tenant is not granted is left out, so it is `nil` in
//! Lua (`if not KSR.auth then ... end`). The test suite compares what is
//! reachable here with the WIT world, so a forgotten line fails a test.

use mlua::{Lua, Result, Table, Value};

use crate::args::{KemiResult, bad_argument, int_arg, str_arg};
use crate::kemibox::ksr::{
    auth, auth_db, core, corex, hdr, kx, maxfwd, nathelper, pv, registrar, rr, sanity, siputils,
    sl, textops, tm, tmx, x,
};

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
    export!(lua, ksr, "KSR", "is_myself_suri", core::is_myself_suri() -> bool);
    export!(lua, ksr, "KSR", "is_myself_duri", core::is_myself_duri() -> bool);
    export!(lua, ksr, "KSR", "is_myself_nhuri", core::is_myself_nhuri() -> bool);
    export!(lua, ksr, "KSR", "is_UDP", core::is_udp() -> bool);
    export!(lua, ksr, "KSR", "is_TCP", core::is_tcp() -> bool);
    export!(lua, ksr, "KSR", "is_TLS", core::is_tls() -> bool);
    export!(lua, ksr, "KSR", "is_WS", core::is_ws() -> bool);
    export!(lua, ksr, "KSR", "is_WSS", core::is_wss() -> bool);
    export!(lua, ksr, "KSR", "is_WSX", core::is_wsx() -> bool);
    export!(lua, ksr, "KSR", "is_SCTP", core::is_sctp() -> bool);
    export!(lua, ksr, "KSR", "is_proto", core::is_proto(sproto: str) -> bool);
    export!(lua, ksr, "KSR", "is_src_port", core::is_src_port(vport: int) -> bool);
    export!(lua, ksr, "KSR", "is_dst_port", core::is_dst_port(vport: int) -> bool);
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
    export!(lua, ksr, "KSR", "forward", core::forward() -> int);
    export!(lua, ksr, "KSR", "forward_uri", core::forward_uri(uri: str) -> int);

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
        export!(lua, t, "KSR.tm", "t_check_status", tm::t_check_status(rmatch: str) -> int);
        export!(lua, t, "KSR.tm", "t_is_canceled", tm::t_is_canceled() -> int);
        export!(lua, t, "KSR.tm", "t_is_set", tm::t_is_set(target: str) -> int);
        export!(lua, t, "KSR.tm", "t_branch_timeout", tm::t_branch_timeout() -> int);
        export!(lua, t, "KSR.tm", "t_any_timeout", tm::t_any_timeout() -> int);
        export!(lua, t, "KSR.tm", "t_set_fr", tm::t_set_fr(fr_inv: int, fr: int) -> int);
        export!(lua, t, "KSR.tm", "t_is_expired", tm::t_is_expired() -> int);
        export!(lua, t, "KSR.tm", "t_load_contacts", tm::t_load_contacts() -> int);
        export!(lua, t, "KSR.tm", "t_next_contacts", tm::t_next_contacts() -> int);
        ksr.raw_set("tm", t)?;
    }
    if grants("tmx") {
        let t = lua.create_table()?;
        export!(lua, t, "KSR.tmx", "t_precheck_trans", tmx::t_precheck_trans() -> int);
        export!(lua, t, "KSR.tmx", "t_suspend", tmx::t_suspend() -> int);
        export!(lua, t, "KSR.tmx", "t_continue", tmx::t_continue(tindex: int, tlabel: int, cbname: str) -> int);
        export!(lua, t, "KSR.tmx", "t_is_branch_route", tmx::t_is_branch_route() -> int);
        export!(lua, t, "KSR.tmx", "t_is_failure_route", tmx::t_is_failure_route() -> int);
        export!(lua, t, "KSR.tmx", "t_is_reply_route", tmx::t_is_reply_route() -> int);
        ksr.raw_set("tmx", t)?;
    }
    if grants("rr") {
        let t = lua.create_table()?;
        export!(lua, t, "KSR.rr", "record_route", rr::record_route() -> int);
        export!(lua, t, "KSR.rr", "loose_route", rr::loose_route() -> int);
        export!(lua, t, "KSR.rr", "record_route_params", rr::record_route_params(params: str) -> int);
        export!(lua, t, "KSR.rr", "record_route_preset_one", rr::record_route_preset_one(addr: str) -> int);
        export!(lua, t, "KSR.rr", "record_route_preset", rr::record_route_preset(addr1: str, addr2: str) -> int);
        export!(lua, t, "KSR.rr", "record_route_advertised_address", rr::record_route_advertised_address(addr: str) -> int);
        export!(lua, t, "KSR.rr", "remove_record_route", rr::remove_record_route() -> int);
        export!(lua, t, "KSR.rr", "add_rr_param", rr::add_rr_param(sparam: str) -> int);
        export!(lua, t, "KSR.rr", "check_route_param", rr::check_route_param(sre: str) -> int);
        export!(lua, t, "KSR.rr", "is_direction", rr::is_direction(dir: str) -> int);
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
        export!(lua, t, "KSR.siputils", "is_uri", siputils::is_uri(suri: str) -> int);
        export!(lua, t, "KSR.siputils", "uri_param", siputils::uri_param(sparam: str) -> int);
        export!(lua, t, "KSR.siputils", "uri_param_value", siputils::uri_param_value(sparam: str, svalue: str) -> int);
        export!(lua, t, "KSR.siputils", "uri_param_any", siputils::uri_param_any(sparam: str) -> int);
        export!(lua, t, "KSR.siputils", "uri_param_rm", siputils::uri_param_rm(sparam: str) -> int);
        export!(lua, t, "KSR.siputils", "is_tel_number", siputils::is_tel_number(tval: str) -> int);
        export!(lua, t, "KSR.siputils", "is_numeric", siputils::is_numeric(tval: str) -> int);
        export!(lua, t, "KSR.siputils", "is_alphanum", siputils::is_alphanum(tval: str) -> int);
        export!(lua, t, "KSR.siputils", "is_alphanumex", siputils::is_alphanumex(tval: str, eset: str) -> int);
        export!(lua, t, "KSR.siputils", "options_reply", siputils::options_reply() -> int);
        export!(lua, t, "KSR.siputils", "cmp_uri", siputils::cmp_uri(uri1: str, uri2: str) -> int);
        export!(lua, t, "KSR.siputils", "cmp_aor", siputils::cmp_aor(uri1: str, uri2: str) -> int);
        export!(lua, t, "KSR.siputils", "cmp_hdr_name", siputils::cmp_hdr_name(shname1: str, shname2: str) -> int);
        export!(lua, t, "KSR.siputils", "is_gruu", siputils::is_gruu() -> int);
        ksr.raw_set("siputils", t)?;
    }
    if grants("sanity") {
        let t = lua.create_table()?;
        export!(lua, t, "KSR.sanity", "sanity_check", sanity::sanity_check(mflags: int, uflags: int) -> int);
        export!(lua, t, "KSR.sanity", "sanity_check_defaults", sanity::sanity_check_defaults() -> int);
        export!(lua, t, "KSR.sanity", "sanity_reply", sanity::sanity_reply() -> int);
        ksr.raw_set("sanity", t)?;
    }
    if grants("kx") {
        let t = lua.create_table()?;
        export!(lua, t, "KSR.kx", "get_ruri", kx::get_ruri() -> xval);
        export!(lua, t, "KSR.kx", "get_ouri", kx::get_ouri() -> xval);
        export!(lua, t, "KSR.kx", "get_ruser", kx::get_ruser() -> xval);
        export!(lua, t, "KSR.kx", "gete_ruser", kx::gete_ruser() -> xval);
        export!(lua, t, "KSR.kx", "getw_ruser", kx::getw_ruser() -> xval);
        export!(lua, t, "KSR.kx", "get_rhost", kx::get_rhost() -> xval);
        export!(lua, t, "KSR.kx", "gete_rhost", kx::gete_rhost() -> xval);
        export!(lua, t, "KSR.kx", "getw_rhost", kx::getw_rhost() -> xval);
        export!(lua, t, "KSR.kx", "get_furi", kx::get_furi() -> xval);
        export!(lua, t, "KSR.kx", "get_fuser", kx::get_fuser() -> xval);
        export!(lua, t, "KSR.kx", "gete_fuser", kx::gete_fuser() -> xval);
        export!(lua, t, "KSR.kx", "getw_fuser", kx::getw_fuser() -> xval);
        export!(lua, t, "KSR.kx", "get_fhost", kx::get_fhost() -> xval);
        export!(lua, t, "KSR.kx", "gete_fhost", kx::gete_fhost() -> xval);
        export!(lua, t, "KSR.kx", "getw_fhost", kx::getw_fhost() -> xval);
        export!(lua, t, "KSR.kx", "get_turi", kx::get_turi() -> xval);
        export!(lua, t, "KSR.kx", "get_tuser", kx::get_tuser() -> xval);
        export!(lua, t, "KSR.kx", "gete_tuser", kx::gete_tuser() -> xval);
        export!(lua, t, "KSR.kx", "getw_tuser", kx::getw_tuser() -> xval);
        export!(lua, t, "KSR.kx", "get_thost", kx::get_thost() -> xval);
        export!(lua, t, "KSR.kx", "gete_thost", kx::gete_thost() -> xval);
        export!(lua, t, "KSR.kx", "getw_thost", kx::getw_thost() -> xval);
        export!(lua, t, "KSR.kx", "get_duri", kx::get_duri() -> xval);
        export!(lua, t, "KSR.kx", "gete_duri", kx::gete_duri() -> xval);
        export!(lua, t, "KSR.kx", "getw_duri", kx::getw_duri() -> xval);
        export!(lua, t, "KSR.kx", "get_cturi", kx::get_cturi() -> xval);
        export!(lua, t, "KSR.kx", "gete_cturi", kx::gete_cturi() -> xval);
        export!(lua, t, "KSR.kx", "getw_cturi", kx::getw_cturi() -> xval);
        export!(lua, t, "KSR.kx", "get_nhuri", kx::get_nhuri() -> xval);
        export!(lua, t, "KSR.kx", "get_srcuri", kx::get_srcuri() -> xval);
        export!(lua, t, "KSR.kx", "get_ua", kx::get_ua() -> xval);
        export!(lua, t, "KSR.kx", "gete_ua", kx::gete_ua() -> xval);
        export!(lua, t, "KSR.kx", "getw_ua", kx::getw_ua() -> xval);
        export!(lua, t, "KSR.kx", "get_srcip", kx::get_srcip() -> xval);
        export!(lua, t, "KSR.kx", "get_srcport", kx::get_srcport() -> xval);
        export!(lua, t, "KSR.kx", "get_send_sock", kx::get_send_sock() -> xval);
        export!(lua, t, "KSR.kx", "get_send_sock_port", kx::get_send_sock_port() -> int);
        export!(lua, t, "KSR.kx", "get_rcvip", kx::get_rcvip() -> xval);
        export!(lua, t, "KSR.kx", "get_rcvport", kx::get_rcvport() -> xval);
        export!(lua, t, "KSR.kx", "get_rcvadvip", kx::get_rcvadvip() -> xval);
        export!(lua, t, "KSR.kx", "get_rcvadvport", kx::get_rcvadvport() -> xval);
        export!(lua, t, "KSR.kx", "get_proto", kx::get_proto() -> xval);
        export!(lua, t, "KSR.kx", "get_protoid", kx::get_protoid() -> int);
        export!(lua, t, "KSR.kx", "get_au", kx::get_au() -> xval);
        export!(lua, t, "KSR.kx", "gete_au", kx::gete_au() -> xval);
        export!(lua, t, "KSR.kx", "getw_au", kx::getw_au() -> xval);
        export!(lua, t, "KSR.kx", "get_method", kx::get_method() -> xval);
        export!(lua, t, "KSR.kx", "get_status", kx::get_status() -> int);
        export!(lua, t, "KSR.kx", "gets_status", kx::gets_status() -> xval);
        export!(lua, t, "KSR.kx", "get_body", kx::get_body() -> xval);
        export!(lua, t, "KSR.kx", "gete_body", kx::gete_body() -> xval);
        export!(lua, t, "KSR.kx", "getw_body", kx::getw_body() -> xval);
        export!(lua, t, "KSR.kx", "get_bodylen", kx::get_bodylen() -> int);
        export!(lua, t, "KSR.kx", "get_timestamp", kx::get_timestamp() -> int);
        export!(lua, t, "KSR.kx", "get_callid", kx::get_callid() -> xval);
        export!(lua, t, "KSR.kx", "get_msgbuf", kx::get_msgbuf() -> xval);
        export!(lua, t, "KSR.kx", "get_msglen", kx::get_msglen() -> int);
        export!(lua, t, "KSR.kx", "get_msgtype", kx::get_msgtype() -> int);
        export!(lua, t, "KSR.kx", "get_def", kx::get_def(dname: str) -> xval);
        export!(lua, t, "KSR.kx", "get_defn", kx::get_defn(dname: str) -> int);
        export!(lua, t, "KSR.kx", "ifdef", kx::ifdef(dname: str) -> bool);
        export!(lua, t, "KSR.kx", "ifndef", kx::ifndef(dname: str) -> bool);
        export!(lua, t, "KSR.kx", "get_env", kx::get_env(envname: str) -> xval);
        export!(lua, t, "KSR.kx", "get_envn", kx::get_envn(envname: str) -> int);
        ksr.raw_set("kx", t)?;
    }
    if grants("corex") {
        let t = lua.create_table()?;
        export!(lua, t, "KSR.corex", "has_ruri_user", corex::has_ruri_user() -> int);
        export!(lua, t, "KSR.corex", "has_user_agent", corex::has_user_agent() -> int);
        export!(lua, t, "KSR.corex", "setxflag", corex::setxflag(fval: int) -> int);
        export!(lua, t, "KSR.corex", "resetxflag", corex::resetxflag(fval: int) -> int);
        export!(lua, t, "KSR.corex", "isxflagset", corex::isxflagset(fval: int) -> int);
        export!(lua, t, "KSR.corex", "set_send_socket", corex::set_send_socket(ssock: str) -> int);
        export!(lua, t, "KSR.corex", "append_branch", corex::append_branch() -> int);
        export!(lua, t, "KSR.corex", "append_branch_uri", corex::append_branch_uri(uri: str) -> int);
        export!(lua, t, "KSR.corex", "append_branch_uri_q", corex::append_branch_uri_q(uri: str, q: str) -> int);
        ksr.raw_set("corex", t)?;
    }
    if grants("textops") {
        let t = lua.create_table()?;
        export!(lua, t, "KSR.textops", "search", textops::search(sre: str) -> int);
        export!(lua, t, "KSR.textops", "search_body", textops::search_body(sre: str) -> int);
        export!(lua, t, "KSR.textops", "search_hf", textops::search_hf(hname: str, sre: str, flags: str) -> int);
        export!(lua, t, "KSR.textops", "is_present_hf", textops::is_present_hf(hname: str) -> int);
        export!(lua, t, "KSR.textops", "is_present_hf_re", textops::is_present_hf_re(ematch: str) -> int);
        export!(lua, t, "KSR.textops", "remove_hf_re", textops::remove_hf_re(ematch: str) -> int);
        export!(lua, t, "KSR.textops", "remove_hf_exp", textops::remove_hf_exp(ematch: str, eskip: str) -> int);
        export!(lua, t, "KSR.textops", "set_body", textops::set_body(nb: str, nc: str) -> int);
        export!(lua, t, "KSR.textops", "has_body", textops::has_body() -> int);
        export!(lua, t, "KSR.textops", "has_body_type", textops::has_body_type(ctype: str) -> int);
        export!(lua, t, "KSR.textops", "is_privacy", textops::is_privacy(privacy: str) -> int);
        export!(lua, t, "KSR.textops", "in_list", textops::in_list(subject: str, list: str, vsep: str) -> int);
        export!(lua, t, "KSR.textops", "in_list_prefix", textops::in_list_prefix(subject: str, list: str, vsep: str) -> int);
        export!(lua, t, "KSR.textops", "cmp_str", textops::cmp_str(s1: str, s2: str) -> int);
        export!(lua, t, "KSR.textops", "cmp_istr", textops::cmp_istr(s1: str, s2: str) -> int);
        export!(lua, t, "KSR.textops", "starts_with", textops::starts_with(s1: str, s2: str) -> int);
        ksr.raw_set("textops", t)?;
    }
    if grants("registrar") {
        let t = lua.create_table()?;
        export!(lua, t, "KSR.registrar", "save", registrar::save(table: str, iflags: int) -> int);
        export!(lua, t, "KSR.registrar", "save_uri", registrar::save_uri(table: str, iflags: int, uri: str) -> int);
        export!(lua, t, "KSR.registrar", "lookup", registrar::lookup(table: str) -> int);
        export!(lua, t, "KSR.registrar", "lookup_uri", registrar::lookup_uri(table: str, uri: str) -> int);
        export!(lua, t, "KSR.registrar", "lookup_branches", registrar::lookup_branches(table: str) -> int);
        export!(lua, t, "KSR.registrar", "registered", registrar::registered(table: str) -> int);
        export!(lua, t, "KSR.registrar", "registered_uri", registrar::registered_uri(table: str, uri: str) -> int);
        export!(lua, t, "KSR.registrar", "unregister", registrar::unregister(table: str, uri: str) -> int);
        ksr.raw_set("registrar", t)?;
    }
    if grants("auth") {
        let t = lua.create_table()?;
        export!(lua, t, "KSR.auth", "auth_challenge", auth::auth_challenge(realm: str, iflags: int) -> int);
        export!(lua, t, "KSR.auth", "www_challenge", auth::www_challenge(realm: str, iflags: int) -> int);
        export!(lua, t, "KSR.auth", "proxy_challenge", auth::proxy_challenge(realm: str, iflags: int) -> int);
        export!(lua, t, "KSR.auth", "consume_credentials", auth::consume_credentials() -> int);
        export!(lua, t, "KSR.auth", "has_credentials", auth::has_credentials(realm: str) -> int);
        export!(lua, t, "KSR.auth", "pv_auth_check", auth::pv_auth_check(realm: str, passwd: str, iflags: int, checks: int) -> int);
        export!(lua, t, "KSR.auth", "pv_www_authenticate", auth::pv_www_authenticate(realm: str, passwd: str, iflags: int) -> int);
        export!(lua, t, "KSR.auth", "pv_proxy_authenticate", auth::pv_proxy_authenticate(realm: str, passwd: str, iflags: int) -> int);
        ksr.raw_set("auth", t)?;
    }
    if grants("auth_db") {
        let t = lua.create_table()?;
        export!(lua, t, "KSR.auth_db", "auth_check", auth_db::auth_check(realm: str, table: str, iflags: int) -> int);
        export!(lua, t, "KSR.auth_db", "www_authenticate", auth_db::www_authenticate(realm: str, table: str) -> int);
        export!(lua, t, "KSR.auth_db", "proxy_authenticate", auth_db::proxy_authenticate(realm: str, table: str) -> int);
        export!(lua, t, "KSR.auth_db", "is_subscriber", auth_db::is_subscriber(uri: str, table: str, iflags: int) -> int);
        ksr.raw_set("auth_db", t)?;
    }
    if grants("nathelper") {
        let t = lua.create_table()?;
        export!(lua, t, "KSR.nathelper", "nat_uac_test", nathelper::nat_uac_test(iflags: int) -> int);
        export!(lua, t, "KSR.nathelper", "fix_nated_contact", nathelper::fix_nated_contact() -> int);
        export!(lua, t, "KSR.nathelper", "fix_nated_register", nathelper::fix_nated_register() -> int);
        export!(lua, t, "KSR.nathelper", "set_contact_alias", nathelper::set_contact_alias() -> int);
        export!(lua, t, "KSR.nathelper", "add_contact_alias", nathelper::add_contact_alias() -> int);
        export!(lua, t, "KSR.nathelper", "add_contact_alias_addr", nathelper::add_contact_alias_addr(ip: str, port: str, proto: str) -> int);
        export!(lua, t, "KSR.nathelper", "handle_ruri_alias", nathelper::handle_ruri_alias() -> int);
        ksr.raw_set("nathelper", t)?;
    }
    Ok(ksr)
}
