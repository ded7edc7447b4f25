"""Issue 13 items 5 and 9: a plugin's manifest is its generation's, and an approval covers exactly what
was approved. Real plugins on a real server (waitress on loopback), real SQLite."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from _server_fixtures import running_site

HELLO = "/api/v1/plugins/http_test_plugin/hello"


def write_plugin(site: Path, name: str, source: str):
    folder = site / "plugins" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "init.lua").write_text(source, encoding="utf-8")


def assert_healthy(r):
    assert r.client.get("/api/v1/health", token=False).status == 200
    r.client.approve_all("http_test_plugin")
    assert r.client.get(HELLO).status == 200  # another plugin keeps serving


# ---- item 5: permissions are the generation's ------------------------------------------------
# plugin_info is decided by the clock: the first VM loads in one 50 ms window of process CPU time,
# on_init (which runs in the first VM only) spins into the next window, and the pool's other VMs load
# there. Before the fix, `plugin info` showed the first VM's permissions while the others got db.
CLOCK_PERMISSIONS = """
local window = math.floor(os.clock() * 20)
plugin_info = {name = "clocky", version = "1.0.0", description = "permissions by the clock",
               permissions = (window % 2 == 0) and {"http"} or {"db", "http"}}
http.handle("GET", "/modules", function(req) return {json = {db = db ~= nil}} end)
function on_init()
  while math.floor(os.clock() * 20) == window do end
end
"""

CLOCK_VERSION = """
local started = os.clock()
plugin_info = {name = "clocky", version = "1.0." .. string.format("%.6f", started), description = "v"}
http.handle("GET", "/modules", function(req) return {json = {db = db ~= nil}} end)
function on_init()
  while os.clock() - started < 0.01 do end
end
"""


@pytest.mark.parametrize("source,field", [(CLOCK_PERMISSIONS, "permissions"), (CLOCK_VERSION, "version")])
def test_a_manifest_that_differs_between_vms_fails_the_load(tmp_path, source, field):
    write_plugin(tmp_path, "clocky", source)
    with running_site(tmp_path, plugins=("http_test_plugin",)) as r:
        info = r.client.get("/api/v1/admin/plugins/clocky").json()
        assert info["state"] == "failed", info
        assert info["error"] == (f"plugin_info.{field} differs from the one this version was loaded with: "
                                 "plugin_info must not depend on the time or on chance")
        assert r.client.get("/api/v1/plugins/clocky/modules").status == 404
        assert_healthy(r)


def test_every_vm_of_a_generation_gets_the_generations_modules(tmp_path):
    # a steady manifest: all four VMs agree, and each has exactly the declared modules
    write_plugin(tmp_path, "steady", """
plugin_info = {name = "steady", version = "1.0.0", description = "d", permissions = {"http"}}
http.handle("GET", "/modules", function(req) return {json = {db = db ~= nil, hooks = hooks ~= nil}} end)
""")
    with running_site(tmp_path, plugins=("http_test_plugin",)) as r:
        gen = r.service.plugins.get("steady").current
        vms = [gen.pool.checkout(1.0) for _ in range(gen.pool.size - gen.pool.hook_reserve)]
        try:
            assert {vm.manifest for vm in vms} == {gen.manifest}
        finally:
            for vm in vms:
                gen.pool.give_back(vm)
        r.client.approve_all("steady")
        for _ in range(8):
            assert r.client.get("/api/v1/plugins/steady/modules").json() == {"db": False, "hooks": False}
        assert_healthy(r)


# ---- item 9: approval covers what was approved -----------------------------------------------
EDITABLE = """
plugin_info = {name = "editable", version = "1.0.0", description = "d", permissions = {"http"}}
http.handle("GET", "/data", function(req) return {json = {secret = 42}} end%s)
"""
DATA = "/api/v1/plugins/editable/data"


def _reload(r, name="editable"):
    resp = r.client.post(f"/api/v1/admin/plugins/{name}/reload")
    assert resp.status == 200, resp.body


def _route(r, name, path):
    info = r.client.get(f"/api/v1/admin/plugins/{name}").json()
    return next(x for x in info["routes"] if x["path"] == path)


def test_a_same_version_edit_making_an_approved_route_public_revokes_it(tmp_path):
    write_plugin(tmp_path, "editable", EDITABLE % "")
    with running_site(tmp_path, plugins=("http_test_plugin",)) as r:
        r.client.approve_routes("editable", "GET /data")
        assert r.client.get(DATA, token=False).status == 401
        assert r.client.get(DATA).json() == {"secret": 42}

        write_plugin(tmp_path, "editable", EDITABLE % ", {public = true}")  # same version 1.0.0
        _reload(r)
        assert r.client.get(DATA, token=False).status == 404  # not served without the token
        assert r.client.get(DATA).status == 404  # nor with it: the approval is gone
        assert _route(r, "editable", "/data") == {"method": "GET", "path": "/data", "public": True,
                                                  "approved": False}
        logs = r.client.get("/api/v1/admin/plugins/editable").json()["logs"]
        assert any("GET /data" in e["message"] and "public" in e["message"] and e["level"] == "warn"
                   for e in logs), logs

        r.client.approve_routes("editable", "GET /data")  # approved as it is now: public
        assert r.client.get(DATA, token=False).json() == {"secret": 42}
        assert _route(r, "editable", "/data")["approved"] is True

        write_plugin(tmp_path, "editable", EDITABLE % "")  # and back: changed again, revoked again
        _reload(r)
        assert r.client.get(DATA).status == 404
        assert _route(r, "editable", "/data") == {"method": "GET", "path": "/data", "public": False,
                                                  "approved": False}
        assert_healthy(r)


def test_approving_a_route_as_shown_when_it_changed_meanwhile_is_refused(tmp_path):
    # the CLI sends what it showed the author; an approval of a non-public route never covers a public one
    write_plugin(tmp_path, "editable", EDITABLE % ", {public = true}")
    with running_site(tmp_path, plugins=("http_test_plugin",)) as r:
        resp = r.client.post("/api/v1/admin/plugins/routes/approve",
                             json={"routes": [{"plugin": "editable", "method": "GET", "path": "/data",
                                               "public": False}]})
        assert resp.status == 409
        assert resp.json()["error"] == ("routes[0]: route GET /data of plugin 'editable' is public now, "
                                        "not as shown when you approved it; look again")
        assert r.client.get(DATA, token=False).status == 404
        assert_healthy(r)


def test_approvals_of_a_stopped_plugin_keep_their_public_ness(tmp_path):
    write_plugin(tmp_path, "editable", EDITABLE % ", {public = true}")
    with running_site(tmp_path, plugins=("http_test_plugin",)) as r:
        r.client.approve_routes("editable", "GET /data")
        assert r.client.post("/api/v1/admin/plugins/editable/disable").status == 200
        # a disabled plugin's approved public route: 503 for anyone, no token needed to learn that
        assert r.client.get(DATA, token=False).status == 503
        assert _route(r, "editable", "/data") == {"method": "GET", "path": "/data", "public": True,
                                                  "approved": True}
        assert_healthy(r)


def test_the_migration_keeps_approvals_of_non_public_routes(tmp_path):
    # a site approved by the version before public-ness was part of the approval
    with running_site(tmp_path, plugins=("http_test_plugin",)) as r:
        r.client.approve_all("http_test_plugin")
    db = sqlite3.connect(tmp_path / "site.db")
    version = db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
    migration = _public_migration_number()
    with db:
        db.execute("ALTER TABLE plugin_route_approval DROP COLUMN public")
        db.execute("DELETE FROM schema_version WHERE version >= ?", (migration,))
    db.close()
    assert version >= migration
    with running_site(tmp_path, plugins=()) as r:  # the same site, its plugin folder already there
        assert r.client.get(HELLO).status == 200  # non-public: still approved
        assert r.client.get("/api/v1/plugins/http_test_plugin/items/7").status == 200
        # the public webhook was approved without knowing it was public: approve it again
        assert r.client.post("/api/v1/plugins/http_test_plugin/webhook", body=b"x", token=False).status == 404
        assert _route(r, "http_test_plugin", "/webhook")["approved"] is False
        r.client.approve_routes("http_test_plugin", "POST /webhook")
        assert r.client.post("/api/v1/plugins/http_test_plugin/webhook", body=b"x", token=False).status == 202


def _public_migration_number() -> int:
    from modula_desktop.core import storage

    return storage.MIGRATIONS.index(storage.add_route_public) + 1
