---@meta
-- The `test` module, under `modula plugin test` only (docs/PLUGINS.md, "Tests").

---@class TestAnswer
---@field status integer
---@field json any
---@field body string
---@field headers table<string, string>

test = {}

---@param cond any
---@param msg? string
function test.assert(cond, msg) end
---Deep comparison of tables.
function test.assert_eq(actual, expected, msg) end
function test.assert_neq(actual, expected, msg) end
---@param haystack string
---@param needle string plain substring
function test.assert_contains(haystack, needle, msg) end
function test.assert_nil(value, msg) end
function test.assert_not_nil(value, msg) end
---@param fn fun()
---@return string err
function test.assert_error(fn, msg) end

---Call one of this plugin's routes (the full /api/v1/plugins/<name>/... path or the relative one).
---@param method string
---@param path string
---@param opts? {body?: any, json?: any, headers?: table<string, string>, auth?: "admin"|"viewer"|"none"}
---@return TestAnswer
function test.request(method, path, opts) end

---Run the plugin's hooks for an event.
---@return {ok: boolean, error?: string, data: table, ran: integer}
function test.fire(event, table, data) end

---ModulaCMS's form: a before-hook's error text, or nil.
---@return string|nil
function test.fire_hook(event, table, data) end

---Answer outbound requests to method + "host/path" in tests (nothing reaches the network).
---@param method string
---@param url string "host/path"
---@param response {status?: integer, json?: any, body?: string, headers?: table<string, string>}
function test.mock_request(method, url, response) end

---@param fn fun() runs before each test of this file
function test.setup(fn) end
---@param fn fun() runs after each test, even a failed one
function test.teardown(fn) end
