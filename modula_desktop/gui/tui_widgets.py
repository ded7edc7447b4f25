"""Qt widgets for ModulaCMS's screen primitives (SPEC 3.12): what a plugin screen yields, drawn natively.

A ``ScreenView`` takes one parsed yield (core/plugins/api/tui.py) — a 12-column grid of titled cells, or
a single primitive — and shows it: ``list``, ``table`` and ``tree`` as item views, ``input`` and
``select`` as real editors, ``progress`` as a progress bar, ``text`` and ``detail`` as labels, and the
grid's hints as buttons. The plugin owns the state (its cursor, its input's value): the views never move
their own selection, every key and click becomes the protocol's key events (``key`` signal), and the
next yield puts the cursor where the plugin says. A yield with the same shape as the one before updates
the widgets in place, so focus, scrolling and a half-typed input survive each keystroke.
"""
from __future__ import annotations

import html
import re

from PySide6.QtCore import QAbstractListModel, QAbstractTableModel, QEvent, QModelIndex, Qt, Signal
from PySide6.QtGui import QFont, QKeyEvent, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListView,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QTableView,
    QTextBrowser,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.plugins.api.tui import GRID_SPAN, flat_tree

# Qt keys as Bubble Tea names them (ModulaCMS sends tea.KeyPressMsg.String())
_NAMED = {
    Qt.Key.Key_Up: "up", Qt.Key.Key_Down: "down", Qt.Key.Key_Left: "left", Qt.Key.Key_Right: "right",
    Qt.Key.Key_Return: "enter", Qt.Key.Key_Enter: "enter", Qt.Key.Key_Escape: "esc",
    Qt.Key.Key_Backspace: "backspace", Qt.Key.Key_Delete: "delete", Qt.Key.Key_Home: "home",
    Qt.Key.Key_End: "end", Qt.Key.Key_PageUp: "pgup", Qt.Key.Key_PageDown: "pgdown",
    Qt.Key.Key_Space: "space", Qt.Key.Key_Insert: "insert",
    **{getattr(Qt.Key, f"Key_F{i}"): f"f{i}" for i in range(1, 13)},
}
# clicking a row n rows away sends n up/down keys (a list holds at most 10,000 items)
MAX_CLICK_STEPS = 10_000
_COLOR = re.compile(r"^(#[0-9a-fA-F]{3}|#[0-9a-fA-F]{6}|[a-zA-Z]{3,20})$")


def protocol_key(event: QKeyEvent) -> str | None:
    """The protocol's name of a key press ("down", "enter", "esc", "ctrl+s", "n", "N"), or None for a
    modifier alone or Tab (Tab moves the focus between cells, as ModulaCMS's panel keys do)."""
    key = event.key()
    if key in (Qt.Key.Key_Tab, Qt.Key.Key_Backtab, Qt.Key.Key_Shift, Qt.Key.Key_Control, Qt.Key.Key_Alt,
               Qt.Key.Key_Meta, Qt.Key.Key_AltGr, Qt.Key.Key_CapsLock):
        return None
    mods = event.modifiers()
    prefix = ""
    if mods & Qt.KeyboardModifier.ControlModifier:
        prefix += "ctrl+"
    if mods & Qt.KeyboardModifier.AltModifier:
        prefix += "alt+"
    name = _NAMED.get(key)
    if name is not None:
        if mods & Qt.KeyboardModifier.ShiftModifier and name in ("up", "down", "left", "right", "home", "end"):
            prefix += "shift+"
        return prefix + name
    if prefix and Qt.Key.Key_A <= key <= Qt.Key.Key_Z:
        return prefix + chr(key).lower()
    text = event.text()
    if text and text.isprintable():
        return prefix + text
    return None


def _faint(widget: QWidget):
    """ModulaCMS's faint (ANSI dim): the text colour halfway to the background, in either theme."""
    from PySide6.QtGui import QColor

    pal = widget.palette()
    a, b = pal.color(QPalette.ColorRole.Text), pal.color(QPalette.ColorRole.Base)
    return QColor((a.red() + b.red()) // 2, (a.green() + b.green()) // 2, (a.blue() + b.blue()) // 2)


def _moves(cursor: int, row: int) -> list[str]:
    n = min(abs(row - cursor), MAX_CLICK_STEPS)
    return ["down" if row > cursor else "up"] * n


class _KeyForwarding:
    """Item views: keys and clicks become protocol keys; the view's own selection never moves."""

    key: Signal
    cursor = 0

    def keyPressEvent(self, event: QKeyEvent):  # noqa: N802 - Qt override
        name = protocol_key(event)
        if name is None:
            super().keyPressEvent(event)
            return
        self.key.emit(name)
        event.accept()

    def mousePressEvent(self, event):  # noqa: N802
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        row = self._row_at(event.position().toPoint())
        if row is not None:
            moves = _moves(self.cursor, row)
            if moves:
                self.keys.emit(moves)
            # the next click counts from here, before the plugin answers
            self.cursor += len(moves) if row > self.cursor else -len(moves)
        event.accept()

    def mouseDoubleClickEvent(self, event):  # noqa: N802
        if self._row_at(event.position().toPoint()) is not None:
            self.key.emit("enter")
        event.accept()

    def mouseMoveEvent(self, event):  # noqa: N802 - no drag selection
        event.accept()

    def _row_at(self, pos):
        index = self.indexAt(pos)
        return index.row() if index.isValid() else None


# ---- models --------------------------------------------------------------------------------------
def _changed(old: list, new: list) -> tuple[int, int] | None:
    """The first and last rows where two lists of the same length differ; None when they are equal. The
    usual next layout (the cursor moved) is equal row for row: compared in C, nothing is redrawn and the
    view does not walk its 10,000 rows again (a dataChanged over all of them made the next current-index
    change re-lay every row out: a Python rowCount() call for each, 27 ms)."""
    if old == new:
        return None
    first = next(i for i, (a, b) in enumerate(zip(old, new)) if a != b)
    last = next(i for i in range(len(new) - 1, first - 1, -1) if old[i] != new[i])
    return first, last


class ListModel(QAbstractListModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.items: list[dict] = []
        self.faint = None
        self.bold = QFont()
        self.bold.setBold(True)

    def set_items(self, items: list[dict]):
        if len(items) == len(self.items):
            span = _changed(self.items, items)
            self.items = items
            if span is not None:
                self.dataChanged.emit(self.index(span[0]), self.index(span[1]))
            return
        self.beginResetModel()
        self.items = items
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()):  # noqa: N802
        return 0 if parent.isValid() else len(self.items)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        item = self.items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return item["label"]
        if role == Qt.ItemDataRole.FontRole and item["bold"]:
            return self.bold
        if role == Qt.ItemDataRole.ForegroundRole and item["faint"]:
            return self.faint
        if role == Qt.ItemDataRole.UserRole:
            return item["id"]
        return None


class TableModel(QAbstractTableModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.headers: list[str] = []
        self.rows: list[list[str]] = []
        self.columns = 0

    def set_table(self, headers: list[str], rows: list[list[str]]):
        columns = max([len(headers)] + [len(r) for r in rows]) if rows else len(headers)
        if columns == self.columns and len(rows) == len(self.rows) and headers == self.headers:
            span = _changed(self.rows, rows)
            self.rows = rows
            if span is not None and columns:
                self.dataChanged.emit(self.index(span[0], 0), self.index(span[1], columns - 1))
            return
        self.beginResetModel()
        self.headers, self.rows, self.columns = headers, rows, columns
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()):  # noqa: N802
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()):  # noqa: N802
        return 0 if parent.isValid() else self.columns

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if role != Qt.ItemDataRole.DisplayRole or not index.isValid():
            return None
        row = self.rows[index.row()]
        return row[index.column()] if index.column() < len(row) else ""

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role != Qt.ItemDataRole.DisplayRole or orientation != Qt.Orientation.Horizontal:
            return None
        return self.headers[section] if section < len(self.headers) else ""


# ---- primitives ----------------------------------------------------------------------------------
class ListWidget(_KeyForwarding, QListView):
    key = Signal(str)
    keys = Signal(list)  # several at once (a click far away)
    kind = "list"

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model_ = ListModel(self)
        self.model_.faint = _faint(self)
        self.setModel(self.model_)
        self.setUniformItemSizes(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.empty = QLabel(self.viewport())
        self.empty.setObjectName("MutedLabel")
        self.empty.move(8, 6)

    def changeEvent(self, event):  # noqa: N802 - faint items follow the theme
        super().changeEvent(event)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self.model_.faint = _faint(self)
            self.viewport().update()

    def update_from(self, prim: dict, fresh: bool):
        self.model_.set_items(prim["items"])
        self.empty.setText(prim.get("empty_text") or "(empty)")
        self.empty.adjustSize()
        self.empty.setVisible(not prim["items"])
        _place_cursor(self, prim["cursor"], len(prim["items"]))


class TableWidget(_KeyForwarding, QTableView):
    key = Signal(str)
    keys = Signal(list)  # several at once (a click far away)
    kind = "table"

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model_ = TableModel(self)
        self.setModel(self.model_)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().hide()
        # fixed row heights and no measuring of contents: 10,000 rows cost nothing to show
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.setWordWrap(False)
        self.setAlternatingRowColors(True)

    def update_from(self, prim: dict, fresh: bool):
        self.model_.set_table(prim["headers"], prim["rows"])
        self.horizontalHeader().setVisible(bool(prim["headers"]))
        _place_cursor(self, prim["cursor"], len(prim["rows"]))


class TreeWidget(_KeyForwarding, QTreeWidget):
    """Expansion is the plugin's (each node's expanded flag); the cursor counts the rows shown."""

    key = Signal(str)
    keys = Signal(list)  # several at once (a click far away)
    kind = "tree"

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setHeaderHidden(True)
        self.setItemsExpandable(False)
        self.setExpandsOnDoubleClick(False)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setUniformRowHeights(True)
        self._rows: list[QTreeWidgetItem] = []
        self._shape = None

    def update_from(self, prim: dict, fresh: bool):
        shown = flat_tree(prim["nodes"])
        shape = [(d, n["label"], n["expanded"], bool(n["children"])) for d, n in shown]
        if shape != self._shape:
            self._shape = shape
            self.clear()
            self._rows = []
            parents: list[QTreeWidgetItem] = []
            for depth, node in shown:
                del parents[depth:]
                item = QTreeWidgetItem([node["label"]])
                item.setData(0, Qt.ItemDataRole.UserRole, node["id"])
                if node["children"] and not node["expanded"]:
                    item.setChildIndicatorPolicy(QTreeWidgetItem.ChildIndicatorPolicy.ShowIndicator)
                if parents:
                    parents[-1].addChild(item)
                else:
                    self.addTopLevelItem(item)
                parents.append(item)
                self._rows.append(item)
            self.expandAll()
        cursor = prim["cursor"]
        self.cursor = cursor
        if 0 <= cursor < len(self._rows):
            self.setCurrentItem(self._rows[cursor])
            self.scrollToItem(self._rows[cursor])
        else:
            self.clearSelection()

    def _row_at(self, pos):
        item = self.itemAt(pos)
        if item is None:
            return None
        try:
            return self._rows.index(item)
        except ValueError:
            return None


def _place_cursor(view, cursor: int, count: int):
    view.cursor = cursor
    model = view.model()
    if 0 <= cursor < count:
        index = model.index(cursor, 0)
        view.selectionModel().setCurrentIndex(
            index, view.selectionModel().SelectionFlag.ClearAndSelect | view.selectionModel().SelectionFlag.Rows)
        view.scrollTo(index)
    else:
        view.selectionModel().clearSelection()


class TextWidget(QTextBrowser):
    key = Signal(str)
    keys = Signal(list)  # several at once (a click far away)
    kind = "text"

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setOpenLinks(False)
        self._html = None
        self._last = None

    def changeEvent(self, event):  # noqa: N802
        super().changeEvent(event)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange) and self._last:
            self._html = None
            self.update_from(self._last, False)

    def update_from(self, prim: dict, fresh: bool):
        self._last = prim
        faint = _faint(self).name()
        accent = self.palette().color(QPalette.ColorRole.Link).name()
        parts = []
        for line in prim["lines"]:
            text = html.escape(line["text"]) or "&nbsp;"
            style = []
            if line["bold"]:
                style.append("font-weight:bold")
            if line["faint"]:
                style.append(f"color:{faint}")
            if line["accent"]:
                style.append(f"color:{accent}")
            st = line.get("style")
            if st:
                if _COLOR.match(st["fg"] or ""):
                    style.append(f"color:{st['fg']}")
                if _COLOR.match(st["bg"] or ""):
                    style.append(f"background-color:{st['bg']}")
            parts.append(f'<div style="{";".join(style)}">{text}</div>' if style else f"<div>{text}</div>")
        doc = "".join(parts)
        if doc != self._html:
            self._html = doc
            self.setHtml(doc)


class DetailWidget(QWidget):
    key = Signal(str)
    keys = Signal(list)  # several at once (a click far away)
    kind = "detail"

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self._box = QVBoxLayout(self)
        self._box.setContentsMargins(4, 4, 4, 4)
        self._title = QLabel(self)
        f = self._title.font()
        f.setBold(True)
        self._title.setFont(f)
        self._box.addWidget(self._title)
        self._rows = QWidget(self)
        self._box.addWidget(self._rows)
        self._box.addStretch(1)
        self._fields = None
        self._last = None
        self.labels: list[tuple[QLabel, QLabel]] = []

    def changeEvent(self, event):  # noqa: N802
        super().changeEvent(event)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange) and self._last:
            self._fields = None
            self.update_from(self._last, False)

    def update_from(self, prim: dict, fresh: bool):
        self._last = prim
        self._title.setText(prim["title"])
        self._title.setVisible(bool(prim["title"]))
        if prim["fields"] == self._fields:
            return
        self._fields = prim["fields"]
        old = self._rows
        self._rows = QWidget(self)
        from PySide6.QtWidgets import QFormLayout

        form = QFormLayout(self._rows)
        form.setContentsMargins(0, 0, 0, 0)
        self.labels = []
        faint = _faint(self).name()
        for f in prim["fields"] or []:
            name = QLabel(f["label"], self._rows)
            value = QLabel(f["value"], self._rows)
            value.setWordWrap(True)
            value.setTextFormat(Qt.TextFormat.PlainText)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            if f["faint"]:
                value.setStyleSheet(f"color:{faint}")
            form.addRow(name, value)
            self.labels.append((name, value))
        if not prim["fields"]:
            none = QLabel("(no details)", self._rows)
            none.setObjectName("MutedLabel")
            form.addRow(none)
        self._box.replaceWidget(old, self._rows)
        old.deleteLater()


class InputWidget(QLineEdit):
    """A real editor. The plugin keeps the value (ModulaCMS screens build it from key events), so every key
    is sent; the editor applies the editing keys at once, and takes the plugin's value when the yield
    answers the last key sent (then it is not behind what was typed)."""

    key = Signal(str)
    keys = Signal(list)  # several at once (a click far away)
    kind = "input"
    EDITING = ("backspace", "delete", "left", "right", "home", "end", "space", "shift+left", "shift+right",
               "shift+home", "shift+end")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.prim_id = ""

    def keyPressEvent(self, event: QKeyEvent):  # noqa: N802
        name = protocol_key(event)
        if name is None:
            super().keyPressEvent(event)
            return
        self.key.emit(name)
        if name in self.EDITING or (len(name) == 1 and not name.isspace()) or name.startswith("ctrl+"):
            super().keyPressEvent(event)
        event.accept()

    def update_from(self, prim: dict, fresh: bool):
        self.prim_id = prim["id"]
        self.setPlaceholderText(prim["placeholder"])
        self.setMaxLength(prim["char_limit"] if prim["char_limit"] > 0 else 32767)
        if fresh and self.text() != prim["value"]:
            self.setText(prim["value"])
        if fresh and prim["focused"] and not self.hasFocus():
            self.setFocus(Qt.FocusReason.OtherFocusReason)


class SelectWidget(QComboBox):
    key = Signal(str)
    keys = Signal(list)  # several at once (a click far away)
    kind = "select"

    def __init__(self, parent=None):
        super().__init__(parent)
        self.prim_id = ""
        self.selected = 0
        self._options = None
        self.activated.connect(self._picked)

    def keyPressEvent(self, event: QKeyEvent):  # noqa: N802 - the plugin changes the selection
        name = protocol_key(event)
        if name is None:
            super().keyPressEvent(event)
            return
        self.key.emit(name)
        event.accept()

    def wheelEvent(self, event):  # noqa: N802 - scrolling over it must not change it behind the plugin
        event.ignore()

    def _picked(self, index: int):
        self.keys.emit(_moves(self.selected, index) + ["enter"])
        self.selected = index

    def update_from(self, prim: dict, fresh: bool):
        self.prim_id = prim["id"]
        self.blockSignals(True)
        try:
            if prim["options"] != self._options:
                self._options = prim["options"]
                self.clear()
                self.addItems([o["label"] for o in prim["options"]])
            self.selected = prim["selected"]
            self.setCurrentIndex(prim["selected"] if 0 <= prim["selected"] < self.count() else -1)
        finally:
            self.blockSignals(False)
        if fresh and prim["focused"] and not self.hasFocus():
            self.setFocus(Qt.FocusReason.OtherFocusReason)


class ProgressWidget(QProgressBar):
    key = Signal(str)
    keys = Signal(list)  # several at once (a click far away)
    kind = "progress"

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setRange(0, 1000)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def update_from(self, prim: dict, fresh: bool):
        self.setValue(round(prim["value"] * 1000))
        label = html.escape(prim["label"]).replace("%", "%%")
        self.setFormat(f"{label}  {int(prim['value'] * 100)}%" if label else f"{int(prim['value'] * 100)}%")


WIDGETS = {"list": ListWidget, "table": TableWidget, "tree": TreeWidget, "text": TextWidget,
           "detail": DetailWidget, "input": InputWidget, "select": SelectWidget, "progress": ProgressWidget}


def make_primitive(prim: dict, parent=None) -> QWidget:
    w = WIDGETS[prim["type"]](parent)
    w.setProperty("modula_primitive", prim["type"])
    return w


# ---- the grid ------------------------------------------------------------------------------------
def shape_of(value) -> tuple:
    """What a yield's widgets are: equal shapes update in place."""
    if value.layout is not None:
        cols = tuple((c["span"], tuple((cell["title"], round(cell["height"], 3), cell["content"]["type"])
                                       for cell in c["cells"])) for c in value.layout["columns"])
        return ("grid", cols, tuple((h["key"], h["label"]) for h in value.layout["hints"]))
    return ("primitive", value.primitive["type"])


class ScreenView(QWidget):
    """One yield drawn. ``key(str)``: a protocol key the user pressed or clicked."""

    key = Signal(str)
    keys = Signal(list)  # several at once (a click far away)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._outer = QVBoxLayout(self)
        self._outer.setContentsMargins(0, 0, 0, 0)
        self._body: QWidget | None = None
        self._shape = None
        self.cells: list[QWidget] = []      # the primitive widgets, column by column, top to bottom
        self.hint_buttons: list[QPushButton] = []

    def keyPressEvent(self, event: QKeyEvent):  # noqa: N802 - keys no cell took
        name = protocol_key(event)
        if name is None:
            super().keyPressEvent(event)
            return
        self.key.emit(name)
        event.accept()

    def show_yield(self, value, fresh: bool = True):
        shape = shape_of(value)
        if shape != self._shape:
            self._rebuild(value)
            self._shape = shape
        if value.layout is not None:
            prims = [cell["content"] for col in value.layout["columns"] for cell in col["cells"]]
        else:
            prims = [value.primitive]
        focus = self.focusWidget() if self.isAncestorOf(self.focusWidget() or self) else None
        for widget, prim in zip(self.cells, prims):
            widget.update_from(prim, fresh)
        if fresh and focus is not None and focus in self.cells:
            # an editor the plugin stopped focusing gives the keys back to the first item view
            prim = prims[self.cells.index(focus)]
            if prim["type"] in ("input", "select") and not prim.get("focused") and getattr(focus, "was_focused", False):
                target = next((w for w in self.cells if w.kind in ("list", "table", "tree")), None)
                if target is not None:
                    target.setFocus(Qt.FocusReason.OtherFocusReason)
        for widget, prim in zip(self.cells, prims):
            widget.was_focused = bool(prim.get("focused"))

    def panel_of(self, widget) -> int | None:
        """The cell index (ModulaCMS's panel) of widget, or None."""
        while widget is not None and widget is not self:
            if widget in self.cells:
                return self.cells.index(widget)
            widget = widget.parentWidget()
        return None

    def _rebuild(self, value):
        had_focus = self.isAncestorOf(self.focusWidget()) if self.focusWidget() else False
        focus_at = None
        if had_focus:
            focus_at = next((i for i, w in enumerate(self.cells) if w is self.focusWidget()), None)
        if self._body is not None:
            self._outer.removeWidget(self._body)
            self._body.deleteLater()
        body = QWidget(self)
        self.cells, self.hint_buttons = [], []
        if value.layout is None:
            box = QVBoxLayout(body)
            box.setContentsMargins(0, 0, 0, 0)
            w = make_primitive(value.primitive, body)
            w.key.connect(self.key)
            w.keys.connect(self.keys)
            box.addWidget(w)
            self.cells.append(w)
        else:
            box = QVBoxLayout(body)
            box.setContentsMargins(0, 0, 0, 0)
            row = QHBoxLayout()
            row.setSpacing(8)
            used = 0
            for col in value.layout["columns"]:
                column = QVBoxLayout()
                column.setSpacing(8)
                for cell in col["cells"]:
                    group = QGroupBox(cell["title"], body)
                    group.setObjectName("ScreenCell")
                    inner = QVBoxLayout(group)
                    inner.setContentsMargins(6, 6, 6, 6)
                    w = make_primitive(cell["content"], group)
                    w.key.connect(self.key)
                    w.keys.connect(self.keys)
                    inner.addWidget(w)
                    if cell["content"]["type"] in ("input", "select", "progress"):
                        inner.addStretch(1)  # one line high: at the top of its cell, not floating in it
                    column.addWidget(group, max(1, round(cell["height"] * 100)))
                    self.cells.append(w)
                span = min(col["span"], GRID_SPAN)
                used += span
                row.addLayout(column, span)
            if used < GRID_SPAN:
                row.addStretch(GRID_SPAN - used)
            box.addLayout(row, 1)
            if value.layout["hints"]:
                hints = QHBoxLayout()
                hints.setSpacing(6)
                for h in value.layout["hints"]:
                    b = QPushButton(f"{h['label'] or h['key']}   {h['key']}", body)
                    b.setObjectName("ScreenHint")
                    b.setToolTip(f"Press {h['key']}")
                    b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
                    b.clicked.connect(lambda _=False, k=h["key"]: self.key.emit(k))
                    hints.addWidget(b)
                    self.hint_buttons.append(b)
                hints.addStretch(1)
                box.addLayout(hints)
        self._outer.addWidget(body)
        body.show()
        self._body = body
        # the cell that had the focus keeps it; else the first that takes keys
        if focus_at is not None and focus_at < len(self.cells):
            target = self.cells[focus_at]
        else:
            target = next((w for w in self.cells if w.focusPolicy() != Qt.FocusPolicy.NoFocus), None)
        if target is not None:
            target.setFocus(Qt.FocusReason.OtherFocusReason)


_warm = False


def warm_up():
    """Build each primitive widget once, and press a key in it. PySide6 creates its Python enum types and
    signatures lazily, on first use: about 150 ms the first screen would otherwise spend on the GUI thread
    at its first yield and its first key. Done once, when the window first has screens to show."""
    global _warm
    if _warm:
        return
    _warm = True
    from PySide6.QtCore import QEvent
    from PySide6.QtWidgets import QApplication

    from ..core.plugins.api.tui import Yield, parse_primitive

    samples = [{"type": "list", "items": [{"label": "a"}]}, {"type": "table", "headers": ["a"], "rows": [["b"]]},
               {"type": "tree", "nodes": [{"label": "a", "expanded": True, "children": [{"label": "b"}]}]},
               {"type": "text", "lines": ["a", {"text": "b", "bold": True, "style": {"fg": "red"}}]},
               {"type": "detail", "fields": [{"label": "a", "value": "b"}]}, {"type": "input", "id": "a"},
               {"type": "select", "id": "a", "options": [{"label": "a"}]}, {"type": "progress", "value": 0.5}]
    view = ScreenView()
    view.setAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen)
    view.show()
    layout = {"type": "grid", "hints": [{"key": "a", "label": "b"}],
              "columns": [{"span": 12, "cells": [{"title": "t", "height": 1.0, "content": parse_primitive(p)}
                                                 for p in samples]}]}
    view.show_yield(Yield(layout=layout))
    view.grab()  # paints each widget once (styles, the progress bar's first frame)
    _faint(view)
    for w in view.cells:
        for mods in (Qt.KeyboardModifier.NoModifier, Qt.KeyboardModifier.ControlModifier):
            QApplication.sendEvent(w, QKeyEvent(QEvent.Type.KeyPress, Qt.Key.Key_Down, mods))
            QApplication.sendEvent(w, QKeyEvent(QEvent.Type.KeyPress, Qt.Key.Key_A, mods, "a"))
    view.hide()
    view.deleteLater()
