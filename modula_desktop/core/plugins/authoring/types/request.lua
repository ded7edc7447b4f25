---@meta
-- The `request` module: outbound HTTP to domains the author approved (docs/PLUGINS.md, "request").
-- Needs the "request" permission. Not allowed in on_init, on_shutdown or before-hooks.

---@class RequestOptions
---@field headers? table<string, string>
---@field body? string
---@field json? any
---@field timeout? number seconds, within the caller's deadline
---@field parse_json? boolean

---@class RequestAnswer
---@field status? integer
---@field body? string
---@field headers? table<string, string>
---@field json? any
---@field error? string   set when nothing came back (refused, unreachable, timed out)

request = {}

---Declare a domain this plugin calls (module scope only; at most 50); the author approves each.
---@param domain string
---@param opts? {description?: string}
function request.register(domain, opts) end

---@param method "GET"|"POST"|"PUT"|"DELETE"|"PATCH"
---@param url string https unless allowed otherwise
---@param opts? RequestOptions
---@return RequestAnswer
function request.send(method, url, opts) end

---@param url string
---@param opts? RequestOptions
---@return RequestAnswer
function request.get(url, opts) end
---@param url string
---@param opts? RequestOptions
---@return RequestAnswer
function request.post(url, opts) end
---@param url string
---@param opts? RequestOptions
---@return RequestAnswer
function request.put(url, opts) end
---@param url string
---@param opts? RequestOptions
---@return RequestAnswer
function request.delete(url, opts) end
---@param url string
---@param opts? RequestOptions
---@return RequestAnswer
function request.patch(url, opts) end

---Beyond ModulaCMS: up to 8 requests at once; the answers in the same order.
---@param requests {[1]: string, [2]: string, [3]?: RequestOptions}[] {method, url, opts}
---@return RequestAnswer[]
function request.all(requests) end
