"""Structured plugin log: the last entries per plugin in memory, everything appended to .modula/logs."""
from __future__ import annotations

import collections
import json
import logging
import threading
from pathlib import Path

from ..storage import utc_now

log = logging.getLogger("modula.plugins")

LEVELS = ("debug", "info", "warn", "error")
KEEP = 500


class Logbook:
    def __init__(self, logs_dir: Path | None = None):
        self._entries: dict[str, collections.deque] = {}
        self._lock = threading.Lock()
        self._file = None
        self._listeners = []
        if logs_dir is not None:
            try:
                logs_dir.mkdir(parents=True, exist_ok=True)
                self._file = open(logs_dir / "plugins.log", "a", encoding="utf-8")
            except OSError as exc:
                log.warning("cannot open plugin log file in %s: %s", logs_dir, exc)

    def add_listener(self, fn):
        self._listeners.append(fn)

    def write(self, plugin: str, level: str, message: str, context=None):
        if level not in LEVELS:
            level = "info"
        entry = {"time": utc_now(), "plugin": plugin, "level": level, "message": message}
        if context:
            entry["context"] = context
        with self._lock:
            self._entries.setdefault(plugin, collections.deque(maxlen=KEEP)).append(entry)
            if self._file:
                try:
                    self._file.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
                    self._file.flush()
                except (OSError, ValueError):
                    pass
        log.log({"debug": 10, "info": 20, "warn": 30, "error": 40}[level], "[%s] %s", plugin, message)
        for fn in list(self._listeners):
            try:
                fn(entry)
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
