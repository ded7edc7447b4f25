"""`modula plugin test` semantics (SPEC 3.9): savepoint per test, globals reset, test module API."""
from modula_desktop.core.plugins.authoring.testrunner import format_run, run_plugin_tests
from modula_desktop.core.settings import PluginSettings

from helpers import write_plugin

PLUGIN = """
function on_init()
  db.define_table("items", {columns = {{name = "name", type = "text"}}})
  db.insert("items", {name = "seed"})
end
http.handle("POST", "/items", function(req)
  local row = db.insert("items", {name = req.json.name})
  return {status = 201, json = row}
end)
http.handle("GET", "/items", function(req)
  return {json = {count = db.count("items", {})}}
end)
hooks.on("before_create", "content", function(d)
  if d.title == "" then error("title required") end
  return {title = string.upper(d.title)}
end, {priority = 5})
hooks.on("before_create", "*", function(d) return {slug = "from-wildcard"} end, {priority = 5})
"""


def make(tmp_path, tests: dict):
    p = write_plugin(tmp_path, "demo", PLUGIN)
    (p / "test").mkdir()
    for name, src in tests.items():
        (p / "test" / name).write_text(src)
    return p


def test_each_test_runs_in_a_rolled_back_savepoint(tmp_path):
    p = make(tmp_path, {"a.test.lua": """
function test_1_insert_two()
  test.assert_eq(test.request("POST", "/items", {json = {name = "x"}}).status, 201)
  test.assert_eq(test.request("POST", "/items", {json = {name = "y"}}).status, 201)
  test.assert_eq(test.request("GET", "/items").json.count, 3)
end
function test_2_sees_only_the_seed()
  test.assert_eq(test.request("GET", "/items").json.count, 1)
end
"""})
    run = run_plugin_tests(p)
    assert [(r.name, r.ok) for r in run.results] == [("test_1_insert_two", True), ("test_2_sees_only_the_seed", True)]


def test_globals_do_not_leak_between_tests(tmp_path):
    p = make(tmp_path, {"g.test.lua": """
function test_a_sets() leaked = 1 end
function test_b_reads() test.assert_nil(leaked, "global from the previous test") end
"""})
    run = run_plugin_tests(p)
    assert run.failed == 0, format_run(run)


def test_fire_runs_hooks_in_order_and_reports_aborts(tmp_path):
    p = make(tmp_path, {"h.test.lua": """
function test_filter_chain()
  local r = test.fire("before_create", "content", {title = "hi"})
  test.assert(r.ok)
  test.assert_eq(r.data.title, "HI")
  test.assert_eq(r.data.slug, "from-wildcard")
  test.assert_eq(r.ran, 2)
end
function test_abort()
  local r = test.fire("before_create", "content_data", {title = ""})
  test.assert_eq(r.ok, false)
  test.assert(string.find(r.error, "title required", 1, true))
end
function test_assert_error_returns_the_error()
  local err = test.assert_error(function() error("boom") end)
  test.assert(string.find(err, "boom", 1, true))
end
function test_deep_equality()
  test.assert_eq({a = {1, 2}}, {a = {1, 2}})
end
"""})
    run = run_plugin_tests(p)
    assert (run.passed, run.failed) == (4, 0), format_run(run)


def test_failures_budget_and_filter(tmp_path):
    p = make(tmp_path, {"f.test.lua": """
function test_fails() test.assert_eq(1, 2, "one is two") end
function test_nil() test.assert_not_nil(nil) end
function test_spins() while true do end end
"""})
    run = run_plugin_tests(p, PluginSettings(max_instructions=2_000_000), name_filter="fails")
    assert [(r.name, r.ok) for r in run.results] == [("test_fails", False)]
    # ModulaCMS's order (expected first) and its report: FAIL: message (file:line)
    assert run.results[0].error == "FAIL: one is two: expected 1, got 2 (test/f.test.lua:2)"
    run = run_plugin_tests(p, PluginSettings(max_instructions=2_000_000), name_filter="spins")
    assert run.results[0].ok is False and "instruction budget exceeded" in run.results[0].error
    assert format_run(run).splitlines()[-1] == "0 passed, 1 failed"


def test_syntax_error_in_a_test_file_is_a_failure_not_a_crash(tmp_path):
    p = make(tmp_path, {"bad.test.lua": "function test_x( end", "good.test.lua": "function test_ok() end"})
    run = run_plugin_tests(p)
    assert (run.passed, run.failed) == (1, 1)
    assert "syntax error" in run.results[0].error


def test_request_table_matches_what_the_server_gives(tmp_path):
    p = write_plugin(tmp_path, "echo", """
http.handle("GET", "/echo/{id}", function(req)
  return {json = {path = req.path, q = req.query.q, id = req.params.id}}
end)
""")
    (p / "test").mkdir()
    (p / "test" / "e.test.lua").write_text("""
function test_full_path_and_decoded_first_query_value()
  local res = test.request("GET", "/echo/7?q=a%20b&q=second")
  test.assert_eq(res.json.path, "/api/v1/plugins/echo/echo/7")
  test.assert_eq(res.json.q, "a b")
  test.assert_eq(res.json.id, "7")
end
""")
    run = run_plugin_tests(p)
    assert (run.passed, run.failed) == (1, 0), format_run(run)
