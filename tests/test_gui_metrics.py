"""The metrics view: the numbers it derives from the registry, and charts that grow every tick."""
from __future__ import annotations

import pytest

from modula_desktop.core.metrics import Metrics
from modula_desktop.gui.metrics_data import MetricsHistory, read_totals
from modula_desktop.gui.metrics_view import MetricsRecorder, MetricsView, _nice_ceiling, _ticks
from test_gui_support import approve_all_hooks, service, site_root  # noqa: F401

pytestmark = pytest.mark.timeout(60)


def test_rates_and_interval_percentiles_from_the_registry():
    m = Metrics()
    h = MetricsHistory(m)
    assert h.tick(now=100.0) is None  # the first tick is the baseline
    m.http_requests.labels("p", "GET /a", "200").inc(8)
    m.http_requests.labels("p", "GET /a", "503").inc(2)
    for v in (0.001, 0.002, 0.002, 0.003):
        m.http_duration.labels("p").observe(v)
    m.hook_runs.labels("p", "before_publish", "abort").inc(3)
    m.errors.labels("p", "timeout").inc()
    m.vms_available.labels("p").set(3)
    point = h.tick(now=102.0)
    assert point.requests == {"all": 5.0, "4xx": 0.0, "5xx": 1.0}
    assert point.hook_outcomes == {"abort": 1.5}
    assert point.errors["errors"] == 0.5
    assert point.vms == {"p": 3.0}
    assert 1.0 <= point.latency_ms["HTTP p50"] <= 2.5 and point.latency_ms["HTTP p95"] <= 5.0
    assert "Hook p50" not in point.latency_ms  # no hook ran: no latency, not a zero
    # the next interval has no requests: rates fall to zero, latency is absent
    point = h.tick(now=103.0)
    assert point.requests["all"] == 0.0 and "HTTP p50" not in point.latency_ms
    assert len(h.series("requests")["all"]) == 2
    totals = read_totals(m.registry)
    assert sum(totals.requests.values()) == 10 and totals.http.count == 4


def test_axis_helpers():
    assert _nice_ceiling(0) == 1 and _nice_ceiling(4) == 5 and _nice_ceiling(9) == 20
    assert _ticks(5) == 6 and _ticks(2) == 5 and _ticks(1) == 5


def test_metrics_view_samples_and_adds_chart_points(qtbot, service):
    approve_all_hooks(service, "guard")
    recorder = MetricsRecorder(service.metrics, interval_ms=50)
    view = MetricsView(recorder)
    qtbot.addWidget(view)
    view.show()
    recorder.start()
    try:
        qtbot.waitUntil(lambda: view.charts["requests"].point_count() >= 3, timeout=5000)
        before = view.charts["requests"].point_count()
        qtbot.waitUntil(lambda: view.charts["requests"].point_count() > before, timeout=5000)
        # a hook run (the guard's before_update runs and allows the change) shows up as an "ok" point
        e = service.content.create({"type": "page", "title": "Hello", "body": ""})
        service.content.update(e["id"], {"body": "changed"})
        qtbot.waitUntil(lambda: any(v > 0 for _, v in recorder.history.series("hook_outcomes").get("ok", [])),
                        timeout=5000)
        qtbot.waitUntil(lambda: view.charts["hook_outcomes"].series["ok"].count() > 0, timeout=5000)
        assert view.charts["latency_ms"].series["Hook p50"].count() >= 1
        assert set(view.charts["vms"].series) == {"guard", "pinger"}
        assert "(ok 1)" in view.totals["hooks"].text()
        assert view.charts["vms"].y_axis.max() >= 3
    finally:
        recorder.stop()
