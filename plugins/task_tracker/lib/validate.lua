-- Input checks for task_tracker's routes. Each checker returns the cleaned values, or nil and a
-- message for a 400 answer.
local M = {}

M.STATUSES = {todo = true, doing = true, done = true}

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end
M.trim = trim

-- body: the decoded JSON request; partial: true for PUT (every field optional).
function M.task(body, partial)
  if type(body) ~= "table" then
    return nil, "send a JSON object"
  end
  local out = {}
  if body.title ~= nil then
    if type(body.title) ~= "string" or trim(body.title) == "" then
      return nil, "title must be a non-empty string"
    end
    if #body.title > 200 then
      return nil, "title is longer than 200 characters"
    end
    out.title = trim(body.title)
  elseif not partial then
    return nil, "title is required"
  end
  if body.description ~= nil then
    if type(body.description) ~= "string" then return nil, "description must be a string" end
    out.description = body.description
  end
  if body.status ~= nil then
    if not M.STATUSES[body.status] then return nil, "status must be todo, doing or done" end
    out.status = body.status
  end
  if body.priority ~= nil then
    if math.type(body.priority) ~= "integer" or body.priority < 0 or body.priority > 5 then
      return nil, "priority must be an integer from 0 to 5"
    end
    out.priority = body.priority
  end
  if body.category_id ~= nil then
    if type(body.category_id) ~= "string" then return nil, "category_id must be a string" end
    out.category_id = body.category_id
  elseif not partial then
    return nil, "category_id is required"
  end
  if body.tags ~= nil then
    if type(body.tags) ~= "table" then return nil, "tags must be a list of strings" end
    for _, tag in ipairs(body.tags) do
      if type(tag) ~= "string" then return nil, "tags must be a list of strings" end
    end
    out.tags = body.tags
  end
  if partial and next(out) == nil then
    return nil, "nothing to change"
  end
  return out
end

-- A positive integer from a query string value, clamped to max.
function M.count(value, default, max)
  local n = tonumber(value)
  if n == nil or n ~= math.floor(n) or n < 0 then return default end
  if n > max then return max end
  return math.tointeger(n)
end

return M
