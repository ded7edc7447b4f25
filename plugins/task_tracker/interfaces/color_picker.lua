-- A colour field editor: pick from a palette or type a hex code. ModulaCMS's field interface protocol:
-- ctx.value is the field's value; {action = "commit", value = ...} saves, {action = "cancel"} leaves it.
local tui = require("tui")

local PALETTE = {
  {label = "Red", value = "#e53935"}, {label = "Orange", value = "#fb8c00"}, {label = "Yellow", value = "#fdd835"},
  {label = "Green", value = "#43a047"}, {label = "Teal", value = "#00897b"}, {label = "Blue", value = "#1e88e5"},
  {label = "Purple", value = "#8e24aa"}, {label = "Grey", value = "#757575"},
}

local function valid(hex) return hex:match("^#%x%x%x%x%x%x$") ~= nil end

function interface(ctx)
  local value = ctx.value ~= "" and ctx.value or "#1e88e5"
  local cursor = 0
  for i, c in ipairs(PALETTE) do if c.value == value then cursor = i - 1 end end
  local typed = value
  local typing = false

  local function layout()
    local items = {}
    for i, c in ipairs(PALETTE) do items[i] = {label = c.label .. "  " .. c.value, id = c.value} end
    local input = tui.input("hex", typed, "#rrggbb")
    input.focused = typing
    return tui.grid({
      tui.column(6, {tui.cell("Palette", 1, tui.list(items, cursor))}),
      tui.column(6, {
        tui.cell("Hex code", 0.4, input),
        tui.cell("Chosen", 0.6, tui.text({
          {text = "██████████", style = {fg = valid(typed) and typed or value}},
          {text = valid(typed) and typed or (typed .. " is not #rrggbb"), faint = not valid(typed)},
        })),
      }),
    }, {{key = "enter", label = "Use colour"}, {key = "esc", label = "Cancel"}})
  end

  while true do
    local ev = coroutine.yield(layout())
    if ev.type == "focus" then
      typing = ev.panel == 1
    elseif ev.type == "key" then
      local k = ev.key
      if k == "esc" then
        coroutine.yield({action = "cancel"})
        return
      elseif k == "enter" then
        if valid(typed) then
          coroutine.yield({action = "commit", value = typed:lower()})
          return
        end
      elseif typing then
        if k == "backspace" then typed = typed:sub(1, -2)
        elseif #k == 1 then typed = typed .. k end
      elseif (k == "down" or k == "j") and cursor < #PALETTE - 1 then
        cursor = cursor + 1; typed = PALETTE[cursor + 1].value
      elseif (k == "up" or k == "k") and cursor > 0 then
        cursor = cursor - 1; typed = PALETTE[cursor + 1].value
      end
    end
  end
end
