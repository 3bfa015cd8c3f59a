//! A Lua state with the sandboxed standard library and the `KSR` table.
//!
//! Loaded libraries: base, string, table, math, utf8, coroutine and the
//! clock/date part of os, with `os.getenv` reading the tenant's variables;
//! `debug` only for `traceback`; `cjson` ([`crate::cjson`]) and the
//! tenant's own Lua modules through `require`. No io, no C modules, no
//! dofile/loadfile, no binary chunks. The rules are in `prelude.lua`.

use mlua::{Function, Lua, LuaOptions, Result, StdLib, Table, Value};

/// A ready Lua state: the sandbox installed, no script loaded yet.
pub struct Sandbox {
    pub lua: Lua,
    /// The raw `KSR` table (before freezing), for listing what is reachable.
    pub ksr: Table,
    /// Raised by `KSR.x.exit()` / `KSR.x.drop()`.
    pub exit: Value,
    /// `run(f)`: calls `f` under xpcall with a traceback handler.
    pub run: Function,
    /// The tenant's Lua modules by name, for `require`: empty until the
    /// guest compiles them into it (after the memory limit is set).
    pub lua_modules: Table,
}

/// A Lua state for a tenant granted `granted`, with its environment `env`.
pub fn new(granted: &[String], memory_limit: u64, env: &[(String, String)]) -> Result<Sandbox> {
    let libs = StdLib::STRING
        | StdLib::TABLE
        | StdLib::MATH
        | StdLib::UTF8
        | StdLib::COROUTINE
        | StdLib::OS
        | StdLib::DEBUG;
    // SAFETY: the debug library is only used to take `debug.traceback`; the
    // prelude removes every other debug function before any script runs.
    #[allow(unsafe_code, reason = "mlua's only way to load the debug library")]
    let lua = unsafe { Lua::unsafe_new_with(libs, LuaOptions::default()) };
    let globals = lua.globals();
    let debug: Table = globals.get("debug")?;
    let traceback: Function = debug.get("traceback")?;
    let ksr = crate::ksr::build(&lua, granted)?;
    let prelude: Function = lua
        .load(include_str!("prelude.lua"))
        .set_name("=kemibox-prelude")
        .into_function()?;
    let env_table = lua.create_table()?;
    for (name, value) in env {
        env_table.raw_set(name.as_str(), value.as_str())?;
    }
    let lua_modules = lua.create_table()?;
    let max_text = crate::cjson::max_text(memory_limit);
    let cjson_open =
        lua.create_function(move |lua, safe: bool| crate::cjson::open(lua, safe, max_text))?;
    let (exit, run): (Value, Function) = prelude.call((
        ksr.clone(),
        traceback,
        env_table,
        lua_modules.clone(),
        cjson_open,
    ))?;
    if memory_limit > 0 {
        lua.set_memory_limit(memory_limit as usize)?;
    }
    Ok(Sandbox {
        lua,
        ksr,
        exit,
        run,
        lua_modules,
    })
}
