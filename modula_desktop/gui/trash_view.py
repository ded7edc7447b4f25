"""The Trash: deleted entries, to restore or to delete for good (service.content's trash calls).

Restoring runs the create hooks (a plugin may refuse: its message is shown here); deleting for good
and emptying fire no hooks, so they need no worker thread beyond the window's task runner.
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
)

from ..core.errors import HookAbort, ModulaError
from .message_bar import MessageBar
from .resources import icon
from .revision_diff import revision_time

ID_ROLE = Qt.ItemDataRole.UserRole


def entry_name(entry: dict) -> str:
    return entry.get("title") or entry.get("slug") or "(untitled)"


class TrashDialog(QDialog):
    def __init__(self, window, parent=None):
        super().__init__(parent or window)
        self.window = window
        self.content = window.content
        self.setWindowTitle("Trash")
        self.setWindowIcon(icon("delete"))
        self.resize(720, 420)
        self.message_bar = MessageBar(self)
        self.hint = QLabel("Deleted entries stay here until you delete them for good. Restoring brings an "
                           "entry back with its revisions.", self)
        self.hint.setObjectName("MutedLabel")
        self.hint.setWordWrap(True)
        self.tree = QTreeWidget(self)
        self.tree.setObjectName("TrashList")
        self.tree.setHeaderLabels(["Title", "Type", "Status", "Deleted"])
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QTreeWidget.SelectionMode.ExtendedSelection)
        header = self.tree.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in (1, 2, 3):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.empty_label = QLabel("The Trash is empty.", self)
        self.empty_label.setObjectName("MutedLabel")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.restore_button = QPushButton("Restore", self)
        self.delete_button = QPushButton("Delete Forever…", self)
        self.empty_button = QPushButton("Empty Trash…", self)
        close = QPushButton("Close", self)
        buttons = QHBoxLayout()
        buttons.addWidget(self.restore_button)
        buttons.addWidget(self.delete_button)
        buttons.addStretch(1)
        buttons.addWidget(self.empty_button)
        buttons.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.message_bar)
        layout.addWidget(self.hint)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.empty_label, 1)
        layout.addLayout(buttons)
        self.restore_button.clicked.connect(self.restore_selected)
        self.delete_button.clicked.connect(self.delete_selected)
        self.empty_button.clicked.connect(self.empty)
        close.clicked.connect(self.close)
        self.tree.itemSelectionChanged.connect(self._update_buttons)
        self.tree.itemDoubleClicked.connect(lambda *_: self.restore_selected())
        window.bridge.content_changed.connect(lambda *_: self.isVisible() and self.refresh())
        self.refresh()

    def refresh(self):
        keep = set(self.selected_ids())
        self.tree.clear()
        entries = self.content.trash()
        for e in entries:
            item = QTreeWidgetItem([entry_name(e), e.get("type", ""), e.get("status", ""),
                                    revision_time(e.get("deleted_at"))])
            item.setData(0, ID_ROLE, e["id"])
            item.setToolTip(0, f"/{e.get('slug', '')}")
            self.tree.addTopLevelItem(item)
            item.setSelected(e["id"] in keep)
        self.tree.setVisible(bool(entries))
        self.empty_label.setVisible(not entries)
        self.setWindowTitle(f"Trash — {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
        self._update_buttons()

    def ids(self) -> list[str]:
        return [self.tree.topLevelItem(i).data(0, ID_ROLE) for i in range(self.tree.topLevelItemCount())]

    def selected_ids(self) -> list[str]:
        return [item.data(0, ID_ROLE) for item in self.tree.selectedItems()]

    def select(self, ids):
        wanted = set(ids)
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            item.setSelected(item.data(0, ID_ROLE) in wanted)

    def _update_buttons(self):
        busy = self.window.tasks.busy
        picked = bool(self.tree.selectedItems())
        self.restore_button.setEnabled(picked and not busy)
        self.delete_button.setEnabled(picked and not busy)
        self.empty_button.setEnabled(self.tree.topLevelItemCount() > 0 and not busy)

    def _names(self, ids) -> str:
        names = {self.tree.topLevelItem(i).data(0, ID_ROLE): self.tree.topLevelItem(i).text(0)
                 for i in range(self.tree.topLevelItemCount())}
        shown = [f"“{names.get(i, i)}”" for i in ids[:3]]
        return ", ".join(shown) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")

    def _run(self, fn, done):
        self.message_bar.hide()

        def failed(exc):
            if isinstance(exc, HookAbort):
                who = f"plugin “{exc.plugin}”" if exc.plugin else "a plugin"
                self.message_bar.show_message(str(exc), "error", f"Could not restore: {who} refused.")
            elif isinstance(exc, ModulaError):
                self.message_bar.show_message(str(exc), "error", "Could not do that.")
            else:
                self.message_bar.show_message(f"{type(exc).__name__}: {exc}", "error", "Could not do that.")
            self.refresh()

        def finished(result):
            self.refresh()
            done(result)

        self.window.tasks.run(fn, finished, failed)
        self._update_buttons()

    def restore_selected(self):
        ids = self.selected_ids()
        if not ids:
            return
        content = self.content

        def work():
            return [content.restore_from_trash(i, source="trash") for i in ids]

        def done(entries):
            names = ", ".join(f"“{entry_name(e)}”" for e in entries)
            self.window.statusBar().showMessage(f"Restored {names} from the Trash", 4000)
            self.window.list.refresh()
            if entries and not self.window.editor.is_dirty():
                self.window.open_entry(entries[-1]["id"])

        self._run(work, done)

    def delete_selected(self):
        ids = self.selected_ids()
        if not ids or not self.window.confirm(
                "Delete forever", f"Delete {self._names(ids)} for good? This cannot be undone: the entry and all "
                                  f"its revisions are removed."):
            return
        content = self.content
        self._run(lambda: [content.purge(i) for i in ids],
                  lambda _r: self.window.statusBar().showMessage(f"Deleted {len(ids)} for good", 4000))

    def empty(self):
        n = self.tree.topLevelItemCount()
        if not n or not self.window.confirm(
                "Empty Trash", f"Delete all {n} entr{'y' if n == 1 else 'ies'} in the Trash for good? This cannot "
                               "be undone."):
            return
        self._run(self.content.empty_trash,
                  lambda count: self.window.statusBar().showMessage(f"Emptied the Trash ({count} deleted)", 4000))
