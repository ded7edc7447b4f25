---@meta
-- Modula Desktop plugin API: the manifest and lifecycle globals (docs/PLUGINS.md, "Manifest and lifecycle").
-- Editor annotations for lua-language-server; written by `modula plugin init`. Not loaded by the app.

---@class PluginInfo
---@field name string           1-64 of a-z 0-9 _ ; the plugin's identity (its routes, tables, approvals)
---@field version string        a new version revokes every approval
---@field description string
---@field author? string
---@field license? string
---@field min_cms_version? string
---@field dependencies? string[] plugins that must be running first
---@field permissions? string[]  "db" "http" "hooks" "hooks:before" "request" "core:read" "core:write"
---@field screens? {name: string, label: string, icon?: string, hidden?: boolean}[]
---@field interfaces? {name: string, label: string, mode?: "overlay"|"inline"}[]

---The plugin's manifest: a table literal at the top of init.lua.
---@type PluginInfo
plugin_info = {}

---Called once after the module loaded (budgets: init_timeout_ms). db.define_table belongs here.
function on_init() end

---Called when the plugin stops or is reloaded (budget: shutdown_timeout_ms).
function on_shutdown() end

---Loads lib/<name>.lua of this plugin (never outside it), once per VM.
---@param name string
---@return any
function require(name) end

---Lua 5.1 name of table.unpack (ModulaCMS plugins use it).
---@return any ...
function unpack(list, i, j) end
