"""Outbound HTTP for plugins (SPEC 3.11): the client behind the Lua `request` module.

SSRF protection, stricter than ModulaCMS's dialer check:
- the host name is resolved here, once; every address of the answer is checked, and the connection
  goes to a checked address (pinned): no second lookup happens, so a DNS answer that changes between
  check and connect (rebinding) cannot redirect the connection. https keeps the host name for SNI and
  certificate checks, and every request carries the host name in `Host`;
- private, loopback, link-local (cloud metadata), CGN, benchmarking, multicast, reserved and IPv6 local
  addresses are refused, IPv4-mapped IPv6 addresses by their IPv4 meaning; `allow_localhost` lifts only
  the loopback rule;
- redirects are followed here (not by a library), at most `request_max_redirects`, each hop checked again
  like the first request (scheme, approved domain, addresses);
- https only; http just to loopback when `allow_localhost` is on (as ModulaCMS);
- a response size cap, a timeout that never outlives the caller's deadline, a per-plugin rate limit.

Operational failures are answers (`{"error": ...}`), as in ModulaCMS; OutboundArgumentError is for
arguments the plugin got wrong (the Lua module raises it as a Lua error).
"""
from __future__ import annotations

import concurrent.futures
import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
import urllib.parse
from typing import Callable

from ...settings import PluginSettings

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")
REDIRECTS = (301, 302, 303, 307, 308)
USER_AGENT = "ModulaDesktop-Plugin/1.0"
# headers the client owns: a plugin setting Host could reach another site behind the same address
# (domain fronting); the framing headers are computed from the body
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
# dropped when a redirect leaves the host they were meant for
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
CHUNK = 64 * 1024
# lookups run here so a resolver that hangs cannot hold the caller past its deadline (getaddrinfo has
# no timeout of its own); a lookup abandoned at the deadline finishes in the background
_DNS_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="outbound-dns")

_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
# named for the error message; anything else that is not globally routable is refused too
_BLOCKED = [(ipaddress.ip_network(n), why) for n, why in (
    ("0.0.0.0/8", "this network"), ("10.0.0.0/8", "private"), ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local"), ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"), ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"), ("224.0.0.0/4", "multicast"), ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"), ("::1/128", "loopback"), ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"), ("ff00::/8", "multicast"), ("64:ff9b::/96", "NAT64"),
    ("2002::/16", "6to4"), ("2001::/32", "Teredo"),
)]


class OutboundArgumentError(ValueError):
    """A request the plugin described wrongly (bad method, URL, options): raised in Lua."""


class _Refused(Exception):
    """An operational failure: becomes the answer {"error": message}."""

    def __init__(self, message: str, outcome: str):
        super().__init__(message)
        self.message, self.outcome = message, outcome


def default_resolver(host: str, port: int) -> list[str]:
    """The system's DNS answer for host: every address, in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and sockaddr[0] not in out:
            out.append(sockaddr[0])
    return out


def refusal(address: str, allow_localhost: bool = False) -> str | None:
    """Why an address must not be connected to, or None when it may be."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1 to the kernel
    if allow_localhost and any(ip in net for net in _LOOPBACK if net.version == ip.version):
        return None
    for net, why in _BLOCKED:
        if net.version == ip.version and ip in net:
            return why
    if not ip.is_global:
        return "not globally routable"
    return None


def is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


class RateLimiter:
    """A token bucket per plugin (requests per minute, with a burst)."""

    def __init__(self, per_minute: float, burst: int, clock=time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = max(1, burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return False
            self._buckets[key] = (tokens - 1.0, now)
            return True

    def forget(self, key: str):
        with self._lock:
            self._buckets.pop(key, None)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """http.client with the socket connected to an address checked beforehand: no lookup of its own."""

    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    default_port = 443

    def __init__(self, host, port, address, timeout, context):
        super().__init__(host, port, address, timeout)
        self._context = context

    def connect(self):
        super().connect()
        # SNI and the certificate check use the host name, not the pinned address
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)


def validate_url(url) -> urllib.parse.SplitResult:
    if not isinstance(url, str) or not url:
        raise OutboundArgumentError("request.send(): URL must be a non-empty string")
    if any(c in url for c in "\r\n\t\0 "):
        raise OutboundArgumentError("request.send(): invalid URL: it contains whitespace or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise OutboundArgumentError(f"request.send(): invalid URL: {exc}") from None
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise OutboundArgumentError("request.send(): URLs with userinfo (user:pass@host) are not allowed")
    if not parts.scheme or not parts.hostname:
        raise OutboundArgumentError("request.send(): URL must include scheme and host (e.g., https://example.com)")
    return parts


class OutboundClient:
    """Sends plugins' HTTP requests. Thread-safe: one per application, shared by every VM.

    resolver(host, port) -> [address, ...] is the DNS lookup (the system's by default);
    ssl_context verifies https servers (the system's trust store by default)."""

    def __init__(self, settings: PluginSettings, metrics=None,
                 resolver: Callable[[str, int], list[str]] | None = None,
                 ssl_context: ssl.SSLContext | None = None, clock=time.monotonic):
        self.settings = settings
        self.metrics = metrics
        self.resolver = resolver or default_resolver
        self._ssl_context = ssl_context  # the system's trust store, loaded on the first https request
        self.clock = clock
        self.limiter = RateLimiter(settings.request_rate_per_min, settings.request_rate_burst, clock)

    @property
    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    # ---- the public entry points -------------------------------------------------------------
    def prepare(self, method, url, opts: dict | None) -> dict:
        """Check a request's arguments (raises OutboundArgumentError) and return it normalised, so a
        batch can be refused as a whole before any of it is sent."""
        if not isinstance(method, str) or method.upper() not in METHODS:
            raise OutboundArgumentError(f"request.send(): invalid HTTP method {method!r}")
        validate_url(url)
        opts = opts or {}
        if not isinstance(opts, dict):
            raise OutboundArgumentError("request.send(): options must be a table")
        headers = {}
        raw_headers = opts.get("headers")
        if raw_headers not in (None, [], {}):
            if not isinstance(raw_headers, dict):
                raise OutboundArgumentError("request.send(): headers must be a table of strings")
            for k, v in raw_headers.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    v = str(v)
                if not isinstance(k, str) or not isinstance(v, str):
                    raise OutboundArgumentError("request.send(): headers must be a table of strings")
                if not k or any(c in k for c in ":\r\n\0 ") or any(c in v for c in "\r\n\0"):
                    raise OutboundArgumentError(f"request.send(): invalid header {k!r}")
                if k.lower() in RESERVED_HEADERS:
                    raise OutboundArgumentError(f"request.send(): the {k} header is set by the host")
                headers[k] = v
        body = opts.get("body")
        has_json = opts.get("json") is not None
        if body is not None and has_json:
            raise OutboundArgumentError("request.send(): 'body' and 'json' options are mutually exclusive")
        if has_json:
            try:
                body = json.dumps(opts["json"], ensure_ascii=False, allow_nan=False).encode("utf-8")
            except (TypeError, ValueError) as exc:
                raise OutboundArgumentError(f"request.send(): json option cannot be encoded: {exc}") from None
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json"
        elif body is not None:
            if isinstance(body, str):
                body = body.encode("utf-8", "surrogateescape")
            if not isinstance(body, bytes):
                raise OutboundArgumentError("request.send(): body must be a string")
        if body is not None and len(body) > self.settings.request_max_body:
            raise OutboundArgumentError(
                f"request.send(): request body exceeds maximum size ({self.settings.request_max_body} bytes)")
        timeout = opts.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or timeout <= 0):
            raise OutboundArgumentError("request.send(): timeout must be a positive number of seconds")
        return {"method": method.upper(), "url": url, "headers": headers, "body": body, "timeout": timeout,
                "parse_json": opts.get("parse_json") is True,
                "follow_redirects": opts.get("follow_redirects") is not False}

    def send(self, plugin: str, request: dict, approved: Callable[[str], bool],
             deadline: float | None = None) -> dict:
        """Send one prepared request. Never raises for what happens on the network: the answer is
        {status, body, headers[, json]} or {error}. approved(host) says whether the plugin may
        contact host; deadline (monotonic) is when the caller's own budget ends."""
        started = self.clock()
        domain_label = "(unapproved)"
        try:
            host = urllib.parse.urlsplit(request["url"]).hostname.lower()
            if approved(host):
                domain_label = host
            answer = self._send(plugin, request, approved, deadline)
            outcome = "ok"
        except _Refused as exc:
            answer, outcome = {"error": exc.message}, exc.outcome
        self._observe(plugin, domain_label, outcome, self.clock() - started)
        return answer

    def send_all(self, plugin: str, requests: list[dict], approved: Callable[[str], bool],
                 deadline: float | None = None) -> list[dict]:
        """Several prepared requests at once (at most request_concurrency), answers in order."""
        if len(requests) <= 1:
            return [self.send(plugin, r, approved, deadline) for r in requests]
        workers = min(len(requests), max(1, self.settings.request_concurrency))
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                                   thread_name_prefix=f"request-{plugin}") as pool:
            futures = [pool.submit(self.send, plugin, r, approved, deadline) for r in requests]
            return [f.result() for f in futures]

    def forget(self, plugin: str):
        self.limiter.forget(plugin)

    # ---- the work ----------------------------------------------------------------------------
    def _observe(self, plugin, domain, outcome, seconds):
        m = self.metrics
        if m is None or not hasattr(m, "outbound_requests"):
            return
        m.outbound_requests.labels(plugin, domain, outcome).inc()
        m.outbound_duration.labels(plugin).observe(seconds)

    def _timeout(self, request, deadline) -> tuple[float, float]:
        """(seconds, absolute end) for this request: the plugin's timeout, capped by the setting and
        by the caller's deadline (minus a margin so the answer gets back before the budget ends)."""
        s = self.settings
        seconds = float(s.request_timeout_s)
        if request["timeout"] is not None:
            seconds = min(seconds, float(request["timeout"]))
        now = self.clock()
        end = now + seconds
        if deadline is not None:
            end = min(end, deadline - s.request_deadline_margin_ms / 1000.0)
        if end <= now:
            raise _Refused("request timed out: no time left in the caller's budget", "timeout")
        return end - now, end

    def _send(self, plugin, request, approved, deadline) -> dict:
        seconds, end = self._timeout(request, deadline)
        if not self.limiter.allow(plugin):
            host = urllib.parse.urlsplit(request["url"]).hostname
            raise _Refused(f"rate limit exceeded for domain: {host}", "rate_limited")
        method, url, headers, body = request["method"], request["url"], dict(request["headers"]), request["body"]
        first_host = None
        for hop in range(self.settings.request_max_redirects + 1):
            parts = urllib.parse.urlsplit(url)
            host = parts.hostname.lower()
            if first_host is None:
                first_host = host
            elif host != first_host:
                headers = {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS}
            status, reason, resp_headers, data = self._exchange(parts, host, method, headers, body, approved,
                                                                seconds, end)
            location = resp_headers.get("location")
            if status in REDIRECTS and location and request["follow_redirects"]:
                url = urllib.parse.urljoin(url, location)
                try:
                    validate_url(url)
                except OutboundArgumentError as exc:
                    raise _Refused(f"redirect refused: {str(exc).split(': ', 1)[-1]}", "blocked") from None
                if status == 303 or (status in (301, 302) and method == "POST"):
                    # as browsers do: the next hop is a GET without the body
                    method, body = "GET", None
                    headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
                continue
            answer = {"status": status, "body": data, "headers": resp_headers}
            if request["parse_json"] and resp_headers.get("content-type", "").startswith("application/json"):
                try:
                    answer["json"] = json.loads(data.decode("utf-8"))
                except (ValueError, UnicodeDecodeError, RecursionError):
                    pass  # as ModulaCMS: no json field when the body does not parse
            return answer
        raise _Refused(f"too many redirects (more than {self.settings.request_max_redirects})", "redirects")

    def _check_target(self, parts, host, approved, end) -> tuple[list[str], int]:
        """Scheme, approval and addresses of one hop: the checked addresses to connect to, and the port."""
        allow_local = self.settings.allow_localhost
        if parts.scheme not in ("https", "http"):
            raise _Refused(f"unsupported URL scheme {parts.scheme!r} (only https is allowed)", "blocked")
        if not approved(host):
            raise _Refused(f"domain not approved: {host}", "not_approved")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = self._resolve(host, port, end)
        for address in addresses:
            why = refusal(address, allow_local)
            if why is not None:
                # one bad address refuses the name: a client that tried the next one would let a
                # rebinding answer mix a public decoy with an internal target
                raise _Refused(f"request to private/reserved IP address blocked ({host} is {address}, {why})",
                               "blocked")
        if parts.scheme == "http" and not (allow_local and all(is_loopback(a) for a in addresses)):
            raise _Refused("HTTP scheme requires HTTPS (HTTP only allowed to localhost when "
                           "allow_localhost is enabled)", "blocked")
        return addresses, port

    def _resolve(self, host: str, port: int, end: float) -> list[str]:
        literal = host[1:-1] if host.startswith("[") else host
        try:
            ipaddress.ip_address(literal.split("%", 1)[0])
            return [literal]
        except ValueError:
            pass
        try:
            future = _DNS_POOL.submit(self.resolver, host, port)
            addresses = list(future.result(timeout=max(0.0, end - self.clock())))
        except concurrent.futures.TimeoutError:
            raise _Refused(f"request timed out: dns lookup of {host} took too long", "timeout") from None
        except (OSError, UnicodeError):
            raise _Refused(f"dns lookup failed: {host}", "dns_error") from None
        if not addresses:
            raise _Refused(f"dns lookup failed: {host}", "dns_error")
        return [str(a) for a in addresses]

    def _exchange(self, parts, host, method, headers, body, approved, seconds, end):
        addresses, port = self._check_target(parts, host, approved, end)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        limit = self.settings.request_max_response
        last_error = None
        for address in addresses:
            left = end - self.clock()
            if left <= 0:
                break
            if parts.scheme == "https":
                conn = _PinnedHTTPSConnection(host, port, address, left, self.ssl_context)
            else:
                conn = _PinnedHTTPConnection(host, port, address, left)
            try:
                try:
                    conn.connect()
                except ConnectionRefusedError:
                    last_error = _Refused(f"connection refused: {host}", "refused")
                    continue
                except ssl.SSLError as exc:
                    raise _Refused(f"tls handshake failed: {host} ({exc.reason or exc})", "tls_error") from None
                except socket.timeout:
                    raise _Refused(f"request timed out after {seconds:.3g}s", "timeout") from None
                except OSError as exc:
                    last_error = _Refused(f"request failed: {host}: {exc.strerror or exc}", "error")
                    continue
                return self._talk(conn, host, method, path, headers, body, limit, seconds, end)
            finally:
                conn.close()
        if last_error is not None:
            raise last_error
        raise _Refused(f"request timed out after {seconds:.3g}s", "timeout")

    def _talk(self, conn, host, method, path, headers, body, limit, seconds, end):
        def left():
            remaining = end - self.clock()
            if remaining <= 0:
                raise socket.timeout()
            return remaining

        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            names = {k.lower() for k in headers}
            if "user-agent" not in names:
                conn.putheader("User-Agent", USER_AGENT)
            if "accept-encoding" not in names:
                conn.putheader("Accept-Encoding", "identity")
            for k, v in headers.items():
                conn.putheader(k, v)
            if body is not None or method in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body or b"")))
            conn.endheaders(body or None)
            conn.sock.settimeout(left())
            resp = conn.getresponse()
            resp_headers = {}
            for k, v in resp.getheaders():
                resp_headers.setdefault(k.lower(), v)  # the first value, as ModulaCMS's Header.Get
            declared = resp_headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise _Refused(f"response exceeded maximum size ({limit} bytes)", "too_large")
            chunks, size = [], 0
            while method != "HEAD":
                conn.sock.settimeout(left())
                chunk = resp.read1(CHUNK) if hasattr(resp, "read1") else resp.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise _Refused(f"response exceeded maximum size ({limit} bytes)", "too_large")
                chunks.append(chunk)
            return resp.status, resp.reason, resp_headers, b"".join(chunks)
        except _Refused:
            raise
        except (socket.timeout, TimeoutError):
            raise _Refused(f"request timed out after {seconds:.3g}s", "timeout") from None
        except ssl.SSLError as exc:
            raise _Refused(f"tls handshake failed: {host} ({exc.reason or exc})", "tls_error") from None
        except (http.client.HTTPException, OSError, ValueError) as exc:
            raise _Refused(f"request failed: {host}: {exc or type(exc).__name__}", "error") from None
