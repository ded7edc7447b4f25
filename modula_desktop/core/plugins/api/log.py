"""Structured plugin log: the last entries per plugin in memory, everything appended to .modula/logs.

Bounded (SPEC 3.3, logs): an entry's message and context together take at most log_entry_max_bytes,
each plugin may write log_rate entries per second (a burst of log_burst) and what it writes beyond
that is counted and reported in one "n log entries dropped" entry, and plugins.log rotates at
log_max_bytes, keeping log_backups old files.
"""
from __future__ import annotations

import collections
import json
import logging
import threading
import time
from logging.handlers import RotatingFileHandler
from pathlib import Path

from lupa.lua54 import lua_type

from ...settings import PluginSettings
from ...storage import utc_now
from ..errors import ApiError, ConversionLimit

log = logging.getLogger("modula.plugins")

LEVELS = ("debug", "info", "warn", "error")
KEEP = 500
TRUNCATED = "… (truncated)"


def context_dropped(limit: int) -> str:
    """What an entry carries instead of a context larger than the entry may be."""
    return f"(context dropped: larger than {limit} bytes)"


def cap_message(message: str, limit: int) -> str:
    """message, cut to at most limit bytes of UTF-8 (marked as cut)."""
    if len(message) * 4 <= limit:  # short enough whatever its characters
        return message
    data = message.encode("utf-8", "surrogateescape")
    if len(data) <= limit:
        return message
    keep = max(0, limit - len(TRUNCATED.encode()))
    return data[:keep].decode("utf-8", "ignore") + TRUNCATED


def cap_entry(message: str, context, limit: int):
    """(message, context) within limit bytes together: the message is cut first, then a context that does
    not fit in what is left is replaced by a note (context_dropped)."""
    message = cap_message(message, limit)
    if context:
        room = limit - len(message.encode("utf-8", "surrogateescape"))
        try:
            size = len(json.dumps(context, ensure_ascii=False, default=str).encode("utf-8", "surrogateescape"))
        except (TypeError, ValueError, RecursionError):
            size = limit + 1
        if size > room:
            context = context_dropped(limit)
    return message, context


class _Bucket:
    """Log entries one plugin may still write now (a token bucket), and how many it lost."""

    __slots__ = ("tokens", "stamp", "dropped")

    def __init__(self, burst: float):
        self.tokens, self.stamp, self.dropped = burst, time.monotonic(), 0


class Logbook:
    def __init__(self, logs_dir: Path | None = None, settings: PluginSettings | None = None):
        s = settings if settings is not None else PluginSettings()
        self.entry_max_bytes = s.log_entry_max_bytes
        self.rate, self.burst = float(s.log_rate), float(max(1, s.log_burst))
        self._entries: dict[str, collections.deque] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._file = None
        self._listeners = []
        if logs_dir is not None:
            try:
                logs_dir.mkdir(parents=True, exist_ok=True)
                # one JSON entry per line; rotated by size (0: never)
                self._file = RotatingFileHandler(logs_dir / "plugins.log", maxBytes=s.log_max_bytes,
                                                 backupCount=max(1, s.log_backups), encoding="utf-8")
                self._file.handleError = lambda record: None  # a full disk must not stop the app
            except OSError as exc:
                log.warning("cannot open plugin log file in %s: %s", logs_dir, exc)

    def add_listener(self, fn):
        self._listeners.append(fn)

    def _admit(self, plugin: str) -> int | None:
        """None when the plugin is over its rate (the entry is dropped and counted), else how many
        entries were dropped before this one (0 mostly). Called holding the lock."""
        if self.rate <= 0:
            return 0
        b = self._buckets.get(plugin)
        if b is None:
            b = self._buckets[plugin] = _Bucket(self.burst)
        now = time.monotonic()
        b.tokens = min(self.burst, b.tokens + (now - b.stamp) * self.rate)
        b.stamp = now
        if b.tokens < 1:
            b.dropped += 1
            return None
        b.tokens -= 1
        dropped, b.dropped = b.dropped, 0
        return dropped

    def write(self, plugin: str, level: str, message: str, context=None):
        if level not in LEVELS:
            level = "info"
        message, context = cap_entry(str(message), context, self.entry_max_bytes)
        entry = {"time": utc_now(), "plugin": plugin, "level": level, "message": message}
        if context:
            entry["context"] = context
        written = []
        with self._lock:
            dropped = self._admit(plugin)
            if dropped is None:
                return
            if dropped:
                rate = f"{self.rate:g}"
                written.append({"time": entry["time"], "plugin": plugin, "level": "warn",
                                "message": f"{dropped} log entries dropped (more than {rate} per second)"})
            written.append(entry)
            for e in written:
                self._entries.setdefault(plugin, collections.deque(maxlen=KEEP)).append(e)
                if self._file:
                    line = json.dumps(e, ensure_ascii=False, default=str)
                    self._file.emit(logging.makeLogRecord({"msg": line, "args": None}))
        for e in written:
            log.log({"debug": 10, "info": 20, "warn": 30, "error": 40}[e["level"]], "[%s] %s", plugin, e["message"])
            for fn in list(self._listeners):
                try:
                    fn(e)
                except Exception:  # noqa: BLE001 - a listener must not break logging
                    log.exception("log listener failed")

    def entries(self, plugin: str, limit: int = 100) -> list[dict]:
        with self._lock:
            items = list(self._entries.get(plugin, ()))
        return items[-limit:]

    def close(self):
        with self._lock:
            if self._file:
                self._file.close()
                self._file = None


def lua_log(vm, level, msg, ctx):
    """log.debug/info/warn/error from Lua."""
    # converted here, not by host_function: an entry is capped (log_entry_max_bytes), so neither the
    # message nor the context is copied past the cap, however large it is in the VM
    limit = vm.settings.log_entry_max_bytes
    sb = vm.sandbox
    level = sb.from_lua(level)
    msg = sb.from_lua(msg[:limit + 1] if type(msg) is bytes else msg)
    if ctx is not None:
        if lua_type(ctx) != "table":
            raise ApiError("log: context must be a table")
        try:
            ctx = sb.from_lua(ctx, max_bytes=max(0, limit - len(msg)))
        except ConversionLimit:
            ctx = context_dropped(limit)
    if isinstance(ctx, list) and not ctx:
        ctx = None
    vm._emit(level, msg, ctx)
