"""Background work for the GUI: run a callable on a worker thread, get its result back on the GUI thread.

Qt objects are touched on the GUI thread only: the worker emits a queued signal carrying the result, and
the callbacks run in the :class:`TaskRunner`'s thread (the GUI thread it was created on).
"""
from __future__ import annotations

import itertools
import logging
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

log = logging.getLogger(__name__)


class _Relay(QObject):
    # token, ok, value (the result, or the exception)
    finished = Signal(int, bool, object)


class _Job(QRunnable):
    def __init__(self, token: int, fn: Callable[[], Any], relay: _Relay):
        super().__init__()
        self.setAutoDelete(True)
        self._token, self._fn, self._relay = token, fn, relay

    def run(self):
        try:
            value, ok = self._fn(), True
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the GUI thread
            value, ok = exc, False
        try:
            self._relay.finished.emit(self._token, ok, value)
        except RuntimeError:  # the runner was deleted meanwhile: nobody is waiting for the result
            log.debug("background task finished after its runner was deleted")


class TaskRunner(QObject):
    """Runs jobs on its own QThreadPool. ``busy_changed(bool)`` drives progress indicators."""

    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None, max_threads: int = 4):
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max_threads)
        self._relay = _Relay(self)
        self._relay.finished.connect(self._finished)
        self._callbacks: dict[int, tuple] = {}
        self._tokens = itertools.count(1)

    @property
    def busy(self) -> bool:
        return bool(self._callbacks)

    def run(self, fn: Callable[[], Any], on_done: Callable[[Any], None] | None = None,
            on_error: Callable[[BaseException], None] | None = None) -> int:
        """Start fn() on a worker thread; on_done(result) or on_error(exc) later run on the GUI thread."""
        token = next(self._tokens)
        was_busy = self.busy
        self._callbacks[token] = (on_done, on_error)
        self._pool.start(_Job(token, fn, self._relay))
        if not was_busy:
            self.busy_changed.emit(True)
        return token

    @Slot(int, bool, object)
    def _finished(self, token: int, ok: bool, value):
        on_done, on_error = self._callbacks.pop(token, (None, None))
        try:
            if ok and on_done is not None:
                on_done(value)
            elif not ok:
                if on_error is not None:
                    on_error(value)
                else:
                    log.error("background task failed", exc_info=value)
        finally:
            if not self.busy:
                self.busy_changed.emit(False)

    def wait(self, msecs: int = -1) -> bool:
        """Block until every job has finished (used on quit, before the service closes)."""
        return self._pool.waitForDone(msecs)
