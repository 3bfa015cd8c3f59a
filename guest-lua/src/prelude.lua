-- The kemibox sandbox, set up once per Lua state before the tenant's script.
-- Called with the KSR table built from the imports, debug.traceback, the
-- tenant's environment (name -> value), its compiled Lua modules (name ->
-- function, filled after this runs) and the cjson opener; returns the exit
-- sentinel and the protected runner the guest calls routes through.
--
-- What it guarantees: the script cannot replace or remove what the
-- sandbox's guarantees rest on (KSR and its modules, pcall/xpcall/error,
-- coroutine, require, _G) nor change the standard libraries' tables, so
-- KSR.x.exit() and KSR.x.drop() end the invocation even inside pcall, in
-- this invocation and the next. Other library names (unpack, print,
-- string, ...) are ordinary globals a script may shadow with its own
-- values, in its own instance only. Binary chunks cannot be loaded;
-- require knows the libraries, cjson and the tenant's own Lua modules.
local KSR, traceback, env, lua_modules, cjson_open = ...

local error, next, pcall, xpcall, rawset, select, setmetatable, tostring, type =
    error, next, pcall, xpcall, rawset, select, setmetatable, tostring, type
local G = _G

-- Unique value raised by KSR.x.exit()/drop(); tables cannot be forged.
local EXIT = setmetatable({}, { __tostring = function() return "KSR.x.exit" end })

local frozen = setmetatable({}, { __mode = "k" })

-- A read-only view of `t`: reads go through, writes are refused.
local function freeze(t, name)
    local proxy = setmetatable({}, {
        __index = t,
        __newindex = function(_, k)
            error("cannot modify " .. name .. "." .. tostring(k) .. ": it belongs to the sandbox", 2)
        end,
        __pairs = function() return next, t, nil end,
        __len = function() return #t end,
        __metatable = false,
    })
    frozen[proxy] = true
    return proxy
end

local function unwind(ok, ...)
    if not ok and (...) == EXIT then error(EXIT, 0) end
    return ok, ...
end

local host_exit, host_drop = KSR.x.exit, KSR.x.drop
local host_err = KSR.err

-- A route's result as the KEMI integer (as the guest's invoke does).
local rawget, math_type, floor, ceil, tointeger, huge =
    rawget, math.type, math.floor, math.ceil, math.tointeger, math.huge
local function kemi_int(r)
    if r == false then return -1 end
    if math_type(r) == "integer" then
        if r > 2147483647 then return 2147483647 end
        if r < -2147483648 then return -2147483648 end
        return r
    end
    if math_type(r) == "float" and r == r and r ~= huge and r ~= -huge then
        if r > 2147483647 then return 2147483647 end
        if r < -2147483648 then return -2147483648 end
        return tointeger(r >= 0 and floor(r) or ceil(r))
    end
    return 1
end

-- KSR.route(name): the script's global function `name`, run inside this
-- invocation (its errors, exit and drop are the invocation's); -1 when
-- there is none.
KSR.route = function(name)
    if type(name) ~= "string" then
        host_err("KSR.route: bad argument #1 (string expected, got " .. type(name) .. ")\n")
        return -1
    end
    local f = rawget(G, name)
    if type(f) ~= "function" then return -1 end
    return kemi_int(f())
end
KSR.x.exit = function() host_exit(); error(EXIT, 0) end
KSR.x.drop = function() host_drop(); error(EXIT, 0) end

for name, module in next, KSR do
    if type(module) == "table" then KSR[name] = freeze(module, "KSR." .. name) end
end

local base = {}
for k, v in next, G do base[k] = v end

base.pcall = function(f, ...) return unwind(pcall(f, ...)) end
base.xpcall = function(f, handler, ...)
    return unwind(xpcall(f, function(e)
        if e == EXIT then return EXIT end
        return handler(e)
    end, ...))
end

local coroutine_resume = coroutine.resume
local co = {}
for k, v in next, coroutine do co[k] = v end
co.resume = function(c, ...) return unwind(coroutine_resume(c, ...)) end

local raw_load = load
base.load = function(...)
    local chunk, name, _, env = ...
    if select("#", ...) >= 4 then return raw_load(chunk, name, "t", env) end
    return raw_load(chunk, name, "t")
end

local raw_gc = collectgarbage
local gc_options = { collect = true, count = true, step = true, isrunning = true }
base.collectgarbage = function(opt, ...)
    opt = opt or "collect"
    if not gc_options[opt] then
        error("collectgarbage(\"" .. tostring(opt) .. "\") is not allowed in the sandbox", 2)
    end
    return raw_gc(opt, ...)
end

-- The globals the sandbox's guarantees rest on: never reassigned.
local protected = {
    KSR = true, pcall = true, xpcall = true, error = true, coroutine = true,
    require = true, _G = true,
}

base.rawset = function(t, k, v)
    if frozen[t] or (t == G and protected[k]) then
        error("cannot modify " .. tostring(k) .. ": it belongs to the sandbox", 2)
    end
    return rawset(t, k, v)
end

local info = KSR.info
base.print = function(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
    info(table.concat(parts, "\t") .. "\n")
end

local str = {}
for k, v in next, string do str[k] = v end
str.dump = nil

base.dofile, base.loadfile = nil, nil
base.unpack = table.unpack
base.string = freeze(str, "string")
base.table = freeze(table, "table")
base.math = freeze(math, "math")
base.utf8 = freeze(utf8, "utf8")
base.coroutine = freeze(co, "coroutine")
-- os.getenv: the tenant's configured variables only, never the process's.
local function getenv(name)
    if type(name) ~= "string" then
        error("bad argument #1 to 'getenv' (string expected, got " .. type(name) .. ")", 2)
    end
    return env[name]
end
base.os = freeze({
    time = os.time, clock = os.clock, date = os.date, difftime = os.difftime, getenv = getenv,
}, "os")
base.debug = freeze({ traceback = traceback }, "debug")
base.KSR = freeze(KSR, "KSR")
base._G = G

local modules = {
    KSR = base.KSR, string = base.string, table = base.table, math = base.math,
    utf8 = base.utf8, coroutine = base.coroutine,
}
-- Libraries made on first require, once per instance.
local libraries = {
    cjson = function() return cjson_open(false) end,
    ["cjson.safe"] = function() return cjson_open(true) end,
}
-- package.loaded: what require returned, per instance (a script may clear
-- an entry to run a module again); package.path is kept for scripts that
-- extend it, but modules come only from the tenant's lua_path.
local package = { loaded = {}, preload = {}, path = "?.lua;?/init.lua", cpath = "" }
local loaded = package.loaded
local loading = {}
base.package = package

local function not_found(name)
    local why
    if name:find("..", 1, true) or name:find("[/\\]") or name:sub(1, 1) == "." then
        why = "a module name is dotted words (callng.sigfunc), not a path"
    else
        why = "it is neither a library of the sandbox (cjson, cjson.safe) nor one of the "
            .. "tenant's Lua modules (lua_path); C modules cannot be loaded"
    end
    error("module '" .. name .. "' is not available in the sandbox: " .. why, 3)
end

base.require = function(name)
    local m = modules[name]
    if m ~= nil then return m end
    if type(name) ~= "string" then
        error("bad argument #1 to 'require' (string expected, got " .. type(name) .. ")", 2)
    end
    local v = loaded[name]
    if v ~= nil then return v end
    local open = libraries[name]
    if open then
        v = open()
        loaded[name] = v
        return v
    end
    local f = lua_modules[name]
    if f == nil then not_found(name) end
    if loading[name] then
        error("loop or previous error loading module '" .. name .. "'", 2)
    end
    loading[name] = true
    local ok, r = pcall(f, name)
    loading[name] = nil
    if not ok then error(r, 0) end
    if r == nil then r = true end
    if loaded[name] == nil then loaded[name] = r end
    return loaded[name]
end

local string_meta = getmetatable("")
string_meta.__index = str
string_meta.__metatable = false

for k in next, base do rawset(G, k, nil) end
setmetatable(G, {
    __index = base,
    __newindex = function(t, k, v)
        if protected[k] then
            error("cannot redefine " .. tostring(k) .. ": it belongs to the sandbox", 2)
        end
        rawset(t, k, v)
    end,
    __metatable = false,
})

local function handler(e)
    if e == EXIT then return EXIT end
    return traceback(tostring(e), 2)
end

local function run(f)
    return xpcall(f, handler)
end

return EXIT, run
