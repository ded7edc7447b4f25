"""Light and dark: follows the system (QStyleHints.colorScheme, Qt 6.5+) unless View > Theme says
otherwise; the choice is remembered in QSettings ("view/theme").

A theme is a QPalette (Fusion's, so every native widget follows it), the stylesheet (style.qss, plus
style-dark.qss over it for dark) for our own named widgets, the QtCharts theme, and CSS for the
Markdown previews. Widgets that paint colours of their own (the highlighter, the revision diff) ask
``is_dark()`` and listen for palette changes.
"""
from __future__ import annotations

import logging

from PySide6.QtCore import QObject, QSettings, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QStyleFactory

from ..core.paths import RESOURCES

log = logging.getLogger(__name__)

MODES = (("system", "Follow the System"), ("light", "Light"), ("dark", "Dark"))
SETTINGS_KEY = "view/theme"

# GitHub-like dark colours: text on window ≈ 13:1, muted text ≈ 6:1
DARK = {
    QPalette.ColorRole.Window: "#1f2328",
    QPalette.ColorRole.WindowText: "#e6edf3",
    QPalette.ColorRole.Base: "#161b22",
    QPalette.ColorRole.AlternateBase: "#21262d",
    QPalette.ColorRole.ToolTipBase: "#2d333b",
    QPalette.ColorRole.ToolTipText: "#e6edf3",
    QPalette.ColorRole.PlaceholderText: "#8b949e",
    QPalette.ColorRole.Text: "#e6edf3",
    QPalette.ColorRole.Button: "#2d333b",
    QPalette.ColorRole.ButtonText: "#e6edf3",
    QPalette.ColorRole.BrightText: "#ff7b72",
    QPalette.ColorRole.Light: "#3d444d",
    QPalette.ColorRole.Midlight: "#30363d",
    QPalette.ColorRole.Mid: "#262c33",
    QPalette.ColorRole.Dark: "#0d1117",
    QPalette.ColorRole.Shadow: "#010409",
    QPalette.ColorRole.Highlight: "#1f6feb",
    QPalette.ColorRole.HighlightedText: "#ffffff",
    QPalette.ColorRole.Link: "#58a6ff",
    QPalette.ColorRole.LinkVisited: "#bc8cff",
}
DARK_DISABLED = {
    QPalette.ColorRole.WindowText: "#6e7681",
    QPalette.ColorRole.Text: "#6e7681",
    QPalette.ColorRole.ButtonText: "#6e7681",
    QPalette.ColorRole.Base: "#1a1f26",
    QPalette.ColorRole.Button: "#262c33",
    QPalette.ColorRole.Highlight: "#30363d",
}

# appended to the previews' CSS in dark (a later rule wins in QTextDocument's CSS as in a browser)
PREVIEW_DARK_CSS = """
body { color: #e6edf3; }
a { color: #58a6ff; }
code { background-color: #2d333b; }
pre { background-color: #22272e; }
blockquote { color: #9198a1; }
th, td { border: 1px solid #444c56; }
th { background-color: #2d333b; color: #e6edf3; }
"""


def dark_palette() -> QPalette:
    palette = QPalette()
    for role, colour in DARK.items():
        palette.setColor(QPalette.ColorGroup.All, role, QColor(colour))
    for role, colour in DARK_DISABLED.items():
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor(colour))
    return palette


def is_dark(palette: QPalette | None = None) -> bool:
    """Whether the palette (default: the application's) is a dark one."""
    palette = palette if palette is not None else QGuiApplication.palette()
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def system_scheme() -> str:
    hints = QGuiApplication.styleHints()
    scheme = getattr(hints, "colorScheme", None)
    if scheme is not None and scheme() == Qt.ColorScheme.Dark:
        return "dark"
    return "light"


def stylesheet(scheme: str) -> str:
    parts = []
    for name in ("style.qss",) + (("style-dark.qss",) if scheme == "dark" else ()):
        try:
            parts.append((RESOURCES / name).read_text(encoding="utf-8"))
        except OSError:
            log.warning("no stylesheet at %s", RESOURCES / name)
    return "\n".join(parts)


def style_preview(preview, dark: bool | None = None, rerender: bool = True):
    """Give a MarkdownPreview the CSS of the theme (and render its text again with it): the CSS the
    preview set up for itself, with the dark overrides after it."""
    dark = is_dark() if dark is None else dark
    base = preview.property("modula_light_css")
    if base is None:
        base = preview.document().defaultStyleSheet()
        preview.setProperty("modula_light_css", base)
    preview.document().setDefaultStyleSheet(base + (PREVIEW_DARK_CSS if dark else ""))
    if rerender:
        preview.render_now()


ICON_GREY = "#3d4650"  # the strokes of resources/icons/*.svg, too dark on a dark toolbar
ICON_GREY_DARK = "#c9d1d9"


def themed_icon(name: str, dark: bool | None = None):
    """The icon of resources/icons/<name>.svg, its grey strokes lightened in the dark theme."""
    from PySide6.QtCore import QByteArray, QRectF
    from PySide6.QtGui import QIcon, QImage, QPainter, QPixmap
    from PySide6.QtSvg import QSvgRenderer

    from .resources import icon

    dark = is_dark() if dark is None else dark
    path = RESOURCES / "icons" / f"{name}.svg"
    if not dark or not path.is_file():
        return icon(name)
    data = path.read_text(encoding="utf-8").replace(ICON_GREY, ICON_GREY_DARK)
    renderer = QSvgRenderer(QByteArray(data.encode("utf-8")))
    out = QIcon()
    for size in (16, 20, 24, 32, 48):
        image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
        image.fill(0)
        painter = QPainter(image)
        renderer.render(painter, QRectF(0, 0, size, size))
        painter.end()
        out.addPixmap(QPixmap.fromImage(image))
    return out


def style_chart(chart, dark: bool | None = None):
    """QChart.ChartThemeDark / ChartThemeLight, keeping the series' own colours and the fonts (setTheme
    resets both)."""
    from PySide6.QtCharts import QChart

    dark = is_dark() if dark is None else dark
    theme = QChart.ChartTheme.ChartThemeDark if dark else QChart.ChartTheme.ChartThemeLight
    if chart.theme() == theme:
        return
    pens = [(s, s.pen()) for s in chart.series() if hasattr(s, "pen")]
    title_font = chart.titleFont()
    axis_fonts = [(a, a.labelsFont(), a.titleFont()) for a in chart.axes()]
    legend_font = chart.legend().font()
    chart.setTheme(theme)
    for s, pen in pens:
        s.setPen(pen)
    chart.setTitleFont(title_font)
    for a, labels, title in axis_fonts:
        a.setLabelsFont(labels)
        a.setTitleFont(title)
    chart.legend().setFont(legend_font)


_NATIVE: dict[int, tuple[str, QPalette]] = {}
_APPLIED: dict[int, str] = {}  # the scheme each application shows now


def _native(app) -> tuple[str, QPalette]:
    # taken once per application, before any theme replaced them (a second window must not take the
    # dark palette of the first for the native one)
    key = id(app)
    if key not in _NATIVE:
        _NATIVE[key] = (app.style().name(), QPalette(app.palette()))
    return _NATIVE[key]


class ThemeManager(QObject):
    """Applies and remembers the theme for the whole application."""

    changed = Signal(str)  # "light" or "dark"

    def __init__(self, app: QApplication | None = None, settings: QSettings | None = None, parent=None,
                 system=None):
        super().__init__(parent)
        self.app = app or QApplication.instance()
        # what the desktop asks for; a platform without a colour scheme (offscreen) reports light
        self.system = system or system_scheme
        self.settings = settings if settings is not None else QSettings()
        self._native_style, self._native_palette = _native(self.app)
        mode = self.settings.value(SETTINGS_KEY, "system")
        self.mode = mode if mode in dict(MODES) else "system"
        self.scheme = ""
        hints = QGuiApplication.styleHints()
        if hasattr(hints, "colorSchemeChanged"):
            hints.colorSchemeChanged.connect(self._system_changed)

    def resolved(self) -> str:
        return self.system() if self.mode == "system" else self.mode

    def set_mode(self, mode: str):
        if mode not in dict(MODES):
            raise ValueError(f"unknown theme {mode!r}")
        self.mode = mode
        self.settings.setValue(SETTINGS_KEY, mode)
        self.settings.sync()
        self.apply()

    def _system_changed(self, *_):
        if self.mode == "system":
            self.apply()

    def apply(self, force: bool = False):
        """Make the application look as the mode says. Only what differs is set again: a stylesheet or
        palette set on the application repolishes every widget (a tenth of a second at start-up)."""
        scheme = self.resolved()
        if scheme == self.scheme and not force:
            return
        self.scheme = scheme
        if scheme == "dark":
            style, palette = "Fusion", dark_palette()
        elif self.mode == "light" and self.system() == "dark":
            style, palette = "Fusion", None
        else:
            style, palette = self._native_style, self._native_palette
        if self.app.style().name().lower() != style.lower():
            self.app.setStyle(QStyleFactory.create(style) or self.app.style())
        palette = palette if palette is not None else self.app.style().standardPalette()
        if self.app.palette() != palette:
            self.app.setPalette(palette)
        sheet = stylesheet(scheme)
        if self.app.styleSheet() != sheet:
            self.app.setStyleSheet(sheet)
        previous = _APPLIED.get(id(self.app), "light")  # an application starts with the native look
        _APPLIED[id(self.app)] = scheme
        if previous != scheme:
            self.restyle_all(scheme == "dark")
        self.changed.emit(scheme)

    def restyle_all(self, dark: bool):
        from PySide6.QtCharts import QChartView

        from .preview import MarkdownPreview

        for w in self.app.allWidgets():
            if isinstance(w, MarkdownPreview):
                style_preview(w, dark)
            elif isinstance(w, QChartView):
                style_chart(w.chart(), dark)
