---@meta
-- The `tui` module: layouts for screens and field interfaces (docs/PLUGINS.md, "Screens and field
-- interfaces"), ModulaCMS's protocol version 1. Present for plugins that declare screens or interfaces,
-- from on_init on. A screen is `function screen(ctx)` in screens/<name>.lua, an interface
-- `function interface(ctx)` in interfaces/<name>.lua: coroutines that yield a layout or an action and get
-- the next event (init, key, resize, data, dialog) back from coroutine.yield.

---@class TuiNode
---@field type string

tui = {}

---The 12-column page.
---@param columns TuiNode[] tui.column(...) values
---@param hints? {key: string, label: string}[] keys shown as buttons
---@return TuiNode
function tui.grid(columns, hints) end

---@param span integer 1..12
---@param cells TuiNode[] tui.cell(...) values
---@return TuiNode
function tui.column(span, cells) end

---@param title string
---@param height number the cell's share of its column's height
---@param content TuiNode
---@return TuiNode
function tui.cell(title, height, content) end

---@param items {label: string, id?: any}[] at most 10,000
---@param cursor? integer 0-based
---@return TuiNode
function tui.list(items, cursor) end

---@param fields {label: string, value: string}[]
---@return TuiNode
function tui.detail(fields) end

---@param lines (string|{text: string, bold?: boolean, accent?: boolean})[]
---@return TuiNode
function tui.text(lines) end

---@param headers string[]
---@param rows string[][] at most 10,000
---@param cursor? integer 0-based
---@return TuiNode
function tui.table(headers, rows, cursor) end

---@param id string
---@param value? string
---@param placeholder? string
---@return TuiNode
function tui.input(id, value, placeholder) end

---@param id string
---@param options {label: string, value: any}[]
---@param selected? integer 0-based
---@return TuiNode
function tui.select_field(id, options, selected) end

---@param nodes {label: string, children?: table[], expanded?: boolean}[] at most 20 deep
---@param cursor? integer
---@return TuiNode
function tui.tree(nodes, cursor) end

---@param value number 0..1
---@param label? string
---@return TuiNode
function tui.progress(value, label) end
