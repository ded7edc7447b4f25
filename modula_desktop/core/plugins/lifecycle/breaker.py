"""Circuit breakers: one per plugin (SPEC 6), and the per-hook abort counter."""
from __future__ import annotations

import threading
import time

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """Opens after max_failures consecutive failures; after reset_interval_s lets one probe through
    (half-open); a success closes it, a failure opens it again.

    Every ``allow()`` that returned True must be followed by ``success()``, ``failure()`` or
    ``release()`` (no verdict, e.g. no VM was free). A probe that never reports back anyway is
    presumed lost after ``probe_timeout_s`` (default: reset_interval_s) and another one is let through,
    so the breaker cannot stay wedged half-open.
    """

    def __init__(self, max_failures: int, reset_interval_s: float, clock=time.monotonic, on_trip=None,
                 probe_timeout_s: float | None = None):
        self.max_failures = max(1, max_failures)
        self.reset_interval_s = reset_interval_s
        self.probe_timeout_s = reset_interval_s if probe_timeout_s is None else probe_timeout_s
        self._clock = clock
        self._on_trip = on_trip
        self._lock = threading.Lock()
        self.failures = 0
        self.trips = 0
        self._state = CLOSED
        # closed with no failure counted: allow() lets a call through and success() has nothing to do.
        # Set under the lock, read without it by the hot path (PluginManager.serve_route) to skip both calls.
        self.quiet = True
        self.opened_at = 0.0
        self._probe_at: float | None = None  # when the half-open probe went out; None: none out

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == OPEN and self._clock() - self.opened_at >= self.reset_interval_s:
                return HALF_OPEN
            return self._state

    def allow(self) -> bool:
        if self._state == CLOSED:  # the common case, without the lock: a plain read under the GIL
            return True
        with self._lock:
            if self._state == CLOSED:
                return True
            now = self._clock()
            if self._state == OPEN:
                if now - self.opened_at < self.reset_interval_s:
                    return False
                self._state = HALF_OPEN
                self._probe_at = None
            if self._probe_at is not None and now - self._probe_at < self.probe_timeout_s:
                return False
            self._probe_at = now
            return True

    def success(self):
        if self._state == CLOSED and not self.failures:  # nothing to reset (a failure that races
            return  # with this read came after the success, and stays counted)
        with self._lock:
            self.failures = 0
            self._state = CLOSED
            self._probe_at = None
            self.quiet = True

    def failure(self):
        tripped = False
        with self._lock:
            self.failures += 1
            self.quiet = False
            if self._state == HALF_OPEN or (self._state == CLOSED and self.failures >= self.max_failures):
                self._state = OPEN
                self.opened_at = self._clock()
                self._probe_at = None
                self.trips += 1
                tripped = True
        if tripped and self._on_trip:
            self._on_trip()

    def release(self):
        """The call allowed by allow() ended without a verdict: a half-open probe may go out again."""
        with self._lock:
            if self._state == HALF_OPEN:
                self._probe_at = None

    def reset(self):
        self.success()

    def to_dict(self) -> dict:
        state = self.state
        with self._lock:
            return {"state": state, "consecutive_failures": self.failures, "trips": self.trips,
                    "max_failures": self.max_failures, "reset_interval_s": self.reset_interval_s,
                    "retry_in_s": max(0.0, self.reset_interval_s - (self._clock() - self.opened_at))
                    if self._state == OPEN else 0.0}


class HookBreaker:
    """Per (plugin, event, table): disabled after N consecutive aborts until reload or enable."""

    def __init__(self, max_aborts: int):
        self.max_aborts = max_aborts
        self._lock = threading.Lock()
        self._aborts: dict[tuple, int] = {}
        self._disabled: set[tuple] = set()

    def is_disabled(self, key) -> bool:
        return key in self._disabled

    def abort(self, key) -> bool:
        """Count an abort; True when this one disabled the hook."""
        with self._lock:
            n = self._aborts.get(key, 0) + 1
            self._aborts[key] = n
            if n >= self.max_aborts and key not in self._disabled:
                self._disabled.add(key)
                return True
            return False

    def success(self, key):
        with self._lock:
            self._aborts.pop(key, None)

    def reset(self):
        with self._lock:
            self._aborts.clear()
            self._disabled.clear()

    def to_dict(self) -> dict:
        with self._lock:
            return {"disabled": sorted(":".join(k) for k in self._disabled),
                    "consecutive_aborts": {":".join(k): n for k, n in self._aborts.items()}}
