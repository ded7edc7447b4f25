---@meta
-- The `http` module: routes at /api/v1/plugins/<name><path> (docs/PLUGINS.md, "http"). Needs "http".

---@class HttpRequest
---@field method string
---@field path string        the full URL path
---@field body string
---@field client_ip string
---@field headers table<string, string>  names lowercase
---@field query table<string, string>
---@field params table<string, string>   the {param} segments
---@field json any           for application/json bodies

---@class HttpResponse
---@field status? integer    200 when left out
---@field json? any          wins over body
---@field body? string
---@field headers? table<string, string>

http = {}

---Declare a route (module scope only; at most 50). Every route waits for the author's approval.
---@param method "GET"|"POST"|"PUT"|"DELETE"|"PATCH"
---@param path string  starts with /, {param} segments
---@param handler fun(req: HttpRequest): HttpResponse
---@param opts? {public?: boolean, build?: boolean}
function http.handle(method, path, handler, opts) end

---Middleware: runs before every handler of this plugin, in order; a returned table answers instead.
---@param fn fun(req: HttpRequest): HttpResponse|nil
function http.use(fn) end
