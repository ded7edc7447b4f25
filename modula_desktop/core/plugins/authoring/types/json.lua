---@meta
-- The `json` module.

json = {}

---@param value any
---@return string
function json.encode(value) end

---@param text string at most 4 MiB
---@return any
function json.decode(text) end

---Mark t as an array: it encodes as [] even when empty (an unmarked empty table encodes as {}).
---@generic T: table
---@param t? T
---@return T
function json.array(t) end
