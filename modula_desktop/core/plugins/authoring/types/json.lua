---@meta
-- The `json` module.

json = {}

---@param value any
---@return string
function json.encode(value) end

---@param text string at most 4 MiB
---@return any
function json.decode(text) end
