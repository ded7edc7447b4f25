-- hooks_plugin: an example of content hooks.
--   * refuses to publish an entry without a title (before_publish aborts with a message the editor shows)
--   * fills the custom field `reading_time` (minutes) when an entry is created or saved (a filter)
--   * keeps an audit trail of every committed change in its own table (after-hooks, off the save's thread)
-- Approve its hooks in the plugin manager (or `modula plugin approve hooks_plugin --all-hooks`):
-- an unapproved hook never runs.
plugin_info = {
  name = "hooks_plugin",
  version = "1.0.0",
  description = "Refuses untitled publishing, fills reading_time, keeps an audit trail of content changes",
  author = "Modula Desktop",
  license = "MIT",
  permissions = {"db", "hooks", "hooks:before"},
}

local WORDS_PER_MINUTE = 200

function on_init()
  db.define_table("audit", {
    columns = {
      {name = "content_id", type = "text", not_null = true},
      {name = "event", type = "text", not_null = true},
      {name = "title", type = "text"},
      {name = "status", type = "text"},
    },
    indexes = {{columns = {"content_id"}}},
  })
end

local function word_count(text)
  local n = 0
  for _ in string.gmatch(text or "", "%S+") do n = n + 1 end
  return n
end

-- A before-hook's returned table is applied to the entry. `fields` replaces the whole custom-field
-- object, so copy the existing fields and add ours.
local function fill_reading_time(entry)
  local fields = {}
  for k, v in pairs(entry.fields or {}) do fields[k] = v end
  fields.reading_time = math.max(1, math.ceil(word_count(entry.body) / WORDS_PER_MINUTE))
  return {fields = fields}
end

hooks.on("before_create", "content", fill_reading_time)
hooks.on("before_update", "content", fill_reading_time)

hooks.on("before_publish", "content", function(entry)
  if entry.title == nil or string.match(entry.title, "^%s*$") then
    error("An entry needs a title before it can be published.")
  end
end)

local function audit(entry)
  local row, err = db.insert("audit", {content_id = entry.id, event = entry._event, title = entry.title,
                                      status = entry.status})
  if not row then log.error("could not record the audit entry", {err = err}) end
end

for _, event in ipairs({"after_create", "after_update", "after_publish", "after_unpublish", "after_delete"}) do
  hooks.on(event, "content", audit)
end
