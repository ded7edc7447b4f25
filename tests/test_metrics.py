"""SPEC 7 metrics: recorded where they happen, on the app's own registry, and the GUI's snapshot."""
from __future__ import annotations

import threading

from modula_desktop.core.metrics import Metrics, quantile
from test_manager import add, approve, call, svc, versioned, wait_until  # noqa: F401 - svc is a fixture

ROUTES = """
http.handle("GET", "/ok", function() return {json = {ok = true}} end)
http.handle("GET", "/boom", function() error("kaput") end)
http.handle("GET", "/hog", function()
  local t = {}
  for i = 1, 1e7 do t[i] = string.rep("x", 64) .. i end
end)
http.handle("GET", "/slow", function()
  local stop = os.clock() + 0.4
  while os.clock() < stop do end
  return {json = {ok = true}}
end)
"""


def sample(s, name, **labels):
    return s.metrics.sample(name, **labels)


def test_quantile_interpolates_inside_buckets():
    assert quantile({}, 0.5) is None
    assert quantile({0.1: 0.0, float("inf"): 0.0}, 0.5) is None
    buckets = {0.1: 50.0, 0.2: 100.0, float("inf"): 100.0}
    assert abs(quantile(buckets, 0.5) - 0.1) < 1e-9
    assert abs(quantile(buckets, 0.75) - 0.15) < 1e-9
    assert quantile({0.1: 0.0, float("inf"): 10.0}, 0.5) == 0.1  # beyond the last bound


def test_snapshot_sums_what_the_front_ends_chart():
    m = Metrics()
    m.http_requests.labels("a", "GET /x", "200").inc(3)
    m.http_requests.labels("b", "GET /y", "500").inc()
    for v in (0.001,) * 9 + (0.3,):
        m.http_duration.labels("a").observe(v)
    m.hook_runs.labels("a", "before_create", "ok").inc(2)
    m.hook_runs.labels("b", "before_create", "abort").inc()
    m.errors.labels("b", "error").inc()
    m.vms_available.labels("a").set(3)
    snap = m.snapshot()
    assert snap["requests"] == 4 and snap["requests_by_status"] == {"200": 3, "500": 1}
    assert snap["hook_runs"] == {"ok": 2, "abort": 1}
    assert snap["errors"] == 1 and snap["vms_available"] == {"a": 3}
    assert snap["latency_p50_s"] <= 0.001 < snap["latency_p95_s"] <= 0.5


def test_route_errors_budgets_and_breaker_trips_are_counted(svc):
    s = svc({"mx": ROUTES}, max_vms=2, memory_limit_mb=8, max_failures=3)
    approve(s, "mx")
    assert call(s, "mx", "/boom").status == 500
    assert sample(s, "modula_plugin_errors_total", plugin="mx", kind="error") == 1
    assert call(s, "mx", "/hog").kind == "memory"
    assert sample(s, "modula_plugin_budget_exhaustions_total", plugin="mx", kind="memory") == 1
    assert sample(s, "modula_plugin_errors_total", plugin="mx", kind="memory") == 1
    assert call(s, "mx", "/boom").status == 500  # the third consecutive failure
    assert sample(s, "modula_plugin_circuit_breaker_trips_total", plugin="mx", scope="plugin") == 1
    snap = s.metrics.snapshot()
    assert snap["errors"] == 3 and snap["breaker_trips"] == 1 and snap["budget_exhaustions"] == {"memory": 1}


def test_reloads_by_outcome_and_their_duration(svc, tmp_path):
    s = svc({"mx": versioned(1)})
    assert sample(s, "modula_plugin_reloads_total", plugin="mx", outcome="success") == 0  # start-up is no reload
    assert s.plugins.reload("mx")
    add(tmp_path, "mx", "broken(")
    assert not s.plugins.reload("mx")
    assert sample(s, "modula_plugin_reloads_total", plugin="mx", outcome="success") == 1
    assert sample(s, "modula_plugin_reloads_total", plugin="mx", outcome="failure") == 1
    assert sample(s, "modula_plugin_reload_duration_seconds_count", plugin="mx") == 2
    assert sample(s, "modula_plugin_errors_total", plugin="mx", kind="load") == 1
    assert s.metrics.snapshot()["reloads"] == {"success": 1, "failure": 1}


def test_vms_available_follows_the_serving_pool(svc, tmp_path):
    s = svc({"mx": ROUTES}, max_vms=3)
    approve(s, "mx")

    def gauge():
        return sample(s, "modula_plugin_vms_available", plugin="mx")

    assert gauge() == 3
    t = threading.Thread(target=call, args=(s, "mx", "/slow"))
    t.start()
    wait_until(lambda: gauge() == 2)
    t.join()
    assert gauge() == 3
    # an in-flight request on the old pool must not overwrite the new pool's number when it ends
    t = threading.Thread(target=call, args=(s, "mx", "/slow"))
    t.start()
    wait_until(lambda: gauge() == 2)
    assert s.plugins.reload("mx")
    assert gauge() == 3
    t.join()
    assert gauge() == 3
    s.plugins.disable("mx")
    assert "mx" not in s.metrics.snapshot()["vms_available"]


def test_export_uses_the_apps_own_registry(svc):
    s = svc({"mx": ROUTES})
    text = s.metrics.export().decode()
    for name in ("modula_plugin_http_requests", "modula_plugin_hook_runs", "modula_plugin_errors",
                 "modula_plugin_circuit_breaker_trips", "modula_plugin_reloads",
                 "modula_plugin_reload_duration_seconds", "modula_plugin_vms_available",
                 "modula_plugin_budget_exhaustions"):
        assert name in text
    assert "process_cpu_seconds_total" not in text  # not the global default registry


def test_queued_plugin_requests_are_counted_by_every_reader_and_none_is_lost_across_threads():
    from modula_desktop.core.metrics import HTTP_BATCH
    from modula_desktop.gui.metrics_data import read_totals

    m = Metrics()
    m.observe_http("p", "GET /a", 200, 0.002)
    m.observe_http("p", "GET /a", 500, 0.2)
    # a reader that only walks the registry (the GUI) sees the queued requests too
    totals = read_totals(m.registry)
    assert totals.requests == {"2xx": 1.0, "5xx": 1.0}
    assert m.sample("modula_plugin_http_request_duration_seconds_count", plugin="p") == 2

    per_thread = HTTP_BATCH * 3 + 7  # several batches flushed by the writers themselves, and a rest
    threads = [threading.Thread(target=lambda: [m.observe_http("q", "GET /b", 200, 0.001)
                                                for _ in range(per_thread)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(m._http_pending) < HTTP_BATCH  # the writers flushed as they went
    text = m.export().decode()
    assert f'modula_plugin_http_requests_total{{plugin="q",route="GET /b",status="200"}} {4 * per_thread}.0' in text
    assert m.snapshot()["requests"] == 4 * per_thread + 2


def test_batched_durations_land_in_the_same_buckets_as_one_observe_each():
    from prometheus_client import CollectorRegistry, Histogram

    from modula_desktop.core.metrics import LATENCY_BUCKETS

    values = [0.0, 0.0005, 0.00050001, 0.001, 0.002, 0.0025, 0.7, 10.0, 11.0, 1e-9] * 3
    m = Metrics()
    for v in values:
        m.observe_http("p", "GET /a", 200, v)
    reference = Histogram("ref", "reference", ["plugin"], buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    for v in values:
        reference.labels("p").observe(v)
    name = "modula_plugin_http_request_duration_seconds"
    for bound in list(LATENCY_BUCKETS) + [float("inf")]:
        le = "+Inf" if bound == float("inf") else str(float(bound))
        expected = reference.collect()[0]
        want = next(s.value for s in expected.samples if s.name == "ref_bucket" and s.labels["le"] == le)
        assert m.sample(name + "_bucket", plugin="p", le=le) == want, le
    assert abs(m.sample(name + "_sum", plugin="p") - sum(values)) < 1e-9
    assert m.sample(name + "_count", plugin="p") == len(values)
