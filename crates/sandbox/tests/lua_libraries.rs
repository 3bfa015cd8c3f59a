//! The Lua libraries scripts require, run in the real guest component:
//! `cjson` (lua-cjson's API), `os.getenv` over the tenant's variables,
//! globals a script may shadow, `KSR.route`, `KSR.kx.ifdef` and the
//! tenant's own Lua modules.

mod common;

use std::sync::Arc;

use common::*;
use kemibox_kemi::TenantState;
use kemibox_sandbox::{Instance, LuaModule, Outcome, Tenant, TenantSpec};

/// Load `source` (with `spec` changed by `set`) and run `t()`, which
/// asserts in Lua and returns 1.
async fn run_with(name: &str, source: &str, set: impl FnOnce(&mut TenantSpec)) -> Outcome {
    let mut s = spec(name, source);
    s.entry = Some("t".into());
    set(&mut s);
    let (_, mut instance) = Tenant::load(&runtime(), s)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    instance.invoke("t", Some(invite())).await.outcome
}

async fn run(name: &str, source: &str) -> Outcome {
    run_with(name, source, |_| {}).await
}

fn ok(name: &str, outcome: Outcome) {
    assert_eq!(outcome, Outcome::Ok { ret: 1 }, "{name}");
}

#[tokio::test]
async fn cjson_encodes_as_lua_cjson() {
    let o = run(
        "cjson-encode",
        r#"
local cjson = require "cjson"
local function eq(got, want) assert(got == want, tostring(got) .. " ~= " .. tostring(want)) end
function t()
    eq(cjson.encode({1, 2, 3}), "[1,2,3]")
    eq(cjson.encode({a = 1}), '{"a":1}')
    eq(cjson.encode({a = {b = {true, false}}}), '{"a":{"b":[true,false]}}')
    eq(cjson.encode('a/b\n"\\\t\1'), '"a\\/b\\n\\"\\\\\\t\\u0001"')
    eq(cjson.encode("h\195\169llo"), '"h\195\169llo"')
    eq(cjson.encode(0.1), "0.1")
    eq(cjson.encode(1/3), "0.33333333333333")
    eq(cjson.encode(1e300), "1e+300")
    eq(cjson.encode(1.5e-7), "1.5e-07")
    eq(cjson.encode(3.0), "3")
    eq(cjson.encode(-7), "-7")
    eq(cjson.encode(math.maxinteger), "9223372036854775807")
    eq(cjson.encode(nil), "null")
    eq(cjson.encode(cjson.null), "null")
    eq(cjson.encode({1, cjson.null, 3}), "[1,null,3]")
    eq(cjson.encode({[1] = 1, [3] = 3}), "[1,null,3]")
    eq(cjson.encode({}), "{}")
    eq(cjson.encode(cjson.empty_array), "[]")
    eq(cjson.encode({list = setmetatable({}, cjson.empty_array_mt)}), '{"list":[]}')
    eq(cjson.encode(setmetatable({}, cjson.array_mt)), "[]")
    eq(cjson.encode({[2] = "x"}), '[null,"x"]')
    local ok, err = pcall(cjson.encode, {[1] = 1, [100] = 2})
    assert(not ok and err:find("excessively sparse array"), err)
    ok, err = pcall(cjson.encode, {f = print})
    assert(not ok and err:find("Cannot serialise function: type not supported"), err)
    ok, err = pcall(cjson.encode, 0/0)
    assert(not ok and err:find("must not be NaN or Infinity"), err)
    ok, err = pcall(cjson.encode, {[true] = 1})
    assert(not ok and err:find("table key must be a number or string"), err)
    local deep = {}
    local cur = deep
    for _ = 1, 1100 do cur[1] = {}; cur = cur[1] end
    ok, err = pcall(cjson.encode, deep)
    assert(not ok and err:find("excessive nesting %(1001%)"), err)

    -- settings, per instance of the module
    local other = cjson.new()
    eq(cjson.encode_empty_table_as_object(false), false)
    eq(cjson.encode({}), "[]")
    eq(other.encode({}), "{}")
    local convert, ratio, safe = cjson.encode_sparse_array(true)
    assert(convert == true and ratio == 2 and safe == 10)
    local sparse = cjson.decode(cjson.encode({[1] = 1, [100] = 2}))
    eq(sparse["1"], 1); eq(sparse["100"], 2)
    eq(cjson.encode_number_precision(3), 3)
    eq(cjson.encode(1/3), "0.333")
    eq(other.encode(1/3), "0.33333333333333")
    eq(cjson.encode_escape_forward_slash(false), false)
    eq(cjson.encode("a/b"), '"a/b"')
    eq(cjson.encode_invalid_numbers("null"), "null")
    eq(cjson.encode(1/0), "null")
    eq(cjson.encode_max_depth(2), 2)
    ok, err = pcall(cjson.encode, {{{1}}})
    assert(not ok and err:find("excessive nesting %(3%)"), err)
    ok, err = pcall(cjson.encode_max_depth, 100000)
    assert(not ok and err:find("expected integer between 1 and 1000"), err)
    assert(require("cjson") == cjson, "require caches the module")
    return 1
end
"#,
    )
    .await;
    ok("encode", o);
}

#[tokio::test]
async fn cjson_decodes_as_lua_cjson_and_errors_are_catchable() {
    let o = run(
        "cjson-decode",
        r##"
local cjson = require "cjson"
local safe = require "cjson.safe"
local function eq(got, want) assert(got == want, tostring(got) .. " ~= " .. tostring(want)) end
local function fails(text, want)
    local ok, err = pcall(cjson.decode, text)
    assert(not ok, "decoded " .. text)
    assert(err:find(want, 1, true), err .. " (wanted: " .. want .. ")")
    local v, e = safe.decode(text)
    assert(v == nil and e:find(want, 1, true), tostring(e))
end
function t()
    local v = cjson.decode(' {"a": [1, 2.5, "x", null, true, false, -0.5e1], "b": {}} ')
    eq(v.a[1], 1); eq(math.type(v.a[1]), "integer")
    eq(v.a[2], 2.5); eq(v.a[3], "x"); eq(v.a[4], cjson.null)
    eq(v.a[5], true); eq(v.a[6], false); eq(v.a[7], -5.0)
    eq(next(v.b), nil)
    eq(cjson.decode("12345678901234567890"), 12345678901234567890.0)
    eq(cjson.decode('"\\u00e9\\n\\/\\\\"'), "\195\169\n/\\")
    eq(cjson.decode('"\\ud83d\\ude00"'), "\240\159\152\128")
    eq(cjson.decode('"a\\u0000b"'), "a\0b")
    eq(cjson.decode("null"), cjson.null)
    fails("", "Expected value but found T_END at character 1")
    fails("{", "Expected object key string but found T_END at character 2")
    fails("[1,]", "Expected value but found T_ARR_END at character 4")
    fails("[1 2]", "Expected comma or array end but found T_NUMBER at character 4")
    fails('{"a" 1}', "Expected colon but found T_NUMBER at character 6")
    fails('{"a":1,}', "Expected object key string but found T_OBJ_END at character 8")
    fails("[1] x", "Expected the end but found invalid token at character 5")
    fails("nul", "Expected value but found invalid token at character 1")
    fails('"\\ud83d"', "invalid unicode escape code")
    fails('"\\ude00"', "invalid unicode escape code")
    fails('"\\q"', "invalid escape code")
    fails('"abc', "unexpected end of string")
    fails("-", "invalid number")
    fails(string.rep("[", 2000), "Found too many nested data structures (1001) at character 1001")
    -- Larger than the sandbox allows: refused before parsing, catchably.
    local ok, err = pcall(cjson.decode, {})
    assert(not ok and err:find("string expected, got table"), err)

    eq(cjson.decode_max_depth(3), 3)
    eq(safe.decode_max_depth(3), 3)
    fails("[[[[1]]]]", "Found too many nested data structures (4)")
    local arrays = cjson.new()
    arrays.decode_array_with_array_mt(true)
    eq(arrays.encode(arrays.decode("[]")), "[]")
    eq(cjson.encode(cjson.decode('{"k":[]}')), '{"k":{}}')
    local a = safe.new()
    eq(select("#", a.decode("x")), 2)
    return 1
end
"##,
    )
    .await;
    ok("decode", o);
    // Over the input bound: refused before parsing. (Making a 4 MiB string
    // costs more than the default fuel.)
    let o = run_with(
        "cjson-big",
        r#"
local cjson = require "cjson"
function t()
    local ok, err = pcall(cjson.decode, string.rep(string.rep("x", 4096), 1025))
    assert(not ok and err:find("over the sandbox's limit"), err)
    return 1
end
"#,
        |s| s.limits.fuel = 100_000_000,
    )
    .await;
    ok("big", o);
}

/// `cjson.safe` answers `nil, message` for every failure of a conversion,
/// a wrong argument type included, as lua-cjson's protected calls do;
/// only a wrong number of arguments raises (lua-cjson checks it before
/// its protected call). `cjson` itself raises all of them.
#[tokio::test]
async fn cjson_safe_returns_nil_and_a_message_for_bad_arguments() {
    let o = run(
        "cjson-safe-arguments",
        r##"
local cjson = require "cjson"
local safe = require "cjson.safe"
local function nil_and(want, ...)
    local n, v, e = select("#", ...), ...
    assert(n == 2 and v == nil, "not nil, message: " .. tostring(v))
    assert(type(e) == "string" and e:find(want, 1, true), tostring(e) .. " (wanted: " .. want .. ")")
end
local function raises(want, f, ...)
    local ok, err = pcall(f, ...)
    assert(not ok, "did not raise")
    assert(type(err) == "string" and err:find(want, 1, true), tostring(err) .. " (wanted: " .. want .. ")")
end
function t()
    nil_and("string expected, got table", safe.decode({}))
    nil_and("string expected, got nil", safe.decode(nil))
    nil_and("string expected, got boolean", safe.decode(true))
    nil_and("Cannot serialise function", safe.encode(function() end))
    nil_and("Cannot serialise function", safe.encode({ f = print }))
    local fresh = safe.new()
    nil_and("string expected, got table", fresh.decode({}))
    nil_and("Cannot serialise function", fresh.encode(print))
    -- The count of arguments is checked before the protected call.
    raises("expected 1 argument", safe.decode)
    raises("expected 1 argument", safe.encode, 1, 2)
    -- Plain cjson raises what safe returns.
    raises("string expected, got table", cjson.decode, {})
    raises("Cannot serialise function", cjson.encode, print)
    -- And safe still converts.
    assert(safe.encode({ 1 }) == "[1]" and safe.decode("[2]")[1] == 2)
    return 1
end
"##,
    )
    .await;
    ok("safe arguments", o);
}

#[tokio::test]
async fn getenv_and_get_env_read_the_tenants_variables_and_ifdef_its_defines() {
    let source = r#"
function t()
    assert(os.getenv("REGION") == "eu-1", tostring(os.getenv("REGION")))
    assert(os.getenv("PATH") == nil, "the process environment leaked")
    assert(KSR.kx.get_env("REGION") == "eu-1")
    assert(KSR.kx.get_env("PATH") == "")
    assert(KSR.kx.ifdef("WITH_AUTH") == true)
    assert(KSR.kx.ifndef("WITH_NAT") == true)
    assert(KSR.kx.get_def("MAX") == "20")
    local ok, err = pcall(os.getenv, {})
    assert(not ok and err:find("string expected"), err)
    return 1
end
"#;
    let o = run_with("env", source, |s| {
        let mut state = TenantState::default();
        state.env.insert("REGION".into(), "eu-1".into());
        state.defines.insert("WITH_AUTH".into(), String::new());
        state.defines.insert("MAX".into(), "20".into());
        s.state = Arc::new(state);
    })
    .await;
    ok("env", o);
    // Another tenant, without variables, sees none.
    let o = run(
        "no-env",
        "function t() return os.getenv('REGION') == nil and 1 or 0 end",
    )
    .await;
    ok("no env", o);
}

#[tokio::test]
async fn library_globals_can_be_shadowed_in_the_own_instance_only() {
    let source = r#"
unpack = _G.unpack or table.unpack
local real_print = print
print = function(...) printed = (printed or 0) + 1 end
string = setmetatable({ shout = function(s) return s:upper() end }, { __index = string })
function t()
    local a, b = unpack({1, 2})
    assert(a == 1 and b == 2)
    print("x")
    assert(printed == 1)
    assert(string.shout("a") == "A" and string.rep("a", 2) == "aa")
    return 1
end
function shadow() tostring = 5; return 1 end
function fresh() return type(tostring) == "function" and 1 or 0 end
function refused()
    for _, attack in ipairs({
        function() KSR = nil end,
        function() pcall = nil end,
        function() xpcall = nil end,
        function() error = nil end,
        function() require = nil end,
        function() coroutine = {} end,
        function() rawset(_G, "pcall", nil) end,
    }) do
        local ok, err = pcall(attack)
        assert(not ok and (err:find("cannot redefine") or err:find("cannot modify")), tostring(err))
    end
    return 1
end
"#;
    let mut s = spec("shadow", source);
    s.entry = Some("t".into());
    let (tenant, mut first) = Tenant::load(&runtime(), s).await.unwrap();
    ok("shadowed", first.invoke("t", None).await.outcome);
    ok("refused", first.invoke("refused", None).await.outcome);
    ok("shadow", first.invoke("shadow", None).await.outcome);
    assert_eq!(
        first.invoke("fresh", None).await.outcome,
        Outcome::Ok { ret: 0 },
        "the instance keeps its own global"
    );
    let mut second = Instance::new(tenant).await.unwrap();
    ok(
        "another instance",
        second.invoke("fresh", None).await.outcome,
    );
}

#[tokio::test]
async fn ksr_route_runs_a_script_function_inside_the_invocation() {
    let source = r#"
function helper() KSR.pv.sets("$var(helped)", "yes"); return 5 end
function falsy() return false end
function nothing() end
function ender() KSR.x.exit() end
function spin() while true do end end
function t()
    assert(KSR.route("helper") == 5)
    assert(KSR.pv.get("$var(helped)") == "yes")
    assert(KSR.route("falsy") == -1)
    assert(KSR.route("nothing") == 1)
    assert(KSR.route("no_such_route") == -1)
    assert(KSR.route({}) == -1)
    return 1
end
function exits()
    KSR.route("ender")
    error("not reached: exit in a route ends the invocation")
end
function exits_through_pcall()
    pcall(KSR.route, "ender")
    error("not reached")
end
function spins() return KSR.route("spin") end
"#;
    let mut s = spec("route", source);
    s.entry = Some("t".into());
    let (_, mut instance) = Tenant::load(&runtime(), s).await.unwrap();
    ok("route", instance.invoke("t", Some(invite())).await.outcome);
    assert_eq!(
        instance.invoke("exits", Some(invite())).await.outcome,
        Outcome::Ok { ret: 0 }
    );
    assert_eq!(
        instance
            .invoke("exits_through_pcall", Some(invite()))
            .await
            .outcome,
        Outcome::Ok { ret: 0 }
    );
    assert_eq!(
        instance.invoke("spins", Some(invite())).await.outcome,
        Outcome::OutOfFuel
    );
}

fn module(name: &str, file: &str, source: &str) -> LuaModule {
    LuaModule {
        name: name.into(),
        file: file.into(),
        source: source.into(),
    }
}

#[tokio::test]
async fn tenant_modules_load_once_on_require_and_others_are_refused() {
    let source = r#"
local utils = require "utils"
function t()
    assert(utils.double(21) == 42)
    assert(require("utils") == utils and loads == 1, "required once: " .. tostring(loads))
    local sig = require "callng.sigfunc"
    assert(sig.name == "callng.sigfunc" and sig.twice == 84)
    for _, name in ipairs({ "socket", "luasql.postgres", "../etc/passwd", "callng/sigfunc" }) do
        local ok, err = pcall(require, name)
        assert(not ok and err:find("module '" .. name .. "' is not available in the sandbox", 1, true), err)
    end
    local ok, err = pcall(require, "broken")
    assert(not ok and err:find("lib/broken.lua:1: boom", 1, true), err)
    package.loaded.utils = nil
    require "utils"
    assert(loads == 2, "cleared from package.loaded, it runs again")
    return 1
end
"#;
    let modules: Vec<LuaModule> = vec![
        module(
            "utils",
            "lib/utils.lua",
            "loads = (loads or 0) + 1\nreturn { double = function(x) return 2 * x end }\n",
        ),
        module(
            "callng.sigfunc",
            "lib/callng/sigfunc.lua",
            "local name = ...\nlocal u = require 'utils'\nreturn { name = name, twice = u.double(42) }\n",
        ),
        module("broken", "lib/broken.lua", "error('boom')\n"),
    ];
    let o = run_with("modules", source, |s| s.lua_modules = modules.into()).await;
    ok("modules", o);

    // A syntax error in a module refuses the script, naming its file and line.
    let mut s = spec("bad-module", "function ksr_request_route() return 1 end");
    s.lua_modules = vec![module("bad", "lib/bad.lua", "local x = 1\nx = = 2\n")].into();
    let err = Tenant::load(&runtime(), s).await.err().expect("refused");
    assert!(
        err.message.contains("lib/bad.lua:2:") && err.message.contains("in Lua module 'bad'"),
        "{err}"
    );
}
