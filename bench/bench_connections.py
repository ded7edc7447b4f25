"""GET /api/v1/health latency while half-open connections sit on the server (issue 13 item 12).

    PYTHONPATH=. python bench/bench_connections.py [--sockets 130] [--requests 50] [--limit N]

Builds a throw-away site, serves it with waitress on 127.0.0.1 in this process, opens --sockets
connections that send nothing or part of a request line, and times --requests health requests (one
connection each) behind them. Prints p50, p95 and max. The target is every health request under 1 s.
``half_open_attack`` is the piece bench_containment.py can call against any running server.
"""
from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _health(port: int, timeout: float) -> float:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/api/v1/health", headers={"Host": f"127.0.0.1:{port}"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"health answered {resp.status}")
    finally:
        conn.close()
    return time.perf_counter() - started


def half_open_attack(port: int, sockets: int = 130, requests: int = 50, timeout: float = 30.0) -> list[float]:
    """Seconds each of `requests` health requests took while `sockets` half-open connections were open
    (half of them sent a partial request line, the rest nothing). A request that failed counts as timeout."""
    times = []
    with ExitStack() as stack:
        for i in range(sockets):
            s = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
            if i % 2:
                s.sendall(b"GET /api/v1/hea")
        time.sleep(0.3)
        for _ in range(requests):
            try:
                times.append(_health(port, timeout))
            except (OSError, RuntimeError):
                times.append(timeout)
    return times


def summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"p50": statistics.median(ordered), "p95": ordered[max(0, int(len(ordered) * 0.95) - 1)],
            "max": ordered[-1]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sockets", type=int, default=130)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--limit", type=int, default=None, help="[server] connection_limit (default: the setting's)")
    args = ap.parse_args(argv)

    from modula_desktop.core.service import SiteService
    from modula_desktop.core.settings import Settings
    from modula_desktop.core.site import Site
    from modula_desktop.server import start_background

    with tempfile.TemporaryDirectory() as tmp:
        server = {"port": 0} if args.limit is None else {"port": 0, "connection_limit": args.limit}
        settings = Settings().replace(plugins={"hot_reload": False}, server=server)
        service = SiteService(Site(Path(tmp)), settings).start(hot_reload=False)
        handle = start_background(service, port=0)
        try:
            times = half_open_attack(handle.port, args.sockets, args.requests)
        finally:
            handle.stop()
            service.close()
    s = summary(times)
    ok = s["max"] < 1.0
    print(f"health behind {args.sockets} half-open connections: p50 {s['p50'] * 1000:.1f} ms, "
          f"p95 {s['p95'] * 1000:.1f} ms, max {s['max'] * 1000:.1f} ms ({'OK' if ok else 'OVER 1 s'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
