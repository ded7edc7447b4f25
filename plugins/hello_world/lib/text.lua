local M = {}

function M.greet(name)
  if name == nil or name == "" then name = "world" end
  return "Hello, " .. name .. "!"
end

function M.shout(name)
  return string.upper(name or "") .. "!"
end

return M
