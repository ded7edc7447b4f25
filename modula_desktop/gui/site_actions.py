"""The window's Site menu: Build Site, Open Site, Publish Site, Unused Media and Site Settings.

A build (and a publish, which builds first so it sends what the site is now) runs the core pipeline on
its own worker thread; the status bar shows its progress (files done / to do) with a Cancel button and
the window goes on working. The worker reports progress through a queued signal, at most every
``PROGRESS_EVERY_S`` (a 10,000-file build would otherwise queue 10,000 events). A failure is said once,
in one box: the theme's template, line and entry, or the plugin and the entry, as the core words it.
A cancel is not a failure: the last good output is untouched (the build is atomic) and the status bar
says so.
"""
from __future__ import annotations

import logging
import threading
import time

import gc
import importlib

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMenu,
    QMessageBox,
    QProgressBar,
    QToolButton,
    QWidget,
)

from ..core.build import BuildCancelled, add_media, build_site, default_output
from ..core.build.media import media_dir
from ..core.build.write import read_manifest
from ..core.errors import ModulaError
from .tasks import TaskRunner

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.05
WARM_UP_MS = 2000  # after the window opens, the build's lazily imported modules are loaded on the worker
# Importing these (lxml's and Pillow's C extensions above all) holds the interpreter lock for 100-200 ms
# at a time: done in the first build, it would stall the window's event loop that long, while the
# progress bar is the thing being watched. Loaded early, at idle, nobody notices.
WARM_MODULES = ("modula_desktop.core.build.hooks", "feedgen.feed", "PIL.Image", "zoneinfo")
LISTED = 30  # paths listed in a publish report's details before "… and N more"
PHASES = {"prepare": "Preparing the build…", "build": "Building", "publish": "Publishing"}


def _frozen_heap(job):
    """Run job with the objects that exist before it left out of garbage collection. A full collection
    walks every object of the process holding the interpreter lock — in a long-running window, hundreds
    of milliseconds in which the event loop cannot run; a build allocates enough to set one off. Frozen,
    those objects are not walked until the build is over (one build runs at a time)."""
    def run():
        gc.freeze()
        try:
            return job()
        finally:
            gc.unfreeze()
    return run


class _Progress(QObject):
    # phase, done, total, what — emitted on the worker thread, delivered on the GUI thread
    changed = Signal(str, int, int, str)


class ProgressPanel(QWidget):
    """The status bar's progress of a build or publish, with its Cancel button."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("SiteProgressPanel")
        self.label = QLabel(self)
        self.label.setObjectName("SiteProgressLabel")
        self.bar = QProgressBar(self)
        self.bar.setObjectName("SiteProgress")
        self.bar.setTextVisible(False)
        self.bar.setFixedWidth(160)
        self.bar.setMaximumHeight(14)
        self.cancel_button = QToolButton(self)
        self.cancel_button.setText("Cancel")
        self.cancel_button.setToolTip("Stop the build; the last good build stays as it is")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 6, 0)
        row.setSpacing(6)
        row.addStretch(1)  # room the status bar gives beyond the label's goes to the left
        row.addWidget(self.label)
        row.addWidget(self.bar)
        row.addWidget(self.cancel_button)
        self.hide()

    def show_phase(self, phase: str, done: int = 0, total: int = 0, what: str = ""):
        if phase == "prepare" or (total == 0 and phase != "build"):
            self.bar.setRange(0, 0)  # busy: the size of the work is not known yet
            self.label.setText(PHASES.get(phase, phase))
        elif total == 0:  # nothing changed: nothing to render
            self.bar.setRange(0, 1)
            self.bar.setValue(1)
            self.label.setText("Building: nothing changed")
        else:
            self.bar.setRange(0, total)
            self.bar.setValue(done)
            self.label.setText(f"{PHASES.get(phase, phase)}: {done:,} / {total:,} files")
        self.label.setToolTip(what)
        self.show()


class SiteActions(QObject):
    """Owns the Site actions of a main window and the worker they run on."""

    finished = Signal(str, bool)  # "build" / "publish", ok — after the result was shown

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.service = window.service
        self.tasks = TaskRunner(self, max_threads=1)
        self.running: str | None = None
        self._cancel = threading.Event()
        self._open_after_build = False
        self.error_box: QMessageBox | None = None
        self.report_box: QMessageBox | None = None
        self.last_result = None  # the BuildResult (or (BuildResult, PublishResult)) shown last
        self._settings_dialog = None
        self._media_dialog = None
        self._relay = _Progress(self)
        self._relay.changed.connect(self._progress)
        self.panel = ProgressPanel(window)
        self.panel.cancel_button.clicked.connect(self.cancel)

        act = window._action
        self.act_build = act("&Build Site", self.build, "Ctrl+Alt+B", "build",
                             "Build the static site into the site's build/ folder")
        self.act_open_site = act("&Open Site in Browser", self.open_site, "Ctrl+Alt+O", "site",
                                 "Open the last build, served by the local server at /site/")
        self.act_publish = act("&Publish Site", self._publish_clicked, None, "upload",
                               "Build, then send what changed to a publish target from modula.toml")
        self.publish_menu = QMenu("&Publish Site", window)
        self.publish_menu.aboutToShow.connect(self._fill_publish_menu)
        self.act_publish.setMenu(self.publish_menu)
        self.act_unused_media = act("&Unused Media…", self.show_unused_media, None, None,
                                    "Images in media/ that no entry or revision uses")
        # the toolbar has room for short words only
        self.act_build.setIconText("Build")
        self.act_open_site.setIconText("Open Site")
        self.act_settings = act("Site &Settings…", self.show_settings, None, None,
                                "Title, base URL, theme, permalinks… ([site] in modula.toml)")
        self._fill_publish_menu()
        self.update()
        self.warmed = False
        self._closed = False
        QTimer.singleShot(WARM_UP_MS, self, self.warm_up)  # dropped if the window goes first
        # the editor stores pasted and dropped images in media/, and its preview shows them from there
        window.editor.body.store_media = self.store_media
        window.editor.preview.media_folder = media_dir(self.service.site.root)

    def warm_up(self):
        """Import what a build imports on first use, on the worker thread (see WARM_MODULES)."""
        if self.warmed or self._closed or self.running is not None:
            return

        def job():
            for name in WARM_MODULES:
                try:
                    importlib.import_module(name)
                except ImportError:  # the build says so itself, clearly, when it needs it
                    log.debug("could not import %s ahead of the build", name)

        def done(_result):
            self.warmed = True
        self.tasks.run(job, done, done)

    # ---- menus ---------------------------------------------------------------------------
    def fill_menu(self, menu: QMenu):
        menu.addActions([self.act_build, self.act_open_site])
        menu.addMenu(self.publish_menu)
        menu.addSeparator()
        menu.addAction(self.act_unused_media)
        menu.addSeparator()
        menu.addAction(self.act_settings)

    def fill_toolbar(self, toolbar):
        toolbar.addAction(self.act_build)
        toolbar.addAction(self.act_publish)
        button = toolbar.widgetForAction(self.act_publish)
        if isinstance(button, QToolButton):
            button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        toolbar.addAction(self.act_open_site)

    def targets(self) -> dict:
        return dict(self.service.settings.publish)

    def _fill_publish_menu(self):
        self.publish_menu.clear()
        targets = self.targets()
        if not targets:
            none = self.publish_menu.addAction("No publish targets: add [publish.NAME] to modula.toml")
            none.setEnabled(False)
            return
        for name in sorted(targets):
            t = targets[name]
            where = t.path if t.type == "folder" else f"{t.remote} ({t.branch})"
            a = self.publish_menu.addAction(f"{name} — {t.type}: {where}")
            a.setData(name)
            a.setEnabled(self.running is None)
            a.triggered.connect(lambda _c=False, n=name: self.publish(n))

    def _publish_clicked(self):
        """The toolbar button pops the target menu; with one target, the action publishes to it."""
        targets = self.targets()
        if len(targets) == 1:
            self.publish(next(iter(targets)))

    def update(self):
        idle = self.running is None
        self.act_build.setEnabled(idle)
        self.act_publish.setEnabled(idle)
        self.publish_menu.setEnabled(idle)
        self.act_open_site.setEnabled(self.window.server is not None)
        self.act_unused_media.setEnabled(True)

    # ---- build ---------------------------------------------------------------------------
    def _reporter(self, phase: str):
        last = [0.0]

        def report(done: int, total: int, what: str):
            now = time.monotonic()
            if done >= total or now - last[0] >= PROGRESS_EVERY_S:
                last[0] = now
                self._relay.changed.emit(phase, done, total, what)
        return report

    def _start(self, kind: str, job, on_done):
        self.running = kind
        job = _frozen_heap(job)
        self._cancel.clear()
        self.panel.cancel_button.setEnabled(True)
        self.panel.cancel_button.setText("Cancel")
        self.panel.show_phase("prepare")
        self.update()
        self.window.statusBar().clearMessage()

        def done(result):
            self._stopped()
            try:
                on_done(result)
            finally:
                self.finished.emit(kind, True)

        def failed(exc):
            self._stopped()
            try:
                self._failed(kind, exc)
            finally:
                self.finished.emit(kind, False)
        self.tasks.run(job, done, failed)

    def _stopped(self):
        self.running = None
        self.panel.hide()
        self.update()

    def _progress(self, phase: str, done: int, total: int, what: str):
        if self.running is None:
            return  # a late report of a job already finished
        if phase == "publish" and self.panel.cancel_button.isEnabled():
            self.panel.cancel_button.setEnabled(False)  # a half-sent publish is worse than a whole one
            self.panel.cancel_button.setToolTip("A publish, once started, finishes")
        self.panel.show_phase(phase, done, total, what)

    def build(self, *_):
        """Build the site on the worker thread (incremental, atomic)."""
        if self.running is not None:
            return
        service, cancel, report = self.service, self._cancel.is_set, self._reporter("build")
        self._start("build", lambda: build_site(service, progress=report, cancel=cancel), self._built)

    def cancel(self):
        if self.running is not None and not self._cancel.is_set():
            self._cancel.set()
            self.panel.cancel_button.setEnabled(False)
            self.panel.cancel_button.setText("Cancelling…")

    def _built(self, result):
        self.last_result = result
        text = result.summary()
        self.window.statusBar().showMessage(text[0].upper() + text[1:], 8000)
        if result.warnings:
            self._warn("The site was built, with warnings", "\n\n".join(result.warnings))
        if self._open_after_build:
            self._open_after_build = False
            self.open_site()

    def _failed(self, kind: str, exc: BaseException):
        self._open_after_build = False
        if isinstance(exc, BuildCancelled):
            self.window.statusBar().showMessage(str(exc), 8000)
            return
        if isinstance(exc, ModulaError):
            text = str(exc)
        else:  # our bug, not the author's: the log gets the trace
            log.error("%s failed", kind, exc_info=exc)
            text = f"{type(exc).__name__}: {exc}"
        title = "The build stopped" if kind == "build" else "Publishing stopped"
        self.error_box = self._box(QMessageBox.Icon.Critical, title, text,
                                   "The last good build and the published site are unchanged."
                                   if kind == "build" else "Nothing more was sent.", "SiteErrorBox")

    def _box(self, icon, title: str, text: str, info: str, name: str, details: str = "") -> QMessageBox:
        box = QMessageBox(icon, title, text, QMessageBox.StandardButton.Close, self.window)
        box.setObjectName(name)
        box.setInformativeText(info)
        if details:
            box.setDetailedText(details)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()  # window-modal, not blocking
        return box

    def _warn(self, title: str, text: str):
        self.error_box = self._box(QMessageBox.Icon.Warning, title, text, "", "SiteWarningBox")

    # ---- open ----------------------------------------------------------------------------
    def site_url(self) -> str | None:
        """The local server's address of the last build (None: no server)."""
        server = self.window.server
        return None if server is None else server.url.rstrip("/") + "/site/"

    def has_build(self) -> bool:
        return read_manifest(default_output(self.service.site.root)) is not None

    def open_site(self, *_):
        """Open the last build in the browser; with no build yet, build first and open it then."""
        url = self.site_url()
        if url is None:
            return
        if not self.has_build():
            if self.running is None:
                self.window.statusBar().showMessage("There is no build yet: building the site first…", 5000)
                self._open_after_build = True
                self.build()
            elif self.running == "build":
                self.window.statusBar().showMessage("The site opens when the build has finished", 5000)
                self._open_after_build = True
            return
        self.window.open_in_browser(url)

    # ---- publish -------------------------------------------------------------------------
    def publish(self, name: str):
        """Build, then publish to the target called name, on the worker thread."""
        if self.running is not None:
            return
        target = self.targets().get(name)
        if target is None:
            self._failed("publish", ModulaError(f"There is no publish target '{name}' in modula.toml."))
            return
        from ..core.build.publish import publish

        service, cancel = self.service, self._cancel.is_set
        building, sending = self._reporter("build"), self._reporter("publish")

        def job():
            built = build_site(service, progress=building, cancel=cancel)
            self._relay.changed.emit("publish", 0, 0, target.name)
            return built, publish(service.site.root, built.out, target, progress=sending)

        self._start("publish", job, self._published)

    def _published(self, results):
        built, sent = results
        self.last_result = results
        lines = [f"+ {p}" for p in sent.sent[:LISTED]]
        if len(sent.sent) > LISTED:
            lines.append(f"… and {len(sent.sent) - LISTED} more")
        lines += [f"- {p}" for p in sent.deleted[:LISTED]]
        if len(sent.deleted) > LISTED:
            lines.append(f"… and {len(sent.deleted) - LISTED} more deleted")
        if sent.sent or sent.deleted:
            text = (f"Sent {len(sent.sent):,} file{'s' if len(sent.sent) != 1 else ''} and deleted "
                    f"{len(sent.deleted):,} at “{sent.target}”.")
        else:
            text = f"Nothing changed since the last publish to “{sent.target}”."
        info = (sent.detail + "\n\n" if sent.detail else "") + "The build: " + built.summary()
        if built.warnings:
            info += "\n\nWarnings: " + " ".join(built.warnings)
        self.report_box = self._box(QMessageBox.Icon.Information, "Published", text, info, "PublishReportBox",
                                    "\n".join(lines))
        self.window.statusBar().showMessage(sent.summary(), 8000)

    # ---- dialogs -------------------------------------------------------------------------
    def show_settings(self):
        from .site_settings import SiteSettingsDialog

        dialog = SiteSettingsDialog(self.service, self.window)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.saved.connect(lambda _site: self.window.statusBar().showMessage(
            "Site settings saved; the next build uses them", 5000))
        self._settings_dialog = dialog
        dialog.open()
        return dialog

    def show_unused_media(self):
        from .media_dialog import UnusedMediaDialog

        if self._media_dialog is None:
            self._media_dialog = UnusedMediaDialog(self.service, self.window)
        self._media_dialog.refresh()
        self._media_dialog.show()
        self._media_dialog.raise_()
        return self._media_dialog

    def store_media(self, source, alt: str = "") -> str:
        """The editor's paste and drop: the image goes to <site>/media/, the Markdown comes back."""
        return add_media(self.service.site.root, source, alt)

    # ---- closing -------------------------------------------------------------------------
    def shutdown(self, wait_ms: int = 30000):
        """Cancel a running build and wait for the worker (a publish finishes)."""
        self._closed = True
        self._cancel.set()
        self.tasks.wait(wait_ms)
        for d in (self._media_dialog,):
            if d is not None:
                d.close()
