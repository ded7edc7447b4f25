---@meta
-- The `hooks` module: content lifecycle hooks (docs/PLUGINS.md, "hooks"). Needs "hooks" (and
-- "hooks:before" for before-hooks). Every (event, table) waits for the author's approval.

---@alias HookEvent "before_create"|"after_create"|"before_update"|"after_update"|"before_delete"|"after_delete"|"before_publish"|"after_publish"|"before_unpublish"|"after_unpublish"|"before_render"|"after_build"|"before_read"|"after_read"

hooks = {}

---Register a hook. A before-hook may error(msg) to refuse the change, or return field changes.
---@param event HookEvent
---@param table string "content" (or "content_data"), "*"
---@param fn fun(data: table): table|nil
---@param opts? {priority?: integer} 1..1000, default 100; lower runs first
function hooks.on(event, table, fn, opts) end
