"""The plugin manager: discovery, dependency order, loading, blue-green reload, enable/disable,
route lookup and hook chains. Everything a front end needs about plugins goes through here."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..settings import PluginSettings
from .approvals import Approvals
from .breaker import CircuitBreaker, HookBreaker
from .errors import PluginCallError, PluginLoadError
from .logbook import Logbook
from .manifest import Manifest, check_name
from .pool import PoolClosed, VMPool
from .vm import HookSpec, PluginVM, RouteSpec, VMContext

log = logging.getLogger(__name__)

DISCOVERED, LOADING, RUNNING, FAILED, STOPPED = "discovered", "loading", "running", "failed", "stopped"


def discover(plugins_dir: Path) -> list[Path]:
    """Plugin folders: real directories (no symlinks) holding an init.lua file."""
    if not plugins_dir.is_dir():
        return []
    out = []
    for p in sorted(plugins_dir.iterdir()):
        if p.is_symlink() or not p.is_dir() or p.name.startswith("."):
            continue
        init = p / "init.lua"
        if init.is_file() and not init.is_symlink():
            out.append(p)
    return out


@dataclass
class Generation:
    """One loaded version of a plugin: its manifest, VM pool and registrations."""

    manifest: Manifest
    pool: VMPool
    routes: list[RouteSpec]
    hooks: list[HookSpec]
    warnings: list[str]
    loaded_at: float
    load_seconds: float
    # route lookup: static paths by (method, path); parameterised ones as (method, segments, spec)
    static: dict = field(default_factory=dict)
    dynamic: list = field(default_factory=list)

    def __post_init__(self):
        for r in self.routes:
            if "{" in r.path:
                self.dynamic.append((r.method, r.path.strip("/").split("/"), r))
            else:
                self.static[(r.method, r.path)] = r

    def match(self, method: str, path: str):
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


class Plugin:
    def __init__(self, name: str, root: Path, settings: PluginSettings, on_trip: Callable[[], None]):
        self.name = name
        self.root = root
        self.state = DISCOVERED
        self.error: str | None = None
        self.current: Generation | None = None
        self.manifest: Manifest | None = None  # last manifest seen, even of a failed load
        self.breaker = CircuitBreaker(settings.max_failures, settings.reset_interval_s, on_trip=on_trip)
        self.hook_breaker = HookBreaker(settings.hook_max_consecutive_aborts)
        self.lock = threading.RLock()  # one load/reload/enable/disable at a time
        self.order = 0  # position in dependency order: registration order across plugins
        self.last_reload_ok: bool | None = None
        self.last_reload_seconds: float | None = None


@dataclass(frozen=True)
class RouteMatch:
    plugin: Plugin
    generation: Generation
    spec: RouteSpec
    params: dict


@dataclass(frozen=True)
class HookBinding:
    plugin: Plugin
    generation: Generation
    spec: HookSpec

    @property
    def key(self):
        return (self.spec.event, self.spec.table)


class RouteFailure(Exception):
    """A plugin route could not produce a response. status: the HTTP status to answer."""

    def __init__(self, status: int, message: str, kind: str = "error"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


class PluginManager:
    def __init__(self, plugins_dir: Path, settings: PluginSettings, database, approvals: Approvals | None,
                 logbook: Logbook, metrics=None):
        self.plugins_dir = plugins_dir
        self.settings = settings
        self.database = database
        self.approvals = approvals
        self.logbook = logbook
        self.metrics = metrics
        self.plugins: dict[str, Plugin] = {}
        self._lock = threading.RLock()
        self._listeners: list[Callable[[str], None]] = []
        self._hook_chains: dict[str, list[HookBinding]] = {}
        self._retiring: list[threading.Thread] = []

    # ---- listeners (GUI refresh, watchers) ---------------------------------------------------
    def add_listener(self, fn: Callable[[str], None]):
        self._listeners.append(fn)

    def _notify(self, name: str):
        self._rebuild_hook_chains()
        for fn in list(self._listeners):
            try:
                fn(name)
            except Exception:  # noqa: BLE001
                log.exception("plugin listener failed")

    # ---- discovery and load order ------------------------------------------------------------
    def _plugin(self, name: str, root: Path) -> Plugin:
        with self._lock:
            p = self.plugins.get(name)
            if p is None:
                p = Plugin(name, root, self.settings, on_trip=lambda n=name: self._count("breaker_trips", n, "plugin"))
                self.plugins[name] = p
            return p

    def _count(self, metric, plugin, *labels):
        if self.metrics is not None:
            getattr(self.metrics, metric).labels(plugin, *labels).inc()

    def load_all(self):
        """Discover every plugin and load them in dependency order. Never raises for a plugin."""
        found = {p.name: p for p in discover(self.plugins_dir)}
        manifests: dict[str, Manifest] = {}
        for name, root in found.items():
            plugin = self._plugin(name, root)
            bad = check_name(name)
            if bad:
                self._fail(plugin, f"folder name '{name}' {bad}")
                continue
            try:
                manifests[name] = self.read_manifest(root)
                plugin.manifest = manifests[name]
            except PluginLoadError as exc:
                self._fail(plugin, str(exc))
        order, problems = dependency_order(manifests)
        for name, reason in problems.items():
            self._fail(self.plugins[name], reason)
        if self.approvals is not None:
            self.approvals.clean_orphans(set(found))
        for i, name in enumerate(order):
            plugin = self.plugins[name]
            plugin.order = i
            failed_dep = next((d for d in manifests[name].dependencies if self.plugins[d].state != RUNNING), None)
            if failed_dep:
                self._fail(plugin, f"dependency '{failed_dep}' is not running")
                continue
            if self.approvals is not None and not self.approvals.is_enabled(name):
                plugin.state = STOPPED
                self._notify(name)
                continue
            self.load(name)

    def read_manifest(self, root: Path) -> Manifest:
        """Load a plugin's main chunk in an offline VM (no database) and return its manifest."""
        vm = PluginVM(VMContext(root.name, root, self.settings, database=None,
                                log_sink=lambda *a: None))
        try:
            return vm.load()
        finally:
            vm.close()

    def _fail(self, plugin: Plugin, message: str):
        plugin.state = FAILED
        plugin.error = message
        self.logbook.write(plugin.name, "error", f"failed to load: {message}")
        self._notify(plugin.name)

    # ---- building a generation ---------------------------------------------------------------
    def _context(self, plugin: Plugin) -> VMContext:
        return VMContext(plugin.name, plugin.root, self.settings, database=self.database,
                         log_sink=self.logbook.write)

    def _build(self, plugin: Plugin) -> Generation:
        """Load the plugin's current files into a new pool and run on_init once. Raises PluginLoadError."""
        started = time.monotonic()
        ctx = self._context(plugin)
        first = PluginVM(ctx)
        try:
            manifest = first.load()
            first.call_init()
            first.snapshot()
        except PluginLoadError:
            first.close()
            raise
        expected = ([r.key for r in first.routes], [h.key for h in first.hooks])

        def factory():
            vm = PluginVM(ctx)
            vm.load()
            if ([r.key for r in vm.routes], [h.key for h in vm.hooks]) != expected:
                raise PluginLoadError("the plugin registered different routes or hooks in another VM")
            vm.snapshot()
            return vm

        gauge = None
        if self.metrics is not None:
            gauge = self.metrics.vms_available.labels(plugin.name).set
        pool = VMPool(factory, self.settings.max_vms, self.settings.hook_reserve_vms, first=first, on_change=gauge)
        try:
            pool.fill()
        except PluginLoadError:
            pool.drain(0)
            raise
        return Generation(manifest, pool, list(first.routes), list(first.hooks), list(first.warnings),
                          loaded_at=time.time(), load_seconds=time.monotonic() - started)

    def load(self, name: str) -> bool:
        """(Re)load a plugin blue-green: build the new generation beside the old one; on success swap
        and drain the old; on failure keep the old one serving. Returns True on success."""
        with self._lock:
            plugin = self.plugins.get(name)
        if plugin is None:
            root = self.plugins_dir / name
            if not (root / "init.lua").is_file():
                raise PluginLoadError(f"no plugin named '{name}'")
            plugin = self._plugin(name, root)
        with plugin.lock:
            old = plugin.current
            if old is None:
                plugin.state = LOADING
                self._notify(name)
            started = time.monotonic()
            try:
                gen = self._build(plugin)
            except PluginLoadError as exc:
                seconds = time.monotonic() - started
                plugin.last_reload_ok, plugin.last_reload_seconds = False, seconds
                self._count("reloads", name, "failure")
                plugin.breaker.failure()
                if old is not None:
                    plugin.error = f"reload failed, still serving version {old.manifest.version}: {exc}"
                    self.logbook.write(name, "error", plugin.error)
                    self._notify(name)
                else:
                    self._fail(plugin, str(exc))
                return False
            if self.approvals is not None:
                m = gen.manifest
                if self.approvals.check_identity(name, m.version, m.permissions_key):
                    self.logbook.write(name, "warn", f"version {m.version} or permissions changed: "
                                                     "all route and hook approvals were revoked")
            plugin.current = gen
            plugin.manifest = gen.manifest
            plugin.state = RUNNING
            plugin.error = None
            plugin.hook_breaker.reset()
            seconds = time.monotonic() - started
            plugin.last_reload_ok, plugin.last_reload_seconds = True, seconds
            if self.metrics is not None:
                self.metrics.reloads.labels(name, "success").inc()
                self.metrics.reload_duration.labels(name).observe(seconds)
            if old is not None:
                self.logbook.write(name, "info", f"reloaded version {gen.manifest.version} in {seconds * 1000:.0f} ms")
                self._retire(old)
            else:
                self.logbook.write(name, "info", f"loaded version {gen.manifest.version} in {seconds * 1000:.0f} ms")
            self._notify(name)
            return True

    reload = load

    def _retire(self, gen: Generation, wait: bool = False):
        """Drain an old generation in the background: requests already served by it finish."""
        def run():
            gen.pool.drain(self.settings.drain_timeout_s)
        t = threading.Thread(target=run, name="modula-drain", daemon=True)
        t.start()
        self._retiring = [x for x in self._retiring if x.is_alive()] + [t]
        if wait:
            t.join()

    def _shutdown_generation(self, gen: Generation):
        vm = None
        try:
            vm = gen.pool.checkout(self.settings.drain_timeout_s, for_hook=True)
        except PoolClosed:
            pass
        if vm is not None:
            vm.call_shutdown()
            gen.pool.give_back(vm)
        gen.pool.drain(self.settings.drain_timeout_s)

    def enable(self, name: str) -> bool:
        plugin = self.get(name)
        with plugin.lock:
            if self.approvals is not None:
                self.approvals.set_enabled(name, True)
            plugin.breaker.reset()
            plugin.hook_breaker.reset()
            if plugin.state == RUNNING:
                self._notify(name)
                return True
            plugin.state = DISCOVERED
            return self.load(name)

    def disable(self, name: str):
        plugin = self.get(name)
        with plugin.lock:
            if self.approvals is not None:
                self.approvals.set_enabled(name, False)
            gen, plugin.current = plugin.current, None
            plugin.state = STOPPED
            self._notify(name)
            if gen is not None:
                self._shutdown_generation(gen)
            self.logbook.write(name, "info", "disabled")

    def remove(self, name: str):
        """The plugin's folder is gone: stop it and forget its approvals."""
        with self._lock:
            plugin = self.plugins.pop(name, None)
        if plugin is None:
            return
        with plugin.lock:
            gen, plugin.current = plugin.current, None
            plugin.state = STOPPED
            if gen is not None:
                self._shutdown_generation(gen)
        if self.approvals is not None:
            self.approvals.forget(name)
        self.logbook.write(name, "info", "plugin folder removed: stopped")
        self._notify(name)

    def shutdown(self):
        for plugin in list(self.plugins.values()):
            with plugin.lock:
                gen, plugin.current = plugin.current, None
                if gen is not None:
                    self._shutdown_generation(gen)
        for t in self._retiring:
            t.join(timeout=self.settings.drain_timeout_s)

    # ---- queries -----------------------------------------------------------------------------
    def get(self, name: str) -> Plugin:
        with self._lock:
            plugin = self.plugins.get(name)
        if plugin is None:
            raise PluginLoadError(f"no plugin named '{name}'")
        return plugin

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self.plugins)

    # ---- routes ------------------------------------------------------------------------------
    def match_route(self, name: str, method: str, path: str) -> RouteMatch | None:
        """Route lookup and approval. None: answer exactly like an unknown route."""
        plugin = self.plugins.get(name)
        if plugin is None:
            return None
        gen = plugin.current
        if gen is None:
            # a stopped or failed plugin: its routes exist (503) only if they were approved before
            return self._match_inactive(plugin, method, path)
        found = gen.match(method, path)
        if found is None:
            return None
        spec, params = found
        if self.approvals is not None and not self.approvals.route_approved(name, spec.method, spec.path):
            return None
        return RouteMatch(plugin, gen, spec, params)

    def _match_inactive(self, plugin: Plugin, method: str, path: str):
        if self.approvals is None:
            return None
        for m, p in self.approvals.routes_of(plugin.name):
            fake = Generation.__new__(Generation)
            fake.static, fake.dynamic = {}, []
            spec = RouteSpec(0, m, p, False)
            if "{" in p:
                fake.dynamic.append((m, p.strip("/").split("/"), spec))
            else:
                fake.static[(m, p)] = spec
            found = Generation.match(fake, method, path)
            if found:
                return RouteMatch(plugin, None, found[0], found[1])
        return None

    def call_route(self, match: RouteMatch, request: dict) -> dict:
        """Plugin state → breaker → VM checkout → middleware → handler. Returns the response dict
        (status, json, body, headers, has_json) or raises RouteFailure."""
        plugin, gen = match.plugin, match.generation
        if gen is None or plugin.state != RUNNING:
            raise RouteFailure(503, f"plugin '{plugin.name}' is not running", "unavailable")
        if not plugin.breaker.allow():
            raise RouteFailure(503, f"plugin '{plugin.name}' is temporarily unavailable (circuit breaker open)",
                               "breaker")
        try:
            vm = gen.pool.checkout(self.settings.checkout_wait_ms / 1000.0)
        except PoolClosed:
            # the generation was swapped while we looked it up: use the current one
            current = plugin.current
            if current is None or current is gen:
                raise RouteFailure(503, f"plugin '{plugin.name}' is reloading", "unavailable") from None
            gen = current
            try:
                vm = gen.pool.checkout(self.settings.checkout_wait_ms / 1000.0)
            except PoolClosed:
                raise RouteFailure(503, f"plugin '{plugin.name}' is reloading", "unavailable") from None
        except PluginLoadError as exc:
            plugin.breaker.failure()
            raise RouteFailure(503, f"plugin '{plugin.name}' could not start a VM: {exc}", "unavailable") from None
        if vm is None:
            raise RouteFailure(503, f"plugin '{plugin.name}' is busy (no VM free)", "busy")
        try:
            raw = vm.call_route(match.spec.index, request)
            response = vm.read_response(raw)
        except PluginCallError as exc:
            plugin.breaker.failure()
            self._count("errors", plugin.name, exc.kind)
            if exc.is_budget:
                self._count("budget_exhaustions", plugin.name, exc.kind)
            self.logbook.write(plugin.name, "error", f"{match.spec.method} {match.spec.path}: {exc.message}")
            if exc.kind == "timeout":
                raise RouteFailure(504, exc.message, exc.kind) from None
            raise RouteFailure(500, exc.message, exc.kind) from None
        finally:
            gen.pool.give_back(vm)
        plugin.breaker.success()
        return response

    # ---- hooks -------------------------------------------------------------------------------
    def _rebuild_hook_chains(self):
        chains: dict[str, list[HookBinding]] = {}
        with self._lock:
            plugins = list(self.plugins.values())
        for plugin in plugins:
            gen = plugin.current
            if gen is None or plugin.state != RUNNING:
                continue
            for spec in gen.hooks:
                chains.setdefault(spec.event, []).append(HookBinding(plugin, gen, spec))
        for event, chain in chains.items():
            # lower priority first; at equal priority table-specific before "*"; then registration order
            chain.sort(key=lambda b: (b.spec.priority, b.spec.table == "*", b.plugin.order, b.spec.index))
        self._hook_chains = chains

    def hook_chain(self, event: str, table: str = "content") -> list[HookBinding]:
        """The hooks that run for event on table now: running plugin, approved, not disabled."""
        out = []
        for b in self._hook_chains.get(event, ()):
            if b.spec.table not in (table, "*"):
                continue
            if b.plugin.current is not b.generation:
                continue
            if self.approvals is not None and not self.approvals.hook_approved(b.plugin.name, *b.key):
                continue
            if b.plugin.hook_breaker.is_disabled(b.key):
                continue
            out.append(b)
        return out

    def run_hook(self, binding: HookBinding, data: dict, timeout: float, max_ops: int | None = None):
        """Run one hook on a VM of its generation. Returns its result; raises PluginCallError."""
        gen = binding.generation
        deadline = time.monotonic() + timeout
        try:
            vm = gen.pool.checkout(timeout, for_hook=True)
        except PoolClosed:
            gen = binding.plugin.current
            if gen is None:
                raise PluginCallError("error", "plugin stopped") from None
            vm = gen.pool.checkout(max(0.0, deadline - time.monotonic()), for_hook=True)
        if vm is None:
            raise PluginCallError("timeout", f"time budget exceeded (no VM free within {timeout:g} s)")
        try:
            return vm.call_hook(binding.spec.index, data, max(0.001, deadline - time.monotonic()), max_ops)
        finally:
            gen.pool.give_back(vm)

    # ---- views -------------------------------------------------------------------------------
    def summary(self, name: str) -> dict:
        plugin = self.get(name)
        gen = plugin.current
        m = gen.manifest if gen else plugin.manifest
        routes = gen.routes if gen else []
        hooks = gen.hooks if gen else []
        return {
            "name": name,
            "state": plugin.state,
            "version": m.version if m else None,
            "description": m.description if m else "",
            "error": plugin.error,
            "routes": len(routes),
            "hooks": len(hooks),
            "permissions": m.to_dict()["permissions"] if m else None,
            "effective_permissions": list(m.effective_permissions) if m else [],
        }

    def info(self, name: str, log_limit: int = 20) -> dict:
        plugin = self.get(name)
        gen = plugin.current
        out = self.summary(name)
        m = gen.manifest if gen else plugin.manifest
        if m:
            out.update({k: v for k, v in m.to_dict().items() if k not in out})
        appr = self.approvals
        out["routes"] = [{"method": r.method, "path": r.path, "public": r.public,
                          "approved": bool(appr and appr.route_approved(name, r.method, r.path))}
                         for r in (gen.routes if gen else [])]
        out["hooks"] = [{"event": h.event, "table": h.table, "priority": h.priority,
                         "approved": bool(appr and appr.hook_approved(name, h.event, h.table)),
                         "disabled": plugin.hook_breaker.is_disabled(h.key)}
                        for h in (gen.hooks if gen else [])]
        out["warnings"] = gen.warnings if gen else []
        out["breaker"] = plugin.breaker.to_dict()
        out["hook_breaker"] = plugin.hook_breaker.to_dict()
        out["pool"] = gen.pool.stats() if gen else None
        out["last_reload"] = {"ok": plugin.last_reload_ok, "seconds": plugin.last_reload_seconds}
        out["logs"] = self.logbook.entries(name, log_limit)
        out["last_errors"] = [e for e in self.logbook.entries(name, 200) if e["level"] == "error"][-5:]
        return out


def dependency_order(manifests: dict[str, Manifest]) -> tuple[list[str], dict[str, str]]:
    """Topological order (dependencies first, then by name). Returns (order, {name: problem}) where a
    missing dependency or a cycle fails those plugins (and whatever depends on them) only."""
    problems: dict[str, str] = {}
    for name, m in manifests.items():
        missing = [d for d in m.dependencies if d not in manifests]
        if missing:
            problems[name] = f"missing dependency '{missing[0]}'"
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, stack: list[str]):
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = stack[stack.index(name):] + [name]
            for n in cycle[:-1]:
                problems.setdefault(n, "dependency cycle: " + " -> ".join(cycle))
            return
        state[name] = 1
        for dep in sorted(manifests[name].dependencies):
            if dep in manifests:
                visit(dep, stack + [name])
        state[name] = 2
        order.append(name)

    for name in sorted(manifests):
        visit(name, [])
    # anything depending on a problem plugin fails too
    changed = True
    while changed:
        changed = False
        for name in order:
            if name in problems:
                continue
            bad = next((d for d in manifests[name].dependencies if d in problems), None)
            if bad:
                problems[name] = f"dependency '{bad}' failed to load"
                changed = True
    return [n for n in order if n not in problems], problems
