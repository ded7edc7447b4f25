-- Trusted: the `test` module for `modula plugin test` (SPEC 3.9). Runs in the plugin's VM; requests
-- and fired hooks call the plugin's registered functions directly, inside the current budget.
local T, env, host = ...
local registry = T.registry
local pcall_ = env.pcall
local type_, tostring_, pairs_, next_, error_ = type, tostring, pairs, next, error
local json = env.json

local function show(v)
  if type_(v) == "string" then return string.format("%q", v) end
  if type_(v) == "table" and json then
    local ok, s = pcall_(json.encode, v)
    if ok then return s end
  end
  return tostring_(v)
end

local function deep_eq(a, b, depth)
  if a == b then return true end
  if type_(a) ~= "table" or type_(b) ~= "table" or depth > 32 then return false end
  for k, v in next_, a do
    if not deep_eq(v, b[k], depth + 1) then return false end
  end
  for k in next_, b do
    if a[k] == nil then return false end
  end
  return true
end

local function prefix(msg)
  if msg ~= nil then return tostring_(msg) .. ": " end
  return ""
end

local test = {}

function test.assert(cond, msg)
  if not cond then error_(msg or "assertion failed", 2) end
  return cond
end

function test.assert_eq(a, b, msg)
  if not deep_eq(a, b, 0) then
    error_(prefix(msg) .. "expected " .. show(b) .. ", got " .. show(a), 2)
  end
end

function test.assert_neq(a, b, msg)
  if deep_eq(a, b, 0) then
    error_(prefix(msg) .. "expected values to differ, both are " .. show(a), 2)
  end
end

-- ModulaCMS: plain substring search in a string
function test.assert_contains(haystack, needle, msg)
  if type_(haystack) ~= "string" or type_(needle) ~= "string" then
    error_("test.assert_contains(haystack, needle [, msg]): both must be strings", 2)
  end
  if not string.find(haystack, needle, 1, true) then
    error_(prefix(msg) .. "string " .. show(haystack) .. " does not contain " .. show(needle), 2)
  end
end

function test.assert_nil(v, msg)
  if v ~= nil then error_(prefix(msg) .. "expected nil, got " .. show(v), 2) end
end

function test.assert_not_nil(v, msg)
  if v == nil then error_(prefix(msg) .. "expected a value, got nil", 2) end
end

function test.assert_error(fn, msg)
  if type_(fn) ~= "function" then error_("test.assert_error: argument must be a function", 2) end
  local ok, err = pcall_(fn)
  if ok then error_(prefix(msg) .. "expected an error, but the function succeeded", 2) end
  return err
end

-- as the server does: percent-decoded, '+' is a space, the first value of a repeated key wins
local function unescape(s)
  s = string.gsub(s, "+", " ")
  return (string.gsub(s, "%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function parse_query(q)
  local out = {}
  if not q then return out end
  for pair in string.gmatch(q, "[^&]+") do
    local k, v = string.match(pair, "^([^=]*)=?(.*)$")
    if k and k ~= "" then
      k = unescape(k)
      if out[k] == nil then out[k] = unescape(v) end
    end
  end
  return out
end

local function envelope(status, code, message)
  return {status = status, json = {error = {code = code, message = message, request_id = "test"}},
          headers = {["content-type"] = "application/json"}, body = ""}
end

function test.request(method, path, opts)
  if type_(method) ~= "string" or type_(path) ~= "string" then
    error_("test.request(method, path [, opts]): method and path must be strings", 2)
  end
  opts = opts or {}
  -- ModulaCMS's tests use the full path; ours may use the one the route was registered with
  local plen = #host.prefix
  if string.sub(path, 1, plen) == host.prefix and
     (#path == plen or string.sub(path, plen + 1, plen + 1) == "/" or string.sub(path, plen + 1, plen + 1) == "?") then
    path = string.sub(path, plen + 1)
    if path == "" or string.sub(path, 1, 1) == "?" then path = "/" .. path end
  end
  local auth = opts.auth or "admin"
  if auth ~= "admin" and auth ~= "viewer" and auth ~= "none" then
    error_("test.request: auth must be 'admin', 'viewer', or 'none', got: " .. tostring_(auth), 2)
  end
  local qpos = string.find(path, "?", 1, true)
  local query_string = nil
  if qpos then query_string = string.sub(path, qpos + 1); path = string.sub(path, 1, qpos - 1) end
  local headers = {}
  if opts.headers then for k, v in pairs_(opts.headers) do headers[string.lower(k)] = v end end
  local body = opts.body or ""
  local decoded = nil
  if opts.json ~= nil then
    body = json.encode(opts.json)
    decoded = opts.json
    headers["content-type"] = "application/json"
  elseif opts.body ~= nil and headers["content-type"] == nil then
    -- as ModulaCMS's harness: a body is sent as JSON
    headers["content-type"] = "application/json"
  end
  if decoded == nil and body ~= "" and headers["content-type"] and json
     and string.find(headers["content-type"], "application/json", 1, true) then
    local ok, v = pcall_(json.decode, body)
    if ok then decoded = v end
  end
  local index, params = host.match(string.upper(method), path)
  if not index then
    return envelope(404, "ROUTE_NOT_FOUND", "route not found")
  end
  if auth == "none" and not registry.routes[index].public then
    return envelope(401, "UNAUTHORIZED", "this route needs the site's admin token")
  end
  -- req.path is the full URL path, as the server gives it
  local req = {method = string.upper(method), path = host.prefix .. path, body = body, client_ip = "127.0.0.1",
               headers = headers, query = parse_query(query_string), params = params, json = decoded}
  -- the server's own path: middleware, handler, and the response fields read the same way
  local ok, status, has_json, json_v, body, res_headers = pcall_(T.route_body, registry.routes[index], req)
  if not ok then
    return {status = 500, json = {error = tostring_(status)}, headers = {}, body = ""}
  end
  if not has_json then json_v = nil end
  return {status = status, json = json_v, body = body, headers = res_headers or {}}
end

function test.fire(event, tbl, data)
  if type_(event) ~= "string" or type_(tbl) ~= "string" then
    error_("test.fire(event, table, data): event and table must be strings", 2)
  end
  data = data or {}
  local indices = host.hooks_for(event, tbl)
  -- before_read is not a before-hook of a change: no transaction, request allowed (as when served)
  local read = event == "before_read" or event == "after_read"
  local before = string.sub(event, 1, 7) == "before_" and not read
  local result = {ok = true, data = data, ran = #indices}
  for i = 1, #indices do
    local h = registry.hooks[indices[i]]
    -- as when served: the name the hook was registered with ("*": the table fired)
    data._table = (h.table == "*") and tbl or (h.name or tbl)
    data._event = event
    -- as when served: the request module refuses inside a before-hook
    if before then host.in_before_hook(true) end
    local ok, ret = pcall_(h.fn, data)
    if before then host.in_before_hook(false) end
    if not ok then
      result.ok = false
      result.error = tostring_(ret)
      if before then return result end
    elseif before and type_(ret) == "table" then
      for k, v in pairs_(ret) do data[k] = v end
    elseif read and type_(ret) == "table" then
      result.returned = ret
      -- ModulaCMS's before_read answer: the read is refused with that response
      if event == "before_read" and ret.status ~= nil then
        result.ok, result.status, result.response = false, ret.status, ret
        return result
      end
    end
  end
  return result
end

local known_events = {}
for _, e in next_, host.events do known_events[e] = true end

-- ModulaCMS's name: a before-hook's error text (or nil), nil for after-hooks
function test.fire_hook(event, tbl, data)
  if type_(event) ~= "string" or type_(tbl) ~= "string" then
    error_("test.fire_hook(event, table, data): event and table must be strings", 2)
  end
  if not known_events[event] then error_("test.fire_hook: unknown event \"" .. event .. "\"", 2) end
  local r = test.fire(event, tbl, data)
  if string.sub(event, 1, 7) == "before_" and not r.ok then return r.error end
  return nil
end

-- Outbound requests in tests never reach the network: they answer from these rules.
function test.mock_request(method, url, response)
  if type_(method) ~= "string" or type_(url) ~= "string" or type_(response) ~= "table" then
    error_("test.mock_request(method, \"host/path\", {status=, json= | body=}): wrong arguments", 2)
  end
  host.mock(method, url, response)
end

-- test.setup(fn) / test.teardown(fn) as in ModulaCMS; global setup() / teardown() work too
local around = {}
function test.setup(fn)
  if type_(fn) ~= "function" then error_("test.setup: argument must be a function", 2) end
  around.setup = fn
end
function test.teardown(fn)
  if type_(fn) ~= "function" then error_("test.teardown: argument must be a function", 2) end
  around.teardown = fn
end

local function global_fn(name)
  local f = env[name]
  if type_(f) == "function" then return f end
  return nil
end

-- Runs one test between setup and teardown; an error of any of them fails the test.
local function run_one(fn)
  local setup = around.setup or global_fn("setup")
  if setup then
    local ok, e = pcall_(setup)
    if not ok then error_("setup error: " .. tostring_(e), 0) end
  end
  local ok, e = pcall_(fn)
  local teardown = around.teardown or global_fn("teardown")
  if teardown then
    local tok, te = pcall_(teardown)
    if not tok and ok then error_("teardown error: " .. tostring_(te), 0) end
  end
  if not ok then error_(e, 0) end
end

return test, run_one
