---@meta
-- The `log` module: the plugin's own log, shown in the window and `modula plugin info`.

log = {}

---@param message string
---@param context? table
function log.debug(message, context) end
---@param message string
---@param context? table
function log.info(message, context) end
---@param message string
---@param context? table
function log.warn(message, context) end
---@param message string
---@param context? table
function log.error(message, context) end
