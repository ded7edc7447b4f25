"""Fixtures for the GUI tests: a real SiteService on a tmp_path site, wrapped in Qt second.

Imported by the test_gui_* modules (``from test_gui_support import ...``); it holds no tests itself.
"""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from helpers import write_plugin  # noqa: E402
from modula_desktop.core.service import SiteService  # noqa: E402
from modula_desktop.core.settings import Settings  # noqa: E402
from modula_desktop.core.site import Site  # noqa: E402

GUARD = """
hooks.on("before_publish", "content", function(entry)
  if string.find(entry.body or "", "forbidden", 1, true) then
    error("Entries that mention forbidden things need a review before publishing.")
  end
end)
hooks.on("before_update", "content", function(entry)
  if string.find(entry.title or "", "LOCKED", 1, true) then
    error("Locked titles cannot be saved.")
  end
end)
"""

ROUTES = """
http.handle("GET", "/ping", function(req) return {json = {ok = true}} end, {public = true})
http.handle("POST", "/items/{id}", function(req) return {status = 201} end)
hooks.on("after_create", "content", function(entry) log.info("saw " .. entry.slug) end)
"""


def start_service(root, settings: dict | None = None) -> SiteService:
    s = Settings().replace(plugins=dict({"hot_reload": False}, **(settings or {})), server={"port": 0})
    return SiteService(Site(root), s).start(hot_reload=False)


def approve_all_hooks(service: SiteService, name: str):
    for h in service.plugins.info(name)["hooks"]:
        service.approvals.approve_hook(name, h["event"], h["table"])


@pytest.fixture
def site_root(tmp_path):
    write_plugin(tmp_path, "guard", GUARD, info_extra='permissions = {"hooks", "hooks:before"}')
    write_plugin(tmp_path, "pinger", ROUTES)  # declares no permissions: the ModulaCMS default
    return tmp_path


@pytest.fixture
def service(site_root):
    svc = start_service(site_root)
    yield svc
    svc.close()


@pytest.fixture
def window(qtbot, service):
    from modula_desktop.gui.main_window import MainWindow

    w = MainWindow(service)
    # no modal dialog may open in a test: answers are set per test
    w.ask_unsaved = lambda: pytest.fail("unexpected unsaved-changes prompt")
    w.confirm = lambda *a: pytest.fail("unexpected confirmation prompt")
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.shutdown()
    w.close()
    w.deleteLater()


def wait_idle(qtbot, w, timeout=5000):
    """Wait until the window's background content work has finished."""
    qtbot.waitUntil(lambda: w._content_busy is None and not w.tasks.busy, timeout=timeout)
