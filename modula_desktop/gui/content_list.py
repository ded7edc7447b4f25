"""The content list: pages and posts, filtered by type and status, searched by text."""
from __future__ import annotations

import logging

from PySide6.QtCore import QTimer, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

log = logging.getLogger(__name__)

LIST_LIMIT = 1000
TYPES = (("All types", None), ("Pages", "page"), ("Posts", "post"))
STATUSES = (("Any status", None), ("Drafts", "draft"), ("Published", "published"))
ID_ROLE = Qt.ItemDataRole.UserRole


def short_time(stamp: str | None) -> str:
    """'2024-05-01T10:20:30.123Z' -> '2024-05-01 10:20' (the list has no room for more)."""
    if not stamp:
        return ""
    return stamp[:16].replace("T", " ")


class ContentList(QWidget):
    """Emits ``entry_activated(id)`` when the user picks an entry. The owner may veto the change
    (unsaved edits) by calling ``select_id`` with the previous id again."""

    entry_activated = Signal(str)

    def __init__(self, content, parent=None):
        super().__init__(parent)
        self.content = content
        self._entries: dict[str, dict] = {}
        self._current: str | None = None
        self._refreshing = False

        self.search = QLineEdit(self)
        self.search.setPlaceholderText("Search title and text…")
        self.search.setClearButtonEnabled(True)
        self.type_filter = QComboBox(self)
        for label, value in TYPES:
            self.type_filter.addItem(label, value)
        self.status_filter = QComboBox(self)
        for label, value in STATUSES:
            self.status_filter.addItem(label, value)

        self.tree = QTreeWidget(self)
        self.tree.setObjectName("ContentTree")
        self.tree.setColumnCount(4)
        self.tree.setHeaderLabels(["Title", "Type", "Status", "Updated"])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setSortingEnabled(False)
        header = self.tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in (1, 2, 3):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.count_label = QLabel(self)
        self.count_label.setObjectName("MutedLabel")

        filters = QHBoxLayout()
        filters.setSpacing(6)
        filters.addWidget(self.type_filter, 1)
        filters.addWidget(self.status_filter, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 4, 8)
        layout.setSpacing(6)
        layout.addWidget(self.search)
        layout.addLayout(filters)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.count_label)

        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(200)
        self._search_timer.timeout.connect(self.refresh)
        self.search.textChanged.connect(self._search_timer.start)
        self.search.returnPressed.connect(self.refresh)
        self.type_filter.currentIndexChanged.connect(self.refresh)
        self.status_filter.currentIndexChanged.connect(self.refresh)
        self.tree.currentItemChanged.connect(self._current_changed)

    # ---- filters -------------------------------------------------------------------------
    def filters(self) -> dict:
        text = self.search.text().strip()
        return {"type": self.type_filter.currentData(), "status": self.status_filter.currentData(),
                "search": text or None}

    def set_filters(self, type=None, status=None, search=None):  # noqa: A002 - mirrors content.list
        """Set every filter at once and refresh once (used by tests and the View menu)."""
        for combo, value in ((self.type_filter, type), (self.status_filter, status)):
            combo.blockSignals(True)
            combo.setCurrentIndex(max(0, combo.findData(value)))
            combo.blockSignals(False)
        self.search.blockSignals(True)
        self.search.setText(search or "")
        self.search.blockSignals(False)
        self.refresh()

    # ---- contents ------------------------------------------------------------------------
    def refresh(self):
        self._search_timer.stop()
        f = self.filters()
        try:
            entries = self.content.list(type=f["type"], status=f["status"], search=f["search"], limit=LIST_LIMIT)
        except Exception:  # noqa: BLE001 - a list that fails to load must not take the window down
            log.exception("could not list content")
            entries = []
        self._entries = {e["id"]: e for e in entries}
        self._refreshing = True
        scroll = self.tree.verticalScrollBar().value()
        try:
            self.tree.clear()
            selected = None
            for e in entries:
                item = QTreeWidgetItem([e.get("title") or "(untitled)", (e.get("type") or "").capitalize(),
                                        (e.get("status") or "").capitalize(), short_time(e.get("updated_at"))])
                item.setData(0, ID_ROLE, e["id"])
                item.setToolTip(0, f"/{e.get('slug', '')}")
                if e.get("status") != "published":
                    item.setForeground(2, self.palette().placeholderText())
                self.tree.addTopLevelItem(item)
                if e["id"] == self._current:
                    selected = item
            if selected is not None:
                self.tree.setCurrentItem(selected)
            self.tree.verticalScrollBar().setValue(scroll)
        finally:
            self._refreshing = False
        n = len(entries)
        if any(f.values()):
            self.count_label.setText(f"{n} {'entry matches' if n == 1 else 'entries match'} the filter")
        else:
            self.count_label.setText(f"{n} {'entry' if n == 1 else 'entries'}")

    def ids(self) -> list[str]:
        return [self.tree.topLevelItem(i).data(0, ID_ROLE) for i in range(self.tree.topLevelItemCount())]

    def entry(self, entry_id: str) -> dict | None:
        return self._entries.get(entry_id)

    def current_id(self) -> str | None:
        return self._current

    def select_id(self, entry_id: str | None, notify: bool = False):
        """Highlight entry_id (None clears) without asking the owner, unless notify."""
        self._current = entry_id
        self._refreshing = not notify
        try:
            if entry_id is None:
                self.tree.setCurrentItem(None)
                self.tree.clearSelection()
                return
            for i in range(self.tree.topLevelItemCount()):
                item = self.tree.topLevelItem(i)
                if item.data(0, ID_ROLE) == entry_id:
                    self.tree.setCurrentItem(item)
                    return
            self.tree.clearSelection()
        finally:
            self._refreshing = False

    def _current_changed(self, item, _previous):
        if self._refreshing or item is None:
            return
        entry_id = item.data(0, ID_ROLE)
        if entry_id == self._current:
            return
        self.entry_activated.emit(entry_id)
