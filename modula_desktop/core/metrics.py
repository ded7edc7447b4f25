"""SPEC 7: the app's own prometheus_client registry. The server exports it; the GUI reads it."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry(auto_describe=True)
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

    def export(self) -> bytes:
        return generate_latest(self.registry)

    def sample(self, name: str, **labels) -> float:
        """Current value of one sample (0 when absent): handy for the GUI and tests."""
        value = self.registry.get_sample_value(name, labels or None)
        return value or 0.0
