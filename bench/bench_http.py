"""Requests/s of a plugin route against GET /api/v1/health on the same server, in the same run.

    PYTHONPATH=. python bench/bench_http.py [--rounds 9] [--seconds 2] [--connections 8] [--threads 8]

Builds a throw-away site with one approved plugin route returning a small JSON object (the same
size as the health answer), serves it with waitress on 127.0.0.1, and drives both routes with keep-alive
connections from a separate load-generator process (or wrk, when it is installed), alternating the
two routes for several rounds and comparing medians. Connections default to the server's threads (the
bimodal runs with more connections than threads that shared/notes/waitress-and-lupa-throughput.md
describes were waitress's main loop spinning, fixed in server/runner.py; see docs/PERFORMANCE.md).
The target is a ratio of at least 0.8.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PLUGIN = """
plugin_info = {name = "bench", version = "1.0.0", description = "benchmark route", permissions = {"http"}}
http.handle("GET", "/ping", function(req)
  return {json = {status = "ok"}}
end)
"""
HEALTH = "/api/v1/health"
ROUTE = "/api/v1/plugins/bench/ping"


# ---- load generator (runs in its own process) ----------------------------------------------------
def _read_response(sock: socket.socket, buf: bytearray) -> int:
    """Read one response off a keep-alive connection; returns its status."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buf[:end])
            m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
            total = end + 4 + (int(m.group(1)) if m else 0)
            while len(buf) < total:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                buf += chunk
            status = int(head[9:12])
            del buf[:total]
            return status
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk


def _worker(port, request, stop_at, counts, errors, index):
    n = bad = 0
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()
    try:
        while time.perf_counter() < stop_at:
            sock.sendall(request)
            if _read_response(sock, buf) == 200:
                n += 1
            else:
                bad += 1
    finally:
        sock.close()
    counts[index], errors[index] = n, bad


def _load_process(port, path, token, connections, seconds, conn):
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
               "Connection: keep-alive\r\n\r\n").encode()
    counts, errors = [0] * connections, [0] * connections
    stop_at = time.perf_counter() + seconds
    threads = [threading.Thread(target=_worker, args=(port, request, stop_at, counts, errors, i))
               for i in range(connections)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conn.send((sum(counts), sum(errors), time.perf_counter() - started))


def python_load(port, path, token, connections, seconds) -> tuple[float, int]:
    parent, child = mp.Pipe()
    p = mp.get_context("spawn").Process(target=_load_process, args=(port, path, token, connections, seconds, child))
    p.start()
    done, errors, elapsed = parent.recv()
    p.join()
    return done / elapsed, errors


def wrk_load(port, path, token, connections, seconds) -> tuple[float, int]:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                          "-H", f"Authorization: Bearer {token}",
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    return rps, int(m.group(1)) if m else 0


# ---- the run ------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=8, help="waitress worker threads")
    ap.add_argument("--connections", type=int, default=None, help="keep-alive connections (default: threads)")
    ap.add_argument("--tool", choices=("auto", "python", "wrk"), default="auto")
    args = ap.parse_args(argv)
    connections = args.connections or args.threads
    tool = args.tool
    if tool == "auto":
        tool = "wrk" if shutil.which("wrk") else "python"
    load = wrk_load if tool == "wrk" else python_load

    from modula_desktop.core.service import SiteService
    from modula_desktop.core.settings import Settings
    from modula_desktop.core.site import Site
    from modula_desktop.server import start_background

    with tempfile.TemporaryDirectory(prefix="modula-bench-") as tmp:
        site = Site(Path(tmp) / "site")
        (site.plugins_dir / "bench").mkdir(parents=True)
        (site.plugins_dir / "bench" / "init.lua").write_text(PLUGIN, encoding="utf-8")
        settings = Settings().replace(plugins={"hot_reload": False, "rate_limit": 0.0},
                                      server={"threads": args.threads})
        service = SiteService(site, settings).start(hot_reload=False)
        service.approvals.approve_route("bench", "GET", "/ping")
        handle = start_background(service, port=0)
        token = site.token()
        try:
            for path in (HEALTH, ROUTE):  # warm up (and check both answer 200)
                rps, errors = load(handle.port, path, token, connections, 0.5)
                if errors:
                    print(f"{path} answered errors during warm-up", file=sys.stderr)
                    return 1
            print(f"load: {tool}, {connections} keep-alive connections, waitress threads: {args.threads}, "
                  f"{args.rounds} rounds of {args.seconds:g} s per route")
            results = {HEALTH: [], ROUTE: []}
            cpu_us = {HEALTH: [], ROUTE: []}
            for i in range(args.rounds):
                order = (HEALTH, ROUTE) if i % 2 == 0 else (ROUTE, HEALTH)
                for path in order:
                    cpu = time.process_time()
                    rps, errors = load(handle.port, path, token, connections, args.seconds)
                    cpu = time.process_time() - cpu  # the server's CPU: the load runs in another process
                    results[path].append(rps)
                    cpu_us[path].append(cpu / max(1.0, rps * args.seconds) * 1e6)
                    print(f"  round {i + 1}: {path:<28} {rps:8.0f} req/s   server CPU {cpu_us[path][-1]:5.0f} us/req"
                          + (f"  ({errors} errors)" if errors else ""), flush=True)
            health = statistics.median(results[HEALTH])
            plugin = statistics.median(results[ROUTE])
            # each round measures the two routes back to back: the ratio within a round is spared the
            # machine's drift between rounds (on a shared VM, health alone varies by 20% run to run)
            pairs = sorted(p / h for h, p in zip(results[HEALTH], results[ROUTE]))
            ratio = statistics.median(pairs)
            print(f"median health: {health:.0f} req/s ({statistics.median(cpu_us[HEALTH]):.0f} us CPU/req)   "
                  f"median plugin route: {plugin:.0f} req/s ({statistics.median(cpu_us[ROUTE]):.0f} us CPU/req)")
            print(f"ratio of the medians: {plugin / health:.2f}   per-round ratios: "
                  + " ".join(f"{p:.2f}" for p in pairs))
            print(f"ratio plugin/health (median of the rounds): {ratio:.2f} (target >= 0.85)"
                  f"{'' if ratio >= 0.85 else '  BELOW TARGET'}")
            from _report import result
            result("plugin route throughput", plugin, "req/s", baseline=health, baseline_label="GET /api/v1/health",
                   goal="ratio >= 0.85", better="higher")
        finally:
            handle.stop()
            service.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
