"""The one dispatcher behind which every plugin route lives (SPEC 3.5, 5).

Falcon cannot remove a route, so plugin routes are never added to Falcon: this dispatcher looks them up
in the plugin manager's table on every request, and a reload swaps that table. It is a WSGI
application of its own, in front of the Falcon app (see app.SiteApp).
Order: guard (Host, method, path) → route lookup → approval → auth → rate limit → body limit → (in the
manager) plugin state → breaker → VM checkout → middleware → handler.
"""
from __future__ import annotations

import json
import logging
import math
import re
import time
from itertools import filterfalse
from json.encoder import c_make_encoder as _c_make_encoder
from json.encoder import encode_basestring as _encode_str
from urllib.parse import parse_qsl

import falcon

from ..core.plugins.errors import ApiError
from ..core.plugins.lifecycle.manager import RouteFailure
from ..core.plugins.api.http import (BLOCKED_HEADERS, CODE_FOR_STATUS, METHODS, ROUTE_ERRORS, error_envelope,
                                     new_request_id, unpack_response)
from .auth import TokenAuth
from .bodies import is_json_type, parse_json, read_body_env
from .errors import JSON, error_message
from .middleware import SECURITY_HEADERS_WSGI, RequestGuard
from .ratelimit import RateLimiter

try:  # the C version of wsgi_headers' common case, built with the route bridge (sandbox.py)
    from ..core.plugins.runtime._luabridge import flat_headers as _flat_headers
except ImportError:  # pragma: no cover - built without a compiler
    _flat_headers = None

log = logging.getLogger(__name__)

PREFIX = "/api/v1/plugins"
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
MAX_RESPONSE_HEADERS = 100
TEXT = "text/plain; charset=utf-8"  # a plugin's body without a content type of its own
_ALLOW = ", ".join(METHODS)
_ENCODE_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _not_serializable(o):
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


# The C encoder behind _ENCODE_JSON, built once (JSONEncoder.encode builds one per call). No cycle
# check: what from_lua returns is a tree of new lists and dicts. (c_make_encoder is None without the
# C module: then _ENCODE_JSON.)
if _c_make_encoder is not None:
    _C_ENCODE = _c_make_encoder(None, _not_serializable, _encode_str, None, ":", ",", False, False, False)
else:  # pragma: no cover - CPython ships the C encoder
    def _C_ENCODE(value, _level):
        return (_ENCODE_JSON(value),)


def _encode_json(value) -> str:
    if isinstance(value, str):
        return _encode_str(value)
    return "".join(_C_ENCODE(value, 0))


# WSGI environ key -> lowercase header name as bytes (b"" for keys that are not headers); bounded, since clients
# choose the header names
_HEADER_NAMES: dict[str, bytes] = {"CONTENT_TYPE": b"content-type", "CONTENT_LENGTH": b"content-length"}
_MAX_HEADER_NAMES = 2048
# The environ keys a WSGI server (waitress) sets besides the headers: skipped without a look (any other
# key still goes through _header_name, which tells headers from the rest).
_NOT_HEADERS = frozenset({
    "REMOTE_ADDR", "REMOTE_HOST", "REMOTE_PORT", "REQUEST_METHOD", "SERVER_PORT", "SERVER_NAME",
    "SERVER_SOFTWARE", "SERVER_PROTOCOL", "SCRIPT_NAME", "PATH_INFO", "REQUEST_URI", "RAW_URI",
    "QUERY_STRING", "GATEWAY_INTERFACE", "wsgi.url_scheme", "wsgi.version", "wsgi.errors",
    "wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once", "wsgi.input", "wsgi.file_wrapper",
    "wsgi.input_terminated", "waitress.client_disconnected",
})
_IS_NOT_HEADER = _NOT_HEADERS.__contains__


def _header_name(key: str) -> bytes:
    name = key[5:].replace("_", "-").lower().encode() if key.startswith("HTTP_") else b""
    if len(_HEADER_NAMES) < _MAX_HEADER_NAMES:
        _HEADER_NAMES[key] = name
    return name


def wsgi_headers(env: dict, drop_authorization: bool) -> list[bytes]:
    """The request headers of a WSGI environ, flat: [name, value, ...] as bytes (the VM hands them to
    Lua as they are), names in lower case, in the environ's order; the Authorization header left out
    when drop_authorization is true (the admin token is never handed to a plugin). The environ is
    filtered at C level, without building a set of every key: the loop sees the headers only.
    (_luabridge.flat_headers does the same for the common case, an all-ASCII environ.)"""
    flat = []
    names = _HEADER_NAMES
    for key in filterfalse(_IS_NOT_HEADER, env):
        hname = names.get(key)
        if hname is None:
            hname = _header_name(key)
        if hname and not (drop_authorization and hname == b"authorization"):
            value = env[key]
            flat.append(hname)
            # WSGI hands values over as latin-1 text; give the plugin the text the client sent
            flat.append(value.encode() if value.isascii()
                        else value.encode("latin-1").decode("utf-8", "replace").encode())
    return flat


def _query(qs: str) -> dict:
    if not qs:
        return {}
    # the first value of a repeated name wins
    return dict(reversed(parse_qsl(qs, keep_blank_values=True)))


def _status_line(status: int) -> str:
    line = _STATUS_LINES[status] = falcon.code_to_http_status(status)  # once per status (see __call__)
    return line


_STATUS_LINES: dict[int, str] = {}


def _not_found():
    # the single answer for unknown, unapproved and revoked routes alike
    return falcon.HTTPNotFound(description=ROUTE_ERRORS["ROUTE_NOT_FOUND"][1], code="ROUTE_NOT_FOUND")


def error_body(code: str, message: str, request_id: str) -> bytes:
    """A plugin route's error answer: ModulaCMS's envelope (SPEC 3.5)."""
    return json.dumps(error_envelope(code, message, request_id), ensure_ascii=False).encode("utf-8")


def error_answer(status: int, code: str, message: str, request_id: str | None = None):
    """status, headers, body of an error answer; the request id is made here unless the failure was
    logged under one already (then the answer names that entry)."""
    request_id = request_id or new_request_id()
    return status, {"content-type": JSON, "x-request-id": request_id}, error_body(code, message, request_id)


class PluginDispatcher:
    """A WSGI application for every path under /api/v1/plugins. It needs none of Falcon's request and
    response machinery (they cost more than the plugin call here), but has the same guard and the same
    security headers; its errors are ModulaCMS's envelope {"error": {"code", "message", "request_id"}}
    with an X-Request-Id header (made only for errors: a good answer pays nothing for it)."""

    def __init__(self, service, auth: TokenAuth, guard: RequestGuard):
        self.service = service
        self.manager = service.plugins
        self.settings = service.settings.plugins
        self.auth = auth
        self.guard = guard
        self.limiter = RateLimiter(self.settings.rate_limit, self.settings.rate_burst)
        self.metrics = service.metrics

    # ---- WSGI --------------------------------------------------------------------------------
    # The hot path of every plugin request: one frame for the dispatch, few calls (on a busy server
    # each call costs a microsecond or more: docs/PERFORMANCE.md).
    def __call__(self, env, start_response):
        method = env["REQUEST_METHOD"]
        match = None
        status = 500  # what the metrics count when our own bug ends the request
        try:
            path = env.get("PATH_INFO") or "/"
            if not path.isascii():  # WSGI hands the path over as latin-1 text (as Falcon does)
                path = path.encode("iso-8859-1").decode("utf-8", "replace")
            self.guard.check(env, method, path)
            if method not in METHODS:
                raise falcon.HTTPMethodNotAllowed(METHODS, description=f"plugin routes answer only {_ALLOW}")
            name, _, sub = path[len(PREFIX) + 1:].partition("/")
            sub = "/" + sub.rstrip("/") if sub else "/"
            match = self.manager.match_route(name, method, sub) if name else None
            if match is None:
                raise _not_found()
            started = time.perf_counter()
            authorized = self.auth.check(env.get("HTTP_AUTHORIZATION"))
            if not authorized and not match.spec.public:
                raise falcon.HTTPUnauthorized(
                    description="authentication required: this plugin route needs the site's admin token "
                                "(Authorization: Bearer <token>)",
                    challenges=["Bearer"], code="UNAUTHORIZED")
            client_ip = env.get("REMOTE_ADDR", "")
            limiter = self.limiter
            if limiter.rate > 0:  # 0: no limit (then acquire() would answer 0 anyway)
                wait = limiter.acquire(client_ip)
                if wait:
                    raise falcon.HTTPTooManyRequests(description=ROUTE_ERRORS["RATE_LIMITED"][1],
                                                     retry_after=max(1, math.ceil(wait)), code="RATE_LIMITED")
            body = read_body_env(env, self.settings.max_request_body) if env.get("CONTENT_LENGTH") else b""
            # the request headers, flat (see wsgi_headers); the admin token is never handed over
            flat = _flat_headers(env, authorized) if _flat_headers is not None else None
            if flat is None:
                flat = wsgi_headers(env, authorized)
            query = env.get("QUERY_STRING")
            request = {"method": method, "path": path, "body": body, "client_ip": client_ip, "headers": flat,
                       "query": _query(query) if query else {}, "params": match.params}
            if body and is_json_type(env.get("CONTENT_TYPE")):
                request["json"] = parse_json(body)  # bad JSON: 400 before any plugin code runs
            try:
                out = self.manager.serve_route(match, request)
            except RouteFailure as exc:
                raise self._failure(match, exc) from None
            except ApiError as exc:  # the request could not be turned into Lua values
                raise falcon.HTTPBadRequest(description=f"request cannot be passed to the plugin: {exc}",
                                            code="INVALID_REQUEST") from None
            if type(out) is bytes and len(out) - 4 <= self.settings.max_response_body:
                # the common answer, packed by the plugin's VM (see unpack_response): no headers of
                # the plugin's, a status from 200 to 599, then the JSON text or the body
                status, body = int(out[1:4]), out[4:]
                headers = {"content-type": JSON if out[0] == 74 else TEXT}  # 74: "J"
            else:
                status, headers, body = self._respond(match, out)
        except falcon.HTTPError as exc:
            status = exc.status_code
            status, headers, body = error_answer(status, exc.code or CODE_FOR_STATUS.get(status, "INTERNAL_ERROR"),
                                                 error_message(exc), getattr(exc, "request_id", None))
            if exc.headers:
                headers.update((k.lower(), v) for k, v in exc.headers.items())
        except Exception:  # noqa: BLE001 - our bug: logged, and a 500 that says nothing more
            request_id = new_request_id()
            log.exception("unhandled error in %s %s [request_id=%s]", method, env.get("PATH_INFO"), request_id)
            status, headers, body = error_answer(500, "INTERNAL_ERROR", ROUTE_ERRORS["INTERNAL_ERROR"][1], request_id)
        if match is not None:
            # a request to a route counts for the metrics (queued: see Metrics.observe_http)
            self.metrics.observe_http(match.plugin.name, match.spec.label, status, time.perf_counter() - started)
        headers.update(SECURITY_HEADERS_WSGI)
        if status in (204, 304):
            body = b""
        else:
            headers["content-length"] = str(len(body))
        start_response(_STATUS_LINES.get(status) or _status_line(status), list(headers.items()))
        return [b""] if method == "HEAD" else [body]

    def _failure(self, match, exc: RouteFailure) -> falcon.HTTPError:
        if exc.status == 404:  # the route went away in a reload while we dispatched: unknown now
            return _not_found()
        headers = None
        if exc.kind in ("busy", "breaker", "loading"):  # transient: say when to come back
            wait = 1.0
            if exc.kind == "breaker":
                b = match.plugin.breaker
                wait = b.reset_interval_s - (time.monotonic() - b.opened_at)
            headers = {"Retry-After": str(max(1, math.ceil(wait)))}
        # exc.message never carries a Lua error's text (that went to the plugin's log, under request_id)
        err = falcon.HTTPError(exc.status, description=exc.message, headers=headers,
                               code=exc.code or CODE_FOR_STATUS.get(exc.status, "INTERNAL_ERROR"))
        err.request_id = exc.request_id
        return err

    def _respond(self, match, out):
        """status, headers (lower-case names), body of the plugin's answer (a response dict, or packed)."""
        if type(out) is bytes:
            out = unpack_response(out)
        status = out["status"]
        name = match.plugin.name
        if status < 200:
            return self._plugin_error(name, f"response status {status} is not allowed (use 200-599)", match)
        content_type = None
        if out["has_json"]:
            data = out["encoded"]  # encoded by the plugin's VM already, for most answers
            if data is None:
                try:
                    data = _encode_json(out["json"]).encode()
                except (TypeError, ValueError) as exc:
                    return self._plugin_error(name, f"response json cannot be encoded: {exc}", match)
            content_type = JSON
        else:
            data = out["body"]
        limit = self.settings.max_response_body
        if len(data) > limit:
            return self._plugin_error(name, f"response too large (over {limit} bytes)", match,
                                      "RESPONSE_TOO_LARGE")
        headers = {}
        plugin_headers = out["headers"]
        if plugin_headers:
            for key, value in self._plugin_headers(name, plugin_headers):
                if key == "content-type":
                    if content_type is None:
                        content_type = value
                else:
                    headers[key] = value
        headers["content-type"] = content_type or TEXT
        return status, headers, data

    def _plugin_headers(self, name, headers: dict):
        dropped = []
        for i, (key, value) in enumerate(headers.items()):
            k = key.lower()
            if (k in BLOCKED_HEADERS or k.startswith("access-control-") or not _TOKEN.match(key)
                    or _BAD_VALUE.search(value) or i >= MAX_RESPONSE_HEADERS):
                dropped.append(key)
                continue
            yield k, value
        if dropped:
            self.service.logbook.write(name, "warn", "response headers not allowed and dropped: "
                                       + ", ".join(repr(d[:64]) for d in dropped[:10]))

    def _plugin_error(self, name: str, message: str, match, code: str = "HANDLER_ERROR"):
        """The answer for a response the plugin got wrong: the detail to its log, the client gets the code."""
        request_id = new_request_id()
        self.service.logbook.write(name, "error", f"{match.spec.label}: {message}", {"request_id": request_id})
        self.metrics.errors.labels(name, "response").inc()
        status, text = ROUTE_ERRORS[code]
        return error_answer(status, code, text, request_id)
