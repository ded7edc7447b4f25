"""A plugin is its plugin_info.name (SPEC 3.5, as in ModulaCMS): a folder called otherwise loads with a
warning, and routes, tables, approvals, the admin API and hot reload all use the name; two folders
claiming one name both fail, naming both folders. Real plugin folders, a real waitress server."""
from __future__ import annotations

import shutil
import time

from _server_fixtures import running_site
from helpers import write_plugin
from modula_desktop.core.plugins.api.db import sql_table_name
from test_manager import svc, wait_until  # noqa: F401 - svc is a fixture

FAST = {"debounce_s": 0.1, "poll_interval_s": 0.2, "cooldown_s": 0.0}
BODY = """
VERSION = %d
http.handle("GET", "/v", function(req) return {json = {v = VERSION, n = db.count("notes", {})}} end)
function on_init()
  db.define_table("notes", {columns = {{name = "text", type = "text"}}})
  if db.count("notes", {}) == 0 then db.insert("notes", {text = "first"}) end
end
"""
PERMS = 'permissions = {"http", "db"}'


def put(root, folder: str, name: str, version: int = 1):
    return write_plugin(root, name, BODY % version, info_extra=PERMS, folder=folder)


def test_a_folder_named_otherwise_serves_under_its_plugin_info_name(tmp_path):
    put(tmp_path, "downloaded-copy", "notes")
    with running_site(tmp_path, plugins=()) as r:
        c, service = r.client, r.service
        assert service.plugins.names() == ["notes"]
        listing = c.get("/api/v1/admin/plugins").json()["plugins"]
        assert [(p["name"], p["folder"], p["state"]) for p in listing] == [("notes", "downloaded-copy", "running")]
        info = c.get("/api/v1/admin/plugins/notes").json()
        assert any("folder 'downloaded-copy' holds plugin 'notes'" in w for w in info["warnings"])
        assert c.get("/api/v1/admin/plugins/downloaded-copy").status == 404
        # approvals, the route's address and the tables go by the name
        assert c.post("/api/v1/admin/plugins/routes/approve",
                      json={"routes": [{"plugin": "notes", "method": "GET", "path": "/v"}]}).status == 200
        assert c.get("/api/v1/plugins/notes/v").json() == {"v": 1, "n": 1}
        assert c.get("/api/v1/plugins/downloaded-copy/v").status == 404
        tables = {t for (t,) in service.db.execute_sql("SELECT name FROM sqlite_master WHERE type='table'")}
        assert sql_table_name("notes", "notes") in tables and not any("downloaded" in t for t in tables)
        assert c.post("/api/v1/admin/plugins/notes/reload").status == 200
        assert c.get("/api/v1/plugins/notes/v").status == 200  # still approved: the same plugin


def test_two_folders_claiming_one_name_both_fail_naming_both(tmp_path):
    put(tmp_path, "notes", "notes")
    put(tmp_path, "notes_copy", "notes")
    put(tmp_path, "other", "other")
    with running_site(tmp_path, plugins=()) as r:
        plugins = r.service.plugins
        states = {p["folder"]: (p["name"], p["state"], p["error"]) for p in
                  r.client.get("/api/v1/admin/plugins").json()["plugins"]}
        assert states["other"][1] == "running"
        for folder in ("notes", "notes_copy"):
            name, state, error = states[folder]
            assert state == "failed"
            assert "plugin_info.name 'notes' is claimed by more than one folder" in error
            assert "plugins/notes and plugins/notes_copy" in error
        assert plugins.match_route("notes", "GET", "/v") is None
        tables = {t for (t,) in r.service.db.execute_sql("SELECT name FROM sqlite_master WHERE type='table'")}
        assert sql_table_name("notes", "notes") not in tables  # neither ran on_init


def test_hot_reload_of_a_folder_named_otherwise(svc, tmp_path):  # noqa: F811 - the fixture
    put(tmp_path, "copy_of_notes", "notes", 1)
    s = svc(hot_reload=True, **FAST)
    assert s.plugins.names() == ["notes"]
    s.approvals.approve_route("notes", "GET", "/v", False)

    def v():
        m = s.plugins.match_route("notes", "GET", "/v")
        return m and s.plugins.call_route(m, {"method": "GET", "path": "/v", "headers": {}, "query": {},
                                              "params": {}, "body": b"", "client_ip": "127.0.0.1"})["json"]["v"]

    assert v() == 1
    put(tmp_path, "copy_of_notes", "notes", 2)  # an edit in the folder reloads the plugin it holds
    wait_until(lambda: v() == 2)
    assert s.plugins.names() == ["notes"]
    assert any("files changed on disk: reloading" in e["message"] for e in s.logbook.entries("notes"))
    # a second folder claiming the name later does not load, and the running one keeps serving
    put(tmp_path, "notes_again", "notes", 9)
    wait_until(lambda: getattr(s.plugins.plugin_for_folder("notes_again"), "state", None) == "failed")
    late = s.plugins.plugin_for_folder("notes_again")
    assert "plugins/notes_again" in late.error and "plugins/copy_of_notes" in late.error
    assert v() == 2
    # the late one renamed in its plugin_info loads under its new name
    put(tmp_path, "notes_again", "notes_two", 3)
    wait_until(lambda: "notes_two" in s.plugins.names() and s.plugins.get("notes_two").state == "running")
    assert s.plugins.get("notes_two").root.name == "notes_again" and v() == 2
    # the folder taken away: the plugin it held goes with it
    shutil.rmtree(tmp_path / "plugins" / "notes_again")
    wait_until(lambda: "notes_two" not in s.plugins.names())
    assert v() == 2


def test_renaming_plugin_info_name_in_place_keeps_the_old_version_serving(svc, tmp_path):  # noqa: F811
    put(tmp_path, "notes", "notes", 1)
    s = svc()
    s.approvals.approve_route("notes", "GET", "/v", False)
    put(tmp_path, "notes", "renamed", 2)
    assert s.plugins.reload("notes") is False
    plugin = s.plugins.get("notes")
    assert plugin.state == "running" and "plugin_info.name changed from 'notes' to 'renamed'" in plugin.error
    time.sleep(0.05)
    assert s.plugins.names() == ["notes"]


def test_a_clash_settled_by_renaming_one_lets_the_other_load(svc, tmp_path):  # noqa: F811
    put(tmp_path, "a", "same")
    put(tmp_path, "b", "same")
    s = svc()
    assert {s.plugins.get(f).state for f in ("a", "b")} == {"failed"}
    put(tmp_path, "b", "bee")
    assert s.plugins.reload("b")
    assert s.plugins.get("bee").root.name == "b" and s.plugins.get("bee").state == "running"
    # the one that clashed with it is free now, and was loaded again
    assert s.plugins.get("same").root.name == "a" and s.plugins.get("same").state == "running"
    assert sorted(s.plugins.names()) == ["bee", "same"]
