-- A ModulaCMS-style plugin, kept here unchanged as the parity check of issue 15: no `permissions` field
-- (ModulaCMS's manifest), core_access for the site's content, an outbound domain, read hooks, routes, and
-- tests written against ModulaCMS's test harness (test/digest.test.lua).
plugin_info = {
  name = "member_digest",
  version = "1.0.0",
  description = "Members-only entries and a digest post made from the latest posts and a quote service",
  author = "tests",
  license = "MIT",
  core_access = {content_data = {"read", "write"}},
}

-- the quote service (a loopback server in the tests; a public host in real use)
request.register("127.0.0.1", {description = "quote service"})

function on_init()
  db.define_table("settings", {
    columns = {
      {name = "key", type = "text", not_null = true},
      {name = "value", type = "text"},
    },
    indexes = {{columns = {"key"}, unique = true}},
  })
end

local function setting(key)
  local row = db.query_one("settings", {where = {key = key}})
  return row and row.value
end

-- entries whose slug starts with "members-" are for members: a read without the member header is
-- refused with ModulaCMS's {status, json} answer; data._* state reaches after_read
hooks.on("before_read", "content_data", function(data)
  if data.slug and string.sub(data.slug, 1, 8) == "members-" and data.headers["x-member"] ~= "yes" then
    return {status = 402, json = {error = "members only", slug = data.slug}}
  end
  data._member = data.headers and data.headers["x-member"] == "yes"
end)

-- nobody but members sees the editor's internal note
hooks.on("after_read", "content_data", function(data)
  local out = {headers = {["X-Member"] = tostring(data._member == true)}}
  if data.fields and data.fields.internal_note and not data._member then
    out.drop = {"fields"}
  end
  return out
end)

http.handle("POST", "/config", function(req)
  local body = req.json or {}
  if type(body.quote_url) ~= "string" then
    return {status = 400, json = {error = "quote_url required"}}
  end
  db.upsert("settings", {values = {key = "quote_url", value = body.quote_url},
                         conflict_columns = {"key"}, update = {value = body.quote_url}})
  return {json = {ok = true}}
end)

-- ModulaCMS's column names: content_data_id, date_created
http.handle("GET", "/digest", function(req)
  local rows, err = core.query("content_data", {
    where = {status = "published", type = "post"},
    order_by = {{column = "date_created", desc = true}},
    limit = tonumber(req.query.limit) or 5,
  })
  if not rows then return {status = 500, json = {error = err}} end
  local posts = {}
  for _, row in ipairs(rows) do
    posts[#posts + 1] = {id = row.content_data_id, title = row.title, slug = row.slug}
  end
  return {json = {posts = posts, count = core.count("content_data", {where = {status = "published"}})}}
end)

http.handle("POST", "/digest", function(req)
  local base = setting("quote_url")
  if not base then return {status = 409, json = {error = "configure quote_url first"}} end
  local quote = request.get(base .. "/ok", {parse_json = true, timeout = 5})
  if quote.error or quote.status ~= 200 then
    return {status = 502, json = {error = "quote service: " .. (quote.error or tostring(quote.status))}}
  end
  local titles = {}
  for _, row in ipairs(core.query("content_data", {where = {status = "published", type = "post"},
                                                   order_by = {{column = "date_created", desc = true}},
                                                   limit = 3})) do
    titles[#titles + 1] = "- " .. row.title
  end
  local body = table.concat(titles, "\n") .. "\n\nQuote from " .. tostring(quote.json.server)
  local entry, err = core.insert("content_data", {title = "Digest", type = "post", body = body})
  if not entry then return {status = 422, json = {error = err}} end
  log.info("digest made", {id = entry.id})
  return {status = 201, json = {id = entry.id, body = entry.body}}
end)
