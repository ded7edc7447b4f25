"""A plugin VM: one sandboxed runtime with the plugin's code loaded and its API modules installed."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ...settings import PluginSettings
from ..errors import ApiError, ConversionLimit, DataError, PluginCallError, PluginLoadError
from ..api.log import cap_entry
from ..api import hooks as hooks_api
from ..api import http as http_api
from ..api import json as json_api
from ..api import log as log_api
from ..api.hooks import EVENTS, HOOK_TABLES, HookSpec  # noqa: F401 - re-exported for the runtime
from ..api.http import METHODS, RouteResponse, RouteSpec, unpack_response, validate_route_path  # noqa: F401
from ..lifecycle.manifest import Manifest, parse_manifest
from .sandbox import MAX_ITEMS, Sandbox, lua_type

log = logging.getLogger(__name__)

MAX_SOURCE_BYTES = 1024 * 1024
# the request fields the server sends (a request with others goes to Lua as a table)
_FIELD_KEYS = {k: k.encode() for k in ("method", "path", "body", "client_ip", "headers", "query", "params", "json")}
# request fields that are maps of strings; route_entry gives each an empty table when it is left out
_FLAT_MAPS = frozenset({"headers", "query", "params"})
# (what, seconds) -> the message of a missed deadline; built once, not on every request
_DEADLINE_MESSAGES: dict = {}
LEFT_OPEN = "db.transaction was still open when the call ended: it was rolled back"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _flat_bytes(mapping: dict) -> list[bytes]:
    """A map of strings as [name, value, ...] in UTF-8 (AttributeError when one is not a string)."""
    return [x.encode("utf-8", "surrogateescape") for item in mapping.items() for x in item]


def _deadline_message(seconds, what) -> bytes:
    message = _DEADLINE_MESSAGES.get((what, seconds))
    if message is None:
        message = f"time budget exceeded ({what} ran longer than {seconds:.3g} s)".encode()
        if len(_DEADLINE_MESSAGES) < 256:
            _DEADLINE_MESSAGES[(what, seconds)] = message
    return message


@dataclass
class OpBudget:
    """db.* operations allowed in the current checkout. Sticky once exceeded."""

    limit: int = 0
    used: int = 0
    label: str = "checkout"
    exceeded: bool = False

    def reset(self, limit: int, label: str):
        self.limit, self.used, self.label, self.exceeded = limit, 0, label, False

    def spend(self, n: int = 1):
        if self.exceeded or self.used + n > self.limit:
            self.exceeded = True
            raise ApiError(f"operation budget exceeded ({self.limit} db operations per {self.label})")
        self.used += n

    @property
    def message(self):
        return f"operation budget exceeded ({self.limit} db operations per {self.label})"


@dataclass
class VMContext:
    """What a VM needs from the application."""

    name: str
    root: Path
    settings: PluginSettings
    database: object | None = None  # peewee database; None when offline (validate/list)
    log_sink: Callable[[str, str, str, dict | None], None] | None = None
    extra_db: dict = field(default_factory=dict)
    # the request module: the outbound client (None: "outbound requests not configured") and
    # domain_approved(plugin, domain) -> bool (None: every registered domain may be contacted)
    outbound: object | None = None
    domain_approved: Callable[[str, str], bool] | None = None
    # the core module: content() -> the content service (None: no content here), and
    # core_approved(plugin, "read" | "write") -> bool (None: nothing is approved)
    content: Callable[[], object] | None = None
    core_approved: Callable[[str, str], bool] | None = None


class PluginVM:
    """Loads init.lua into a fresh sandbox. Used by one thread at a time (the pool's job)."""

    def __init__(self, ctx: VMContext):
        self.ctx = ctx
        self.name = ctx.name
        s = ctx.settings
        self.settings = s
        self.broken = False
        # True right after a route call that restored the globals itself and left no transaction
        # open: the give-back has no reset to do (the pool clears it)
        self.clean = False
        self.manifest: Manifest | None = None
        self.warnings: list[str] = []
        self.hook_warnings: list[str] = []  # hooks on tables the site lacks (they never fire)
        self.routes: list[RouteSpec] = []
        self.hooks: list[HookSpec] = []
        self.ops = OpBudget()
        # what runs now: "on_init"/"on_shutdown", or a hook's registry index (the request module's
        # phase checks read it)
        self.current_call = None
        self.sandbox = Sandbox(s.memory_limit_mb, s.error_max_bytes)
        self.db_api = self._make_db_api()
        sb = self.sandbox
        sb.fn("new_env")(self.name.encode(),
                         sb.fn("bind")(sb.host_function(self._read_lib, name="require")),
                         sb.fn("bind")(sb.host_function(self._print, name="print")))
        py = {
            "validate_route": sb.host_function(self._validate_route, name="http.handle"),
            "validate_hook": sb.host_function(self._validate_hook, name="hooks.on"),
            "log": sb.host_function(self._log, convert_args=False, name="log"),
            "json_encode": sb.host_function(self._json_encode, convert_args=False, name="json.encode"),
            "json_decode": sb.host_function(self._json_decode, convert_args=False, name="json.decode"),
            "tx_begin": sb.host_function(self._db_call("tx_begin"), convert_args=False, name="db.transaction"),
            "tx_commit": sb.host_function(self._db_call("tx_commit"), convert_args=False, name="db.transaction"),
            "tx_rollback": sb.host_function(self._db_call("tx_rollback"), convert_args=False, name="db.transaction"),
        }
        db_functions = {}
        for fname in self._db_function_names():
            # arguments converted in _db_call: a blob's bytes must arrive exactly
            db_functions[fname] = sb.host_function(self._db_call(fname), convert_args=False, name=f"db.{fname}")
        py["db"] = sb.raw_host_table(db_functions)
        sb.fn("build_api")(sb.raw_host_table(py))
        from ..api.request import RequestModule

        self.request_module = RequestModule(self)
        self.request_module.install()
        from ..api.core import CoreModule

        self.core_module = CoreModule(self)
        self.core_module.install()
        # the screen sessions' steps (runtime/screens.py), once load() found screens or interfaces
        self.tui_steps = None

    @property
    def domains(self) -> dict:
        """Outbound domains registered with request.register: {domain: description}."""
        return self.request_module.domains

    def schema_problems(self) -> list[str]:
        """define_table declarations the existing tables do not follow (shown in the plugin's state)."""
        return list(self.db_api.schema_problems) if self.db_api is not None else []

    def in_before_hook(self) -> bool:
        index = self.current_call
        return isinstance(index, int) and any(h.index == index and h.is_before for h in self.hooks)

    # ---- the db module -----------------------------------------------------------------------
    def _make_db_api(self):
        try:
            from ..api.db import PluginDB
        except ImportError:  # pragma: no cover - during bring-up
            return None
        api = PluginDB(self.name, self.ctx.database, self.ops, self.ctx.settings)
        api.warn = lambda message: self._emit("warn", message, None)
        sandbox = self.sandbox
        # the running call's deadline: SQL statements stop there (SQLite's progress handler)
        api.deadline = lambda: sandbox._deadline if sandbox._armed else None
        return api

    def _db_function_names(self):
        if self.db_api is None:
            return ()
        return tuple(self.db_api.LUA_FUNCTIONS)

    def _db_call(self, fname):
        pure = self.db_api is not None and fname in self.db_api.PURE_FUNCTIONS
        from ..api.db import DATA_FUNCTIONS, lua_args

        if fname in DATA_FUNCTIONS:
            inner = self._db_call_raising(fname, pure, lua_args)

            def data_call(*args):
                # ModulaCMS: the data's refusal (a constraint, an unknown table or column) is nil, err;
                # argument errors and budgets still raise
                try:
                    return inner(*args)
                except DataError as exc:
                    db = self.db_api
                    if db is not None and db.in_transaction and db.tx_failed is None:
                        db.tx_failed = str(exc)
                    return None, str(exc)
            return data_call
        return self._db_call_raising(fname, pure, lua_args)

    def _db_call_raising(self, fname, pure, lua_args):

        def call(*args):
            sb = self.sandbox
            budget = [MAX_ITEMS, sb.memory_limit]  # one copy budget for all the arguments, as host_function's
            args = [lua_args(sb.from_lua(a, binary=True, _budget=budget)) for a in args]
            if pure:
                return getattr(self.db_api, fname)(*args)
            if self.db_api is None or self.ctx.database is None:
                raise ApiError(f"db.{fname}: the database is not available here")
            if self.manifest is not None and not self.manifest.allows("db"):
                raise ApiError("this plugin did not declare the 'db' permission")
            return getattr(self.db_api, fname)(*args)
        return call

    # ---- host functions ----------------------------------------------------------------------
    def _read_plugin_file(self, folder: str, name: str, missing: str, unreadable: str, large: str) -> bytes:
        """<folder>/<name>.lua of this plugin: ApiError(missing) unless it is a plain file in a plain folder
        of the plugin (neither may be a link, so nothing outside the plugin folder is ever read),
        ApiError(unreadable) on an OSError, ApiError(large) over 1 MiB."""
        root = self.ctx.root.resolve()
        folder_path = self.ctx.root / folder
        resolved = folder_path.resolve()
        path = resolved / f"{name}.lua"
        try:
            if folder_path.is_symlink() or resolved.parent != root or path.is_symlink() or not path.is_file() \
                    or path.resolve().parent != resolved:
                raise ApiError(missing)
            data = path.read_bytes()
        except OSError:
            raise ApiError(unreadable) from None
        if len(data) > MAX_SOURCE_BYTES:
            raise ApiError(large)
        return data

    def _read_lib(self, mod):
        return self._read_plugin_file("lib", mod, f"require: module '{mod}' not found in lib/",
                                      f"require: module '{mod}' cannot be read",
                                      f"require: module '{mod}' is larger than 1 MiB")

    def read_ui_source(self, kind: str, name: str) -> bytes:
        """screens/<name>.lua or interfaces/<name>.lua (kind: "screens" or "interfaces"). ApiError when
        missing, a link, or larger than 1 MiB."""
        return self._read_plugin_file(kind, name, f"{kind}/{name}.lua not found", f"{kind}/{name}.lua cannot be read",
                                      f"{kind}/{name}.lua is larger than 1 MiB")

    def _print(self, text):
        self._emit("info", str(text), None)

    def _log(self, level, msg, ctx):
        log_api.lua_log(self, level, msg, ctx)

    def _emit(self, level, msg, ctx):
        msg, ctx = cap_entry(msg, ctx, self.settings.log_entry_max_bytes)
        if self.ctx.log_sink:
            self.ctx.log_sink(self.name, level, msg, ctx)
        else:
            log.log(_LEVELS.get(level, logging.INFO), "[%s] %s", self.name, msg)

    def _json_encode(self, value):
        return json_api.encode(self.sandbox, value)

    def _json_decode(self, text):
        return json_api.decode(text)

    def _validate_route(self, method, path, count):
        return http_api.validate_route(method, path, count, self.settings.max_routes)

    def _validate_hook(self, event, table, priority, count):
        return hooks_api.validate_hook(event, table, priority, count, self.settings.max_hooks)

    # ---- loading -----------------------------------------------------------------------------
    def _budget_args(self, seconds, what):
        # the deadline is absolute so the sandbox need not call back for the time when it arms
        return (self.settings.max_instructions, time.monotonic() + float(seconds), _deadline_message(seconds, what))

    def load(self, source: bytes | None = None, expected: Manifest | None = None):
        """Run init.lua's main chunk. Fills manifest, routes, hooks. Raises PluginLoadError.

        expected: the manifest of the generation this VM joins. The manifest is read once per
        generation and every VM of it gets exactly those modules, so a VM whose plugin_info differs in
        any field (it depended on the clock, say) fails the load."""
        if source is None:
            path = self.ctx.root / "init.lua"
            try:
                source = path.read_bytes()
            except OSError:
                raise PluginLoadError(f"{self.name}: init.lua not found") from None
        if len(source) > MAX_SOURCE_BYTES:
            raise PluginLoadError("init.lua is larger than 1 MiB")
        sb = self.sandbox
        chunk = sb.fn("load_main")(source, b"=init.lua")
        if isinstance(chunk, tuple):
            err = chunk[1].decode("utf-8", "replace") if isinstance(chunk[1], bytes) else str(chunk[1])
            raise PluginLoadError(f"syntax error: {err}")
        self.ops.reset(self.settings.max_ops, "init")
        try:
            sb.call("run", *self._budget_args(self.settings.timeout_s, "init.lua"), b"module", chunk)
        except PluginCallError as exc:
            self.broken = exc.kind == "memory"
            raise PluginLoadError(f"init.lua failed: {exc.message}") from None
        try:
            info = sb.from_lua(sb.fn("get_global")(b"plugin_info"))
        except ApiError as exc:
            raise PluginLoadError(f"plugin_info: {exc}") from None
        manifest, self.warnings = parse_manifest(info, self.ctx.root.name if self.ctx.root else self.name)
        if manifest.name != self.name and self.ctx.database is not None:
            # the manager reads the name first and serves the plugin under it (lifecycle/manager.py)
            raise PluginLoadError(f"plugin_info.name changed from '{self.name}' to '{manifest.name}': a plugin's "
                                  "name is its identity (routes, tables, approvals); restart the app to load it "
                                  "under the new name")
        if expected is not None and manifest != expected:
            field = next(k for k, v in manifest.to_dict().items() if v != expected.to_dict()[k])
            raise PluginLoadError(f"plugin_info.{field} differs from the one this version was loaded with: "
                                  "plugin_info must not depend on the time or on chance")
        self.manifest = manifest
        self._read_registry()
        m = self.manifest
        if self.routes and not m.allows("http"):
            raise PluginLoadError("registers routes but did not declare the 'http' permission")
        if self.hooks and not m.allows("hooks"):
            raise PluginLoadError("registers hooks but did not declare the 'hooks' permission")
        # before_read may refuse a read: like the before-hooks of a change, it needs "hooks:before"
        if any(h.is_before or h.event == "before_read" for h in self.hooks) and m.permissions is not None \
                and "hooks:before" not in m.permissions:
            raise PluginLoadError("registers before-hooks but did not declare the 'hooks:before' permission")
        # without declared permissions (a ModulaCMS plugin) request.register is the declaration, as in
        # ModulaCMS: each domain still waits for the author's approval
        if self.domains and not m.allows("request") and m.permissions is not None:
            raise PluginLoadError("registers domains but did not declare the 'request' permission")
        for module, perm in (("db", "db"), ("http", "http"), ("hooks", "hooks")):
            if not m.allows(perm):
                sb.fn("remove_module")(module.encode())
        if m.permissions is not None and not m.allows("request"):
            sb.fn("remove_module")(b"request")
        if m.permissions is not None and not m.core:
            sb.fn("remove_module")(b"core")  # declared permissions without core:* (or core_access)
        if m.screens or m.interfaces:
            # after the main chunk, when the manifest is known: a plugin without them never sees tui
            from ..api import tui as tui_api

            self.tui_steps = tui_api.install(self)
        # without declared permissions (the ModulaCMS default) request stays, every call refusing with
        # "did not declare the 'request' permission": a ModulaCMS plugin learns what to add
        return self.manifest

    def _read_registry(self):
        reg = self.sandbox.fn("registry")
        routes, seen = [], set()
        for i, r in sorted(reg[b"routes"].items()):
            spec = RouteSpec(i, r[b"method"].decode(), r[b"path"].decode(), bool(r[b"public"]), bool(r[b"build"]))
            if spec.key in seen:
                raise PluginLoadError(f"route {spec.method} {spec.path} is registered twice")
            seen.add(spec.key)
            routes.append(spec)
        hooks = []
        for i, h in sorted(reg[b"hooks"].items()):
            name = h[b"name"]
            spec = HookSpec(i, h[b"event"].decode(), h[b"table"].decode(), int(h[b"priority"]),
                            name.decode("utf-8", "replace") if isinstance(name, bytes) else "")
            hooks.append(spec)
            warning = hooks_api.never_fires(spec)
            if warning and warning not in self.hook_warnings:
                self.hook_warnings.append(warning)
        self.warnings += [w for w in self.hook_warnings if w not in self.warnings]
        self.routes, self.hooks = routes, hooks

    def call_init(self):
        """Run on_init (if defined). Raises PluginLoadError."""
        self.ops.reset(self.settings.max_ops, "init")
        try:
            self._call_global("on_init", self.settings.timeout_s, "on_init")
        except PluginCallError as exc:
            raise PluginLoadError(f"on_init failed: {exc.message}") from None

    def call_shutdown(self):
        self.ops.reset(self.settings.max_ops, "shutdown")
        try:
            self._call_global("on_shutdown", self.settings.timeout_s, "on_shutdown")
        except PluginCallError as exc:
            self._emit("error", f"on_shutdown failed: {exc.message}", None)

    def _call_global(self, name, seconds, what):
        self.current_call = name
        self._checked(self.sandbox.call, "call_global", *self._budget_args(seconds, what), name.encode())

    def snapshot(self):
        self.sandbox.fn("take_snapshot")()

    def reset(self):
        """Give-back: globals back to the post-init snapshot."""
        self.clean = False
        try:
            self.sandbox.fn("restore_snapshot")()
        except Exception:  # noqa: BLE001 - a VM we cannot reset is not reused
            self.broken = True
        if self.db_api is not None and self.db_api.in_transaction:
            # a handler stopped mid-transaction: roll it back on this thread, never reuse the VM
            self.db_api.abandon()
            self.broken = True

    def _checked(self, fn, *args):
        self.clean = False  # any other call into plugin code: the give-back resets
        try:
            result = fn(*args)
        except PluginCallError as exc:
            self._close_leftovers()
            raise self._call_failed(exc) from None
        if self._close_leftovers():
            raise PluginCallError("error", LEFT_OPEN)
        if self.ops.exceeded:
            raise PluginCallError("ops", self.ops.message)
        return result

    def _close_leftovers(self) -> bool:
        """No lock outlives a call: a transaction still open when plugin code returns (the bootstrap
        refuses to suspend one; this is the net below that rule) is rolled back here, on the thread
        that opened it, and the VM is never reused. True when there was one."""
        db = self.db_api
        if db is None or not db.in_transaction:
            return False
        db.abandon()
        self.broken = True
        return True

    def _call_failed(self, exc: PluginCallError) -> PluginCallError:
        """The error to raise for a failed call (an exceeded db budget is reported as such)."""
        if exc.kind in ("memory", "timeout", "budget"):
            # a VM stopped mid-way may hold half-updated state; never reuse it
            self.broken = True
        if self.ops.exceeded:
            return PluginCallError("ops", self.ops.message)
        return exc

    # ---- calls -------------------------------------------------------------------------------
    def call_route(self, index: int, request: dict, max_ops: int | None = None, timeout: float | None = None):
        """Run middleware and the route's handler. Returns the raw result for read_response.

        request: method, path, body, client_ip, headers, query, params and (for a JSON body) json.
        headers is a dict of names to values, or (the server's fast path) a flat list of name and
        value bytes; a request with other fields goes through the generic conversion."""
        self.clean = False  # until this call has restored the globals itself (below)
        settings = self.settings
        ops = self.ops  # ops.reset(...), without its frame
        ops.limit = settings.max_ops if max_ops is None else max_ops
        ops.used, ops.label, ops.exceeded = 0, "request", False
        seconds = settings.timeout_s if timeout is None else timeout
        # the budget (as _budget_args gives it), the route and the request, flat: one frame on every
        # plugin request instead of one per piece
        message = _DEADLINE_MESSAGES.get(("the handler", seconds)) or _deadline_message(seconds, "the handler")
        head = (settings.max_instructions, time.monotonic() + float(seconds), message, index)
        try:  # _checked, inlined: this is every plugin request
            if _FIELD_KEYS.keys() >= request.keys():
                try:
                    headers, body, query, params = request["headers"], request["body"], request["query"], request["params"]
                    flat = (request["method"].encode("utf-8", "surrogateescape"),
                            request["path"].encode("utf-8", "surrogateescape"),
                            body if type(body) is bytes else body.encode("utf-8", "surrogateescape"),
                            request["client_ip"].encode("utf-8", "surrogateescape"))
                    if query:
                        query = _flat_bytes(query)
                    if params:
                        params = _flat_bytes(params)
                    if type(headers) is not list:
                        headers = _flat_bytes(headers)
                except (KeyError, AttributeError, TypeError):  # a field missing or not a string
                    flat = None
            else:
                flat = None
            # an ApiError converting the request (a request that cannot become Lua values) is the
            # client's fault, not the plugin's: it propagates so the server answers 400 without
            # counting a plugin failure
            if flat is not None:
                json_value = request.get("json")
                result = self.sandbox.call_route(
                    *head, *flat, None if json_value is None else self.sandbox.request_to_lua(json_value),
                    query or None, params or None, headers)
            else:
                result = self.sandbox.call_route(*head, self._request_table(request))
        except PluginCallError as exc:
            self._close_leftovers()
            raise self._call_failed(exc) from None
        db = self.db_api
        if db is not None and db._tx is not None and self._close_leftovers():
            raise PluginCallError("error", LEFT_OPEN)
        if self.ops.exceeded:
            raise PluginCallError("ops", self.ops.message)
        # route_call restored the globals itself before returning: the give-back need not call again
        # (after a failure it does, to be sure)
        self.clean = True
        return result

    def _request_table(self, request: dict):
        """The request as a Lua table, for requests call_route cannot send flat: flat string maps go
        through one table_from each instead of the generic recursive conversion, and empty ones are not
        built at all (route_entry puts an empty table in their place)."""
        sb = self.sandbox
        fields = {}
        for key, value in request.items():
            bkey = _FIELD_KEYS.get(key)
            if bkey is None:
                bkey = _utf8(key)
            kind = type(value)
            if kind is str:
                value = _utf8(value)
            elif kind is dict and key in _FLAT_MAPS:
                if not value:
                    continue
                try:
                    value = self._flat_map(value)
                except AttributeError:  # not all strings: the generic conversion
                    value = sb.to_lua(value)
            elif kind is not bytes and value is not None:
                value = sb.request_to_lua(value)
            fields[bkey] = value
        return sb.lua.table_from(fields)

    def _flat_map(self, value: dict):
        """A Lua table of a map of strings (AttributeError when one is not a string)."""
        return self.sandbox.lua.table_from({_utf8(k): _utf8(v) for k, v in value.items()})

    def call_hook(self, index: int, data: dict, timeout: float, max_ops: int | None = None):
        """Run one hook. Returns what it returned, converted to Python (None, or a dict of changes)."""
        self.ops.reset(self.settings.hook_max_ops if max_ops is None else max_ops, "hook invocation")
        self.current_call = index
        try:
            payload = self.sandbox.to_lua(data)
        except ApiError as exc:
            raise PluginCallError("error", f"hook data cannot be handed to the plugin: {exc}") from None
        result = self._checked(self.sandbox.call, "run_hook", *self._budget_args(timeout, "the hook"), index, payload)
        if any(h.index == index and h.is_read for h in self.hooks):
            self._state_back(payload, data)
        value = result[0] if result else None
        if value is None:
            return None
        try:
            return self.sandbox.from_lua(value)
        except ApiError as exc:
            raise PluginCallError("error", f"hook returned an unusable value: {exc}") from None

    def _state_back(self, payload, data: dict):
        """ModulaCMS's read-hook state: the "_" keys a hook set on its data table go back into data (for
        the dispatcher to hand to the after_read hooks). Plain values only, at most 64."""
        n = 0
        for key, value in payload.items():
            if type(key) is not bytes or not key.startswith(b"_") or key in (b"_table", b"_event"):
                continue
            n += 1
            if n > 64:
                break
            try:
                data[key.decode("utf-8", "replace")] = self.sandbox.from_lua(value)
            except ApiError:
                continue

    def read_response(self, result):
        """The handler's response from call_route's result (see RouteResponse)."""
        if type(result) is bytes:
            return unpack_response(result)
        status, has_json, js, body, h = result
        if type(status) is not int:
            if isinstance(status, float) and status.is_integer():
                status = int(status)
            if isinstance(status, bool) or not isinstance(status, int):
                raise PluginCallError("error", "response status must be an integer from 100 to 599")
        if not 100 <= status <= 599:
            raise PluginCallError("error", "response status must be an integer from 100 to 599")
        headers = {}
        if h is not None:
            if lua_type(h) != "table":
                raise PluginCallError("error", "response headers must be a table")
            for k, v in h.items():
                if not isinstance(k, bytes) or not isinstance(v, (bytes, int, float)):
                    raise PluginCallError("error", "response headers must map strings to strings")
                headers[k.decode("latin-1")] = v.decode("latin-1") if isinstance(v, bytes) else str(v)
        if has_json:
            limit = self.settings.max_response_body
            try:
                # bounded by the response limit: a lower bound of the JSON text, counted as it is copied
                js = self.sandbox.from_lua(js, max_bytes=limit, json_text=True)
            except ConversionLimit:
                raise PluginCallError("response_size", f"response too large (over {limit} bytes)") from None
            except ApiError as exc:
                raise PluginCallError("error", f"response json: {exc}") from None
        if type(body) is not bytes:
            if isinstance(body, (int, float)):
                body = str(body).encode()
            if not isinstance(body, bytes):
                raise PluginCallError("error", "response body must be a string")
        return RouteResponse(status=status, json=js, body=body, headers=headers, has_json=has_json, encoded=None)

    def close(self):
        self.tui_steps = None  # Lua functions: they would keep the runtime alive
        sandbox, self.sandbox = self.sandbox, None
        if sandbox is not None:
            sandbox.close()
