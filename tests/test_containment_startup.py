"""Issue 13 item 10: start-up is never hostage. A plugin whose init.lua and on_init each spin inside
their budgets must not delay the server: /api/v1/health answers at once, the plugin's routes answer
503 "loading" until it runs, and `modula serve` writes server.json as soon as it listens. Real server,
real Lua, real SQLite; `modula serve` in a subprocess; the window offscreen."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import route_error
from _server_fixtures import Client, make_site, running_site, wait_for, wait_until_loaded
from modula_desktop.core.plugins.lifecycle.manifest import Manifest
from modula_desktop.core.service import SiteService
from modula_desktop.core.settings import Settings
from modula_desktop.core.site import Site

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
SPIN_S = 1.0
# init.lua spins (in every VM), on_init spins (once): with 2 VMs the plugin takes about 3 x SPIN_S to load
SLOW = f"""
plugin_info = {{name = "slowstart", version = "1.0.0", description = "slow to start",
               permissions = {{"http", "hooks", "hooks:before"}}}}
local function spin(s) local t = os.clock() while os.clock() - t < s do end end
spin({SPIN_S})
http.handle("GET", "/ready", function(req) return {{json = {{ready = true}}}} end)
http.handle("GET", "/open", function(req) return {{json = {{ready = true}}}} end, {{public = true}})
hooks.on("before_create", "content", function(entry) end)
hooks.on("after_update", "*", function(entry) end)
function on_init() spin({SPIN_S}) end
"""
SETTINGS = {"max_vms": 2, "hook_reserve_vms": 1, "max_instructions": 10**10}
HELLO = "/api/v1/plugins/http_test_plugin/hello"


def slow_site(path: Path, ready: bool = True):
    """A site whose slow plugin's routes and hook were approved in an earlier session (ready=False:
    all but GET /ready)."""
    folder = path / "plugins" / "slowstart"
    folder.mkdir(parents=True)
    (folder / "init.lua").write_text(SLOW, encoding="utf-8")
    service = SiteService(Site(path), Settings())
    try:
        perms = Manifest("slowstart", "1.0.0", "d", permissions=("hooks", "hooks:before", "http")).permissions_key
        service.approvals.check_identity("slowstart", "1.0.0", perms)
        if ready:
            service.approvals.approve_route("slowstart", "GET", "/ready")
        service.approvals.approve_route("slowstart", "GET", "/open", public=True)
        service.approvals.approve_hook("slowstart", "before_create", "content")
        service.approvals.approve_hook("slowstart", "after_update", "*")
    finally:
        service.close()


def test_health_answers_at_once_while_a_slow_plugin_loads(tmp_path):
    slow_site(tmp_path)
    started = time.monotonic()
    with running_site(tmp_path, SETTINGS, plugins=("http_test_plugin",), loaded=False) as r:
        c = r.client
        assert c.get("/api/v1/health", token=False).status == 200
        assert time.monotonic() - started < 1.0  # not 3 x SPIN_S

        for path, token in (("/ready", True), ("/open", False)):
            resp = c.get(f"/api/v1/plugins/slowstart{path}", token=token)
            assert resp.status == 503
            error = route_error(resp)
            assert (error["code"], error["message"]) == ("PLUGIN_UNAVAILABLE", "plugin 'slowstart' is loading")
            assert resp.headers["retry-after"] == "1"
        listing = c.get("/api/v1/admin/plugins").json()
        assert listing["loading"] is True
        assert {p["name"]: p["state"] for p in listing["plugins"]}["slowstart"] == "loading"

        # an approved before-hook that has not loaded yet is not skipped: the save is refused
        resp = c.post("/api/v1/admin/content", json={"type": "page", "title": "Early"})
        assert resp.status == 422
        assert resp.json()["error"] == ("The slowstart plugin is still loading, so the change was not saved; "
                                        "try again in a moment.")

        # ... and so is one whose after-hook would be missed: an update of an entry saved earlier
        entry = r.service.content.create({"type": "page", "title": "Seeded"}, run_hooks=False)
        resp = c.request("PUT", f"/api/v1/admin/content/{entry['id']}", json={"title": "Changed"})
        assert resp.status == 422 and "slowstart plugin is still loading" in resp.json()["error"]
        assert r.service.content.get(entry["id"])["title"] == "Seeded"

        # another plugin serves as soon as it has loaded, while the slow one still loads
        assert wait_for(lambda: r.service.plugins.summary("http_test_plugin")["state"] == "running", 10)
        c.approve_routes("http_test_plugin", "GET /hello")
        assert c.get(HELLO).status == 200
        assert r.service.plugins.summary("slowstart")["state"] == "loading"

        wait_until_loaded(r)
        assert c.get("/api/v1/plugins/slowstart/ready").json() == {"ready": True}
        assert c.get("/api/v1/plugins/slowstart/open", token=False).json() == {"ready": True}
        assert c.get("/api/v1/admin/plugins").json()["loading"] is False
        assert c.post("/api/v1/admin/content", json={"type": "page", "title": "Later"}).status == 201
        assert c.request("PUT", f"/api/v1/admin/content/{entry['id']}", json={"title": "Changed"}).status == 200
        assert c.get(HELLO).status == 200


def test_closing_while_plugins_load_does_not_wait_for_all_of_them(tmp_path):
    slow_site(tmp_path)
    for name in ("slow_b", "slow_c"):  # two more after it: they never start
        (tmp_path / "plugins" / name).mkdir()
        (tmp_path / "plugins" / name / "init.lua").write_text(SLOW.replace('"slowstart"', f'"{name}"'))
    with running_site(tmp_path, SETTINGS, plugins=(), loaded=False) as r:
        assert r.client.get("/api/v1/health", token=False).status == 200
        closing = time.monotonic()
    # the plugin being loaded finishes its current VM; the others never start
    assert time.monotonic() - closing < 4 * SPIN_S
    assert r.service.plugins.summary("slow_c")["state"] == "loading"


ENV = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")


def test_modula_serve_writes_server_json_and_answers_before_plugins_load(tmp_path):
    site = tmp_path / "site"
    make_site(site, plugins=("http_test_plugin",))
    slow_site(site, ready=False)
    (site / "modula.toml").write_text("[plugins]\nhot_reload = false\nmax_vms = 2\nhook_reserve_vms = 1\n"
                                      "max_instructions = 10000000000\n")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "modula_desktop", "serve", "--site", str(site), "--port", "0"],
                            env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info_path = site / ".modula" / "server.json"
        assert wait_for(lambda: info_path.exists() or proc.poll() is not None, 30), "server did not start"
        info = json.loads(info_path.read_text())
        c = Client(info["port"], (site / ".modula" / "token").read_text().strip())
        assert c.get("/api/v1/health", token=False).status == 200
        listing = c.get("/api/v1/admin/plugins").json()
        assert listing["loading"] is True, "server.json should be written before the plugins load"
        assert c.get("/api/v1/plugins/slowstart/open", token=False).status == 503
        # the online CLI waits for a plugin that is still loading instead of finding no routes
        cli = subprocess.run([sys.executable, "-m", "modula_desktop", "plugin", "approve", "slowstart",
                              "--route", "GET /ready", "--yes", "--site", str(site)],
                             env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=90)
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.strip() == "approved 1 route and 0 hooks of slowstart"
        assert c.get("/api/v1/admin/plugins").json()["loading"] is False
        assert c.get("/api/v1/plugins/slowstart/ready").json() == {"ready": True}
        c.approve_routes("http_test_plugin", "GET /hello")
        assert c.get(HELLO).status == 200
        assert proc.stdout.readline().strip() == f"Serving {site.resolve()} at http://127.0.0.1:{info['port']}"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert time.monotonic() - started < 60


def test_the_window_opens_while_plugins_load(qtbot, tmp_path):
    from modula_desktop.gui.app import Session
    from modula_desktop.gui.main_window import MainWindow

    slow_site(tmp_path)
    (tmp_path / "modula.toml").write_text("[plugins]\nhot_reload = false\nmax_vms = 2\nhook_reserve_vms = 1\n"
                                          "max_instructions = 10000000000\n\n[server]\nport = 0\n")
    started = time.monotonic()
    session = Session.open(tmp_path)
    try:
        window = MainWindow(session.service, session.server, session.server_error)
        qtbot.addWidget(window)
        window.show()
        assert time.monotonic() - started < 2.0  # not 3 x SPIN_S
        assert session.service.plugins.summary("slowstart")["state"] == "loading"
        assert "1 loading" in window.plugin_label.text()
        dialog = window.show_plugins()
        qtbot.waitExposed(dialog)
        dialog.select("slowstart")
        assert dialog.state_badge.text().startswith("loading")
        assert not dialog.reload_button.isEnabled() and dialog.disable_button.isEnabled()
        assert session.service.plugins.wait_loaded(30)
        qtbot.waitUntil(lambda: dialog.state_badge.text() == "running · v1.0.0", timeout=5000)
        assert dialog.reload_button.isEnabled()
        qtbot.waitUntil(lambda: "1 running" in window.plugin_label.text(), timeout=5000)
        window.shutdown()
    finally:
        session.close()
