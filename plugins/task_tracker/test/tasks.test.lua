-- Tests for task_tracker, run by `modula plugin test plugins/task_tracker`.
-- Each test runs inside a savepoint that is rolled back afterwards, so tests do not see each other.

local function first_category()
  local res = test.request("GET", "/categories")
  test.assert_eq(res.status, 200, "GET /categories")
  return res.json.categories[1]
end

local function create_task(fields)
  local body = {title = "Write docs", category_id = first_category().id}
  for k, v in pairs(fields or {}) do body[k] = v end
  return test.request("POST", "/tasks", {json = body})
end

function test_default_categories_are_seeded()
  local res = test.request("GET", "/categories")
  test.assert_eq(res.status, 200)
  test.assert_eq(#res.json.categories, 4, "four default categories")
  -- ordered by name
  test.assert_eq(res.json.categories[1].name, "Bug")
  test.assert_eq(res.json.categories[1].task_count, 0)
end

function test_create_and_fetch_a_task()
  local created = create_task({priority = 3, tags = {"docs", "v1"}})
  test.assert_eq(created.status, 201, "POST /tasks")
  local task = created.json
  test.assert_not_nil(task.id, "the new task has an id")
  test.assert_eq(task.status, "todo", "status defaults to todo")
  test.assert_eq(task.priority, 3)
  test.assert_eq(task.tags[2], "v1", "json column round-trips")

  local fetched = test.request("GET", "/tasks/" .. task.id)
  test.assert_eq(fetched.status, 200)
  test.assert_eq(fetched.json.title, "Write docs")
end

function test_title_is_required()
  local res = test.request("POST", "/tasks", {json = {category_id = first_category().id}})
  test.assert_eq(res.status, 400)
  test.assert_eq(res.json.error, "title is required")
end

function test_unknown_category_is_rejected()
  local res = test.request("POST", "/tasks", {json = {title = "x", category_id = "nope"}})
  test.assert_eq(res.status, 400)
  test.assert_eq(res.json.error, "unknown category_id")
end

function test_update_marks_done()
  local task = create_task().json
  local res = test.request("PUT", "/tasks/" .. task.id, {json = {status = "done"}})
  test.assert_eq(res.status, 200)
  test.assert_eq(res.json.status, "done")
  test.assert_not_nil(res.json.completed_at, "completed_at is set")
end

function test_list_filters_by_status()
  create_task({title = "a"})
  local done = create_task({title = "b", status = "done"}).json
  local res = test.request("GET", "/tasks", {})
  test.assert_eq(res.json.total, 2)
  -- the runner builds req.query from the path's query string
  res = test.request("GET", "/tasks?status=done")
  test.assert_eq(res.status, 200)
  test.assert_eq(res.json.total, 1)
  test.assert_eq(res.json.tasks[1].id, done.id)
end

function test_delete_then_not_found()
  local task = create_task().json
  test.assert_eq(test.request("DELETE", "/tasks/" .. task.id).status, 204)
  test.assert_eq(test.request("GET", "/tasks/" .. task.id).status, 404)
  test.assert_eq(test.request("DELETE", "/tasks/" .. task.id).status, 404)
end

function test_deleting_a_category_deletes_its_tasks()
  local task = create_task().json
  db.delete("categories", {where = {id = task.category_id}})
  test.assert_nil(db.query_one("tasks", {where = {id = task.id}}), "ON DELETE CASCADE")
end

function test_update_needs_a_where()
  test.assert_error(function()
    db.update("tasks", {set = {status = "done"}})
  end)
end
