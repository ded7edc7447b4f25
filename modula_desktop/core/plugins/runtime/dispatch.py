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

from ...errors import HookAbort, ReadRefused, ValidationError
from ...settings import PluginSettings
from ..errors import PluginCallError
from . import nesting

# the fields of a content entry (core/content.py FIELDS; not imported: core.content imports this module)
FIELD_NAMES = frozenset({"id", "type", "title", "slug", "body", "status", "fields", "published_at", "created_at",
                         "updated_at"})

log = logging.getLogger(__name__)
trace_log = logging.getLogger("modula.hooks.trace")

TRACE_ENV = "MODULA_TRACE_HOOKS"
# "init.lua:12: msg", "lib/x.lua:3: msg", '[string "..."]:1: msg': the editor gets msg only.
_LOCATION = re.compile(r'^(?:[\w./\\-]+\.lua|\[string "[^"]*"\]|\?):\d+: ')

OK, ABORT, ERROR, TIMEOUT = "ok", "abort", "error", "timeout"
REFUSED = "refused"  # a before_read that answered {status = 4xx}: the plugin's judgement, not a failure

# after_read (SPEC 3.6): what it may replace in what a read returns, and what it may drop ("id" stays:
# it names the entry)
READ_REPLACEABLE = {"title": str, "body": str, "fields": dict}
READ_KEEP = frozenset({"id"})
MAX_READ_HEADERS = 20
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")
# response headers no plugin sets (as for plugin routes, SPEC 5)
_BLOCKED_HEADERS = frozenset({"set-cookie", "transfer-encoding", "content-length", "cache-control", "host",
                              "connection", "content-type", "content-security-policy", "location"})


def strip_location(message: str) -> str:
    """Drop the "init.lua:12: " prefixes Lua's error() adds, however many re-raises stacked them."""
    while True:
        stripped = _LOCATION.sub("", message, count=1)
        if stripped == message:
            return message.strip()
        message = stripped


def table_name(binding, table: str) -> str:
    """data._table for a hook: the name it was registered with ("content_data" when registered so), or
    for a "*" hook the table that fired."""
    spec = binding.spec
    return table if spec.table == "*" else getattr(spec, "registered", "") or spec.table


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
            data = dict(entry, _table=table_name(binding, table), _event=event)
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

    # ---- read hooks (SPEC 3.6) ---------------------------------------------------------------
    def has_read_hooks(self, table: str = "content") -> bool:
        """Whether any read hook runs for table now (the site build skips all read work when none does),
        or would, once a plugin still starting up has loaded."""
        return bool(self.chain("before_read", table) or self.chain("after_read", table)
                    or self._loading_readers(table))

    def _loading_readers(self, table: str) -> list:
        if not getattr(self.plugins, "loading", False):
            return []
        return (self.plugins.loading_with_hooks("before_read", table)
                or self.plugins.loading_with_hooks("after_read", table))

    def run_before_read(self, data: dict, table: str = "content") -> dict:
        """The before_read chain for one read, outside any transaction (db, core and request allowed).
        data: what is read and by whom (no body: the read has not happened yet). Returns the state for
        after_read: data plus the "_" keys the hooks set on it (ModulaCMS's state passing). Raises
        ReadRefused: a hook returned {status = 4xx [, json =, headers =]} (that answer), raised an error
        (403 with its message) or was stopped by a budget (503)."""
        waiting = self._loading_readers(table)
        if waiting:  # a gate still starting up would be skipped: refuse rather than let the read through
            raise ReadRefused(f"The {waiting[0]} plugin is still loading, so this read cannot be checked yet; "
                              "try again in a moment.", waiting[0], 503)
        chain = self.chain("before_read", table)
        if not chain:
            return data
        s = self.settings
        per_hook = s.hook_timeout_ms / 1000.0
        deadline = time.monotonic() + s.hook_event_timeout_ms / 1000.0
        state = dict(data)
        for binding in chain:
            name = binding.plugin.name
            if binding.plugin.current is None:
                continue
            payload = dict(state, _table=table_name(binding, table), _event="before_read")
            started = time.perf_counter()
            try:
                result = self._run_read(binding, payload, deadline, per_hook)
            except PluginCallError as exc:
                self._finish(binding, "before_read", data, TIMEOUT if exc.kind == "timeout" else ERROR, started, exc)
                if exc.kind == "error":
                    raise ReadRefused(strip_location(exc.message) or f"The {name} plugin refused this read.",
                                      name, 403) from None
                raise ReadRefused(f"The {name} plugin's before_read hook was stopped ({exc.message}), so the "
                                  f"read was refused.", name, 503) from None
            except Exception as exc:  # noqa: BLE001 - fail closed: a gate that cannot run refuses
                log.exception("before_read hook of plugin %s could not run", name)
                self._finish(binding, "before_read", data, ERROR, started, exc)
                raise ReadRefused(f"The {name} plugin could not run its before_read hook, so the read was "
                                  f"refused.", name, 503) from None
            state.update({k: v for k, v in payload.items() if k.startswith("_") and k not in ("_table", "_event")})
            refusal = self._refusal(binding, result)
            self._finish(binding, "before_read", data, REFUSED if refusal else OK, started, None)
            if refusal is not None:
                raise refusal
        return state

    def run_after_read(self, entry: dict, state: dict, table: str = "content",
                       deadline: float | None = None) -> tuple[dict, dict]:
        """The after_read chain on one entry about to be returned. Each hook may return a table of
        field replacements (title, body, fields), drop = {names} to leave fields out, and ModulaCMS's
        headers = {...} for an HTTP answer. Returns (the entry as returned, headers). deadline: the
        time.monotonic() all the hooks of one read share (a list's entries share one); default the
        event budget from now. Raises ReadRefused (503) when a hook fails: what it would have hidden
        is never returned unfiltered."""
        chain = self.chain("after_read", table)
        if not chain:
            return entry, {}
        s = self.settings
        if deadline is None:
            deadline = time.monotonic() + s.hook_event_timeout_ms / 1000.0
        headers: dict = {}
        out = dict(entry)
        for binding in chain:
            name = binding.plugin.name
            if binding.plugin.current is None:
                continue
            data = dict(state, **out)
            data.update(_table=table_name(binding, table), _event="after_read")
            started = time.perf_counter()
            try:
                result = self._run_read(binding, data, deadline, s.hook_timeout_ms / 1000.0)
            except PluginCallError as exc:
                self._finish(binding, "after_read", entry, TIMEOUT if exc.kind == "timeout" else ERROR, started, exc)
                raise ReadRefused(f"The {name} plugin's after_read hook failed, so the entry '{entry.get('slug')}' "
                                  f"is not shown.", name, 503) from None
            except Exception as exc:  # noqa: BLE001
                log.exception("after_read hook of plugin %s could not run", name)
                self._finish(binding, "after_read", entry, ERROR, started, exc)
                raise ReadRefused(f"The {name} plugin could not run its after_read hook, so the entry "
                                  f"'{entry.get('slug')}' is not shown.", name, 503) from None
            out = self._filtered(binding, out, data, result, headers)
            self._finish(binding, "after_read", entry, OK, started, None)
        return out, headers

    def _run_read(self, binding, data: dict, deadline: float, per_hook: float):
        left = deadline - time.monotonic()
        if left <= 0:
            raise PluginCallError("timeout", f"time budget exceeded (the read hooks of this read share "
                                             f"{self.settings.hook_event_timeout_ms / 1000.0:g} s)")
        # the shared part of the pool: a read hook may wait on the network (request.*), and the hook
        # reserve is for the before-hooks of changes, which hold the write lock
        return self.plugins.run_hook(binding, data, min(per_hook, left), self.settings.hook_max_ops, reserve=False)

    def _refusal(self, binding, result) -> ReadRefused | None:
        """ModulaCMS's before_read answer {status, json, headers} as a refusal; None to let the read go on."""
        if not isinstance(result, dict) or "status" not in result:
            return None
        name = binding.plugin.name
        status = result.get("status")
        if isinstance(status, float) and status.is_integer():
            status = int(status)
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 499:
            self._log(name, "warn", f"before_read returned status {status!r}: a refusal is a 4xx status; "
                                    "answered 403")
            status = 403
        body = result.get("json")
        if body == []:
            body = {}
        message = body.get("error") if isinstance(body, dict) else None
        if not isinstance(message, str) or not message:
            message = f"The {name} plugin refused this read."
        return ReadRefused(message, name, status, body if isinstance(body, (dict, list)) else None,
                           self._headers(name, result.get("headers")))

    def _filtered(self, binding, entry: dict, data: dict, result, headers: dict) -> dict:
        if result is None or result == [] or result == {}:
            return entry
        name = binding.plugin.name
        if not isinstance(result, dict):
            self._log(name, "warn", f"after_read returned a {type(result).__name__}, not a table: ignored")
            return entry
        out = dict(entry)
        for key, value in result.items():
            if key == "headers":
                if value != data.get("headers"):  # not the request's own, handed back
                    headers.update(self._headers(name, value))
            elif key == "drop":
                for field in value if isinstance(value, list) else [value]:
                    if field in out and field not in READ_KEEP:
                        del out[field]
                    elif field in READ_KEEP:
                        self._log(name, "warn", f"after_read may not drop '{field}': kept")
            elif key in data and data[key] == value:
                continue  # a hook that hands back the data table changes only what differs
            elif key in READ_REPLACEABLE:
                if key == "fields" and value == []:
                    value = {}
                if not isinstance(value, READ_REPLACEABLE[key]):
                    self._log(name, "warn", f"after_read: '{key}' must be "
                                            f"{'text' if READ_REPLACEABLE[key] is str else 'a table'}: ignored")
                    continue
                out[key] = value
            elif key in entry or key in FIELD_NAMES:
                self._log(name, "warn", f"after_read may not change '{key}': ignored")
            elif not key.startswith("_") and key not in data:
                self._log(name, "warn", f"after_read returned unknown field '{key}': ignored")
        return out

    def _headers(self, plugin: str, value) -> dict:
        """The response headers a read hook may set: plain names and values, none of the blocked ones."""
        if not isinstance(value, dict):
            return {}
        out = {}
        for k, v in value.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                v = str(v)
            if not (isinstance(k, str) and isinstance(v, str) and _HEADER_NAME.match(k)) or "\r" in v or "\n" in v \
                    or len(v) > 4096:
                self._log(plugin, "warn", f"read hook header {str(k)[:64]!r} is not a plain header: ignored")
                continue
            low = k.lower()
            if low in _BLOCKED_HEADERS or low.startswith("access-control-") or len(out) >= MAX_READ_HEADERS:
                self._log(plugin, "warn", f"read hook may not set the header '{k}': ignored")
                continue
            out[k] = v
        return out

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
            future = self._pool().submit(self._after_chain, event, chain, data, nesting.depth())
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

    def _after_chain(self, event: str, chain: list, data: dict, depth: int = 0):
        # the depth of the plugin write that caused this change, if any (nesting.py)
        with nesting.at_depth(depth):
            self._after_chain_at(event, chain, data)

    def _after_chain_at(self, event: str, chain: list, data: dict):
        timeout = self.settings.after_hook_timeout_ms / 1000.0
        for binding in chain:
            name = binding.plugin.name
            if binding.plugin.current is None or binding.plugin.hook_breaker.is_disabled(binding.key):
                continue
            started = time.perf_counter()
            try:
                self._run_shared(binding, dict(data, _table=table_name(binding, data["_table"])), timeout)
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
        if outcome in (OK, REFUSED):
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
