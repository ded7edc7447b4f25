"""`modula plugin test` with ModulaCMS's harness functions (SPEC 3.9): test.setup/test.teardown (and global
setup()/teardown()), assert_neq, assert_contains, fire_hook, mock_request, request with the full path and
auth=, and exit 2 without a test/ folder."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from modula_desktop.core.plugins.authoring.testrunner import format_run, run_plugin_tests

ROOT = Path(__file__).resolve().parents[1]

# A plugin written the ModulaCMS way: a table made in on_init, hooks on content_data, a public and an
# authenticated route, and outbound requests to a registered domain.
INIT = """
plugin_info = {
  name = "harness_demo", version = "1.0.0", description = "ModulaCMS-style harness fixture",
  permissions = {"db", "http", "hooks", "hooks:before", "request"},
}
request.register("api.weather.example", {description = "forecasts"})

http.handle("GET", "/ping", function(req) return {status = 200, json = {pong = true}} end, {public = true})
http.handle("POST", "/echo", function(req) return {status = 200, json = req.json} end)
http.handle("GET", "/forecast", function(req)
  local port = req.query.port and (":" .. req.query.port) or ""
  local r = request.get("https://api.weather.example" .. port .. "/v1/today", {parse_json = true})
  if r.error then return {status = 502, json = {error = r.error}} end
  return {json = {sky = r.json.sky, status = r.status}}
end)

hooks.on("before_create", "content_data", function(data)
  if data.title == "forbidden" then error("title not allowed") end
  if data.title == "call out" then request.get("https://api.weather.example/v1/today") end
end)
hooks.on("after_create", "content_data", function(data)
  db.insert("seen", {title = data.title})
end)

function on_init()
  db.define_table("seen", {columns = {{name = "title", type = "text", not_null = true}}})
end
"""

BASIC = """
local setup_runs = 0
local teardown_runs = 0
test.setup(function() setup_runs = setup_runs + 1 end)
test.teardown(function() teardown_runs = teardown_runs + 1 end)

function test_assertions()
  test.assert(true)
  test.assert_eq(1, 1)
  test.assert_neq(1, 2)
  test.assert_neq("a", "b")
  test.assert_neq(nil, 1)
  test.assert_contains("hello world", "world")
  test.assert_contains("a.b", ".")  -- plain text, not a pattern
  test.assert_nil(nil)
  test.assert_not_nil(0)
  test.assert_error(function() error("boom") end)
end

function test_full_and_relative_paths()
  local full = test.request("GET", "/api/v1/plugins/harness_demo/ping")
  test.assert_eq(full.status, 200)
  test.assert_eq(full.json.pong, true)
  local rel = test.request("GET", "/ping")
  test.assert_eq(rel.status, 200)
  test.assert_eq(test.request("GET", "/api/v1/plugins/harness_demo/nope").status, 404)
  test.assert_eq(test.request("GET", "/api/v1/plugins/harness_demo/nope").json.error.code, "ROUTE_NOT_FOUND")
end

function test_body_is_sent_as_json()
  local r = test.request("POST", "/api/v1/plugins/harness_demo/echo", {body = '{"msg":"hi"}'})
  test.assert_eq(r.status, 200)
  test.assert_eq(r.json.msg, "hi")
end

function test_auth_option()
  test.assert_eq(test.request("POST", "/echo", {auth = "none", body = "{}"}).status, 401)
  test.assert_eq(test.request("POST", "/echo", {auth = "none", body = "{}"}).json.error.code, "UNAUTHORIZED")
  test.assert_eq(test.request("GET", "/ping", {auth = "none"}).status, 200)  -- public
  test.assert_eq(test.request("POST", "/echo", {auth = "viewer", body = "{}"}).status, 200)
  test.assert_error(function() test.request("GET", "/ping", {auth = "root"}) end)
end

function test_fire_hook()
  test.assert_nil(test.fire_hook("before_create", "content_data", {title = "fine"}))
  test.assert_contains(test.fire_hook("before_create", "content_data", {title = "forbidden"}), "title not allowed")
  test.assert_nil(test.fire_hook("after_create", "content_data", {title = "x"}))
  test.assert_eq(db.count("seen", {}), 1)
  test.assert_error(function() test.fire_hook("before_sneeze", "content_data", {}) end)
  -- as when served, a before-hook may not wait on the network
  test.assert_contains(test.fire_hook("before_create", "content_data", {title = "call out"}),
                       "cannot be called inside a before-hook handler")
end

function test_mock_request()
  test.mock_request("GET", "api.weather.example/v1/today", {status = 200, json = {sky = "clear"}})
  local r = test.request("GET", "/forecast")
  test.assert_eq(r.status, 200)
  test.assert_eq(r.json.sky, "clear")
end

function test_mock_rules_are_cleared_between_tests()
  local r = test.request("GET", "/forecast")
  test.assert_eq(r.status, 502)
  test.assert_contains(r.json.error, "mock: no rule matched GET https://api.weather.example/v1/today")
end

function test_setup_ran_before_each_test()
  test.assert(setup_runs >= 1, "setup should have run")
end

function test_savepoint_isolation()
  test.assert_eq(db.count("seen", {}), 0)
end
"""

FAILURES = """
function test_neq_fails() test.assert_neq({a = 1}, {a = 1}, "tables") end
function test_contains_fails() test.assert_contains("abc", "z") end
"""

GLOBAL_AROUND = """
calls = {}
function setup() calls[#calls + 1] = "setup" end
function teardown() error("cleanup broke") end
function test_global_setup_runs() test.assert_eq(calls[#calls], "setup") end
"""

BAD_SETUP = """
test.setup(function() error("no fixture") end)
function test_never_runs() test.assert(true) end
"""


def make_plugin(tmp_path, tests: dict | None):
    d = tmp_path / "harness_demo"
    d.mkdir()
    (d / "init.lua").write_text(textwrap.dedent(INIT))
    if tests is not None:
        (d / "test").mkdir()
        for name, src in tests.items():
            (d / "test" / name).write_text(textwrap.dedent(src))
    return d


def by_name(run):
    return {r.name: r for r in run.results}


def test_modulacms_harness_functions_pass(tmp_path):
    run = run_plugin_tests(make_plugin(tmp_path, {"basic.test.lua": BASIC}))
    assert run.load_error is None, run.load_error
    failed = {r.name: r.error for r in run.results if not r.ok}
    assert failed == {}
    assert run.passed == 9 and run.exit_code == 0


def test_failure_messages(tmp_path):
    run = run_plugin_tests(make_plugin(tmp_path, {"f.test.lua": FAILURES, "g.test.lua": GLOBAL_AROUND,
                                                  "s.test.lua": BAD_SETUP}))
    r = by_name(run)
    assert "tables: expected values to differ, both are" in r["test_neq_fails"].error
    assert 'string "abc" does not contain "z"' in r["test_contains_fails"].error
    # the global setup() ran (the test saw it); the global teardown() failed the test afterwards
    assert r["test_global_setup_runs"].error.startswith("ERROR: teardown error: ")
    assert "cleanup broke" in r["test_global_setup_runs"].error
    assert r["test_never_runs"].error.startswith("ERROR: setup error: ") and "no fixture" in r["test_never_runs"].error
    assert run.exit_code == 1


def test_no_test_folder_exits_2(tmp_path):
    path = make_plugin(tmp_path, None)
    run = run_plugin_tests(path)
    assert run.exit_code == 2
    assert "no test/ directory found" in format_run(run)
    r = subprocess.run([sys.executable, "-m", "modula_desktop", "plugin", "test", str(path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no test/ directory found" in r.stdout


def test_the_same_plugin_served(tmp_path):
    """The fixture plugin above, served by a real site: the routes, the hooks, and its outbound request
    to a real https server (on loopback, under the host name it registered)."""
    import shutil
    import ssl

    import pytest
    from _outbound_servers import LoopbackServer, make_cert
    from _server_fixtures import running_site

    from modula_desktop.core.plugins.api.outbound import OutboundClient

    if shutil.which("openssl") is None:
        pytest.skip("openssl makes the test certificate")
    site = tmp_path / "site"
    (site / "plugins").mkdir(parents=True)
    make_plugin(site / "plugins", {"basic.test.lua": BASIC})
    cert, key = make_cert(tmp_path, "api.weather.example")
    with LoopbackServer(tls=(cert, key)) as upstream, \
            running_site(site, {"allow_localhost": True}, plugins=()) as r:
        svc, c = r.service, r.client
        svc.plugins.outbound = OutboundClient(svc.settings.plugins, resolver=lambda h, p: ["127.0.0.1"],
                                              ssl_context=ssl.create_default_context(cafile=cert))
        assert c.post("/api/v1/admin/plugins/harness_demo/reload").status == 200
        c.approve_all("harness_demo")
        info = c.get("/api/v1/admin/plugins/harness_demo").json()
        assert c.post("/api/v1/admin/plugins/hooks/approve", json={"hooks": [
            {"plugin": "harness_demo", "event": h["event"], "table": h["table"]} for h in info["hooks"]]}).status == 200
        assert c.get("/api/v1/plugins/harness_demo/ping", token=False).json() == {"pong": True}
        assert c.post("/api/v1/plugins/harness_demo/echo", json={"msg": "hi"}).json() == {"msg": "hi"}
        assert c.post("/api/v1/plugins/harness_demo/echo", json={}, token=False).status == 401
        # the domain is not approved yet: nothing reaches the upstream
        res = c.get(f"/api/v1/plugins/harness_demo/forecast?port={upstream.port}")
        assert res.status == 502 and res.json()["error"] == "domain not approved: api.weather.example"
        assert upstream.requests == []
        c.post("/api/v1/admin/plugins/domains/approve",
               json={"domains": [{"plugin": "harness_demo", "domain": "api.weather.example"}]})
        res = c.get(f"/api/v1/plugins/harness_demo/forecast?port={upstream.port}")
        assert res.json() == {"sky": "clear", "status": 200}
        assert c.post("/api/v1/admin/content", json={"type": "post", "title": "forbidden", "slug": "f"}).status == 422
        assert c.post("/api/v1/admin/content", json={"type": "post", "title": "fine", "slug": "g"}).status == 201
