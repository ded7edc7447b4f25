"""Plugin screens as pages of the main window (SPEC 3.12).

``PluginPages`` puts a sidebar beside the window's content view: "Content" first, then every screen the
running plugins declare (its label and icon). Choosing one shows its ``ScreenPage``, which opens a
session (core/plugins/runtime/screens.py) the first time and draws what the screen yields
(tui_widgets.ScreenView). The session runs on its own thread; its outputs come back through a queued
signal, so the window never waits for plugin code. A screen that fails — an error, a budget, an
unusable yield — is replaced by one message in its page with a Reload button; a screen that runs long
shows "working" until its time budget stops it.
"""
from __future__ import annotations

import html
import logging
import time

from PySide6.QtCore import QObject, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QStackedWidget,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from ..core.plugins.api import tui as protocol
from ..core.plugins.runtime.screens import Act, Ended, Failed, Render, UIEntry
from ..core.plugins.runtime.screens import text_of as _text
from .tui_widgets import ScreenView, warm_up

log = logging.getLogger(__name__)

TOAST_MS = 4000
BUSY_AFTER_MS = 400  # an event unanswered this long shows "working"
RESIZE_DEBOUNCE_MS = 200
# more navigate actions than this within the window are a loop (two screens opening each other)
NAVIGATE_BURST = 8  # navigate actions in a row with nothing done by the author in between
FAILURE_TITLES = {"timeout": "The screen was stopped: it ran too long",
                  "budget": "The screen was stopped: it ran too many instructions",
                  "memory": "The screen was stopped: it used too much memory",
                  "ops": "The screen was stopped: too many database operations",
                  "protocol": "The screen yielded something it cannot show",
                  "unapproved": "This screen is not approved yet",
                  "busy": "The plugin is busy",
                  "unavailable": "The screen cannot run now",
                  "error": "The screen failed",
                  "internal": "The screen failed"}
_STANDARD_ICONS = {"list": QStyle.StandardPixmap.SP_FileDialogListView,
                   "detail": QStyle.StandardPixmap.SP_FileDialogDetailedView,
                   "info": QStyle.StandardPixmap.SP_MessageBoxInformation,
                   "folder": QStyle.StandardPixmap.SP_DirIcon, "file": QStyle.StandardPixmap.SP_FileIcon,
                   "computer": QStyle.StandardPixmap.SP_ComputerIcon,
                   "trash": QStyle.StandardPixmap.SP_TrashIcon}


class Relay(QObject):
    """Carries a session's outputs from its thread to the GUI thread (a queued connection)."""

    output = Signal(object, object)  # session, output


def char_size(widget: QWidget) -> tuple[int, int]:
    """The widget's size in character cells, as a terminal would report it (width, height)."""
    fm = QFontMetrics(widget.font())
    return (max(20, widget.width() // max(1, fm.averageCharWidth())),
            max(5, widget.height() // max(1, fm.lineSpacing())))


class SessionHost(QWidget):
    """What screens and interfaces share: a session, its outputs on the GUI thread, toasts, confirms,
    the busy mark and the failure message. Subclasses say what a session is and what its actions do."""

    def __init__(self, host, parent=None):
        super().__init__(parent)
        self.last_input = 0.0  # time.monotonic() of the author's last key or click here
        self.host = host
        self.session = None
        self.sent = 0  # events sent to the current session
        self.relay = Relay(self)
        self.relay.output.connect(self._output)
        self.view = ScreenView(self)
        self.view.key.connect(self.send_key)
        self.view.keys.connect(self.send_keys)
        self._confirm: QMessageBox | None = None
        self.last_toast = ""
        self.toast = QLabel(self)
        self.toast.setObjectName("ScreenToast")
        self.toast.setWordWrap(True)
        self.toast.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.toast.hide()
        self._toast_timer = QTimer(self)
        self._toast_timer.setSingleShot(True)
        self._toast_timer.timeout.connect(self.toast.hide)
        self.panel = None  # the cell with the keyboard, last told to the plugin
        self._after_toast = False  # a toast's resize was sent and no event of the user's since
        QApplication.instance().focusChanged.connect(self._focus_changed)
        self.busy = QLabel("Working…", self)
        self.busy.setObjectName("ScreenBusy")
        self.busy.hide()
        self._busy_timer = QTimer(self)
        self._busy_timer.setSingleShot(True)
        self._busy_timer.setInterval(BUSY_AFTER_MS)
        self._busy_timer.timeout.connect(self._show_busy)

    # ---- sessions --------------------------------------------------------------------------------
    def open_session(self, plugin: str, kind: str, name: str, init: dict):
        self.close_session()
        self.sent = 0
        self.panel = None
        holder = []  # the session, for the callback that may run before open() returns

        def deliver(out):
            try:
                self.relay.output.emit(holder[0] if holder else None, out)
            except RuntimeError:  # the page is gone
                pass

        session = self.host.open(plugin, kind, name, init, deliver)
        holder.append(session)
        self.session = session
        self._busy_timer.start()
        return session

    def close_session(self):
        if self.session is not None:
            self.session.close()
            self.session = None
        self._busy_timer.stop()
        self.busy.hide()

    def send(self, event: dict, user: bool = True):
        if self.session is None or self.session.done:
            return
        if user:
            self._after_toast = False
        self.sent += 1
        self.session.send(event)
        if not self._busy_timer.isActive() and not self.busy.isVisible():
            self._busy_timer.start()

    def _focus_changed(self, _old, new):
        try:
            panel = self.view.panel_of(new)
        except RuntimeError:  # deleted
            return
        if panel is not None and panel != self.panel and self.session is not None:
            self.panel = panel
            self.send(protocol.focus_event(panel))

    def send_key(self, key: str):
        self.last_input = time.monotonic()
        self.send(protocol.key_event(key))

    def send_keys(self, keys: list):
        if self.session is None or self.session.done or not keys:
            return
        self.last_input = time.monotonic()
        self.sent += len(keys)
        self._after_toast = False
        self.session.send_many([protocol.key_event(k) for k in keys])
        if not self._busy_timer.isActive() and not self.busy.isVisible():
            self._busy_timer.start()

    def _output(self, session, out):
        if session is not None and session is not self.session:
            return  # a session closed meanwhile
        self._busy_timer.stop()
        self.busy.hide()
        if isinstance(out, Render):
            self.render(out)
        elif isinstance(out, Act):
            self.act(out)
        elif isinstance(out, Failed):
            self.session = None
            self.failed(out)
        elif isinstance(out, Ended):
            self.session = None
            self.ended(out)

    def render(self, out: Render):
        # a yield that answers the last event sent may set the editors; an older one must not undo typing
        self.show_view()
        self.view.show_yield(out.value, fresh=out.seq >= self.sent)

    def act(self, out: Act):
        p = out.params
        if out.name == "toast":
            self.show_toast(_text(p.get("message")), _text(p.get("level")) or "info")
            # ModulaCMS's terminal resumes the screen with the next key; here it gets its size again at
            # once (a resize event), so what led to the toast shows now, not after the next key. Once per
            # event of the user's: a screen that answers that resize with another toast waits for a key
            if not self._after_toast:
                self._after_toast = True
                self.send(protocol.resize_event(*char_size(self.view)), user=False)
        elif out.name == "confirm":
            self.ask(_text(p.get("title")) or "Confirm", _text(p.get("message")))

    def show_view(self):
        pass

    def failed(self, out: Failed):
        pass

    def ended(self, out: Ended):
        pass

    # ---- toast, confirm, busy --------------------------------------------------------------------
    def show_toast(self, message: str, level: str = "info"):
        """A notification over the page's corner that goes by itself: nothing waits for it."""
        self.last_toast = message
        self.toast.setProperty("level", level if level in ("info", "success", "warning", "error") else "info")
        self.toast.setStyleSheet(_toast_style(self.toast.property("level")))
        self.toast.setText(html.escape(message[:500]))
        self.toast.setMaximumWidth(max(200, self.width() // 2))
        self.toast.adjustSize()
        self._place_overlays()
        self.toast.show()
        self.toast.raise_()
        self._toast_timer.start(TOAST_MS)

    def ask(self, title: str, message: str):
        if self._confirm is not None:
            self._confirm.done(QMessageBox.StandardButton.No)
        box = QMessageBox(QMessageBox.Icon.Question, title[:200], message[:2000],
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.setObjectName("ScreenConfirm")
        session = self.session

        def answered(result):
            self._confirm = None
            if session is self.session:
                self.send(protocol.dialog_event(result == QMessageBox.StandardButton.Yes))
        box.finished.connect(answered)
        self._confirm = box
        box.open()

    def _show_busy(self):
        if self.session is not None and not self.session.done:
            self._place_overlays()
            self.busy.show()
            self.busy.raise_()

    def _place_overlays(self):
        self.toast.adjustSize()
        self.toast.move(max(0, self.width() - self.toast.width() - 16), max(0, self.height() - self.toast.height() - 16))
        self.busy.adjustSize()
        self.busy.move(max(0, self.width() - self.busy.width() - 12), 8)

    def resizeEvent(self, event):  # noqa: N802
        super().resizeEvent(event)
        self._place_overlays()


def _toast_style(level: str) -> str:
    colors = {"success": ("#1e7b34", "#ffffff"), "error": ("#b3261e", "#ffffff"),
              "warning": ("#8a6100", "#ffffff"), "info": ("#30343a", "#ffffff")}
    bg, fg = colors.get(level, colors["info"])
    return f"QLabel#ScreenToast {{ background:{bg}; color:{fg}; border-radius:6px; padding:8px 12px; }}"


class ScreenPage(SessionHost):
    """One plugin screen in the window."""

    navigate = Signal(str, str, dict)  # plugin, screen ("" with plugin "": a page of the window), params

    def __init__(self, host, entry: UIEntry, approvals=None, parent=None):
        super().__init__(host, parent)
        self.entry = entry
        self.approvals = approvals
        self.params: dict = {}
        self.started = False
        self.generation = None
        box = QVBoxLayout(self)
        box.setContentsMargins(12, 8, 12, 12)
        self.title = QLabel(self)
        self.title.setObjectName("ScreenTitle")
        f = self.title.font()
        f.setPointSizeF(f.pointSizeF() * 1.25)
        f.setBold(True)
        self.title.setFont(f)
        box.addWidget(self.title)
        self.stack = QStackedWidget(self)
        box.addWidget(self.stack, 1)
        # the message page: why the screen is not showing, and what to do about it
        self.message_page = QWidget(self)
        mbox = QVBoxLayout(self.message_page)
        mbox.addStretch(1)
        self.message_title = QLabel(self.message_page)
        self.message_title.setObjectName("ScreenMessageTitle")
        mf = self.message_title.font()
        mf.setBold(True)
        mf.setPointSizeF(mf.pointSizeF() * 1.1)
        self.message_title.setFont(mf)
        self.message_title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.message = QLabel(self.message_page)
        self.message.setObjectName("ScreenMessage")
        self.message.setWordWrap(True)
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.reload_button = QPushButton("Reload", self.message_page)
        self.reload_button.clicked.connect(self.reload)
        self.approve_button = QPushButton("Approve and open", self.message_page)
        self.approve_button.clicked.connect(self.approve)
        buttons.addWidget(self.approve_button)
        buttons.addWidget(self.reload_button)
        buttons.addStretch(1)
        mbox.addWidget(self.message_title)
        mbox.addWidget(self.message)
        mbox.addLayout(buttons)
        mbox.addStretch(2)
        self.stack.addWidget(self.message_page)
        self.stack.addWidget(self.view)
        self._resize_timer = QTimer(self)
        self._resize_timer.setSingleShot(True)
        self._resize_timer.setInterval(RESIZE_DEBOUNCE_MS)
        self._resize_timer.timeout.connect(self._send_resize)
        self._last_size = None
        self.set_entry(entry)

    def set_entry(self, entry: UIEntry):
        self.entry = entry
        self.title.setText(f"{entry.label}")
        self.title.setToolTip(f"Screen '{entry.name}' of plugin {entry.plugin} {entry.version}")

    # ---- lifecycle ---------------------------------------------------------------------------------
    def ensure_started(self):
        if not self.started:
            self.start()

    def start(self, params: dict | None = None):
        if params is not None:
            self.params = params
        self.started = True
        plugin = self.host.manager.plugins.get(self.entry.plugin)
        self.generation = plugin.current if plugin is not None else None  # a reload starts the page again
        if not self.entry.approved:
            self.close_session()
            self.show_message("unapproved",
                              f"Plugin {self.entry.plugin} asks to show the screen '{self.entry.label}'. Screens "
                              "run the plugin's code when you open them; approve it to open it.")
            return
        w, h = char_size(self.stack)
        self._last_size = (w, h)
        self.open_session(self.entry.plugin, "screen", self.entry.name, protocol.init_event(w, h, self.params))
        if self.stack.currentWidget() is self.message_page:
            self.show_message(None, "Opening…", buttons=False)

    def reload(self):
        self.start()

    def approve(self):
        e = self.entry
        answer = QMessageBox.question(self, "Approve screen",
                                      f"Let plugin {e.plugin} {e.version} show its screen '{e.label}'?\n\n"
                                      "Its code runs in the sandbox, under the plugin's budgets, when you open it.")
        if answer != QMessageBox.StandardButton.Yes or self.approvals is None:
            return
        self.approvals.set_ui(e.plugin, "screen", e.name, True)
        self.entry = UIEntry(**{**e.__dict__, "approved": True})
        self.start()

    def stop(self, why: str):
        """The plugin stopped or the screen went away: close the session and say so."""
        self.close_session()
        self.started = False
        self.show_message("unavailable", why)

    # ---- outputs -----------------------------------------------------------------------------------
    def show_view(self):
        self.stack.setCurrentWidget(self.view)

    def show_message(self, kind: str | None, text: str, buttons: bool = True):
        self.message_title.setText(FAILURE_TITLES.get(kind, "") if kind else "")
        self.message_title.setVisible(bool(kind))
        self.message.setText(text)
        self.approve_button.setVisible(kind == "unapproved")
        self.reload_button.setVisible(buttons and kind != "unapproved")
        self.stack.setCurrentWidget(self.message_page)

    def failed(self, out: Failed):
        log.info("screen %s/%s stopped: %s", self.entry.plugin, self.entry.name, out.message)
        self.show_message(out.kind, out.message)

    def ended(self, out: Ended):
        self.show_message(None, "The screen has ended.")
        self.reload_button.setText("Start again")

    def act(self, out: Act):
        super().act(out)
        p = out.params
        if out.name == "navigate":
            page = _text(p.get("page"))
            params = p.get("params") if isinstance(p.get("params"), dict) else {}
            params = {str(k): _text(v) for k, v in params.items()}
            if page:
                self.navigate.emit("", page, params)
            else:
                self.navigate.emit(_text(p.get("plugin")) or self.entry.plugin, _text(p.get("screen")), params)

    def render(self, out: Render):
        self.reload_button.setText("Reload")
        super().render(out)

    def resizeEvent(self, event):  # noqa: N802
        super().resizeEvent(event)
        if self.session is not None:
            self._resize_timer.start()

    def _send_resize(self):
        size = char_size(self.stack)
        if size != self._last_size and self.session is not None:
            self._last_size = size
            self.send(protocol.resize_event(*size))

    def closeEvent(self, event):  # noqa: N802
        self.close_session()
        super().closeEvent(event)


class PluginPages(QWidget):
    """The sidebar (Content, then the plugins' screens) and the page it shows."""

    CONTENT = "content"

    def __init__(self, content: QWidget, service, bridge=None, parent=None):
        super().__init__(parent)
        self.service = service
        self.host = service.screens
        self.content = content
        self.pages: dict[tuple, ScreenPage] = {}
        self._navigations: list[float] = []  # the navigate actions since the author last did something
        self._picked_at = 0.0  # time.monotonic() of the author's last pick in the sidebar
        box = QHBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(0)
        self.sidebar = QListWidget(self)
        self.sidebar.setObjectName("Sidebar")
        self.sidebar.setIconSize(QSize(18, 18))
        self.sidebar.currentItemChanged.connect(self._picked)
        self.stack = QStackedWidget(self)
        self.stack.addWidget(content)
        box.addWidget(self.sidebar)
        box.addWidget(self.stack, 1)
        self.refresh()
        if bridge is not None:
            bridge.plugin_changed.connect(lambda _name: self._refresh_timer.start())
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(150)
        self._refresh_timer.timeout.connect(self.refresh)

    def refresh(self):
        """The sidebar again from the running plugins; pages of a reloaded plugin start again on the new
        version, pages of a stopped one say so."""
        every = self.host.entries("screen")
        entries = [e for e in every if not e.hidden]
        current = self.sidebar.currentItem()
        current_key = current.data(Qt.ItemDataRole.UserRole) if current else self.CONTENT
        self.sidebar.blockSignals(True)
        try:
            self.sidebar.clear()
            item = QListWidgetItem(self.style().standardIcon(QStyle.StandardPixmap.SP_FileDialogContentsView),
                                   "Content")
            item.setData(Qt.ItemDataRole.UserRole, self.CONTENT)
            self.sidebar.addItem(item)
            for e in entries:
                label = e.label if e.approved else f"{e.label} (not approved)"
                item = QListWidgetItem(self._icon(e), label)
                item.setData(Qt.ItemDataRole.UserRole, e.key)
                item.setToolTip(f"{e.plugin}: {e.name}")
                self.sidebar.addItem(item)
            seen = set()
            for e in every:
                seen.add(e.key)
                page = self.pages.get(e.key)
                if page is None:
                    continue
                plugin = self.service.plugins.plugins.get(e.plugin)
                stale = plugin is not None and page.generation is not None and plugin.current is not page.generation
                was_approved = page.entry.approved
                page.set_entry(e)
                if page.started and (stale or was_approved != e.approved):
                    page.start()
            for key in list(self.pages):
                if key not in seen:
                    self.pages[key].stop(f"Plugin {key[0]} is not running, or no longer has this screen.")
            keys = [self.sidebar.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.sidebar.count())]
            row = keys.index(current_key) if current_key in keys else 0
            self.sidebar.setCurrentRow(row)
        finally:
            self.sidebar.blockSignals(False)
        # as wide as its longest label, within reason: the content view keeps the room
        fm = self.sidebar.fontMetrics()
        widest = max(fm.horizontalAdvance(self.sidebar.item(i).text()) for i in range(self.sidebar.count()))
        self.sidebar.setFixedWidth(max(110, min(220, widest + 56)))
        self.sidebar.setVisible(self.sidebar.count() > 1)
        if self.sidebar.count() > 1:
            warm_up()
        shown = self.stack.currentWidget()
        if not (isinstance(shown, ScreenPage) and shown.entry.key in seen):
            self._show(self.sidebar.currentItem())

    def _icon(self, e: UIEntry):
        std = _STANDARD_ICONS.get(e.icon, QStyle.StandardPixmap.SP_FileDialogInfoView)
        return self.style().standardIcon(std)

    def _picked(self, item, _previous=None):
        self._picked_at = time.monotonic()
        self._show(item)

    def _show(self, item):
        key = item.data(Qt.ItemDataRole.UserRole) if item else self.CONTENT
        if key == self.CONTENT:
            self.stack.setCurrentWidget(self.content)
            return
        self._show_key(key)

    def _show_key(self, key, params: dict | None = None) -> ScreenPage | None:
        page = self.pages.get(key)
        if page is None:
            entry = next((e for e in self.host.entries("screen") if e.key == key), None)
            if entry is None:
                return None
            page = ScreenPage(self.host, entry, self.service.approvals, self)
            page.navigate.connect(self.navigate)
            self.pages[key] = page
            self.stack.addWidget(page)
        self.stack.setCurrentWidget(page)
        if params is not None:
            page.start(params)
        else:
            page.ensure_started()
        return page

    def open_screen(self, plugin: str, name: str, params: dict | None = None) -> ScreenPage | None:
        """Show a screen (a hidden one too: navigate reaches those), started with params if given."""
        key = (plugin, "screen", name)
        for i in range(self.sidebar.count()):
            if self.sidebar.item(i).data(Qt.ItemDataRole.UserRole) == key:
                self.sidebar.blockSignals(True)
                self.sidebar.setCurrentRow(i)
                self.sidebar.blockSignals(False)
                break
        else:
            self.sidebar.clearSelection()
        return self._show_key(key, params or None)

    def show_content(self):
        self.sidebar.setCurrentRow(0)

    def navigate(self, plugin: str, screen: str, params: dict):
        sender = self.sender()
        now = time.monotonic()
        # counted since the author's last key, click or pick: screens that keep opening each other,
        # however slowly, are stopped; the author moving through screens never is
        latest = max([self._picked_at] + [getattr(p, "last_input", 0.0) for p in self.pages.values()])
        self._navigations = [t for t in self._navigations if t > latest] + [now]
        if len(self._navigations) > NAVIGATE_BURST:
            # two screens that open each other would start sessions for ever
            if isinstance(sender, ScreenPage):
                sender.show_toast("Navigation stopped: the screens kept opening each other.", "error")
            return
        if not plugin:  # a page of the window; "content" is the one there is
            self.show_content()
            return
        page = self.open_screen(plugin, screen, params)
        if page is None:
            if isinstance(sender, ScreenPage):
                sender.show_toast(f"There is no screen '{screen}' of plugin {plugin} to go to.", "error")

    def close_all(self):
        for page in self.pages.values():
            page.close_session()
