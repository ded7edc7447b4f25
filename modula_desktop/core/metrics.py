"""SPEC 7: the app's own prometheus_client registry. The server exports it; the GUI reads it.

Where each metric is recorded: plugin HTTP requests and their duration by the HTTP server; hook runs,
their duration and hook errors/budgets/hook-breaker trips by the hook dispatcher; route errors, budget
exhaustions, plugin-breaker trips, reloads and their duration, and VMs available by the plugin manager
and its VM pools.
"""
from __future__ import annotations

import bisect
import collections
import math
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# queued plugin requests added to the metrics at a time (see Metrics.observe_http)
HTTP_BATCH = 256
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _Flush:
    """A collector with no metrics of its own: collecting it adds the queued plugin requests."""

    def __init__(self, metrics: "Metrics"):
        self._metrics = metrics

    def describe(self):
        return []

    def collect(self):
        self._metrics.flush()
        return []


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry(auto_describe=True)
        self._http_pending: collections.deque = collections.deque()
        self._flush_lock = threading.Lock()
        # first in the registry: whoever collects it (export, the GUI) sees the queued requests too
        r.register(_Flush(self))
        self.http_requests = Counter("modula_plugin_http_requests", "Plugin HTTP requests",
                                     ["plugin", "route", "status"], registry=r)
        self.http_duration = Histogram("modula_plugin_http_request_duration_seconds", "Plugin HTTP request duration",
                                       ["plugin"], buckets=LATENCY_BUCKETS, registry=r)
        self.hook_runs = Counter("modula_plugin_hook_runs", "Hook runs", ["plugin", "event", "outcome"], registry=r)
        self.hook_duration = Histogram("modula_plugin_hook_duration_seconds", "Hook run duration",
                                       ["plugin", "event"], buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("modula_plugin_errors", "Plugin errors", ["plugin", "kind"], registry=r)
        self.breaker_trips = Counter("modula_plugin_circuit_breaker_trips", "Circuit breaker trips",
                                     ["plugin", "scope"], registry=r)
        self.reloads = Counter("modula_plugin_reloads", "Plugin reloads", ["plugin", "outcome"], registry=r)
        self.reload_duration = Histogram("modula_plugin_reload_duration_seconds", "Plugin reload duration",
                                         ["plugin"], buckets=LATENCY_BUCKETS + (30, 60), registry=r)
        self.vms_available = Gauge("modula_plugin_vms_available", "Idle VMs per plugin", ["plugin"], registry=r)
        self.budget_exhaustions = Counter("modula_plugin_budget_exhaustions", "Budget exhaustions",
                                          ["plugin", "kind"], registry=r)
        # the request module (outbound HTTP): domain is an approved domain or "(unapproved)"
        self.outbound_requests = Counter("modula_plugin_outbound_requests", "Plugin outbound HTTP requests",
                                         ["plugin", "domain", "outcome"], registry=r)
        self.outbound_duration = Histogram("modula_plugin_outbound_request_duration_seconds",
                                           "Plugin outbound HTTP request duration", ["plugin"],
                                           buckets=LATENCY_BUCKETS, registry=r)

    # ---- plugin HTTP requests: the hot path --------------------------------------------------
    def observe_http(self, plugin: str, route: str, status: int, seconds: float):
        """Count one plugin request and its duration. Queued (an append, no lock) and added to the
        metrics in batches: when the queue is long, and before anything reads them."""
        pending = self._http_pending
        pending.append((plugin, route, status, seconds))
        if len(pending) >= HTTP_BATCH:
            self.flush()

    def flush(self):
        """Add the queued plugin requests to their metrics."""
        pending = self._http_pending
        with self._flush_lock:
            counts: dict = {}
            durations: dict = {}
            while pending:
                try:
                    plugin, route, status, seconds = pending.popleft()
                except IndexError:
                    break
                key = (plugin, route, status)
                counts[key] = counts.get(key, 0) + 1
                durations.setdefault(plugin, []).append(seconds)
            for (plugin, route, status), n in counts.items():
                self.http_requests.labels(plugin, route, str(status)).inc(n)
            for plugin, values in durations.items():
                _observe_many(self.http_duration.labels(plugin), values)

    def export(self) -> bytes:
        self.flush()
        return generate_latest(self.registry)

    def sample(self, name: str, **labels) -> float:
        """Current value of one sample (0 when absent): handy for the GUI and tests."""
        self.flush()
        value = self.registry.get_sample_value(name, labels or None)
        return value or 0.0

    def snapshot(self) -> dict:
        """Current totals as plain data, for charts: the GUI samples this every few seconds.

        requests / errors / breaker_trips: totals; requests_by_status: {status: n};
        hook_runs: {outcome: n}; reloads: {outcome: n}; budget_exhaustions: {kind: n};
        vms_available: {plugin: n}; latency_p50_s / latency_p95_s: estimates over every plugin
        request so far from the histogram buckets (None before the first request).
        """
        out = {"requests": 0.0, "requests_by_status": {}, "errors": 0.0, "errors_by_kind": {}, "hook_runs": {},
               "breaker_trips": 0.0, "reloads": {}, "budget_exhaustions": {}, "vms_available": {},
               "latency_p50_s": None, "latency_p95_s": None}
        buckets: dict[float, float] = {}
        self.flush()

        def add(d, key, v):
            d[key] = d.get(key, 0.0) + v

        for family in self.registry.collect():
            for s in family.samples:
                v, lb = s.value, s.labels
                if s.name == "modula_plugin_http_requests_total":
                    out["requests"] += v
                    add(out["requests_by_status"], lb["status"], v)
                elif s.name == "modula_plugin_errors_total":
                    out["errors"] += v
                    add(out["errors_by_kind"], lb["kind"], v)
                elif s.name == "modula_plugin_hook_runs_total":
                    add(out["hook_runs"], lb["outcome"], v)
                elif s.name == "modula_plugin_circuit_breaker_trips_total":
                    out["breaker_trips"] += v
                elif s.name == "modula_plugin_reloads_total":
                    add(out["reloads"], lb["outcome"], v)
                elif s.name == "modula_plugin_budget_exhaustions_total":
                    add(out["budget_exhaustions"], lb["kind"], v)
                elif s.name == "modula_plugin_vms_available":
                    out["vms_available"][lb["plugin"]] = v
                elif s.name == "modula_plugin_http_request_duration_seconds_bucket":
                    add(buckets, float(lb["le"]), v)
        out["latency_p50_s"] = quantile(buckets, 0.5)
        out["latency_p95_s"] = quantile(buckets, 0.95)
        return out


def _observe_many(child, values: list):
    """Histogram.observe for each value, with each bucket's lock taken once per batch instead of once
    per value (prometheus_client's child keeps its bounds, buckets and sum in these attributes; without
    them, one observe() per value)."""
    try:
        bounds, buckets, total = child._upper_bounds, child._buckets, child._sum
    except AttributeError:  # pragma: no cover - another prometheus_client layout
        for v in values:
            child.observe(v)
        return
    counts = [0] * len(bounds)
    for v in values:
        counts[bisect.bisect_left(bounds, v)] += 1  # the first bound >= v, as observe() picks it
    total.inc(sum(values))
    for i, n in enumerate(counts):
        if n:
            buckets[i].inc(n)


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """Estimate a quantile from cumulative histogram buckets {upper bound: count} the way Prometheus'
    histogram_quantile does: linear interpolation inside the bucket that holds it."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower  # beyond the last finite bucket: its bound is the best we can say
            inside = count - below
            if inside <= 0:
                return upper
            return lower + (upper - lower) * (rank - below) / inside
        lower, below = upper, count
    return lower
