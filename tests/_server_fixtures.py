"""Helpers for the server tests: sites with test plugins, a real waitress server on a loopback
port, and a small HTTP client (http.client, one connection per request) that can send anything."""
from __future__ import annotations

import http.client
import json as jsonlib
import shutil
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from modula_desktop.core.service import SiteService
from modula_desktop.core.settings import Settings
from modula_desktop.core.site import Site
from modula_desktop.server import start_background

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "plugins"

# Echoes the request table back, so tests see exactly what plugin code gets.
INSPECT_PLUGIN = """
plugin_info = {name = "inspect", version = "1.0.0", description = "echoes the request table",
               permissions = {"http"}}
local function copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end
local function echo(req)
  return {json = {method = req.method, path = req.path, body = req.body, client_ip = req.client_ip,
                  headers = copy(req.headers), query = copy(req.query), params = copy(req.params),
                  json = req.json, has_json = req.json ~= nil}}
end
http.handle("GET", "/req", echo)
http.handle("POST", "/req", echo)
http.handle("PUT", "/req/{a}/x/{b}", echo)
http.handle("POST", "/public", echo, {public = true})
"""

# Misbehaving routes: errors, slow handlers, big or odd responses.
FAULTY_PLUGIN = """
plugin_info = {name = "faulty", version = "1.0.0", description = "fails in many ways", permissions = {"http"}}
http.handle("GET", "/fail", function(req) error("deliberate failure") end)
http.handle("GET", "/ok", function(req) return {json = {ok = true}} end)
http.handle("GET", "/spin", function(req)
  local seconds = tonumber(req.query.s or "1")
  local t = os.clock()
  while os.clock() - t < seconds do end
  return {json = {spun = seconds}}
end)
http.handle("GET", "/big", function(req)
  return {body = string.rep("x", tonumber(req.query.n or "10"))}
end)
http.handle("GET", "/status", function(req)
  return {status = tonumber(req.query.code), body = "status"}
end)
http.handle("GET", "/nan", function(req) return {json = {v = 0/0}} end)
http.handle("GET", "/inject", function(req)
  return {body = "x", headers = {["X-Ok"] = "fine", ["X-Bad"] = "a\\r\\nSet-Cookie: s=1", ["Bad Name"] = "v"}}
end)
"""

# A before_create hook that refuses some titles (SPEC 3.6: HTTP answers 422 with the message).
GUARD_PLUGIN = """
plugin_info = {name = "guard", version = "1.0.0", description = "refuses forbidden titles",
               permissions = {"hooks", "hooks:before"}}
hooks.on("before_create", "content", function(entry)
  if string.find(entry.title or "", "forbidden", 1, true) then
    error("titles may not contain 'forbidden'")
  end
end)
"""

TEST_PLUGINS = {"inspect": INSPECT_PLUGIN, "faulty": FAULTY_PLUGIN, "guard": GUARD_PLUGIN}


def make_site(path: Path, plugins=("http_test_plugin", "inspect", "faulty", "guard")) -> Site:
    (path / "plugins").mkdir(parents=True, exist_ok=True)
    for name in plugins:
        dest = path / "plugins" / name
        if name in TEST_PLUGINS:
            dest.mkdir(exist_ok=True)
            (dest / "init.lua").write_text(TEST_PLUGINS[name], encoding="utf-8")
        else:
            shutil.copytree(BUNDLED / name, dest)
    return Site(path)


@dataclass
class Response:
    status: int
    headers: dict  # lowercase name -> value
    raw_headers: list
    body: bytes

    def json(self):
        return jsonlib.loads(self.body)

    def comparable(self):
        """Everything but the Date header and the request id (new for every error answer), for
        byte-for-byte comparisons. The id in the X-Request-Id header is the one in the body."""
        rid = next((v for k, v in self.raw_headers if k.lower() == "x-request-id"), None)
        body = self.body
        if rid is not None:
            assert body.count(rid.encode()) == 1, "the error answer names its request id once"
            body = body.replace(rid.encode(), b"<request-id>")
        return self.status, [(k, "<request-id>" if k.lower() == "x-request-id" else v)
                             for k, v in self.raw_headers if k.lower() != "date"], body


class Client:
    def __init__(self, port: int, token: str):
        self.port = port
        self.token = token
        self.host_header = f"127.0.0.1:{port}"

    def request(self, method: str, path: str, *, body: bytes | str | None = None, json=None,
                headers: dict | None = None, token: bool | str = True, host: str | None = None,
                timeout: float = 30) -> Response:
        hdrs = {"Host": host if host is not None else self.host_header}
        if token is True:
            hdrs["Authorization"] = f"Bearer {self.token}"
        elif isinstance(token, str):
            hdrs["Authorization"] = token
        if json is not None:
            body = jsonlib.dumps(json)
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        if isinstance(body, str):
            body = body.encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in hdrs.items():
                conn.putheader(k, v)
            if body is not None and "Content-Length" not in hdrs:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            r = conn.getresponse()
            data = r.read()
            raw = r.getheaders()
            return Response(r.status, {k.lower(): v for k, v in raw}, raw, data)
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def raw(self, data: bytes, timeout: float = 10) -> bytes:
        """Send bytes as they are; returns everything the server answers until it closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(data)
            chunks = []
            try:
                while True:
                    c = s.recv(65536)
                    if not c:
                        break
                    chunks.append(c)
                    if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                        break
            except socket.timeout:
                pass
            return b"".join(chunks)

    # ---- admin helpers -----------------------------------------------------------------------
    def approve_routes(self, plugin: str, *routes: str):
        items = [{"plugin": plugin, "method": r.split()[0], "path": r.split()[1]} for r in routes]
        r = self.post("/api/v1/admin/plugins/routes/approve", json={"routes": items})
        assert r.status == 200, r.body
        return r

    def revoke_routes(self, plugin: str, *routes: str):
        items = [{"plugin": plugin, "method": r.split()[0], "path": r.split()[1]} for r in routes]
        r = self.post("/api/v1/admin/plugins/routes/revoke", json={"routes": items})
        assert r.status == 200, r.body
        return r

    def approve_all(self, plugin: str):
        info = self.get(f"/api/v1/admin/plugins/{plugin}").json()
        return self.approve_routes(plugin, *[f"{r['method']} {r['path']}" for r in info["routes"]])


def _complete(data: bytes) -> bool:
    head, _, rest = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return len(rest) >= int(v.strip())
    return False


@dataclass
class Running:
    service: SiteService
    handle: object
    client: Client
    path: Path

    @property
    def port(self):
        return self.handle.port


@contextmanager
def running_site(path: Path, plugin_settings: dict | None = None, plugins=None, *, loaded: bool = True,
                 **server):
    """A site with the test plugins, served by a real waitress server on a free loopback port. The
    server starts first and the plugins load behind it, as in `modula serve`; loaded=True (the
    default) waits until they have loaded before the test runs."""
    site = make_site(path, **({"plugins": plugins} if plugins is not None else {}))
    settings = Settings().replace(plugins=dict({"hot_reload": False}, **(plugin_settings or {})),
                                  server=server or {})
    service = SiteService(site, settings)
    try:
        handle = start_background(service, port=0)
    except BaseException:
        service.close()
        raise
    try:
        service.start(hot_reload=False, background=True)
        running = Running(service, handle, Client(handle.port, site.token()), path)
        if loaded:
            wait_until_loaded(running)
        yield running
    finally:
        handle.stop()
        service.close()


def wait_until_loaded(running, timeout: float = 60.0):
    """Wait until start-up has tried every plugin (no plugin is "loading" any more)."""
    assert running.service.plugins.wait_loaded(timeout), "plugins did not finish loading"


def wait_until_served_loaded(client: Client, timeout: float = 60.0):
    """The same for a server in another process, through the admin API."""
    def done():
        body = client.get("/api/v1/admin/plugins").json()
        return not body["loading"] and all(p["state"] != "loading" for p in body["plugins"])
    assert wait_for(done, timeout), "plugins did not finish loading"


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
