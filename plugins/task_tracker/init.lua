-- task_tracker: a small task list with categories, written against the ModulaCMS-compatible Lua API.
-- It shows db.define_table (indexes, a foreign key with ON DELETE CASCADE), seeding inside
-- db.transaction, and a JSON API. Routes are served at /api/v1/plugins/task_tracker/...
-- and answer only once approved. The Tasks screen and the colour picker need approving too.

plugin_info = {
  name = "task_tracker",
  version = "1.0.0",
  description = "Tasks grouped in categories, with a small JSON API",
  author = "Modula Desktop",
  license = "MIT",
  permissions = {"db", "http"},
  -- a page in the window's sidebar (screens/tasks.lua) and an editor for colour fields
  -- (interfaces/color_picker.lua): ModulaCMS's tui protocol, drawn as native widgets
  screens = {{name = "tasks", label = "Tasks", icon = "list"}},
  interfaces = {{name = "color_picker", label = "Colour", mode = "overlay"}},
}

local validate = require("validate")

local DEFAULT_CATEGORIES = {"Bug", "Feature", "Improvement", "Documentation"}

function on_init()
  db.define_table("categories", {
    columns = {
      {name = "name", type = "text", not_null = true},
      {name = "color", type = "text", default = "#888888"},
    },
    indexes = {
      {columns = {"name"}, unique = true},
    },
  })

  db.define_table("tasks", {
    columns = {
      {name = "title", type = "text", not_null = true},
      {name = "description", type = "text", default = ""},
      {name = "status", type = "text", not_null = true, default = "todo"},
      {name = "priority", type = "integer", not_null = true, default = 0},
      {name = "category_id", type = "text", not_null = true},
      {name = "tags", type = "json"},
      {name = "completed_at", type = "timestamp"},
    },
    indexes = {
      {columns = {"category_id"}},
      {columns = {"status", "priority"}},
    },
    foreign_keys = {
      {column = "category_id", ref_table = "plugin_task_tracker__categories", ref_column = "id",
       on_delete = "CASCADE"},
    },
  })

  if db.count("categories", {}) == 0 then
    local ok, err = db.transaction(function()
      for _, name in ipairs(DEFAULT_CATEGORIES) do
        db.insert("categories", {name = name})
      end
    end)
    if not ok then
      log.error("seeding categories failed", {err = err})
    else
      log.info("seeded default categories", {count = #DEFAULT_CATEGORIES})
    end
  end
end

local function bad_request(msg)
  return {status = 400, json = {error = msg}}
end

local function not_found()
  return {status = 404, json = {error = "task not found"}}
end

http.handle("GET", "/tasks", function(req)
  local q = req.query or {}
  local where = {}
  if q.status then
    if not validate.STATUSES[q.status] then return bad_request("status must be todo, doing or done") end
    where.status = q.status
  end
  if q.category_id then where.category_id = q.category_id end
  local tasks = db.query("tasks", {
    where = where,
    order_by = {{column = "priority", desc = true}, {column = "created_at"}},
    limit = validate.count(q.limit, 50, 100),
    offset = validate.count(q.offset, 0, 100000),
  })
  return {status = 200, json = {tasks = tasks, total = db.count("tasks", {where = where})}}
end)

http.handle("POST", "/tasks", function(req)
  local values, err = validate.task(req.json, false)
  if not values then return bad_request(err) end
  if not db.exists("categories", {where = {id = values.category_id}}) then
    return bad_request("unknown category_id")
  end
  if values.status == "done" then values.completed_at = db.timestamp() end
  local task, insert_err = db.insert("tasks", values)  -- a data error is nil, err (as in ModulaCMS)
  if not task then return {status = 409, json = {error = insert_err}} end
  log.info("task created", {id = task.id})
  return {status = 201, json = task}
end)

http.handle("GET", "/tasks/{id}", function(req)
  local task = db.query_one("tasks", {where = {id = req.params.id}})
  if not task then return not_found() end
  return {status = 200, json = task}
end)

http.handle("PUT", "/tasks/{id}", function(req)
  local changes, err = validate.task(req.json, true)
  if not changes then return bad_request(err) end
  local current = db.query_one("tasks", {where = {id = req.params.id}})
  if not current then return not_found() end
  if changes.category_id and not db.exists("categories", {where = {id = changes.category_id}}) then
    return bad_request("unknown category_id")
  end
  if changes.status == "done" and current.status ~= "done" then
    changes.completed_at = db.timestamp()
  end
  local updated, update_err = db.update("tasks", {set = changes, where = {id = req.params.id}})
  if not updated then return {status = 409, json = {error = update_err}} end
  return {status = 200, json = db.query_one("tasks", {where = {id = req.params.id}})}
end)

http.handle("DELETE", "/tasks/{id}", function(req)
  if db.delete("tasks", {where = {id = req.params.id}}) == 0 then return not_found() end
  return {status = 204}
end)

http.handle("GET", "/categories", function(req)
  local categories = db.query("categories", {order_by = "name", limit = 1000})
  local counts = {}
  for _, row in ipairs(db.query("tasks", {
    columns = {"category_id", db.agg_count("*", "task_count")},
    group_by = {"category_id"},
    limit = 1000,
  })) do
    counts[row.category_id] = row.task_count
  end
  for _, category in ipairs(categories) do
    category.task_count = counts[category.id] or 0
  end
  return {status = 200, json = {categories = categories}}
end)
