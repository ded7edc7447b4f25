"""``run_gui``: the desktop app. Opens the site, starts plugins and the local server, shows the window,
and on quit stops the server and closes the service."""
from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from ..core.errors import ModulaError
from ..core.service import SiteService
from .main_window import APP_TITLE, MainWindow
from .resources import icon, stylesheet

log = logging.getLogger(__name__)



def start_server(service, host: str, port: int):
    """Start the HTTP server in the background. Returns (handle, None) or (None, why not).

    When the configured port is taken, a free one is used instead (the status bar shows the real one)."""
    try:
        from ..server.runner import start_background
    except ImportError as exc:
        log.warning("local server not available: %s", exc)
        return None, "The local server is not part of this build."
    try:
        return start_background(service, host=host, port=port), None
    except ValueError as exc:  # a host other than the loopback in modula.toml
        return None, str(exc)
    except Exception as first:  # noqa: BLE001 - most likely the port is in use
        if port == 0:
            log.exception("could not start the local server")
            return None, f"Could not start the local server: {first}"
        log.warning("port %s unavailable (%s); using a free port", port, first)
    try:
        return start_background(service, host=host, port=0), None
    except Exception as exc:  # noqa: BLE001
        log.exception("could not start the local server")
        return None, f"Could not start the local server: {exc}"


class Session:
    """The running site behind the window: the service, its plugins and the server. No Qt here."""

    def __init__(self, service: SiteService, server=None, server_error: str | None = None):
        self.service = service
        self.server = server
        self.server_error = server_error

    @classmethod
    def open(cls, site_path: Path | None, hot_reload: bool | None = None, with_server: bool = True) -> "Session":
        service = SiteService.open(Path(site_path) if site_path is not None else None)
        server, error = None, "The local server was not started."
        try:
            if with_server:
                cfg = service.settings.server
                server, error = start_server(service, cfg.host, cfg.port)
                if server is not None:
                    service.site.write_server_info(server.host, server.port)
            # the plugins load behind the window and the server (shown as loading until they run)
            service.start(hot_reload=hot_reload, background=True)
        except BaseException:
            if server is not None:
                server.stop()
                service.site.clear_server_info()
            service.close()
            raise
        return cls(service, server, error)

    def close(self):
        if self.server is not None:
            try:
                self.server.stop()
            except Exception:  # noqa: BLE001
                log.exception("stopping the local server failed")
            self.service.site.clear_server_info()
            self.server = None
        self.service.close()


def _application() -> QApplication:
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
    app.setApplicationName(APP_TITLE)
    app.setApplicationDisplayName(APP_TITLE)
    app.setOrganizationName("Modula")
    app.setWindowIcon(icon("app"))
    qss = stylesheet()
    if qss:
        app.setStyleSheet(qss)
    return app


class _QuitOnSignals:
    """Ctrl+C in the terminal (SIGINT) and a polite kill (SIGTERM) close the window as the Quit action
    would, so the server stops and ``.modula/server.json`` is removed. Installed before the site opens: a
    signal that arrives before the window exists is remembered and closes it as soon as it is shown.
    Python only sees signals between Qt events, hence the idle timer."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, app: QApplication):
        self.app = app
        self.requested = False
        self.previous = {}
        self.timer = None
        try:
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._on_signal)
        except ValueError:  # not the main thread (embedded use)
            self.restore()
            return
        self.timer = QTimer()
        self.timer.timeout.connect(lambda: None)
        self.timer.start(250)

    def _on_signal(self, *_):
        self.requested = True
        self.app.closeAllWindows()

    def restore(self):
        if self.timer is not None:
            self.timer.stop()
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


def _already_open(site_path) -> dict | None:
    """server.json of another live instance serving this site (two would share one database file)."""
    from ..core.site import Site, default_site_dir

    site = Site(Path(site_path) if site_path is not None else default_site_dir())
    info = site.read_server_info()
    return info if info is not None and info.get("pid") != os.getpid() else None


def settle_heap():
    """Put what start-up built out of the cycle collector's way (gc.freeze). A full collection runs on
    whichever thread happens to allocate and holds the GIL while it walks every tracked object: with the
    window, the plugins and their VMs up that was 45-77 ms, long enough to stall the window (issue 18's
    50 ms). Frozen objects are still freed by reference counting; only cycles among them are kept."""
    import gc

    gc.collect()
    gc.freeze()


def run_gui(site_path=None) -> int:
    """Open the desktop window on the site at site_path (None: the user's default site). Returns the exit code."""
    app = _application()
    running = _already_open(site_path)
    if running is not None:
        QMessageBox.critical(None, APP_TITLE, f"This site is already open in another Modula instance "
                                              f"(process {running['pid']}, server http://{running['host']}:"
                                              f"{running['port']}). Close that one first.")
        return 1
    signals = _QuitOnSignals(app)
    try:
        try:
            session = Session.open(site_path)
        except ModulaError as exc:
            QMessageBox.critical(None, APP_TITLE, str(exc))
            return 1
        try:
            window = MainWindow(session.service, session.server, session.server_error)
            window.show()
            settle_heap()
            code = 0 if signals.requested else app.exec()
            window.shutdown()
            return code
        finally:
            session.close()
    finally:
        signals.restore()
