"""Plugin route rate limit (SPEC 5, 6): a token bucket per client IP."""
from __future__ import annotations

import threading
import time


class RateLimiter:
    """``rate`` tokens per second, at most ``burst`` saved up. A rate of 0 turns the limit off."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic, max_clients: int = 10_000):
        self.rate = float(rate)
        self.burst = float(max(1, burst))
        self._clock = clock
        self._max_clients = max_clients
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # ip -> (tokens, last refill)

    def acquire(self, client: str) -> float:
        """Take one token. Returns 0 when allowed, else the seconds until a token is available."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[client] = (tokens, now)
            if len(self._buckets) > self._max_clients:
                self._shrink(now)
        return 0.0 if allowed else (1.0 - tokens) / self.rate

    def _shrink(self, now: float):
        # a bucket that has refilled completely is the same as no bucket at all
        full_after = self.burst / self.rate
        kept = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
        if len(kept) > self._max_clients:  # still too many: keep the most recently seen
            kept = dict(sorted(kept.items(), key=lambda kv: kv[1][1])[-(self._max_clients // 2):])
        self._buckets = kept
