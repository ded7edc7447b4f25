"""The content list: pages and posts, filtered by type and status, searched by text, sorted by any column.

The list is a virtual model over the whole table: its row count is the real total (one COUNT, read
again on each change) and the rows are read in blocks as they are drawn, each block by keyset from the
nearest block read before it (``content.list_window``), kept in a small LRU. A drag of the scroll bar's
thumb to the bottom of 50,000 entries reads only the blocks it shows, and every row is the same height,
so Qt never measures one. The memory stays bounded however long the list is scrolled up and down.
"""
from __future__ import annotations

import bisect
import datetime as _dt
import html
import logging
from collections import OrderedDict

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

BLOCK = 200  # rows per read: a few screens, one indexed query of about a millisecond
CACHE_BLOCKS = 24  # blocks kept (4,800 rows, some 2 MB); the least recently drawn goes first
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
    """Every entry matching the filters, in the chosen order: rowCount is the total, rows are read a block
    at a time when drawn and the least recently drawn blocks are forgotten."""

    loaded = Signal()  # after a reload (the total may have changed)

    def __init__(self, content, parent=None, block: int = BLOCK, cache_blocks: int = CACHE_BLOCKS):
        super().__init__(parent)
        self.content = content
        self.block = block
        self.cache_blocks = cache_blocks
        self.total = 0
        self.filters = {"type": None, "status": None, "search": None}
        self.sort_column = UPDATED
        self.descending = True
        self.muted = None  # brush for the status of drafts (None: the application palette's, when drawn)
        self.reads = 0  # block queries so far (the bench and the tests read it)
        self._loaded = False
        self._blocks: OrderedDict[int, list[dict]] = OrderedDict()
        # the last row of every block read since the reload: where a later block's keyset read starts.
        # Two short strings a block, at most total / block of them.
        self._marks: dict[int, dict] = {}
        self._marked: list[int] = []  # their block numbers, sorted

    # ---- loading ---------------------------------------------------------------------------
    def reload(self):
        """Count again and forget every row read: the view reads what it draws next."""
        self.beginResetModel()
        try:
            self._forget()
            try:
                self.total = self.content.count(**self.filters)
            except Exception:  # noqa: BLE001 - a list that fails to load must not take the window down
                log.exception("could not count content")
                self.total = 0
            self._loaded = True
        finally:
            self.endResetModel()
        self.loaded.emit()

    def _forget(self):
        self._blocks.clear()
        self._marks.clear()
        self._marked.clear()

    def entry_at(self, row: int) -> dict | None:
        """The entry shown at row (read with its block if it is not held), None beyond the list."""
        if not 0 <= row < self.total:
            return None
        number, i = divmod(row, self.block)
        rows = self._blocks.get(number)
        if rows is None:
            rows = self._read(number)
        else:
            self._blocks.move_to_end(number)
        return rows[i] if i < len(rows) else None  # shorter: entries deleted since the count (a refresh comes)

    def _read(self, number: int) -> list[dict]:
        # from the last row of the nearest block read before this one, skipping the blocks between: a
        # drag of the thumb skips a few hundred rows on the index, not the tens of thousands above
        sort = COLUMNS[self.sort_column][1]
        k = bisect.bisect_left(self._marked, number) - 1
        after, skip = None, number * self.block
        if k >= 0:
            known = self._marked[k]
            after, skip = self._marks[known], (number - known - 1) * self.block
        try:
            rows = self.content.list_window(**self.filters, sort=sort, descending=self.descending,
                                            limit=self.block, after=after, skip=skip)
        except Exception:  # noqa: BLE001
            log.exception("could not list content")
            rows = []
        self.reads += 1
        if rows and number not in self._marks:
            bisect.insort(self._marked, number)
        if rows:
            self._marks[number] = {sort: rows[-1].get(sort), "id": rows[-1]["id"]}
        self._blocks[number] = rows
        while len(self._blocks) > self.cache_blocks:
            self._blocks.popitem(last=False)
        return rows

    def held(self) -> list[tuple[int, dict]]:
        """The rows held now, as (row, entry), in the order shown."""
        return [(number * self.block + i, e) for number in sorted(self._blocks)
                for i, e in enumerate(self._blocks[number])]

    # ---- the model -------------------------------------------------------------------------
    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt override
        return 0 if parent.isValid() else self.total

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt override
        return 0 if parent.isValid() else len(COLUMNS)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        # the view asks for a dozen roles per cell on every paint: leave the unused ones at once
        if role not in _ROLES or not index.isValid():
            return None
        e = self.entry_at(index.row())
        if e is None:
            return None
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
        if (column, descending) == (self.sort_column, self.descending) and self._loaded:
            return
        self.sort_column, self.descending = column, descending
        self.reload()

    def row_of(self, entry_id: str | None, near: int = -1) -> int:
        """The row of entry_id, -1 when the list does not show it: among the rows held, then around row
        near (where it was before a refresh: a change elsewhere moves it a row or two), then by asking
        the database how many entries come before it."""
        if entry_id is None:
            return -1
        for row, e in self.held():
            if e["id"] == entry_id:
                return row
        if near >= 0:
            for row in range(max(0, near - 2), min(self.total, near + 3)):
                e = self.entry_at(row)
                if e is not None and e["id"] == entry_id:
                    return row
        try:
            row = self.content.position(entry_id, **self.filters, sort=COLUMNS[self.sort_column][1],
                                        descending=self.descending)
        except Exception:  # noqa: BLE001
            log.exception("could not find the row of %s", entry_id)
            return -1
        return row if row is not None and row < self.total else -1


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
        # a table, not a tree view, with rows of one fixed height: nothing is measured or laid out per
        # row, so 50,000 rows cost what the ones on screen do
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
        self._current_row = -1

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
        """Count and read again: with the same filters the view stays where it was and keeps its selection."""
        self._search_timer.stop()
        self.model.filters = self.filters()
        self.model.reload()

    def _before_reset(self):
        self._refreshing = True
        self._scroll = self.tree.verticalScrollBar().value() if self.model.total else 0
        self._current_row = self.tree.currentIndex().row()

    def _after_reset(self):
        try:
            row = self.model.row_of(self._current, near=self._current_row)
            if row >= 0:
                self.tree.setCurrentIndex(self.model.index(row, 0))
            if self._to_top:
                self._to_top = False
                self.tree.scrollToTop()  # a new order is read from its top
            else:
                self.tree.verticalScrollBar().setValue(self._scroll)
            self.model.entry_at(max(0, self.tree.rowAt(0)))  # the top row's block, drawn next anyway: ids() has rows
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
        """The ids of the rows held, in the order shown: the whole list when it is short, the blocks
        around what was drawn when it is long (with the rows either side of the current entry, so its
        neighbours are known)."""
        row = self.tree.currentIndex().row()
        if row >= 0:
            for near in (row - 1, row + 1):
                self.model.entry_at(near)
        return [e["id"] for _, e in self.model.held()]

    def entry(self, entry_id: str) -> dict | None:
        row = self.model.row_of(entry_id)
        return self.model.entry_at(row) if row >= 0 else None

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
