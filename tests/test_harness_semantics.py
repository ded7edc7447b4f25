"""`modula plugin test` with the exact semantics of ModulaCMS's harness (internal/plugin/testing): assertions
are counted and a failed one is recorded with its line while the test goes on; assert_eq takes the
expected value first; assert_error's second argument is text the error must contain; test.request
answers what a client gets (the JSON text as body, lower-case headers, the error envelope, a handler's
error text in the plugin's log only); teardown errors are recorded beside the test's; a test/ folder
without *.test.lua files exits 2; the plugin is its plugin_info.name."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from modula_desktop.core.plugins.authoring.testrunner import format_run, run_plugin_tests

ROOT = Path(__file__).resolve().parents[1]

INIT = """
plugin_info = {name = "sem", version = "1.0.0", description = "harness semantics", permissions = {"http", "db"}}
http.handle("GET", "/ok", function(req) return {json = {ok = true}} end)
http.handle("GET", "/text", function(req)
  return {body = "plain", headers = {["X-Mine"] = "yes", ["Set-Cookie"] = "a=b", ["Content-Type"] = "text/csv"}}
end)
http.handle("GET", "/boom", function(req) error("secret detail " .. req.query.n) end)
http.handle("GET", "/status", function(req) return {status = 42} end)
function on_init() db.define_table("rows", {columns = {{name = "v", type = "text"}}}) end
"""


def plugin(tmp_path, tests: dict, folder: str = "sem", init: str = INIT) -> Path:
    d = tmp_path / folder
    (d / "test").mkdir(parents=True)
    (d / "init.lua").write_text(textwrap.dedent(init))
    for name, src in tests.items():
        (d / "test" / name).write_text(textwrap.dedent(src))
    return d


def results(run):
    return {r.name: r for r in run.results}


def test_failed_assertions_are_recorded_with_their_lines_and_the_test_goes_on(tmp_path):
    run = run_plugin_tests(plugin(tmp_path, {"a.test.lua": """
        function test_three_failures()
          test.assert(false, "first")
          test.assert_eq(200, 404)
          test.assert_nil("x", "third")
          test.assert(true)
        end
        function test_counts_assertions()
          test.assert(true); test.assert_eq(1, 1); test.assert_contains("abc", "b")
        end
        """}))
    r = results(run)
    bad = r["test_three_failures"]
    assert not bad.ok and bad.assertions == 4
    assert [(f["message"], f["line"]) for f in bad.failures] == [
        ("first", 3), ("expected 200, got 404", 4), ('third: expected nil, got "x"', 5)]
    assert bad.error.splitlines() == ["FAIL: first (test/a.test.lua:3)",
                                      "FAIL: expected 200, got 404 (test/a.test.lua:4)",
                                      'FAIL: third: expected nil, got "x" (test/a.test.lua:5)']
    good = r["test_counts_assertions"]
    assert good.ok and good.assertions == 3 and good.failures == [] and good.error is None
    # ModulaCMS's result fields in the JSON report, beside ours
    d = bad.to_dict()
    assert (d["test"], d["passed"], d["assertions"]) == ("test_three_failures", False, 4)
    assert d["failures"][0] == {"message": "first", "line": 3, "error": False}


def test_a_lua_error_ends_the_test_after_the_failures_before_it(tmp_path):
    run = run_plugin_tests(plugin(tmp_path, {"a.test.lua": """
        function test_then_error()
          test.assert_eq(1, 2)
          local t = nil
          return t.field
        end
        """}))
    r = run.results[0]
    assert [f.get("error", False) for f in r.failures] == [False, True]
    assert "attempt to index" in r.failures[1]["message"]
    assert r.error.splitlines()[1].startswith("ERROR: test/a.test.lua:5: attempt to index")


def test_assert_error_checks_the_text_the_error_must_contain(tmp_path):
    run = run_plugin_tests(plugin(tmp_path, {"a.test.lua": """
        function test_contains() test.assert_error(function() error("specific message") end, "specific") end
        function test_plain_text() test.assert_error(function() error("a.b (c)") end, "a.b (c)") end
        function test_wrong_text() test.assert_error(function() error("other") end, "specific") end
        function test_no_error() test.assert_error(function() end) end
        """}))
    r = results(run)
    assert r["test_contains"].ok and r["test_plain_text"].ok
    assert r["test_wrong_text"].failures[0]["message"] == (
        'error "test/a.test.lua:4: other" does not contain "specific"')
    assert r["test_no_error"].failures[0]["message"] == "expected function to raise an error, but it did not"


def test_request_answers_what_a_client_gets(tmp_path):
    run = run_plugin_tests(plugin(tmp_path, {"a.test.lua": """
        function test_json_answer()
          local r = test.request("GET", "/api/v1/plugins/sem/ok")
          test.assert_eq(200, r.status)
          test.assert_eq('{"ok":true}', r.body)
          test.assert_eq(true, r.json.ok)
          test.assert_eq("application/json", r.headers["content-type"])
          test.assert_eq("nosniff", r.headers["x-content-type-options"])
        end
        function test_text_answer()
          local r = test.request("GET", "/text")
          test.assert_eq("plain", r.body)
          test.assert_nil(r.json)
          test.assert_eq("yes", r.headers["x-mine"])
          test.assert_eq("text/csv", r.headers["content-type"])
          test.assert_nil(r.headers["set-cookie"])
        end
        function test_handler_error()
          local r = test.request("GET", "/boom?n=7")
          test.assert_eq(500, r.status)
          test.assert_eq("HANDLER_ERROR", r.json.error.code)
          test.assert_eq("internal plugin error", r.json.error.message)
          test.assert_eq(r.headers["x-request-id"], r.json.error.request_id)
          test.assert(not string.find(r.body, "secret detail", 1, true), "the Lua error never reaches the client")
          BOOM_ID = r.json.error.request_id
          test.assert(false, "show the log")
        end
        function test_bad_status()
          test.assert_eq("HANDLER_ERROR", test.request("GET", "/status").json.error.code)
        end
        function test_not_found_and_unauthorized()
          local r = test.request("GET", "/api/v1/plugins/sem/none")
          test.assert_eq(404, r.status)
          test.assert_eq("the requested plugin endpoint does not exist", r.json.error.message)
          test.assert_eq(401, test.request("GET", "/ok", {auth = "none"}).status)
          test.assert_eq("INVALID_REQUEST", test.request("GET", "/ok", {body = "{"}).json.error.code)
        end
        """}))
    r = results(run)
    for name in ("test_json_answer", "test_text_answer", "test_bad_status", "test_not_found_and_unauthorized"):
        assert r[name].ok, (name, r[name].error)
    boom = r["test_handler_error"]
    assert [f["message"] for f in boom.failures] == ["show the log"]
    # the handler's error went to the plugin's log under the answer's request id, and is shown with the test
    entry = [e for e in boom.logs if e["level"] == "error"][0]
    assert "secret detail 7" in entry["message"] and entry["context"]["request_id"]
    assert "log [error] GET /boom: " in format_run(run) and "secret detail 7" in format_run(run)


def test_teardown_errors_are_recorded_beside_the_tests_own(tmp_path):
    run = run_plugin_tests(plugin(tmp_path, {"a.test.lua": """
        test.teardown(function() error("cleanup broke") end)
        function test_fails_too() test.assert(false, "own failure") end
        """}))
    r = run.results[0]
    assert [f["message"] for f in r.failures][0] == "own failure"
    assert r.failures[1]["message"].startswith("teardown error: ") and "cleanup broke" in r.failures[1]["message"]


def test_a_test_folder_without_test_files_exits_2(tmp_path):
    path = plugin(tmp_path, {"notes.txt": "not a test"})
    run = run_plugin_tests(path)
    assert run.exit_code == 2 and run.missing_tests.startswith("no *.test.lua files found in")
    r = subprocess.run([sys.executable, "-m", "modula_desktop", "plugin", "test", str(path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no *.test.lua files found" in r.stdout


def test_a_folder_named_otherwise_is_tested_under_its_plugin_info_name(tmp_path):
    path = plugin(tmp_path, {"a.test.lua": """
        function test_full_path_uses_the_name()
          test.assert_eq(200, test.request("GET", "/api/v1/plugins/sem/ok").status)
          test.assert_eq(404, test.request("GET", "/api/v1/plugins/sem-checkout/ok").status)
          db.insert("rows", {v = "x"})
          test.assert_eq(1, db.count("rows", {}))
        end
        """}, folder="sem-checkout")
    run = run_plugin_tests(path)
    assert run.plugin == "sem" and run.exit_code == 0, format_run(run)
    r = subprocess.run([sys.executable, "-m", "modula_desktop", "plugin", "test", str(path), "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    data = json.loads(r.stdout)
    assert r.returncode == 0 and data["plugin"] == "sem" and data["tests"][0]["assertions"] == 3
