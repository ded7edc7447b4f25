-- http_test_plugin: every part of the plugin HTTP API in one small plugin.
-- Routes are served at /api/v1/plugins/http_test_plugin<path> once approved, e.g.
--   modula plugin approve http_test_plugin --all-routes
plugin_info = {
  name = "http_test_plugin",
  version = "1.0.0",
  description = "Exercises the plugin HTTP API: JSON, path parameters, a public webhook, headers, middleware",
  author = "Modula Desktop",
  license = "MIT",
  permissions = {"http"},
}

-- Middleware runs before every handler of this plugin, in the order registered. Returning a table
-- answers the request right away; returning nothing lets it through.
http.use(function(req)
  if req.headers["x-block-me"] then
    return {status = 403, json = {error = "blocked by http_test_plugin middleware"}}
  end
  req.seen_by_middleware = true
end)

-- GET /hello?name=Ada
http.handle("GET", "/hello", function(req)
  local name = req.query.name
  if name == nil or name == "" then name = "world" end
  return {json = {message = "Hello, " .. name .. "!", middleware = req.seen_by_middleware == true}}
end)

-- POST /echo with a JSON body: answers the decoded JSON back
http.handle("POST", "/echo", function(req)
  if req.json == nil then
    return {status = 400, json = {error = "send a JSON body (Content-Type: application/json)"}}
  end
  return {status = 200, json = {received = req.json, method = req.method, bytes = #req.body}}
end)

-- GET /items/{id}: a path parameter
http.handle("GET", "/items/{id}", function(req)
  local id = req.params.id
  if not string.match(id, "^%d+$") then
    return {status = 404, json = {error = "no item " .. id}}
  end
  return {json = {id = tonumber(id), name = "item " .. id}}
end)

-- POST /webhook: public, no admin token needed (an outside service can call it once approved)
http.handle("POST", "/webhook", function(req)
  log.info("webhook received", {bytes = #req.body, client = req.client_ip})
  return {status = 202, json = {accepted = true}}
end, {public = true})

-- GET /headers: tries to set headers the server never lets a plugin set. Only X-Plugin survives.
http.handle("GET", "/headers", function(req)
  return {
    status = 200,
    body = "headers test",
    headers = {
      ["X-Plugin"] = "http_test_plugin",
      ["Content-Type"] = "text/plain; charset=utf-8",
      ["Set-Cookie"] = "session=stolen",
      ["Access-Control-Allow-Origin"] = "*",
      ["Cache-Control"] = "public, max-age=31536000",
      ["Connection"] = "close",
      ["Transfer-Encoding"] = "chunked",
      ["Content-Length"] = "1",
      ["Host"] = "evil.example",
    },
  }
end)
