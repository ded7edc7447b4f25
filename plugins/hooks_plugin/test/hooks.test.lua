-- Run with: modula plugin test plugins/hooks_plugin

function test_refuses_to_publish_without_title()
  local r = test.fire("before_publish", "content", {id = "e1", title = "   ", status = "published"})
  test.assert(not r.ok, "publishing an untitled entry must be refused")
  test.assert(string.find(r.error, "needs a title", 1, true), r.error)
end

function test_publishes_an_entry_with_a_title()
  local r = test.fire("before_publish", "content", {id = "e1", title = "Hello", status = "published"})
  test.assert(r.ok, r.error)
end

function test_fills_reading_time_on_create()
  local r = test.fire("before_create", "content", {title = "t", body = string.rep("word ", 450), fields = {}})
  test.assert(r.ok, r.error)
  test.assert_eq(r.data.fields.reading_time, 3)
end

function test_keeps_other_custom_fields_on_update()
  local r = test.fire("before_update", "content", {title = "t", body = "short", fields = {mood = "calm"}})
  test.assert(r.ok, r.error)
  test.assert_eq(r.data.fields, {mood = "calm", reading_time = 1})
end

function test_after_hooks_write_the_audit_trail()
  test.fire("after_create", "content", {id = "e42", title = "t", status = "draft"})
  test.fire("after_publish", "content", {id = "e42", title = "t", status = "published"})
  test.assert_eq(db.count("audit", {where = {content_id = "e42"}}), 2)
  local row = db.query_one("audit", {where = {content_id = "e42", event = "after_publish"}})
  test.assert_not_nil(row, "an after_publish audit row")
  test.assert_eq(row.status, "published")
end
