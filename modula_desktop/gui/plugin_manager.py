"""The plugin manager dialog: state, version, declared permissions, route and hook approvals,
enable/disable/reload (off the GUI thread), the live plugin log, breaker and VM pool health."""
from __future__ import annotations

import json
import logging

from PySide6.QtCore import QTimer, QUrl, Qt
from PySide6.QtGui import QColor, QDesktopServices, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFrame,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .content_list import short_time
from . import plugin_health
from .message_bar import MessageBar
from .resources import icon

log = logging.getLogger(__name__)

STATE_COLORS = {"running": "#1a7f37", "failed": "#cf222e", "stopped": "#8c959f", "loading": "#9a6700",
                "discovered": "#9a6700"}
DEFAULT_PERMISSIONS = "all (ModulaCMS default)"
KEY_ROLE = Qt.ItemDataRole.UserRole
LOG_LIMIT = 300
HEALTH_LOG = 500  # log entries read to count a plugin's recent errors (the logbook keeps 500)
HEALTH_COLORS = {plugin_health.OK: STATE_COLORS["running"], plugin_health.PENDING: "#9a6700",
                 plugin_health.WARNING: "#bc4c00", plugin_health.FAILED: STATE_COLORS["failed"],
                 plugin_health.STOPPED: STATE_COLORS["stopped"]}


def state_icon(state: str, color: str | None = None) -> QIcon:
    pix = QPixmap(12, 12)
    pix.fill(Qt.GlobalColor.transparent)
    p = QPainter(pix)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QColor(color or STATE_COLORS.get(state, "#8c959f")))
    p.drawEllipse(1, 1, 10, 10)
    p.end()
    return QIcon(pix)


def copy_example_plugins(service) -> list[str]:
    """Copy the bundled example plugins into the site (never over a folder it has) and start the new
    ones. Returns their names. Runs on a worker thread: loading a plugin takes a moment."""
    before = set(service.plugins.folders())  # folders: a plugin is named by its plugin_info.name
    service.site.seed_bundled_plugins()
    from ..core.plugins.lifecycle.manager import discover

    added = []
    for root in discover(service.plugins.plugins_dir):
        if root.name not in before and service.plugins.plugin_for_folder(root.name) is None:
            try:
                service.plugins.add(root.name)
            except Exception:  # noqa: BLE001 - hot reload may have added it meanwhile
                log.warning("could not add plugin %s", root.name, exc_info=True)
        if root.name not in before:
            plugin = service.plugins.plugin_for_folder(root.name)
            added.append(plugin.name if plugin is not None else root.name)
    return sorted(added)


class EmptyPluginsPanel(QFrame):
    """What a site without plugins shows instead of blank details: how to add one."""

    def __init__(self, plugins_dir, parent=None):
        super().__init__(parent)
        self.setObjectName("EmptyPluginsPanel")
        self.plugins_dir = plugins_dir
        self.folder_url = QUrl.fromLocalFile(str(plugins_dir))
        heading = QLabel("No plugins in this site yet", self)
        heading.setObjectName("PluginTitle")
        font = heading.font()
        font.setPointSizeF(font.pointSizeF() * 1.4)
        font.setBold(True)
        heading.setFont(font)
        self.explain = QLabel(self)
        self.explain.setWordWrap(True)
        self.explain.setTextFormat(Qt.TextFormat.RichText)
        self.explain.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.explain.setText(
            "A plugin is a folder with an <code>init.lua</code> in the site's plugins folder:"
            f"<p><code>{_html(str(plugins_dir))}</code></p>"
            "<p>Create one from a terminal with</p>"
            f"<p><code>modula plugin init NAME --site {_html(str(plugins_dir.parent))}</code></p>"
            "<p>or copy a plugin folder there. New folders load by themselves while hot reload is on; "
            "nothing a plugin declares runs until you approve it here.</p>")
        self.open_button = QPushButton(icon("plugins"), "Open Plugins Folder", self)
        self.open_button.setObjectName("OpenPluginsFolder")
        self.open_button.setProperty("url", self.folder_url.toString())
        self.open_button.setToolTip(str(plugins_dir))
        self.examples_button = QPushButton("Copy Example Plugins", self)
        self.examples_button.setObjectName("CopyExamplePlugins")
        self.examples_button.setToolTip("Copy the four example plugins that come with Modula Desktop into "
                                        "this site")
        self.status = QLabel(self)
        self.status.setObjectName("MutedLabel")
        self.status.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.examples_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 16, 16, 16)
        layout.addWidget(heading)
        layout.addWidget(self.explain)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.open_button.clicked.connect(self.open_folder)

    def open_folder(self) -> bool:
        self.plugins_dir.mkdir(parents=True, exist_ok=True)
        ok = QDesktopServices.openUrl(self.folder_url)
        if not ok:
            self.status.setText(f"No file manager could be opened. The folder is {self.plugins_dir}")
        return ok


def _html(text: str) -> str:
    import html

    return html.escape(text)


def permissions_text(info: dict) -> str:
    """Declared permissions as shown to the user; undeclared means the ModulaCMS default of everything."""
    declared = info.get("permissions")
    core = [f"core:{a} (core_access)" for a in info.get("core_access") or []
            if declared is None or f"core:{a}" not in declared]
    if declared is None:
        return ", ".join([DEFAULT_PERMISSIONS] + core)
    return ", ".join(list(declared) + core) if declared or core else "none"


CORE_ACCESS_TEXT = {"read": "read pages, posts and their revisions (drafts too)",
                    "write": "create, change and delete pages and posts"}


def format_log_entry(entry: dict) -> str:
    stamp = (entry.get("time") or "")[11:19]
    text = f"{stamp}  {entry.get('level', 'info').upper():5}  {entry.get('message', '')}"
    if entry.get("context"):
        text += "  " + json.dumps(entry["context"], ensure_ascii=False, default=str)
    return text


class PermissionsLabel(QLabel):
    """The declared permissions, amber when the plugin declared none (it gets every module)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("PermissionsLabel")
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

    def set_info(self, info: dict):
        text = permissions_text(info)
        undeclared = info.get("permissions") is None
        self.setText(text)
        self.setProperty("undeclared", undeclared)
        self.setToolTip(
            "The plugin does not declare plugin_info.permissions, so it gets every module: "
            + ", ".join(info.get("effective_permissions") or []) if undeclared
            else "The plugin gets only these modules.")
        self.style().unpolish(self)
        self.style().polish(self)


def _hook_effect(event: str, table: str) -> str:
    """What approving a hook lets it do, in the Effect column."""
    if table not in ("content", "*"):
        return f"never runs: the site has no table '{table}'"
    if event == "before_read":
        return "may refuse a read (admin API, preview, build)"
    if event == "after_read":
        return "may hide or replace fields a read returns"
    return "may refuse or change the entry" if event.startswith("before_") else "runs after the change"


class ApprovalTable(QWidget):
    """A table of routes or hooks with an Approved checkbox per row and Approve all / Revoke all."""

    def __init__(self, columns: list[str], what: str, stretch: int, parent=None):
        super().__init__(parent)
        self.what = what
        self.permissions = PermissionsLabel(self)
        self.explain = QLabel(self)
        self.explain.setObjectName("MutedLabel")
        self.explain.setWordWrap(True)
        self.table = QTableWidget(0, len(columns) + 1, self)
        self.table.setHorizontalHeaderLabels(["Approved"] + columns)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)
        header.setStretchLastSection(False)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        rows = self.table.verticalHeader()
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        rows.setDefaultSectionSize(self.fontMetrics().height() + 10)
        self.approve_all = QPushButton(f"Approve all {what}", self)
        self.revoke_all = QPushButton(f"Revoke all {what}", self)
        perm_row = QHBoxLayout()
        perm_row.addWidget(QLabel("Declared permissions:", self))
        perm_row.addWidget(self.permissions)
        perm_row.addStretch(1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.explain, 1)
        buttons.addWidget(self.approve_all)
        buttons.addWidget(self.revoke_all)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 8, 6, 6)
        layout.addLayout(perm_row)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)

    def set_rows(self, rows: list[tuple[tuple, bool, list[str], str]]):
        """rows: (key, approved, cells, tooltip). Emits no itemChanged while filling."""
        self.table.blockSignals(True)
        try:
            self.table.setRowCount(len(rows))
            for r, (key, approved, cells, tip) in enumerate(rows):
                check = QTableWidgetItem("")
                check.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled |
                               Qt.ItemFlag.ItemIsSelectable)
                check.setCheckState(Qt.CheckState.Checked if approved else Qt.CheckState.Unchecked)
                check.setData(KEY_ROLE, key)
                check.setToolTip("Approved: runs" if approved else "Not approved: never runs")
                self.table.setItem(r, 0, check)
                for c, text in enumerate(cells, start=1):
                    item = QTableWidgetItem(text)
                    item.setToolTip(tip)
                    self.table.setItem(r, c, item)
        finally:
            self.table.blockSignals(False)
        any_rows = bool(rows)
        self.approve_all.setEnabled(any_rows and not all(a for _, a, _, _ in rows))
        self.revoke_all.setEnabled(any(a for _, a, _, _ in rows))

    def keys(self) -> list[tuple]:
        return [self.table.item(r, 0).data(KEY_ROLE) for r in range(self.table.rowCount())]

    def is_checked(self, row: int) -> bool:
        return self.table.item(row, 0).checkState() == Qt.CheckState.Checked


class PluginManagerDialog(QDialog):
    def __init__(self, service, bridge, tasks, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Plugins — Modula Desktop")
        self.setWindowIcon(icon("plugins"))
        self.setWindowFlag(Qt.WindowType.WindowMaximizeButtonHint, True)
        self.service = service
        self.plugins = service.plugins
        self.approvals = service.approvals
        self.tasks = tasks
        self.current: str | None = None
        self._info: dict = {}
        self._route_public: dict = {}  # (method, path) -> public, of the routes shown
        self._busy: dict[str, str] = {}  # plugin -> what runs ("Reloading", ...)

        # --- the list of plugins --------------------------------------------------------
        self.list = QTreeWidget(self)
        self.list.setObjectName("PluginList")
        self.list.setHeaderLabels(["Plugin", "Version", "State"])
        self.list.setRootIsDecorated(False)
        self.list.setUniformRowHeights(True)
        self.list.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.list.header().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.list.header().setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.list.header().setStretchLastSection(False)
        self.empty_hint = QLabel("No plugins yet.", self)
        self.empty_hint.setWordWrap(True)
        self.empty_hint.setObjectName("MutedLabel")
        left = QWidget(self)
        left.setMinimumWidth(220)
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addWidget(self.list, 1)
        lv.addWidget(self.empty_hint)
        self._left = left

        # --- details --------------------------------------------------------------------
        self.message_bar = MessageBar(self)
        # a message must not push the controls below it down (the next click would miss): the bar
        # keeps a fixed slot, shown or not, and a longer text wraps inside it (all of it in the tooltip)
        policy = self.message_bar.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        policy.setVerticalPolicy(QSizePolicy.Policy.Fixed)
        self.message_bar.setSizePolicy(policy)
        self.message_bar.setFixedHeight(2 * self.fontMetrics().lineSpacing() + 26)
        self.title = QLabel(self)
        self.title.setObjectName("PluginTitle")
        self.state_badge = QLabel(self)
        self.state_badge.setObjectName("StatusBadge")
        self.description = QLabel(self)
        self.description.setWordWrap(True)
        self.error = QLabel(self)
        self.error.setObjectName("ErrorLabel")
        self.error.setWordWrap(True)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.hide()  # an empty error box is a pink bar saying nothing
        self.pending_label = QLabel(self)
        self.pending_label.setObjectName("PendingLabel")
        self.pending_label.setWordWrap(True)
        self.pending_label.hide()
        self.health_state: dict[str, plugin_health.Health] = {}
        self.permissions = PermissionsLabel(self)
        self.author = QLabel(self)
        self.author.setObjectName("MutedLabel")

        self.enable_button = QPushButton("Enable", self)
        self.disable_button = QPushButton("Disable", self)
        self.reload_button = QPushButton(icon("reload"), "Reload", self)
        self.reload_button.setToolTip("Blue-green reload: the new version loads beside the old one, which keeps "
                                      "serving until the new one is ready.")
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 0)  # busy indicator
        self.progress.setMaximumWidth(140)
        self.progress.setTextVisible(False)
        self.progress.hide()
        self.busy_label = QLabel(self)
        self.busy_label.setObjectName("MutedLabel")

        self.routes = ApprovalTable(["Method", "Path", "Access"], "routes", 2, self)
        self.routes.explain.setText("An unapproved route answers 404, exactly like an unknown one.")
        self.hooks = ApprovalTable(["Event", "Table", "Priority", "Effect", "State"], "hooks", 5, self)
        self.hooks.explain.setText("An unapproved hook never runs. Before-hooks may refuse or change an entry.")
        self.log_view = QPlainTextEdit(self)
        self.log_view.setObjectName("PluginLog")
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)
        self.log_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.health = QWidget(self)
        self.health_form = QFormLayout(self.health)
        self.health_form.setContentsMargins(10, 10, 10, 10)
        self.health_labels = {}
        for key, label in (("summary", "Health"), ("breaker", "Requests"), ("hook_breaker", "Hooks"),
                           ("pool", "VM pool"),
                           ("last_reload", "Last reload"), ("warnings", "Warnings"), ("schema_errors", "Table errors"),
                           ("last_errors", "Last errors")):
            value = QLabel(self.health)
            value.setWordWrap(True)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.health_labels[key] = value
            self.health_form.addRow(f"{label}:", value)

        self.tabs = QTabWidget(self)
        self.tabs.addTab(self.routes, "Routes")
        self.tabs.addTab(self.hooks, "Hooks")
        self.tabs.addTab(self.log_view, "Log")
        self.tabs.addTab(self.health, "Health")
        # the request module's outbound domains, after Hooks (SPEC 3.11)
        self.domains = ApprovalTable(["Domain", "Description"], "domains", 2, self)
        self.domains.explain.setText("The plugin may send HTTP requests only to approved domains "
                                     "(never to private or local addresses).")
        self.tabs.insertTab(2, self.domains, "Domains")
        self.domains.table.itemChanged.connect(self._domain_toggled)
        self.domains.approve_all.clicked.connect(lambda: self._set_all_domains(True))
        self.domains.revoke_all.clicked.connect(lambda: self._set_all_domains(False))
        # the core module's content access, after Domains (SPEC 3.10)
        self.core = ApprovalTable(["Access", "What it allows"], "access", 2, self)
        self.core.explain.setText("What the plugin may do with your pages and posts. Its changes run every "
                                  "plugin's hooks and are kept as revisions.")
        self.tabs.insertTab(3, self.core, "Content")
        self.core.table.itemChanged.connect(self._core_toggled)
        self.core.approve_all.clicked.connect(lambda: self._set_all_core(True))
        self.core.revoke_all.clicked.connect(lambda: self._set_all_core(False))
        # screens (pages of the window's sidebar) and field interfaces (SPEC 3.12)
        self.screens = ApprovalTable(["Name", "Kind", "Label"], "screens", 3, self)
        self.screens.explain.setText("Screens are pages in the window's sidebar; field interfaces edit custom "
                                     "fields in the editor. Their code runs when you open them.")
        self.tabs.insertTab(3, self.screens, "Screens")
        self.screens.table.itemChanged.connect(self._screen_toggled)
        self.screens.approve_all.clicked.connect(lambda: self._set_all_screens(True))
        self.screens.revoke_all.clicked.connect(lambda: self._set_all_screens(False))

        head = QHBoxLayout()
        head.addWidget(self.title)
        head.addWidget(self.state_badge)
        head.addStretch(1)
        head.addWidget(self.author)
        perms = QHBoxLayout()
        perms.addWidget(QLabel("Permissions:", self))
        perms.addWidget(self.permissions)
        perms.addStretch(1)
        actions = QHBoxLayout()
        actions.addWidget(self.enable_button)
        actions.addWidget(self.disable_button)
        actions.addWidget(self.reload_button)
        actions.addSpacing(8)
        actions.addWidget(self.progress)
        actions.addWidget(self.busy_label)
        actions.addStretch(1)
        right = QWidget(self)
        rv = QVBoxLayout(right)
        rv.setContentsMargins(4, 0, 0, 0)
        rv.addWidget(self.message_bar)
        rv.addLayout(head)
        rv.addWidget(self.description)
        rv.addLayout(perms)
        rv.addLayout(actions)
        rv.addWidget(self.error)
        rv.addWidget(self.pending_label)
        rv.addWidget(self.tabs, 1)
        self.details = right
        self.empty_panel = EmptyPluginsPanel(service.plugins.plugins_dir, self)
        self.empty_panel.examples_button.clicked.connect(self.copy_examples)
        self.right_stack = QStackedWidget(self)
        self.right_stack.addWidget(right)
        self.right_stack.addWidget(self.empty_panel)

        split = QSplitter(Qt.Orientation.Horizontal, self)
        split.addWidget(left)
        split.addWidget(self.right_stack)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setSizes([360, 660])  # room for a 32-character plugin name beside its state
        split.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.addWidget(split)
        self.resize(1060, 640)

        # --- wiring ---------------------------------------------------------------------
        self.list.currentItemChanged.connect(self._picked)
        self.enable_button.clicked.connect(lambda: self.run_lifecycle("enable"))
        self.disable_button.clicked.connect(lambda: self.run_lifecycle("disable"))
        self.reload_button.clicked.connect(lambda: self.run_lifecycle("reload"))
        self.routes.table.itemChanged.connect(self._route_toggled)
        self.hooks.table.itemChanged.connect(self._hook_toggled)
        self.routes.approve_all.clicked.connect(lambda: self.set_all_routes(True))
        self.routes.revoke_all.clicked.connect(lambda: self.set_all_routes(False))
        self.hooks.approve_all.clicked.connect(lambda: self.set_all_hooks(True))
        self.hooks.revoke_all.clicked.connect(lambda: self.set_all_hooks(False))
        bridge.plugin_changed.connect(self._plugin_changed)
        bridge.log_written.connect(self._log_written)
        self._changed: set[str] = set()
        self._change_timer = QTimer(self)
        self._change_timer.setSingleShot(True)
        self._change_timer.setInterval(80)
        self._change_timer.timeout.connect(self._apply_changes)
        # breaker and pool numbers move without a notification: poll them while the dialog is open
        self._health_timer = QTimer(self)
        self._health_timer.setInterval(2000)
        self._health_timer.timeout.connect(self._poll_health)
        self.refresh_list()

    # ---- list ------------------------------------------------------------------------------
    def refresh_list(self):
        names = self.plugins.names()
        keep = self.current
        self.list.blockSignals(True)
        try:
            self.list.clear()
            for name in names:
                item = QTreeWidgetItem([name, "", ""])
                item.setData(0, KEY_ROLE, name)
                self.list.addTopLevelItem(item)
                self._update_item(item)
        finally:
            self.list.blockSignals(False)
        self.empty_hint.setVisible(not names)
        self.list.setVisible(bool(names))
        self._left.setVisible(bool(names))  # the empty panel says it all, in the whole window
        self.details.setEnabled(bool(names))
        self.right_stack.setCurrentWidget(self.details if names else self.empty_panel)
        target = keep if keep in names else (names[0] if names else None)
        if target:
            self.select(target)
        else:
            self.current = None

    def _item(self, name: str):
        for i in range(self.list.topLevelItemCount()):
            item = self.list.topLevelItem(i)
            if item.data(0, KEY_ROLE) == name:
                return item
        return None

    def _health(self, info: dict) -> plugin_health.Health:
        window = getattr(getattr(self.service, "settings", None), "plugins", None)
        h = plugin_health.health(info, getattr(window, "recent_error_window_s", 600.0))
        self.health_state[info.get("name", "")] = h
        return h

    def _update_item(self, item):
        name = item.data(0, KEY_ROLE)
        try:
            info = self.plugins.info(name, log_limit=HEALTH_LOG)
        except Exception:  # noqa: BLE001 - removed meanwhile
            return
        h = self._health(info)
        item.setText(1, info.get("version") or "")
        item.setText(2, h.short)
        item.setIcon(0, state_icon(info["state"], HEALTH_COLORS.get(h.level)))
        tip = (info.get("description") or "") + ("\n\n" if info.get("description") else "") + h.text
        for col in range(3):
            item.setToolTip(col, tip)
        color = HEALTH_COLORS.get(h.level) if h.level in (plugin_health.WARNING, plugin_health.FAILED,
                                                           plugin_health.PENDING) else None
        item.setForeground(2, QColor(color) if color else self.list.palette().text())

    def select(self, name: str):
        item = self._item(name)
        if item is not None:
            self.list.setCurrentItem(item)
            if self.current != name:
                self._show(name)

    def _picked(self, item, _prev):
        if item is not None:
            self._show(item.data(0, KEY_ROLE))

    # ---- details ---------------------------------------------------------------------------
    def _show(self, name: str, keep_log: bool = False):
        changed = name != self.current
        self.current = name
        if changed:
            self.message_bar.hide()
        try:
            info = self.plugins.info(name, log_limit=LOG_LIMIT)
        except Exception as exc:  # noqa: BLE001 - the plugin disappeared
            self.show_message(str(exc), "warning")
            return
        self._info = info
        self.title.setText(name)
        version = info.get("version")
        state = info.get("state", "")
        self.state_badge.setText(f"{state}" + (f" · v{version}" if version else ""))
        self.state_badge.setProperty("status", state)
        self.state_badge.style().unpolish(self.state_badge)
        self.state_badge.style().polish(self.state_badge)
        self.description.setText(info.get("description") or "")
        self.description.setVisible(bool(info.get("description")))
        h = self._health(dict(info, logs=self.plugins.logbook.entries(name, HEALTH_LOG))
                          if hasattr(self.plugins, "logbook") else info)
        self.error.setText(h.text if h.marked else "")
        self.error.setVisible(h.marked)
        self.pending_label.setText("Waiting for your approval: " + ", ".join(h.pending) + ". Nothing of it runs "
                                   "until you tick it below." if h.pending else "")
        self.pending_label.setVisible(bool(h.pending))
        if self.message_bar.isVisible() and self.message_bar.kind == "error" and state == "running" \
                and not h.marked:
            self.message_bar.hide()  # the failure it reported is over: the plugin runs again
        self.permissions.set_info(info)
        self.routes.permissions.set_info(info)
        self.hooks.permissions.set_info(info)
        by = [f"by {info['author']}" if info.get("author") else "", info.get("license") or ""]
        self.author.setText("  ·  ".join(x for x in by if x))

        # an approval covers the route as shown here, public or not (Approvals.set_route)
        self._route_public = {(r["method"], r["path"]): bool(r.get("public")) for r in info.get("routes", [])}
        self.routes.set_rows([
            (("route", r["method"], r["path"]), r["approved"],
             [r["method"], r["path"], "public" if r.get("public") else "admin token"],
             f"/api/v1/plugins/{name}{r['path']}")
            for r in info.get("routes", [])])
        self.hooks.set_rows([
            (("hook", h["event"], h["table"]), h["approved"],
             [h["event"], h["table"], str(h.get("priority") or ""),
              _hook_effect(h["event"], h["table"]),
              "disabled by breaker (reload or enable)" if h.get("disabled")
              else ("active" if h["approved"] else "waiting for approval")],
             "")
            for h in info.get("hooks", [])])
        self.tabs.setTabText(0, f"Routes ({len(info.get('routes', []))})")
        self.tabs.setTabText(1, f"Hooks ({len(info.get('hooks', []))})")
        self.domains.permissions.set_info(info)
        self.domains.set_rows([(("domain", d["domain"]), d["approved"], [d["domain"], d.get("description") or ""], "")
                               for d in info.get("domains", [])])
        self.tabs.setTabText(self.tabs.indexOf(self.domains), f"Domains ({len(info.get('domains', []))})")
        self.core.permissions.set_info(info)
        self.core.set_rows([(("core", c["access"]), c["approved"], [c["access"], CORE_ACCESS_TEXT[c["access"]]], "")
                            for c in info.get("core", [])])
        self.tabs.setTabText(self.tabs.indexOf(self.core), f"Content ({len(info.get('core', []))})")
        self.screens.permissions.set_info(info)
        ui = [(kind, d) for kind, key in (("screen", "screens"), ("interface", "interfaces"))
              for d in info.get(key, [])]
        self.screens.set_rows([(("ui", kind, d["name"]), d["approved"],
                                [d["name"], kind if kind == "screen" else f"interface ({d.get('mode', '')})",
                                 d.get("label", "")], "") for kind, d in ui])
        self.tabs.setTabText(self.tabs.indexOf(self.screens), f"Screens ({len(ui)})")
        if changed or not keep_log:
            self.log_view.setPlainText("\n".join(format_log_entry(e) for e in info.get("logs", [])))
            self.log_view.verticalScrollBar().setValue(self.log_view.verticalScrollBar().maximum())
        self._show_health(info)
        self._update_buttons()

    def _show_health(self, info: dict):
        h = self.health_state.get(info.get("name", "")) or self._health(info)
        self.health_labels["summary"].setText(h.text)
        b = info.get("breaker") or {}
        n = b.get("consecutive_failures", 0)
        if b.get("state") in ("open", "half_open"):
            breaker = f"stopped after {b.get('max_failures', n)} errors in a row"
            if b.get("retry_in_s", 0) >= 1:
                breaker += f"; tries again in {b['retry_in_s']:.0f} s"
        else:
            breaker = "answering" + (f" ({n} error{'s' if n != 1 else ''} in a row; it stops after "
                                     f"{b.get('max_failures', '?')})" if n else "")
        self.health_labels["breaker"].setText(breaker)
        hb = info.get("hook_breaker") or {}
        disabled = hb.get("disabled") or []
        aborts = hb.get("consecutive_aborts") or {}
        self.health_labels["hook_breaker"].setText(
            ("turned off after failing again and again: " + ", ".join(disabled) if disabled else "all running")
            + ("; refused or failed in a row: " + ", ".join(f"{k} {v} times" for k, v in aborts.items())
               if aborts else ""))
        pool = info.get("pool")
        self.health_labels["pool"].setText(
            "no VMs (not running)" if not pool else
            f"{pool.get('idle', 0)} idle, {pool.get('busy', 0)} busy of {pool.get('size', 0)} "
            f"({pool.get('hook_reserve', 0)} reserved for hooks); {pool.get('replaced', 0)} replaced; "
            f"{pool.get('state', '')}")
        lr = info.get("last_reload") or {}
        if lr.get("ok") is None:
            reload_text = "not yet"
        else:
            reload_text = f"{'succeeded' if lr['ok'] else 'failed'} in {lr.get('seconds') or 0:.2f} s"
        self.health_labels["last_reload"].setText(reload_text)
        warnings = info.get("warnings") or []
        self.health_labels["warnings"].setText("\n".join(warnings) if warnings else "none")
        schema = info.get("schema_errors") or []
        self.health_labels["schema_errors"].setText("\n".join(schema) if schema else "none")
        errors = info.get("last_errors") or []
        self.health_labels["last_errors"].setText(
            "\n".join(f"{short_time(e.get('time'))}  {plugin_health.plain_error(e.get('message'))}"
                      for e in errors) if errors else "none")

    def _poll_health(self):
        if self.isVisible():
            for i in range(self.list.topLevelItemCount()):  # recent errors age out of the marks
                self._update_item(self.list.topLevelItem(i))
        if self.current and self.isVisible():
            try:
                info = self.plugins.info(self.current, log_limit=1)
            except Exception:  # noqa: BLE001
                return
            self._show_health(info)

    def showEvent(self, event):  # noqa: N802 - Qt override
        super().showEvent(event)
        self._health_timer.start()

    def hideEvent(self, event):  # noqa: N802 - Qt override
        self._health_timer.stop()
        super().hideEvent(event)

    # ---- approvals -------------------------------------------------------------------------
    def _set_route(self, plugin, method, path, approved: bool):
        self.approvals.set_route(plugin, method, path, approved, self._route_public.get((method, path), False))

    def _route_toggled(self, item):
        self._toggled(item, self._set_route)

    def _hook_toggled(self, item):
        self._toggled(item, self.approvals.set_hook)

    def _toggled(self, item, setter):
        if item.column() != 0 or self.current is None:
            return
        _, a, b = item.data(KEY_ROLE)
        setter(self.current, a, b, item.checkState() == Qt.CheckState.Checked)
        self._show(self.current, keep_log=True)

    def _domain_toggled(self, item):
        if item.column() != 0 or self.current is None:
            return
        _, domain = item.data(KEY_ROLE)
        self.approvals.set_domain(self.current, domain, item.checkState() == Qt.CheckState.Checked)
        self._show(self.current, keep_log=True)

    def _screen_toggled(self, item):
        if item.column() != 0 or self.current is None:
            return
        _, kind, name = item.data(KEY_ROLE)
        self.approvals.set_ui(self.current, kind, name, item.checkState() == Qt.CheckState.Checked)
        self._show(self.current, keep_log=True)

    def _set_all_screens(self, approve: bool):
        if self.current is None:
            return
        for _, kind, name in list(self.screens.keys()):
            self.approvals.set_ui(self.current, kind, name, approve)
        self._show(self.current, keep_log=True)

    def _set_all_domains(self, approve: bool):
        if self.current is None:
            return
        for _, domain in list(self.domains.keys()):
            self.approvals.set_domain(self.current, domain, approve)
        self._show(self.current, keep_log=True)

    def _core_toggled(self, item):
        if item.column() != 0 or self.current is None:
            return
        _, access = item.data(KEY_ROLE)
        self.approvals.set_core(self.current, access, item.checkState() == Qt.CheckState.Checked)
        self._show(self.current, keep_log=True)

    def _set_all_core(self, approve: bool):
        if self.current is None:
            return
        for _, access in list(self.core.keys()):
            self.approvals.set_core(self.current, access, approve)
        self._show(self.current, keep_log=True)

    def set_all_routes(self, approve: bool):
        self._set_all(self.routes.keys(), self._set_route, approve)

    def set_all_hooks(self, approve: bool):
        self._set_all(self.hooks.keys(), self.approvals.set_hook, approve)

    def _set_all(self, keys, setter, approve: bool):
        if self.current is None:
            return
        for _, a, b in list(keys):
            setter(self.current, a, b, approve)
        self._show(self.current, keep_log=True)

    # ---- lifecycle (off the GUI thread) ----------------------------------------------------
    def run_lifecycle(self, action: str):
        """enable / disable / reload the current plugin on a worker thread; the window stays live."""
        name = self.current
        if name is None or name in self._busy:
            return
        label = {"enable": "Enabling", "disable": "Disabling", "reload": "Reloading"}[action]
        self._busy[name] = label
        self.message_bar.hide()
        self._update_buttons()
        fn = getattr(self.plugins, action)
        self.tasks.run(lambda: fn(name), lambda result: self._lifecycle_done(name, action, result),
                       lambda exc: self._lifecycle_failed(name, action, exc))

    def _lifecycle_done(self, name: str, action: str, result):
        self._busy.pop(name, None)
        item = self._item(name)
        if item is not None:
            self._update_item(item)
        if name == self.current:
            self._show(name, keep_log=True)
            if result is False:
                info = self._info
                self.show_message(info.get("error") or f"{action} failed; see the log.", "error",
                                              f"{action.capitalize()} of {name} failed")
            else:
                done = {"enable": "enabled", "disable": "disabled", "reload": "reloaded"}[action]
                self.show_message(f"{name} {done}.", "info")
        self._update_buttons()

    def _lifecycle_failed(self, name: str, action: str, exc: BaseException):
        self._busy.pop(name, None)
        log.warning("%s of plugin %s failed: %s", action, name, exc)
        if name == self.current:
            self._show(name, keep_log=True)
            self.show_message(str(exc), "error", f"{action.capitalize()} of {name} failed")
        self._update_buttons()

    def show_message(self, text: str, kind: str = "info", title: str = ""):
        """The message bar, cut to the two lines its fixed slot holds (the tooltip has all of it)."""
        fm = self.message_bar.fontMetrics()
        # word wrap leaves ragged ends: a little under two full widths fits in two lines
        room = int(max(200, self.message_bar.width() - 90) * 1.8) - fm.horizontalAdvance(title + "    ")
        shown = fm.elidedText(" ".join(text.split()), Qt.TextElideMode.ElideRight, room)
        self.message_bar.show_message(shown, kind, title)
        self.message_bar.setToolTip(text if shown != " ".join(text.split()) else "")

    def copy_examples(self):
        """Copy the bundled example plugins in (off the GUI thread) and show them."""
        panel = self.empty_panel
        panel.examples_button.setEnabled(False)
        panel.status.setText("Copying the example plugins…")

        def done(names):
            panel.examples_button.setEnabled(True)
            panel.status.setText(f"Copied {len(names)} example plugin{'s' if len(names) != 1 else ''}: "
                                 + ", ".join(names) + "." if names else "The example plugins are already here.")
            self.refresh_list()

        def failed(exc):
            panel.examples_button.setEnabled(True)
            panel.status.setText(f"Could not copy the example plugins: {exc}")
        self.tasks.run(lambda: copy_example_plugins(self.service), done, failed)

    def is_busy(self, name: str | None = None) -> bool:
        return bool(self._busy) if name is None else name in self._busy

    def _update_buttons(self):
        name = self.current
        busy = self._busy.get(name) if name else None
        state = self._info.get("state") if name else None
        self.enable_button.setEnabled(bool(name) and not busy and state in ("stopped", "failed"))
        self.disable_button.setEnabled(bool(name) and not busy and state not in ("stopped", None))
        # a plugin still loading at start-up has no version to reload yet
        self.reload_button.setEnabled(bool(name) and not busy and state not in ("stopped", "loading", None))
        self.progress.setVisible(bool(busy))
        self.busy_label.setVisible(bool(busy))
        self.busy_label.setText(f"{busy} {name}…" if busy else "")

    # ---- live updates ----------------------------------------------------------------------
    def _plugin_changed(self, name: str):
        self._changed.add(name)
        self._change_timer.start()

    def _apply_changes(self):
        names, self._changed = self._changed, set()
        if any(self._item(n) is None for n in names) or len(self.plugins.names()) != self.list.topLevelItemCount():
            self.refresh_list()
            return
        for n in names:
            item = self._item(n)
            if item is not None:
                self._update_item(item)
        if self.current in names:
            self._show(self.current, keep_log=True)

    def _log_written(self, entry: dict):
        if entry.get("level") == "error" and entry.get("plugin"):
            self._plugin_changed(entry["plugin"])  # an error marks the plugin in the list
        if entry.get("plugin") != self.current:
            return
        bar = self.log_view.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 2
        self.log_view.appendPlainText(format_log_entry(entry))
        if at_end:
            bar.setValue(bar.maximum())
