"""The online `modula plugin` commands and `modula serve`, end to end in subprocesses."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _server_fixtures import Client, make_site, wait_for, wait_until_served_loaded

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")


def modula(*args, stdin=subprocess.DEVNULL, timeout=60):
    return subprocess.run([sys.executable, "-m", "modula_desktop", *map(str, args)], env=ENV, cwd=ROOT,
                          stdin=stdin, capture_output=True, text=True, timeout=timeout)


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


class Served:
    def __init__(self, site: Path, *extra):
        self.site = site
        self.proc = subprocess.Popen([sys.executable, "-m", "modula_desktop", "serve", "--site", str(site),
                                      "--port", "0", *extra], env=ENV, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        info_path = site / ".modula" / "server.json"
        assert wait_for(lambda: info_path.exists() or self.proc.poll() is not None, 30), "server did not start"
        assert self.proc.poll() is None, self.proc.communicate()
        self.info = json.loads(info_path.read_text())
        self.first_line = self.proc.stdout.readline().strip()
        token = (site / ".modula" / "token").read_text().strip()
        self.client = Client(self.info["port"], token)
        wait_until_served_loaded(self.client)  # server.json is written before the plugins load

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        return self.proc.returncode, out, err


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    site = tmp_path_factory.mktemp("served") / "site"
    make_site(site, plugins=("http_test_plugin", "guard"))
    s = Served(site)
    yield s
    s.stop()


def test_serve_prints_one_line_and_writes_server_json(served):
    assert served.first_line == f"Serving {served.site.resolve()} at http://127.0.0.1:{served.info['port']}"
    assert served.info["host"] == "127.0.0.1"
    assert served.info["pid"] == served.proc.pid
    assert served.client.get("/api/v1/health", token=False).status == 200


def test_approve_requests_info_disable_enable_reload(served):
    site, c = served.site, served.client
    hello = "/api/v1/plugins/http_test_plugin/hello"
    assert c.get(hello).status == 404

    r = modula("plugin", "approve", "http_test_plugin", "--all-routes", "--yes", "--site", site)
    assert r.returncode == 0, r.stderr
    assert one_line(r.stdout) == "approved 5 routes and 0 hooks of http_test_plugin"
    assert c.get(hello + "?name=CLI").json()["message"] == "Hello, CLI!"
    assert c.post("/api/v1/plugins/http_test_plugin/echo", json={"a": 1}).json()["received"] == {"a": 1}

    r = modula("plugin", "info", "http_test_plugin", "--json", "--site", site)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["state"] == "running" and info["version"] == "1.0.0"
    assert all(route["approved"] for route in info["routes"]) and len(info["routes"]) == 5
    assert info["breaker"]["state"] == "closed"
    assert info["pool"]["size"] == 4

    r = modula("plugin", "info", "http_test_plugin", "--site", site)
    assert r.returncode == 0
    assert "http_test_plugin 1.0.0 (running)" in r.stdout
    assert "[approved  ] POST   /webhook  public" in r.stdout
    assert "permissions: http" in r.stdout and "breaker: closed" in r.stdout

    r = modula("plugin", "disable", "http_test_plugin", "--site", site)
    assert r.returncode == 0, r.stderr
    assert "disabled http_test_plugin" in one_line(r.stdout)
    assert c.get(hello).status == 503
    r = modula("plugin", "enable", "http_test_plugin", "--site", site)
    assert r.returncode == 0, r.stderr
    assert c.get(hello).status == 200
    r = modula("plugin", "reload", "http_test_plugin", "--site", site)
    assert r.returncode == 0, r.stderr
    assert one_line(r.stdout) == "reloaded http_test_plugin (version 1.0.0, running)"
    assert c.get(hello).status == 200

    r = modula("plugin", "revoke", "http_test_plugin", "--route", "GET /hello", "--site", site)
    assert r.returncode == 0, r.stderr
    assert one_line(r.stdout) == "revoked 1 route and 0 hooks of http_test_plugin"
    assert c.get(hello).comparable() == c.get("/api/v1/plugins/http_test_plugin/nothing").comparable()
    r = modula("plugin", "approve", "http_test_plugin", "--route", "get /hello", "--yes", "--site", site)
    assert r.returncode == 0, r.stderr
    assert c.get(hello).status == 200


def test_approve_hooks_with_flag(served):
    r = modula("plugin", "approve", "guard", "--hook", "before_create:content_data", "--yes", "--site", served.site)
    assert r.returncode == 0, r.stderr
    assert one_line(r.stdout) == "approved 0 routes and 1 hook of guard"
    r = served.client.post("/api/v1/admin/content", json={"title": "forbidden words"})
    assert r.status == 422
    r = modula("plugin", "revoke", "guard", "--all-hooks", "--site", served.site)
    assert r.returncode == 0 and "revoked 0 routes and 1 hook of guard" in r.stdout


def test_approve_without_yes_on_non_interactive_stdin_refuses(served):
    r = modula("plugin", "approve", "http_test_plugin", "--route", "GET /hello", "--site", served.site,
               stdin=subprocess.PIPE)
    assert r.returncode == 2
    assert "pass --yes" in one_line(r.stderr)


@pytest.mark.parametrize("args,fragment,code", [
    (("info", "nope"), "no plugin named 'nope'", 1),
    (("reload", "nope"), "no plugin named 'nope'", 1),
    (("approve", "http_test_plugin", "--route", "GET /nope", "--yes"), "has no route GET /nope", 1),
    (("approve", "http_test_plugin", "--route", "GET", "--yes"), "METHOD /path", 2),
    (("approve", "http_test_plugin", "--hook", "nocolon", "--yes"), "event:table", 2),
    (("approve", "http_test_plugin", "--yes"), "nothing to approve", 2),
    (("info", "http_test_plugin", "--token", "wrong"), "refused the admin token", 1),
])
def test_errors_are_one_line(served, args, fragment, code):
    r = modula("plugin", *args, "--site", served.site)
    assert r.returncode == code, (r.stdout, r.stderr)
    line = one_line(r.stderr)
    assert line.startswith("modula: ") and fragment in line


@pytest.mark.parametrize("command", [("info", "x"), ("reload", "x"), ("enable", "x"), ("disable", "x"),
                                     ("approve", "x", "--all-routes", "--yes"), ("revoke", "x", "--all-hooks")])
def test_no_running_instance_exits_2(tmp_path, command):
    site = tmp_path / "quiet"
    make_site(site, plugins=())
    r = modula("plugin", *command, "--site", site)
    assert r.returncode == 2
    assert one_line(r.stderr) == (f"modula: no running instance for site {site.resolve()} "
                                  "(start it with 'modula serve' or 'modula run')")


def test_stale_server_json_counts_as_no_instance(tmp_path):
    site = tmp_path / "stale"
    make_site(site, plugins=())
    (site / ".modula").mkdir(exist_ok=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (site / ".modula" / "server.json").write_text(json.dumps({"host": "127.0.0.1", "port": 1,
                                                              "pid": int(dead.stdout)}))
    r = modula("plugin", "info", "x", "--site", site)
    assert r.returncode == 2 and "no running instance" in r.stderr


def test_sigterm_and_sigint_stop_cleanly(tmp_path):
    for sig in (signal.SIGTERM, signal.SIGINT):
        site = tmp_path / f"site{sig}"
        make_site(site, plugins=("http_test_plugin",))
        s = Served(site)
        assert s.client.get("/api/v1/health").status == 200
        code, out, err = s.stop(sig)
        assert code == 0, err
        assert not (site / ".modula" / "server.json").exists()
        assert "Traceback" not in err


def test_second_instance_on_same_site_is_refused(served):
    r = modula("serve", "--site", served.site, "--port", "0", timeout=30)
    assert r.returncode == 1
    assert "already served" in one_line(r.stderr)


def test_port_in_use_is_one_line(tmp_path):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    try:
        site = tmp_path / "busy"
        make_site(site, plugins=())
        r = modula("serve", "--site", site, "--port", blocker.getsockname()[1], timeout=30)
    finally:
        blocker.close()
    assert r.returncode == 1
    assert "already in use" in one_line(r.stderr)
    assert not (site / ".modula" / "server.json").exists()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.0.1", "::"])
def test_non_loopback_host_is_refused(tmp_path, host):
    site = tmp_path / "h"
    make_site(site, plugins=())
    r = modula("serve", "--site", site, "--host", host, "--port", "0", timeout=30)
    assert r.returncode == 2
    assert "127.0.0.1" in one_line(r.stderr)


def test_localhost_host_is_accepted(tmp_path):
    site = tmp_path / "lh"
    make_site(site, plugins=())
    s = Served(site, "--host", "localhost")
    try:
        assert s.info["host"] == "127.0.0.1"
        assert s.client.get("/api/v1/health", host=f"localhost:{s.info['port']}").status == 200
    finally:
        assert s.stop()[0] == 0


def test_approve_asks_on_a_terminal(served):
    import pty

    for answer, code, approved in ((b"n\n", 1, False), (b"y\n", 0, True)):
        served.client.revoke_routes("http_test_plugin", "GET /items/{id}")
        master, slave = pty.openpty()
        try:
            proc = subprocess.Popen([sys.executable, "-m", "modula_desktop", "plugin", "approve", "http_test_plugin",
                                     "--route", "GET /items/{id}", "--site", str(served.site)],
                                    env=ENV, cwd=ROOT, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            os.close(slave)
            os.write(master, answer)
            out, err = proc.communicate(timeout=60)
        finally:
            os.close(master)
        assert proc.returncode == code, (out, err)
        assert "route GET /api/v1/plugins/http_test_plugin/items/{id}" in out
        assert "permissions: http" in out and "Proceed? [y/N]" in out
        status = served.client.get("/api/v1/plugins/http_test_plugin/items/7").status
        assert status == (200 if approved else 404)
