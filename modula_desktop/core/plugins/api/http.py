"""The `http` module of the plugin API (SPEC 3.5): route declarations (http.handle) and handler responses.
The Lua half (http.handle, the request table, packing a response) is in ../lua/bootstrap.lua."""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

from ..errors import ApiError

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
MAX_PATH = 256
SEGMENT_RE = re.compile(r"^(\{[A-Za-z_][A-Za-z0-9_]{0,63}\}|[A-Za-z0-9._~!$&'()*+,;=:@%-]+)$")


# Response headers never taken from a plugin (nor access-control-*): framing and caching are the
# server's, cookies and CORS are refused outright, and hop-by-hop headers are illegal for a WSGI app.
BLOCKED_HEADERS = frozenset({
    "set-cookie", "transfer-encoding", "content-length", "cache-control", "host", "connection",
    "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers", "upgrade",
    "date", "server", "x-content-type-options", "x-frame-options",
})

# The errors a plugin route answers, as ModulaCMS's plugin HTTP bridge does (http_bridge.go,
# http_request.go): {"error": {"code", "message", "request_id"}}. code -> (status, ModulaCMS's message).
# The last four are ours: ModulaCMS answers them through its router (405/421) or not at all.
ROUTE_ERRORS = {
    "ROUTE_NOT_FOUND": (404, "the requested plugin endpoint does not exist"),
    "UNAUTHORIZED": (401, "authentication required"),
    "RATE_LIMITED": (429, "rate limit exceeded"),
    "BODY_TOO_LARGE": (413, "request body too large"),
    "INVALID_REQUEST": (400, "failed to read request"),
    "PLUGIN_UNAVAILABLE": (503, "plugin is not running"),
    "CIRCUIT_BREAKER_OPEN": (503, "plugin is temporarily disabled due to repeated failures"),
    "POOL_EXHAUSTED": (503, "all plugin VMs are busy, try again shortly"),
    "HANDLER_ERROR": (500, "internal plugin error"),
    "HANDLER_TIMEOUT": (504, "plugin execution timed out"),
    "RESPONSE_TOO_LARGE": (500, "response body exceeds size limit"),
    "METHOD_NOT_ALLOWED": (405, "method not allowed"),
    "MISDIRECTED_REQUEST": (421, "misdirected request"),
    "INTERNAL_ERROR": (500, "internal server error"),
}
# the code for an error answer that names none, by status
CODE_FOR_STATUS = {404: "ROUTE_NOT_FOUND", 401: "UNAUTHORIZED", 429: "RATE_LIMITED", 413: "BODY_TOO_LARGE",
                   400: "INVALID_REQUEST", 411: "INVALID_REQUEST", 415: "INVALID_REQUEST",
                   503: "PLUGIN_UNAVAILABLE", 504: "HANDLER_TIMEOUT", 405: "METHOD_NOT_ALLOWED",
                   421: "MISDIRECTED_REQUEST", 403: "MISDIRECTED_REQUEST", 500: "INTERNAL_ERROR"}
# PluginCallError kinds that answer 504 HANDLER_TIMEOUT (SPEC 3.3: time and instructions); others 500
TIMEOUT_KINDS = frozenset({"timeout", "budget"})


def new_request_id() -> str:
    """A request's id, as ModulaCMS makes them (a random UUID v4): in the error answer and in the
    plugin's log entry, so the two can be matched."""
    return str(uuid.uuid4())


def error_envelope(code: str, message: str, request_id: str) -> dict:
    return {"error": {"code": code, "message": message, "request_id": request_id}}


def validate_route_path(path) -> str:
    if not isinstance(path, str) or not path:
        raise ApiError("http.handle: path must be a non-empty string")
    if not path.startswith("/"):
        raise ApiError(f"http.handle: path '{path}' must start with /")
    if len(path) > MAX_PATH:
        raise ApiError(f"http.handle: path longer than {MAX_PATH} characters")
    for bad in ("..", "?", "#", "\\", "//"):
        if bad in path:
            raise ApiError(f"http.handle: path '{path}' must not contain '{bad}'")
    if path != "/":
        params = set()
        for seg in path.strip("/").split("/"):
            if not SEGMENT_RE.match(seg):
                raise ApiError(f"http.handle: invalid path segment '{seg}' in '{path}'")
            if seg.startswith("{"):
                if seg in params:
                    raise ApiError(f"http.handle: parameter {seg} used twice in '{path}'")
                params.add(seg)
    return path.rstrip("/") or "/"


def validate_route(method, path, count: int, max_routes: int):
    """The checked (METHOD, path) of the count-th http.handle call."""
    if count >= max_routes:
        raise ApiError(f"http.handle: at most {max_routes} routes per plugin")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise ApiError(f"http.handle: method must be one of {', '.join(METHODS)}")
    return method.upper(), validate_route_path(path)


class RouteResponse(dict):
    """A handler's response: status, json, body (bytes), headers, has_json, and encoded: the JSON text
    as bytes when the VM's bootstrap encoded it already (most answers, see route_caller). The json
    value is then decoded from that text only if something asks for it (the server never does)."""

    __slots__ = ()

    def __missing__(self, key):
        if key == "json" and self.get("encoded") is not None:
            value = self["json"] = json.loads(self["encoded"])
            return value
        raise KeyError(key)


def unpack_response(packed: bytes) -> RouteResponse:
    """The response packed by the bootstrap (route_call): "J" or "B", a status from 200 to 599, then
    the JSON text or the body, all ASCII. (The server reads the bytes itself: PluginDispatcher.)"""
    payload = packed[4:]
    if packed[0] == 74:  # "J"
        return RouteResponse({"status": int(packed[1:4]), "body": b"", "headers": {}, "has_json": True,
                              "encoded": payload})
    return RouteResponse({"status": int(packed[1:4]), "json": None, "body": payload, "headers": {},
                          "has_json": False, "encoded": None})


@dataclass(frozen=True)
class RouteSpec:
    index: int
    method: str
    path: str
    public: bool
    build: bool = False  # {build = true}: the site build fetches it (SPEC 9)
    # "METHOD /path", as the metrics label the route (made once, not on every request)
    label: str = field(init=False, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "label", f"{self.method} {self.path}")

    @property
    def key(self):
        return (self.method, self.path)


class RouteTable:
    """Route lookup: static paths by (method, path); parameterised ones segment by segment."""

    def __init__(self, routes):
        self.static: dict = {}
        self.dynamic: list = []
        for r in routes:
            if "{" in r.path:
                self.dynamic.append((r.method, r.path.strip("/").split("/"), r))
            else:
                self.static[(r.method, r.path)] = r

    def match(self, method: str, path: str):
        """(spec, params) or None."""
        spec = self.static.get((method, path))
        if spec is not None:
            return spec, {}
        segs = path.strip("/").split("/")
        for m, pattern, spec in self.dynamic:
            if m != method or len(pattern) != len(segs):
                continue
            params = {}
            for pat, seg in zip(pattern, segs):
                if pat.startswith("{"):
                    if not seg:
                        break
                    params[pat[1:-1]] = seg
                elif pat != seg:
                    break
            else:
                return spec, params
        return None
