-- Trusted: the `core` module (SPEC 3.10), the site's content. Every check (phase, table policy,
-- permission, approval, options) happens in Python; this file only hands the current phase along with
-- the plugin's arguments, which the host reads raw (no metamethod of the plugin's runs).
local T, py = ...
local bind, get_phase = T.bind, T.get_phase
local t_pack, t_unpack = table.pack, table.unpack

local M = {}
for _, name in ipairs({"query", "query_one", "count", "exists", "insert", "update", "delete"}) do
  local f = bind(py[name], 3) -- raised at the plugin line that called core.*
  -- no tail call: the error level above counts this frame
  M[name] = function(...)
    local r = t_pack(f(get_phase(), ...))
    return t_unpack(r, 1, r.n)
  end
end

return M
