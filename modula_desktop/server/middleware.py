"""What every request passes through: the Host check against DNS rebinding, method and path
sanity, the admin token for admin endpoints; and the security headers on every response."""
from __future__ import annotations

import re

import falcon

from .auth import TokenAuth

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-store"),
)
# as Falcon sends them: names in lower case
SECURITY_HEADERS_WSGI = tuple((name.lower(), value) for name, value in SECURITY_HEADERS)
# Under these prefixes every request needs the admin token (also unknown paths: nothing to probe).
TOKEN_PREFIXES = ("/api/v1/admin/",)
TOKEN_PATHS = frozenset({"/api/v1/admin", "/metrics", "/api/v1/openapi.json"})
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|00)", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


class Misdirected(falcon.HTTPError):
    def __init__(self, port: int):
        super().__init__(421, description=f"this server answers only to Host 127.0.0.1:{port} or localhost:{port}")


class RequestGuard:
    """Runs first: nothing else (routing, plugins, the database) sees a request it refuses."""

    def __init__(self, port: int, auth: TokenAuth):
        self.port = port
        self.hosts = frozenset({f"127.0.0.1:{port}", f"localhost:{port}"})
        self.auth = auth

    def process_request(self, req: falcon.Request, resp: falcon.Response):
        self.check(req.env, req.method, req.path)
        path = req.path
        if path in TOKEN_PATHS or path.startswith(TOKEN_PREFIXES):
            self.auth.require(req)

    def check(self, env, method: str, path: str):
        """The checks every request passes, Falcon's or the plugin dispatcher's: raises the HTTPError."""
        # DNS rebinding: a page on evil.example resolving to 127.0.0.1 still sends its own Host
        if env.get("HTTP_HOST", "").lower() not in self.hosts:
            raise Misdirected(self.port)
        if method not in KNOWN_METHODS:
            raise falcon.HTTPMethodNotAllowed(sorted(KNOWN_METHODS - {"OPTIONS"}),
                                              description=f"unsupported HTTP method {method[:32]!r}")
        if "/." in path or _CONTROL.search(path):
            segments = path.split("/")
            if "." in segments or ".." in segments or _CONTROL.search(path):
                raise falcon.HTTPBadRequest(description="invalid path: '.' and '..' segments, backslashes "
                                                        "and control characters are not allowed")
        raw = env.get("REQUEST_URI") or env.get("RAW_URI") or ""
        if "%" in raw and _ENCODED_SEPARATOR.search(raw.split("?", 1)[0]):
            raise falcon.HTTPBadRequest(description="invalid path: encoded '/', '\\' or NUL is not allowed")

    def process_response(self, req, resp, resource, req_succeeded):
        for name, value in SECURITY_HEADERS:
            resp.set_header(name, value)
