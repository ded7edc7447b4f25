---@meta
-- The `db` module: the plugin's own tables (docs/PLUGINS.md, "db"). Needs the "db" permission.

---@class DbColumn
---@field name string
---@field type "text"|"integer"|"boolean"|"real"|"timestamp"|"json"|"blob"
---@field not_null? boolean
---@field default? any
---@field unique? boolean

---@class DbTableDefinition
---@field columns DbColumn[]
---@field indexes? {columns: string[], unique?: boolean}[]
---@field foreign_keys? {column: string, ref_table: string, ref_column: string, on_delete?: string, on_update?: string}[]

---@class DbQueryOptions
---@field where? table       a map {col = value | db.gt(3)} or a sequence {{"col", ">", 3}, {"OR", {...}}}
---@field where_or? table[]  where maps joined with OR
---@field columns? (string|table)[]
---@field order_by? string|{column: string, desc?: boolean}[]
---@field limit? integer     default 100, at most 10000
---@field offset? integer
---@field distinct? boolean
---@field group_by? string|string[]
---@field having? table      conditions on group_by aggregates
---@field joins? {type?: "inner"|"left"|"right", table: string, local_col: string, foreign_col: string}[]  this plugin's tables only

---@alias DbRow table<string, any>

db = {}

---Create the table, or bring an existing one along (new columns and indexes). Idempotent.
---@param table string
---@param definition DbTableDefinition
function db.define_table(table, definition) end

---@param table string
---@param opts? DbQueryOptions
---@return DbRow[] rows never nil
function db.query(table, opts) end

---@param table string
---@param opts? DbQueryOptions
---@return DbRow|nil
function db.query_one(table, opts) end

---@param table string
---@param opts? DbQueryOptions
---@return integer
function db.count(table, opts) end

---@param table string
---@param opts? DbQueryOptions
---@return boolean
function db.exists(table, opts) end

---@param table string
---@param values table<string, any>
---@return DbRow|nil row the row as stored (id, timestamps and defaults filled in)
---@return string|nil err a data error (constraint, unknown column)
function db.insert(table, values) end

---@param table string
---@param columns string[]
---@param rows any[][]
---@return integer inserted
function db.insert_many(table, columns, rows) end

---@param table string
---@param opts {values: table, conflict_columns: string[], update?: string[], do_nothing?: boolean}
---@return DbRow|nil
function db.upsert(table, opts) end

---@param table string
---@param opts {set: table, where: table}
---@return integer changed
function db.update(table, opts) end

---@param table string
---@param opts {where: table}
---@return integer deleted
function db.delete(table, opts) end

---@param table string
---@param opts {columns: string[], unique?: boolean}
function db.create_index(table, opts) end

---Runs fn at once inside one transaction; an error rolls it back. No yield inside.
---@param fn fun()
---@return boolean ok
---@return string|nil err
function db.transaction(fn) end

---@return string a new ULID
function db.ulid() end
---@return string now, as the timestamps columns store it
function db.timestamp() end
---@param seconds number
---@return string
function db.timestamp_ago(seconds) end

---@param column string
---@param alias? string
---@return table
function db.agg_count(column, alias) end
---@param column string
---@param alias? string
---@return table
function db.agg_sum(column, alias) end
---@param column string
---@param alias? string
---@return table
function db.agg_avg(column, alias) end
---@param column string
---@param alias? string
---@return table
function db.agg_min(column, alias) end
---@param column string
---@param alias? string
---@return table
function db.agg_max(column, alias) end

---@return table condition
function db.eq(value) end
---@return table condition
function db.neq(value) end
---@return table condition
function db.gt(value) end
---@return table condition
function db.gte(value) end
---@return table condition
function db.lt(value) end
---@return table condition
function db.lte(value) end
---@param pattern string at most db_max_like_chars characters
---@return table condition
function db.like(pattern) end
---@param pattern string
---@return table condition
function db.not_like(pattern) end
---@param values any[]
---@return table condition
function db.in_list(values) end
---@param values any[]
---@return table condition
function db.not_in(values) end
---@return table condition
function db.between(low, high) end
---@return table condition
function db.is_null() end
---@return table condition
function db.is_not_null() end
