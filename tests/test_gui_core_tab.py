"""The plugin manager's Content tab (SPEC 3.10): core access shown with the declared permissions and
approved or revoked per plugin, on a real plugin runtime."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings, Qt

from helpers import write_plugin
from test_gui_support import start_service

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def service(tmp_path):
    write_plugin(tmp_path, "digest", """
http.handle("GET", "/n", function() return {json = {n = core.count("content")}} end)
""", info_extra='permissions = {"http", "core:read", "core:write"}')
    write_plugin(tmp_path, "legacy", "", info_extra='core_access = {content_data = {"read"}}')
    svc = start_service(tmp_path)
    yield svc
    svc.close()


@pytest.fixture
def dialog(qtbot, service):
    from modula_desktop.gui.main_window import MainWindow

    w = MainWindow(service)
    w.show()
    d = w.show_plugins()
    qtbot.waitExposed(d)
    yield d
    d.close()
    w.close()


def test_content_tab_shows_and_approves_core_access(dialog, service):
    dialog.select("digest")
    tab = dialog.core
    assert dialog.tabs.tabText(dialog.tabs.indexOf(tab)) == "Content (2)"
    table = tab.table
    assert [table.item(r, 1).text() for r in range(table.rowCount())] == ["read", "write"]
    assert "create, change and delete" in table.item(1, 2).text()
    assert tab.permissions.text() == "core:read, core:write, http"
    assert "core:read, core:write" in dialog.pending_label.text()
    table.item(0, 0).setCheckState(Qt.CheckState.Checked)
    assert service.approvals.core_of("digest") == {"read"}
    assert dialog.core.is_checked(0) and not dialog.core.is_checked(1)
    dialog.core.approve_all.click()
    assert service.approvals.core_of("digest") == {"read", "write"}
    dialog.core.revoke_all.click()
    assert service.approvals.core_of("digest") == set()


def test_modulacms_core_access_is_shown_beside_the_default_permissions(dialog, service):
    dialog.select("legacy")
    assert "core:read (core_access)" in dialog.core.permissions.text()
    assert dialog.core.table.rowCount() == 1 and dialog.core.table.item(0, 1).text() == "read"


def test_content_tab_screenshots(dialog, service, tmp_path):
    from modula_desktop.gui.theme import ThemeManager

    dialog.select("digest")
    service.approvals.approve_core("digest", "read")
    dialog.select("legacy")
    dialog.select("digest")
    dialog.tabs.setCurrentWidget(dialog.core)
    dialog.resize(900, 600)
    theme = ThemeManager(settings=QSettings(str(tmp_path / "theme.ini"), QSettings.Format.IniFormat))
    for mode in ("light", "dark"):
        theme.set_mode(mode)
        path = tmp_path / f"core-tab-{mode}.png"
        assert dialog.grab().save(str(path))
        assert path.stat().st_size > 1000
    theme.set_mode("light")
