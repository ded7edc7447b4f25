"""The plugin manager dialog on a real plugin runtime: approvals, lifecycle off the GUI thread, live log."""
from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import Qt, QTimer

from helpers import write_plugin
from modula_desktop.gui.plugin_manager import DEFAULT_PERMISSIONS
from test_gui_support import service, site_root, start_service, window  # noqa: F401

pytestmark = pytest.mark.timeout(60)

SLOW = """
function on_init()
  local started = os.clock()
  while os.clock() - started < 0.6 do end
end
http.handle("GET", "/slow", function(req) return {json = {}} end)
"""


@pytest.fixture
def dialog(qtbot, window):
    d = window.show_plugins()
    qtbot.waitExposed(d)
    return d


def routes_table(dialog):
    return dialog.routes.table


def test_lists_plugins_with_state_version_and_permissions(dialog, service):
    names = [dialog.list.topLevelItem(i).text(0) for i in range(dialog.list.topLevelItemCount())]
    assert names == ["guard", "pinger"]
    assert all(dialog.list.topLevelItem(i).text(2).startswith("running") for i in range(2))
    dialog.select("guard")
    assert dialog.permissions.text() == "hooks, hooks:before"
    assert dialog.permissions.property("undeclared") is False
    assert dialog.hooks.permissions.text() == "hooks, hooks:before"
    dialog.select("pinger")
    assert dialog.state_badge.text() == "running · v1.0.0"
    assert dialog.permissions.text() == DEFAULT_PERMISSIONS
    assert dialog.permissions.property("undeclared") is True
    assert dialog.routes.permissions.text() == DEFAULT_PERMISSIONS  # beside the routes to approve
    assert "db" in dialog.permissions.toolTip()


def test_route_checkbox_approves_and_revokes(qtbot, dialog, service):
    dialog.select("pinger")
    table = routes_table(dialog)
    assert table.rowCount() == 2
    keys = [(table.item(r, 1).text(), table.item(r, 2).text()) for r in range(2)]
    assert keys == [("GET", "/ping"), ("POST", "/items/{id}")]
    assert not service.approvals.route_approved("pinger", "GET", "/ping", True)
    table.item(0, 0).setCheckState(Qt.CheckState.Checked)
    assert service.approvals.route_approved("pinger", "GET", "/ping", True)
    assert not service.approvals.route_approved("pinger", "POST", "/items/{id}")
    assert dialog.routes.is_checked(0) and not dialog.routes.is_checked(1)
    routes_table(dialog).item(0, 0).setCheckState(Qt.CheckState.Unchecked)
    assert not service.approvals.route_approved("pinger", "GET", "/ping", True)


def test_approve_all_and_revoke_all(dialog, service):
    dialog.select("pinger")
    dialog.routes.approve_all.click()
    assert service.approvals.routes_of("pinger") == {("GET", "/ping"), ("POST", "/items/{id}")}
    assert not dialog.routes.approve_all.isEnabled() and dialog.routes.revoke_all.isEnabled()
    dialog.routes.revoke_all.click()
    assert service.approvals.routes_of("pinger") == set()

    dialog.select("guard")
    assert dialog.hooks.table.rowCount() == 2
    dialog.hooks.approve_all.click()
    assert service.approvals.hooks_of("guard") == {("before_publish", "content"), ("before_update", "content")}
    states = {dialog.hooks.table.item(r, 5).text() for r in range(2)}
    assert states == {"active"}
    dialog.hooks.table.item(0, 0).setCheckState(Qt.CheckState.Unchecked)
    assert len(service.approvals.hooks_of("guard")) == 1
    dialog.hooks.revoke_all.click()
    assert service.approvals.hooks_of("guard") == set()


def test_disable_and_enable_change_the_state(qtbot, dialog, service):
    dialog.select("pinger")
    assert dialog.disable_button.isEnabled() and not dialog.enable_button.isEnabled()
    dialog.disable_button.click()
    qtbot.waitUntil(lambda: service.plugins.summary("pinger")["state"] == "stopped" and not dialog.is_busy(),
                    timeout=15000)
    qtbot.waitUntil(lambda: dialog._item("pinger").text(2) == "stopped", timeout=3000)
    assert dialog.enable_button.isEnabled() and not dialog.reload_button.isEnabled()
    assert "stopped" in dialog.state_badge.text()
    dialog.enable_button.click()
    qtbot.waitUntil(lambda: service.plugins.summary("pinger")["state"] == "running" and not dialog.is_busy(),
                    timeout=15000)
    qtbot.waitUntil(lambda: dialog._item("pinger").text(2).startswith("running"), timeout=3000)


def test_reload_runs_off_the_gui_thread_with_a_busy_indicator(qtbot, tmp_path):
    from modula_desktop.gui.main_window import MainWindow

    write_plugin(tmp_path, "slow", SLOW)
    svc = start_service(tmp_path, {"max_instructions": 2_000_000_000})
    w = MainWindow(svc)
    try:
        d = w.show_plugins()
        d.select("slow")
        ticks = []
        timer = QTimer()
        timer.timeout.connect(lambda: ticks.append(1))
        timer.start(20)
        d.reload_button.click()
        assert d.is_busy("slow")  # returned at once; the reload runs on a worker thread
        assert d.progress.isVisibleTo(d) and "Reloading slow" in d.busy_label.text()
        assert not d.reload_button.isEnabled()
        qtbot.waitUntil(lambda: not d.is_busy(), timeout=20000)
        timer.stop()
        assert len(ticks) >= 5, "the event loop stalled during the reload"
        assert not d.progress.isVisibleTo(d)
        assert "reloaded" in d.message_bar.text()
        assert "reloaded version 1.0.0" in d.log_view.toPlainText()
        assert svc.metrics.sample("modula_plugin_reloads_total", plugin="slow", outcome="success") == 1
    finally:
        w.shutdown()
        w.close()
        svc.close()


def test_a_failed_reload_is_reported_and_the_old_version_keeps_serving(qtbot, dialog, service, site_root):
    dialog.select("pinger")
    (site_root / "plugins" / "pinger" / "init.lua").write_text("this is not lua(", encoding="utf-8")
    dialog.reload_button.click()
    qtbot.waitUntil(lambda: not dialog.is_busy(), timeout=15000)
    assert dialog.message_bar.kind == "error" and "still serving" in dialog.message_bar.text()
    assert dialog.error.isVisibleTo(dialog)
    assert service.plugins.summary("pinger")["state"] == "running"


def test_the_log_is_live(qtbot, dialog, service):
    dialog.select("guard")
    dialog.tabs.setCurrentWidget(dialog.log_view)
    t = threading.Thread(target=lambda: service.logbook.write("guard", "warn", "written from a worker",
                                                              {"n": 1}))
    t.start()
    t.join()
    qtbot.waitUntil(lambda: "written from a worker" in dialog.log_view.toPlainText(), timeout=3000)
    assert "WARN" in dialog.log_view.toPlainText()
    service.logbook.write("pinger", "info", "not this plugin's")
    qtbot.wait(50)
    assert "not this plugin's" not in dialog.log_view.toPlainText()


def test_health_shows_breaker_and_pool(dialog):
    dialog.select("pinger")
    text = {k: v.text() for k, v in dialog.health_labels.items()}
    assert text["breaker"] == "answering"  # plain words, not "closed"
    assert "idle" in text["pool"] and "reserved for hooks" in text["pool"]
    assert text["last_reload"].startswith("succeeded")


def test_hooks_tab_says_what_read_hooks_and_unknown_tables_do(qtbot, tmp_path):
    from modula_desktop.gui.main_window import MainWindow

    write_plugin(tmp_path, "reads", """
hooks.on("before_read", "content_data", function(d) end)
hooks.on("after_read", "content", function(d) end)
hooks.on("after_create", "media", function(d) end)
""", info_extra='permissions = {"hooks", "hooks:before"}')
    svc = start_service(tmp_path)
    w = MainWindow(svc)
    try:
        d = w.show_plugins()
        d.select("reads")
        table = d.hooks.table
        effects = {table.item(r, 1).text() + ":" + table.item(r, 2).text(): table.item(r, 4).text()
                   for r in range(table.rowCount())}
        assert effects == {"before_read:content": "may refuse a read (admin API, preview, build)",
                           "after_read:content": "may hide or replace fields a read returns",
                           "after_create:media": "never runs: the site has no table 'media'"}
    finally:
        w.shutdown()
        w.close()
        svc.close()
