"""Discovery, manifests, dependency order and failure isolation (SPEC 3.1)."""
import time

import pytest

from modula_desktop.core.plugins.lifecycle.manifest import parse_manifest
from modula_desktop.core.plugins.errors import PluginLoadError
from modula_desktop.core.service import SiteService
from modula_desktop.core.site import Site

from helpers import write_plugin


@pytest.fixture
def site_dir(tmp_path):
    return tmp_path


def start(site_dir):
    return SiteService(Site(site_dir)).start(hot_reload=False)


def test_good_plugin_runs_and_broken_ones_fail_alone(site_dir):
    write_plugin(site_dir, "good", 'http.handle("GET", "/x", function() return {json={ok=true}} end)')
    write_plugin(site_dir, "syntax", "this is not lua")
    write_plugin(site_dir, "boom", "function on_init() error('init exploded') end")
    write_plugin(site_dir, "wrongname", "", folder="other_folder")
    write_plugin(site_dir, "spin", "while true do end")
    svc = start(site_dir)
    try:
        st = {n: svc.plugins.summary(n) for n in svc.plugins.names()}
        assert st["good"]["state"] == "running"
        assert st["syntax"]["state"] == "failed" and "syntax error" in st["syntax"]["error"]
        assert st["boom"]["state"] == "failed" and "init exploded" in st["boom"]["error"]
        # known by its plugin_info.name, with a warning naming the folder (as in ModulaCMS)
        assert "other_folder" not in st
        assert st["wrongname"]["state"] == "running" and st["wrongname"]["folder"] == "other_folder"
        assert any("folder 'other_folder' holds plugin 'wrongname'" in w
                   for w in svc.plugins.info("wrongname")["warnings"])
        assert st["spin"]["state"] == "failed" and "budget exceeded" in st["spin"]["error"]
        # the failure is kept in the plugin's log too
        assert any("init exploded" in e["message"] for e in svc.logbook.entries("boom"))
    finally:
        svc.close()


def test_dependencies_load_first_and_missing_or_cyclic_ones_fail(site_dir):
    write_plugin(site_dir, "base", "")
    write_plugin(site_dir, "app", "", info_extra='dependencies = {"base"}')
    write_plugin(site_dir, "orphan", "", info_extra='dependencies = {"nothere"}')
    write_plugin(site_dir, "cyc_a", "", info_extra='dependencies = {"cyc_b"}')
    write_plugin(site_dir, "cyc_b", "", info_extra='dependencies = {"cyc_a"}')
    write_plugin(site_dir, "needs_cycle", "", info_extra='dependencies = {"cyc_a"}')
    svc = start(site_dir)
    try:
        s = {n: svc.plugins.summary(n) for n in svc.plugins.names()}
        assert s["base"]["state"] == s["app"]["state"] == "running"
        assert svc.plugins.get("base").order < svc.plugins.get("app").order
        assert s["orphan"]["state"] == "failed" and "missing dependency 'nothere'" in s["orphan"]["error"]
        assert "dependency cycle" in s["cyc_a"]["error"] and "dependency cycle" in s["cyc_b"]["error"]
        assert s["needs_cycle"]["state"] == "failed"
    finally:
        svc.close()


def test_dependent_of_failed_plugin_fails(site_dir):
    write_plugin(site_dir, "base", "function on_init() error('no') end")
    write_plugin(site_dir, "app", "", info_extra='dependencies = {"base"}')
    svc = start(site_dir)
    try:
        assert svc.plugins.summary("app")["state"] == "failed"
        assert "dependency 'base'" in svc.plugins.summary("app")["error"]
    finally:
        svc.close()


def test_on_shutdown_runs_when_disabled(site_dir):
    write_plugin(site_dir, "bye", "function on_shutdown() log.info('bye now') end")
    svc = start(site_dir)
    try:
        svc.plugins.disable("bye")
        assert svc.plugins.summary("bye")["state"] == "stopped"
        # on_shutdown runs behind the command (it never waits on plugin code)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(e["message"] == "bye now" for e in svc.logbook.entries("bye")):
            time.sleep(0.02)
        assert any(e["message"] == "bye now" for e in svc.logbook.entries("bye"))
    finally:
        svc.close()


def test_disabled_state_persists_across_restarts(site_dir):
    write_plugin(site_dir, "p", "")
    svc = start(site_dir)
    svc.plugins.disable("p")
    svc.close()
    svc = start(site_dir)
    try:
        assert svc.plugins.summary("p")["state"] == "stopped"
        assert svc.plugins.enable("p") is True
        assert svc.plugins.summary("p")["state"] == "running"
    finally:
        svc.close()


def test_permissions_gate_modules(site_dir):
    write_plugin(site_dir, "nohttp", 'http.handle("GET", "/x", function() end)', info_extra='permissions = {"db"}')
    write_plugin(site_dir, "onlyhttp", "function on_init() assert(db == nil and hooks == nil) end",
                 info_extra='permissions = {"http"}')
    write_plugin(site_dir, "afteronly", 'hooks.on("before_create", "content", function() end)',
                 info_extra='permissions = {"hooks"}')
    svc = start(site_dir)
    try:
        assert "did not declare the 'http' permission" in svc.plugins.summary("nohttp")["error"]
        assert svc.plugins.summary("onlyhttp")["state"] == "running"
        assert "hooks:before" in svc.plugins.summary("afteronly")["error"]
    finally:
        svc.close()


def test_registration_only_at_module_scope(site_dir):
    write_plugin(site_dir, "late", 'function on_init() http.handle("GET", "/x", function() end) end')
    svc = start(site_dir)
    try:
        assert "may be called only at module scope" in svc.plugins.summary("late")["error"]
    finally:
        svc.close()


@pytest.mark.parametrize("info, fragment", [
    (None, "does not set the global table plugin_info"),
    ("x", "must be a table"),
    ({"version": "1", "description": "d"}, "plugin_info.name is required"),
    ({"name": "p", "description": "d"}, "plugin_info.version is required"),
    ({"name": "p", "version": "1"}, "plugin_info.description is required"),
    ({"name": "Bad-Name", "version": "1", "description": "d"}, "must be 1 to 32 characters"),
    ({"name": "p_", "version": "1", "description": "d"}, "must not end with an underscore"),
    ({"name": "a" * 33, "version": "1", "description": "d"}, "must be 1 to 32 characters"),
    ({"name": "p", "version": "1", "description": "d", "dependencies": "x"}, "dependencies must be a list"),
    ({"name": "p", "version": "1", "description": "d", "permissions": ["fs"]}, "unknown permission 'fs'"),
    ({"name": "p", "version": 1, "description": "d"}, "version must be a non-empty string"),
])
def test_manifest_rules(info, fragment):
    with pytest.raises(PluginLoadError) as e:
        parse_manifest(info, "p" if not (isinstance(info, dict) and "name" in info) else info["name"])
    assert fragment in str(e.value)


def test_manifest_folder_mismatch_and_defaults():
    m, warnings = parse_manifest({"name": "a", "version": "1", "description": "d"}, "b")
    assert m.name == "a" and any("folder 'b' holds plugin 'a'" in w for w in warnings)
    m, warnings = parse_manifest({"name": "a", "version": "1", "description": "d"}, "a")
    assert m.permissions is None and m.effective_permissions == ("db", "http", "hooks", "hooks:before")
    assert any("author" in w for w in warnings)


def test_approval_changes_reach_plugin_listeners(site_dir):
    write_plugin(site_dir, "p", 'http.handle("GET", "/x", function() end)')
    svc = start(site_dir)
    try:
        seen = []
        svc.plugins.add_listener(seen.append)
        svc.approvals.approve_route("p", "GET", "/x")
        svc.approvals.revoke_route("p", "GET", "/x")
        assert seen == ["p", "p"]
    finally:
        svc.close()


@pytest.mark.parametrize("name", ["routes", "hooks"])
def test_admin_api_names_are_reserved(name):
    with pytest.raises(PluginLoadError, match="reserved by the admin API"):
        parse_manifest({"name": name, "version": "1", "description": "d"}, name)


def test_info_of_a_stopped_plugin_lists_what_stays_approved(site_dir):
    write_plugin(site_dir, "p", 'http.handle("GET", "/x", function() end)\n'
                                'hooks.on("after_create", "content", function() end)')
    svc = start(site_dir)
    try:
        svc.approvals.approve_route("p", "GET", "/x")
        svc.approvals.approve_hook("p", "after_create", "content")
        svc.plugins.disable("p")
        info = svc.plugins.info("p")
        assert [(r["method"], r["path"], r["approved"]) for r in info["routes"]] == [("GET", "/x", True)]
        assert [(h["event"], h["table"]) for h in info["hooks"]] == [("after_create", "content")]
    finally:
        svc.close()
