"""The main window: content list, entry editor, actions, and the status bar with the server address.

Every content action goes through ``service.content`` (the same service, and so the same hooks, as the
HTTP API) on a worker thread, so a slow before-hook never freezes the window. A hook's refusal is shown
in the editor's message bar and the unsaved text stays where it is.
"""
from __future__ import annotations

import html
import logging
from urllib.parse import quote

from PySide6.QtCharts import QChartView
from PySide6.QtCore import QTimer, QUrl, Qt
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import HookAbort, NotFound, ValidationError
from . import plugin_health
from .autosave import AutosaveController, DraftStore
from .bridge import ServiceBridge
from .content_list import ContentList
from .editor import EntryEditor
from .metrics_view import MetricsRecorder, MetricsView
from .first_run import FirstRunBar
from .plugin_manager import PluginManagerDialog, copy_example_plugins
from .plugin_fields import FieldsPanel
from .plugin_screens import PluginPages
from .resources import icon
from .site_actions import SiteActions
from .tasks import TaskRunner
from .theme import MODES, ThemeManager, style_chart, themed_icon
from .trash_view import TrashDialog

log = logging.getLogger(__name__)

APP_TITLE = "Modula Desktop"
VERBS = {"save": "Saving", "create": "Creating", "publish": "Publishing", "unpublish": "Unpublishing",
         "delete": "Deleting", "restore": "Restoring"}
SOURCE = "editor"  # what the revisions of the window's saves record as their source
EVENT_VERBS = {"before_create": "create", "before_update": "save", "before_delete": "delete",
               "before_publish": "publish", "before_unpublish": "unpublish"}


class MainWindow(QMainWindow):
    def __init__(self, service, server=None, server_error: str | None = None, parent=None):
        super().__init__(parent)
        self.service = service
        self.content = service.content
        self.server = server
        self.server_error = server_error
        self.tasks = TaskRunner(self)
        self.bridge = ServiceBridge(service, self)
        self.recorder = MetricsRecorder(service.metrics, self)
        self._plugins_dialog: PluginManagerDialog | None = None
        self._metrics_view: MetricsView | None = None
        self._trash_dialog: TrashDialog | None = None
        self.theme = ThemeManager(parent=self)
        self._content_busy: str | None = None  # the content action running now, if any
        self._shut_down = False

        # Qt adds " — <applicationDisplayName>" to a title that does not end with it already: ending with
        # it ourselves gives one "site — Modula Desktop" whether or not the app set a display name.
        self.setWindowTitle(f"{service.site.root.name}[*] — {APP_TITLE}")
        self.setWindowIcon(icon("app"))
        self.list = ContentList(self.content, self)
        self.editor = EntryEditor(self)
        self.editor.words_per_minute = service.settings.window.words_per_minute
        split = QSplitter(Qt.Orientation.Horizontal, self)
        split.addWidget(self.list)
        split.addWidget(self.editor)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setSizes([440, 840])  # the list's titles need the room
        split.setChildrenCollapsible(False)
        # the sidebar: Content, then the plugins' screens (SPEC 3.12); hidden while there are none
        self.pages = PluginPages(split, service, self.bridge, self)
        self.fields = FieldsPanel(service, self.tasks, self.editor)  # [fields] of modula.toml, if any
        self.editor.fields_area.addWidget(self.fields)
        self.first_run: FirstRunBar | None = None
        if getattr(service, "new", False):
            self.first_run = FirstRunBar(service.site, self)
            self.first_run.copy_requested.connect(self.copy_example_plugins)
            central = QWidget(self)
            box = QVBoxLayout(central)
            box.setContentsMargins(8, 8, 8, 0)
            box.addWidget(self.first_run)
            box.addWidget(self.pages, 1)
            self.setCentralWidget(central)
        else:
            self.setCentralWidget(self.pages)

        self._make_actions()
        self._make_menus_and_toolbar()
        self._make_status_bar()

        self.list.entry_activated.connect(self._entry_activated)
        self.editor.dirty_changed.connect(self._dirty_changed)
        self._refused: dict | None = None  # what the editor held when a change was refused
        for changed in (self.editor.title.textChanged, self.editor.slug.textChanged,
                        self.editor.type.currentIndexChanged, self.editor.body.textChanged):
            changed.connect(self._clear_fixed_error)
        self.editor.restore_requested.connect(self.restore_revision)
        self.bridge.content_changed.connect(self._content_changed)
        self.bridge.plugin_changed.connect(lambda _name: self._plugins_timer.start())
        self.tasks.busy_changed.connect(self._update_actions)

        self._list_timer = QTimer(self)  # coalesce bursts of content events into one list refresh
        self._list_timer.setSingleShot(True)
        self._list_timer.setInterval(150)
        self._list_timer.timeout.connect(self.list.refresh)
        self._plugins_timer = QTimer(self)
        self._plugins_timer.setSingleShot(True)
        self._plugins_timer.setInterval(150)
        self._plugins_timer.timeout.connect(self._show_plugin_summary)
        self.bridge.log_written.connect(self._plugin_log)
        self._health_timer = QTimer(self)  # recent errors age out of the status bar's mark
        self._health_timer.setInterval(30_000)
        self._health_timer.timeout.connect(self._show_plugin_summary)
        self._health_timer.start()

        self.resize(1280, 800)
        self.list.refresh()
        ids = self.list.ids()
        if ids:
            self.open_entry(ids[0])
        else:
            self.editor.load(None, "page")
        self._show_plugin_summary()
        self._update_actions()
        self.recorder.start()
        self.theme.apply(force=True)
        if self.theme.scheme == "dark":
            self._theme_changed("dark")  # built light-iconed; the rest took the dark palette already
        self.theme.changed.connect(self._theme_changed)
        self._check_theme_action()
        self.autosave = AutosaveController(self, DraftStore(service.site.state_dir / "autosave"),
                                           int(service.settings.window.autosave_interval_s * 1000))
        self.autosave.start()

    # ---- actions, menus, toolbar ---------------------------------------------------------
    def _action(self, text, slot, shortcut=None, icon_name=None, tip=None) -> QAction:
        act = QAction(text, self)
        if icon_name:
            act.setIcon(icon(icon_name))
            act.setProperty("modula_icon", icon_name)  # drawn again for the other theme
        if shortcut:
            act.setShortcut(QKeySequence(shortcut))
        if tip or shortcut:
            sc = act.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
            act.setToolTip(f"{tip or text.replace('&', '')}" + (f" ({sc})" if sc else ""))
        act.triggered.connect(slot)
        return act

    def _make_actions(self):
        self.act_new_page = self._action("New &Page", lambda: self.new_entry("page"), QKeySequence.StandardKey.New,
                                         "new-page", "Create a new page")
        self.act_new_post = self._action("New P&ost", lambda: self.new_entry("post"), "Ctrl+Shift+N", "new-post",
                                         "Create a new post")
        self.act_save = self._action("&Save", self.save, QKeySequence.StandardKey.Save, "save", "Save the entry")
        self.act_publish = self._action("&Publish", self.publish, "Ctrl+Shift+P", "publish",
                                         "Save and publish the entry")
        self.act_unpublish = self._action("&Unpublish", self.unpublish, "Ctrl+Shift+U", "unpublish",
                                          "Make the entry a draft again")
        self.act_delete = self._action("&Delete…", self.delete, "Ctrl+Shift+Delete", "delete", "Delete the entry")
        self.act_refresh = self._action("&Refresh List", self.list.refresh, QKeySequence.StandardKey.Refresh)
        self.act_search = self._action("&Find…", self._focus_search, QKeySequence.StandardKey.Find)
        self.act_open_preview = self._action("Open Preview in &Browser", self.open_preview_in_browser,
                                             "Ctrl+Shift+B", "preview",
                                             "Open the saved entry's preview from the local server")
        self.act_copy_address = self._action("&Copy Server Address", self.copy_server_address, None, "copy")
        self.act_plugins = self._action("P&lugins…", self.show_plugins, "Ctrl+Shift+L", "plugins",
                                        "Plugins, approvals and logs")
        self.act_metrics = self._action("&Metrics", self.show_metrics, "Ctrl+Shift+M", "metrics",
                                        "Charts of plugin requests, latencies, hooks and errors")
        self.act_trash = self._action("&Trash…", self.show_trash, None, "delete",
                                      "Deleted entries: restore them or delete them for good")
        self.theme_actions = {}
        for mode, label in MODES:
            act = self._action(label, lambda _c=False, m=mode: self.set_theme(m))
            act.setCheckable(True)
            self.theme_actions[mode] = act
        # Build, Open and Publish Site, Unused Media, Site Settings; images pasted into the editor
        self.site_actions = SiteActions(self)
        self.act_quit = self._action("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.act_about = self._action("&About Modula Desktop", self._about)

    def _make_menus_and_toolbar(self):
        bar = self.menuBar()
        m = bar.addMenu("&File")
        m.addActions([self.act_new_page, self.act_new_post])
        m.addSeparator()
        m.addAction(self.act_save)
        m.addSeparator()
        m.addAction(self.act_quit)
        m = bar.addMenu("&Entry")
        m.addActions([self.act_save, self.act_publish, self.act_unpublish])
        m.addSeparator()
        m.addAction(self.act_delete)
        m.addAction(self.act_trash)
        m = bar.addMenu("&View")
        m.addActions([self.act_search, self.act_refresh])
        m.addSeparator()
        m.addActions([self.act_open_preview, self.act_copy_address])
        m.addSeparator()
        self.theme_menu = m.addMenu("T&heme")
        self.theme_menu.addActions(list(self.theme_actions.values()))
        self.site_menu = bar.addMenu("&Site")
        self.site_actions.fill_menu(self.site_menu)
        m = bar.addMenu("&Tools")
        m.addActions([self.act_plugins, self.act_metrics])
        m = bar.addMenu("&Help")
        m.addAction(self.act_about)

        tb = self.addToolBar("Main")
        tb.setObjectName("MainToolBar")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        tb.addActions([self.act_new_page, self.act_new_post])
        tb.addSeparator()
        tb.addActions([self.act_save, self.act_publish, self.act_unpublish, self.act_delete])
        tb.addSeparator()
        tb.addAction(self.act_open_preview)
        tb.addSeparator()
        self.site_actions.fill_toolbar(tb)
        tb.addSeparator()
        tb.addActions([self.act_plugins, self.act_metrics])
        self.toolbar = tb

    def _make_status_bar(self):
        sb = self.statusBar()
        self.busy = QProgressBar(self)
        self.busy.setRange(0, 0)
        self.busy.setMaximumWidth(110)
        self.busy.setMaximumHeight(14)
        self.busy.setTextVisible(False)
        self.busy.hide()
        self.plugin_label = QLabel(self)
        self.plugin_label.setObjectName("StatusPlugins")
        self.plugin_label.setTextFormat(Qt.TextFormat.RichText)
        self.plugin_label.linkActivated.connect(lambda _href: self.show_plugins())
        self.server_label = QLabel(self)
        self.server_label.setObjectName("ServerLabel")
        self.server_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.server_label.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.server_label.customContextMenuRequested.connect(self._server_menu)
        self.server_label.linkActivated.connect(self.open_in_browser)
        self.preview_button = QToolButton(self)
        self.preview_button.setDefaultAction(self.act_open_preview)
        self.preview_button.setAutoRaise(True)
        self.preview_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
        self.copy_button = QToolButton(self)
        self.copy_button.setDefaultAction(self.act_copy_address)
        self.copy_button.setAutoRaise(True)
        self.copy_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
        sb.addPermanentWidget(self.site_actions.panel)
        sb.addPermanentWidget(self.busy)
        sb.addPermanentWidget(self.plugin_label)
        sb.addPermanentWidget(self.server_label)
        sb.addPermanentWidget(self.copy_button)
        sb.addPermanentWidget(self.preview_button)
        self.set_server(self.server, self.server_error)

    def set_server(self, server, error: str | None = None):
        """Show the running server's address (None: why there is none)."""
        self.server, self.server_error = server, error
        if server is not None:
            url = server.url
            self.server_label.setText(f'Server: <a href="{url}">{url}</a>')
            self.server_label.setToolTip("The local server (127.0.0.1 only). Click to open; right-click to copy.")
        else:
            self.server_label.setText("Local server not available")
            self.server_label.setToolTip(error or "")
        self.act_copy_address.setEnabled(server is not None)
        self.copy_button.setVisible(server is not None)
        self.site_actions.update()
        self._update_actions()

    def server_url(self) -> str | None:
        return None if self.server is None else self.server.url.rstrip("/")

    def _server_menu(self, pos):
        menu = QMenu(self)
        menu.addAction(self.act_copy_address)
        if self.server is not None:
            menu.addAction("Open in Browser", lambda: self.open_in_browser(self.server_url()))
        menu.exec(self.server_label.mapToGlobal(pos))

    def copy_server_address(self):
        if self.server is not None:
            QGuiApplication.clipboard().setText(self.server_url())
            self.statusBar().showMessage("Server address copied", 3000)

    def preview_url(self) -> str | None:
        entry = self.editor.entry
        if self.server is None or entry is None or not entry.get("slug"):
            return None
        make = getattr(self.server, "preview_url", None)  # carries the preview key drafts need
        return make(entry["slug"]) if make else f"{self.server_url()}/preview/{quote(entry['slug'])}"

    def open_in_browser(self, url: str) -> bool:
        """Open url in the browser; when none can be started, say so and offer the link."""
        if QDesktopServices.openUrl(QUrl(url)):
            return True
        self.browser_failed(url)
        return False

    def open_preview_in_browser(self):
        url = self.preview_url()
        if not url or not self.open_in_browser(url):
            return
        if self.editor.is_dirty():
            self.statusBar().showMessage("The browser shows the last saved version", 4000)

    def browser_failed(self, url: str) -> QMessageBox:
        """No browser could be started: say so and offer the link, so the author can paste it anywhere."""
        box = QMessageBox(QMessageBox.Icon.Warning, APP_TITLE, "No web browser could be opened.", parent=self)
        box.setObjectName("BrowserFailedBox")
        box.setInformativeText(f"Open this address in a browser yourself:\n{url}")
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        copy = box.addButton("Copy Link", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Close)
        box.setDefaultButton(copy)

        def copied():
            QGuiApplication.clipboard().setText(url)
            self.statusBar().showMessage("Preview link copied", 3000)
        copy.clicked.connect(copied)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()  # window-modal, not blocking: the event loop (and tests) go on
        return box

    def _show_plugin_summary(self):
        text, tip, marked = plugin_health.status_summary(self.service)
        style = ' style="color:#cf222e"' if marked else ""
        self.plugin_label.setText(f'<a href="plugins"{style}>{html.escape(text)}</a>')
        self.plugin_label.setToolTip(tip + "\n\nClick to open the plugin manager." if tip
                                     else "Open the plugin manager")
        self.plugin_label.setProperty("marked", marked)

    def _plugin_log(self, entry):
        if isinstance(entry, dict) and entry.get("level") == "error":
            self._plugins_timer.start()  # an after-hook failure marks its plugin here too

    # ---- state -----------------------------------------------------------------------------
    def _update_actions(self, *_):
        busy = self._content_busy is not None
        entry = self.editor.entry
        status = entry.get("status") if entry else None
        self.act_save.setEnabled(not busy and (self.editor.is_dirty() or entry is None))
        self.act_publish.setEnabled(not busy and (status != "published" or self.editor.is_dirty()))
        self.act_unpublish.setEnabled(not busy and status == "published")
        self.act_delete.setEnabled(not busy and entry is not None)
        self.act_new_page.setEnabled(not busy)
        self.act_new_post.setEnabled(not busy)
        self.act_open_preview.setEnabled(self.preview_url() is not None)
        self.busy.setVisible(self.tasks.busy)

    def _dirty_changed(self, dirty: bool):
        self.setWindowModified(dirty)
        self._update_actions()

    # ---- switching entries ---------------------------------------------------------------
    def ask_unsaved(self) -> str:
        """'save', 'discard' or 'cancel'. Tests replace this method."""
        box = QMessageBox(QMessageBox.Icon.Warning, APP_TITLE, self.unsaved_text(),
                          QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                          | QMessageBox.StandardButton.Cancel, self)
        box.setInformativeText("Save them before you leave it?")
        box.setDefaultButton(QMessageBox.StandardButton.Save)
        answer = box.exec()
        return {QMessageBox.StandardButton.Save: "save",
                QMessageBox.StandardButton.Discard: "discard"}.get(QMessageBox.StandardButton(answer), "cancel")

    def unsaved_text(self) -> str:
        """The unsaved-changes question, naming the entry it is about."""
        entry = self.editor.entry
        typed = self.editor.values().get("title", "").strip()
        if entry is None:
            kind = self.editor.values().get("type") or "page"
            return f"The new {kind} “{typed}” is not saved yet." if typed else f"The new {kind} is not saved yet."
        name = entry.get("title") or entry.get("slug") or "(untitled)"
        return f"“{name}” has unsaved changes."

    def confirm(self, title: str, text: str) -> bool:
        """A yes/no question. Tests replace this method."""
        answer = QMessageBox.question(self, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def _leave_current(self, then) -> None:
        """Run then() once the editor may be replaced: at once, after a save, or never (cancel)."""
        if self._content_busy is not None:
            self.statusBar().showMessage(f"Wait until {self._content_busy.lower()} has finished", 3000)
            self._reselect_current()
            return
        if not self.editor.is_dirty():
            then()
            return
        choice = self.ask_unsaved()
        if choice == "discard":
            then()
        elif choice == "save":
            self.save(then=lambda _entry: then())
        else:
            self._reselect_current()

    def _reselect_current(self):
        entry = self.editor.entry
        QTimer.singleShot(0, lambda: self.list.select_id(entry["id"] if entry else None))

    def _entry_activated(self, entry_id: str):
        self._leave_current(lambda: self.open_entry(entry_id))

    def open_entry(self, entry_id: str):
        try:
            entry = self.content.get(entry_id)
        except NotFound:
            self.list.refresh()
            self.statusBar().showMessage("That entry no longer exists", 4000)
            return
        self.editor.load(entry)
        self.list.select_id(entry_id)
        self._load_revisions()
        self._update_actions()

    def _load_revisions(self):
        entry = self.editor.entry
        if entry is None:
            self.editor.revisions.set_revisions([])
            return
        try:
            revisions = self.content.revisions(entry["id"])
        except Exception:  # noqa: BLE001 - the editor works without them
            log.exception("could not read revisions of %s", entry["id"])
            revisions = []
        self.editor.revisions.set_revisions(revisions)

    def new_entry(self, kind: str = "page"):
        def go():
            self.editor.load(None, kind)
            self.list.select_id(None)
            self.editor.title.setFocus()
            self._update_actions()
        self._leave_current(go)

    def _focus_search(self):
        self.list.search.setFocus()
        self.list.search.selectAll()

    # ---- content actions (worker thread) --------------------------------------------------
    def _run_content(self, action: str, fn, on_done):
        self._content_busy = VERBS.get(action, action)
        self.editor.message_bar.hide()
        self._refused = None
        self.statusBar().showMessage(f"{self._content_busy}…")
        self._update_actions()

        def done(result):
            self._content_busy = None
            self.statusBar().clearMessage()
            try:
                on_done(result)
            finally:
                self._update_actions()

        def failed(exc):
            self._content_busy = None
            self.statusBar().clearMessage()
            self._content_error(action, exc)
            self._update_actions()

        self.tasks.run(fn, done, failed)

    def _content_error(self, action: str, exc: BaseException):
        """Tell the author why, in the editor; the text they typed stays untouched."""
        if isinstance(exc, HookAbort):
            verb = EVENT_VERBS.get(exc.event or "", action)
            who = f"plugin “{exc.plugin}”" if exc.plugin else "a plugin"
            self.editor.show_error(str(exc), f"Could not {verb}: {who} refused.")
        elif isinstance(exc, ValidationError):
            self.editor.show_error(str(exc), f"Could not {action}.")
        elif isinstance(exc, NotFound):
            self.editor.show_error(f"{exc} It may have been deleted elsewhere; your text is still here — "
                                   "use New Page and paste it to keep it.", f"Could not {action}.")
            self._list_timer.start()
        else:
            log.error("%s failed", action, exc_info=exc)
            self.editor.show_error(f"{type(exc).__name__}: {exc}", f"Could not {action}.")
        self.statusBar().showMessage(f"Could not {action}", 5000)
        self._refused = self.editor.values()

    def _clear_fixed_error(self, *_):
        """A refusal is about what the editor held then: once the author edits it, the bar has said its
        piece and would only stand over the fixed text (the next save says again if it still fails)."""
        if self._refused is None:
            return
        if self.editor.values() != self._refused:
            self._refused = None
            if self.editor.message_bar.isVisible() and self.editor.message_bar.kind == "error":
                self.editor.message_bar.hide()

    @staticmethod
    def _new_data(values: dict) -> dict:
        # an empty slug is left out: the service makes one from the title
        return {k: v for k, v in values.items() if v or k in ("title", "body")}

    def save(self, checked=False, then=None):
        """Create or update the entry from the editor; then(entry) runs after a successful save."""
        if self._content_busy is not None:
            return
        sent = self.editor.values()
        if self.editor.is_new():
            data = dict(self._new_data(sent), status="draft")
            self._run_content("create", lambda: self.content.create(data, source=SOURCE),
                              lambda entry: self._saved(entry, sent, "Created", then))
            return
        changes = self.editor.changes()
        entry_id = self.editor.entry["id"]
        if not changes:
            if then is not None:
                then(self.editor.entry)
            return
        self._run_content("save", lambda: self.content.update(entry_id, changes, source=SOURCE),
                          lambda entry: self._saved(entry, sent, "Saved", then))

    def publish(self):
        self._change_status("published", "publish", "Published")

    def unpublish(self):
        self._change_status("draft", "unpublish", "Unpublished")

    def _change_status(self, status: str, action: str, verb: str):
        """Publish or unpublish what the editor shows. Unsaved edits go with it in one change (the update
        and the publish hooks run in one transaction), so a refusing hook leaves nothing half-saved and
        the edits stay in the editor, still unsaved."""
        if self._content_busy is not None:
            return
        sent = self.editor.values()
        if self.editor.is_new():
            data = dict(self._new_data(sent), status=status)
            fn = lambda: self.content.create(data, source=SOURCE)  # noqa: E731
        elif self.editor.is_dirty():
            entry_id, changes = self.editor.entry["id"], dict(self.editor.changes(), status=status)
            fn = lambda: self.content.update(entry_id, changes, source=SOURCE)  # noqa: E731
        else:
            entry_id = self.editor.entry["id"]
            fn = lambda: getattr(self.content, action)(entry_id, source=SOURCE)  # noqa: E731
        self._run_content(action, fn, lambda entry: self._saved(entry, sent, verb))

    def _saved(self, entry: dict, sent: dict, verb: str, then=None):
        self.editor.mark_saved(entry, sent)
        self.list.select_id(entry["id"])
        self.list.refresh()
        self._load_revisions()
        self.statusBar().showMessage(f"{verb} “{entry.get('title') or entry.get('slug')}”", 3000)
        if then is not None:
            then(entry)

    def delete(self):
        entry = self.editor.entry
        if entry is None or self._content_busy is not None:
            return
        if not self.confirm("Move to Trash", f"Move “{entry.get('title') or entry.get('slug')}” to the Trash? "
                                             "It leaves the site and the list; Entry > Trash brings it back "
                                             "with its revisions."):
            return
        ids = self.list.ids()
        entry_id = entry["id"]
        nxt = None
        if entry_id in ids:
            i = ids.index(entry_id)
            rest = ids[:i] + ids[i + 1:]
            nxt = rest[min(i, len(rest) - 1)] if rest else None

        def deleted(_result):
            self.list.refresh()
            if nxt and nxt in self.list.ids():
                self.open_entry(nxt)
            else:
                self.editor.load(None, entry.get("type") or "page")
                self.list.select_id(None)
            self.statusBar().showMessage(f"Moved “{entry.get('title') or entry.get('slug')}” to the Trash", 3000)

        self._run_content("delete", lambda: self.content.delete(entry_id), deleted)

    def restore_revision(self, number: int):
        entry = self.editor.entry
        if entry is None or self._content_busy is not None:
            return
        if self.editor.is_dirty() and not self.confirm(
                "Restore revision", f"Restoring revision {number} replaces your unsaved changes. Continue?"):
            return

        def restored(new_entry):
            self.editor.load(new_entry)
            self.list.refresh()
            self._load_revisions()
            self.statusBar().showMessage(f"Restored revision {number}", 3000)

        self._run_content("restore", lambda: self.content.restore(entry["id"], number, source="restore"), restored)

    # ---- changes made elsewhere (HTTP API, after-hooks, other windows) ---------------------
    def _content_changed(self, event: str, entry):
        self._list_timer.start()
        current = self.editor.entry
        if self._content_busy is not None or current is None or not isinstance(entry, dict):
            return
        if entry.get("id") != current["id"]:
            return
        try:
            fresh = self.content.get(current["id"])
        except NotFound:
            if not self.editor.is_dirty():
                self.editor.load(None, current.get("type") or "page")
                self.list.select_id(None)
            self.editor.show_info("This entry was deleted elsewhere." +
                                  (" Your text is still here; Save creates it again as a new entry."
                                   if self.editor.is_dirty() else ""))
            if self.editor.is_dirty():
                self.editor.entry = None
            self._update_actions()
            return
        if fresh.get("updated_at") == current.get("updated_at") and fresh.get("status") == current.get("status"):
            return  # our own change coming back
        if self.editor.is_dirty():
            self.editor.message_bar.show_message(
                "This entry was changed elsewhere. Saving now overwrites those changes.", "warning")
            self.editor.entry = dict(current, updated_at=fresh.get("updated_at"), status=fresh.get("status"))
        else:
            self.editor.load(fresh)
            self._load_revisions()
        self._update_actions()

    def copy_example_plugins(self):
        """The first-run offer: copy the bundled example plugins in, off the GUI thread."""
        bar = self.first_run
        if bar is not None:
            bar.copy_button.setEnabled(False)

        def done(names):
            if bar is not None:
                bar.set_text(f"Copied {len(names)} example plugin{'s' if len(names) != 1 else ''}"
                             + (f" ({', '.join(names)})" if names else "")
                             + ". Open Plugins to approve what they may do.")
            self._show_plugin_summary()
            if self._plugins_dialog is not None:
                self._plugins_dialog.refresh_list()

        def failed(exc):
            if bar is not None:
                bar.copy_button.setEnabled(True)
                bar.set_text(f"Could not copy the example plugins: {exc}")
        self.tasks.run(lambda: copy_example_plugins(self.service), done, failed)

    # ---- other windows -------------------------------------------------------------------
    def show_plugins(self):
        if self._plugins_dialog is None:
            self._plugins_dialog = PluginManagerDialog(self.service, self.bridge, self.tasks, self)
        self._plugins_dialog.refresh_list()
        self._plugins_dialog.show()
        self._plugins_dialog.raise_()
        self._plugins_dialog.activateWindow()
        return self._plugins_dialog

    def show_trash(self):
        if self._trash_dialog is None:
            self._trash_dialog = TrashDialog(self)
        self._trash_dialog.refresh()
        self._trash_dialog.show()
        self._trash_dialog.raise_()
        self._trash_dialog.activateWindow()
        return self._trash_dialog

    def set_theme(self, mode: str):
        """System, light or dark (View > Theme), remembered for the next start."""
        self.theme.set_mode(mode)
        self._check_theme_action()

    def _theme_changed(self, scheme: str):
        dark = scheme == "dark"
        for act in self.findChildren(QAction):
            name = act.property("modula_icon")
            if name:
                act.setIcon(themed_icon(name, dark))
        # rich-text labels and the list take their link and muted colours when they are filled (and
        # QLabel ignores setText of the same text)
        for label in self.findChildren(QLabel):
            text = label.text()
            if "<a " in text:
                label.clear()
                label.setText(text)
        self.list.refresh()
        self._check_theme_action()

    def _check_theme_action(self):
        for mode, act in self.theme_actions.items():
            act.setChecked(mode == self.theme.mode)

    def show_metrics(self):
        if self._metrics_view is None:
            self._metrics_view = MetricsView(self.recorder, self)
            for view in self._metrics_view.findChildren(QChartView):
                style_chart(view.chart())
        self._metrics_view.show()
        self._metrics_view.raise_()
        self._metrics_view.activateWindow()
        return self._metrics_view

    def _about(self):
        from .. import __version__
        QMessageBox.about(self, f"About {APP_TITLE}",
                          f"<b>{APP_TITLE}</b> {__version__}<p>A desktop CMS for one website, with sandboxed, "
                          f"hot-reloadable Lua plugins.</p><p>Site: {self.service.site.root}</p>")

    # ---- closing ---------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent):  # noqa: N802 - Qt override
        if not self._shut_down and self.editor.is_dirty():
            choice = self.ask_unsaved()
            if choice == "cancel":
                event.ignore()
                return
            if choice == "discard":
                self.autosave.stop()
                self.autosave.discard_current()
            if choice == "save":
                event.ignore()
                self.save(then=lambda _e: self.close())
                return
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self, wait_ms: int = 30000):
        """Stop timers and wait for background work, before the service closes."""
        if self._shut_down:
            return
        self._shut_down = True
        self.autosave.flush()  # the last seconds of typing, should the process not end cleanly
        self.autosave.stop()
        self.recorder.stop()
        self._health_timer.stop()
        self.bridge.close()
        self.site_actions.shutdown(wait_ms)  # a running build is cancelled
        self.pages.close_all()
        if self.tasks.busy:
            self.statusBar().showMessage("Waiting for background work to finish…")
            QGuiApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
            try:
                self.tasks.wait(wait_ms)
            finally:
                QGuiApplication.restoreOverrideCursor()
        for w in (self._plugins_dialog, self._metrics_view, self._trash_dialog):
            if w is not None:
                w.close()
