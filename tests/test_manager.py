"""The plugin manager: blue-green reload under load, approvals reset, add/remove, dependencies.

Real Lua and a real SQLite site in tmp_path. The helpers at the top are shared with the pool, breaker,
reload and metrics tests (``from test_manager import ...``).
"""
from __future__ import annotations

import threading
import time

import pytest
from _server_fixtures import wait_for

from helpers import write_plugin
from modula_desktop.core.plugins.errors import PluginLoadError
from modula_desktop.core.plugins.lifecycle.manager import FAILED, RUNNING, STOPPED, RouteFailure
from modula_desktop.core.service import SiteService
from modula_desktop.core.settings import Settings
from modula_desktop.core.site import Site
from modula_desktop.core.storage import PluginRecord, RouteApproval

PERMS = 'permissions = {"http", "hooks", "hooks:before", "db"}'

VERSIONED = """
http.handle("GET", "/v", function(req) return {json = {v = VERSION}} end)
http.handle("GET", "/slow", function(req)
  local stop = os.clock() + (tonumber(req.query.s) or 0.3)
  while os.clock() < stop do end
  return {json = {v = VERSION}}
end)
hooks.on("before_create", "content", function(data) return {title = "v" .. VERSION} end)
"""


def versioned(n: int, extra: str = "") -> str:
    return f"VERSION = {n}\n" + VERSIONED + extra


def add(tmp_path, name: str, body: str, version: str = "1.0.0", perms: str = PERMS):
    return write_plugin(tmp_path, name, body, version=version, info_extra=perms)


def start(tmp_path, plugins: dict | None = None, hot_reload: bool = False, **plugin_settings) -> SiteService:
    """A started service on a site in tmp_path with the given {name: body} plugins (version 1.0.0)."""
    for name, body in (plugins or {}).items():
        add(tmp_path, name, body)
    settings = Settings().replace(plugins=plugin_settings)
    return SiteService(Site(tmp_path), settings).start(hot_reload=hot_reload)


def approve(service: SiteService, name: str):
    for r in service.plugins.info(name)["routes"]:
        service.approvals.approve_route(name, r["method"], r["path"], r["public"])
    for h in service.plugins.info(name)["hooks"]:
        service.approvals.approve_hook(name, h["event"], h["table"])


def request(path: str, method: str = "GET", query: dict | None = None) -> dict:
    return {"method": method, "path": path, "headers": {}, "query": query or {}, "params": {}, "body": b"",
            "client_ip": "127.0.0.1"}


def call(service: SiteService, name: str, path: str, method: str = "GET", query: dict | None = None):
    """Look the route up and call it like the HTTP server does. Returns the response's JSON, or the
    RouteFailure; None for an unknown/unapproved route (404)."""
    match = service.plugins.match_route(name, method, path)
    if match is None:
        return None
    try:
        return service.plugins.call_route(match, request(path, method, query))["json"]
    except RouteFailure as exc:
        return exc


def wait_until(cond, timeout: float = 10.0, step: float = 0.01):
    value = wait_for(cond, timeout, step)
    if not value:
        raise AssertionError("condition not met in time")
    return value


@pytest.fixture
def svc(tmp_path):
    services = []

    def make(*args, **kwargs):
        s = start(tmp_path, *args, **kwargs)
        services.append(s)
        return s

    yield make
    for s in services:
        s.close()


# ---- blue-green ------------------------------------------------------------------------------

def test_reload_swaps_version_and_drains_the_old_pool(svc, tmp_path):
    s = svc({"bg": versioned(1)})
    approve(s, "bg")
    old_pool = s.plugins.get("bg").current.pool
    add(tmp_path, "bg", versioned(2))
    assert s.plugins.reload("bg") is True
    assert call(s, "bg", "/v") == {"v": 2}
    wait_until(lambda: old_pool.state == "closed")


def test_failed_reload_keeps_the_old_version_serving(svc, tmp_path):
    s = svc({"bg": versioned(1)})
    approve(s, "bg")
    add(tmp_path, "bg", versioned(2) + "\nthis is not lua\n")
    assert s.plugins.reload("bg") is False
    p = s.plugins.get("bg")
    assert p.state == RUNNING and "still serving version 1.0.0" in p.error and "syntax error" in p.error
    assert call(s, "bg", "/v") == {"v": 1}
    add(tmp_path, "bg", versioned(3, 'function on_init() error("boom") end'))
    assert s.plugins.reload("bg") is False
    assert "on_init failed" in p.error
    assert call(s, "bg", "/v") == {"v": 1}
    assert any("reload failed" in e["message"] for e in s.plugins.info("bg")["last_errors"])
    add(tmp_path, "bg", versioned(4))
    assert s.plugins.reload("bg") is True
    assert p.error is None and call(s, "bg", "/v") == {"v": 4}


def test_no_request_fails_while_reloading_under_load(svc, tmp_path):
    s = svc({"bg": versioned(1)}, max_vms=4)
    approve(s, "bg")
    stop = threading.Event()
    seen, failures, count = set(), [], [0]

    def client():
        while not stop.is_set():
            r = call(s, "bg", "/v")
            if isinstance(r, dict):
                seen.add(r["v"])
                count[0] += 1
            else:
                failures.append(r)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for n in range(2, 12):
            add(tmp_path, "bg", versioned(n))
            assert s.plugins.reload("bg")
            time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert count[0] > 50 and 11 in seen


def test_a_request_that_matched_the_old_generation_is_served_by_the_new_one(svc, tmp_path):
    s = svc({"bg": versioned(1)})
    approve(s, "bg")
    stale = s.plugins.match_route("bg", "GET", "/v")
    add(tmp_path, "bg", versioned(2))
    assert s.plugins.reload("bg")
    wait_until(lambda: stale.generation.pool.state == "closed")
    assert s.plugins.call_route(stale, request("/v"))["json"] == {"v": 2}


def test_a_stale_match_for_a_route_the_new_version_dropped_is_not_found(svc, tmp_path):
    s = svc({"bg": versioned(1)})
    approve(s, "bg")
    stale = s.plugins.match_route("bg", "GET", "/slow")
    add(tmp_path, "bg", 'VERSION = 2\nhttp.handle("GET", "/v", function() return {json = {v = 2}} end)')
    assert s.plugins.reload("bg")
    wait_until(lambda: stale.generation.pool.state == "closed")
    with pytest.raises(RouteFailure) as err:
        s.plugins.call_route(stale, request("/slow"))
    assert err.value.status == 404


def test_in_flight_request_on_the_old_pool_finishes(svc, tmp_path):
    s = svc({"bg": versioned(1)})
    approve(s, "bg")
    result = {}
    t = threading.Thread(target=lambda: result.update(r=call(s, "bg", "/slow", query={"s": "0.4"})))
    t.start()
    wait_until(lambda: s.plugins.get("bg").current.pool.stats()["busy"] == 1)
    old_pool = s.plugins.get("bg").current.pool
    add(tmp_path, "bg", versioned(2))
    assert s.plugins.reload("bg")
    assert call(s, "bg", "/v") == {"v": 2}
    t.join()
    assert result["r"] == {"v": 1}
    wait_until(lambda: old_pool.state == "closed")


def test_a_hook_bound_to_the_old_generation_runs_in_the_new_one(svc, tmp_path):
    s = svc({"bg": versioned(1)})
    approve(s, "bg")
    [binding] = s.plugins.hook_chain("before_create")
    add(tmp_path, "bg", versioned(2))
    assert s.plugins.reload("bg")
    wait_until(lambda: binding.generation.pool.state == "closed")
    assert s.plugins.run_hook(binding, {"title": "x"}, 1.0) == {"title": "v2"}


def test_a_rebuilt_vm_runs_its_generations_code_not_newer_files(svc, tmp_path):
    """A VM replaced after a memory error must not pick up files saved since (no approval reset)."""
    body = versioned(1, '\nhttp.handle("GET", "/hog", function() local t = {} '
                        'for i = 1, 1e7 do t[i] = string.rep("x", 64) .. i end end)\n')
    s = svc({"bg": body}, max_vms=1, memory_limit_mb=8)
    approve(s, "bg")
    add(tmp_path, "bg", versioned(2))  # saved, not reloaded (hot reload is off here)
    assert call(s, "bg", "/hog").kind == "memory"
    assert call(s, "bg", "/v") == {"v": 1}
    assert s.plugins.get("bg").current.pool.stats()["replaced"] == 1


# ---- approvals -------------------------------------------------------------------------------

def test_version_change_revokes_route_and_hook_approvals_before_new_code_serves(svc, tmp_path):
    s = svc({"ap": versioned(1)})
    approve(s, "ap")
    assert s.plugins.reload("ap")  # same version and permissions: approvals kept
    assert call(s, "ap", "/v") == {"v": 1} and s.plugins.hook_chain("before_create")
    add(tmp_path, "ap", versioned(2), version="2.0.0")
    assert s.plugins.reload("ap")
    assert call(s, "ap", "/v") is None  # unapproved answers like an unknown route
    assert s.plugins.hook_chain("before_create") == []
    assert any("approvals were revoked" in e["message"] for e in s.plugins.info("ap")["logs"])


def test_permissions_change_revokes_approvals(svc, tmp_path):
    s = svc({"ap": versioned(1)})
    approve(s, "ap")
    add(tmp_path, "ap", versioned(1), perms='permissions = {"http", "hooks", "hooks:before"}')
    assert s.plugins.reload("ap")
    assert call(s, "ap", "/v") is None and s.approvals.hooks_of("ap") == set()


def test_a_stale_match_is_not_served_by_a_new_unapproved_version(svc, tmp_path):
    s = svc({"ap": versioned(1)})
    approve(s, "ap")
    stale = s.plugins.match_route("ap", "GET", "/v")
    add(tmp_path, "ap", versioned(2), version="2.0.0")
    assert s.plugins.reload("ap")
    wait_until(lambda: stale.generation.pool.state == "closed")
    with pytest.raises(RouteFailure) as err:
        s.plugins.call_route(stale, request("/v"))
    assert err.value.status == 404


def test_orphaned_approvals_are_cleaned_at_start(tmp_path):
    s = start(tmp_path, {"gone": versioned(1), "kept": versioned(1)})
    approve(s, "gone")
    approve(s, "kept")
    s.close()
    import shutil
    shutil.rmtree(tmp_path / "plugins" / "gone")
    s = start(tmp_path)
    try:
        assert {r.plugin for r in RouteApproval.select()} == {"kept"}
        assert PluginRecord.get_or_none(PluginRecord.name == "gone") is None
        assert call(s, "kept", "/v") == {"v": 1}
    finally:
        s.close()


def test_remove_stops_the_plugin_and_forgets_its_approvals(svc, tmp_path):
    s = svc({"rm": versioned(1)})
    approve(s, "rm")
    pool = s.plugins.get("rm").current.pool
    s.plugins.remove("rm")
    assert "rm" not in s.plugins.names() and pool.state == "closed"
    assert s.approvals.routes_of("rm") == set() and s.approvals.hooks_of("rm") == set()
    assert PluginRecord.get_or_none(PluginRecord.name == "rm") is None
    assert s.plugins.match_route("rm", "GET", "/v") is None


# ---- lifecycle -------------------------------------------------------------------------------

def test_add_loads_a_new_folder_after_its_dependency_and_waits_for_a_missing_one(svc, tmp_path):
    s = svc({"base": versioned(1)})
    add(tmp_path, "child", versioned(5), perms=PERMS + ', dependencies = {"base"}')
    assert s.plugins.add("child") is True
    assert s.plugins.get("child").order > s.plugins.get("base").order
    add(tmp_path, "orphan", versioned(6), perms=PERMS + ', dependencies = {"later"}')
    assert s.plugins.add("orphan") is False
    assert s.plugins.get("orphan").state == FAILED and "later" in s.plugins.get("orphan").error
    add(tmp_path, "later", versioned(7))
    assert s.plugins.load("later") is True  # load() of an unknown folder adds it
    assert s.plugins.get("orphan").state == RUNNING  # retried once its dependency runs


def test_add_rejects_what_is_not_a_plugin_folder(svc, tmp_path):
    s = svc()
    with pytest.raises(PluginLoadError):
        s.plugins.add("nothing_here")


def test_disabled_plugin_is_not_reloaded_until_enabled(svc, tmp_path):
    s = svc({"dis": versioned(1)})
    approve(s, "dis")
    s.plugins.disable("dis")
    assert s.plugins.get("dis").state == STOPPED
    assert call(s, "dis", "/v").status == 503
    with pytest.raises(PluginLoadError, match="disabled"):
        s.plugins.reload("dis")
    add(tmp_path, "dis", versioned(2))
    assert s.plugins.enable("dis") is True
    assert call(s, "dis", "/v") == {"v": 2}


def test_info_reports_pool_breaker_and_hot_reload_state(svc, tmp_path):
    s = svc({"inf": versioned(1)}, max_vms=3)
    info = s.plugins.info("inf")
    assert info["pool"]["size"] == 3 and info["pool"]["state"] == "open"
    assert info["breaker"]["state"] == "closed"
    assert info["hot_reload"]["watched"] is True and len(info["hot_reload"]["source_checksum"]) == 64


def test_an_after_hook_can_leave_the_hook_reserve_alone(svc, tmp_path):
    s = svc({"bg": versioned(1)}, max_vms=2, hook_reserve_vms=1)
    approve(s, "bg")
    [binding] = s.plugins.hook_chain("before_create")
    pool = s.plugins.get("bg").current.pool
    held = pool.checkout(0.1)  # a request holds the only shared VM
    with pytest.raises(Exception, match="no VM free"):
        s.plugins.run_hook(binding, {"title": "x"}, 0.1, reserve=False)
    assert s.plugins.run_hook(binding, {"title": "x"}, 0.1) == {"title": "v1"}  # the reserve is there
    pool.give_back(held)
    add(tmp_path, "bg", versioned(2))
    assert s.plugins.reload("bg")
    wait_until(lambda: binding.generation.pool.state == "closed")
    assert s.plugins.run_hook(binding, {"title": "x"}, 1.0, reserve=False) == {"title": "v2"}
