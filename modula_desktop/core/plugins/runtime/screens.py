"""Screen sessions (SPEC 3.12): a plugin's screen or field interface running as a coroutine on a VM of
its own, fed events and answering with layouts and actions.

Each running plugin generation that declares screens or interfaces gets a small pool of UI VMs
(``ui_vms``, default 2), built on first use from the generation's own factory, so a UI VM runs exactly
the code its generation was loaded with. A session checks one out for its whole life (as ModulaCMS's
UIVMPool does: none free means "busy", never a wait), and runs every step on its own worker thread,
one at a time, each under the instruction, memory and wall-clock budgets (``max_instructions``,
``memory_limit_mb``, ``ui_timeout_s``). A front end never waits for plugin code: it sends events and
gets outputs through a callback, from the worker thread (the GUI relays them to its own thread).

Outputs: ``Render`` (a parsed yield: a grid or a single primitive), ``Act`` (an action for the front
end: navigate, confirm, toast, commit, cancel), ``Ended`` (the coroutine returned or yielded quit)
and ``Failed`` (an error, a budget, an unusable yield: the session is over, its VM thrown away).
``request`` and ``fetch`` actions are answered here with a ``data`` event, asynchronously: the
request goes through the request module's rules (the plugin's registered and approved domains, the
SSRF rules of the outbound client) on a thread of its own, and the screen keeps handling keys.
"""
from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ..api import tui as protocol
from ..api.outbound import OutboundArgumentError
from ..errors import ApiError, ConversionLimit, PluginCallError, PluginLoadError
from .pool import PoolClosed, VMPool
from . import sandbox as _sandbox
from .sandbox import lua_type

log = logging.getLogger(__name__)

KINDS = {"screen": ("screens", "screen"), "interface": ("interfaces", "interface")}
_CLOSE = object()


@dataclass
class Render:
    value: protocol.Yield
    seq: int  # events handled when this was yielded (the init event is 0)


@dataclass
class Act:
    name: str
    params: dict
    seq: int


@dataclass
class Ended:
    reason: str  # "quit" (the screen asked) or "returned" (its function returned)


@dataclass
class Failed:
    message: str
    kind: str = "error"  # error, budget, timeout, memory, ops, protocol, busy, unavailable


@dataclass
class UIEntry:
    """A declared screen or interface of a running plugin, and whether the author approved it."""

    plugin: str
    kind: str  # "screen" or "interface"
    name: str
    label: str
    approved: bool
    icon: str = ""
    hidden: bool = False
    mode: str = ""  # interfaces: overlay or inline
    version: str = ""

    @property
    def key(self):
        return (self.plugin, self.kind, self.name)


class ScreenHost:
    """The UI pools of every plugin generation and the sessions opened on them."""

    def __init__(self, manager):
        self.manager = manager
        self.settings = manager.settings
        self._lock = threading.Lock()
        self._pools: dict[int, tuple[object, VMPool]] = {}  # id(generation) -> (generation, pool)
        self._sessions: set[Session] = set()
        self._ids = itertools.count(1)
        manager.add_listener(self._plugin_changed)

    # ---- what there is ---------------------------------------------------------------------------
    def entries(self, kind: str | None = None) -> list[UIEntry]:
        """Declared screens and interfaces of running plugins, in plugin order."""
        approvals = self.manager.approvals
        out = []
        with self.manager._lock:
            plugins = sorted(self.manager.plugins.values(), key=lambda p: (p.order, p.name))
        for p in plugins:
            gen = p.current
            if gen is None or p.state != "running":
                continue
            m = gen.manifest
            for k, defs in (("screen", m.screens), ("interface", m.interfaces)):
                if kind is not None and k != kind:
                    continue
                for d in defs:
                    ok = approvals is None or approvals.ui_approved(p.name, k, d.name)
                    out.append(UIEntry(p.name, k, d.name, d.label, ok, icon=getattr(d, "icon", ""),
                                       hidden=getattr(d, "hidden", False), mode=getattr(d, "mode", ""),
                                       version=m.version))
        return out

    def entry(self, plugin: str, kind: str, name: str) -> UIEntry | None:
        return next((e for e in self.entries(kind) if e.plugin == plugin and e.name == name), None)

    # ---- pools -----------------------------------------------------------------------------------
    def _pool(self, gen) -> VMPool:
        with self._lock:
            held = self._pools.get(id(gen))
            if held is not None and held[0] is gen:
                return held[1]
            if gen.vm_factory is None:
                raise PluginLoadError("this plugin generation cannot build UI VMs")
            pool = VMPool(gen.vm_factory, self.settings.ui_vms, 0)
            self._pools[id(gen)] = (gen, pool)
            return pool

    def _plugin_changed(self, name: str):
        """A generation that no longer serves drains its UI pool (open sessions keep their VM until they
        close; the front end starts them again on the new one)."""
        current = {id(p.current) for p in self.manager.plugins.values() if p.current is not None}
        with self._lock:
            stale = [k for k in self._pools if k not in current]
            pools = [self._pools.pop(k)[1] for k in stale]
        for pool in pools:
            threading.Thread(target=pool.drain, args=(self.settings.drain_timeout_s,), name="modula-ui-drain",
                             daemon=True).start()

    def pool_stats(self, plugin: str) -> dict | None:
        p = self.manager.plugins.get(plugin)
        gen = p.current if p else None
        with self._lock:
            held = self._pools.get(id(gen)) if gen is not None else None
        return held[1].stats() if held and held[0] is gen else None

    # ---- sessions --------------------------------------------------------------------------------
    def open(self, plugin: str, kind: str, name: str, init: dict,
             on_output: Callable[[object], None]) -> "Session":
        """Start a session; its first output (or a Failed) arrives through on_output. Never raises for
        the plugin's sake: a plugin that is not running, an unapproved screen or no free VM is a Failed."""
        session = Session(self, plugin, kind, name, init, on_output, next(self._ids))
        with self._lock:
            self._sessions.add(session)
        session.start()
        return session

    def _closed(self, session: "Session"):
        with self._lock:
            self._sessions.discard(session)

    def close(self, timeout: float = 5.0):
        """Close every session (the app is closing) and the pools."""
        with self._lock:
            sessions, pools = list(self._sessions), [p for _, p in self._pools.values()]
            self._pools.clear()
        for s in sessions:
            s.close()
        end = time.monotonic() + timeout
        for s in sessions:
            s.join(max(0.0, end - time.monotonic()))
        for pool in pools:
            pool.drain(0)


def _pack_args() -> tuple:
    """The budget the session steps' C packer counts a yield against (tui.lua: outcome); none without
    the bridge (the steps then hand the table back only)."""
    if _sandbox._luabridge is None:
        return ()
    return protocol.MAX_YIELD_ITEMS, protocol.MAX_YIELD_BYTES


def _copied(vm, value, token):
    """A yielded value as plain Python data: the text the bridge's packer wrote while Lua ran, read with
    json.loads (the same data as from_lua's, see _luabridge.c: pack_yield), else from_lua's copy, which
    also raises its errors (what the packer declined: unusual keys or values, a budget at its limit)."""
    bridge = _sandbox._luabridge
    if token is not None and bridge is not None:
        text = bridge.take_yield(token)
        if text is not None:
            return json.loads(text)
    return vm.sandbox.from_lua(value, _budget=[protocol.MAX_YIELD_ITEMS, protocol.MAX_YIELD_BYTES])


class Session:
    """One open screen or interface. send() and close() may be called from any thread."""

    def __init__(self, host: ScreenHost, plugin: str, kind: str, name: str, init: dict,
                 on_output: Callable[[object], None], number: int):
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        self.host, self.plugin, self.kind, self.name = host, plugin, kind, name
        self.init = init
        self.on_output = on_output
        self.generation = None
        self.closed = False
        self.done = False
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"modula-ui-{plugin}-{name}-{number}", daemon=True)
        self._seq = 0
        self._batch: list = []  # the rest of a send_many, reversed

    def start(self):
        self._thread.start()

    def send(self, event: dict):
        """Queue an event (key, resize, data, dialog) for the coroutine."""
        if not self.closed:
            self._queue.put(event)

    def send_many(self, events: list[dict]):
        """Queue several events at once (a click ten thousand rows away is that many keys)."""
        if not self.closed and events:
            self._queue.put(list(events))

    def close(self):
        self.closed = True
        self._queue.put(_CLOSE)

    def join(self, timeout: float | None = None):
        self._thread.join(timeout)

    @property
    def pending(self) -> int:
        return self._queue.qsize() + len(self._batch)

    def _queued(self) -> bool:
        return bool(self._batch) or not self._queue.empty()

    # ---- the worker ------------------------------------------------------------------------------
    def _emit(self, out):
        if isinstance(out, Failed) and out.kind not in ("unapproved", "busy", "unavailable"):
            # the plugin's log and metrics hear of it as of any failed call
            manager = self.host.manager
            manager.logbook.write(self.plugin, "error", f"{self.kind} {self.name}: {out.message}")
            manager._count("errors", self.plugin, out.kind)
            if out.kind in ("timeout", "budget", "memory", "ops"):
                manager._count("budget_exhaustions", self.plugin, out.kind)
        if self.closed and not isinstance(out, (Failed, Ended)):
            return
        try:
            self.on_output(out)
        except Exception:  # noqa: BLE001 - a front end's bug must not kill the session silently
            log.exception("screen output handler failed")

    def _run(self):
        vm = pool = None
        try:
            try:
                vm, pool = self._checkout()
            except _Refused as exc:
                self.done = True
                self._emit(Failed(exc.message, exc.kind))
                return
            try:
                self._serve(vm)
            except Exception:  # noqa: BLE001 - our bug: never reuse that VM
                vm.broken = True
                log.exception("screen %s/%s failed inside the host", self.plugin, self.name)
                self._emit(Failed("internal error while running the screen", "internal"))
        finally:
            self.done = True
            if vm is not None:
                pool.give_back(vm)
            self.host._closed(self)

    def _checkout(self):
        manager = self.host.manager
        plugin = manager.plugins.get(self.plugin)
        if plugin is None:
            raise _Refused(f"no plugin named '{self.plugin}'", "unavailable")
        gen = plugin.current
        if gen is None or plugin.state != "running":
            raise _Refused(f"plugin '{self.plugin}' is {plugin.state}, not running", "unavailable")
        folder, _ = KINDS[self.kind]
        defs = gen.manifest.screens if self.kind == "screen" else gen.manifest.interfaces
        if not any(d.name == self.name for d in defs):
            raise _Refused(f"plugin '{self.plugin}' declares no {self.kind} named '{self.name}'", "unavailable")
        approvals = manager.approvals
        if approvals is not None and not approvals.ui_approved(self.plugin, self.kind, self.name):
            raise _Refused(f"the {self.kind} '{self.name}' of plugin '{self.plugin}' is not approved: "
                           "approve it in the plugin manager", "unapproved")
        try:
            pool = self.host._pool(gen)
            vm = pool.checkout(0)
        except PoolClosed:
            raise _Refused(f"plugin '{self.plugin}' is reloading", "unavailable") from None
        except PluginLoadError as exc:
            raise _Refused(f"plugin '{self.plugin}' could not start a VM: {exc}", "unavailable") from None
        if vm is None:
            raise _Refused(f"plugin '{self.plugin}' is busy: {pool.size} of its screens are open already "
                           "(close one, or raise ui_vms)", "busy")
        self.generation = gen
        return vm, pool

    def _budget(self, vm):
        s = vm.settings
        vm.ops.reset(s.max_ops, f"{self.kind} event")
        return (s.max_instructions, time.monotonic() + float(s.ui_timeout_s),
                f"time budget exceeded (the {self.kind} ran longer than {s.ui_timeout_s:g} s for one event)".encode())

    def _step(self, vm, *args):
        """One budgeted call into the session's steps: raises PluginCallError."""
        return vm._checked(vm.sandbox.call, "run", *self._budget(vm), self.kind.encode(), *args)

    def _serve(self, vm):
        sb = vm.sandbox
        folder, entry = KINDS[self.kind]
        start, resume, self._is_action = vm.tui_steps
        try:
            source = vm.read_ui_source(folder, self.name)
        except ApiError as exc:
            self._emit(Failed(str(exc), "unavailable"))
            return
        chunk = sb.fn("load_main")(source, f"={folder}/{self.name}.lua".encode())
        if isinstance(chunk, tuple):
            err = chunk[1].decode("utf-8", "replace") if isinstance(chunk[1], bytes) else str(chunk[1])
            self._emit(Failed(f"syntax error: {err}", "error"))
            return
        try:
            self._step(vm, chunk)
            fn = sb.fn("get_global")(entry.encode())
            if fn is None or lua_type(fn) != "function":
                self._emit(Failed(f"{folder}/{self.name}.lua does not define function {entry}(ctx)", "error"))
                return
            co, *result = self._step(vm, start, fn, sb.to_lua(self.init), *_pack_args())
        except PluginCallError as exc:
            self._emit(Failed(exc.message, exc.kind))
            return
        while True:
            if not self._handle(vm, result):
                return
            event = self._next_event()
            if event is None:
                return
            stopped = self._still_allowed()
            if stopped is not None:
                self._emit(stopped)
                return
            self._seq += 1
            try:
                # with more events queued this layout is skipped (unless an action): not packed either
                result = self._step(vm, resume, co, sb.to_lua(event), *(() if self._queued() else _pack_args()))
            except PluginCallError as exc:
                self._emit(Failed(exc.message, exc.kind))
                return

    def _still_allowed(self) -> Failed | None:
        """A revoked approval or a plugin that stopped ends the session before its next event runs (a
        reload does not: the front end starts the screen again on the new version)."""
        manager = self.host.manager
        plugin = manager.plugins.get(self.plugin)
        if plugin is None or plugin.state != "running" or plugin.current is None:
            return Failed(f"plugin '{self.plugin}' is {plugin.state if plugin else 'gone'}, not running", "unavailable")
        approvals = manager.approvals
        if approvals is not None and not approvals.ui_approved(self.plugin, self.kind, self.name):
            return Failed(f"the {self.kind} '{self.name}' of plugin '{self.plugin}' is no longer approved",
                          "unapproved")
        return None

    def _next_event(self):
        if self._batch:
            return self._batch.pop()
        event = self._queue.get()
        if isinstance(event, list):
            self._batch = event[::-1]
            return self._batch.pop() if self._batch else self._next_event()
        return None if event is _CLOSE else event

    def _handle(self, vm, result) -> bool:
        """Emit what one step gave. False when the session is over."""
        status = result[0] if result else None
        if status == b"done":
            self._emit(Ended("returned"))
            return False
        value = result[1] if len(result) > 1 else None
        if self._queued() and not self.closed and not self._is_action(value):
            return True  # a layout nobody would see: more events are queued behind it (not even copied)
        try:
            converted = _copied(vm, value, result[2] if len(result) > 2 else None)
        except ConversionLimit:
            self._emit(Failed(f"the {self.kind} yielded a value larger than "
                              f"{protocol.MAX_YIELD_BYTES // 2**20} MiB", "protocol"))
            return False
        except ApiError as exc:
            self._emit(Failed(f"the {self.kind} yielded an unusable value: {exc}", "protocol"))
            return False
        try:
            parsed = protocol.parse_yield(converted)
        except protocol.ProtocolError as exc:
            self._emit(Failed(str(exc), "protocol"))
            return False
        if not parsed.is_action:
            # a layout nobody will see (more events are queued behind it) is not sent: the next one is
            if not self._queued() or self.closed:
                self._emit(Render(parsed, self._seq))
            return True
        name, params = parsed.action, parsed.params
        if name == "quit":
            self._emit(Ended("quit"))
            return False
        if name == "request":
            self._request(vm, params)
        elif name == "fetch":  # ModulaCMS answers it so too
            self.send(protocol.data_event(text_of(params.get("id")), False,
                                          error="async fetch is not supported: use the db module"))
        else:
            self._emit(Act(name, params, self._seq))
        return True

    # ---- the request action ----------------------------------------------------------------------
    def _request(self, vm, params: dict):
        rid = text_of(params.get("id"))
        manifest = vm.manifest
        if manifest is not None and not manifest.allows("request"):
            self.send(protocol.data_event(rid, False, error="this plugin did not declare the 'request' permission"))
            return
        client = vm.ctx.outbound
        if client is None:
            self.send(protocol.data_event(rid, False, error="outbound requests not configured"))
            return
        method = params.get("method") or "GET"
        url = params.get("url")
        if not isinstance(url, str) or not url:
            self.send(protocol.data_event(rid, False, error="request missing 'url'"))
            return
        opts = {"parse_json": True}
        headers = params.get("headers")
        if isinstance(headers, dict):
            opts["headers"] = {str(k): str(v) for k, v in headers.items()}
        if isinstance(params.get("body"), str):
            opts["body"] = params["body"]
        try:
            prepared = client.prepare(method, url, opts)
        except OutboundArgumentError as exc:
            self.send(protocol.data_event(rid, False, error=str(exc)))
            return
        domains = dict(vm.domains)
        check = vm.ctx.domain_approved

        def approved(host: str) -> bool:
            return host in domains and (check is None or check(self.plugin, host))

        def send():
            answer = client.send(self.plugin, prepared, approved, None)
            if "error" in answer:
                self.send(protocol.data_event(rid, False, error=str(answer["error"])))
            else:
                self.send(protocol.data_event(rid, True, result=answer))

        threading.Thread(target=send, name=f"modula-ui-request-{self.plugin}", daemon=True).start()


class _Refused(Exception):
    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.message, self.kind = message, kind


def text_of(v) -> str:
    """A protocol value shown as text: a whole float without its ".0", nil as nothing."""
    if isinstance(v, str):
        return v
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return "" if v is None else str(v)
