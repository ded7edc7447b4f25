-- hello_world: the smallest useful plugin. One public greeting, one protected route, one hook.
plugin_info = {
  name = "hello_world",
  version = "1.0.0",
  description = "Says hello over HTTP and logs every published entry",
  author = "Modula Desktop",
  license = "MIT",
  permissions = {"http", "hooks"},
}

local text = require("text")

-- GET /api/v1/plugins/hello_world/hello?name=Ada  (public: no token needed once approved)
http.handle("GET", "/hello", function(req)
  return {json = {message = text.greet(req.query.name)}}
end, {public = true})

-- GET /api/v1/plugins/hello_world/hello/{name}  (needs the admin token)
http.handle("GET", "/hello/{name}", function(req)
  return {json = {message = text.greet(req.params.name), shout = text.shout(req.params.name)}}
end)

hooks.on("after_publish", "content", function(entry)
  log.info("published", {title = entry.title, slug = entry.slug})
end)

function on_init()
  log.info("hello_world is ready")
end
