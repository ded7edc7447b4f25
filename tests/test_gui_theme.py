"""Issue 14 §3, the dark theme: follows the system, View > Theme overrides and is remembered, and every
widget we colour (message bars, pills, labels, checkboxes, editor, previews, charts, diff) is readable
in both palettes: measured on the rendered pixels (contrast of text on its background, WCAG)."""
from __future__ import annotations

import pytest
from PySide6.QtCharts import QChart
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QColor, QGuiApplication
from PySide6.QtWidgets import QApplication, QTabWidget

from modula_desktop.gui.markdown_syntax import COLOURS
from modula_desktop.gui.theme import SETTINGS_KEY, ThemeManager, is_dark
from test_gui_support import approve_all_hooks, service, site_root, wait_idle, window  # noqa: F401

pytestmark = pytest.mark.timeout(60)
AA = 4.5  # WCAG AA for normal text


@pytest.fixture(autouse=True)
def private_settings(tmp_path):
    """QSettings() of the windows here write to tmp_path, never the user's; the app ends light."""
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    yield
    settings = QSettings()
    settings.remove(SETTINGS_KEY)
    settings.sync()
    ThemeManager(settings=settings).apply(force=True)
    QSettings.setDefaultFormat(QSettings.Format.NativeFormat)


def luminance(c) -> float:
    def ch(v):
        v = v / 255.0
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4
    return 0.2126 * ch(c.red()) + 0.7152 * ch(c.green()) + 0.0722 * ch(c.blue())


def ratio(a, b) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def rendered_contrast(widget, rect=None) -> float:
    """Contrast of the rendered text with its background: the most common colour is the background,
    the colour that differs most from it is the ink."""
    QApplication.processEvents()
    image = (widget.grab(rect) if rect is not None else widget.grab()).toImage()
    counts: dict = {}
    for y in range(0, image.height()):
        for x in range(0, image.width()):
            rgb = image.pixel(x, y) & 0xFFFFFF
            counts[rgb] = counts.get(rgb, 0) + 1
    from PySide6.QtGui import QColor

    background = QColor(max(counts, key=counts.get))
    return max(ratio(background, QColor(rgb)) for rgb in counts)


def both(window):
    for mode in ("light", "dark"):
        window.set_theme(mode)
        QApplication.processEvents()
        yield mode


# ---- choosing the theme -------------------------------------------------------------------------
def test_view_menu_offers_three_choices_and_remembers_the_choice(qtbot, window, service):
    titles = [a.text() for a in window.theme_menu.actions()]
    assert titles == ["Follow the System", "Light", "Dark"]
    assert window.theme_actions["system"].isChecked(), "the default follows the system"
    window.theme_actions["dark"].trigger()
    assert is_dark() and window.theme_actions["dark"].isChecked() and not window.theme_actions["system"].isChecked()
    assert QSettings().value(SETTINGS_KEY) == "dark"
    assert "style-dark.qss" in QApplication.instance().styleSheet() or "#42181c" in QApplication.instance().styleSheet()
    from modula_desktop.gui.main_window import MainWindow

    second = MainWindow(service)  # the next start
    try:
        assert second.theme.mode == "dark" and is_dark()
    finally:
        second.shutdown()
        second.close()
        second.deleteLater()
    window.theme_actions["light"].trigger()
    assert not is_dark() and QSettings().value(SETTINGS_KEY) == "light"


def test_system_mode_follows_the_desktops_colour_scheme(qtbot, window):
    desktop = {"scheme": "dark"}
    window.theme.system = lambda: desktop["scheme"]
    window.set_theme("system")
    assert is_dark()
    hints = QGuiApplication.styleHints()
    desktop["scheme"] = "light"
    hints.colorSchemeChanged.emit(Qt.ColorScheme.Light)  # what Qt sends when the desktop switches
    assert not is_dark()
    window.set_theme("dark")
    desktop["scheme"] = "light"
    hints.colorSchemeChanged.emit(Qt.ColorScheme.Light)
    assert is_dark(), "an explicit choice is not overridden by the system"


# ---- readable in both --------------------------------------------------------------------------
def test_message_bars_pills_and_labels_are_readable_in_both(qtbot, window, service):
    e = service.content.create({"title": "Readable", "body": "text"})
    window.list.refresh()
    window.open_entry(e["id"])
    editor = window.editor
    editor.body.setPlainText("text, edited")  # shows the dirty label
    editor.restore_bar.label.setText("Unsaved changes to “Readable” were kept.")
    editor.restore_bar.show()
    for mode in both(window):
        for kind in ("info", "warning", "error"):
            editor.message_bar.show_message("A hook said no.", kind, "Could not save.")
            bar = editor.message_bar
            label = bar.findChild(type(editor.word_count), "MessageBarText")
            assert rendered_contrast(bar, label.geometry()) >= AA, (mode, kind)
        for status in ("published", "draft", "new", "failed", "running"):
            editor._badge(status, status.capitalize())
            assert rendered_contrast(editor.status_badge) >= AA, (mode, status)
        for w in (editor.dirty_label, editor.meta, editor.word_count, editor.title):
            assert rendered_contrast(w) >= AA, (mode, w.objectName() or w)
        assert rendered_contrast(editor.restore_bar, editor.restore_bar.label.geometry()) >= AA, mode
        viewport = editor.body.viewport()
        assert rendered_contrast(viewport, viewport.rect().adjusted(0, 0, 0, -viewport.height() + 40)) >= AA, mode


def test_checkboxes_of_the_plugin_manager_are_readable_in_both(qtbot, window, service):
    route = service.plugins.info("pinger")["routes"][0]
    service.approvals.approve_route("pinger", route["method"], route["path"], bool(route["public"]))
    dialog = window.show_plugins()
    qtbot.waitUntil(dialog.isVisible)
    for mode in both(window):
        dialog.select("pinger")
        for tabs in dialog.findChildren(QTabWidget):
            if tabs.indexOf(dialog.routes) >= 0:
                tabs.setCurrentWidget(dialog.routes)
        table = dialog.routes.table
        QApplication.processEvents()
        assert table.item(0, 0).checkState() == Qt.CheckState.Checked
        cell = table.visualItemRect(table.item(0, 0))
        # the tick against its box: a non-text control needs 3:1 (WCAG 1.4.11)
        assert rendered_contrast(table.viewport(), cell) >= 3.0, mode
        assert rendered_contrast(table.viewport(), table.visualItemRect(table.item(0, 2))) >= AA, mode


def test_previews_highlighting_and_diff_follow_the_theme(qtbot, window, service):
    e = service.content.create({"title": "Colours", "body": "# Title\n\nSome **text** and a [link](https://x.y)."})
    window.list.refresh()
    window.open_entry(e["id"])
    window.editor.body.setPlainText("# Title\n\nOther text.")
    window.save()
    wait_idle(qtbot, window)
    editor = window.editor
    editor.tabs.setCurrentWidget(editor.revisions)
    editor.revisions.list.setCurrentRow(1)
    for mode in both(window):
        dark = mode == "dark"
        # the theme changed while the diff was shown: it is drawn again in the new colours, not lost
        assert "Some **text**" in editor.revisions.diff_text(), mode
        html = editor.revisions.diff.toHtml().lower()
        assert ("#4b1c1f" in html) is dark and ("#ffebe9" in html) is not dark
        assert rendered_contrast(editor.revisions.diff.viewport()) >= AA, mode
        assert editor.highlighter.dark is dark
        heading = editor.body.document().findBlockByNumber(0).layout().formats()
        assert heading[0].format.foreground().color().name() == COLOURS["heading"][1 if dark else 0]
        editor.tabs.setCurrentWidget(editor.preview)
        preview = editor.preview.viewport()
        assert rendered_contrast(preview, preview.rect().adjusted(0, 0, 0, -preview.height() + 60)) >= AA, mode
        editor.tabs.setCurrentWidget(editor.revisions)


def test_charts_take_the_dark_chart_theme_and_keep_their_colours(qtbot, window):
    view = window.show_metrics()
    chart_view = next(iter(view.charts.values()))
    chart = chart_view.chart()
    pens = {s.name(): s.pen().color().name() for s in chart.series()}
    assert pens
    for mode in both(window):
        want = QChart.ChartTheme.ChartThemeDark if mode == "dark" else QChart.ChartTheme.ChartThemeLight
        assert chart.theme() == want
        assert {s.name(): s.pen().color().name() for s in chart.series()} == pens, "series colours kept"
        image = chart_view.grab().toImage()
        counts: dict = {}
        for y in range(0, image.height(), 3):
            for x in range(0, image.width(), 3):
                counts[image.pixel(x, y)] = counts.get(image.pixel(x, y), 0) + 1
        background = QColor(max(counts, key=counts.get))
        axis = chart.axes()[0].labelsBrush().color()
        assert (background.lightness() < 128) is (mode == "dark")
        assert ratio(background, axis) >= AA, mode
