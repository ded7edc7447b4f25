"""How long reloads take. Not part of the unit suite.

1. A blue-green reload through the manager (build the new pool, run on_init, swap; the old pool
   drains in the background), median over --runs.
2. From saving init.lua to the new version answering, through the hot-reload watcher, median over
   --runs: once with the default debounce (SPEC 6, 1 s) and once with a short one, to show what the
   debounce costs and what the machinery itself adds. The watcher is as shipped (watchdog events plus
   the polling fallback, the default cooldown, which a good reload does not trigger), so each save is
   served as an author's second, third... save would be (goal: within 1.5 s).

    PYTHONPATH=. python bench/bench_reload.py [--runs 7]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modula_desktop.core.plugins.lifecycle.manager import RouteFailure  # noqa: E402
from modula_desktop.core.service import SiteService  # noqa: E402
from modula_desktop.core.settings import PluginSettings, Settings  # noqa: E402
from modula_desktop.core.site import Site  # noqa: E402

NAME = "bench"
# A plugin of ordinary size: a lib module, a few routes, a hook, an on_init.
LIB = """
local M = {}
function M.greet(name) return "Hello, " .. (name or "world") .. "!" end
function M.slug(s) return (s:lower():gsub("[^a-z0-9]+", "-")) end
return M
"""


def source(n: int) -> str:
    return f"""
plugin_info = {{name = "{NAME}", version = "1.0.0", description = "bench", permissions = {{"http", "hooks"}}}}
local text = require("text")
local VERSION = {n}
http.handle("GET", "/v", function(req) return {{json = {{v = VERSION}}}} end)
http.handle("GET", "/hello/{{name}}", function(req) return {{json = {{msg = text.greet(req.params.name)}}}} end)
http.handle("POST", "/slug", function(req) return {{json = {{slug = text.slug(req.body)}}}} end)
hooks.on("after_publish", "content", function(entry) log.info("published " .. entry.slug) end)
function on_init() log.info("ready " .. VERSION) end
"""


REQUEST = {"method": "GET", "path": "/v", "headers": {}, "query": {}, "params": {}, "body": b"",
           "client_ip": "127.0.0.1"}


def serving(manager) -> int | None:
    match = manager.match_route(NAME, "GET", "/v")
    if match is None:
        return None
    try:
        return manager.call_route(match, REQUEST)["json"]["v"]
    except RouteFailure:
        return None


def site_with_plugin(tmp: str) -> tuple[Site, Path]:
    site = Site(Path(tmp))
    site.ensure()
    d = site.plugins_dir / NAME
    (d / "lib").mkdir(parents=True)
    (d / "lib" / "text.lua").write_text(LIB, encoding="utf-8")
    (d / "init.lua").write_text(source(0), encoding="utf-8")
    return site, d / "init.lua"


def bench_blue_green(runs: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="modula-bench-") as tmp:
        site, init = site_with_plugin(tmp)
        service = SiteService(site, Settings()).start(hot_reload=False)
        try:
            service.approvals.approve_route(NAME, "GET", "/v")
            times = []
            for n in range(1, runs + 1):
                init.write_text(source(n), encoding="utf-8")
                started = time.perf_counter()
                assert service.plugins.reload(NAME)
                times.append(time.perf_counter() - started)
                assert serving(service.plugins) == n
            return times
        finally:
            service.close()


def bench_save_to_serve(runs: int, debounce_s: float) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="modula-bench-") as tmp:
        site, init = site_with_plugin(tmp)
        settings = Settings().replace(plugins={"debounce_s": debounce_s})  # the default cooldown: good saves skip it
        service = SiteService(site, settings).start(hot_reload=True)
        try:
            service.approvals.approve_route(NAME, "GET", "/v")
            times = []
            for n in range(1, runs + 1):
                time.sleep(0.2)
                saved = time.perf_counter()
                init.write_text(source(n), encoding="utf-8")
                deadline = saved + 30
                while serving(service.plugins) != n:
                    if time.perf_counter() > deadline:
                        raise SystemExit(f"version {n} was not served within 30 s")
                    time.sleep(0.002)
                times.append(time.perf_counter() - saved)
            return times
        finally:
            service.close()


def show(label: str, times: list[float], goal: str = ""):
    from _report import result
    ms = [t * 1000 for t in times]
    result(label, statistics.median(ms), "ms", goal=goal)
    print(f"{label:44s} median {statistics.median(ms):8.1f} ms   min {min(ms):8.1f}   max {max(ms):8.1f}"
          f"   ({len(ms)} runs)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    default = PluginSettings()
    print(f"max_vms={default.max_vms}, poll_interval_s={default.poll_interval_s}")
    show("blue-green reload (manager.reload)", bench_blue_green(args.runs))
    show(f"save -> serving, debounce {default.debounce_s:g} s (default)",
         bench_save_to_serve(args.runs, default.debounce_s), goal="<= 1500 ms")
    show("save -> serving, debounce 0.05 s", bench_save_to_serve(args.runs, 0.05))
    return 0


if __name__ == "__main__":
    sys.exit(main())
