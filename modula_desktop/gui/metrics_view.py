"""The metrics view: QtCharts line charts of the app's own prometheus numbers over time."""
from __future__ import annotations

import math

from PySide6.QtCharts import QChart, QChartView, QDateTimeAxis, QLineSeries, QScatterSeries, QValueAxis
from PySide6.QtCore import QDateTime, QMargins, QObject, QPointF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QDialog, QFormLayout, QGridLayout, QGroupBox, QLabel, QVBoxLayout

from .metrics_data import MetricsHistory, condense, isolated
from .resources import icon

WINDOW_S = 120  # seconds of history on screen
# eight colours apart in hue and lightness; a chart never has more lines than this (PER_PLUGIN_LINES)
PALETTE = ["#0a66c2", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#1b7c83", "#57606a"]
PER_PLUGIN_LINES = 6  # a per-plugin chart shows this many plugins and the mean of the others
OTHERS = "others (mean)"
FIXED_COLORS = {"all": "#0a66c2", "4xx": "#9a6700", "5xx": "#cf222e", "ok": "#1a7f37", "success": "#1a7f37",
                "abort": "#9a6700", "error": "#cf222e", "timeout": "#8250df", "errors": "#cf222e",
                "breaker trips": "#8250df", "budget exhausted": "#9a6700",
                "HTTP p50": "#0a66c2", "HTTP p95": "#54aeff", "Hook p50": "#1a7f37", "Hook p95": "#8250df"}

# chart key (a field of metrics_data.Point), title, y-axis label, series shown first (in this order)
CHARTS = (
    ("requests", "Plugin requests", "per second", ("all", "4xx", "5xx")),
    ("latency_ms", "Latency (per interval)", "milliseconds", ("HTTP p50", "HTTP p95", "Hook p50", "Hook p95")),
    ("hook_outcomes", "Hook runs by outcome", "per second", ("ok", "abort", "error", "timeout")),
    ("errors", "Errors", "per second", ("errors", "breaker trips", "budget exhausted")),
    ("vms", "VMs available", "idle VMs", ()),
)
# latency exists only in intervals with observations: a point without neighbours gets a marker
SPARSE = {"latency_ms"}
PER_PLUGIN = {"vms"}  # one line per plugin: condensed, legend on the side


TOTALS = (("requests", "Plugin requests:"), ("latency", "Mean latency:"), ("hooks", "Hook runs:"),
          ("errors", "Errors:"), ("trips", "Breaker trips:"), ("budget", "Budgets exhausted:"),
          ("reloads", "Reloads:"), ("vms", "VMs available now:"))


class MetricsRecorder(QObject):
    """Samples service.metrics every interval on the GUI thread (reading the registry is cheap) and keeps
    the history, so the view shows the recent past as soon as it opens."""

    sampled = Signal()

    def __init__(self, metrics, parent=None, interval_ms: int = 1000, keep: int = WINDOW_S * 2):
        super().__init__(parent)
        self.history = MetricsHistory(metrics, keep=keep)
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.tick)

    def start(self):
        self.history.tick()
        self.timer.start()

    def stop(self):
        self.timer.stop()

    def tick(self):
        if self.history.tick() is not None:
            self.sampled.emit()


class TimeChart(QChartView):
    """One chart: a line series per name, x = wall-clock time over the data of the last WINDOW_S seconds."""

    def __init__(self, key: str, title: str, unit: str, order=(), parent=None):
        chart = QChart()
        chart.setTitle(title)
        font = chart.titleFont()
        font.setBold(True)
        chart.setTitleFont(font)
        chart.setAnimationOptions(QChart.AnimationOption.NoAnimation)
        chart.legend().setAlignment(Qt.AlignmentFlag.AlignRight if key in PER_PLUGIN else Qt.AlignmentFlag.AlignBottom)
        chart.setMargins(QMargins(4, 4, 4, 4))
        chart.setBackgroundRoundness(4)
        super().__init__(chart, parent)
        self.key = key
        self.order = tuple(order)
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.setMinimumSize(340, 220)
        self.x_axis = QDateTimeAxis()
        self.x_axis.setFormat("hh:mm:ss")
        self.x_axis.setTickCount(5)
        self.y_axis = QValueAxis()
        self.y_axis.setTitleText(unit)
        self.y_axis.setLabelFormat("%.2g")
        self.y_axis.setRange(0, 1)
        self.y_axis.setTickCount(5)
        for axis, side in ((self.x_axis, Qt.AlignmentFlag.AlignBottom), (self.y_axis, Qt.AlignmentFlag.AlignLeft)):
            font = axis.labelsFont()
            font.setPointSizeF(max(7.0, font.pointSizeF() - 1))
            axis.setLabelsFont(font)
            chart.addAxis(axis, side)
        self.series: dict[str, QLineSeries] = {}
        self.markers: dict[str, QScatterSeries] = {}  # SPARSE charts: the points a line cannot show
        for name in self.order:  # a stable legend from the first tick
            self._series(name)

    def _attach(self, s):
        self.chart().addSeries(s)
        s.attachAxis(self.x_axis)
        s.attachAxis(self.y_axis)

    def _series(self, name: str) -> QLineSeries:
        s = self.series.get(name)
        if s is None:
            s = QLineSeries()
            s.setName(name)
            self._attach(s)
            self.series[name] = s
            if self.key in SPARSE:
                dots = QScatterSeries()
                dots.setName(name)
                dots.setMarkerSize(7)
                dots.setMarkerShape(QScatterSeries.MarkerShape.MarkerShapeCircle)
                self._attach(dots)
                for marker in self.chart().legend().markers(dots):
                    marker.setVisible(False)  # the line's legend entry names it already
                self.markers[name] = dots
        return s

    def _drop(self, name: str):
        for table in (self.series, self.markers):
            s = table.pop(name, None)
            if s is not None:
                self.chart().removeSeries(s)
                s.deleteLater()

    def colors(self) -> dict[str, str]:
        """Each shown line's colour: fixed for the named series, else by its place in the legend."""
        out, free = {}, [c for c in PALETTE if c not in FIXED_COLORS.values()] + PALETTE
        used = set()
        for name in self.series:
            fixed = FIXED_COLORS.get(name)
            if fixed:
                out[name] = fixed
                used.add(fixed)
        pool = [c for c in dict.fromkeys(free) if c not in used] or PALETTE
        i = 0
        for name in self.series:
            if name not in out:
                out[name] = pool[i % len(pool)]
                i += 1
        return out

    def update_from(self, data: dict[str, list[tuple[float, float]]], now: float, since: float | None = None):
        """since: the first sample of the history, where every chart's time axis begins."""
        start = now - WINDOW_S
        if self.key in PER_PLUGIN:
            data = condense(data, PER_PLUGIN_LINES, OTHERS)
        for name in [n for n in self.series if n not in data and n not in self.order]:
            self._drop(name)  # a plugin gone, or no longer among the ones shown
        known = [n for n in self.order if n in data]
        names = known + sorted(n for n in data if n not in known and n != OTHERS) + ([OTHERS] if OTHERS in data else [])
        top, first = 0.0, None
        for name in names:
            kept = [(t, v) for t, v in data[name] if t >= start]
            self._series(name).replace([QPointF(t * 1000.0, v) for t, v in kept])
            if name in self.markers:
                self.markers[name].replace([QPointF(t * 1000.0, v) for t, v in isolated(kept, _step(kept))])
            if kept:
                top = max(top, max(v for _, v in kept))
                first = kept[0][0] if first is None else min(first, kept[0][0])
        for name, color in self.colors().items():
            pen = QPen(QColor(color), 2)
            if name == OTHERS:
                pen.setStyle(Qt.PenStyle.DashLine)
            self.series[name].setPen(pen)
            if name in self.markers:
                self.markers[name].setColor(QColor(color))
                self.markers[name].setBorderColor(QColor(color))
        # the time axis spans the data, not an empty window before the first sample
        begin = since if since is not None else first
        left = start if begin is None else max(start, begin)
        if now - left < 10:
            left = now - 10
        self.x_axis.setRange(_datetime(left), _datetime(now))
        ceiling = _nice_ceiling(top)
        self.y_axis.setRange(0, ceiling)
        self.y_axis.setTickCount(_ticks(ceiling))
        self.y_axis.setLabelFormat(_label_format(ceiling / (_ticks(ceiling) - 1)))

    def point_count(self) -> int:
        return sum(s.count() for s in self.series.values())


def _label_format(step: float) -> str:
    """As many decimals as the tick step needs: 0, 2.5, 5 ... or 0, 25, 50 ..., never 3, 8."""
    for decimals in (0, 1, 2):
        if abs(step * 10 ** decimals - round(step * 10 ** decimals)) < 1e-9:
            return f"%.{decimals}f"
    return "%.3g"


def _step(points: list[tuple[float, float]]) -> float:
    """A series' own rhythm: the median gap between its points (a point far off it stands alone)."""
    gaps = sorted(b[0] - a[0] for a, b in zip(points, points[1:]) if b[0] > a[0])
    return gaps[len(gaps) // 2] if gaps else 1.0


def _datetime(seconds: float) -> QDateTime:
    return QDateTime.fromMSecsSinceEpoch(int(seconds * 1000))


def _nice_ceiling(value: float) -> float:
    """A round upper bound a little above value (1, 2, 5 x 10^n), at least 1."""
    if value <= 1:
        return 1.0
    target = value * 1.15
    magnitude = 10 ** len(str(int(target))) / 10
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= target:
            return step * magnitude
    return 10 * magnitude


def _ticks(ceiling: float) -> int:
    """Tick count giving round steps from 0 to ceiling (a 1, 2, 2.5 or 5 times a power of ten)."""
    mantissa = ceiling / 10 ** math.floor(math.log10(ceiling))
    return 5 if mantissa in (1, 2) else 6


class MetricsView(QDialog):
    """Non-modal window with five charts and a line of running totals."""

    def __init__(self, recorder: MetricsRecorder, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Metrics — Modula Desktop")
        self.setWindowIcon(icon("metrics"))
        self.setWindowFlag(Qt.WindowType.WindowMaximizeButtonHint, True)
        self.recorder = recorder
        self.charts = {key: TimeChart(key, title, unit, order, self) for key, title, unit, order in CHARTS}
        self.totals_box = QGroupBox("Totals since start", self)
        self.totals_box.setObjectName("MetricsTotals")
        form = QFormLayout(self.totals_box)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft)
        self.totals = {}
        for key, label in TOTALS:
            value = QLabel("0", self.totals_box)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.totals[key] = value
            form.addRow(label, value)
        self.note = QLabel(f"Sampled every second from the app's metrics; the last {WINDOW_S} s are shown. "
                           "The same numbers are served by the local server at /metrics.", self)
        self.note.setObjectName("MutedLabel")

        grid = QGridLayout()
        grid.setSpacing(8)
        keys = [c[0] for c in CHARTS]
        for i, key in enumerate(keys):
            grid.addWidget(self.charts[key], i // 2, i % 2)
        grid.addWidget(self.totals_box, len(keys) // 2, len(keys) % 2)
        layout = QVBoxLayout(self)
        layout.addLayout(grid, 1)
        layout.addWidget(self.note)
        self.resize(1060, 900)
        recorder.sampled.connect(self.refresh)
        self.refresh()

    def refresh(self):
        history = self.recorder.history
        if not self.isVisible() and history.points and self.property("_drawn"):
            return  # nothing to redraw while hidden; the next show() refreshes
        now = history.points[-1].time if history.points else (history.latest.time if history.latest else 0)
        since = history.points[0].time if history.points else None
        for key, chart in self.charts.items():
            chart.update_from(history.series(key), now, since)
        self.setProperty("_drawn", True)
        t = history.latest
        if t is not None:
            by_status = "  ".join(f"{k} {v:.0f}" for k, v in sorted(t.requests.items()) if v)
            outcomes = "  ".join(f"{k} {v:.0f}" for k, v in sorted(t.hook_outcomes.items()) if v)
            errors = "  ".join(f"{k} {v:.0f}" for k, v in sorted(t.errors.items()) if v)
            reloads = "  ".join(f"{k} {v:.0f}" for k, v in sorted(t.reloads.items()) if v)
            mean_http, mean_hook = t.http.mean(), t.hooks.mean()
            values = {
                "requests": f"{sum(t.requests.values()):.0f}" + (f"   ({by_status})" if by_status else ""),
                "latency": (f"HTTP {mean_http * 1000:.1f} ms" if mean_http is not None else "HTTP –")
                + "  ·  " + (f"hooks {mean_hook * 1000:.1f} ms" if mean_hook is not None else "hooks –"),
                "hooks": f"{sum(t.hook_outcomes.values()):.0f}" + (f"   ({outcomes})" if outcomes else ""),
                "errors": f"{sum(t.errors.values()):.0f}" + (f"   ({errors})" if errors else ""),
                "trips": f"{t.breaker_trips:.0f}",
                "budget": f"{t.budget:.0f}",
                "reloads": f"{sum(t.reloads.values()):.0f}" + (f"   ({reloads})" if reloads else ""),
                "vms": f"{sum(t.vms.values()):.0f} across {len(t.vms)} plugin{'s' if len(t.vms) != 1 else ''}",
            }
            for key, text in values.items():
                self.totals[key].setText(text)

    def showEvent(self, event):  # noqa: N802 - Qt override
        super().showEvent(event)
        self.refresh()
