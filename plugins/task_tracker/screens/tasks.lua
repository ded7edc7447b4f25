-- The Tasks screen: a list of tasks, the selected one's details, an input to add one, and a confirm
-- before deleting. Written against ModulaCMS's tui protocol only: the screen is a coroutine that
-- yields a layout and gets the next event back.
--
-- keys: up/down or j/k move, x or enter marks done (or not), a starts typing a new task (enter adds
-- it, esc stops), d deletes after a confirm, r reloads.
local tui = require("tui")

local STATUS_LABEL = {todo = "to do", doing = "doing", done = "done"}

local function load_tasks()
  return db.query("tasks", {order_by = {{column = "status", desc = true}, {column = "created_at"}}, limit = 500})
end

local function category_names()
  local names = {}
  for _, c in ipairs(db.query("categories", {order_by = "name", limit = 100})) do names[c.id] = c.name end
  return names
end

local function default_category()
  local c = db.query_one("categories", {where = {name = "Feature"}}) or db.query_one("categories", {})
  return c and c.id
end

function screen(ctx)
  local tasks = load_tasks()
  local categories = category_names()
  local cursor = 0
  local typing = false
  local draft = ""
  local note = ctx.params and ctx.params.note or nil

  local function selected() return tasks[cursor + 1] end

  local function layout()
    local items = {}
    for i, t in ipairs(tasks) do
      local mark = t.status == "done" and "[x] " or "[ ] "
      items[i] = {label = mark .. t.title, id = t.id, faint = t.status == "done"}
    end
    local list = tui.list(items, cursor)
    list.empty_text = "No tasks yet: press a to add one"
    local fields = {}
    local t = selected()
    if t then
      fields = {
        {label = "Title", value = t.title},
        {label = "Status", value = STATUS_LABEL[t.status] or t.status},
        {label = "Priority", value = tostring(t.priority)},
        {label = "Category", value = categories[t.category_id] or "?"},
        {label = "Created", value = t.created_at, faint = true},
      }
    end
    local input = tui.input("new_title", draft, "Title of a new task")
    input.focused = typing
    local done = 0
    for _, x in ipairs(tasks) do if x.status == "done" then done = done + 1 end end
    local lines = {{text = typing and "enter adds the task, esc stops typing" or "a: type a new task", faint = true}}
    if note then lines[#lines + 1] = {text = note, accent = true} end
    return tui.grid({
      tui.column(5, {tui.cell("Tasks", 1, list)}),
      tui.column(7, {
        tui.cell("Detail", 0.5, tui.detail(fields)),
        tui.cell("New task", 0.3, input),
        tui.cell("Progress", 0.2, tui.progress(#tasks > 0 and done / #tasks or 0, done .. " of " .. #tasks .. " done")),
      }),
    }, {
      {key = "a", label = "Add"}, {key = "x", label = "Done"}, {key = "d", label = "Delete"},
      {key = "r", label = "Reload"},
    })
  end

  local function refresh(keep_id)
    tasks = load_tasks()
    cursor = math.max(0, math.min(cursor, #tasks - 1))
    if keep_id then
      for i, t in ipairs(tasks) do if t.id == keep_id then cursor = i - 1 end end
    end
  end

  while true do
    local ev = coroutine.yield(layout())
    note = nil
    if ev.type == "focus" then
      typing = ev.panel == 2 -- the input's cell: panels count cells column by column from 0
    elseif ev.type == "key" and typing then
      local k = ev.key
      if k == "esc" then
        typing = false
      elseif k == "enter" then
        local title = draft:gsub("^%s+", ""):gsub("%s+$", "")
        if title ~= "" then
          local task = db.insert("tasks", {title = title, category_id = default_category()})
          draft = ""
          refresh(task.id)
          coroutine.yield({action = "toast", message = "Task added: " .. title, level = "success"})
        end
      elseif k == "backspace" then
        draft = draft:sub(1, -2)
      elseif k == "space" then
        draft = draft .. " "
      elseif #k == 1 then
        draft = draft .. k
      end
    elseif ev.type == "key" then
      local k = ev.key
      if (k == "down" or k == "j") and cursor < #tasks - 1 then
        cursor = cursor + 1
      elseif (k == "up" or k == "k") and cursor > 0 then
        cursor = cursor - 1
      elseif k == "a" or k == "n" then
        typing = true
      elseif (k == "x" or k == "enter") and selected() then
        local t = selected()
        local status = t.status == "done" and "todo" or "done"
        db.update("tasks", {set = {status = status, completed_at = status == "done" and db.timestamp() or nil},
                            where = {id = t.id}})
        refresh(t.id)
      elseif k == "d" and selected() then
        local t = selected()
        local answer = coroutine.yield({action = "confirm", title = "Delete task",
                                        message = "Delete the task '" .. t.title .. "'?"})
        while answer.type ~= "dialog" do answer = coroutine.yield(layout()) end
        if answer.accepted then
          db.delete("tasks", {where = {id = t.id}})
          refresh()
          coroutine.yield({action = "toast", message = "Task deleted"})
        end
      elseif k == "r" then
        categories = category_names()
        refresh(selected() and selected().id)
      elseif k == "q" then
        return
      end
    end
  end
end
