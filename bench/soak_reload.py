"""Soak test: hot reload under continuous HTTP load. Not part of the unit suite.

Starts a site with the HTTP server on 127.0.0.1, approves a plugin route, keeps loopback clients
(keep-alive http.client connections) requesting it, and rewrites the plugin through the file system:
valid versions (each answers its own number) and now and then a broken one (a syntax error, or an
on_init that fails — it would answer "BROKEN" if it were ever served). Hot reload is on with short
debounce and cooldown. Prints the totals; exits 1 when a request failed or was dropped, a valid version
was never served, or the broken one was.

    PYTHONPATH=. python bench/soak_reload.py [--rewrites 20] [--clients 4] [--step-timeout 10]
"""
from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modula_desktop.core.service import SiteService  # noqa: E402
from modula_desktop.core.settings import Settings  # noqa: E402
from modula_desktop.core.site import Site  # noqa: E402
from modula_desktop.server.runner import start_background  # noqa: E402

NAME = "soak"
HEADER = f'plugin_info = {{name = "{NAME}", version = "1.0.0", description = "soak", permissions = {{"http"}}}}\n'
LIB = "local M = {}\nfunction M.wrap(v) return {version = v} end\nreturn M\n"


def valid(n: int) -> str:
    return HEADER + f"""
local util = require("util")
local greeting = string.rep("hello ", 8)
http.handle("GET", "/v", function(req) return {{json = util.wrap({n})}} end, {{public = true}})
function on_init() log.info("version {n} ready") end
"""


def broken(n: int) -> str:
    if n % 2:
        return HEADER + 'http.handle("GET", "/v", function(req) return {json = {version = "BROKEN"}} end, ' \
                        '{public = true})\nlocal = 1\n'
    return HEADER + 'http.handle("GET", "/v", function(req) return {json = {version = "BROKEN"}} end, ' \
                    '{public = true})\nfunction on_init() error("refusing to start") end\n'


def write_atomically(path: Path, text: str):
    """What most editors do: write a temporary file beside it, then rename it over the original."""
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


class Client(threading.Thread):
    def __init__(self, host: str, port: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.host, self.port, self.stop = host, port, stop
        self.ok = 0
        self.failed: Counter = Counter()   # non-200 answers by status
        self.dropped: Counter = Counter()  # connection errors by exception
        self.versions: Counter = Counter()
        self.latencies: list[float] = []

    def run(self):
        conn = None
        path = f"/api/v1/plugins/{NAME}/v"
        while not self.stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            started = time.perf_counter()
            try:
                conn.request("GET", path, headers={"Host": f"127.0.0.1:{self.port}"})
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self.dropped[type(exc).__name__] += 1
                conn.close()
                conn = None
                continue
            self.latencies.append(time.perf_counter() - started)
            if resp.status != 200:
                self.failed[resp.status] += 1
                continue
            self.ok += 1
            self.versions[json.loads(body)["version"]] += 1
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        if conn is not None:
            conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rewrites", type=int, default=20)
    ap.add_argument("--broken-every", type=int, default=5, help="every Nth rewrite is the broken version")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--step-timeout", type=float, default=10.0, help="max seconds to wait for one reload")
    ap.add_argument("--settle", type=float, default=0.3, help="seconds of load after each reload")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="modula-soak-") as tmp:
        site = Site(Path(tmp))
        site.ensure()
        plugin_dir = site.plugins_dir / NAME
        (plugin_dir / "lib").mkdir(parents=True)
        (plugin_dir / "lib" / "util.lua").write_text(LIB, encoding="utf-8")
        init = plugin_dir / "init.lua"
        init.write_text(valid(0), encoding="utf-8")
        settings = Settings().replace(
            plugins={"debounce_s": 0.2, "cooldown_s": 0.5, "poll_interval_s": 0.5,
                     "rate_limit": 1e9, "rate_burst": 1_000_000_000},
        )
        service = SiteService(site, settings).start(hot_reload=True)
        handle = start_background(service, port=0)
        manager = service.plugins
        plugin = manager.get(NAME)
        service.approvals.approve_route(NAME, "GET", "/v", public=True)

        stop = threading.Event()
        clients = [Client(handle.host, handle.port, stop) for _ in range(args.clients)]
        for c in clients:
            c.start()
        expected, slow_steps, save_to_serve = {0}, [], []
        started = time.monotonic()

        def served(v) -> bool:
            return any(c.versions[v] for c in clients)

        try:
            time.sleep(args.settle)
            for i in range(1, args.rewrites + 1):
                is_broken = i % args.broken_every == 0
                failures_before = service.metrics.sample("modula_plugin_reloads_total", plugin=NAME,
                                                         outcome="failure")
                saved = time.monotonic()
                write_atomically(init, broken(i) if is_broken else valid(i))
                deadline = saved + args.step_timeout
                while time.monotonic() < deadline:
                    if is_broken:
                        done = service.metrics.sample("modula_plugin_reloads_total", plugin=NAME,
                                                      outcome="failure") > failures_before
                    else:
                        done = served(i)
                    if done:
                        break
                    time.sleep(0.005)
                else:
                    slow_steps.append(i)
                if not is_broken and served(i):
                    save_to_serve.append(time.monotonic() - saved)
                    expected.add(i)
                elif not is_broken:
                    expected.add(i)
                state = "broken: kept serving" if is_broken else "valid"
                print(f"rewrite {i:2d} ({state}) after {time.monotonic() - saved:.2f} s; "
                      f"error={plugin.error!r:.60}", flush=True)
                time.sleep(args.settle)
        finally:
            stop.set()
            for c in clients:
                c.join()
            elapsed = time.monotonic() - started
            handle.stop()
            snap = service.metrics.snapshot()
            service.close()

    total_ok = sum(c.ok for c in clients)
    failed = sum((c.failed for c in clients), Counter())
    dropped = sum((c.dropped for c in clients), Counter())
    versions = sum((c.versions for c in clients), Counter())
    lat = sorted(x for c in clients for x in c.latencies)
    never = sorted(v for v in expected if not versions[v])
    total = total_ok + sum(failed.values()) + sum(dropped.values())
    print()
    print(f"duration            {elapsed:.1f} s, {args.clients} keep-alive clients")
    print(f"total requests      {total} ({total / elapsed:.0f}/s)")
    print(f"failed requests     {sum(failed.values())} {dict(failed) or ''}")
    print(f"dropped requests    {sum(dropped.values())} {dict(dropped) or ''}")
    print(f"versions seen       {sorted(v for v in versions if v != 'BROKEN')} "
          f"(expected {len(expected)}, never served: {never or 'none'})")
    print(f"broken ever served  {'YES' if versions['BROKEN'] else 'never'}")
    print(f"reloads             {snap['reloads']}")
    if save_to_serve:
        s = sorted(save_to_serve)
        print(f"save -> serving     median {s[len(s) // 2] * 1000:.0f} ms, max {s[-1] * 1000:.0f} ms "
              f"(debounce 0.2 s, cooldown 0.5 s)")
    if lat:
        print(f"client latency      p50 {lat[len(lat) // 2] * 1000:.2f} ms, p99 {lat[int(len(lat) * 0.99)] * 1000:.2f} ms, "
              f"max {lat[-1] * 1000:.1f} ms")
    if slow_steps:
        print(f"steps that timed out: {slow_steps}")
    bad = failed or dropped or never or versions["BROKEN"] or slow_steps
    print("RESULT", "FAIL" if bad else "OK")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
