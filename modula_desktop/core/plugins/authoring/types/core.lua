---@meta
-- The `core` module: the site's own pages and posts (docs/PLUGINS.md, "core"). Needs "core:read" and/or
-- "core:write" (or ModulaCMS's core_access), approved by the author per plugin. Not at module scope, in
-- on_init or in on_shutdown. Data errors and refusals answer nil, err; argument errors and budgets raise.

---@alias CoreTable "content"|"content_data"|"revisions"|"content_revision"

---@class CoreQueryOptions
---@field where? table
---@field where_or? table[]
---@field columns? string[]
---@field order_by? string|{column: string, desc?: boolean}[]
---@field limit? integer default 100, at most 10000
---@field offset? integer

---@class CoreEntry
---@field id string
---@field type "page"|"post"
---@field title string
---@field slug string
---@field body string
---@field status "draft"|"published"
---@field fields table
---@field published_at? string
---@field created_at string
---@field updated_at string

core = {}

---@param table CoreTable
---@param opts? CoreQueryOptions
---@return CoreEntry[]|nil rows
---@return string|nil err
function core.query(table, opts) end

---@param table CoreTable
---@param opts? CoreQueryOptions
---@return CoreEntry|nil row
---@return string|nil err
function core.query_one(table, opts) end

---@param table CoreTable
---@param opts? CoreQueryOptions
---@return integer|nil
---@return string|nil err
function core.count(table, opts) end

---@param table CoreTable
---@param opts? CoreQueryOptions
---@return boolean|nil
---@return string|nil err
function core.exists(table, opts) end

---Create an entry through the content service (validation, a revision, every plugin's hooks).
---@param table "content"|"content_data"
---@param values {type?: "page"|"post", title: string, slug?: string, body?: string, status?: string, fields?: table}
---@return CoreEntry|nil entry
---@return string|nil err
function core.insert(table, values) end

---@param table "content"|"content_data"
---@param opts {set: table, where: table}
---@return integer|nil changed
---@return string|nil err
function core.update(table, opts) end

---Entries go to the Trash, as from the window.
---@param table "content"|"content_data"
---@param opts {where: table}
---@return integer|nil deleted
---@return string|nil err
function core.delete(table, opts) end
