"""run_gui and the session behind it: service, plugins, server, server.json, and a clean exit."""
from __future__ import annotations

import json
import socket
import urllib.request

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from helpers import write_plugin
from modula_desktop.gui import app as gui_app
from modula_desktop.gui.app import Session, run_gui
from modula_desktop.gui.main_window import MainWindow
from test_gui_support import ROUTES

pytestmark = pytest.mark.timeout(90)

try:
    import modula_desktop.server.runner  # noqa: F401
    HAVE_SERVER = True
except ImportError:
    HAVE_SERVER = False


def site(tmp_path, port=0):
    write_plugin(tmp_path, "pinger", ROUTES)
    (tmp_path / "modula.toml").write_text(f"[plugins]\nhot_reload = false\n\n[server]\nport = {port}\n")
    return tmp_path


def test_session_window_and_server(qtbot, tmp_path):
    session = Session.open(site(tmp_path))
    try:
        window = MainWindow(session.service, session.server, session.server_error)
        qtbot.addWidget(window)
        window.show()
        # a new --site folder gets the welcome page, not the example plugins (the window offers them)
        [welcome] = session.service.content.list()
        assert window.list.ids() == [welcome["id"]] and welcome["slug"] == "welcome"
        assert session.service.plugins.wait_loaded(30)  # the plugins load behind the window
        assert session.service.plugins.names() == ["pinger"]
        assert session.service.plugins.summary("pinger")["state"] == "running"
        if not HAVE_SERVER:
            assert session.server is None and "not available" in window.server_label.text()
            return
        server = session.server
        assert server is not None, session.server_error
        assert server.url in window.server_label.text()
        info = json.loads((tmp_path / ".modula" / "server.json").read_text())
        assert (info["host"], info["port"]) == (server.host, server.port)
        with urllib.request.urlopen(server.url + "/api/v1/health", timeout=5) as r:
            assert r.status == 200
        e = session.service.content.create({"type": "page", "title": "Draft page", "body": "hello"})
        window.list.refresh()
        window.open_entry(e["id"])
        url = window.preview_url()
        assert url.startswith(f"{server.url}/preview/draft-page")
        with urllib.request.urlopen(url, timeout=5) as r:
            assert "hello" in r.read().decode()
        window.shutdown()
    finally:
        session.close()
    assert not (tmp_path / ".modula" / "server.json").exists()


@pytest.mark.skipif(not HAVE_SERVER, reason="the HTTP server is not available")
def test_a_busy_port_falls_back_to_a_free_one(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        session = Session.open(site(tmp_path, port))
        try:
            assert session.server is not None and session.server.port not in (0, port)
        finally:
            session.close()


def test_without_a_server_module_the_window_says_so(qtbot, tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_server(name, globals=None, locals=None, fromlist=(), level=0):
        if name.endswith("server.runner") or (level and name == "runner") or \
                (fromlist and "runner" in fromlist and name.endswith("server")):
            raise ImportError("no server in this build")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_server)
    session = Session.open(site(tmp_path))
    try:
        assert session.server is None and "not part of this build" in session.server_error
        window = MainWindow(session.service, session.server, session.server_error)
        qtbot.addWidget(window)
        assert window.server_label.text() == "Local server not available"
        assert not window.act_open_preview.isEnabled()
        window.shutdown()
    finally:
        session.close()


def test_run_gui_opens_the_window_and_cleans_up(qtbot, tmp_path):
    root = site(tmp_path)
    seen = {}

    def close_soon():
        windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        if not windows:
            QTimer.singleShot(50, close_soon)
            return
        w = windows[0]
        seen["title"] = w.windowTitle()
        seen["server"] = w.server_label.text()
        seen["server_json"] = (root / ".modula" / "server.json").exists()
        w.close()

    QTimer.singleShot(100, close_soon)
    assert run_gui(root) == 0
    assert "Modula Desktop" in seen["title"]
    if HAVE_SERVER:
        assert seen["server"].startswith("Server: ") and seen["server_json"]
    assert not (root / ".modula" / "server.json").exists()


def test_run_gui_reports_a_bad_site_in_one_dialog(qtbot, tmp_path, monkeypatch):
    (tmp_path / "modula.toml").write_text("[plugins]\nmax_vms = 'many'\n")
    shown = []
    monkeypatch.setattr(gui_app.QMessageBox, "critical", lambda parent, title, text: shown.append(text))
    assert run_gui(tmp_path) == 1
    assert len(shown) == 1 and "max_vms" in shown[0]


def test_run_gui_refuses_a_site_another_instance_has_open(qtbot, tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    from modula_desktop.core.site import Site

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        site = Site(tmp_path)
        site.ensure()
        (tmp_path / ".modula" / "server.json").write_text(
            json.dumps({"host": "127.0.0.1", "port": 5555, "pid": other.pid}))
        shown = []
        monkeypatch.setattr(gui_app.QMessageBox, "critical", lambda parent, title, text: shown.append(text))
        assert run_gui(tmp_path) == 1
        assert "already open" in shown[0] and str(other.pid) in shown[0]
        assert os.path.exists(tmp_path / ".modula" / "server.json")  # not ours to remove
    finally:
        other.kill()
        other.wait()
