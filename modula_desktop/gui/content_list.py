"""The content list: pages and posts, filtered by type and status, searched by text, sorted by any column.

The list is a model over the whole table that fetches a page at a time as the view scrolls
(``canFetchMore``/``fetchMore``, keyset paging in SQL through ``content.list_sorted``), so a site with
50,000 entries opens as fast as one with 50 and every entry is reachable by scrolling. The count below
it is the real total.
"""
from __future__ import annotations

import datetime as _dt
import html
import logging

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QTimer, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTableView,
    QVBoxLayout,
    QWidget,
)

log = logging.getLogger(__name__)

FETCH_BATCH = 500  # rows per fetchMore: many screens, one indexed query of a few milliseconds
TYPES = (("All types", None), ("Pages", "page"), ("Posts", "post"))
STATUSES = (("Any status", None), ("Drafts", "draft"), ("Published", "published"))
COLUMNS = (("Title", "title"), ("Type", "type"), ("Status", "status"), ("Updated", "updated_at"))
UPDATED = 3
ID_ROLE = Qt.ItemDataRole.UserRole
_ROLES = frozenset({Qt.ItemDataRole.DisplayRole, ID_ROLE, Qt.ItemDataRole.ToolTipRole,
                    Qt.ItemDataRole.ForegroundRole})


def short_time(stamp: str | None) -> str:
    """'2024-05-01T10:20:30.123Z' -> '2024-05-01 10:20' (the list has no room for more)."""
    if not stamp:
        return ""
    return stamp[:16].replace("T", " ")


def list_time(stamp: str | None, today: _dt.date | None = None) -> str:
    """A narrow column's time: '14:05' today, 'May 1' this year, '2024-05-01' before (the tooltip and the
    editor give the full time)."""
    if not stamp or len(stamp) < 16:
        return stamp or ""
    today = today or _dt.datetime.now(_dt.timezone.utc).date()
    try:
        day = _dt.date.fromisoformat(stamp[:10])
    except ValueError:
        return short_time(stamp)
    if day == today:
        return stamp[11:16]
    if day.year == today.year:
        return f"{day.strftime('%b')} {day.day}"
    return stamp[:10]


class ContentModel(QAbstractTableModel):
    """The entries matching the filters, in the chosen order, loaded a batch at a time."""

    loaded = Signal()  # after a reload (the total may have changed)

    def __init__(self, content, parent=None, batch: int = FETCH_BATCH):
        super().__init__(parent)
        self.content = content
        self.batch = batch
        self.rows: list[dict] = []
        self.total = 0
        self.filters = {"type": None, "status": None, "search": None}
        self.sort_column = UPDATED
        self.descending = True
        self.muted = None  # brush for the status of drafts (None: the application palette's, when drawn)

    # ---- loading ---------------------------------------------------------------------------
    def reload(self, keep: int = 0):
        """Read the total and the first rows again; at least keep rows, so a refresh keeps the scroll."""
        self.beginResetModel()
        try:
            self.rows = []
            try:
                self.total = self.content.count(**self.filters)
            except Exception:  # noqa: BLE001 - a list that fails to load must not take the window down
                log.exception("could not count content")
                self.total = 0
            while len(self.rows) < max(keep, 1) and self._fetch(max(keep, self.batch) - len(self.rows)):
                pass
        finally:
            self.endResetModel()
        self.loaded.emit()

    def _fetch(self, wanted: int) -> int:
        """Append up to wanted rows after the last one; returns how many came."""
        wanted = max(1, min(wanted, 1000))
        try:
            page = self.content.list_sorted(**self.filters, sort=COLUMNS[self.sort_column][1],
                                            descending=self.descending, limit=wanted,
                                            after=self.rows[-1] if self.rows else None)
        except Exception:  # noqa: BLE001
            log.exception("could not list content")
            page = []
        self.rows.extend(page)
        if len(page) < wanted:
            self.total = len(self.rows)  # entries deleted meanwhile: stop asking for more
        return len(page)

    def canFetchMore(self, parent=QModelIndex()) -> bool:  # noqa: N802 - Qt override
        return not parent.isValid() and len(self.rows) < self.total

    def fetchMore(self, parent=QModelIndex()):  # noqa: N802 - Qt override
        if parent.isValid() or len(self.rows) >= self.total:
            return
        start = len(self.rows)
        try:
            page = self.content.list_sorted(**self.filters, sort=COLUMNS[self.sort_column][1],
                                            descending=self.descending, limit=self.batch,
                                            after=self.rows[-1] if self.rows else None)
        except Exception:  # noqa: BLE001
            log.exception("could not list content")
            page = []
        if not page:
            self.total = start
            return
        self.beginInsertRows(QModelIndex(), start, start + len(page) - 1)
        self.rows.extend(page)
        self.endInsertRows()
        if len(page) < self.batch:
            self.total = len(self.rows)

    def fetch_all(self):
        while self.canFetchMore():
            self.fetchMore()

    # ---- the model -------------------------------------------------------------------------
    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt override
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt override
        return 0 if parent.isValid() else len(COLUMNS)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        # the view asks for a dozen roles per cell on every paint: leave the unused ones at once
        if role not in _ROLES or not index.isValid() or index.row() >= len(self.rows):
            return None
        e = self.rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return e.get("title") or "(untitled)"
            if col == UPDATED:
                return list_time(e.get("updated_at"))
            return (e.get(COLUMNS[col][1]) or "").capitalize()
        if role == ID_ROLE:
            return e["id"]
        if role == Qt.ItemDataRole.ToolTipRole:
            tip = f"{e.get('title') or '(untitled)'}\n/{e.get('slug', '')}\nupdated {short_time(e.get('updated_at'))}"
            # while searching, the words found in their text (asked for on hover only: one small query)
            found = self.content.snippet(e["id"], self.filters["search"]) if self.filters.get("search") else ""
            if found:
                found = found.replace("<mark>", "<b>").replace("</mark>", "</b>")
                return f"<p style='white-space:pre'>{html.escape(tip)}</p><p>{found}</p>"
            return tip
        if role == Qt.ItemDataRole.ForegroundRole and col == 2 and e.get("status") != "published":
            # read when drawn, not when the list was made: the theme may have changed since
            return self.muted if self.muted is not None else QApplication.palette().placeholderText()
        return None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802 - Qt override
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole \
                and 0 <= section < len(COLUMNS):
            return COLUMNS[section][0]
        return None

    def sort(self, column: int, order=Qt.SortOrder.AscendingOrder):
        if not 0 <= column < len(COLUMNS):
            return
        descending = order == Qt.SortOrder.DescendingOrder
        if (column, descending) == (self.sort_column, self.descending) and self.rows:
            return
        self.sort_column, self.descending = column, descending
        self.reload()  # a new order starts at its top: no need to read again every row scrolled past

    def row_of(self, entry_id: str | None) -> int:
        for i, e in enumerate(self.rows):
            if e["id"] == entry_id:
                return i
        return -1


class ContentList(QWidget):
    """Emits ``entry_activated(id)`` when the user picks an entry. The owner may veto the change
    (unsaved edits) by calling ``select_id`` with the previous id again."""

    entry_activated = Signal(str)

    def __init__(self, content, parent=None):
        super().__init__(parent)
        self.content = content
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

        self.model = ContentModel(content, self)
        # a table, not a tree view: QTreeView lays out every row again on each fetchMore (scrolling to
        # the end of 50,000 entries took seconds), a table's rows cost nothing until drawn
        self.tree = QTableView(self)
        self.tree.setObjectName("ContentTree")
        self.tree.setModel(self.model)
        self.tree.setShowGrid(False)
        self.tree.setWordWrap(False)
        self.tree.setCornerButtonEnabled(False)
        self.tree.verticalHeader().hide()
        rows = self.tree.verticalHeader()
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        rows.setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.tree.setAlternatingRowColors(True)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.tree.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.tree.setTextElideMode(Qt.TextElideMode.ElideRight)
        header = self.tree.horizontalHeader()
        header.setHighlightSections(False)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        header.setStretchLastSection(False)
        header.setSectionsClickable(True)
        header.setSortIndicatorShown(True)
        header.setSortIndicator(UPDATED, Qt.SortOrder.DescendingOrder)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        # narrow fixed columns sized for their longest value: the title gets the rest, and no column
        # has to measure tens of thousands of rows
        fm = self.tree.fontMetrics()
        pad = 2 * self.style().pixelMetric(self.style().PixelMetric.PM_HeaderMargin) + 14  # and the arrow
        for col, longest in ((1, "Type"), (2, "Published"), (3, "2026-12-31")):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Fixed)
            header.resizeSection(col, fm.horizontalAdvance(longest) + pad)
        self._to_top = False
        # connected before the view's own handler, so it is set when the new order loads
        header.sortIndicatorChanged.connect(lambda *_: setattr(self, "_to_top", True))
        self.tree.setSortingEnabled(True)  # calls model.sort with the indicator: the first load

        self.empty_label = QLabel(self)
        self.empty_label.setObjectName("EmptyListLabel")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)
        self.empty_label.setMargin(16)
        self.empty_label.hide()
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
        layout.addWidget(self.empty_label, 1)
        layout.addWidget(self.count_label)

        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(200)
        self._search_timer.timeout.connect(self.refresh)
        self.search.textChanged.connect(self._search_timer.start)
        self.search.returnPressed.connect(self.refresh)
        self.type_filter.currentIndexChanged.connect(self.refresh)
        self.status_filter.currentIndexChanged.connect(self.refresh)
        self.tree.selectionModel().currentRowChanged.connect(self._current_changed)
        self.model.modelAboutToBeReset.connect(self._before_reset)
        self.model.loaded.connect(self._after_reset)
        self._scroll = 0

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
        filters = self.filters()
        keep = 0
        if filters == self.model.filters:
            # reload what is on screen and the selection, not every row ever scrolled past
            bottom = self.tree.indexAt(self.tree.viewport().rect().bottomLeft()).row()
            bottom = len(self.model.rows) - 1 if bottom < 0 and self.model.rows else bottom
            # (plus a batch: entries made meanwhile push the rows down)
            keep = min(len(self.model.rows), max(bottom, self.model.row_of(self._current)) + 1) + self.model.batch
        self.model.filters = filters
        self.model.reload(keep=keep)

    def _before_reset(self):
        self._refreshing = True
        self._scroll = self.tree.verticalScrollBar().value() if self.model.rows else 0

    def _after_reset(self):
        try:
            row = self.model.row_of(self._current)
            if row >= 0:
                self.tree.setCurrentIndex(self.model.index(row, 0))
            if self._to_top:
                self._to_top = False
                self.tree.scrollToTop()  # a new order is read from its top
            else:
                self.tree.verticalScrollBar().setValue(self._scroll)
        finally:
            self._refreshing = False
        self._show_counts()

    def _show_counts(self):
        n = self.model.total
        f = self.model.filters
        if any(f.values()):
            self.count_label.setText(f"{n:,} {'entry matches' if n == 1 else 'entries match'} the filter")
        else:
            self.count_label.setText(f"{n:,} {'entry' if n == 1 else 'entries'}")
        empty = n == 0
        if empty:
            if f.get("search"):
                self.empty_label.setText(f"No entry matches “{f['search']}”."
                                         + ("\nThe type or status filter narrows the search too."
                                            if f.get("type") or f.get("status") else ""))
            elif any(f.values()):
                self.empty_label.setText("No entry matches the filter.")
            else:
                self.empty_label.setText("No entries yet.\nCreate one with New Page or New Post.")
        self.empty_label.setVisible(empty)
        self.tree.setVisible(not empty)

    def total(self) -> int:
        return self.model.total

    def ids(self) -> list[str]:
        """The ids of the rows loaded so far, in the order shown."""
        return [e["id"] for e in self.model.rows]

    def entry(self, entry_id: str) -> dict | None:
        row = self.model.row_of(entry_id)
        return self.model.rows[row] if row >= 0 else None

    def index_of(self, entry_id: str) -> QModelIndex:
        row = self.model.row_of(entry_id)
        return self.model.index(row, 0) if row >= 0 else QModelIndex()

    def current_id(self) -> str | None:
        return self._current

    def select_id(self, entry_id: str | None, notify: bool = False):
        """Highlight entry_id (None clears) without asking the owner, unless notify."""
        self._current = entry_id
        self._refreshing = not notify
        try:
            index = self.index_of(entry_id) if entry_id is not None else QModelIndex()
            if index.isValid():
                self.tree.setCurrentIndex(index)
            else:
                self.tree.setCurrentIndex(QModelIndex())
                self.tree.clearSelection()
        finally:
            self._refreshing = False

    def _current_changed(self, index, _previous=None):
        if self._refreshing or index is None or not index.isValid():
            return
        entry_id = index.data(ID_ROLE)
        if entry_id is None or entry_id == self._current:
            return
        self.entry_activated.emit(entry_id)
