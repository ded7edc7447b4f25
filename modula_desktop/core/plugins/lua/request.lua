-- Trusted: the `request` module (SPEC 3.11), outbound HTTP to approved domains. Every check that
-- needs the host (URL, approval, addresses, limits) happens in Python; this file only reads the
-- plugin's arguments raw (no metamethod of theirs runs here) and passes the current phase along.
local T, py = ...
local bind, get_phase = T.bind, T.get_phase
local type_, error_, next_ = type, error, next

local register = bind(py.register, 3)
local send = bind(py.send, 4) -- raised at the plugin line that called request.*
local send_all = bind(py.send_all, 3)
local max_batch = py.max_batch

-- a field of a plugin table, read without running its metamethods
local function field(t, key)
  for k, v in next_, t do
    if k == key then return v end
  end
  return nil
end

local function check_opts(what, opts, level)
  if opts ~= nil and type_(opts) ~= "table" then error_(what .. ": options must be a table", level) end
end

local M = {}

M.register = function(domain, opts)
  if get_phase() ~= "module" then
    error_("request.register() must be called at module scope, not inside on_init() or at runtime", 2)
  end
  if type_(domain) ~= "string" then error_("bad argument #1 to 'register' (string expected)", 2) end
  check_opts("request.register", opts, 3)
  local description = ""
  if opts ~= nil then
    local d = field(opts, "description")
    if type_(d) == "string" then description = d end
  end
  register(domain, description)
end

local function do_send(method, url, opts)
  if type_(method) ~= "string" then error_("bad argument #1 to 'send' (string expected)", 3) end
  if type_(url) ~= "string" then error_("bad argument (url) to 'send' (string expected)", 3) end
  check_opts("request.send", opts, 4)
  -- the body goes over as it is (binary-safe), the rest of the options as plain values
  local body = nil
  if opts ~= nil then body = field(opts, "body") end
  local answer = send(get_phase(), method, url, opts, body)
  return answer
end

-- no tail calls: the error levels above count these frames
M.send = function(method, url, opts) local r = do_send(method, url, opts) return r end
M.get = function(url, opts) local r = do_send("GET", url, opts) return r end
M.post = function(url, opts) local r = do_send("POST", url, opts) return r end
M.put = function(url, opts) local r = do_send("PUT", url, opts) return r end
M.delete = function(url, opts) local r = do_send("DELETE", url, opts) return r end
M.patch = function(url, opts) local r = do_send("PATCH", url, opts) return r end

-- Beyond ModulaCMS: several requests at once, answers in the order asked.
M.all = function(list)
  if type_(list) ~= "table" then error_("request.all: argument must be a list of {method, url [, opts]}", 2) end
  local flat, n = {}, 0
  local i = 1
  while true do
    local entry = field(list, i)
    if entry == nil then break end
    if i > max_batch then error_("request.all: at most " .. max_batch .. " requests at once", 2) end
    if type_(entry) ~= "table" then error_("request.all: entry " .. i .. " must be a table {method, url [, opts]}", 2) end
    local method = field(entry, 1) or field(entry, "method")
    local url = field(entry, 2) or field(entry, "url")
    local opts = field(entry, 3) or field(entry, "opts")
    if type_(method) ~= "string" or type_(url) ~= "string" then
      error_("request.all: entry " .. i .. " must be {method, url [, opts]} with strings", 2)
    end
    if opts ~= nil and type_(opts) ~= "table" then error_("request.all: entry " .. i .. ": options must be a table", 2) end
    local body = nil
    if opts ~= nil then body = field(opts, "body") end
    flat[n + 1], flat[n + 2], flat[n + 3], flat[n + 4] = method, url, opts or false, body or false
    n = n + 4
    i = i + 1
  end
  local answers = send_all(get_phase(), i - 1, flat)
  return answers
end

return M
