-- The `tui` module (SPEC 3.12) and the trusted steps of a screen session. Run once per VM by
-- api/tui.py with the bootstrap's trusted table. The constructors are ModulaCMS's (internal/plugin/
-- ui_api.go): pure functions that build the same tables a plugin could write by hand; no defaulting
-- beyond what ModulaCMS does, no side effects.
local T = ...
local co_new, co_resume, co_status = T.co_new, T.co_resume, T.co_status
local r_type, r_error, r_select = type, error, select
local t_pack, t_unpack = table.pack, table.unpack
local m_type, m_floor = math.type, math.floor

-- ModulaCMS's argument checks (gopher-lua's CheckTable, CheckString, OptInt ...), same messages
local function bad(n, fname, want, v)
  r_error("bad argument #" .. n .. " to '" .. fname .. "' (" .. want .. " expected, got " ..
          (v == nil and "no value" or r_type(v)) .. ")", 3)
end
local function check_table(v, n, f) if r_type(v) ~= "table" then bad(n, f, "table", v) end return v end
local function check_string(v, n, f)
  if r_type(v) == "number" then return v .. "" end
  if r_type(v) ~= "string" then bad(n, f, "string", v) end
  return v
end
local function check_number(v, n, f) if r_type(v) ~= "number" then bad(n, f, "number", v) end return v end
local function check_int(v, n, f)
  check_number(v, n, f)
  if m_type(v) == "float" then v = m_floor(v) end
  return v
end
local function opt_int(v, n, f, d) if v == nil then return d end return check_int(v, n, f) end
local function opt_string(v, n, f, d) if v == nil then return d end return check_string(v, n, f) end
-- a list argument stays a list when it is empty (json.array's mark: [] rather than {})
local json_arrays = T.json_arrays and T.json_arrays()
local function check_list(v, n, f)
  check_table(v, n, f)
  if json_arrays then json_arrays[v] = true end
  return v
end

local tui = {}

function tui.grid(columns, hints)
  local t = {type = "grid", columns = check_list(columns, 1, "grid")}
  if hints ~= nil then t.hints = check_list(hints, 2, "grid") end
  return t
end

function tui.column(span, cells)
  return {span = check_int(span, 1, "column"), cells = check_list(cells, 2, "column")}
end

function tui.cell(title, height, content)
  return {title = check_string(title, 1, "cell"), height = check_number(height, 2, "cell"),
          content = check_table(content, 3, "cell")}
end

function tui.list(items, cursor)
  return {type = "list", items = check_list(items, 1, "list"), cursor = opt_int(cursor, 2, "list", 0)}
end

function tui.detail(fields)
  return {type = "detail", fields = check_list(fields, 1, "detail")}
end

function tui.text(lines)
  return {type = "text", lines = check_list(lines, 1, "text")}
end

function tui.table(headers, rows, cursor)
  return {type = "table", headers = check_list(headers, 1, "table"), rows = check_list(rows, 2, "table"),
          cursor = opt_int(cursor, 3, "table", 0)}
end

function tui.input(id, value, placeholder)
  return {type = "input", id = check_string(id, 1, "input"), value = opt_string(value, 2, "input", ""),
          placeholder = opt_string(placeholder, 3, "input", "")}
end

-- select_field because select is a Lua keyword; the table's type is "select"
function tui.select_field(id, options, selected)
  return {type = "select", id = check_string(id, 1, "select_field"),
          options = check_list(options, 2, "select_field"), selected = opt_int(selected, 3, "select_field", 0)}
end

function tui.tree(nodes, cursor)
  return {type = "tree", nodes = check_list(nodes, 1, "tree"), cursor = opt_int(cursor, 2, "tree", 0)}
end

function tui.progress(value, label)
  return {type = "progress", value = check_number(value, 1, "progress"), label = opt_string(label, 2, "progress", "")}
end

-- Session steps, run by the host inside the bootstrap's run() (so under the budgets): the coroutine is
-- created with the budget hook, and what it yields is handed back as it is (the host reads it raw).
-- "yield", value[, token] | "done" (the function returned: ModulaCMS treats that as quit). With items
-- and bytes (the host's budget for copying a yield out), a yielded table is also written out by the
-- bridge's C packer while Lua still runs: token says where the host finds the text (nil: it copies the
-- table itself, as it does without the bridge).
local c_pack = nil  -- looked up on first use (the bridge registers it after this chunk ran)

local function outcome(co, r, items, bytes)
  if not r[1] then r_error(r[2], 0) end
  if co_status(co) == "dead" then return "done" end
  if r.n < 2 then return "yield", nil end
  local v = r[2]
  if items ~= nil and r_type(v) == "table" then
    if c_pack == nil then c_pack = T.yield_packer() end
    if c_pack then return "yield", v, c_pack(v, items, bytes) end
  end
  return "yield", v
end

local function start(fn, ctx, items, bytes)
  if r_type(fn) ~= "function" then r_error("not a function", 0) end
  local co = co_new(fn)
  local r = t_pack(co_resume(co, ctx))
  return co, outcome(co, r, items, bytes)
end

local function resume(co, event, items, bytes)
  local r = t_pack(co_resume(co, event))
  return outcome(co, r, items, bytes)
end

-- whether a yielded value is an action (read raw: no metamethod of the plugin's runs outside a budget);
-- a layout with more events queued behind it is then skipped without being copied out of the VM
local r_rawget = T.rawget
local function is_action(v)
  return r_type(v) == "table" and r_rawget(v, "action") ~= nil
end

return tui, start, resume, is_action
