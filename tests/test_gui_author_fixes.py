"""What an author met (issue 14, section 2) and plugin health in plain words, on a real service, a real
site folder, real Lua plugins and real widgets offscreen."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication, QMessageBox

from _server_fixtures import running_site
from helpers import write_plugin
from modula_desktop.core.paths import BUNDLED_PLUGINS
from modula_desktop.gui.main_window import APP_TITLE, MainWindow
from test_gui_support import approve_all_hooks, service, site_root, start_service, wait_idle, window  # noqa: F401

pytestmark = pytest.mark.timeout(90)
SHOTS = "/tmp/gui2shots"

AUDITOR = """
hooks.on("after_create", "content", function(entry)
  error("no VM free within 5 s")
end)
"""


def make(service, **data):
    return service.content.create(dict({"type": "page", "body": ""}, **data))


def open_window(qtbot, service, server=None):
    w = MainWindow(service, server)
    w.ask_unsaved = lambda: pytest.fail("unexpected unsaved-changes prompt")
    w.confirm = lambda *a: pytest.fail("unexpected confirmation prompt")
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    return w


# ---- the window title -------------------------------------------------------------------------------
def test_the_window_title_names_the_app_once(qtbot, window, service):
    app = QApplication.instance()
    app.setApplicationDisplayName(APP_TITLE)
    try:
        window.setWindowTitle(window.windowTitle())  # as set at start, now with the display name known
        shown = window.windowHandle().title()
        assert shown.count(APP_TITLE) == 1, shown
        assert shown == f"{service.site.root.name} — {APP_TITLE}"
        window.editor.body.setPlainText("edited")
        assert window.isWindowModified()
        assert window.windowHandle().title().count(APP_TITLE) == 1
    finally:
        app.setApplicationDisplayName("")


# ---- open preview in browser ------------------------------------------------------------------------
def test_open_preview_without_a_browser_says_so_and_copies_the_link(qtbot, tmp_path):
    with running_site(tmp_path, plugins=()) as r:
        w = open_window(qtbot, r.service, r.handle)
        e = make(r.service, title="Draft to show", body="hello")
        w.list.refresh()
        w.open_entry(e["id"])
        url = w.preview_url()
        assert url and w.act_open_preview.isEnabled()
        # the offscreen platform cannot start a browser: QDesktopServices.openUrl answers False
        assert not __import__("PySide6.QtGui", fromlist=["QDesktopServices"]).QDesktopServices.openUrl(QUrl(url))
        w.act_open_preview.trigger()
        qtbot.waitUntil(lambda: w.findChild(QMessageBox, "BrowserFailedBox") is not None, timeout=3000)
        box = w.findChild(QMessageBox, "BrowserFailedBox")
        assert "No web browser could be opened" in box.text() and url in box.informativeText()
        copy = next(b for b in box.buttons() if b.text() == "Copy Link")
        QGuiApplication.clipboard().clear()
        box.grab().save(f"{SHOTS}/browser_failed.png")
        qtbot.mouseClick(copy, Qt.MouseButton.LeftButton)
        assert QGuiApplication.clipboard().text() == url
        assert "copied" in w.statusBar().currentMessage()
        w.shutdown()


# ---- error bars clear, the unsaved prompt names the entry --------------------------------------------
def test_a_refusal_bar_clears_once_the_text_is_edited(qtbot, window, service):
    approve_all_hooks(service, "guard")
    e = make(service, title="Menu", body="soup")
    window.list.refresh()
    window.open_entry(e["id"])
    window.editor.title.setText("Menu LOCKED")
    window.save()
    wait_idle(qtbot, window)
    bar = window.editor.message_bar
    assert bar.isVisibleTo(window) and bar.kind == "error" and "Locked titles" in bar.text()
    # the author fixes the title: the bar that reported the problem goes
    window.editor.title.clear()
    qtbot.keyClicks(window.editor.title, "Menu")
    assert not bar.isVisibleTo(window)
    window.save()
    wait_idle(qtbot, window)
    assert service.content.get(e["id"])["title"] == "Menu" and not bar.isVisibleTo(window)


def test_a_warning_that_is_not_a_refusal_stays_while_typing(qtbot, window, service):
    e = make(service, title="Shared", body="one")
    window.list.refresh()
    window.open_entry(e["id"])
    window.editor.body.setPlainText("mine")
    service.content.update(e["id"], {"body": "theirs"})
    qtbot.waitUntil(lambda: window.editor.message_bar.isVisibleTo(window), timeout=3000)
    window.editor.body.setPlainText("mine, more")
    assert window.editor.message_bar.isVisibleTo(window) and window.editor.message_bar.kind == "warning"


def test_the_unsaved_prompt_names_the_entry(qtbot, window, service):
    e = make(service, title="Opening hours", body="9-5")
    window.list.refresh()
    window.open_entry(e["id"])
    window.editor.body.setPlainText("9-6")
    assert window.unsaved_text() == "“Opening hours” has unsaved changes."
    window.ask_unsaved = lambda: "discard"
    window.new_entry("post")
    window.editor.title.setText("Spring news")
    assert window.unsaved_text() == "The new post “Spring news” is not saved yet."
    # the real dialog carries that text
    seen = []

    def answer():
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox):
            seen.append(box.text())
            box.button(QMessageBox.StandardButton.Cancel).click()
    from PySide6.QtCore import QTimer
    QTimer.singleShot(100, answer)
    assert MainWindow.ask_unsaved(window) == "cancel"
    assert seen == ["The new post “Spring news” is not saved yet."]


# ---- after-hook failures mark the plugin ---------------------------------------------------------------
def test_after_hook_failures_mark_the_plugin_in_the_list_and_the_status_bar(qtbot, tmp_path):
    write_plugin(tmp_path, "auditor", AUDITOR, info_extra='permissions = {"hooks"}')
    write_plugin(tmp_path, "quiet", 'hooks.on("after_create", "content", function(e) end)',
                 info_extra='permissions = {"hooks"}')
    svc = start_service(tmp_path)
    try:
        approve_all_hooks(svc, "auditor")
        approve_all_hooks(svc, "quiet")
        w = open_window(qtbot, svc)
        assert "⚠" not in w.plugin_label.text()
        for i in range(3):
            make(svc, title=f"Entry {i}")
        assert svc.content.wait_for_hooks(10)
        qtbot.waitUntil(lambda: "auditor" in w.plugin_label.text(), timeout=5000)
        assert "3 recent errors" in w.plugin_label.text() and w.plugin_label.property("marked")
        tip = w.plugin_label.toolTip()
        assert "3 errors in the last 10 minutes — last error: its after-create hook failed: no VM free within 5 s" \
            in tip, tip
        qtbot.wait(100)
        w.statusBar().grab().save(f"{SHOTS}/status_bar_marked.png")
        d = w.show_plugins()
        qtbot.waitExposed(d)
        item = d._item("auditor")
        assert item.text(2) == "3 recent errors" and "no VM free within 5 s" in item.toolTip(2)
        assert d._item("quiet").text(2) == "running"
        d.select("auditor")
        assert d.error.isVisibleTo(d) and "last error: its after-create hook failed" in d.error.text()
        d.grab().save(f"{SHOTS}/plugin_manager_marked.png")
        d.select("quiet")
        assert not d.error.isVisibleTo(d)
        w.shutdown()
    finally:
        svc.close()


def test_recent_errors_age_out_after_the_window(qtbot, tmp_path):
    write_plugin(tmp_path, "auditor", AUDITOR, info_extra='permissions = {"hooks"}')
    svc = start_service(tmp_path, {"recent_error_window_s": 1.0})
    try:
        approve_all_hooks(svc, "auditor")
        w = open_window(qtbot, svc)
        make(svc, title="One")
        assert svc.content.wait_for_hooks(10)
        qtbot.waitUntil(lambda: "auditor" in w.plugin_label.text(), timeout=5000)
        qtbot.wait(1200)
        w._show_plugin_summary()
        assert "auditor" not in w.plugin_label.text() and not w.plugin_label.property("marked")
        w.shutdown()
    finally:
        svc.close()


# ---- plugin health in plain words ------------------------------------------------------------------
def test_a_tripped_breaker_reads_stopped_after_n_errors_in_a_row(qtbot, tmp_path):
    with running_site(tmp_path, plugins=("faulty",)) as r:
        r.client.approve_routes("faulty", "GET /fail", "GET /ok")
        w = open_window(qtbot, r.service, r.handle)
        limit = r.service.settings.plugins.max_failures
        for _ in range(limit):
            assert r.client.get("/api/v1/plugins/faulty/fail").status == 500
        d = w.show_plugins()
        qtbot.waitExposed(d)
        d.select("faulty")
        d._poll_health()
        item = d._item("faulty")
        qtbot.waitUntil(lambda: d._item("faulty").text(2) == f"stopped after {limit} errors in a row", timeout=5000)
        assert "circuit" not in item.text(2).lower() and "breaker" not in d.error.text().lower()
        assert d.error.text().startswith(f"Stopped after {limit} errors in a row — last error: ")
        assert "deliberate failure" in d.error.text()
        assert d.health_labels["breaker"].text().startswith(f"stopped after {limit} errors in a row")
        assert "its route GET /fail failed: deliberate failure" in d.error.text()
        qtbot.waitUntil(lambda: "faulty: stopped after" in w.plugin_label.text(), timeout=3000)
        w.shutdown()


def test_what_waits_for_approval_is_visible_in_the_list(qtbot, window, service):
    d = window.show_plugins()
    qtbot.waitExposed(d)
    pinger = d._item("pinger")
    n = len(service.plugins.info("pinger")["routes"]) + len(service.plugins.info("pinger")["hooks"])
    assert pinger.text(2) == f"running, {n} to approve"
    d.select("pinger")
    assert d.pending_label.isVisibleTo(d) and "route GET /ping" in d.pending_label.text()
    d.routes.approve_all.click()
    d.hooks.approve_all.click()
    qtbot.waitUntil(lambda: d._item("pinger").text(2) == "running", timeout=3000)
    assert not d.pending_label.isVisibleTo(d)


# ---- the plugin manager on a site with no plugins -------------------------------------------------------
def test_the_plugin_manager_without_plugins_says_how_to_add_one(qtbot, tmp_path):
    svc = start_service(tmp_path)
    try:
        w = open_window(qtbot, svc)
        d = w.show_plugins()
        qtbot.waitExposed(d)
        panel = d.empty_panel
        assert panel.isVisibleTo(d) and not d.details.isVisibleTo(d)
        assert not d.error.isVisibleTo(d)  # no empty pink box
        text = panel.explain.text()
        assert "modula plugin init NAME" in text and str(svc.site.plugins_dir) in text
        assert panel.open_button.text() == "Open Plugins Folder"
        assert panel.open_button.property("url") == QUrl.fromLocalFile(str(svc.site.plugins_dir)).toString()
        d.grab().save(f"{SHOTS}/plugin_manager_empty.png")
        # the offscreen platform has no file manager: the panel says where the folder is instead
        qtbot.mouseClick(panel.open_button, Qt.MouseButton.LeftButton)
        assert str(svc.site.plugins_dir) in panel.status.text()
        # the examples come in with one click and the details appear
        qtbot.mouseClick(panel.examples_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: d.list.topLevelItemCount() > 0, timeout=30000)
        bundled = sorted(p.name for p in BUNDLED_PLUGINS.iterdir() if (p / "init.lua").is_file())
        qtbot.waitUntil(lambda: sorted(svc.plugins.names()) == bundled, timeout=30000)
        assert d.details.isVisibleTo(d) and not panel.isVisibleTo(d)
        w.shutdown()
    finally:
        svc.close()


def test_a_message_in_the_plugin_manager_does_not_move_the_buttons(qtbot, window):
    d = window.show_plugins()
    qtbot.waitExposed(d)
    d.select("pinger")
    qtbot.wait(50)
    controls = (d.enable_button, d.disable_button, d.reload_button, d.routes.approve_all, d.tabs)

    def geometry():
        return [(w.mapTo(d, w.rect().topLeft()), w.size()) for w in controls]
    before = geometry()
    assert not d.message_bar.isVisible()
    d.reload_button.click()
    qtbot.waitUntil(lambda: not d.is_busy() and d.message_bar.isVisible(), timeout=15000)
    assert "reloaded" in d.message_bar.text()
    qtbot.wait(50)
    assert geometry() == before
    # a long error wraps inside the same slot
    d.show_message("x " * 400, "error", "Reload of pinger failed")
    assert d.message_bar.toolTip().startswith("x x")
    qtbot.wait(50)
    assert geometry() == before
    d.show_message("pinger reloaded.", "info")
    d.grab().save(f"{SHOTS}/plugin_manager.png")


# ---- a new --site folder ----------------------------------------------------------------------------
def test_a_new_site_folder_gets_a_welcome_entry_and_a_first_run_message(qtbot, tmp_path):
    from modula_desktop.core.service import SiteService

    root = tmp_path / "new-site"
    (tmp_path / "cfg").mkdir()
    svc = SiteService.open(root).start(hot_reload=False)
    try:
        assert svc.new and svc.plugins.names() == []
        w = open_window(qtbot, svc)
        assert w.list.count_label.text() == "1 entry"
        assert w.editor.entry["slug"] == "welcome" and w.editor.title.text() == "Welcome"
        bar = w.first_run
        assert bar is not None and bar.isVisibleTo(w)
        assert str(svc.site.plugins_dir) in bar.label.text()
        assert bar.open_button.property("url") == QUrl.fromLocalFile(str(svc.site.plugins_dir)).toString()
        w.grab().save(f"{SHOTS}/first_run.png")
        qtbot.mouseClick(bar.copy_button, Qt.MouseButton.LeftButton)
        bundled = sorted(p.name for p in BUNDLED_PLUGINS.iterdir() if (p / "init.lua").is_file())
        qtbot.waitUntil(lambda: sorted(svc.plugins.names()) == bundled, timeout=30000)
        qtbot.waitUntil(lambda: "Copied" in bar.label.text(), timeout=5000)
        assert all((svc.site.plugins_dir / n / "init.lua").is_file() for n in bundled)
        assert "running" in w.plugin_label.text()
        w.shutdown()
    finally:
        svc.close()
    # opened again, the site is not new: no welcome page added twice, no first-run bar
    svc = SiteService.open(root).start(hot_reload=False)
    try:
        assert not svc.new and svc.content.count() == 1
        w = open_window(qtbot, svc)
        assert w.first_run is None
        w.shutdown()
    finally:
        svc.close()


def test_a_fixed_plugin_loses_its_mark_and_its_error_bar(qtbot, tmp_path):
    write_plugin(tmp_path, "fragile", 'http.handle("GET", "/x", function(req) return {json = {}} end)')
    svc = start_service(tmp_path)
    try:
        w = open_window(qtbot, svc)
        d = w.show_plugins()
        qtbot.waitExposed(d)
        d.select("fragile")
        broken = tmp_path / "plugins" / "fragile" / "init.lua"
        good = broken.read_text()
        broken.write_text(good + "\nthis is not lua(\n")
        d.reload_button.click()
        qtbot.waitUntil(lambda: not d.is_busy() and d.message_bar.isVisible(), timeout=15000)
        assert d.message_bar.kind == "error"
        qtbot.waitUntil(lambda: "fragile" in w.plugin_label.text(), timeout=3000)
        assert d._item("fragile").text(2) != "running"
        # the author fixes the file; the plugin loads again (as hot reload would load it)
        broken.write_text(good)
        assert svc.plugins.reload("fragile")
        qtbot.waitUntil(lambda: not d.message_bar.isVisible(), timeout=5000)
        qtbot.waitUntil(lambda: d._item("fragile").text(2).startswith("running"), timeout=3000)
        qtbot.waitUntil(lambda: "fragile" not in w.plugin_label.text(), timeout=3000)
        w.shutdown()
    finally:
        svc.close()


def test_the_server_address_link_without_a_browser_offers_the_link_too(qtbot, tmp_path):
    with running_site(tmp_path, plugins=()) as r:
        w = open_window(qtbot, r.service, r.handle)
        w.server_label.linkActivated.emit(r.handle.url)  # the author clicks the address
        qtbot.waitUntil(lambda: w.findChild(QMessageBox, "BrowserFailedBox") is not None, timeout=3000)
        assert r.handle.url in w.findChild(QMessageBox, "BrowserFailedBox").informativeText()
        w.shutdown()
