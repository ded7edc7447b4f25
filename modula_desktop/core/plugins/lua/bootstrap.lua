-- Trusted bootstrap: the first and only code run with the full standard library in a fresh runtime.
-- It captures what the sandbox needs into locals, builds the budget hook, locks the string metatable,
-- strips the global table, and returns the trusted entry points Python calls. Plugin code never sees
-- this chunk's locals: it runs in an environment table built by new_env() from an allow-list.
local host, limits, patterns_src = ...

local sethook = debug.sethook
local co_create, co_resume, co_status, co_running = coroutine.create, coroutine.resume, coroutine.status, coroutine.running
local co_yield, co_isyieldable, co_close = coroutine.yield, coroutine.isyieldable, coroutine.close
local r_pcall, r_error, r_type, r_select, r_next = pcall, error, type, select, next
local r_setmetatable, r_getmetatable, r_rawget, r_rawset, r_rawequal = setmetatable, getmetatable, rawget, rawset, rawequal
local r_load, r_tostring, r_tonumber, r_pairs, r_ipairs, r_assert = load, tostring, tonumber, pairs, ipairs, assert
local t_pack, t_unpack, t_concat, t_insert, t_sort = table.pack, table.unpack, table.concat, table.insert, table.sort
local s_find, s_match, s_gmatch, s_gsub, s_rep, s_sub, s_format, s_byte, s_char = string.find, string.match,
  string.gmatch, string.gsub, string.rep, string.sub, string.format, string.byte, string.char
local s_len, s_lower, s_upper, s_reverse = string.len, string.lower, string.upper, string.reverse
local os_time, os_clock, os_date = os.time, os.clock, os.date
local m_floor, m_huge, m_type = math.floor, math.huge, math.type
local clock = host.clock

local TICK = 1000
local MAX_STRING = limits.max_string
local PATTERN_COST = limits.pattern_cost

---------------------------------------------------------------------------------------------------
-- Budgets. One state per runtime (a VM serves one call at a time). The trip is sticky: once
-- tripped, every hook tick, pcall, xpcall and coroutine.resume raises the same error again, so a
-- plugin cannot catch its way out of a budget.
local active, tripped = false, nil
local used, instr_limit, deadline, ticks = 0, 0, 0, 0
local deadline_name = "time"

local function hook()
  if not active then return end
  if tripped then r_error(tripped, 0) end
  used = used + TICK
  if used > instr_limit then
    tripped = "instruction budget exceeded (" .. instr_limit .. " instructions)"
    r_error(tripped, 0)
  end
  ticks = ticks + 1
  if ticks % 4 == 0 and clock() > deadline then
    tripped = deadline_name
    r_error(tripped, 0)
  end
end
sethook(hook, "", TICK)

local function check_tripped()
  if tripped then r_error(tripped, 0) end
end

local function is_memory_error(e)
  return e == "not enough memory"
end

local function note_failure(e)
  if is_memory_error(e) and not tripped then
    tripped = "memory limit exceeded (" .. limits.memory_mb .. " MiB)"
  end
end

local function safe_pcall(f, ...)
  local r = t_pack(r_pcall(f, ...))
  if not r[1] then note_failure(r[2]) end
  check_tripped()
  return t_unpack(r, 1, r.n)
end

-- xpcall's handler would run with hooks disabled when the error came from the hook; run it after
-- unwinding instead, under the budget, and never for a budget error.
local function safe_xpcall(f, handler, ...)
  if r_type(handler) ~= "function" then r_error("bad argument #2 to 'xpcall' (function expected)", 2) end
  local r = t_pack(r_pcall(f, ...))
  if r[1] then check_tripped(); return t_unpack(r, 1, r.n) end
  note_failure(r[2])
  check_tripped()
  return false, handler(r[2])
end

local function sandbox_error(msg, level)
  if level == nil then level = 1 end
  if r_type(level) == "number" and level > 0 then level = level + 1 end
  r_error(msg, level)
end

---------------------------------------------------------------------------------------------------
-- Coroutines: a new coroutine gets the budget hook (in 5.4 a hook is per thread).
local function co_new(f)
  if r_type(f) ~= "function" then r_error("bad argument #1 to 'create' (function expected)", 2) end
  local co = co_create(f)
  sethook(co, hook, "", TICK)
  return co
end

local function resume(co, ...)
  local r = t_pack(co_resume(co, ...))
  if not r[1] then note_failure(r[2]) end
  check_tripped()
  return t_unpack(r, 1, r.n)
end

local function co_wrap(f)
  local co = co_new(f)
  return function(...)
    local r = t_pack(co_resume(co, ...))
    if not r[1] then note_failure(r[2]); check_tripped(); r_error(r[2], 0) end
    check_tripped()
    return t_unpack(r, 2, r.n)
  end
end

local function close(co)
  local r = t_pack(co_close(co))
  check_tripped()
  return t_unpack(r, 1, r.n)
end

---------------------------------------------------------------------------------------------------
-- Metatables: no __gc (finalizers run outside any budget, at some later allocation).
local function safe_setmetatable(t, mt)
  if r_type(t) ~= "table" then r_error("bad argument #1 to 'setmetatable' (table expected)", 2) end
  if mt ~= nil then
    if r_type(mt) ~= "table" then r_error("bad argument #2 to 'setmetatable' (nil or table expected)", 2) end
    if r_rawget(mt, "__gc") ~= nil then r_error("__gc metamethods are not allowed in plugins", 2) end
  end
  return r_setmetatable(t, mt)
end

---------------------------------------------------------------------------------------------------
-- C functions the hook cannot see: bound them.
local function check_size(n, what)
  if n > MAX_STRING then r_error(what .. ": resulting string too large", 3) end
end

local function safe_rep(s, n, sep)
  s = r_tostring(s)
  n = r_tonumber(n)
  if n == nil then r_error("bad argument #2 to 'rep' (number expected)", 2) end
  if n <= 0 then return "" end
  local total = s_len(s) * n + (sep and s_len(r_tostring(sep)) * (n - 1) or 0)
  check_size(total, "string.rep")
  if n > MAX_STRING then r_error("string.rep: count too large", 2) end
  return s_rep(s, n, sep)
end

local function safe_move(a1, f, e, t, a2)
  if a2 == nil then a2 = a1 end
  if e >= f then
    if f > 0 or e < f + (1 << 62) then
      if t > e or t <= f or a1 ~= a2 then
        for i = 0, e - f do a2[t + i] = a1[f + i] end
      else
        for i = e - f, 0, -1 do a2[t + i] = a1[f + i] end
      end
    end
  end
  return a2
end

-- Pattern matching. The C matcher backtracks invisibly to the hook; its work grows roughly like
-- (subject length) ^ (1 + number of backtracking items). Under the cost threshold the C functions
-- run; above it, a pure-Lua port of the same matcher runs, counted by the hook like any plugin code.
local lua_patterns = nil
if patterns_src then
  local penv = {string = {byte = s_byte, char = s_char, sub = s_sub, len = s_len, format = s_format, rep = s_rep,
                           lower = s_lower, upper = s_upper},
                table = {insert = t_insert, concat = t_concat, unpack = t_unpack, pack = t_pack},
                type = r_type, tostring = r_tostring, tonumber = r_tonumber, error = r_error, select = r_select,
                math = {tointeger = math.tointeger, type = m_type, huge = m_huge, floor = m_floor, max = math.max, min = math.min}}
  lua_patterns = r_assert(r_load(patterns_src, "=patterns", "t", penv))()
end

local function pattern_items(p)
  local k = 0
  for i = 1, s_len(p) do
    local c = s_byte(p, i)
    if c == 42 or c == 43 or c == 45 then k = k + 1 end -- * + -
  end
  -- %b and back-references also rescan the subject
  for i = 1, s_len(p) - 1 do
    if s_byte(p, i) == 37 then
      local c = s_byte(p, i + 1)
      if c == 98 or (c >= 49 and c <= 57) then k = k + 1 end
    end
  end
  return k
end

local function too_costly(s, p)
  local n = s_len(s) + 1
  local k = pattern_items(p)
  local cost = n
  for _ = 1, k do
    cost = cost * n
    if cost > PATTERN_COST then return true end
  end
  return cost > PATTERN_COST
end

local function pattern_fn(native, name)
  return function(s, p, ...)
    if r_type(s) == "number" then s = r_tostring(s) end
    if r_type(p) == "number" then p = r_tostring(p) end
    if r_type(s) ~= "string" or r_type(p) ~= "string" then return native(s, p, ...) end
    if name == "find" and r_select("#", ...) >= 2 and (r_select(2, ...)) then
      if (s_len(s) + 1) * (s_len(p) + 1) <= PATTERN_COST or not lua_patterns then return native(s, p, ...) end
      return lua_patterns.find(s, p, ...)
    end
    if not too_costly(s, p) then return native(s, p, ...) end
    if not lua_patterns then
      r_error("string." .. name .. ": pattern too complex for a subject of this length", 2)
    end
    return lua_patterns[name](s, p, ...)
  end
end

local function safe_gsub(s, p, repl, n)
  if r_type(s) == "string" and r_type(repl) == "string" then
    -- the result may grow by #repl per match: bound it before the C loop builds it
    check_size(s_len(s) * (s_len(repl) + 1), "string.gsub")
  end
  return pattern_fn(s_gsub, "gsub")(s, p, repl, n)
end

local safe_string = {
  byte = s_byte, char = s_char, format = s_format, len = s_len, lower = s_lower, upper = s_upper,
  reverse = s_reverse, sub = s_sub, rep = safe_rep,
  find = pattern_fn(s_find, "find"), match = pattern_fn(s_match, "match"),
  gmatch = pattern_fn(s_gmatch, "gmatch"), gsub = safe_gsub,
}

-- Lock the shared string metatable: method calls on strings reach a private copy of the safe
-- functions, and getmetatable("") returns a string instead of the metatable.
do
  local smt = r_getmetatable("")
  local private = {}
  for k, v in r_next, safe_string do private[k] = v end
  smt.__index = private
  smt.__metatable = "string"
end

local function copy(t)
  local c = {}
  for k, v in r_next, t do c[k] = v end
  return c
end

local safe_table = {
  concat = t_concat, insert = t_insert, pack = t_pack, remove = table.remove, sort = t_sort,
  unpack = t_unpack, move = safe_move,
}

local function safe_date(fmt, t)
  if fmt ~= nil and r_type(fmt) ~= "string" then r_error("bad argument #1 to 'date' (string expected)", 2) end
  return os_date(fmt, t)
end

---------------------------------------------------------------------------------------------------
-- Frozen modules: reads pass through, writes raise, getmetatable returns a string.
local FROZEN_MSG = "cannot modify frozen module"
local function freeze(name, t)
  local proxy = {}
  r_setmetatable(proxy, {
    __index = t,
    __newindex = function() r_error(FROZEN_MSG .. " '" .. name .. "'", 2) end,
    __pairs = function() return r_next, t, nil end,
    __len = function() return 0 end,
    __metatable = "frozen module " .. name,
  })
  return proxy
end

---------------------------------------------------------------------------------------------------
-- Host functions: Python callables live only as upvalues of these Lua closures. Each returns
-- ok, ... ; a false ok carries a plain error string, raised here as a Lua error at the caller.
local function bind(pyfn, level)
  level = level or 2
  return function(...)
    local r = t_pack(pyfn(...))
    if not r[1] then r_error(r[2], level) end
    return t_unpack(r, 2, r.n)
  end
end

-- What the sandbox knows about the current call: "module" while init.lua's main chunk runs.
local phase = "idle"
local plugin_name = "?"
local env = nil
local snapshot = nil
local registry = {routes = {}, middleware = {}, hooks = {}}
local modules_loaded = {}
local loading = {}

local function new_env(name, lib_reader, log_print)
  plugin_name = name
  local e = {
    assert = r_assert, error = sandbox_error, ipairs = r_ipairs, next = r_next, pairs = r_pairs,
    pcall = safe_pcall, xpcall = safe_xpcall, select = r_select, tonumber = r_tonumber,
    tostring = r_tostring, type = r_type, getmetatable = r_getmetatable, setmetatable = safe_setmetatable,
    _VERSION = _VERSION,
    string = copy(safe_string), table = copy(safe_table), math = copy(math), utf8 = copy(utf8),
    coroutine = {create = co_new, resume = resume, wrap = co_wrap, status = co_status, running = co_running,
                 yield = co_yield, isyieldable = co_isyieldable, close = close},
    os = {time = os_time, clock = os_clock, date = safe_date},
  }
  e._G = e
  e.print = function(...)
    local n = r_select("#", ...)
    local parts = {}
    for i = 1, n do parts[i] = r_tostring((r_select(i, ...))) end
    log_print(t_concat(parts, "\t"))
  end
  e.require = function(mod)
    if r_type(mod) ~= "string" then r_error("require: module name must be a string", 2) end
    if s_find(mod, "..", 1, true) or s_find(mod, "/", 1, true) or s_find(mod, "\\", 1, true)
       or s_find(mod, "\0", 1, true) or mod == "" or s_len(mod) > 64 then
      r_error("require: invalid module name '" .. mod .. "'", 2)
    end
    local cached = modules_loaded[mod]
    if cached ~= nil then return cached end
    if loading[mod] then r_error("require: circular require of '" .. mod .. "'", 2) end
    local src = lib_reader(mod)
    local chunk, err = r_load(src, "=lib/" .. mod .. ".lua", "t", e)
    if not chunk then r_error("require: " .. err, 2) end
    loading[mod] = true
    local ok, result = r_pcall(chunk, mod)
    loading[mod] = nil
    if not ok then r_error(result, 0) end
    if result == nil then result = true end
    modules_loaded[mod] = result
    return result
  end
  env = e
  return e
end

local function install_module(name, t)
  env[name] = freeze(name, t)
end

local function remove_module(name)
  env[name] = nil
end

local function load_main(src, chunkname)
  local chunk, err = r_load(src, chunkname, "t", env)
  if not chunk then return nil, err end
  return chunk
end

---------------------------------------------------------------------------------------------------
-- Entry points. run() arms the budget, calls, disarms, and reports: true, results... or
-- false, kind, message with kind one of "error", "budget", "memory".
local function error_text(e)
  local t = r_type(e)
  if t == "string" then return e end
  if t == "number" then return r_tostring(e) end
  return "(error object is a " .. t .. " value)"
end

local function arm(max_instr, seconds, name)
  tripped = nil
  used, ticks = 0, 0
  instr_limit = max_instr
  deadline = clock() + seconds
  deadline_name = name or ("time budget exceeded (" .. seconds .. " s)")
  phase = "idle"
  active = true
end

local function finish(r)
  active = false
  if tripped then
    local msg = tripped
    local kind = "budget"
    if s_find(msg, "^memory") then kind = "memory" elseif s_find(msg, "^time budget") then kind = "timeout" end
    return false, kind, msg
  end
  if not r[1] then
    local msg = error_text(r[2])
    if is_memory_error(r[2]) then return false, "memory", "memory limit exceeded (" .. limits.memory_mb .. " MiB)" end
    return false, "error", msg
  end
  return t_unpack(r, 1, r.n)
end

local function run(max_instr, seconds, deadline_msg, p, f, ...)
  arm(max_instr, seconds, deadline_msg)
  phase = p
  local r = t_pack(r_pcall(f, ...))
  phase = "idle"
  return finish(r)
end

local function call_global(max_instr, seconds, deadline_msg, name, ...)
  local f = env[name]
  if f == nil then return true, false end
  if r_type(f) ~= "function" then return false, "error", name .. " must be a function" end
  local r = t_pack(run(max_instr, seconds, deadline_msg, "init", f, ...))
  if not r[1] then return t_unpack(r, 1, r.n) end
  return true, true
end

local function is_response(v)
  return r_type(v) == "table"
end

local function run_route(max_instr, seconds, deadline_msg, index, req)
  local route = registry.routes[index]
  return run(max_instr, seconds, deadline_msg, "handler", function()
    local mws = registry.middleware
    for i = 1, #mws do
      local res = mws[i](req)
      if is_response(res) then return res end
    end
    return route.fn(req)
  end)
end

local function run_hook(max_instr, seconds, deadline_msg, index, data)
  local h = registry.hooks[index]
  return run(max_instr, seconds, deadline_msg, "hook", h.fn, data)
end

local function take_snapshot()
  snapshot = {}
  for k, v in r_next, env do snapshot[k] = v end
end

local function restore_snapshot()
  if not snapshot then return end
  for k in r_next, env do
    if snapshot[k] == nil then env[k] = nil end
  end
  for k, v in r_next, snapshot do
    if not r_rawequal(env[k], v) then env[k] = v end
  end
end

local function get_global(name)
  return r_rawget(env, name)
end

local function get_phase()
  return phase
end

local function get_memory_note()
  return tripped
end

---------------------------------------------------------------------------------------------------
-- The API modules. Registration functions record into the trusted registry; everything that
-- touches the site (db, log, json) is a bound host function. Python validates arguments.
local function module_scope_only(what)
  if phase ~= "module" then r_error(what .. " may be called only at module scope", 3) end
end

local function build_api(py)
  local validate_route, validate_hook = bind(py.validate_route, 3), bind(py.validate_hook, 3)

  local http = {}
  http.handle = function(method, path, fn, opts)
    module_scope_only("http.handle")
    if r_type(fn) ~= "function" then r_error("http.handle: handler must be a function", 2) end
    if opts ~= nil and r_type(opts) ~= "table" then r_error("http.handle: options must be a table", 2) end
    local public = opts ~= nil and r_rawget(opts, "public") == true
    local m, p = validate_route(method, path, #registry.routes)
    registry.routes[#registry.routes + 1] = {method = m, path = p, public = public, fn = fn}
  end
  http.use = function(fn)
    module_scope_only("http.use")
    if r_type(fn) ~= "function" then r_error("http.use: middleware must be a function", 2) end
    registry.middleware[#registry.middleware + 1] = fn
  end

  local hooks = {}
  hooks.on = function(event, tbl, fn, opts)
    module_scope_only("hooks.on")
    if r_type(fn) ~= "function" then r_error("hooks.on: handler must be a function", 2) end
    if opts ~= nil and r_type(opts) ~= "table" then r_error("hooks.on: options must be a table", 2) end
    local priority = 100
    if opts ~= nil and r_rawget(opts, "priority") ~= nil then priority = r_rawget(opts, "priority") end
    local e, t, pr = validate_hook(event, tbl, priority, #registry.hooks)
    registry.hooks[#registry.hooks + 1] = {event = e, table = t, priority = pr, fn = fn}
  end

  local log = {}
  local py_log = bind(py.log)
  for _, level in r_ipairs({"debug", "info", "warn", "error"}) do
    log[level] = function(msg, ctx)
      if ctx ~= nil and r_type(ctx) ~= "table" then r_error("log." .. level .. ": context must be a table", 2) end
      py_log(level, r_tostring(msg), ctx)
    end
  end

  local json = {encode = bind(py.json_encode), decode = bind(py.json_decode)}

  local db = {}
  for name, f in r_next, py.db do db[name] = bind(f) end
  local begin, commit, rollback = bind(py.tx_begin), bind(py.tx_commit), bind(py.tx_rollback)
  db.transaction = function(fn)
    if r_type(fn) ~= "function" then r_error("db.transaction: argument must be a function", 2) end
    begin()
    local r = t_pack(r_pcall(fn))
    if r[1] and not tripped then
      commit()
      return true
    end
    rollback()
    note_failure(r[2])
    check_tripped()
    return false, error_text(r[2])
  end

  install_module("http", http)
  install_module("hooks", hooks)
  install_module("log", log)
  install_module("json", json)
  install_module("db", db)
end

-- Strip the real global table: nothing from it is reachable by plugins anyway, but a removed
-- function should not even exist in the runtime.
for _, k in r_ipairs({"debug", "io", "os", "package", "require", "dofile", "loadfile", "load", "loadstring",
                      "collectgarbage", "print", "python", "rawget", "rawset", "rawequal", "rawlen"}) do
  _G[k] = nil
end
string.dump = nil

return {
  build_api = build_api, bind = bind, freeze = freeze, new_env = new_env, install_module = install_module,
  remove_module = remove_module, load_main = load_main, run = run, call_global = call_global,
  run_route = run_route, run_hook = run_hook, take_snapshot = take_snapshot,
  restore_snapshot = restore_snapshot, get_global = get_global, get_phase = get_phase,
  registry = registry, tripped = get_memory_note,
  register_route = function(r) registry.routes[#registry.routes + 1] = r; return #registry.routes end,
  register_middleware = function(f) registry.middleware[#registry.middleware + 1] = f end,
  register_hook = function(h) registry.hooks[#registry.hooks + 1] = h; return #registry.hooks end,
}
