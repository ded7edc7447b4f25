"""The core module (SPEC 3.10): plugins reading and writing the site's content, by a fixed table policy,
through the content service, approved per plugin. Real Lua, real SQLite, the real server."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from _server_fixtures import Client, running_site, wait_for, wait_until_served_loaded
from helpers import write_plugin

CORE_PERMS = 'permissions = {"http", "core:read", "core:write"}'

# A plugin that hands every core.* call to the test: POST /call {fn=, args=[...]} answers
# {ok=<first result>, err=<second>} or the raised error as 500 in its log.
CALLER = """
local function pack(...) return {n = select("#", ...), ...} end
http.handle("POST", "/call", function(req)
  local fn = core[req.json.fn]
  local args = req.json.args or {}
  local r = pack(fn(args[1], args[2]))
  return {json = {ok = r[1], err = r[2], n = r.n, kind = type(r[1])}}
end)
http.handle("POST", "/raises", function(req)
  local ok, err = pcall(core[req.json.fn], req.json.args[1], req.json.args[2])
  return {json = {raised = not ok, err = not ok and err or nil}}
end)
http.handle("GET", "/count_loop", function(req)
  for i = 1, tonumber(req.query.n) do core.count("content") end
  return {json = {done = true}}
end)
"""


def approve_core(client: Client, plugin: str, *access: str):
    r = client.post("/api/v1/admin/plugins/core/approve",
                    json={"core": [{"plugin": plugin, "access": a} for a in access]})
    assert r.status == 200, r.body
    return r


def call(client: Client, fn: str, *args, plugin="caller"):
    r = client.post(f"/api/v1/plugins/{plugin}/call", json={"fn": fn, "args": list(args)})
    assert r.status == 200, (r.status, r.body)
    out = r.json()  # a nil field is left out of the JSON
    return {"ok": out.get("ok"), "err": out.get("err"), "n": out.get("n"), "kind": out.get("kind")}


def raises(client: Client, fn: str, *args, plugin="caller"):
    r = client.post(f"/api/v1/plugins/{plugin}/raises", json={"fn": fn, "args": list(args)})
    assert r.status == 200, (r.status, r.body)
    out = r.json()
    return {"raised": out.get("raised"), "err": out.get("err")}


@pytest.fixture()
def site(tmp_path):
    write_plugin(tmp_path, "caller", CALLER, info_extra=CORE_PERMS)
    with running_site(tmp_path, plugins=(), plugin_settings={"core_max_write_rows": 3, "rate_limit": 1e6,
                                                            "rate_burst": 1_000_000}) as run:
        run.client.approve_all("caller")
        content = run.service.content
        content.create({"title": "Alpha", "body": "first", "status": "published"})
        content.create({"title": "Beta", "body": "second", "type": "post", "fields": {"tag": "x"}})
        content.create({"title": "Gamma", "body": "third"})
        yield run


def plugin_log(run, name: str) -> str:
    return "\n".join(e["message"] for e in run.service.logbook.entries(name, 200))


def entries(run) -> list[dict]:
    return run.service.content.list()


# ---- approval --------------------------------------------------------------------------------
def test_unapproved_plugin_reads_and_writes_nothing(site):
    c = site.client
    out = call(c, "query", "content")
    assert out["ok"] is None and "has no approved read access" in out["err"]
    out = call(c, "insert", "content", {"title": "Sneaky"})
    assert out["ok"] is None and "has no approved write access" in out["err"]
    assert len(entries(site)) == 3
    assert "modula plugin approve caller --core read" in plugin_log(site, "caller")


def test_read_approval_does_not_allow_writes(site):
    c = site.client
    approve_core(c, "caller", "read")
    assert call(c, "count", "content")["ok"] == 3
    out = call(c, "update", "content", {"set": {"title": "X"}, "where": {"title": "Alpha"}})
    assert out["ok"] is None and "write access" in out["err"]
    assert {e["title"] for e in entries(site)} == {"Alpha", "Beta", "Gamma"}


def test_revoked_access_is_refused_again(site):
    c = site.client
    approve_core(c, "caller", "read")
    assert call(c, "count", "content")["ok"] == 3
    r = c.post("/api/v1/admin/plugins/core/revoke", json={"core": [{"plugin": "caller", "access": "read"}]})
    assert r.status == 200
    assert call(c, "count", "content")["ok"] is None


def test_admin_api_lists_and_checks_core_access(site):
    c = site.client
    body = c.get("/api/v1/admin/plugins/core").json()
    assert body == {"core": [{"plugin": "caller", "state": "running", "access": "read", "approved": False},
                             {"plugin": "caller", "state": "running", "access": "write", "approved": False}]}
    bad = c.post("/api/v1/admin/plugins/core/approve", json={"core": [{"plugin": "caller", "access": "admin"}]})
    assert bad.status == 400 and b"read" in bad.body
    info = c.get("/api/v1/admin/plugins/caller").json()
    assert info["core"] == [{"access": "read", "approved": False}, {"access": "write", "approved": False}]
    assert "core:read" in info["effective_permissions"]


def test_undeclared_access_cannot_be_approved(tmp_path):
    write_plugin(tmp_path, "reader", CALLER, info_extra='permissions = {"http", "core:read"}')
    with running_site(tmp_path, plugins=()) as run:
        c = run.client
        r = c.post("/api/v1/admin/plugins/core/approve", json={"core": [{"plugin": "reader", "access": "write"}]})
        assert r.status == 400
        run.service.approvals.approve_core("reader", "write")  # even approved behind its back
        c.approve_all("reader")
        out = call(c, "insert", "content", {"title": "x"}, plugin="reader")
        assert out["ok"] is None and "did not declare the 'core:write' permission" in out["err"]
        assert entries(run) == []


def test_plugin_without_core_permission_has_no_core_module(tmp_path):
    write_plugin(tmp_path, "plain", """
http.handle("GET", "/t", function() return {json = {core = type(core)}} end)
""", info_extra='permissions = {"http"}')
    with running_site(tmp_path, plugins=()) as run:
        run.client.approve_all("plain")
        assert run.client.get("/api/v1/plugins/plain/t").json() == {"core": "nil"}


def test_changed_permissions_reset_core_approval(site):
    c = site.client
    approve_core(c, "caller", "read", "write")
    root = site.path / "plugins" / "caller" / "init.lua"
    root.write_text(root.read_text().replace('"core:read", "core:write"', '"core:read"'))
    assert site.service.plugins.reload("caller")
    assert site.service.approvals.core_of("caller") == set()
    c.approve_all("caller")
    assert call(c, "count", "content")["ok"] is None


def test_new_version_resets_core_approval(site):
    approve_core(site.client, "caller", "read")
    root = site.path / "plugins" / "caller" / "init.lua"
    root.write_text(root.read_text().replace('version = "1.0.0"', 'version = "1.0.1"'))
    assert site.service.plugins.reload("caller")
    assert site.service.approvals.core_of("caller") == set()


# ---- the table policy, adversarially ----------------------------------------------------------
FORBIDDEN_TABLES = [
    # every other table of a site
    "plugin_route_approval", "plugin_hook_approval", "plugin_domain_approval", "plugin_core_approval",
    "plugin_record", "plugin_log", "schema_version", "plugin_schema", "content_revision_x",
    "plugin_caller__notes", "sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_sequence",
    # ModulaCMS's tables this app does not have
    "users", "tokens", "sessions", "content_fields", "datatypes", "media", "routes",
    # SQL-ish spellings of the allowed ones
    "CONTENT", "Content", " content", "content ", '"content"', "[content]", "`content`", "main.content",
    "temp.content", "content;", "content; DROP TABLE content", "content--", "content/*", "content\0",
    "content WHERE 1=1", "(SELECT * FROM plugin_core_approval)", "content UNION SELECT * FROM plugin_log",
    "", "*", "content_data ", "revisions;", "content_revision WHERE 1",
]


def test_every_other_table_is_refused(site):
    c = site.client
    approve_core(c, "caller", "read", "write")
    for name in FORBIDDEN_TABLES:
        for fn, args in (("query", ()), ("query_one", ()), ("count", ()), ("exists", ()),
                         ("insert", ({"title": "t"},)),
                         ("update", ({"set": {"title": "t"}, "where": {"title": "Alpha"}},)),
                         ("delete", ({"where": {"title": "Alpha"}},))):
            out = call(c, fn, name, *args)
            assert out["ok"] is None, (fn, name, out)
            assert "is not accessible to plugins" in out["err"], (fn, name, out)
    assert len(entries(site)) == 3
    names = {r[0] for r in sqlite3.connect(site.service.site.db_path).execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"content", "plugin_core_approval", "plugin_log"} <= names


def test_revisions_are_read_only(site):
    c = site.client
    approve_core(c, "caller", "read", "write")
    alpha = site.service.content.get_by_slug("alpha")
    rows = call(c, "query", "revisions", {"where": {"content_id": alpha["id"]}})["ok"]
    assert [r["number"] for r in rows] == [1] and rows[0]["title"] == "Alpha" and rows[0]["source"] == "app"
    for fn, args in (("insert", ({"content_id": alpha["id"], "title": "x"},)),
                     ("update", ({"set": {"title": "x"}, "where": {"content_id": alpha["id"]}},)),
                     ("delete", ({"where": {"content_id": alpha["id"]}},))):
        for table in ("revisions", "content_revision"):
            out = call(c, fn, table, *args)
            assert out["ok"] is None and "does not allow write access" in out["err"], out
    assert len(site.service.content.revisions(alpha["id"])) == 1


INJECTIONS = [
    {"where": {"slug = 'alpha' OR 1=1 --": 1}},
    {"where": {'"deleted_at"': "x"}},
    {"where": {"deleted_at": "x"}},          # a real column of the table, not one a plugin sees
    {"where": {"deleted_slug": "alpha"}},
    {"where": [["title", "= 'x' OR 1=1 --", "x"]]},
    {"where": [["1=1) OR (title", "=", "x"]]},
    {"where_or": [{"title); DROP TABLE content; --": "x"}]},
    {"order_by": "title; DROP TABLE content"},
    {"order_by": "title DESC, (SELECT secret FROM plugin_log)"},
    {"order_by": [{"column": "deleted_at"}]},
    {"order_by": [{"column": '"title"'}]},
    {"columns": ["*"]},
    {"columns": ["deleted_slug"]},
    {"columns": ["title, (SELECT group_concat(name) FROM sqlite_master)"]},
    {"columns": ['"title"']},
    {"limit": "1; DROP TABLE content"},
    {"joins": [{"table": "plugin_log"}]},
    {"group_by": ["title"]},
    {"having": {"title": "x"}},
]


def test_injection_in_options_is_refused(site):
    c = site.client
    approve_core(c, "caller", "read")
    for opts in INJECTIONS:
        for fn in ("query", "query_one", "count", "exists"):
            out = call(c, fn, "content", opts)
            assert out["ok"] is None and out["err"].startswith(f"core.{fn}"), (fn, opts, out)
    assert len(entries(site)) == 3


def test_values_are_bound_never_spliced(site):
    c = site.client
    approve_core(c, "caller", "read")
    for value in ("' OR '1'='1", "alpha' --", "alpha\"; DROP TABLE content; --", "%"):
        assert call(c, "query", "content", {"where": {"slug": value}})["ok"] == []
    out = call(c, "query", "content", {"where": [["title", "LIKE", "%a%"]], "order_by": "title"})
    assert [r["title"] for r in out["ok"]] == ["Alpha", "Beta", "Gamma"]


def test_trash_is_invisible(site):
    c = site.client
    approve_core(c, "caller", "read")
    beta = site.service.content.get_by_slug("beta")
    site.service.content.delete(beta["id"])
    assert call(c, "count", "content")["ok"] == 2
    assert call(c, "query_one", "content", {"where": {"id": beta["id"]}})["ok"] is None
    assert call(c, "query", "revisions", {"where": {"content_id": beta["id"]}})["ok"] == []


# ---- ModulaCMS's signatures and result shapes --------------------------------------------------
def test_reads_return_modulacms_shapes(site):
    c = site.client
    approve_core(c, "caller", "read")
    rows = call(c, "query", "content", {"order_by": "title", "desc": True})["ok"]
    assert [r["title"] for r in rows] == ["Gamma", "Beta", "Alpha"]
    assert set(rows[0]) >= {"id", "type", "title", "slug", "body", "status", "created_at", "updated_at"}
    beta = rows[1]
    assert beta["fields"] == {"tag": "x"} and beta["type"] == "post"
    assert call(c, "query", "content", {"where": {"title": "nope"}})["kind"] == "table"  # never nil
    one = call(c, "query_one", "content", {"where": {"status": "published"}})
    assert one["ok"]["title"] == "Alpha" and one["n"] == 1
    assert call(c, "query_one", "content", {"where": {"title": "nope"}})["ok"] is None
    assert call(c, "count", "content", {"where": {"status": "draft"}})["ok"] == 2
    assert call(c, "exists", "content", {"where": {"slug": "gamma"}})["ok"] is True
    assert call(c, "exists", "content", {"where": {"slug": "delta"}})["ok"] is False
    cols = call(c, "query", "content", {"columns": ["title"], "order_by": [{"column": "title", "desc": False}],
                                        "limit": 2, "offset": 1})["ok"]
    assert cols == [{"title": "Beta"}, {"title": "Gamma"}]
    # the where forms of db: markers and the sequence form
    seq = call(c, "query", "content", {"where": [["OR", [["title", "=", "Alpha"], ["title", "=", "Gamma"]]]],
                                       "order_by": "title"})["ok"]
    assert [r["title"] for r in seq] == ["Alpha", "Gamma"]
    ors = call(c, "query", "content", {"where_or": [{"title": "Beta"}, {"title": "Gamma"}], "order_by": "title"})
    assert [r["title"] for r in ors["ok"]] == ["Beta", "Gamma"]


def test_content_data_alias_speaks_modulacms_column_names(site):
    c = site.client
    approve_core(c, "caller", "read")
    alpha = site.service.content.get_by_slug("alpha")
    row = call(c, "query_one", "content_data", {"where": {"content_data_id": alpha["id"]}})["ok"]
    assert row["content_data_id"] == row["id"] == alpha["id"]
    assert row["date_created"] == alpha["created_at"] and row["date_modified"] == alpha["updated_at"]
    assert row["status"] == "published"
    rows = call(c, "query", "content_data", {"order_by": "date_created", "columns": ["content_data_id"]})["ok"]
    assert len(rows) == 3 and set(rows[0]) == {"content_data_id"}
    # our own table name keeps our column names only
    assert "content_data_id" not in call(c, "query_one", "content")["ok"]


def test_argument_errors_and_budgets_raise(site):
    c = site.client
    approve_core(c, "caller", "read", "write")
    out = raises(c, "query", 42)
    assert out["raised"] and "bad argument #1 to 'query'" in out["err"]
    assert raises(c, "update", "content", {"where": {"title": "Alpha"}})["raised"]  # no set
    out = raises(c, "update", "content", {"set": {"title": "all"}})
    assert out["raised"] and "requires non-empty where" in out["err"]
    out = raises(c, "delete", "content", {})
    assert out["raised"] and "requires non-empty where" in out["err"]
    assert raises(c, "insert", "content")["raised"]
    # the op budget of db binds core too (1000 per request)
    r = c.get("/api/v1/plugins/caller/count_loop?n=1001")
    assert r.status in (500, 504)
    assert "operation budget exceeded" in plugin_log(site, "caller")
    assert c.get("/api/v1/plugins/caller/count_loop?n=900").status == 200


# ---- writes through the content service --------------------------------------------------------
def test_insert_goes_through_the_content_service(site):
    c = site.client
    approve_core(c, "caller", "read", "write")
    seen = []
    site.service.content.add_listener(lambda event, entry: seen.append((event, entry["title"])))
    out = call(c, "insert", "content", {"title": "Made by a plugin", "body": "*hi*", "status": "published",
                                        "id": "ignored", "content_data_id": "ignored", "fields": {"a": 1}})
    entry = out["ok"]
    assert entry["slug"] == "made-by-a-plugin" and entry["id"] != "ignored" and entry["published_at"]
    assert entry["fields"] == {"a": 1}
    revs = site.service.content.revisions(entry["id"])
    assert len(revs) == 1 and revs[0]["source"] == "plugin:caller"
    assert seen == [("create", "Made by a plugin")]
    # validation applies exactly as for the GUI
    bad = call(c, "insert", "content", {"title": "x", "slug": "Not A Slug"})
    assert bad["ok"] is None and "may contain only lowercase letters" in bad["err"]
    dup = call(c, "insert", "content", {"title": "x", "slug": "alpha"})
    assert dup["ok"] is None and "already used" in dup["err"]
    unknown = call(c, "insert", "content", {"title": "x", "route_id": "r1"})
    assert unknown["ok"] is None and "Unknown field 'route_id'" in unknown["err"]
    assert len(entries(site)) == 4


def test_update_and_delete_change_entries_through_the_service(site):
    c = site.client
    approve_core(c, "caller", "read", "write")
    out = call(c, "update", "content", {"set": {"status": "published"}, "where": {"status": "draft"}})
    assert out["ok"] == 2
    assert {e["status"] for e in entries(site)} == {"published"}
    beta = site.service.content.get_by_slug("beta")
    revs = site.service.content.revisions(beta["id"])
    assert [r["source"] for r in revs] == ["plugin:caller", "app"] and beta["published_at"]
    out = call(c, "delete", "content", {"where": {"title": "Gamma"}})
    assert out["ok"] == 1
    assert [e["title"] for e in site.service.content.trash()] == ["Gamma"]
    assert call(c, "delete", "content", {"where": {"title": "nobody"}})["ok"] == 0


def test_write_row_limit_changes_nothing(site):
    c = site.client
    approve_core(c, "caller", "read", "write")
    site.service.content.create({"title": "Delta"})
    out = call(c, "update", "content", {"set": {"body": "same"}, "where": [["title", "LIKE", "%"]]})
    assert out["ok"] is None and "exceeding the limit of 3" in out["err"]
    assert not any(e["body"] == "same" for e in site.service.content.list())
    out = call(c, "delete", "content", {"where": [["title", "LIKE", "%"]]})
    assert out["ok"] is None and site.service.content.trash() == []


def test_a_failing_row_rolls_back_the_whole_update(site):
    c = site.client
    approve_core(c, "caller", "read", "write")
    out = call(c, "update", "content", {"set": {"slug": "same-slug"}, "where": [["title", "IN", ["Alpha", "Beta"]]]})
    assert out["ok"] is None and "already used" in out["err"]
    assert {e["slug"] for e in entries(site)} == {"alpha", "beta", "gamma"}


def test_other_plugins_hooks_apply_to_core_writes(tmp_path):
    write_plugin(tmp_path, "caller", CALLER, info_extra=CORE_PERMS)
    write_plugin(tmp_path, "guard", """
hooks.on("before_create", "content", function(e)
  if string.find(e.title, "forbidden", 1, true) then error("no forbidden titles") end
  return {body = e.body .. " [checked]"}
end)
hooks.on("after_create", "content", function(e) db.insert("seen", {title = e.title}) end)
function on_init() db.define_table("seen", {columns = {{name = "title", type = "text"}}}) end
""", info_extra='permissions = {"hooks", "hooks:before", "db"}')
    with running_site(tmp_path, plugins=()) as run:
        c = run.client
        c.approve_all("caller")
        for event in ("before_create", "after_create"):
            run.service.approvals.approve_hook("guard", event, "content")
        approve_core(c, "caller", "write")
        refused = call(c, "insert", "content", {"title": "a forbidden title"})
        assert refused["ok"] is None and "no forbidden titles" in refused["err"]
        made = call(c, "insert", "content", {"title": "fine", "body": "b"})["ok"]
        assert made["body"] == "b [checked]"
        assert run.service.content.revisions(made["id"])[0]["changed_by"] == ["guard"]
        assert run.service.content.wait_for_hooks(10)
        seen = run.service.db.execute_sql('SELECT title FROM "plugin_guard__seen"').fetchall()
        assert seen == [("fine",)]


# ---- hooks that write content -------------------------------------------------------------------
RECURSIVE_BEFORE = """
hooks.on("before_create", "content", function(e)
  local made, err = core.insert("content", {title = "child of " .. e.title})
  if made == nil then error(err) end
end)
"""

FORGIVING_BEFORE = """
hooks.on("before_create", "content", function(e)
  local made, err = core.insert("content", {title = "child of " .. e.title})
  if made == nil then log.warn("insert refused: " .. err) end
end)
"""

RECURSIVE_AFTER = """
hooks.on("after_create", "content", function(e)
  core.insert("content", {title = "after " .. e.title})
end)
"""


def recursive_site(tmp_path, body: str, events=("before_create",)):
    write_plugin(tmp_path, "echo", body,
                 info_extra='permissions = {"hooks", "hooks:before", "core:write"}')
    ctx = running_site(tmp_path, plugins=())
    run = ctx.__enter__()
    for event in events:
        run.service.approvals.approve_hook("echo", event, "content")
    run.service.approvals.approve_core("echo", "write")
    return ctx, run


def test_a_before_hook_writing_content_cannot_recurse_without_end(tmp_path):
    from modula_desktop.core.errors import HookAbort

    ctx, run = recursive_site(tmp_path, RECURSIVE_BEFORE)
    try:
        with pytest.raises(HookAbort) as info:
            run.service.content.create({"title": "root"})
        assert "nested 3 deep" in str(info.value) and "core_max_depth" in str(info.value)
        assert run.service.content.count() == 0  # the whole chain rolled back
    finally:
        ctx.__exit__(None, None, None)


def test_a_forgiving_before_hook_stops_at_the_depth_limit(tmp_path):
    ctx, run = recursive_site(tmp_path, FORGIVING_BEFORE)
    try:
        seen = []
        run.service.content.add_listener(lambda event, entry: seen.append(entry["title"]))
        run.service.content.create({"title": "root"})
        # the third nested write fires a hook whose own write is refused (raised): that hook fails, so
        # the third write is aborted; the hooks above it forgive and their writes stand
        titles = sorted(e["title"] for e in run.service.content.list())
        assert titles == ["child of child of root", "child of root", "root"]
        # listeners heard of the nested changes only once the outermost one committed, innermost first
        assert seen == ["child of child of root", "child of root", "root"]
        log = plugin_log(run, "echo")
        assert "insert refused: core.insert: content writes nested 3 deep" in log
    finally:
        ctx.__exit__(None, None, None)


def test_nested_changes_of_a_refused_change_are_rolled_back_and_never_announced(tmp_path):
    write_plugin(tmp_path, "guard", """
hooks.on("before_create", "content", function(e)
  if e.title == "root" then error("root refused") end
end, {priority = 500})
""", info_extra='permissions = {"hooks", "hooks:before"}')
    ctx, run = recursive_site(tmp_path, FORGIVING_BEFORE.replace(
        "function(e)", 'function(e)\n  if e.title ~= "root" then return end', 1))
    try:
        run.service.approvals.approve_hook("guard", "before_create", "content")
        seen = []
        run.service.content.add_listener(lambda event, entry: seen.append(entry["title"]))
        from modula_desktop.core.errors import HookAbort
        with pytest.raises(HookAbort, match="root refused"):
            run.service.content.create({"title": "root"})
        assert run.service.content.count() == 0 and seen == []
        run.service.content.create({"title": "other"})
        assert seen == ["other"]
    finally:
        ctx.__exit__(None, None, None)


def test_after_hooks_writing_content_stop_at_the_depth_limit(tmp_path):
    ctx, run = recursive_site(tmp_path, RECURSIVE_AFTER, events=("after_create",))
    try:
        run.service.content.create({"title": "root"})

        def settled():
            return run.service.content.wait_for_hooks(5) and "nested 3 deep" in plugin_log(run, "echo")
        assert wait_for(settled, 30)
        titles = sorted(e["title"] for e in run.service.content.list())
        assert titles == ["after after after root", "after after root", "after root", "root"]
    finally:
        ctx.__exit__(None, None, None)


def test_core_write_inside_db_transaction_is_refused(tmp_path):
    write_plugin(tmp_path, "txn", """
function on_init() db.define_table("t", {columns = {{name = "n", type = "integer"}}}) end
http.handle("POST", "/t", function()
  local inner
  local ok, err = db.transaction(function()
    local made, e = pcall(core.insert, "content", {title = "in tx"})
    inner = e
    error("stop")
  end)
  return {json = {inner = inner}}
end)
""", info_extra='permissions = {"http", "db", "core:write"}')
    with running_site(tmp_path, plugins=()) as run:
        run.client.approve_all("txn")
        approve_core(run.client, "txn", "write")
        out = run.client.post("/api/v1/plugins/txn/t").json()
        assert "cannot be called inside db.transaction" in out["inner"]
        assert run.service.content.count() == 0


# ---- phases -------------------------------------------------------------------------------------
@pytest.mark.parametrize("where, body", [
    ("module scope", 'core.count("content")\n'),
    ("on_init()", 'function on_init() core.count("content") end\n'),
])
def test_core_is_refused_outside_calls(tmp_path, where, body):
    write_plugin(tmp_path, "early", body, info_extra='permissions = {"core:read"}')
    with running_site(tmp_path, plugins=()) as run:
        plugin = run.service.plugins.get("early")
        assert plugin.state == "failed"
        assert f"core.count() cannot be called {'at' if where == 'module scope' else 'inside'} {where}" in plugin.error


def test_core_is_refused_in_on_shutdown(tmp_path):
    write_plugin(tmp_path, "late", """
function on_shutdown() local ok, err = pcall(core.count, "content"); log.info("shutdown: " .. tostring(err)) end
""", info_extra='permissions = {"core:read"}')
    with running_site(tmp_path, plugins=()) as run:
        run.service.approvals.approve_core("late", "read")
        run.service.plugins.disable("late")
        assert wait_for(lambda: "cannot be called inside on_shutdown()" in plugin_log(run, "late"), 15)


# ---- ModulaCMS's core_access ---------------------------------------------------------------------
def test_modulacms_core_access_declares_core_read(tmp_path):
    write_plugin(tmp_path, "legacy", """
http.handle("GET", "/n", function()
  local n, err = core.count("content_data")
  local made, werr = core.insert("content_data", {title = "x"})
  return {json = {n = n, err = err, werr = werr}}
end)
""", info_extra='core_access = {content_data = {"read"}, users = {"read"}}')
    with running_site(tmp_path, plugins=()) as run:
        c = run.client
        info = c.get("/api/v1/admin/plugins/legacy").json()
        assert info["permissions"] is None and info["core_access"] == ["read"]
        assert info["core"] == [{"access": "read", "approved": False}]
        assert any("core_access.users" in w for w in info["warnings"])
        c.approve_all("legacy")
        approve_core(c, "legacy", "read")
        out = c.get("/api/v1/plugins/legacy/n").json()
        assert out["n"] == 0 and "did not declare the 'core:write' permission" in out["werr"]


# ---- modula plugin test --------------------------------------------------------------------------
def test_core_under_modula_plugin_test(tmp_path):
    from modula_desktop.core.plugins.authoring.testrunner import run_plugin_tests

    root = write_plugin(tmp_path, "tested", """
http.handle("POST", "/notes", function(req)
  local e, err = core.insert("content", {title = req.json.title})
  if not e then return {status = 422, json = {error = err}} end
  return {status = 201, json = e}
end)
""", info_extra='permissions = {"http", "core:read", "core:write"}')
    (root / "test").mkdir()
    (root / "test" / "core.test.lua").write_text(textwrap.dedent("""
        function test_insert_then_read()
          local r = test.request("POST", "/notes", {json = {title = "From a test"}})
          test.assert_eq(201, r.status)
          test.assert_eq(1, core.count("content"))
          local row = core.query_one("content", {where = {slug = "from-a-test"}})
          test.assert_eq("From a test", row.title)
          test.assert_eq(1, #core.query("revisions", {where = {content_id = row.id}}))
        end
        function test_rolled_back_between_tests()
          test.assert_eq(0, core.count("content"))
        end
        function test_policy_holds()
          local r, err = core.query("plugin_log")
          test.assert_nil(r)
          test.assert_contains(err, "not accessible")
        end
    """))
    run = run_plugin_tests(root)
    assert run.load_error is None, run.load_error
    assert [(r.name, r.ok, r.error) for r in run.results] == [
        ("test_insert_then_read", True, None), ("test_policy_holds", True, None),
        ("test_rolled_back_between_tests", True, None)]


# ---- the CLI ------------------------------------------------------------------------------------
def test_cli_approves_and_revokes_core_access(tmp_path):
    from test_cli_online import Served, modula

    (tmp_path / "plugins").mkdir()
    write_plugin(tmp_path, "caller", CALLER, info_extra=CORE_PERMS)
    served = Served(tmp_path)
    try:
        r = modula("plugin", "approve", "caller", "--core", "read", "--yes", "--site", tmp_path)
        assert r.returncode == 0, r.stderr
        assert "read access to the content" in r.stdout
        info = json.loads(modula("plugin", "info", "caller", "--json", "--site", tmp_path).stdout)
        assert info["core"] == [{"access": "read", "approved": True}, {"access": "write", "approved": False}]
        text = modula("plugin", "info", "caller", "--site", tmp_path).stdout
        assert "content access (core):" in text and "[unapproved] write" in text
        r = modula("plugin", "approve", "caller", "--core", "--yes", "--site", tmp_path)
        assert r.returncode == 0 and "write access" in r.stdout
        r = modula("plugin", "revoke", "caller", "--core", "--site", tmp_path)
        assert r.returncode == 0
        info = json.loads(modula("plugin", "info", "caller", "--json", "--site", tmp_path).stdout)
        assert not any(c["approved"] for c in info["core"])
    finally:
        served.stop()


def test_a_slow_core_query_stops_at_the_callers_deadline(tmp_path):
    write_plugin(tmp_path, "slow", """
http.handle("GET", "/slow", function()
  -- substring search with backtracking: about 7 ms per entry, one SQLite step each (only the
  -- watchdog's interrupt stops it; the progress handler never runs inside a step)
  local n = core.count("content", {where = {{"body", "LIKE", "%" .. string.rep("a", 80) .. "b%"}}})
  return {json = {n = n}}
end)
""", info_extra='permissions = {"http", "core:read"}')
    with running_site(tmp_path, plugins=(), plugin_settings={"timeout_s": 1.0}) as run:
        run.client.approve_all("slow")
        run.service.approvals.approve_core("slow", "read")
        db = run.service.db
        with db.atomic():
            db.connection().executemany(
                'INSERT INTO content (id, type, title, slug, body, status, fields, created_at, updated_at) '
                "VALUES (?, 'page', 't', ?, ?, 'draft', '{}', '2026-01-01', '2026-01-01')",
                [(f"id{i:05d}", f"s{i}", "a" * 20000) for i in range(1500)])
        r = run.client.get("/api/v1/plugins/slow/slow", timeout=60)
        assert r.status == 504, (r.status, r.body)
        assert "time budget exceeded" in plugin_log(run, "slow")
        # the app stays healthy: the next content change goes through
        run.service.content.create({"title": "after"})


def test_core_reads_use_the_callers_deadline(site):
    """The wiring the test above relies on: core's SQL runs under the running call's deadline, through
    db's _sql (progress handler and watchdog, tested with db in test_containment_db)."""
    import time

    from modula_desktop.core.plugins.api.core import CORE_TABLES
    from modula_desktop.core.plugins.errors import ApiError

    gen = site.service.plugins.get("caller").current
    vm = gen.pool.checkout(5, for_hook=True)
    try:
        reader = vm.core_module._reader()
        assert reader.deadline() is None  # outside a call
        sb = vm.sandbox
        sb._armed, sb._deadline = True, time.monotonic() - 1
        try:
            with pytest.raises(ApiError, match="time budget exceeded"):
                reader.scalar("count", CORE_TABLES["content"], {}, "count")
        finally:
            sb._armed = False
        assert reader.scalar("count", CORE_TABLES["content"], {}, "count") == 3
    finally:
        gen.pool.give_back(vm)


# ---- a plugin written as for ModulaCMS, unchanged ------------------------------------------------
MODULA_STYLE = """
plugin_info = {
    name        = "content_stats",
    version     = "0.1.0",
    description = "counts and lists published content",
    author      = "ModulaCMS",
    license     = "MIT",
    core_access = {
        content_data = {"read", "write"},
    },
}

http.handle("GET", "/stats", function(req)
    local total, err = core.count("content_data", {})
    if err then return {status = 500, json = {error = err}} end
    local published = core.count("content_data", {where = {status = "published"}})
    local latest = core.query("content_data", {
        where = {status = "published"}, order_by = "date_created", desc = true, limit = 5,
    })
    local ids = {}
    for _, row in ipairs(latest) do ids[#ids + 1] = row.content_data_id end
    return {status = 200, json = {total = total, published = published, latest = ids,
                                  has_drafts = core.exists("content_data", {where = {status = "draft"}})}}
end)

http.handle("POST", "/archive/{id}", function(req)
    local row = core.query_one("content_data", {where = {content_data_id = req.params.id}})
    if not row then return {status = 404, json = {error = "not found"}} end
    local _, err = core.update("content_data", {
        set = {status = "draft", date_modified = "2030-01-01T00:00:00Z", author_id = "someone"},
        where = {content_data_id = req.params.id},
    })
    if err then return {status = 422, json = {error = err}} end
    return {status = 200, json = {archived = req.params.id}}
end)
"""

MODULA_STYLE_TEST = """
function test_counts_what_exists()
    local _, err = core.insert("content_data", {content_data_id = "ignored", status = "published",
                                                route_id = "r", datatype_id = "d", author_id = "a"})
    test.assert_nil(err)
    local r = test.request("GET", "/api/v1/plugins/content_stats/stats")
    test.assert_eq(200, r.status)
    test.assert_eq(1, r.json.total)
    test.assert_eq(1, r.json.published)
    test.assert_eq(false, r.json.has_drafts)
end

function test_archive_unknown_is_404()
    local r = test.request("POST", "/archive/nope")
    test.assert_eq(404, r.status)
end
"""


def test_a_modulacms_style_plugin_runs_served_and_under_plugin_test(tmp_path):
    from modula_desktop.core.plugins.authoring.testrunner import run_plugin_tests

    root = tmp_path / "plugins" / "content_stats"
    (root / "test").mkdir(parents=True)
    (root / "init.lua").write_text(MODULA_STYLE)
    (root / "test" / "stats.test.lua").write_text(MODULA_STYLE_TEST)
    run = run_plugin_tests(root)
    assert run.load_error is None and run.failed == 0 and run.passed == 2, [r.error for r in run.results]

    with running_site(tmp_path, plugins=()) as served:
        c = served.client
        c.approve_all("content_stats")
        approve_core(c, "content_stats", "read", "write")
        svc = served.service.content
        one = svc.create({"title": "One", "status": "published"})
        svc.create({"title": "Two"})
        stats = c.get("/api/v1/plugins/content_stats/stats").json()
        assert stats == {"total": 2, "published": 1, "latest": [one["id"]], "has_drafts": True}
        r = c.post(f"/api/v1/plugins/content_stats/archive/{one['id']}")
        assert r.status == 200, r.body
        after = svc.get(one["id"])
        assert after["status"] == "draft" and after["updated_at"] != "2030-01-01T00:00:00Z"
        assert "content_data.author_id has no equivalent" in plugin_log(served, "content_stats")
        assert c.post("/api/v1/plugins/content_stats/archive/nope").status == 404


def test_core_is_a_frozen_module(tmp_path):
    from modula_desktop.core.plugins.runtime.vm import PluginVM, VMContext
    from modula_desktop.core.settings import PluginSettings

    root = write_plugin(tmp_path, "frozen", """
local ok1, e1 = pcall(function() core.query = function() return {} end end)
local ok2 = pcall(setmetatable, core, {})
result = {ok1, e1, ok2, type(getmetatable(core)), rawequal == nil}
""", info_extra='permissions = {"core:read"}')
    vm = PluginVM(VMContext("frozen", root, PluginSettings()))
    try:
        vm.load()
        got = vm.sandbox.from_lua(vm.sandbox.fn("get_global")(b"result"))
        assert got[0] is False and "cannot modify frozen module 'core'" in got[1]
        assert got[2] is False and got[3] == "string"
    finally:
        vm.close()


def test_rows_larger_than_the_memory_limit_are_refused_before_the_host_holds_them(tmp_path):
    write_plugin(tmp_path, "caller", CALLER, info_extra=CORE_PERMS)
    with running_site(tmp_path, plugins=(), plugin_settings={"memory_limit_mb": 8}) as run:
        c = run.client
        c.approve_all("caller")
        approve_core(c, "caller", "read")
        db = run.service.db
        with db.atomic():
            db.connection().executemany(
                'INSERT INTO content (id, type, title, slug, body, status, fields, created_at, updated_at) '
                "VALUES (?, 'page', ?, ?, ?, 'draft', '{}', '2026-01-01', '2026-01-01')",
                [(f"id{i:03d}", f"T{i}", f"s{i}", "x" * 1_000_000) for i in range(20)])
        out = call(c, "query", "content", {"limit": 100})
        assert out["ok"] is None and "larger than 8388608 bytes" in out["err"]
        titles = call(c, "query", "content", {"columns": ["title"], "limit": 100})["ok"]
        assert len(titles) == 20


def test_core_query_results_are_arrays_an_empty_one_encodes_as_a_json_list(site):
    approve_core(site.client, "caller", "read")
    r = site.client.post("/api/v1/plugins/caller/call", json={"fn": "query", "args": ["content", {
        "where": {"slug": "no-such-entry"}}]})
    assert r.status == 200, r.body
    assert b'"ok":[]' in r.body.replace(b" ", b""), r.body  # [] as db.query's, not ModulaCMS's {}
    one = site.client.post("/api/v1/plugins/caller/call", json={"fn": "query_one", "args": ["content", {
        "where": {"slug": "no-such-entry"}}]}).json()
    assert "ok" not in one  # nil stays nil
