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
