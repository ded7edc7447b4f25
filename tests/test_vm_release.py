"""A VM replaced after a failure is freed at once, not when Python's cycle collector next runs: a route
that builds a large string and is stopped by its budget left one runtime (with its string) behind per
request, about a gigabyte with three clients hammering it (bench/bench_containment.py)."""
from __future__ import annotations

import gc

from modula_desktop.core.service import SiteService
from modula_desktop.core.settings import Settings
from modula_desktop.core.site import Site

PLUGIN = """plugin_info = {name = "big", version = "1", description = "x", permissions = {"http"}}
http.handle("GET", "/big", function(req)
  local s = string.rep("x", 4 * 1024 * 1024)
  local n = 0
  while true do n = n + utf8.len(s) end
end)
"""


def runtimes() -> int:
    return sum(1 for o in gc.get_objects() if type(o).__name__ == "LuaRuntime")


def test_a_broken_vm_is_freed_by_reference_counting(tmp_path):
    site = Site(tmp_path / "site")
    (site.plugins_dir / "big").mkdir(parents=True)
    (site.plugins_dir / "big" / "init.lua").write_text(PLUGIN)
    settings = Settings().replace(plugins={"hot_reload": False, "timeout_s": 0.3, "max_failures": 1000})
    service = SiteService(site, settings).start(hot_reload=False)
    try:
        service.approvals.approve_route("big", "GET", "/big")
        request = {"method": "GET", "path": "/big", "headers": {}, "query": {}, "params": {}, "body": b"",
                   "client_ip": "127.0.0.1"}
        gc.collect()
        gc.disable()  # what is freed below is freed by reference counting alone
        try:
            before = runtimes()
            failures = 0
            for _ in range(12):
                try:
                    service.plugins.call_route(service.plugins.match_route("big", "GET", "/big"), request)
                except Exception:  # noqa: BLE001 - the budget error is the point
                    failures += 1
            after = runtimes()
        finally:
            gc.enable()
        assert failures == 12
        pool = service.plugins.info("big")["pool"]
        assert pool["replaced"] >= 6, pool  # (the last replacements may still be building)
        # each failure replaced its VM; the replaced ones are gone, not waiting for a collection
        assert after - before <= 1, f"{after - before} runtimes outlived their VMs"
    finally:
        service.close()
