"""Issue 13's containment attacks against a live server, with what they cost everyone else.

    PYTHONPATH=. python bench/bench_containment.py [--cap 20] [--clients 3]

Builds a throw-away site with attack plugins, starts `modula serve` on it (a child process on a free
loopback port, default settings), approves the routes and runs, one after the other, each for at
most --cap seconds:

  1. conversion  a route returning {json = t} where t holds 20,000 references to one 1 MB string
  3. c-work      a loop of utf8.len on a 16 MB string, --clients clients at once
  4. sql         db.count with a 20,000-character LIKE pattern over two 1 MB rows
  12. half-open  120 connections that send half a request and then nothing

The site turns the rate limit and the breaker off, so that every attack request reaches its plugin.
While each runs, GET /api/v1/health is timed every 20 ms (a new connection each time). Printed per attack: the peak RSS growth of
the server (VmHWM, from /proc), the worst handler overrun past its 5 s deadline (client-side request
time minus the deadline; 0 when every request ended in time), the health p95 and max, and the
statuses the attack got. Loopback only; every loop is bounded; the server is stopped at the end.
The server runs with its address space capped (--memory-cap, default 4096 MiB): where an attack is
not contained it fails there instead of taking the machine's memory. Linux only (/proc/<pid>/status).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 5.0  # the default [plugins] timeout_s: every attack route runs under it

ATTACKS = {
    "conv_attack": ("""
plugin_info = {name = "conv_attack", version = "1.0.0", description = "item 1", permissions = {"http"}}
http.handle("GET", "/refs", function(req)
  local s, t = ("x"):rep(2^20), {}
  for i = 1, 20000 do t[i] = s end
  return {json = t}
end)
""", "GET /refs"),
    "cpu_attack": ("""
plugin_info = {name = "cpu_attack", version = "1.0.0", description = "item 3", permissions = {"http"}}
http.handle("GET", "/utf8", function(req)
  local s = ("a"):rep(2^22)
  s = s .. s .. s .. s
  local n = 0
  while true do n = n + utf8.len(s) end
end)
""", "GET /utf8"),
    "sql_attack": ("""
plugin_info = {name = "sql_attack", version = "1.0.0", description = "item 4", permissions = {"http", "db"}}
function on_init()
  db.define_table("rows", {columns = {{name = "body", type = "text"}}})
  if db.count("rows", {}) < 2 then
    for i = 1, 2 do db.insert("rows", {body = ("a"):rep(2^20)}) end
  end
end
http.handle("GET", "/like", function(req)
  -- 20,000 characters that never match: SQLite's LIKE backtracks over every '%'
  return {json = {n = db.count("rows", {where = {body = db.like(("%a"):rep(9999) .. "%b")}})}}
end)
""", "GET /like"),
}


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of the process in KiB."""
    fields = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def get(port: int, path: str, token: str | None = None, timeout: float = 30.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        r.read()
        return r.status
    except (OSError, http.client.HTTPException):
        return 0  # no answer (refused, reset or timed out)
    finally:
        conn.close()


def post_json(port: int, path: str, token: str, body) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=json.dumps(body),
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


class HealthProbe:
    """Times GET /api/v1/health every 20 ms in a thread, until stopped."""

    def __init__(self, port: int):
        self.port, self.times, self.failed = port, [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            start = time.monotonic()
            if get(self.port, "/api/v1/health", timeout=10) == 200:
                self.times.append(time.monotonic() - start)
            else:
                self.failed += 1
            self._stop.wait(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class Peak:
    """Samples the server's RSS every 50 ms; VmHWM (the kernel's own peak) is read before and after."""

    def __init__(self, pid: int):
        self.pid, self.peak = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_kib(self.pid)[0])
            except OSError:
                return
            self._stop.wait(0.05)

    def __enter__(self):
        self.rss_before, self.hwm_before = rss_kib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        try:
            self.hwm_after = rss_kib(self.pid)[1]
        except OSError:  # the server died
            self.hwm_after = self.hwm_before

    @property
    def growth_mib(self) -> float:
        return max(self.peak - self.rss_before, self.hwm_after - self.hwm_before, 0) / 1024


def hammer(port, token, path, clients, cap):
    """clients threads requesting path until cap seconds have passed (a request under way finishes)."""
    durations, statuses, lock = [], [], threading.Lock()
    stop_at = time.monotonic() + cap

    def client():
        while time.monotonic() < stop_at:
            start = time.monotonic()
            status = get(port, path, token, timeout=cap + 30)
            with lock:
                durations.append(time.monotonic() - start)
                statuses.append(status)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(cap + 60)
    return durations, statuses


def half_open(port, cap, count=120):
    """count connections that each send half a request, held for cap seconds, then closed."""
    socks = []
    for _ in range(count):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            socks.append(s)
        except OSError:
            break
    time.sleep(cap)
    dropped = 0
    for s in socks:
        try:
            s.setblocking(False)
            if s.recv(1) == b"":
                dropped += 1
        except BlockingIOError:
            pass
        except OSError:
            dropped += 1
        s.close()
    return len(socks), dropped


def report(name, peak, probe, durations=None, statuses=None, extra=""):
    times = probe.times
    p95 = statistics.quantiles(times, n=20)[-1] * 1000 if len(times) >= 20 else float("nan")
    worst = max(times) * 1000 if times else float("nan")
    line = (f"{name:<12} RSS peak +{peak.growth_mib:7.1f} MiB   health p95 {p95:7.1f} ms  max {worst:7.1f} ms"
            f" ({len(times)} probes)")
    if probe.failed:
        line += f" ({probe.failed} failed)"
    if durations is not None:
        overrun = max(0.0, max(durations) - DEADLINE) if durations else float("nan")
        counts = {s: statuses.count(s) for s in sorted(set(statuses))}
        line += f"   worst overrun {overrun:5.2f} s   requests {len(durations)} {counts}"
    print(line + extra, flush=True)
    from _report import result
    result(f"{name.strip()}: peak RSS growth", peak.growth_mib, "MiB")
    result(f"{name.strip()}: health p95 under attack", p95, "ms", goal="< 100 ms")
    if durations:
        result(f"{name.strip()}: worst overrun past the deadline", max(0.0, max(durations) - DEADLINE), "s",
               goal="<= 0.5 s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cap", type=float, default=20.0, help="seconds per attack (default 20)")
    ap.add_argument("--clients", type=int, default=3, help="clients of the C-work attack (default 3)")
    ap.add_argument("--memory-cap", type=int, default=4096, help="the server's address space in MiB (default 4096)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="modula-containment-") as tmp:
        site = Path(tmp) / "site"
        for name, (source, _) in ATTACKS.items():
            (site / "plugins" / name).mkdir(parents=True)
            (site / "plugins" / name / "init.lua").write_text(source, encoding="utf-8")
        # no rate limit and no breaker: every attack request reaches the plugin (with the defaults the
        # breaker opens after five failures and the rate limit answers 429 long before that)
        (site / "modula.toml").write_text("[plugins]\nhot_reload = false\nrate_limit = 0.0\nmax_failures = 100000\n",
                                          encoding="utf-8")
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cap_bytes = args.memory_cap * 2**20

        def limit_memory():
            resource.setrlimit(resource.RLIMIT_AS, (cap_bytes, cap_bytes))

        log = open(Path(tmp) / "server.log", "w+", encoding="utf-8")
        server = subprocess.Popen([sys.executable, "-m", "modula_desktop", "serve", "--site", str(site), "--port", "0"],
                                  env=env, stdout=log, stderr=subprocess.STDOUT, text=True, preexec_fn=limit_memory)
        try:
            info_path = site / ".modula" / "server.json"
            deadline = time.monotonic() + 60
            while not info_path.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    print("the server did not start:\n" + log.read(), file=sys.stderr)
                    return 1
                time.sleep(0.1)
            port = json.loads(info_path.read_text())["port"]
            token = (site / ".modula" / "token").read_text().strip()
            while get(port, "/api/v1/health") != 200:
                if time.monotonic() > deadline:
                    print("the server does not answer /api/v1/health", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            routes = [{"plugin": name, "method": r.split()[0], "path": r.split()[1]} for name, (_, r) in ATTACKS.items()]
            # the plugins load behind the server: their routes can be approved once they run
            while post_json(port, "/api/v1/admin/plugins/routes/approve", token, {"routes": routes}) != 200:
                if time.monotonic() > deadline:
                    print("could not approve the attack routes", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            print(f"server pid {server.pid} on 127.0.0.1:{port}; {args.cap:g} s per attack, handler deadline "
                  f"{DEADLINE:g} s")
            with HealthProbe(port) as probe:
                time.sleep(1.0)
            report("baseline", type("P", (), {"growth_mib": 0.0})(), probe)
            runs = [("1 conv", "/api/v1/plugins/conv_attack/refs", 1),
                    ("3 c-work", "/api/v1/plugins/cpu_attack/utf8", args.clients),
                    ("4 sql", "/api/v1/plugins/sql_attack/like", 1)]
            for label, path, clients in runs:
                if server.poll() is not None:
                    print(f"{label:<11} not run: the server is gone (exit {server.returncode})")
                    continue
                with Peak(server.pid) as peak, HealthProbe(port) as probe:
                    durations, statuses = hammer(port, token, path, clients, args.cap)
                report(label, peak, probe, durations, statuses)
            if server.poll() is None:
                with Peak(server.pid) as peak, HealthProbe(port) as probe:
                    opened, dropped = half_open(port, min(args.cap, 30.0))
                report("12 half-open", peak, probe, extra=f"   {opened} opened, {dropped} dropped by the server")
            alive = server.poll() is None and get(port, "/api/v1/health") == 200
            print("server still healthy" if alive else f"server NOT healthy (exit code {server.poll()})")
            return 0 if alive else 1
        finally:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(20)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
            log.close()


if __name__ == "__main__":
    raise SystemExit(main())
