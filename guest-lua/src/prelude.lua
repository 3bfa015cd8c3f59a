-- The kemibox sandbox, set up once per Lua state before the tenant's script.
-- Called with the KSR table built from the imports and debug.traceback;
-- returns the exit sentinel and the protected runner the guest calls routes
-- through.
--
-- What it guarantees: the script cannot replace or remove anything the
-- sandbox provides (KSR and its modules, the standard functions and
-- libraries), so one invocation cannot break the next; KSR.x.exit() and
-- KSR.x.drop() end the invocation even inside pcall; binary chunks cannot be
-- loaded; only the KSR "module" can be required.
local KSR, traceback = ...

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

base.rawset = function(t, k, v)
    if frozen[t] or (t == G and base[k] ~= nil) then
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
base.os = freeze({ time = os.time, clock = os.clock, date = os.date, difftime = os.difftime }, "os")
base.debug = freeze({ traceback = traceback }, "debug")
base.KSR = freeze(KSR, "KSR")
base._G = G

local modules = {
    KSR = base.KSR, string = base.string, table = base.table, math = base.math,
    utf8 = base.utf8, coroutine = base.coroutine,
}
base.require = function(name)
    local m = modules[name]
    if m == nil then
        error("module '" .. tostring(name) .. "' is not available in the sandbox", 2)
    end
    return m
end

local string_meta = getmetatable("")
string_meta.__index = str
string_meta.__metatable = false

for k in next, base do rawset(G, k, nil) end
setmetatable(G, {
    __index = base,
    __newindex = function(t, k, v)
        if base[k] ~= nil then
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
