-- Trusted bootstrap: the first and only code run with the full standard library in a fresh runtime.
-- It captures what the sandbox needs into locals, builds the budget hook, locks the string metatable,
-- strips the global table, and returns the trusted entry points Python calls. Plugin code never sees
-- this chunk's locals: it runs in an environment table built by new_env() from an allow-list.
local host, limits, patterns_src = ...

local sethook = debug.sethook
-- raw metatable access that sees through __metatable, and frame inspection for the budget hook:
-- trusted code only, never handed to plugins
local d_getmetatable, d_setmetatable, d_getinfo = debug.getmetatable, debug.setmetatable, debug.getinfo
local d_getregistry = debug.getregistry
-- where the C bridge (sandbox.py) leaves its functions: route_entry, and its versions of two below
local registry_table = d_getregistry()
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
local m_floor, m_huge, m_type, m_tointeger = math.floor, math.huge, math.type, math.tointeger
local clock = host.clock
-- The runtime's memory limit is on only while plugin code runs: lupa's own allocations (converting
-- values for host calls) happen outside any protected call, where a refused allocation would abort
-- the process or deadlock it. Host calls switch it off and on again; Python switches it off when a
-- call returns.
local mem_on, mem_off = host.mem_on, host.mem_off

local TICK = 1000
local MAX_STRING = limits.max_string
local PATTERN_COST = limits.pattern_cost
local ERROR_MAX = limits.error_max
-- C work above this many units (bytes, elements, pattern steps) is followed by a wall-clock check:
-- the count hook cannot see time spent inside C functions or host calls.
local HEAVY = 50000
-- instructions charged per element a table function walks through metamethods (C metamethods such as
-- __index = tostring run invisibly to the hook)
local META_STEP = 8

---------------------------------------------------------------------------------------------------
-- Budgets. One state per runtime (a VM serves one call at a time). The trip is sticky: once
-- tripped, every hook tick, pcall, xpcall and coroutine.resume raises the same error again, so a
-- plugin cannot catch its way out of a budget.
local active, tripped = false, nil
local used, instr_limit, deadline = 0, 0, 0
local deadline_name = "time"
-- Trusted functions that must not be interrupted by a budget error (the code around the protected
-- call in run(), db.transaction's rollback, host-call wrappers): the hook records the trip and lets
-- them finish; the next tick in plugin code raises it.
local trusted_fn = {}
-- Threads whose hook was set to fire on the next instruction by the GC sentinel (below).
local fast = r_setmetatable({}, {__mode = "k"})
local any_fast = false

local function raise_trip()
  local info = d_getinfo(3, "f") -- 0 getinfo, 1 raise_trip, 2 hook, 3 the interrupted function
  if info and trusted_fn[info.func] then return end
  r_error(tripped, 0)
end

-- The C bridge's watchdog (_luabridge.c: watch; the sandbox installs it right after this chunk ran,
-- use_watch below picks it up): it fires the hook of a call past its deadline even when instructions
-- are milliseconds apart, and of a call that has held the GIL too long. Without the bridge these stay
-- nil and the count hook alone keeps the deadlines.
local c_watch_arm, c_watch_disarm, c_watch_push, c_watch_pop, c_drop_gil = nil, nil, nil, nil, nil
-- coroutines resumed during the current call: the watchdog holds their addresses, so they are kept
-- alive until the call ends
local call_threads, threads_used = {}, false
-- A route call through the bridge's entry starts holding the GIL (handing it back costs more than a
-- short handler). At its first hook after gil_release_at (2 ms in; the watchdog fires the hook of a
-- call that holds it for 5 ms), or before C work of HEAVY units, it lets the GIL go for the rest of
-- the call, so the host's other threads (the GUI, other requests) never wait behind a plugin.
local gil_held, gil_release_at = false, 0

local function release_gil()
  gil_held = false
  c_drop_gil()
end

local hook
hook = function()
  if not active then return end
  if tripped then raise_trip() return end
  if any_fast then
    local th = co_running()
    if fast[th] then
      fast[th] = nil
      any_fast = r_next(fast) ~= nil
      sethook(th, hook, "", TICK)
    end
  end
  used = used + TICK
  if used > instr_limit then
    tripped = "instruction budget exceeded (" .. instr_limit .. " instructions)"
    raise_trip() -- not a tail call: raise_trip inspects the stack level below the hook
    return
  end
  -- the clock every tick (about 0.4 us per 1000 instructions): a single instruction can take
  -- milliseconds (comparing or concatenating megabyte strings)
  local now = clock()
  if now > deadline then
    tripped = deadline_name
    raise_trip() -- not a tail call: raise_trip inspects the stack level below the hook
    return
  end
  if gil_held and now > gil_release_at then release_gil() end
end
sethook(hook, "", TICK)

-- GC sentinel: a trusted finalizer that runs once per (non-emergency) garbage-collection cycle. Work
-- that allocates a lot per instruction (`s .. x` on megabyte strings) runs few instructions between
-- hook ticks; each GC cycle makes the running thread's hook fire at its next instruction, which then
-- checks the wall clock. (Plugins cannot install __gc; this one only sets flags and re-arms itself.)
local sentinel_alive = false
local function new_sentinel() end
do
  local gc_mt = {}
  gc_mt.__gc = function()
    sentinel_alive = false
    if active and not tripped then
      local th = co_running()
      fast[th] = true
      any_fast = true
      sethook(th, hook, "", 1)
    end
    new_sentinel()
  end
  new_sentinel = function()
    r_setmetatable({}, gc_mt)
    sentinel_alive = true
  end
  new_sentinel()
end

-- C work the hook cannot see: charge it to the instruction budget and check the clock when large.
local function check_deadline()
  if active and not tripped and clock() > deadline then
    tripped = deadline_name
  end
  if active and tripped then r_error(tripped, 0) end
end

local function heavy(units)
  if units >= HEAVY then
    if gil_held then release_gil() end
    check_deadline()
  end
end

local function charge(units)
  if not active then return end
  used = used + units
  if used > instr_limit and not tripped then
    tripped = "instruction budget exceeded (" .. instr_limit .. " instructions)"
  end
  if tripped then r_error(tripped, 0) end
  heavy(units)
end

local function check_tripped()
  if tripped then r_error(tripped, 0) end
end

-- Lua 5.4's memory error. Its text alone does not tell a refused allocation: lua_error raises any
-- error object equal to it as a memory error (LUA_ERRMEM), so a plugin's error("not enough memory", 0)
-- looks the same as the allocator's. The plugin can raise it only through error and assert (below),
-- which count what they raise; an error with this text that no plugin raised came from the allocator.
local MEMERR = "not enough memory"
local own_memerr = 0 -- raised by the plugin in this call and not caught yet

local function is_memory_error(e)
  if e ~= MEMERR then return false end
  if own_memerr > 0 then
    own_memerr = own_memerr - 1 -- caught: the plugin's own
    return false
  end
  return true
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
  if msg == MEMERR then
    local lv = r_tonumber(level)
    lv = lv and m_tointeger(lv)
    if lv then
      -- the position error() would add (luaL_where); without one the text is MEMERR itself: counted
      local info = lv > 0 and d_getinfo(lv, "Sl")
      if info and info.currentline > 0 then r_error(info.short_src .. ":" .. info.currentline .. ": " .. msg, 0) end
      own_memerr = own_memerr + 1
      r_error(msg, 0)
    end
  end
  r_error(msg, level)
end

-- assert as Lua 5.4's: the message (or "assertion failed!") raised as error() raises it, so a MEMERR is
-- counted there
local function sandbox_assert(...)
  if (...) then return ... end
  local n = r_select("#", ...)
  if n == 0 then r_error("bad argument #1 to 'assert' (value expected)", 2) end
  if n == 1 then return sandbox_error("assertion failed!", 1) end
  return sandbox_error((r_select(2, ...)), 1)
end

-- An error that was noted (note_failure) and is raised again: a plugin's own MEMERR stays its own.
local function rethrow(e)
  if e == MEMERR and not tripped then own_memerr = own_memerr + 1 end
  r_error(e, 0)
end

---------------------------------------------------------------------------------------------------
-- Coroutines: a new coroutine gets the budget hook (in 5.4 a hook is per thread).
local function co_new(f)
  if r_type(f) ~= "function" then r_error("bad argument #1 to 'create' (function expected)", 2) end
  local co = co_create(f)
  sethook(co, hook, "", TICK)
  return co
end

-- co_resume (or co_close, which runs the coroutine's pending __close handlers in it) with co on the
-- watchdog's stack of running threads; its results packed
local function watched(run_co, co, ...)
  if not c_watch_push or r_type(co) ~= "thread" then return t_pack(run_co(co, ...)) end
  if not call_threads[co] then call_threads[co], threads_used = true, true end
  local depth = c_watch_push(co)
  local r = t_pack(run_co(co, ...))
  c_watch_pop(depth - 1)
  return r
end

local function resume(co, ...)
  local r = watched(co_resume, co, ...)
  if not r[1] then note_failure(r[2]) end
  check_tripped()
  return t_unpack(r, 1, r.n)
end

local function co_wrap(f)
  local co = co_new(f)
  return function(...)
    local r = watched(co_resume, co, ...)
    if not r[1] then note_failure(r[2]); check_tripped(); rethrow(r[2]) end
    check_tripped()
    return t_unpack(r, 2, r.n)
  end
end

-- No lock outlives a call: the thread running db.transaction's function may not yield, since a
-- suspended transaction would keep the site's write lock for as long as the coroutine lives.
local tx_thread = nil

local function safe_yield(...)
  if tx_thread ~= nil and co_running() == tx_thread then
    r_error("cannot yield inside db.transaction (a transaction cannot be suspended)", 2)
  end
  return co_yield(...)
end

local function safe_isyieldable()
  if tx_thread ~= nil and co_running() == tx_thread then return false end
  return co_isyieldable()
end

local function close(co)
  local r = watched(co_close, co)
  if not r[1] then note_failure(r[2]) end
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
  charge(n + total) -- before: a one-byte string is copied one byte at a time (80 ms for 8 MB)
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

-- Upper bound on the C matcher's work for subject s and pattern p. From each start position the
-- matcher walks the pattern (a [set] is rescanned per character), and every backtracking item
-- multiplies the paths: `*`, `+`, `-`, %b and back-references by up to #s, `?` by 2. An anchored
-- find/match/gsub has one start position. A pattern without specials is a memchr/memcmp search.
local function pattern_cost(s, p, name, plain)
  local n, m = s_len(s) + 1, s_len(p) + 1
  local special = false
  if not plain then
    for i = 1, m - 1 do
      local c = s_byte(p, i)
      -- ^ $ * + ? . ( [ % -
      if c == 94 or c == 36 or c == 42 or c == 43 or c == 63 or c == 46 or c == 40 or c == 91
         or c == 37 or c == 45 then
        special = true
        break
      end
    end
  end
  if not special and (plain or name == "find") then
    return n * (m // 16 + 1)
  end
  local cost = m
  if name == "gmatch" or s_byte(p, 1) ~= 94 then cost = cost * n end
  local i = 1
  while i < m do
    if cost > PATTERN_COST then return cost end
    local c = s_byte(p, i)
    if c == 42 or c == 43 or c == 45 then
      cost = cost * n
    elseif c == 63 then
      cost = cost * 2
    elseif c == 37 and i + 1 < m then
      local d = s_byte(p, i + 1)
      if d == 98 or (d >= 49 and d <= 57) then cost = cost * n end
      i = i + 1
    end
    i = i + 1
  end
  return cost
end

local function pattern_fn(native, name)
  return function(s, p, ...)
    if r_type(s) == "number" then s = r_tostring(s) end
    if r_type(p) == "number" then p = r_tostring(p) end
    if r_type(s) ~= "string" or r_type(p) ~= "string" then return native(s, p, ...) end
    local plain = name == "find" and r_select("#", ...) >= 2 and (r_select(2, ...)) and true or false
    local cost = pattern_cost(s, p, name, plain)
    if cost > PATTERN_COST then
      if not lua_patterns then
        r_error("string." .. name .. ": pattern too complex for a subject of this length", 2)
      end
      return lua_patterns[name](s, p, ...)
    end
    if cost < HEAVY then return native(s, p, ...) end
    heavy(cost)
    -- a gmatch iterator's steps together do at most `cost` work; the next heavy call checks again
    if name == "gmatch" then return native(s, p, ...) end
    local r = t_pack(native(s, p, ...))
    check_deadline()
    return t_unpack(r, 1, r.n)
  end
end

local native_gsub = pattern_fn(s_gsub, "gsub")
local function safe_gsub(s, p, repl, n)
  if r_type(s) == "string" and r_type(repl) == "string" then
    -- the result may grow by #repl per match: bound it before the C loop builds it
    check_size(s_len(s) * (s_len(repl) + 1), "string.gsub")
  end
  return native_gsub(s, p, repl, n)
end

-- O(n) C work charged to the instruction budget: one instruction per byte or element a library
-- function touches. Charged before the call wherever the size is known then, so that a large one
-- also lets the GIL go first (heavy); after it otherwise, the work being bounded by the memory limit.
-- Strings up to SMALL bytes pass straight through (their work is below a microsecond).
local SMALL = 1024
local m_abs = math.abs

local function to_int(v)
  local n = r_tonumber(v)
  return n and m_tointeger(n)
end

local safe_string, safe_utf8, safe_tonumber, safe_tostring
do
  -- the number of bytes from i to j of a string of length len, as string.sub counts them
  local function span(len, i, j)
    i, j = to_int(i), to_int(j)
    if not i or not j then return 0 end -- the C function raises the argument error
    if i < 0 then i = len + i + 1 end
    if i < 1 then i = 1 end
    if j < 0 then j = len + j + 1 elseif j > len then j = len end
    return j >= i and j - i + 1 or 0
  end

  local function charged_range(native, default_j)
    return function(s, i, j, ...)
      if r_type(s) == "string" and s_len(s) > SMALL then
        local first = i == nil and 1 or i
        charge(span(s_len(s), first, j == nil and (default_j or first) or j))
      end
      return native(s, i, j, ...)
    end
  end

  local function charged_whole(native)
    return function(s, ...)
      if r_type(s) == "string" and s_len(s) > SMALL then charge(s_len(s)) end
      return native(s, ...)
    end
  end

  local function charged_args(native)
    return function(...)
      local n = r_select("#", ...)
      if n > SMALL then charge(n) end
      return native(...)
    end
  end

  -- string.format: the result's bytes, after (a %s of a long string is one copy)
  local function safe_format(...)
    local r = s_format(...)
    if s_len(r) > SMALL then charge(s_len(r)) end
    return r
  end

  safe_string = {
    byte = charged_range(s_byte), char = charged_args(s_char), format = safe_format, len = s_len,
    lower = charged_whole(s_lower), upper = charged_whole(s_upper), reverse = charged_whole(s_reverse),
    sub = charged_range(s_sub, -1), rep = safe_rep,
    find = pattern_fn(s_find, "find"), match = pattern_fn(s_match, "match"),
    gmatch = pattern_fn(s_gmatch, "gmatch"), gsub = safe_gsub,
  }

  local u_len, u_offset, u_codes = utf8.len, utf8.offset, utf8.codes

  -- utf8.offset scans from i until it has counted n characters (a run of continuation bytes is one
  -- step): charged for the bytes between i and where it stopped
  local function safe_offset(s, n, i)
    if r_type(s) ~= "string" or s_len(s) <= SMALL then return u_offset(s, n, i) end
    if gil_held and s_len(s) >= HEAVY then release_gil() end
    local r = u_offset(s, n, i)
    local len, k = s_len(s), to_int(n)
    local from = to_int(i) or ((k and k >= 0) and 1 or len + 1)
    if from < 0 then from = len + from + 1 end
    local to = r or ((k and k >= 0) and len or 1)
    charge(m_abs(to - from) + 1)
    return r
  end

  safe_utf8 = {
    char = charged_args(utf8.char), charpattern = utf8.charpattern, codepoint = charged_range(utf8.codepoint),
    len = charged_range(u_len, -1), offset = safe_offset,
    -- the iteration touches every byte (and one step skips a whole run of continuation bytes)
    codes = charged_whole(u_codes),
  }

  -- tonumber reads a string to its end; tostring copies a __name metafield into its result
  safe_tonumber = function(v, ...)
    if r_type(v) == "string" and s_len(v) > SMALL then charge(s_len(v)) end
    return r_tonumber(v, ...)
  end

  safe_tostring = function(v)
    local r = r_tostring(v)
    if r_type(v) ~= "string" and s_len(r) > SMALL then charge(s_len(r)) end
    return r
  end
end

-- Lock the shared string metatable: method calls on strings reach a private copy of the safe
-- functions, and getmetatable("") returns a string instead of the metatable.
do
  local smt = r_getmetatable("")
  local private = {}
  for k, v in r_next, safe_string do private[k] = v end
  smt.__index = private
  smt.__metatable = "string"
  -- arithmetic on strings ("10" + 1) converts them in C, reading each to its end: charged
  for _, event in r_ipairs({"__add", "__sub", "__mul", "__div", "__mod", "__pow", "__unm", "__idiv"}) do
    local native = smt[event]
    if native then
      smt[event] = function(a, b)
        local n = (r_type(a) == "string" and s_len(a) or 0) + (r_type(b) == "string" and s_len(b) or 0)
        if n > SMALL then charge(n) end
        return native(a, b)
      end
    end
  end
end

local function copy(t)
  local c = {}
  for k, v in r_next, t do c[k] = v end
  return c
end

-- The C table functions walk #t or i..j elements, through __index/__newindex/__len when the value
-- has a metatable; a C function as metamethod (__index = tostring, __newindex = assert) would make that
-- walk invisible to the hook, for up to 2^63 steps. Charge the walk before it starts: an instruction per
-- element of a plain table, META_STEP through metamethods.
local t_remove, m_log = table.remove, math.log

local function walk(t, count)
  if count == nil or count <= 0 then return end
  if r_type(t) ~= "table" or d_getmetatable(t) ~= nil then charge(count * META_STEP) else charge(count) end
end

local function safe_concat(t, sep, i, j)
  if r_type(t) == "table" then
    local first, last = 1, nil
    if i ~= nil then first = to_int(i) end
    if j ~= nil then last = to_int(j) else last = to_int(#t) end
    if first and last then walk(t, last + 0.0 - first + 1) end
  end
  local r = t_concat(t, sep, i, j)
  if s_len(r) > SMALL then charge(s_len(r)) end
  return r
end

local function safe_insert(t, ...)
  if r_select("#", ...) == 2 and r_type(t) == "table" then
    local pos, e = to_int((...)), to_int(#t)
    if pos and e then walk(t, e + 1.0 - pos) end
  end
  return t_insert(t, ...)
end

local function safe_remove(t, pos)
  if r_type(t) == "table" then
    local size = to_int(#t)
    local p = size
    if pos ~= nil then p = to_int(pos) end
    if size and p then walk(t, size + 0.0 - p) end
  end
  return t_remove(t, pos)
end

local function safe_sort(t, comp)
  local n = 0
  if r_type(t) == "table" then
    n = to_int(#t) or 0
    if n > 1 then walk(t, n * (m_log(n, 2) + 1)) end
  end
  if r_type(comp) == "function" and d_getinfo(comp, "S").what == "C" then
    -- a C comparator would run invisibly to the hook: call it from Lua
    local f = comp
    comp = function(a, b) return f(a, b) end
  end
  t_sort(t, comp)
end

local function safe_unpack(t, i, j)
  local ty = r_type(t)
  if ty == "table" or ty == "string" then
    local first, last = 1, nil
    if i ~= nil then first = to_int(i) end
    if j ~= nil then last = to_int(j) else last = to_int(#t) end
    -- more results than a Lua stack holds (1,000,000) are refused before any work
    if first and last and last + 0.0 - first < 1000000 then walk(t, last + 0.0 - first + 1) end
  end
  return t_unpack(t, i, j)
end

local safe_table = {
  concat = safe_concat, insert = safe_insert, pack = t_pack, remove = safe_remove, sort = safe_sort,
  unpack = safe_unpack, move = safe_move,
}
-- Lua 5.1 names that ModulaCMS plugins use (its runtime is 5.1): aliases, no new behaviour
safe_table.getn = function(t)
  if r_type(t) ~= "table" then r_error("bad argument #1 to 'getn' (table expected)", 2) end
  return #t
end
local safe_math = copy(math)
safe_math.pow = function(x, y)
  if r_type(x) ~= "number" or r_type(y) ~= "number" then r_error("bad argument to 'pow' (number expected)", 2) end
  return x ^ y
end

local function safe_date(fmt, t)
  if fmt ~= nil and r_type(fmt) ~= "string" then r_error("bad argument #1 to 'date' (string expected)", 2) end
  local r = os_date(fmt, t)
  if fmt then heavy(s_len(fmt) * 16) end
  return r
end

---------------------------------------------------------------------------------------------------
-- Frozen modules: reads pass through, writes raise, getmetatable returns a string.
local FROZEN_MSG = "cannot modify frozen module"
local function freeze(name, t)
  local proxy = {}
  r_setmetatable(proxy, {
    __index = t,
    __newindex = function() r_error(FROZEN_MSG .. " '" .. name .. "'", 2) end,
    -- iterate without handing out t itself (pairs' second result would be a writable module table)
    __pairs = function(p) return function(_, k) return r_next(t, k) end, p, nil end,
    __len = function() return 0 end,
    __metatable = "frozen module " .. name,
  })
  return proxy
end

---------------------------------------------------------------------------------------------------
-- Host functions: Python callables live only as upvalues of these Lua closures. Each returns
-- ok, ... ; a false ok carries a plain error string, raised here as a Lua error at the caller.
local function bind(pyfn, level, no_clock)
  level = level or 2
  -- The host side switches the memory limit off itself (no extra call back) and answers
  -- late, ok, ...: late is true when the call's deadline passed during the host work, which the
  -- hook cannot see. The limit goes back on here, after the results are in Lua.
  local f = function(...)
    local on = active
    local r = t_pack(r_pcall(pyfn, ...))
    if on then mem_on() end
    -- a host function never raises; if one did, its error object would be a Python object
    if not r[1] then r = {false, false, false, "internal error in host function", n = 4} end
    if active and not no_clock then
      -- late is true (the deadline passed) or a budget error of the host's (a value too large to copy)
      local late = r[2]
      if late and not tripped then tripped = r_type(late) == "string" and late or deadline_name end
      if tripped then r_error(tripped, 0) end
    end
    if not r[3] then
      local msg = r[4]
      if r_type(msg) ~= "string" then msg = "internal error in host function" end
      r_error(msg, level)
    end
    return t_unpack(r, 4, r.n)
  end
  trusted_fn[f] = true
  return f
end

-- What the sandbox knows about the current call: "module" while init.lua's main chunk runs.
local phase = "idle"
local plugin_name = "?"
local env = nil
local snapshot = nil
local registry = {routes = {}, middleware = {}, hooks = {}}
local modules_loaded = {}
local loading = {}

local function error_text(e)
  local t = r_type(e)
  if t == "string" then return e end
  if t == "number" then return r_tostring(e) end
  return "(error object is a " .. t .. " value)"
end

-- Library tables (string, table, ...) are proxies: what a plugin assigns lands in an overlay that the
-- give-back clears when it is not empty, so resetting a VM costs nothing for the libraries unless a
-- call changed them. What the main chunk or on_init adds (function string.trim ...) is merged into the
-- library by the snapshot and stays. Assigning nil cannot remove a library function.
local lib_overlays = {}
local overlay_list = {} -- the overlays alone, for the C check in restore_snapshot
local function library(name, base)
  local overlay = r_setmetatable({}, {__index = base})
  lib_overlays[#lib_overlays + 1] = {overlay, base}
  overlay_list[#overlay_list + 1] = overlay
  return r_setmetatable({}, {
    __index = overlay,
    __newindex = overlay,
    __pairs = function()
      local merged = {}
      for k, v in r_next, base do merged[k] = v end
      for k, v in r_next, overlay do merged[k] = v end
      return r_next, merged, nil
    end,
    __metatable = "library " .. name,
  })
end

local function new_env(name, lib_reader, log_print)
  plugin_name = name
  local e = {
    assert = sandbox_assert, error = sandbox_error, ipairs = r_ipairs, next = r_next, pairs = r_pairs,
    pcall = safe_pcall, xpcall = safe_xpcall, select = r_select, tonumber = safe_tonumber,
    tostring = safe_tostring, type = r_type, getmetatable = r_getmetatable, setmetatable = safe_setmetatable,
    _VERSION = _VERSION,
    string = library("string", copy(safe_string)), table = library("table", copy(safe_table)),
    math = library("math", copy(safe_math)), unpack = safe_unpack, utf8 = library("utf8", copy(safe_utf8)),
    coroutine = library("coroutine", {create = co_new, resume = resume, wrap = co_wrap, status = co_status,
                                      running = co_running, yield = safe_yield, isyieldable = safe_isyieldable,
                                      close = close}),
    os = library("os", {time = os_time, clock = os_clock, date = safe_date}),
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
    local found, src = r_pcall(lib_reader, mod)
    if not found then r_error(s_gsub(error_text(src), "^bootstrap:%d+: ", ""), 2) end
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

-- The plugin may give its global table a metatable: trusted code touches env only raw, since a
-- metamethod run from here would run outside any budget.
local function install_module(name, t)
  r_rawset(env, name, freeze(name, t))
end

local function remove_module(name)
  r_rawset(env, name, nil)
end

local function load_main(src, chunkname)
  local chunk, err = r_load(src, chunkname, "t", env)
  if not chunk then return nil, err end
  return chunk
end

---------------------------------------------------------------------------------------------------
-- Entry points. run() arms the budget, calls, disarms, and reports: true, results... or
-- false, kind, message with kind one of "error", "budget", "memory".
-- deadline_at is absolute (the host's monotonic clock): computing it here would call back into the
-- host, which costs a GIL round trip on every request.
local function arm(max_instr, deadline_at, name)
  -- a finalizer that failed (out of memory) could not re-create the sentinel
  if not sentinel_alive then new_sentinel() end
  tripped = nil
  own_memerr = 0
  tx_thread = nil
  used = 0
  instr_limit = max_instr
  deadline = deadline_at
  deadline_name = name or "time budget exceeded"
  -- the count hook is on only while plugin code may run: a hooked interpreter runs every instruction
  -- on its slow path, and the trusted work between calls (snapshot restore) need not pay for that
  if c_watch_arm then
    local release_at = c_watch_arm(deadline_at)
    gil_held, gil_release_at = release_at ~= false, release_at or 0
  end
  sethook(hook, "", TICK)
  phase = "idle"
  active = true
  -- the host switched the memory limit on just before this call (it checked there is room for
  -- the arguments lupa pushes outside any protected call)
end

-- After the protected call (ok, err: what pcall gave): false, kind, message when it failed or a budget
-- tripped; nothing when it went well.
local function failure(ok, err)
  if tripped then
    local kind = "budget"
    if s_find(tripped, "^memory") then kind = "memory" elseif s_find(tripped, "^time budget") then kind = "timeout" end
    return false, kind, tripped
  end
  if not ok then
    if is_memory_error(err) then return false, "memory", "memory limit exceeded (" .. limits.memory_mb .. " MiB)" end
    -- at most error_max + 1 bytes leave the VM (the host cuts and marks it): an error() may carry 16 MiB
    local text = error_text(err)
    if #text > ERROR_MAX then text = s_sub(text, 1, ERROR_MAX + 1) end
    return false, "error", text
  end
end

-- The end of an armed call, after the hook went off: the watchdog lets go of its threads.
local function unwatch()
  gil_held = false
  if c_watch_disarm and c_watch_disarm() then sethook() end -- a late poke may have set it again
  if threads_used then call_threads, threads_used = {}, false end
end

local function finish(r)
  active = false
  sethook()
  unwatch()
  if tripped or not r[1] then return failure(r[1], r[2]) end
  return t_unpack(r, 1, r.n)
end

local function run(max_instr, deadline_at, deadline_msg, p, f, ...)
  arm(max_instr, deadline_at, deadline_msg)
  phase = p
  local r = t_pack(r_pcall(f, ...))
  phase = "idle"
  return finish(r)
end

local function call_global(max_instr, deadline_at, deadline_msg, name, ...)
  local f = r_rawget(env, name)
  if f == nil then return true, false end
  if r_type(f) ~= "function" then return false, "error", name .. " must be a function" end
  local r = t_pack(run(max_instr, deadline_at, deadline_msg, "init", f, ...))
  if not r[1] then return t_unpack(r, 1, r.n) end
  return true, true
end

local function is_response(v)
  return r_type(v) == "table"
end

-- Answers true, status, has_json, json, body, headers (fields read raw: no plugin metamethod runs
-- outside the budget), so the host reads the response without walking the table.
local function route_body(route, req)
  local mws = registry.middleware
  local res
  for i = 1, #mws do
    res = mws[i](req)
    if is_response(res) then break end
    res = nil
  end
  if res == nil then res = route.fn(req) end
  if res == nil then return 200, false, nil, "", nil end
  if r_type(res) ~= "table" then r_error("handler must return a table (or nothing)", 0) end
  local status = r_rawget(res, "status")
  if status == nil then status = 200 end
  local json = r_rawget(res, "json")
  local body = r_rawget(res, "body")
  if body == nil then body = "" end
  return status, json ~= nil, json, body, r_rawget(res, "headers")
end

local restore_snapshot, restore_globals

-- Route calls through the C bridge (_luabridge.c, Sandbox.call_route) keep Python's GIL: lupa releases
-- it around every call into Lua, and on a busy server getting it back costs more than a short handler
-- (other threads hold it by then). A long one lets it go (release_gil). Without the bridge, or with
-- arguments the bridge does not take, the host puts the arguments into route_inbox[1] and calls
-- route_caller through lupa, which releases the GIL for the whole call.
-- Either returns the packed answer (below) or "", and then the host reads route_results (true,
-- status, has_json, json, body, headers; or false, kind, message; nils left out).
local route_inbox, route_results = {}, {}

-- The common answer goes back packed into the string route_entry returns, so the host has no table to walk
-- and no value to convert: "J" or "B", the status (200-599), then the JSON text or the body, in ASCII
-- only (lupa decodes what str() returns as UTF-8 when it can, else as latin-1). JSON is
-- encoded here only where the encoding is unambiguous: tables with string keys or a sequence 1..n,
-- integers, booleans, and printable-ASCII strings with no quote or backslash. Anything else (a
-- float, other text, headers, a large answer) goes through route_results and the host, which
-- encodes it to the same bytes (tests/test_packed_responses.py compares the two).
-- the packer keeps its state in a block of its own (the chunk is near Lua's 200 locals)
local pack_response
do
local PACK_MAX_BYTES, PACK_MAX_ITEMS, PACK_MAX_DEPTH = 65536, 512, 16
local UNSAFE_TEXT = "[%c\"\\\128-\255]"
-- the pieces of the answer being packed, reused (entries past pack_n are stale and never read)
local pack_parts, pack_n, pack_items, pack_bytes = {}, 0, 0, 0

-- false when v is outside what is encoded here (trusted code run outside the budgets: bounded by the
-- PACK_MAX limits, raw access only, no plugin function or metamethod runs)
local pack_json
pack_json = function(v, depth)
  local tv, parts, n = r_type(v), pack_parts, pack_n
  if tv == "string" then
    if #v > PACK_MAX_BYTES or s_find(v, UNSAFE_TEXT) then return false end
    parts[n + 1], parts[n + 2], parts[n + 3] = '"', v, '"'
    pack_n, pack_bytes = n + 3, pack_bytes + #v + 2
  elseif tv == "number" then
    if m_type(v) ~= "integer" then return false end
    local text = s_format("%d", v)
    pack_n, pack_bytes = n + 1, pack_bytes + #text
    parts[n + 1] = text
  elseif tv == "boolean" then
    pack_n, pack_bytes = n + 1, pack_bytes + 5
    parts[n + 1] = v and "true" or "false"
  elseif tv == "table" then
    if depth >= PACK_MAX_DEPTH then return false end
    local k = r_next(v)
    if k == nil then
      pack_n, pack_bytes = n + 1, pack_bytes + 2
      -- as the host encodes it: {} (ModulaCMS), [] for a table json.array marked
      local marks = registry_table["modula.json_arrays"]
      parts[n + 1] = (marks and marks[v]) and "[]" or "{}"
    elseif r_type(k) == "string" then
      -- an object, written in the order next() gives (the host's conversion reads it in that order)
      local sep = '{"'
      for key, x in r_next, v do
        pack_items = pack_items + 1
        if pack_items > PACK_MAX_ITEMS or r_type(key) ~= "string" or s_find(key, UNSAFE_TEXT) then return false end
        n = pack_n
        parts[n + 1], parts[n + 2], parts[n + 3] = sep, key, '":'
        pack_n, pack_bytes = n + 3, pack_bytes + #key + 4
        if not pack_json(x, depth + 1) then return false end
        sep = ',"'
      end
      pack_n = pack_n + 1
      parts[pack_n] = "}"
    else
      -- a list only if its keys are exactly 1..count
      local count, top = 0, 0
      for key in r_next, v do
        count = count + 1
        pack_items = pack_items + 1
        if pack_items > PACK_MAX_ITEMS or m_type(key) ~= "integer" or key < 1 then return false end
        if key > top then top = key end
      end
      if top ~= count then return false end
      pack_n = n + 1
      parts[pack_n] = "["
      for i = 1, count do
        if i > 1 then
          pack_n = pack_n + 1
          parts[pack_n] = ","
        end
        if not pack_json(r_rawget(v, i), depth + 1) then return false end
      end
      pack_n = pack_n + 1
      parts[pack_n] = "]"
      pack_bytes = pack_bytes + 2 * count
    end
  else
    return false
  end
  return pack_bytes <= PACK_MAX_BYTES
end

-- the packed answer, or nil when the host must read route_results
function pack_response(status, has_json, json, body)
  if m_type(status) ~= "integer" or status < 200 or status > 599 then return nil end
  if not has_json then
    if r_type(body) ~= "string" or #body > PACK_MAX_BYTES or s_find(body, "[\128-\255]") then return nil end
    return "B" .. status .. body
  end
  pack_n, pack_items, pack_bytes = 1, 0, 0
  pack_parts[1] = "J" .. status
  if not pack_json(json, 0) then return nil end
  return t_concat(pack_parts, "", 1, pack_n)
end
end

-- The bridge's C versions of three functions here (_luabridge.c registers them when the sandbox makes
-- its entry, after this chunk ran): looked up together on first use; false when there is no bridge.
local c_pack_response, c_snapshot_clean, c_snapshot_save = nil, nil, nil
local function find_bridge()
  c_pack_response = registry_table["modula.pack_response"] or false
  c_snapshot_clean = registry_table["modula.snapshot_clean"] or false
  c_snapshot_save = registry_table["modula.snapshot_save"] or false
end

-- One route call, the give-back's reset included (one Lua call, no GIL hand-off, per request): arm the
-- budget, run middleware and handler, disarm, restore the globals, then answer packed or through
-- route_results. Trusted: the code after the protected call must not be interrupted by a budget.
local function route_call(max_instr, deadline_at, deadline_msg, index, req)
  if route_results[1] ~= nil then -- what the host read last time: not kept alive
    for i = 1, 6 do route_results[i] = nil end
  end
  arm(max_instr, deadline_at, deadline_msg)
  phase = "handler"
  local ok, status, has_json, json, body, headers = r_pcall(route_body, registry.routes[index], req)
  phase = "idle"
  active = false
  sethook()
  unwatch()
  if tripped or not ok then
    local r1, r2, r3 = failure(ok, status)
    restore_snapshot()
    route_results[1], route_results[2], route_results[3] = r1, r2, r3
    return ""
  end
  restore_snapshot()
  if headers == nil then
    if c_pack_response == nil then find_bridge() end
    local packed = (c_pack_response or pack_response)(status, has_json, json, body)
    if packed then return packed end
  end
  route_results[1], route_results[2], route_results[3] = true, status, has_json
  route_results[4], route_results[5], route_results[6] = json, body, headers
  return ""
end
trusted_fn[route_call] = true

-- The arguments: max_instr, deadline_at, deadline_msg, index, then either the request table, or the
-- request flat: method, path, body, client_ip, json, and the tables query, params and headers (nil:
-- empty).
local function route_entry(max_instr, deadline_at, deadline_msg, index, method, path, body, client_ip, json,
                           query, params, headers)
  local req = method
  if r_type(req) ~= "table" then
    req = {method = method, path = path, body = body, client_ip = client_ip, json = json, query = query or {},
           params = params or {}, headers = headers or {}}
  else -- built by the host, which leaves out empty maps (building them from Python costs more)
    if r_rawget(req, "headers") == nil then r_rawset(req, "headers", {}) end
    if r_rawget(req, "query") == nil then r_rawset(req, "query", {}) end
    if r_rawget(req, "params") == nil then r_rawset(req, "params", {}) end
  end
  return route_call(max_instr, deadline_at, deadline_msg, index, req)
end
registry_table["modula.route_entry"] = route_entry

local route_caller = function()
  local a = route_inbox[1]
  route_inbox[1] = nil
  return route_entry(t_unpack(a, 1, 12))
end

local function run_hook(max_instr, deadline_at, deadline_msg, index, data)
  local h = registry.hooks[index]
  return run(max_instr, deadline_at, deadline_msg, "hook", h.fn, data)
end

-- The snapshot covers the global table (and its metatable) and the library overlays: a handler that
-- replaces string.format or sets a metatable on _G must not change what the next request sees.
local snapshot_mt = nil
local snapshot_n = 0
-- The snapshot's values again, split by kind for the per-call check: a value that is not a table is
-- compared with ~=, which never runs a metamethod when one side is not a table (a function, string,
-- number or boolean in the snapshot); tables need rawequal (a C call each).
local snapshot_plain, snapshot_tables = {}, {}

-- the C bridge's byte image of the global table and the overlays as the snapshot left them (see
-- _luabridge.c: snapshot_save)
local snapshot_image = nil

-- Takes the image of the globals as they are now: right after the snapshot, or after a restore.
local function save_image()
  if c_snapshot_save == nil then find_bridge() end
  if not c_snapshot_save then return end
  local ok, image = r_pcall(c_snapshot_save, env, overlay_list, snapshot_image) -- out of memory: no image
  snapshot_image = ok and image or nil
end

local function take_snapshot()
  snapshot, snapshot_plain, snapshot_tables = {}, {}, {}
  snapshot_n = 0
  for k, v in r_next, env do
    snapshot[k] = v
    if r_type(v) == "table" or r_type(v) == "userdata" then snapshot_tables[k] = v else snapshot_plain[k] = v end
    snapshot_n = snapshot_n + 1
  end
  snapshot_mt = d_getmetatable(env)
  for i = 1, #lib_overlays do
    local overlay, base = lib_overlays[i][1], lib_overlays[i][2]
    for k, v in r_next, overlay do base[k] = v end
    for k in r_next, base do r_rawset(overlay, k, nil) end
  end
  snapshot_image = nil
  save_image()
end

restore_snapshot = function()
  if not snapshot then return end
  -- raw: ~= would run the __eq of the metatable's own metatable, outside any budget
  if not r_rawequal(d_getmetatable(env), snapshot_mt) then d_setmetatable(env, snapshot_mt) end
  -- the common case, a handler that left the globals alone, costs one pass (raw comparisons only:
  -- a plugin's __eq must never run here, outside any budget)
  local clean, overlays_empty, imaged
  if c_snapshot_clean == nil then find_bridge() end
  local c_clean = c_snapshot_clean
  if c_clean then
    -- the image first: unchanged bytes, unchanged globals; else the walk
    clean, overlays_empty, imaged = c_clean(env, snapshot, snapshot_n, overlay_list, snapshot_image)
    if imaged then return end
  else
    local n, plain, tables = 0, snapshot_plain, snapshot_tables
    clean = true
    for k, v in r_next, env do
      n = n + 1
      local was = plain[k]
      if was == nil then
        was = tables[k]
        if was == nil or not r_rawequal(was, v) then
          clean = false
          break
        end
      elseif was ~= v or (r_type(v) == "number" and (m_type(v) ~= m_type(was) or (v == 0 and 1 / v ~= 1 / was))) then
        clean = false
        break
      end
    end
    clean = clean and n == snapshot_n
  end
  if not clean then restore_globals() end
  if not overlays_empty then
    for i = 1, #lib_overlays do
      local overlay = lib_overlays[i][1]
      if r_next(overlay) ~= nil then
        local keys = {}
        for k in r_next, overlay do keys[#keys + 1] = k end
        for j = 1, #keys do r_rawset(overlay, keys[j], nil) end
      end
    end
  end
  -- the globals are the snapshot's again: the next check compares with them as they are now
  if c_clean then save_image() end
end

restore_globals = function()
  local extra = nil
  for k in r_next, env do
    if r_rawget(snapshot, k) == nil then
      extra = extra or {}
      extra[#extra + 1] = k
    end
  end
  if extra then for i = 1, #extra do r_rawset(env, extra[i], nil) end end
  -- every value stored again: a raw-equal one may be another (42.0 for 42, -0.0 for 0.0, a copy of a
  -- long string); a key already there costs no allocation
  for k, v in r_next, snapshot do r_rawset(env, k, v) end
end

-- for the host, should an error ever escape run(): stop enforcing the budget
local function disarm()
  unwatch()
  active = false
end

trusted_fn[run] = true
trusted_fn[finish] = true
trusted_fn[failure] = true
trusted_fn[disarm] = true
trusted_fn[unwatch] = true

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
    local build = opts ~= nil and r_rawget(opts, "build") == true  -- fetched by the site build (SPEC 9)
    local m, p = validate_route(method, path, #registry.routes)
    registry.routes[#registry.routes + 1] = {method = m, path = p, public = public, build = build, fn = fn}
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
    -- name: as registered (data._table); table: what it is approved and fired for
    registry.hooks[#registry.hooks + 1] = {event = e, table = t, priority = pr, fn = fn, name = tbl}
  end

  local log = {}
  local py_log = bind(py.log, 3) -- errors point at the plugin's log.* call
  for _, level in r_ipairs({"debug", "info", "warn", "error"}) do
    log[level] = function(msg, ctx)
      if ctx ~= nil and r_type(ctx) ~= "table" then r_error("log." .. level .. ": context must be a table", 2) end
      py_log(level, r_tostring(msg), ctx)
    end
  end

  -- Tables json.array marked (weak keys): they encode as [] even when empty, every other empty
  -- table as {} (ModulaCMS). The host (sandbox.from_lua) and both packers read it from the registry.
  local json_arrays = r_setmetatable({}, {__mode = "k"})
  registry_table["modula.json_arrays"] = json_arrays
  local json = {encode = bind(py.json_encode), decode = bind(py.json_decode)}
  json.array = function(t)
    if t == nil then t = {} elseif r_type(t) ~= "table" then r_error("json.array: argument must be a table", 2) end
    json_arrays[t] = true
    return t
  end

  local db = {}
  for name, f in r_next, py.db do db[name] = bind(f) end
  if py.db.query then
    local query = bind(py.db.query, 3)
    db.query = function(t, opts)  -- results are arrays: an empty one encodes as []
      local rows, err = query(t, opts)
      if rows ~= nil then json_arrays[rows] = true end
      return rows, err
    end
  end
  -- no clock check inside begin/commit/rollback: a deadline must not leave a transaction open
  local begin, commit, rollback = bind(py.tx_begin, 3, true), bind(py.tx_commit, 3, true), bind(py.tx_rollback, 3, true)
  local transaction = function(fn)
    if r_type(fn) ~= "function" then r_error("db.transaction: argument must be a function", 2) end
    begin()
    tx_thread = co_running()
    local r = t_pack(r_pcall(fn))
    tx_thread = nil
    if r[1] and not tripped then
      -- a db.* call inside that returned nil, err: commit rolled back instead, and says why
      local failed = commit()
      if failed == nil then return true end
      return false, failed
    end
    rollback()
    note_failure(r[2])
    check_tripped()
    return false, error_text(r[2])
  end
  trusted_fn[transaction] = true
  db.transaction = transaction

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
  build_api = build_api, route_body = route_body, bind = bind, freeze = freeze, new_env = new_env, install_module = install_module,
  remove_module = remove_module, load_main = load_main, run = run, call_global = call_global,
  route_inbox = route_inbox, route_results = route_results, route_caller = route_caller,
  run_hook = run_hook, take_snapshot = take_snapshot,
  -- the screen sessions' coroutines (tui.lua): created and resumed with the budget hook, as plugins' own
  co_new = co_new, co_resume = resume, co_status = co_status, rawget = r_rawget,
  -- the bridge's packer of what a screen yielded (_luabridge.c: pack_yield), or false without it
  yield_packer = function() return registry_table["modula.pack_yield"] or false end,
  -- a built-in module that require(name) also returns (ModulaCMS: local tui = require("tui")); nil drops it
  preload = function(name, value) modules_loaded[name] = value end,
  restore_snapshot = restore_snapshot, get_global = get_global, get_phase = get_phase,
  registry = registry, tripped = get_memory_note, disarm = disarm,
  json_arrays = function() return registry_table["modula.json_arrays"] end,
  -- the address of the main thread's lua_State (route_entry's C bridge needs it)
  state_address = function() return s_format("%p", (co_running())) end,
  -- after the sandbox installed the bridge's watch (_luabridge.c: watch)
  use_watch = function()
    c_watch_arm, c_watch_disarm = registry_table["modula.watch_arm"], registry_table["modula.watch_disarm"]
    c_watch_push, c_watch_pop = registry_table["modula.watch_push"], registry_table["modula.watch_pop"]
    c_drop_gil = registry_table["modula.drop_gil"]
    clock = registry_table["modula.clock"] or clock
    sethook(hook, "", TICK)
    registry_table["modula.watch_prime"](TICK)
    sethook()
  end,
  -- whether restore_snapshot has used the bridge's C check (tests)
  snapshot_check_in_c = function() return not not c_snapshot_clean end,
  -- whether the globals have an image the check compares with first (tests)
  snapshot_imaged = function() return snapshot_image ~= nil end,
  register_route = function(r) registry.routes[#registry.routes + 1] = r; return #registry.routes end,
  register_middleware = function(f) registry.middleware[#registry.middleware + 1] = f end,
  register_hook = function(h) registry.hooks[#registry.hooks + 1] = h; return #registry.hooks end,
}
