-- Written against ModulaCMS's plugin test harness.
local BASE = "https://127.0.0.1"

test.setup(function()
  db.upsert("settings", {values = {key = "quote_url", value = BASE}, conflict_columns = {"key"}, update = {value = BASE}})
end)

test.teardown(function()
  log.info("teardown")
end)

function test_digest_lists_published_posts_newest_first()
  core.insert("content_data", {title = "Older", type = "post", status = "published"})
  core.insert("content_data", {title = "Draft", type = "post"})
  local r = test.request("GET", "/api/v1/plugins/member_digest/digest")
  test.assert_eq(200, r.status)
  test.assert_eq(1, #r.json.posts)
  test.assert_eq("Older", r.json.posts[1].title)
  test.assert_not_nil(r.json.posts[1].id)
end

function test_making_a_digest_calls_the_quote_service_and_writes_a_post()
  core.insert("content_data", {title = "Launch", type = "post", status = "published"})
  test.mock_request("GET", "127.0.0.1/ok", {status = 200, json = {ok = true, server = "the mock"}})
  local r = test.request("POST", "/digest", {auth = "admin"})
  test.assert_eq(201, r.status)
  test.assert_contains(r.json.body, "- Launch")
  test.assert_contains(r.json.body, "Quote from the mock")
  local saved = core.query_one("content_data", {where = {content_data_id = r.json.id}})
  test.assert_not_nil(saved)
  test.assert_eq("draft", saved.status)
end

function test_the_quote_service_failing_is_a_502()
  test.mock_request("GET", "127.0.0.1/ok", {status = 500, body = "down"})
  local r = test.request("POST", "/digest")
  test.assert_eq(502, r.status)
  test.assert_eq(0, core.count("content_data", {where = {title = "Digest"}}))
end

function test_routes_need_the_token()
  local r = test.request("GET", "/digest", {auth = "none"})
  test.assert_eq(401, r.status)
  test.assert_eq("UNAUTHORIZED", r.json.error.code)
end

function test_members_only_entries_are_refused_without_the_header()
  local refused = test.fire("before_read", "content_data", {slug = "members-roadmap", headers = {}})
  test.assert_eq(false, refused.ok)
  test.assert_eq(402, refused.status)
  local passed = test.fire("before_read", "content_data", {slug = "members-roadmap", headers = {["x-member"] = "yes"}})
  test.assert(passed.ok)
  test.assert_eq(true, passed.data._member)
  test.assert_neq(refused.ok, passed.ok)
end

function test_the_internal_note_is_dropped_for_non_members()
  local r = test.fire("after_read", "content_data", {slug = "x", fields = {internal_note = "secret"}})
  test.assert_eq("fields", r.returned.drop[1])
  test.assert_eq("false", r.returned.headers["X-Member"])
  test.assert_nil(test.fire_hook("after_create", "content_data", {title = "x"}))
end
