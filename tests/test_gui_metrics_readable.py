"""Every metrics chart readable with 1 and with 40 plugins: a legend naming each line, distinct colours,
axes that follow the data, markers only where a line cannot show a point."""
from __future__ import annotations

import pytest

from modula_desktop.core.metrics import Metrics
from modula_desktop.gui.metrics_data import condense, isolated
from modula_desktop.gui.metrics_view import OTHERS, PER_PLUGIN_LINES, MetricsRecorder, MetricsView

pytestmark = pytest.mark.timeout(60)
T0 = 1_750_000_000.0


def traffic(plugins: int, seconds: int = 90) -> MetricsRecorder:
    """A real registry fed as the runtime feeds it, sampled once a simulated second."""
    m = Metrics()
    rec = MetricsRecorder(m)
    h = rec.history
    h.tick(now=T0)
    for i in range(1, seconds + 1):
        for p in range(plugins):
            name = f"plugin{p:02d}"
            m.vms_available.labels(name).set((p + i) % 5)
            if i < 60 or i % 10 == 0:  # busy, then a request now and then
                m.http_requests.labels(name, "GET /a", "200").inc(3)
                for k in range(3):
                    m.http_duration.labels(name).observe(0.002 * (k + 1))
            if i % 3 == 0:
                m.hook_runs.labels(name, "after_create", "ok").inc()
                m.hook_duration.labels(name, "after_create").observe(0.004)
        h.tick(now=T0 + i)
    return rec


def check_chart(chart, data):
    lines = list(chart.series.values())
    colours = [s.pen().color().name() for s in lines]
    assert len(set(colours)) == len(colours), (chart.key, colours)
    legend = [m for m in chart.chart().legend().markers() if m.isVisible()]
    assert sorted(m.label() for m in legend) == sorted(chart.series), chart.key
    assert not any(s.pointsVisible() for s in lines)  # no rows of markers along the lines
    top = max((v for pts in data.values() for _, v in pts), default=0)
    assert chart.y_axis.min() == 0 and top <= chart.y_axis.max() <= max(1.0, top) * 2.5, (chart.key, top)
    times = [t for pts in data.values() for t, _ in pts]
    if times:
        x_min = chart.x_axis.min().toMSecsSinceEpoch() / 1000
        x_max = chart.x_axis.max().toMSecsSinceEpoch() / 1000
        assert x_min <= min(times) + 1 and x_max >= max(times)
        assert x_min >= min(times) - 10  # no empty stretch before the first sample


@pytest.mark.parametrize("plugins", [1, 40])
def test_every_chart_is_readable(qtbot, plugins):
    rec = traffic(plugins)
    view = MetricsView(rec)
    qtbot.addWidget(view)
    view.show()
    qtbot.waitExposed(view)
    view.refresh()
    for key, chart in view.charts.items():
        data = rec.history.series(key)
        if key == "vms":
            data = condense(data, PER_PLUGIN_LINES, OTHERS)
        check_chart(chart, data)
    vms = view.charts["vms"]
    if plugins == 1:
        assert list(vms.series) == ["plugin00"]
    else:
        assert len(vms.series) == PER_PLUGIN_LINES + 1 and OTHERS in vms.series
        # the plugins shown are those with the fewest idle VMs now
        now = {f"plugin{p:02d}": (p + 90) % 5 for p in range(40)}
        assert all(now[n] == 0 for n in vms.series if n != OTHERS)
    # latency: only the lone points carry a marker, and the markers are not extra legend entries
    lat = view.charts["latency_ms"]
    for name, dots in lat.markers.items():
        kept = rec.history.series("latency_ms").get(name, [])
        assert dots.count() == len(isolated(kept, _median_gap(kept))) < max(1, len(kept))
        assert dots.color().name() == lat.series[name].pen().color().name()
    assert lat.markers["HTTP p50"].count() >= 1  # the sparse tail after the busy minute is visible
    view.grab().save(f"/tmp/gui2shots/metrics_{plugins}_plugins.png")


def _median_gap(points):
    gaps = sorted(b[0] - a[0] for a, b in zip(points, points[1:]))
    return gaps[len(gaps) // 2] if gaps else 1.0


def test_condense_keeps_the_plugins_nearest_to_running_out():
    data = {f"p{i}": [(1.0, float(i)), (2.0, float(i % 7))] for i in range(20)}
    out = condense(data, 3, OTHERS)
    assert list(out)[:3] == ["p0", "p14", "p7"] and OTHERS in out and len(out) == 4
    rest = [i % 7 for i in range(20) if f"p{i}" not in ("p0", "p7", "p14")]
    assert out[OTHERS][-1] == (2.0, sum(rest) / len(rest))
    assert condense({"a": [(1.0, 1.0)]}, 3) == {"a": [(1.0, 1.0)]}


def test_a_plugin_that_leaves_loses_its_line(qtbot):
    rec = traffic(3, seconds=5)
    view = MetricsView(rec)
    qtbot.addWidget(view)
    view.show()
    view.refresh()
    assert set(view.charts["vms"].series) == {"plugin00", "plugin01", "plugin02"}
    view.charts["vms"].update_from({"plugin00": [(T0 + 5, 1.0)]}, T0 + 5)
    assert set(view.charts["vms"].series) == {"plugin00"}
