"""The Lua `request` module (SPEC 3.11): outbound HTTP to domains the author approved.

The Lua side (lua/request.lua) reads the plugin's arguments; this side validates them, refuses calls in
phases that must not wait on the network, and hands the request to the application's outbound client
(outbound.py), or, under `modula plugin test`, to the test's mock rules."""
from __future__ import annotations

from ..errors import ApiError
from .outbound import OutboundArgumentError
from ..runtime.sandbox import _lua_source, lua_type

ALLOWED_DOMAIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")


def validate_domain(domain: str) -> str:
    """ModulaCMS's rules for a registered domain: a host name only. Returns it lower-cased."""
    if not domain:
        raise ApiError("request.register: domain cannot be empty")
    if len(domain) > 253:
        raise ApiError(f"request.register: domain {domain!r} exceeds 253 characters")
    if "://" in domain:
        raise ApiError("request.register: domain must not include scheme "
                       "(e.g., use 'example.com' not 'https://example.com')")
    if "/" in domain:
        raise ApiError("request.register: domain must not include path")
    if ":" in domain:
        raise ApiError("request.register: domain must not include port")
    if "*" in domain:
        raise ApiError("request.register: domain must not contain wildcards")
    for c in domain:
        if c not in ALLOWED_DOMAIN_CHARS:
            raise ApiError(f"request.register: domain contains invalid character {c!r} (allowed: a-zA-Z0-9.-)")
    if "." not in domain:
        raise ApiError("request.register: domain must contain at least one dot (e.g., 'example.com')")
    return domain.lower()


class RequestModule:
    """The per-VM state of the request module: registered domains and the host functions."""

    def __init__(self, vm):
        self.vm = vm
        # domain -> description, in registration order (filled while init.lua's main chunk runs)
        self.domains: dict[str, str] = {}

    def install(self):
        sb = self.vm.sandbox
        py = sb.raw_host_table({
            "register": sb.host_function(self._register, name="request.register"),
            "send": sb.host_function(self._send, convert_args=False, name="request.send"),
            "send_all": sb.host_function(self._send_all, convert_args=False, name="request.all"),
        })
        py[b"max_batch"] = max(1, self.vm.settings.request_concurrency)
        module = sb.lua.execute(_lua_source("request.lua"), sb.trusted, py, name="=request", mode="t")
        sb.fn("install_module")(b"request", module)

    # ---- registration ------------------------------------------------------------------------
    def _register(self, domain, description):
        domain = validate_domain(domain)
        if domain in self.domains:
            return None  # idempotent, as in ModulaCMS
        limit = self.vm.settings.request_max_domains
        if len(self.domains) >= limit:
            raise ApiError(f"plugin {self.vm.name!r} exceeded maximum domain registration limit ({limit})")
        self.domains[domain] = description or ""
        return None

    # ---- sending -----------------------------------------------------------------------------
    def _check_phase(self, phase: bytes):
        vm = self.vm
        phase = phase.decode() if isinstance(phase, bytes) else str(phase)
        if phase == "module":
            raise ApiError("request.send() cannot be called at module scope")
        if phase == "init":
            where = "on_shutdown()" if vm.current_call == "on_shutdown" else "on_init()"
            raise ApiError(f"request.send() cannot be called inside {where}")
        if (phase == "hook" and vm.in_before_hook()) or vm.current_call == "test:before_hook":
            raise ApiError("request.send() cannot be called inside a before-hook handler "
                           "(would hold DB transaction locks)")
        if phase not in ("handler", "hook"):
            raise ApiError(f"request.send() cannot be called in current VM phase {phase!r}")
        m = vm.manifest
        if m is not None and not m.allows("request") and not (m.permissions is None and vm.domains):
            raise ApiError("this plugin did not declare the 'request' permission"
                           + ("" if m.permissions is not None else " (or register a domain with request.register)"))

    def _prepare(self, client, method, url, opts, body):
        sb = self.vm.sandbox
        method = sb.from_lua(method)
        url = sb.from_lua(url)
        options = {}
        if opts is not None and opts is not False:
            if lua_type(opts) != "table":
                raise ApiError("request.send: options must be a table")
            options = sb.from_lua(opts)
            if isinstance(options, list):  # an empty table
                options = {}
            if isinstance(body, bytes):
                options["body"] = body  # as the plugin gave it: binary-safe
        try:
            return client.prepare(method, url, options)
        except OutboundArgumentError as exc:
            raise ApiError(str(exc)) from None

    def _client(self):
        return self.vm.ctx.outbound

    def _approved(self, host: str) -> bool:
        if host not in self.domains:
            return False
        check = self.vm.ctx.domain_approved
        return check is None or check(self.vm.name, host)

    def _deadline(self):
        sb = self.vm.sandbox
        return sb._deadline if sb._armed else None

    def _send(self, phase, method, url, opts, body):
        self._check_phase(phase)
        client = self._client()
        if client is None:
            return {"error": "outbound requests not configured"}
        request = self._prepare(client, method, url, opts, body)
        return client.send(self.vm.name, request, self._approved, self._deadline())

    def _send_all(self, phase, count, flat):
        self._check_phase(phase)
        client = self._client()
        if client is None:
            return [{"error": "outbound requests not configured"} for _ in range(int(count or 0))]
        values = dict(flat.items()) if lua_type(flat) == "table" else {}
        requests = []
        for i in range(int(count)):
            m, u, o, b = (values.get(4 * i + j) for j in (1, 2, 3, 4))
            requests.append(self._prepare(client, m, u, o, b if isinstance(b, bytes) else None))
        return client.send_all(self.vm.name, requests, self._approved, self._deadline())
