"""The hook dispatcher: runs the approved content hooks of every plugin for one event (SPEC 3.6).

Before-hooks run synchronously on the caller's thread, inside the caller's content transaction, so
a plugin's ``db.*`` writes use the same SQLite connection and commit or roll back with the change.
Each may abort the change (``error(msg)``, or running out of a budget) or return a table of field
changes (a filter). After-hooks run after commit on a bounded worker pool, one task per event that
runs the event's chain in order; their failures are logged and counted, never raised.

The hook breaker counts a before-hook's aborts and an after-hook's failures alike: after
hook_max_consecutive_aborts in a row, that (plugin, event, table) is disabled until the plugin is
reloaded or enabled; a success resets the count.

Set ``MODULA_TRACE_HOOKS=1`` to log every hook call (plugin, event, entry, outcome, time) to stderr.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import Callable, Iterable

from ..errors import HookAbort, ValidationError
from ..settings import PluginSettings
from .errors import PluginCallError

log = logging.getLogger(__name__)
trace_log = logging.getLogger("modula.hooks.trace")

TRACE_ENV = "MODULA_TRACE_HOOKS"
# "init.lua:12: msg", "lib/x.lua:3: msg", '[string "..."]:1: msg': the editor gets msg only.
_LOCATION = re.compile(r'^(?:[\w./\\-]+\.lua|\[string "[^"]*"\]|\?):\d+: ')

OK, ABORT, ERROR, TIMEOUT = "ok", "abort", "error", "timeout"


def strip_location(message: str) -> str:
    """Drop the "init.lua:12: " prefixes Lua's error() adds, however many re-raises stacked them."""
    while True:
        stripped = _LOCATION.sub("", message, count=1)
        if stripped == message:
            return message.strip()
        message = stripped


def trace_enabled() -> bool:
    return os.environ.get(TRACE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (it may be replaced after the handler is made)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def _ensure_trace_output():
    # The trace is a developer switch: it must show even when the app configured no logging.
    if not trace_log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s modula.hooks %(message)s"))
        trace_log.addHandler(handler)
        trace_log.propagate = False
    trace_log.setLevel(logging.INFO)


class HookDispatcher:
    """Runs hook chains for one content table. Thread-safe: every caller thread may dispatch at once."""

    def __init__(self, plugins, settings: PluginSettings | None = None, logbook=None, metrics=None, *,
                 editable: Iterable[str] = (), trace: bool | None = None):
        self.plugins = plugins
        self.editable = frozenset(editable)  # what a filter may change; the rest of the data is read-only
        self.settings = settings or PluginSettings()
        self.logbook = logbook
        self.metrics = metrics
        self.trace = trace_enabled() if trace is None else trace
        if self.trace:
            _ensure_trace_output()
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._pending: set[Future] = set()
        self._pending_lock = threading.Lock()
        self._closed = False
        self._series: dict = {}  # (plugin, event, outcome) -> its metric children: labels() costs per call

    # ---- queries ---------------------------------------------------------------------------
    def chain(self, event: str, table: str = "content") -> list:
        if self.plugins is None:
            return []
        return self.plugins.hook_chain(event, table)

    # ---- before-hooks ----------------------------------------------------------------------
    def run_before(self, event: str, entry: dict, apply: Callable[[dict, dict], dict] | None = None, *,
                   table: str = "content", locked: Iterable[str] = (), changed_by: list | None = None) -> dict:
        """Run the before-chain of event on entry (the entry as it would be written).

        apply(entry, changes) -> new entry applies one hook's field changes and validates the result
        (raising ValidationError); with apply=None returned tables are ignored (e.g. delete). Fields
        in locked are not changeable by this chain. The names of the plugins whose changes were applied
        are appended to changed_by. Returns the final entry; raises HookAbort.
        """
        chain = self.chain(event, table)
        if getattr(self.plugins, "loading", False):
            # an approved hook of a plugin still starting up (before-hook, or the after-hook this
            # change will fire) would be skipped: refuse the change instead
            after = "after_" + event[len("before_"):]
            waiting = self.plugins.loading_with_hooks(event, table) or self.plugins.loading_with_hooks(after, table)
            if waiting:
                raise HookAbort(f"The {waiting[0]} plugin is still loading, so the change was not saved; "
                                "try again in a moment.", waiting[0], event)
        if not chain:
            return entry
        s = self.settings
        per_hook = s.hook_timeout_ms / 1000.0
        deadline = time.monotonic() + s.hook_event_timeout_ms / 1000.0
        for binding in chain:
            name = binding.plugin.name
            if binding.plugin.current is None:  # disabled while we were on our way here
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise HookAbort(f"The {event} hooks took longer than {s.hook_event_timeout_ms / 1000.0:g} s "
                                f"in total, so the change was not saved.", None, event)
            timeout = min(per_hook, left)
            data = dict(entry, _table=table, _event=event)
            started = time.perf_counter()
            try:
                result = self.plugins.run_hook(binding, data, timeout, s.hook_max_ops)
            except PluginCallError as exc:
                outcome = TIMEOUT if exc.kind == "timeout" else (ERROR if exc.is_budget else ABORT)
                self._finish(binding, event, entry, outcome, started, exc)
                raise self._abort_for(binding, event, exc, chain_cut=timeout < per_hook) from None
            except Exception as exc:  # noqa: BLE001 - e.g. a VM that could not be built: fail closed
                log.exception("hook %s of plugin %s could not run", event, name)
                self._finish(binding, event, entry, ERROR, started, exc)
                raise HookAbort(f"The {name} plugin could not run its {event} hook, so the change was not "
                                f"saved.", name, event) from None
            try:
                changes = self._changes(binding, event, entry, result, locked) if apply is not None else {}
                if changes:
                    entry = apply(entry, changes)
                    if changed_by is not None:
                        changed_by.append(name)
            except ValidationError as exc:
                self._finish(binding, event, entry, ERROR, started, exc)
                raise HookAbort(f"The {name} plugin's {event} hook made the entry invalid: {exc}", name,
                                event) from None
            self._finish(binding, event, entry, OK, started, None, changes)
        return entry

    def _changes(self, binding, event: str, entry: dict, result, locked) -> dict:
        """The editable field changes of a hook's result; anything else is ignored (and logged)."""
        if result is None or result == [] or result == {}:
            return {}
        name = binding.plugin.name
        if not isinstance(result, dict):
            self._log(name, "warn", f"{event} hook returned a {type(result).__name__}, not a table of field "
                                    "changes: ignored")
            return {}
        changes = {}
        for key, value in result.items():
            if key in ("_table", "_event") or (key in entry and entry[key] == value):
                continue  # a hook that returns the whole data table changes only what differs
            if key in self.editable and key not in locked:
                changes[key] = value
            elif key in entry:
                self._log(name, "warn", f"{event} hook may not change '{key}': ignored")
            else:
                self._log(name, "warn", f"{event} hook returned unknown field '{key}': ignored")
        return changes

    def _abort_for(self, binding, event: str, exc: PluginCallError, chain_cut: bool) -> HookAbort:
        name = binding.plugin.name
        if exc.kind == "error":
            return HookAbort(strip_location(exc.message) or f"The {name} plugin refused the change.", name, event)
        # a budget: name it, so the author knows it was not the plugin's judgement
        why = exc.message
        if exc.kind == "timeout" and chain_cut:
            why += f", the rest of the {self.settings.hook_event_timeout_ms / 1000.0:g} s all {event} hooks share"
        return HookAbort(f"The change was not saved because the {name} plugin's {event} hook was stopped: {why}.",
                         name, event)

    # ---- after-hooks -----------------------------------------------------------------------
    def run_after(self, event: str, entry: dict, *, table: str = "content") -> Future | None:
        """Queue the after-chain of event for entry on the worker pool. Returns the task (None when
        no hook runs). Never raises for a hook."""
        chain = self.chain(event, table)
        if not chain:
            return None
        if self._closed:
            log.warning("content service closed: %s hooks for %s not run", event, entry.get("id"))
            return None
        data = dict(entry, _table=table, _event=event)
        try:
            future = self._pool().submit(self._after_chain, event, chain, data)
        except RuntimeError:  # shut down between the check and the submit
            log.warning("content service closed: %s hooks for %s not run", event, entry.get("id"))
            return None
        with self._pending_lock:
            self._pending.add(future)
        future.add_done_callback(self._done)
        return future

    def _pool(self) -> ThreadPoolExecutor:
        # Built on first use: a site without after-hooks never starts a thread.
        if self._executor is None:
            with self._executor_lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(max_workers=max(1, self.settings.after_hook_workers),
                                                        thread_name_prefix="modula-after-hook")
        return self._executor

    def _done(self, future: Future):
        with self._pending_lock:
            self._pending.discard(future)

    def _after_chain(self, event: str, chain: list, data: dict):
        timeout = self.settings.after_hook_timeout_ms / 1000.0
        for binding in chain:
            name = binding.plugin.name
            if binding.plugin.current is None or binding.plugin.hook_breaker.is_disabled(binding.key):
                continue
            started = time.perf_counter()
            try:
                self._run_shared(binding, dict(data), timeout)
            except PluginCallError as exc:
                outcome = TIMEOUT if exc.kind == "timeout" else ERROR
                self._finish(binding, event, data, outcome, started, exc)
            except Exception as exc:  # noqa: BLE001 - an after-hook never fails the save
                log.exception("after-hook %s of plugin %s could not run", event, name)
                self._finish(binding, event, data, ERROR, started, exc)
            else:
                self._finish(binding, event, data, OK, started, None)

    def _run_shared(self, binding, data: dict, timeout: float):
        """Run an after-hook on a VM of the pool's shared part, leaving the hook reserve to before-hooks.

        An after-hook holding a VM while it waits for SQLite's write lock, held by a save whose
        before-hook waits for a VM of the same plugin, would stall that save until its hook timed out.
        A before-chain runs only while its save holds the write lock, so the reserve is enough for it.
        """
        return self.plugins.run_hook(binding, data, timeout, self.settings.hook_max_ops, reserve=False)

    # ---- bookkeeping -----------------------------------------------------------------------
    def _finish(self, binding, event: str, entry: dict, outcome: str, started: float, exc, changes=None):
        """Metrics, breaker, plugin log and trace for one hook run."""
        seconds = time.perf_counter() - started
        plugin = binding.plugin
        name = plugin.name
        m = self.metrics
        if m is not None:
            series = self._series.get((name, event, outcome))
            if series is None:
                series = self._series[(name, event, outcome)] = (m.hook_runs.labels(name, event, outcome),
                                                                 m.hook_duration.labels(name, event))
            series[0].inc()
            series[1].observe(seconds)
        if self.trace:
            extra = f" changes={sorted(changes)}" if changes else ""
            why = f" ({exc})" if exc is not None else ""
            trace_log.info("%s %s:%s priority=%d entry=%s -> %s in %.2f ms%s%s", name, event, binding.spec.table,
                           binding.spec.priority, entry.get("id"), outcome, seconds * 1000, extra, why)
        if outcome == OK:
            plugin.hook_breaker.success(binding.key)
            return
        message = getattr(exc, "message", None) or str(exc)
        if isinstance(exc, PluginCallError):
            if m is not None and outcome != ABORT:
                m.errors.labels(name, exc.kind).inc()
                if exc.is_budget:
                    m.budget_exhaustions.labels(name, exc.kind).inc()
        elif m is not None:
            m.errors.labels(name, "error").inc()
        if outcome == ABORT:
            # the full text, location included, is for the author of the plugin
            self._log(name, "info", f"{event} hook aborted the change: {message}", {"id": entry.get("id")})
        else:
            self._log(name, "error", f"{event} hook failed ({outcome}): {message}", {"id": entry.get("id")})
        if plugin.hook_breaker.abort(binding.key):
            if m is not None:
                m.breaker_trips.labels(name, "hook").inc()
            self._log(name, "error", f"hook {event}:{binding.spec.table} disabled after "
                                     f"{plugin.hook_breaker.max_aborts} consecutive failures; reload or enable "
                                     "the plugin to turn it on again")

    def _log(self, plugin: str, level: str, message: str, context=None):
        if self.logbook is not None:
            self.logbook.write(plugin, level, message, context)
        else:
            log.info("[%s] %s %s", plugin, level, message)

    # ---- lifecycle -------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the queued after-hooks. True when none is left."""
        with self._pending_lock:
            pending = set(self._pending)
        if not pending:
            return True
        _, not_done = wait_futures(pending, timeout=timeout)
        return not not_done

    def close(self, timeout: float | None = None):
        """Stop taking after-hooks, give the queued ones a moment to finish, drop the rest."""
        self._closed = True
        if timeout is None:
            timeout = self.settings.after_hook_timeout_ms / 1000.0
        if not self.wait(timeout):
            with self._pending_lock:
                left = len(self._pending)
            log.warning("closing with %d after-hook task(s) still running or queued; queued ones are dropped", left)
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
