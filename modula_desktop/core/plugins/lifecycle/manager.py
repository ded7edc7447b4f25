"""The plugin manager: discovery, dependency order, loading, blue-green reload, enable/disable,
route lookup and hook chains. Everything a front end needs about plugins goes through here."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Callable

from ...settings import PluginSettings
from .approvals import Approvals
from .breaker import CircuitBreaker, HookBreaker
from ..errors import ApiError, PluginCallError, PluginLoadError
from ..api.log import Logbook
from .manifest import Manifest, provisional_name
from ..runtime.pool import PoolClosed, VMPool
from .reload import Sources, is_plugin_folder, read_sources
from ..api.http import ROUTE_ERRORS, TIMEOUT_KINDS, RouteTable, new_request_id
from ..runtime.vm import MAX_SOURCE_BYTES, HookSpec, PluginVM, RouteSpec, VMContext, unpack_response

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
    table: "RouteTable" = None
    domains: dict = field(default_factory=dict)  # request.register: {domain: description}
    # builds a VM of this generation (loaded and snapshotted): the screens' UI pool uses it
    vm_factory: Callable[[], PluginVM] | None = None

    def __post_init__(self):
        self.table = RouteTable(self.routes)

    def match(self, method: str, path: str):
        return self.table.match(method, path)


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
        # hot reload bookkeeping, shared by manual and watcher reloads
        self.last_reload_at: float | None = None  # time.monotonic() when the last (re)load attempt ended
        self.source_digest: str | None = None     # checksum of the files the last attempt read
        self.slow_reloads = 0                     # consecutive reloads slower than slow_reload_s
        # define_table declarations the tables do not follow, found by the latest load (PluginDB)
        self.schema_errors: list[str] = []


class _GenerationSources:
    """The Lua sources of one generation, read once: every VM of the generation (including one rebuilt
    after a memory error, minutes later) runs exactly the files that were checksummed when it was built,
    never newer ones saved since. Over the checksum limits the files are read from disk on first use
    and kept from then on."""

    def __init__(self, sources: Sources):
        self._files = dict(sources.files)
        self._complete = sources.complete
        self._lock = threading.Lock()

    def init(self, read_disk: Callable[[], bytes]) -> bytes:
        with self._lock:
            data = self._files.get("init.lua")
            if data is None and not self._complete:
                data = self._files["init.lua"] = read_disk()
        if data is None:
            raise PluginLoadError("init.lua not found")
        return data

    def _file(self, key: str, read_disk: Callable[[], bytes], missing: str, large: str) -> bytes:
        """The generation's copy of key, read from disk on first use when the sources were incomplete."""
        with self._lock:
            data = self._files.get(key)
        if data is None:
            if self._complete:
                raise ApiError(missing)
            data = read_disk()  # raises ApiError like a plain VM would
            with self._lock:
                data = self._files.setdefault(key, data)
        if len(data) > MAX_SOURCE_BYTES:
            raise ApiError(large)
        return data

    def ui(self, kind: str, name: str, read_disk: Callable[[str, str], bytes]) -> bytes:
        """screens/<name>.lua or interfaces/<name>.lua of this generation."""
        key = f"{kind}/{name}.lua"
        return self._file(key, lambda: read_disk(kind, name), f"{key} not found", f"{key} is larger than 1 MiB")

    def lib(self, mod: str, read_disk: Callable[[str], bytes]) -> bytes:
        return self._file(f"lib/{mod}.lua", lambda: read_disk(mod), f"require: module '{mod}' not found in lib/",
                          f"require: module '{mod}' is larger than 1 MiB")


class _GenerationVM(PluginVM):
    """A PluginVM that reads its sources from its generation instead of the disk."""

    def __init__(self, ctx: VMContext, sources: _GenerationSources):
        self._sources = sources
        super().__init__(ctx)

    def _read_lib(self, mod):
        return self._sources.lib(mod, super()._read_lib)

    def load(self, source: bytes | None = None, expected: Manifest | None = None):
        if source is None:
            source = self._sources.init(self._read_init)
        return super().load(source, expected)

    def read_ui_source(self, kind: str, name: str) -> bytes:
        return self._sources.ui(kind, name, super().read_ui_source)

    def _read_init(self) -> bytes:
        try:
            return (self.ctx.root / "init.lua").read_bytes()
        except OSError:
            raise PluginLoadError("init.lua not found") from None


class RouteMatch(tuple):
    """A request's route: (plugin, generation, spec, params). Built on every plugin request, so a
    tuple made in C (no __init__ frame), its fields read through C-level getters."""

    __slots__ = ()

    def __new__(cls, plugin: Plugin, generation: Generation | None, spec: RouteSpec, params: dict):
        return tuple.__new__(cls, (plugin, generation, spec, params))

    plugin = property(itemgetter(0))
    generation = property(itemgetter(1))
    spec = property(itemgetter(2))
    params = property(itemgetter(3))


@dataclass(frozen=True)
class HookBinding:
    plugin: Plugin
    generation: Generation
    spec: HookSpec

    @property
    def key(self):
        return (self.spec.event, self.spec.table)


class RouteFailure(Exception):
    """A plugin route could not produce a response. status: the HTTP status to answer; code: its error
    code (api.http.ROUTE_ERRORS); message: what the client may read (never a Lua error's text); detail:
    what went wrong, for the plugin's log and its author (the Lua error); request_id: set when the
    failure was logged, so the answer names the entry."""

    def __init__(self, status: int, message: str, kind: str = "error", code: str | None = None,
                 detail: str | None = None, request_id: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code
        self.detail = detail if detail is not None else message
        self.request_id = request_id


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
        self._chain_lock = threading.Lock()
        self._retiring: list[threading.Thread] = []
        # start-up (load_all) may run behind the server (SiteService.start(background=True)): set
        # once every plugin found at start-up was tried; _stopping ends it early when the app closes
        self.loaded = threading.Event()
        self._stopping = threading.Event()
        # the request module's client, shared by every plugin (a test may replace it before loading)
        from ..api.outbound import OutboundClient

        self.outbound = OutboundClient(settings, metrics)
        # the core module's content service (SiteService sets it once it exists)
        self.content = None

    # ---- listeners (GUI refresh, watchers) ---------------------------------------------------
    def add_listener(self, fn: Callable[[str], None]):
        self._listeners.append(fn)

    def notify(self, name: str):
        """Tell listeners that something about plugin name changed (e.g. an approval)."""
        self._notify(name)

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
                p = Plugin(name, root, self.settings, on_trip=lambda: self._count("breaker_trips", p.name, "plugin"))
                self.plugins[name] = p
            return p

    # ---- identity: plugin_info.name, whatever the folder is called (as in ModulaCMS) ----------
    def plugin_for_folder(self, folder: str) -> Plugin | None:
        """The plugin loaded from plugins/<folder> (its name may differ from the folder's)."""
        with self._lock:
            return next((p for p in self.plugins.values() if p.root.name == folder), None)

    def folders(self) -> list[str]:
        with self._lock:
            return sorted(p.root.name for p in self.plugins.values())

    def _reidentify(self, plugin: Plugin) -> str | None:
        """The name a plugin that failed to load goes by now (its manifest read again), or None when
        that name is another folder's."""
        try:
            manifest = self.read_manifest(plugin.root)
        except PluginLoadError:
            return plugin.name  # the load reports it
        before = plugin.manifest.name if plugin.manifest is not None else None
        with self._lock:
            owner = self.plugins.get(manifest.name)
            if owner is not None and owner is not plugin:
                self._fail(plugin, self._claimed_twice(manifest.name, (owner.root.name, plugin.root.name)))
                return None
            old = plugin.name
            if old != manifest.name:
                del self.plugins[old]
                plugin.name = manifest.name
                self.plugins[plugin.name] = plugin
            plugin.manifest = manifest
            # folders that failed because they claimed the name this one gave up may load now
            freed = [p for p in self.plugins.values() if p is not plugin and p.state == FAILED
                     and before and before != manifest.name and p.manifest is not None and p.manifest.name == before]
        if old != manifest.name:
            self._notify(old)
        for p in freed:
            try:
                self._load(p.name)
            except PluginLoadError:
                pass
        return plugin.name

    @staticmethod
    def _claimed_twice(name: str, folders) -> str:
        listed = " and ".join(f"plugins/{f}" for f in sorted(folders))
        return (f"plugin_info.name '{name}' is claimed by more than one folder ({listed}): neither is "
                "loaded; give each plugin its own name")

    def _count(self, metric, plugin, *labels):
        if self.metrics is not None:
            getattr(self.metrics, metric).labels(plugin, *labels).inc()

    @property
    def loading(self) -> bool:
        """True while start-up is still loading plugins."""
        return not self.loaded.is_set()

    def discover_all(self) -> list[str]:
        """Find the plugin folders and mark them loading (or stopped, when disabled): quick, runs no
        plugin code, so the front ends can list them while load_all works behind the server."""
        found = discover(self.plugins_dir)
        for root in found:
            plugin = self._plugin(root.name, root)
            if plugin.state == DISCOVERED:
                enabled = self.approvals is None or self.approvals.is_enabled(root.name)
                plugin.state = LOADING if enabled else STOPPED
        for root in found:
            self._notify(root.name)
        return [root.name for root in found]

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Wait until start-up has tried every plugin. Returns False on timeout."""
        return self.loaded.wait(timeout)

    def load_all(self):
        """Discover every plugin and load them in dependency order. Never raises for a plugin."""
        try:
            self._load_all()
        finally:
            self.loaded.set()

    def _load_all(self):
        found = {p.name: p for p in discover(self.plugins_dir)}
        read: dict[str, Manifest] = {}  # folder -> its manifest
        for folder, root in found.items():
            if self._stopping.is_set():
                return
            plugin = self._plugin(folder, root)
            try:  # (any folder name will do: the plugin's name is its plugin_info.name)
                read[folder] = plugin.manifest = self.read_manifest(root)
            except PluginLoadError as exc:
                self._fail_unloaded(plugin, str(exc))
        claims: dict[str, list[str]] = {}
        for folder, m in read.items():
            claims.setdefault(m.name, []).append(folder)
        manifests: dict[str, Manifest] = {}
        with self._lock:  # every plugin under its own name; folders that claim one name twice keep theirs
            named, rest = {}, []
            for p in self.plugins.values():
                m = read.get(p.root.name)
                if m is not None and len(claims[m.name]) == 1:
                    p.name = m.name
                    named[p.name] = p
                else:
                    rest.append(p)
            for p in rest:
                if p.name in named:  # a failed folder called like another folder's plugin
                    log.warning("plugin folder %s is not listed: its name is plugin %s's", p.root.name, p.name)
                    continue
                named[p.name] = p
            self.plugins = named
        for folder, m in read.items():
            if m.name != folder:  # the front ends listed it under its folder's name until now
                self._notify(folder)
        for name, folders in claims.items():
            if len(folders) > 1:
                for f in folders:
                    plugin = self.plugin_for_folder(f)
                    if plugin is not None:
                        self._fail_unloaded(plugin, self._claimed_twice(name, folders))
            else:
                manifests[name] = read[folders[0]]
        order, problems = dependency_order(manifests)
        for name, reason in problems.items():
            self._fail_unloaded(self.plugins[name], reason)
        if self.approvals is not None:
            self.approvals.clean_orphans(set(self.names()))
        for i, name in enumerate(order):
            if self._stopping.is_set():
                return
            plugin = self.plugins[name]
            plugin.order = i
            if plugin.state == RUNNING:
                continue  # an admin action (enable, reload) loaded it while we worked on others
            failed_dep = next((d for d in manifests[name].dependencies if self.plugins[d].state != RUNNING), None)
            if failed_dep:
                self._fail_unloaded(plugin, f"dependency '{failed_dep}' is not running")
                continue
            if plugin.state == STOPPED or (self.approvals is not None and not self.approvals.is_enabled(name)):
                plugin.state = STOPPED
                self._notify(name)
                continue
            try:
                self._load(name, initial=True)
            except PluginLoadError:  # disabled or removed while start-up was on its way to it
                pass

    def read_manifest(self, root: Path) -> Manifest:
        """Load a plugin's main chunk in an offline VM (no database) and return its manifest."""
        vm = PluginVM(VMContext(provisional_name(root.name), root, self.settings, database=None,
                                log_sink=lambda *a: None))
        try:
            return vm.load()
        finally:
            vm.close()

    def _fail_unloaded(self, plugin: Plugin, message: str):
        # remember which files failed, so hot reload retries only once they change
        plugin.source_digest = self._read_sources(plugin).digest
        self._fail(plugin, message)

    def _fail(self, plugin: Plugin, message: str):
        plugin.state = FAILED
        plugin.error = message
        self.logbook.write(plugin.name, "error", f"failed to load: {message}")
        self._notify(plugin.name)

    # ---- building a generation ---------------------------------------------------------------
    def _context(self, plugin: Plugin) -> VMContext:
        return VMContext(plugin.name, plugin.root, self.settings, database=self.database,
                         log_sink=self.logbook.write, outbound=self.outbound,
                         domain_approved=self.domain_approved,
                         content=lambda: self.content, core_approved=self.core_approved)

    def domain_approved(self, plugin: str, domain: str) -> bool:
        return self.approvals is None or self.approvals.domain_approved(plugin, domain)

    def core_approved(self, plugin: str, access: str) -> bool:
        return self.approvals is None or self.approvals.core_approved(plugin, access)

    def _build(self, plugin: Plugin, sources: Sources) -> Generation:
        """Load the plugin's sources into a new pool and run on_init once. Raises PluginLoadError."""
        started = time.monotonic()
        ctx = self._context(plugin)
        files = _GenerationSources(sources)
        first = _GenerationVM(ctx, files)
        try:
            manifest = first.load()
            for warning in first.hook_warnings:  # once per generation, not once per VM
                self.logbook.write(plugin.name, "warn", warning)
            first.call_init()
            first.snapshot()
        except BaseException:
            plugin.schema_errors = first.schema_problems()
            first.close()
            raise
        plugin.schema_errors = first.schema_problems()
        expected = (first.routes, first.hooks)

        def factory():
            if self._stopping.is_set():  # the app is closing: do not make it wait for more VMs
                raise PluginLoadError("the app is closing")
            vm = _GenerationVM(ctx, files)
            vm.load(expected=manifest)  # the generation's manifest: every VM gets the same modules
            if (vm.routes, vm.hooks) != expected:  # public and priority included
                raise PluginLoadError("the plugin registered different routes or hooks in another VM")
            vm.snapshot()
            return vm

        pool = VMPool(factory, self.settings.max_vms, self.settings.hook_reserve_vms, first=first)
        try:
            pool.fill()
        except BaseException:
            pool.drain(0)
            raise
        return Generation(manifest, pool, list(first.routes), list(first.hooks), list(first.warnings),
                          loaded_at=time.time(), load_seconds=time.monotonic() - started,
                          domains=dict(first.domains), vm_factory=factory)

    def _check_dependencies(self, manifest: Manifest):
        for dep in manifest.dependencies:
            other = self.plugins.get(dep)
            if other is None:
                raise PluginLoadError(f"missing dependency '{dep}'")
            if other.state != RUNNING:
                raise PluginLoadError(f"dependency '{dep}' is not running")

    def add(self, name: str) -> bool:
        """Load a plugin whose folder appeared after load_all (hot reload, or an admin action).
        It comes after every loaded plugin in hook order. Returns True when it runs."""
        with self._lock:
            known = self.plugins.get(name) or self.plugin_for_folder(name)
        if known is not None:
            return self._load(known.name)
        # name: a new folder; the plugin in it is known by its plugin_info.name
        root = self.plugins_dir / name
        if not is_plugin_folder(root):
            raise PluginLoadError(f"no plugin named '{name}'")
        problem, manifest = None, None
        try:
            manifest = self.read_manifest(root)
        except PluginLoadError:
            pass  # loaded under the folder's name: the load says what is wrong (and is counted)
        with self._lock:
            owner = self.plugins.get(manifest.name) if manifest is not None else None
            if owner is not None and owner.root != root:
                problem = self._claimed_twice(manifest.name, (owner.root.name, name))
                manifest = None
            if manifest is None and name in self.plugins:  # a failed folder called like another's plugin
                self.logbook.write(name, "error", f"plugins/{name} not loaded: {problem}")
                return False
            plugin = self._plugin(manifest.name if manifest is not None else name, root)
            plugin.manifest = manifest
            plugin.order = 1 + max((p.order for p in self.plugins.values() if p is not plugin), default=-1)
        name = plugin.name
        if problem:
            with plugin.lock:
                plugin.last_reload_at = time.monotonic()
                self._fail_unloaded(plugin, problem)
            if owner is not None:  # the running one keeps serving; its log says why the other did not load
                self.logbook.write(owner.name, "warn", f"plugins/{root.name} was not loaded: {problem}")
            return False
        if self.approvals is not None and not self.approvals.is_enabled(name):
            plugin.state = STOPPED
            self._notify(name)
            return False
        return self._load(name)

    def _read_sources(self, plugin: Plugin) -> Sources:
        s = self.settings
        return read_sources(plugin.root, s.max_checksum_files, s.max_checksum_bytes)

    def load(self, name: str) -> bool:
        """(Re)load a plugin blue-green: build the new generation beside the old one; on success swap
        and drain the old; on failure keep the old one serving. A folder not loaded yet is added.
        Returns True on success; raises PluginLoadError for an unknown or disabled plugin."""
        return self._load(name)

    reload = load

    def _load(self, name: str, initial: bool = False) -> bool:
        with self._lock:
            plugin = self.plugins.get(name)
        if plugin is None:
            return self.add(name)
        if plugin.current is None and not initial and plugin.state == FAILED:
            # not serving: its plugin_info.name may have been changed to settle a clash of names
            name = self._reidentify(plugin)
            if name is None:
                return False
        with plugin.lock:
            if self.plugins.get(name) is not plugin:
                raise PluginLoadError(f"no plugin named '{name}'")  # removed while we waited
            if plugin.state == STOPPED:
                raise PluginLoadError(f"plugin '{name}' is disabled: enable it to load it")
            ok = self._load_locked(plugin, initial)
        if ok:
            self._load_waiting_dependents(name)
        return ok

    def _load_locked(self, plugin: Plugin, initial: bool) -> bool:
        name = plugin.name
        old = plugin.current
        if old is None:
            plugin.state = LOADING
            self._notify(name)
        started = time.monotonic()
        sources = self._read_sources(plugin)
        plugin.source_digest = sources.digest
        gen = None
        try:
            gen = self._build(plugin, sources)
            self._check_dependencies(gen.manifest)
            if self.approvals is not None:
                # before any of the new code serves: a new version or permissions revokes approvals
                m = gen.manifest
                if self.approvals.check_identity(name, m.version, m.permissions_key):
                    self.logbook.write(name, "warn", f"version {m.version} or permissions changed: "
                                                     "all route, hook, domain, screen and interface approvals were revoked")
                public = {r.key: r.public for r in gen.routes}
                for method, path in self.approvals.revoke_changed_routes(
                        name, [(*key, pub) for key, pub in public.items()]):
                    now = "public (no token needed)" if public[(method, path)] else "not public"
                    self.logbook.write(name, "warn", f"route {method} {path} is {now} now: its approval "
                                                     "was revoked; approve it again")
        except Exception as exc:  # noqa: BLE001 - a failing plugin never stops the app
            if gen is not None:
                plugin.manifest = gen.manifest
                gen.pool.drain(0)
            if not isinstance(exc, PluginLoadError):
                log.exception("loading plugin %s failed", name)
            self._finish_attempt(plugin, ok=False, seconds=time.monotonic() - started, initial=initial)
            if old is None:
                # an init failure counts against the breaker; a failed reload does not, since the
                # old version keeps serving (SPEC 6) and must not be shut off by bad saves
                plugin.breaker.failure()
            if old is not None:
                plugin.error = f"reload failed, still serving version {old.manifest.version}: {exc}"
                self.logbook.write(name, "error", plugin.error)
                self._notify(name)
            else:
                self._fail(plugin, str(exc))
            return False
        plugin.current = gen
        plugin.manifest = gen.manifest
        plugin.state = RUNNING
        plugin.error = None
        plugin.hook_breaker.reset()
        plugin.breaker.success()  # new code that initialised fine: the failure count starts over
        if self.metrics is not None:
            # read when scraped, from whichever generation serves then: nothing to do per request,
            # and a draining pool can never speak for the plugin
            self.metrics.vms_available.labels(name).set_function(
                lambda p=plugin: p.current.pool.available if p.current is not None else 0)
        seconds = time.monotonic() - started
        self._finish_attempt(plugin, ok=True, seconds=seconds, initial=initial)
        verb = "reloaded" if old is not None else "loaded"
        self.logbook.write(name, "info", f"{verb} version {gen.manifest.version} in {seconds * 1000:.0f} ms")
        if old is not None:
            self._retire(old)
        self._notify(name)
        return True

    def _finish_attempt(self, plugin: Plugin, ok: bool, seconds: float, initial: bool):
        plugin.last_reload_ok, plugin.last_reload_seconds = ok, seconds
        if initial:
            return  # start-up is not a reload: no cooldown, no slow count, no reload metric
        plugin.last_reload_at = time.monotonic()
        plugin.slow_reloads = plugin.slow_reloads + 1 if seconds > self.settings.slow_reload_s else 0
        if self.metrics is not None:
            self.metrics.reloads.labels(plugin.name, "success" if ok else "failure").inc()
            self.metrics.reload_duration.labels(plugin.name).observe(seconds)
            if not ok:
                self.metrics.errors.labels(plugin.name, "load").inc()

    def _load_waiting_dependents(self, name: str):
        """Plugins that failed because name was not running get another chance now that it runs."""
        with self._lock:
            waiting = [p for p in self.plugins.values()
                       if p.state == FAILED and p.manifest is not None and name in p.manifest.dependencies]
        for p in waiting:
            if all(self.plugins.get(d) is not None and self.plugins[d].state == RUNNING
                   for d in p.manifest.dependencies):
                try:
                    self._load(p.name)
                except PluginLoadError:
                    pass

    def _retire(self, gen: Generation, wait: bool = False):
        """Drain an old generation in the background: requests already served by it finish."""
        def run():
            gen.pool.drain(self.settings.drain_timeout_s)
        t = threading.Thread(target=run, name="modula-drain", daemon=True)
        t.start()
        with self._lock:
            self._retiring = [x for x in self._retiring if x.is_alive()] + [t]
        if wait:
            t.join()

    def _shutdown_generation(self, gen: Generation):
        vm = None
        try:
            vm = gen.pool.checkout(self.settings.drain_timeout_s, for_hook=True)
        except (PoolClosed, PluginLoadError):
            pass
        if vm is not None:
            try:
                vm.call_shutdown()
            finally:
                gen.pool.give_back(vm)
        gen.pool.drain(self.settings.drain_timeout_s)

    def _shutdown_behind(self, gen: Generation):
        """on_shutdown and the drain of a generation already out of service, in the background: a
        lifecycle command never waits on plugin code (shutdown() joins these threads)."""
        t = threading.Thread(target=self._shutdown_generation, args=(gen,), name="modula-shutdown", daemon=True)
        t.start()
        with self._lock:
            self._retiring = [x for x in self._retiring if x.is_alive()] + [t]

    def _clear_gauge(self, name: str):
        if self.metrics is not None:
            try:
                self.metrics.vms_available.remove(name)
            except KeyError:
                pass

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
            self._clear_gauge(name)
            self.logbook.write(name, "info", "disabled")
        if gen is not None:
            self._shutdown_behind(gen)

    def remove(self, name: str):
        """The plugin's folder is gone: stop it and forget its approvals."""
        with self._lock:
            plugin = self.plugins.pop(name, None)
        if plugin is None:
            return
        with plugin.lock:
            gen, plugin.current = plugin.current, None
            plugin.state = STOPPED
            self._clear_gauge(name)
            if gen is not None:
                self._shutdown_generation(gen)
        if self.approvals is not None:
            self.approvals.forget(name)
        self.logbook.write(name, "info", "plugin folder removed: stopped, its approvals forgotten")
        self._notify(name)

    def stop_loading(self):
        """Start-up loading stops before the next plugin (the app is closing)."""
        self._stopping.set()

    def shutdown(self):
        self._stopping.set()
        for plugin in list(self.plugins.values()):
            with plugin.lock:
                gen, plugin.current = plugin.current, None
                if gen is not None:
                    self._shutdown_generation(gen)
        with self._lock:
            retiring = list(self._retiring)
        for t in retiring:
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
        spec = gen.table.static.get((method, path))  # the common case, without two calls
        if spec is not None:
            params = {}
        else:
            found = gen.match(method, path)
            if found is None:
                return None
            spec, params = found
        approvals = self.approvals
        if approvals is not None and (name, spec.method, spec.path, spec.public) not in approvals.approved_routes:
            return None  # (route_approved(), without its frame)
        return tuple.__new__(RouteMatch, (plugin, gen, spec, params))  # RouteMatch(...) without its __new__ frame

    def _match_inactive(self, plugin: Plugin, method: str, path: str):
        if self.approvals is None:
            return None
        # as approved, public or not: a public route of a stopped plugin answers 503 without the token
        approved = [RouteSpec(0, m, p, public) for m, p, public in self.approvals.route_approvals_of(plugin.name)]
        found = RouteTable(approved).match(method, path)
        return RouteMatch(plugin, None, found[0], found[1]) if found else None

    def call_route(self, match: RouteMatch, request: dict) -> dict:
        """Plugin state → breaker → VM checkout → middleware → handler. Returns the response dict
        (status, json, body, headers, has_json, encoded: see PluginVM.read_response) or raises RouteFailure."""
        out = self.serve_route(match, request)
        return unpack_response(out) if type(out) is bytes else out

    def serve_route(self, match: RouteMatch, request: dict):
        """call_route for the server: the response dict, or the answer as the bootstrap packed it (bytes,
        see unpack_response), which the server sends without unpacking."""
        plugin, gen = match.plugin, match.generation
        if gen is None or plugin.state != RUNNING:
            if plugin.state in (LOADING, DISCOVERED):
                raise RouteFailure(503, f"plugin '{plugin.name}' is loading", "loading", "PLUGIN_UNAVAILABLE")
            raise RouteFailure(503, f"plugin '{plugin.name}' is not running", "unavailable", "PLUGIN_UNAVAILABLE")
        breaker = plugin.breaker
        if not breaker.quiet and not breaker.allow():  # quiet: allow() would say yes (see CircuitBreaker)
            raise RouteFailure(503, f"plugin '{plugin.name}' is temporarily unavailable (circuit breaker open)",
                               "breaker", "CIRCUIT_BREAKER_OPEN")
        reported = False  # every allow() ends in success(), failure() or release(): a probe never wedges
        try:
            try:
                spec = match.spec
                vm = gen.pool.take_idle()  # the common case; else wait, rebuild or follow a reload
                if vm is None:
                    gen, spec, vm = self._checkout_route(plugin, gen, spec)
            except PluginLoadError as exc:
                reported = True
                breaker.failure()
                self._count("errors", plugin.name, "vm")
                request_id = new_request_id()
                self.logbook.write(plugin.name, "error", f"could not start a VM: {exc}", {"request_id": request_id})
                raise RouteFailure(503, f"plugin '{plugin.name}' could not start a VM", "unavailable",
                                   "PLUGIN_UNAVAILABLE", str(exc), request_id) from None
            try:
                response = vm.call_route(spec.index, request)
                if type(response) is not bytes:  # packed: sent as it is
                    response = vm.read_response(response)
            except PluginCallError as exc:
                reported = True
                breaker.failure()
                self._count("errors", plugin.name, exc.kind)
                if exc.is_budget:
                    self._count("budget_exhaustions", plugin.name, exc.kind)
                # the Lua error's text goes to the plugin's log only; the answer names the entry
                request_id = new_request_id()
                self.logbook.write(plugin.name, "error", f"{spec.method} {spec.path}: {exc.message}",
                                   {"request_id": request_id})
                code = ("HANDLER_TIMEOUT" if exc.kind in TIMEOUT_KINDS
                        else "RESPONSE_TOO_LARGE" if exc.kind == "response_size" else "HANDLER_ERROR")
                status, message = ROUTE_ERRORS[code]
                raise RouteFailure(status, message, exc.kind, code, exc.message, request_id) from None
            except ApiError as exc:  # the request itself could not be handed to Lua: the client's fault
                status = getattr(exc, "status", 400)
                raise RouteFailure(status, f"request cannot be passed to the plugin: {exc}", "request",
                                   "BODY_TOO_LARGE" if status == 413 else "INVALID_REQUEST") from None
            except Exception:  # noqa: BLE001 - our bug, not the plugin's: never reuse that VM
                vm.broken = True
                log.exception("plugin %s: %s %s failed inside the host", plugin.name, spec.method, spec.path)
                self._count("errors", plugin.name, "internal")
                raise RouteFailure(500, "internal error while running the plugin", "internal",
                                   "INTERNAL_ERROR") from None
            finally:
                gen.pool.give_back(vm)
            reported = True
            if not breaker.quiet:  # read again: a failure counted meanwhile is reset, as success() does
                breaker.success()
            return response
        finally:
            if not reported:
                breaker.release()

    def _checkout_route(self, plugin: Plugin, gen: Generation, spec: RouteSpec):
        """A VM for the route: from the generation the request matched, or — when that one was swapped
        out by a reload in the meantime — from the current one, if it still has the route approved."""
        wait = self.settings.checkout_wait_ms / 1000.0
        for _ in range(3):
            try:
                vm = gen.pool.checkout(wait)
            except PoolClosed:
                current = plugin.current
                if current is None or current is gen:
                    raise RouteFailure(503, f"plugin '{plugin.name}' is not running", "unavailable",
                                       "PLUGIN_UNAVAILABLE") from None
                spec = next((r for r in current.routes if r.key == spec.key), None)
                if spec is None or (self.approvals is not None
                                    and not self.approvals.route_approved(plugin.name, spec.method, spec.path,
                                                                          spec.public)):
                    # the new version dropped the route, or its approval was reset: like an unknown route
                    raise RouteFailure(404, "not found", "not_found", "ROUTE_NOT_FOUND") from None
                gen = current
                continue
            if vm is None:
                raise RouteFailure(503, f"plugin '{plugin.name}' is busy (no VM free)", "busy", "POOL_EXHAUSTED")
            return gen, spec, vm
        raise RouteFailure(503, f"plugin '{plugin.name}' is reloading", "unavailable", "PLUGIN_UNAVAILABLE")

    # ---- hooks -------------------------------------------------------------------------------
    def _rebuild_hook_chains(self):
        # one rebuild at a time: an older result must never be assigned after a newer one
        with self._chain_lock:
            self._rebuild_hook_chains_locked()

    def _rebuild_hook_chains_locked(self):
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
            chain.sort(key=lambda b: (*b.spec.rank, b.plugin.order, b.spec.index))
        self._hook_chains = chains

    def loading_with_hooks(self, event: str, table: str = "content") -> list[str]:
        """Plugins still loading that have an approved hook for event on table: the hook chain is not
        whole until they run."""
        if self.approvals is None:
            return []
        with self._lock:
            plugins = list(self.plugins.values())
        return [p.name for p in plugins if p.state in (LOADING, DISCOVERED)
                and any(e == event and t in (table, "*") for e, t in self.approvals.hooks_of(p.name))]

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

    def _rebind(self, binding: HookBinding, gen: Generation) -> HookBinding | None:
        """The same hook in another generation of the plugin (the n-th with that event and table),
        if it is still there, approved and not disabled."""
        old_gen, spec = binding.generation, binding.spec
        nth = [h.index for h in old_gen.hooks if h.key == spec.key].index(spec.index)
        same = [h for h in gen.hooks if h.key == spec.key]
        if nth >= len(same):
            return None
        if self.approvals is not None and not self.approvals.hook_approved(binding.plugin.name, *spec.key):
            return None
        if binding.plugin.hook_breaker.is_disabled(spec.key):
            return None
        return HookBinding(binding.plugin, gen, same[nth])

    def run_hook(self, binding: HookBinding, data: dict, timeout: float, max_ops: int | None = None, *,
                 reserve: bool = True):
        """Run one hook on a VM of its generation. Returns its result; raises PluginCallError.
        When a reload swapped the generation meanwhile, the new version's hook runs (if it still has
        it and it is approved); when the plugin stopped meanwhile, nothing runs and None is returned.
        reserve=False: take a VM from the part of the pool requests share, leaving the hook reserve
        to before-hooks (for after-hooks)."""
        deadline = time.monotonic() + timeout
        vm = None
        for _ in range(3):
            gen = binding.generation
            try:
                vm = gen.pool.checkout(max(0.0, deadline - time.monotonic()), for_hook=reserve)
                break
            except PoolClosed:
                current = binding.plugin.current
                if current is None or current is gen:
                    return None
                binding = self._rebind(binding, current)
                if binding is None:
                    return None
            except PluginLoadError as exc:
                raise PluginCallError("error", f"could not start a VM: {exc}") from None
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
            "folder": plugin.root.name,  # may differ from the name (plugin_info.name): info's warnings say so
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
        if gen is not None:
            out["routes"] = [{"method": r.method, "path": r.path, "public": r.public,
                              "approved": bool(appr and appr.route_approved(name, r.method, r.path, r.public))}
                             for r in gen.routes]
            out["hooks"] = [{"event": h.event, "table": h.table, "priority": h.priority,
                             "approved": bool(appr and appr.hook_approved(name, h.event, h.table)),
                             "disabled": plugin.hook_breaker.is_disabled(h.key)}
                            for h in gen.hooks]
        else:
            # stopped or failed: what is known is what stays approved for when it runs again
            out["routes"] = [{"method": m, "path": p, "public": public, "approved": True}
                             for m, p, public in sorted(appr.route_approvals_of(name) if appr else ())]
            out["hooks"] = [{"event": e, "table": t, "priority": None, "approved": True, "disabled": False}
                            for e, t in sorted(appr.hooks_of(name) if appr else ())]
        if gen is not None:
            out["domains"] = [{"domain": d, "description": desc,
                               "approved": bool(appr is None or appr.domain_approved(name, d))}
                              for d, desc in gen.domains.items()]
        else:
            out["domains"] = [{"domain": d, "description": "", "approved": True}
                              for d in sorted(appr.domains_of(name) if appr else ())]
        # content access (the core module): as the manifest asks for it, or what stays approved
        if m is not None and gen is not None:
            out["core"] = [{"access": a, "approved": bool(appr is None or appr.core_approved(name, a))}
                           for a in m.core]
        else:
            out["core"] = [{"access": a, "approved": True} for a in sorted(appr.core_of(name) if appr else ())]
        # screens and field interfaces (SPEC 3.12), approved like routes
        for kind, key in (("screen", "screens"), ("interface", "interfaces")):
            if gen is not None:
                defs = gen.manifest.screens if kind == "screen" else gen.manifest.interfaces
                out[key] = [dict(d.__dict__, approved=bool(appr is None or appr.ui_approved(name, kind, d.name)))
                            for d in defs]
            else:
                out[key] = [{"name": n, "label": n, "approved": True}
                            for k, n in sorted(appr.ui_of(name) if appr else ()) if k == kind]
        out["warnings"] = gen.warnings if gen else []
        out["schema_errors"] = list(plugin.schema_errors)
        out["breaker"] = plugin.breaker.to_dict()
        out["hook_breaker"] = plugin.hook_breaker.to_dict()
        out["pool"] = gen.pool.stats() if gen else None
        out["last_reload"] = {"ok": plugin.last_reload_ok, "seconds": plugin.last_reload_seconds}
        out["hot_reload"] = {"watched": plugin.slow_reloads < self.settings.max_slow_reloads,
                             "consecutive_slow_reloads": plugin.slow_reloads,
                             "source_checksum": plugin.source_digest}
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
