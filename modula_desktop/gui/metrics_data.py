"""What the metrics view plots, computed from the app's prometheus registry. No Qt here.

Each tick reads the registry's cumulative totals; the difference to the previous tick gives rates per
second and, from histogram bucket deltas, latency percentiles over that interval.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

from ..core.metrics import quantile

HTTP_REQUESTS = "modula_plugin_http_requests"
HTTP_DURATION = "modula_plugin_http_request_duration_seconds"
HOOK_RUNS = "modula_plugin_hook_runs"
HOOK_DURATION = "modula_plugin_hook_duration_seconds"
ERRORS = "modula_plugin_errors"
BREAKER_TRIPS = "modula_plugin_circuit_breaker_trips"
BUDGET = "modula_plugin_budget_exhaustions"
RELOADS = "modula_plugin_reloads"
VMS = "modula_plugin_vms_available"


@dataclass
class Histogram:
    buckets: dict = field(default_factory=dict)  # upper bound -> cumulative count
    count: float = 0.0
    sum: float = 0.0

    def minus(self, older: "Histogram") -> "Histogram":
        return Histogram({le: n - older.buckets.get(le, 0.0) for le, n in self.buckets.items()},
                         self.count - older.count, self.sum - older.sum)

    def quantile(self, q: float) -> float | None:
        return quantile(self.buckets, q) if self.count > 0 else None

    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None


@dataclass
class Totals:
    """Cumulative totals at one moment."""

    time: float
    requests: dict = field(default_factory=dict)  # status class ("2xx", ...) -> count
    requests_by_plugin: dict = field(default_factory=dict)
    http: Histogram = field(default_factory=Histogram)
    hook_outcomes: dict = field(default_factory=dict)
    hooks: Histogram = field(default_factory=Histogram)
    errors: dict = field(default_factory=dict)  # kind -> count
    breaker_trips: float = 0.0
    budget: float = 0.0
    reloads: dict = field(default_factory=dict)
    vms: dict = field(default_factory=dict)  # plugin -> VMs available now


def read_totals(registry, now: float | None = None) -> Totals:
    """Sum the registry's samples into Totals (labels we do not chart are added up)."""
    t = Totals(time=time.time() if now is None else now)
    for family in registry.collect():
        for s in family.samples:
            name, labels, value = s.name, s.labels, s.value
            if name == HTTP_REQUESTS + "_total":
                status = str(labels.get("status", ""))
                cls = f"{status[0]}xx" if status[:1].isdigit() else "other"
                t.requests[cls] = t.requests.get(cls, 0.0) + value
                plugin = labels.get("plugin", "")
                t.requests_by_plugin[plugin] = t.requests_by_plugin.get(plugin, 0.0) + value
            elif name in (HTTP_DURATION + "_bucket", HOOK_DURATION + "_bucket"):
                h = t.http if name.startswith(HTTP_DURATION) else t.hooks
                le = float(labels["le"])
                h.buckets[le] = h.buckets.get(le, 0.0) + value
            elif name in (HTTP_DURATION + "_count", HOOK_DURATION + "_count"):
                (t.http if name.startswith(HTTP_DURATION) else t.hooks).count += value
            elif name in (HTTP_DURATION + "_sum", HOOK_DURATION + "_sum"):
                (t.http if name.startswith(HTTP_DURATION) else t.hooks).sum += value
            elif name == HOOK_RUNS + "_total":
                o = labels.get("outcome", "")
                t.hook_outcomes[o] = t.hook_outcomes.get(o, 0.0) + value
            elif name == ERRORS + "_total":
                k = labels.get("kind", "")
                t.errors[k] = t.errors.get(k, 0.0) + value
            elif name == BREAKER_TRIPS + "_total":
                t.breaker_trips += value
            elif name == BUDGET + "_total":
                t.budget += value
            elif name == RELOADS + "_total":
                o = labels.get("outcome", "")
                t.reloads[o] = t.reloads.get(o, 0.0) + value
            elif name == VMS:
                t.vms[labels.get("plugin", "")] = value
    return t


@dataclass
class Point:
    """One plotted moment: rates per second over the last interval, latencies in milliseconds."""

    time: float
    requests: dict  # "all", "4xx", "5xx" -> per second
    latency_ms: dict  # "HTTP p50", "HTTP p95", "Hook p50", "Hook p95" -> ms (absent: no observations)
    hook_outcomes: dict  # outcome -> per second
    errors: dict  # "errors", "breaker trips", "budget exhausted" -> per second
    vms: dict  # plugin -> VMs available


def _rate(new: float, old: float, dt: float) -> float:
    return max(0.0, new - old) / dt


def difference(new: Totals, old: Totals) -> Point:
    dt = max(new.time - old.time, 1e-3)
    req_all = sum(new.requests.values()) - sum(old.requests.values())
    requests = {"all": max(0.0, req_all) / dt}
    for cls in ("4xx", "5xx"):
        requests[cls] = _rate(new.requests.get(cls, 0.0), old.requests.get(cls, 0.0), dt)
    latency = {}
    for label, h in (("HTTP", new.http.minus(old.http)), ("Hook", new.hooks.minus(old.hooks))):
        for q in (0.5, 0.95):
            v = h.quantile(q)
            if v is not None:
                latency[f"{label} p{int(q * 100)}"] = v * 1000.0
    outcomes = {o: _rate(n, old.hook_outcomes.get(o, 0.0), dt) for o, n in new.hook_outcomes.items()}
    errors = {"errors": _rate(sum(new.errors.values()), sum(old.errors.values()), dt),
              "breaker trips": _rate(new.breaker_trips, old.breaker_trips, dt),
              "budget exhausted": _rate(new.budget, old.budget, dt)}
    return Point(new.time, requests, latency, outcomes, errors, dict(new.vms))


class MetricsHistory:
    """The last ``keep`` points. ``tick()`` reads the registry once and appends a point."""

    def __init__(self, metrics, keep: int = 300):
        self.metrics = metrics
        self.points: collections.deque[Point] = collections.deque(maxlen=keep)
        self._last: Totals | None = None
        self.latest: Totals | None = None

    def tick(self, now: float | None = None) -> Point | None:
        totals = read_totals(self.metrics.registry, now)
        self.latest = totals
        last, self._last = self._last, totals
        if last is None:
            return None
        point = difference(totals, last)
        self.points.append(point)
        return point

    def series(self, chart: str) -> dict[str, list[tuple[float, float]]]:
        """name -> [(time, value)] for one chart: requests, latency_ms, hook_outcomes, errors or vms."""
        out: dict[str, list] = {}
        for p in self.points:
            for name, value in getattr(p, chart).items():
                out.setdefault(name, []).append((p.time, value))
        return out


def condense(data: dict[str, list[tuple[float, float]]], keep: int,
             other: str = "mean of the other {n}") -> dict[str, list[tuple[float, float]]]:
    """At most keep + 1 lines for a per-plugin chart: the keep plugins with the fewest idle VMs now (those
    close to making callers wait), and the mean of the rest. Forty overlapping lines say nothing."""
    if len(data) <= keep + 1:
        return dict(data)
    ranked = sorted(data, key=lambda n: (data[n][-1][1] if data[n] else float("inf"), n))
    shown, rest = ranked[:keep], ranked[keep:]
    by_time: dict[float, list[float]] = {}
    for name in rest:
        for t, v in data[name]:
            by_time.setdefault(t, []).append(v)
    out = {name: data[name] for name in sorted(shown)}
    out[other.format(n=len(rest))] = [(t, sum(vs) / len(vs)) for t, vs in sorted(by_time.items())]
    return out


def isolated(points: list[tuple[float, float]], step: float) -> list[tuple[float, float]]:
    """The points with no neighbour within 1.5 steps: a line cannot show them, a marker must."""
    out = []
    for i, (t, v) in enumerate(points):
        before = i > 0 and t - points[i - 1][0] <= 1.5 * step
        after = i + 1 < len(points) and points[i + 1][0] - t <= 1.5 * step
        if not before and not after:
            out.append((t, v))
    return out
