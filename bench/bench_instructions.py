"""Instructions per request of a plugin route and of GET /api/v1/health, counted by valgrind.

    PYTHONPATH=. python bench/bench_instructions.py [--requests 2000]

The throughput benchmark (bench_http.py) is what the target is stated in, but on a shared VM it moves
by several hundredths from run to run. This one is deterministic: it calls the WSGI application in
process (no sockets, no threads, no waitress), once per route under valgrind's cachegrind with no
requests and once with --requests of them, and prints the difference per request: instructions, and
the first-level cache misses cachegrind simulates. The ratio health/plugin of the instructions is a
floor for the throughput ratio's app part, not the throughput ratio itself (waitress and the kernel
cost the same for both routes and dominate it). Needs valgrind (apt install valgrind).
"""
from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROUTES = {"health": "/api/v1/health", "plugin": "/api/v1/plugins/bench/ping"}
WARM_UP = 300


def serve_in_process(route: str, requests: int) -> None:
    """The child: a site with the bench plugin, its WSGI app called directly."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_http import PLUGIN

    from modula_desktop.core.service import SiteService
    from modula_desktop.core.settings import Settings
    from modula_desktop.core.site import Site
    from modula_desktop.server.app import create_app

    with tempfile.TemporaryDirectory(prefix="modula-bench-") as tmp:
        site = Site(Path(tmp) / "site")
        (site.plugins_dir / "bench").mkdir(parents=True)
        (site.plugins_dir / "bench" / "init.lua").write_text(PLUGIN, encoding="utf-8")
        settings = Settings().replace(plugins={"hot_reload": False, "rate_limit": 0.0}, server={"threads": 8})
        service = SiteService(site, settings).start(hot_reload=False)
        service.approvals.approve_route("bench", "GET", "/ping")
        port = 8080
        app = create_app(service, port=port)
        path = ROUTES[route]
        environ = {
            "REQUEST_METHOD": "GET", "PATH_INFO": path, "REQUEST_URI": path, "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": str(port), "SERVER_PROTOCOL": "HTTP/1.1",
            "SERVER_SOFTWARE": "waitress", "SCRIPT_NAME": "", "GATEWAY_INTERFACE": "CGI/1.1",
            "REMOTE_ADDR": "127.0.0.1", "REMOTE_HOST": "127.0.0.1", "REMOTE_PORT": "50000",
            "HTTP_HOST": f"127.0.0.1:{port}", "HTTP_AUTHORIZATION": f"Bearer {site.token()}",
            "HTTP_USER_AGENT": "wrk", "wsgi.url_scheme": "http", "wsgi.version": (1, 0), "wsgi.errors": sys.stderr,
            "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "wsgi.input_terminated": True, "wsgi.input": io.BytesIO(b""),
        }
        statuses = []

        def start_response(status, headers, exc_info=None):
            statuses.append(status)

        copy = environ.copy
        for _ in range(WARM_UP + requests):
            app(copy(), start_response)
        if any(not s.startswith("200") for s in statuses):
            print(f"{path} answered {sorted(set(statuses))}", file=sys.stderr)
            os._exit(1)
        service.close()
    os._exit(0)  # no interpreter teardown inside the count


def count(route: str, requests: int) -> tuple[int, int]:
    """Instructions and first-level cache misses (reads and writes) of one child run."""
    out = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=yes", "--cachegrind-out-file=/dev/null",
         sys.executable, __file__, "--child", route, str(requests)],
        capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the {route} run failed:\n{out.stderr[-2000:]}")
    instructions = int(re.search(r"I\s+refs:\s+([\d,]+)", out.stderr).group(1).replace(",", ""))
    misses = sum(int(m.replace(",", "")) for m in re.findall(r"D1  misses:\s+([\d,]+)", out.stderr))
    return instructions, misses


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        serve_in_process(argv[1], int(argv[2]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per counted run (default 2000)")
    args = ap.parse_args(argv)
    if args.requests < 1:
        ap.error("--requests must be at least 1")
    if shutil.which("valgrind") is None:
        print("bench_instructions: valgrind is not installed (apt install valgrind)", file=sys.stderr)
        return 2
    per_request = {}
    for route in ROUTES:
        base_i, base_m = count(route, 0)
        run_i, run_m = count(route, args.requests)
        per_request[route] = ((run_i - base_i) / args.requests, (run_m - base_m) / args.requests)
        print(f"{ROUTES[route]:<28} {per_request[route][0]:9.0f} instructions/request "
              f"{per_request[route][1]:7.0f} L1 data misses/request", flush=True)
    (hi, hm), (pi, pm) = per_request["health"], per_request["plugin"]
    print(f"health/plugin: instructions {hi / pi:.2f}, L1 data misses {hm / pm:.2f}")
    from _report import result
    result("plugin route, instructions per request", pi, "instr", baseline=hi, baseline_label="GET /api/v1/health")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
