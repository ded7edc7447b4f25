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

local known_events = {}
for _, e in next_, host.events do known_events[e] = true end

-- The current test's record, as ModulaCMS's harness keeps it: every assertion is counted, a failed one
-- is recorded with its line and the test goes on; the test fails when anything was recorded.
local record = {assertions = 0, failures = {}}

-- the position of the plugin code that called the assertion: the first frame outside this chunk
-- (error() at a level names it; the sandbox's pcall may add frames of its own, so look for it)
local function caller_position()
  for level = 3, 12 do
    local _, e = pcall_(error_, "", level)
    if type_(e) == "string" then
      local file, line = string.match(e, "^(.-):(%d+): $")
      if file and file ~= "testing" then return file, tonumber(line) end
    end
  end
  return nil, 0
end

local function fail(msg)
  local file, line = caller_position()
  record.failures[#record.failures + 1] = {message = msg, line = line, file = file}
end

local function count() record.assertions = record.assertions + 1 end

function test.assert(cond, msg)
  count()
  if not cond then fail(msg ~= nil and tostring_(msg) or "assertion failed") end
  return cond
end

-- ModulaCMS's order: the expected value first
function test.assert_eq(expected, actual, msg)
  count()
  if not deep_eq(expected, actual, 0) then
    fail(prefix(msg) .. "expected " .. show(expected) .. ", got " .. show(actual))
  end
end

function test.assert_neq(a, b, msg)
  count()
  if deep_eq(a, b, 0) then
    fail(prefix(msg) .. "expected values to differ, both are " .. show(a))
  end
end

-- ModulaCMS: plain substring search in a string (numbers count as their text)
function test.assert_contains(haystack, needle, msg)
  count()
  local th, tn = type_(haystack), type_(needle)
  if (th ~= "string" and th ~= "number") or (tn ~= "string" and tn ~= "number") then
    error_("test.assert_contains(haystack, needle [, msg]): both must be strings", 2)
  end
  haystack, needle = tostring_(haystack), tostring_(needle)
  if not string.find(haystack, needle, 1, true) then
    fail(prefix(msg) .. "string " .. show(haystack) .. " does not contain " .. show(needle))
  end
end

function test.assert_nil(v, msg)
  count()
  if v ~= nil then fail(prefix(msg) .. "expected nil, got " .. show(v)) end
end

function test.assert_not_nil(v, msg)
  count()
  if v == nil then fail(prefix(msg) .. "expected non-nil value, got nil") end
end

-- ModulaCMS: the second argument is text the error must contain (plain, not a pattern)
function test.assert_error(fn, contains)
  count()
  if type_(fn) ~= "function" then error_("test.assert_error: argument must be a function", 2) end
  local ok, err = pcall_(fn)
  if ok then
    fail("expected function to raise an error, but it did not")
    return nil
  end
  if contains ~= nil and contains ~= "" then
    local text = tostring_(err)
    if not string.find(text, tostring_(contains), 1, true) then
      fail("error " .. show(text) .. " does not contain " .. show(tostring_(contains)))
    end
  end
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

-- the answer the server gives for an error: ModulaCMS's envelope, with the request id in a header too
local function envelope(status, code, message)
  local id = host.request_id()
  local body = json.encode({error = {code = code, message = message, request_id = id}})
  return {status = status, body = body, json = json.decode(body),
          headers = {["content-type"] = "application/json", ["x-request-id"] = id,
                     ["x-content-type-options"] = "nosniff", ["x-frame-options"] = "DENY",
                     ["cache-control"] = "no-store"}}
end

local SECURITY = {["x-content-type-options"] = "nosniff", ["x-frame-options"] = "DENY",
                  ["cache-control"] = "no-store"}
local blocked = {}
for _, h in next_, host.blocked_headers do blocked[h] = true end

-- status, body, json, headers of the handler's answer as the server sends it (server/plugin_routes.py)
local function served(method, route, status, has_json, json_v, body, res_headers)
  if type_(status) ~= "number" or status ~= math.floor(status) or status < 200 or status > 599 then
    local e = envelope(500, "HANDLER_ERROR", "internal plugin error")
    host.log_error(method .. " " .. route.path .. ": response status must be an integer from 200 to 599",
                   e.json.error.request_id)
    return e
  end
  local headers, content_type = {}, nil
  if type_(res_headers) == "table" then
    for k, v in pairs_(res_headers) do
      local name = string.lower(tostring_(k))
      if not blocked[name] and string.sub(name, 1, 15) ~= "access-control-" then
        if name == "content-type" then content_type = tostring_(v) else headers[name] = tostring_(v) end
      end
    end
  end
  local decoded = nil
  if has_json then
    body = json.encode(json_v)
    decoded = json.decode(body)  -- what a client reads back
    content_type = "application/json"
  elseif type_(body) ~= "string" then
    body = tostring_(body)
  end
  headers["content-type"] = content_type or "text/plain; charset=utf-8"
  for k, v in pairs_(SECURITY) do headers[k] = v end
  if status == 204 or status == 304 then body = "" end
  if decoded == nil and body ~= "" and string.find(headers["content-type"], "application/json", 1, true) then
    local ok, v = pcall_(json.decode, body)
    if ok then decoded = v end
  end
  return {status = status, body = body, json = decoded, headers = headers}
end

-- ModulaCMS's test.request: the full /api/v1/plugins/<name>/... path (ours also the route's own), opts
-- body= (sent as JSON), json= (encoded), headers=, auth= "admin" | "viewer" | "none". The answer is
-- what a client gets: status, body (the text sent), json (when the answer is JSON), headers.
function test.request(method, path, opts)
  if type_(method) ~= "string" or type_(path) ~= "string" then
    error_("test.request(method, path [, opts]): method and path must be strings", 2)
  end
  opts = opts or {}
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
  if #path > 1 and string.sub(path, -1) == "/" then path = string.sub(path, 1, -2) end
  local headers = {}
  if opts.headers then for k, v in pairs_(opts.headers) do headers[string.lower(k)] = v end end
  local body = opts.body or ""
  if type_(body) ~= "string" then body = tostring_(body) end
  local decoded = nil
  if opts.json ~= nil then
    body = json.encode(opts.json)
    decoded = opts.json
    headers["content-type"] = "application/json"
  elseif body ~= "" and headers["content-type"] == nil then
    -- as ModulaCMS's harness: a body is sent as JSON
    headers["content-type"] = "application/json"
  end
  if decoded == nil and body ~= "" and headers["content-type"]
     and string.find(headers["content-type"], "application/json", 1, true) then
    local ok, v = pcall_(json.decode, body)
    if not ok then return envelope(400, "INVALID_REQUEST", "request body is not valid JSON") end
    decoded = v
  end
  method = string.upper(method)
  local index, params = host.match(method, path)
  if not index then
    return envelope(404, "ROUTE_NOT_FOUND", "the requested plugin endpoint does not exist")
  end
  local route = registry.routes[index]
  if auth == "none" and not route.public then
    return envelope(401, "UNAUTHORIZED", "authentication required")
  end
  -- the admin token is never handed to a plugin
  headers["authorization"] = nil
  -- req.path is the full URL path, as the server gives it
  local req = {method = method, path = host.prefix .. path, body = body, client_ip = "127.0.0.1",
               headers = headers, query = parse_query(query_string), params = params, json = decoded}
  -- the server's own path: middleware, handler, and the response fields read the same way
  local ok, status, has_json, json_v, res_body, res_headers = pcall_(T.route_body, route, req)
  if not ok then
    -- as served: the error's text to the plugin's log under the request id, the client gets the code
    local e = envelope(500, "HANDLER_ERROR", "internal plugin error")
    host.log_error(method .. " " .. route.path .. ": " .. tostring_(status), e.json.error.request_id)
    return e
  end
  return served(method, route, status, has_json, json_v, res_body, res_headers)
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

-- ModulaCMS's test.fire_hook: for a before-hook event the error text that aborted the change (nil when
-- none did); for an after-hook event nil. before_read answers (nil, nil, error text or nil) and
-- after_read (nil, error text or nil): ModulaCMS's positions, whose response and state tables our
-- read hooks do not have. An unknown event raises.
function test.fire_hook(event, tbl, data)
  if type_(event) ~= "string" or type_(tbl) ~= "string" then
    error_("test.fire_hook(event, table, data): event and table must be strings", 2)
  end
  if type_(data) ~= "table" then error_("test.fire_hook(event, table, data): data must be a table", 2) end
  if not known_events[event] then error_("test.fire_hook: unknown event \"" .. event .. "\"", 2) end
  local r = test.fire(event, tbl, data)
  local err = nil
  if not r.ok and string.sub(event, 1, 7) == "before_" then err = r.error end
  if event == "before_read" then return nil, nil, err end
  if event == "after_read" then return nil, err end
  return err
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

-- Runs one test between setup and teardown, as ModulaCMS's harness does: a setup error fails the test
-- before it runs (no teardown); an error of the test or of teardown is recorded beside the failed
-- assertions. Returns the record: assertions (count) and failures ({message, line, file, error}).
local function run_one(fn)
  record = {assertions = 0, failures = {}}
  local setup = around.setup or global_fn("setup")
  if setup then
    local ok, e = pcall_(setup)
    if not ok then
      record.failures[#record.failures + 1] = {message = "setup error: " .. tostring_(e), line = 0, error = true}
      return record
    end
  end
  local ok, e = pcall_(fn)
  if not ok then record.failures[#record.failures + 1] = {message = tostring_(e), line = 0, error = true} end
  local teardown = around.teardown or global_fn("teardown")
  if teardown then
    local tok, te = pcall_(teardown)
    if not tok then
      record.failures[#record.failures + 1] = {message = "teardown error: " .. tostring_(te), line = 0, error = true}
    end
  end
  return record
end

return test, run_one
