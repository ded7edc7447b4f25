"""The screen widgets' models (gui/tui_widgets.py) tell their views only about rows that changed: the
next layout of a 10,000-row screen is usually the same rows with the cursor moved, and a dataChanged
over every row made the view lay all of them out again on the GUI thread."""
from __future__ import annotations

import pytest

from modula_desktop.gui.tui_widgets import ListWidget, TableModel, TableWidget, _changed


@pytest.mark.parametrize("old,new,span", [
    ([1, 2, 3], [1, 2, 3], None),
    ([1, 2, 3], [1, 9, 3], (1, 1)),
    ([1, 2, 3, 4], [0, 2, 3, 5], (0, 3)),
    ([1, 2, 3], [1, 2, 4], (2, 2)),
    ([], [], None),
])
def test_changed_is_the_first_and_last_differing_row(old, new, span):
    assert _changed(old, new) == span


def items(n, changed=None):
    return [{"label": f"item {i}" if i != changed else "CHANGED", "id": str(i), "faint": False, "bold": False}
            for i in range(n)]


def spans(model):
    seen = []
    model.dataChanged.connect(lambda a, b, *_: seen.append((a.row(), b.row(), a.column(), b.column())))
    model.modelReset.connect(lambda: seen.append("reset"))
    return seen


def test_a_list_redraws_only_the_rows_that_changed(qtbot):
    view = ListWidget()
    qtbot.addWidget(view)
    view.update_from({"items": items(10000), "cursor": 0, "empty_text": ""}, True)
    seen = spans(view.model_)
    view.update_from({"items": items(10000), "cursor": 1, "empty_text": ""}, True)
    assert seen == [] and view.currentIndex().row() == 1
    view.update_from({"items": items(10000, changed=4321), "cursor": 2, "empty_text": ""}, True)
    assert seen == [(4321, 4321, 0, 0)]
    assert view.model_.index(4321).data() == "CHANGED" and view.currentIndex().row() == 2
    view.update_from({"items": items(5), "cursor": 0, "empty_text": ""}, True)
    assert seen[-1] == "reset" and view.model_.rowCount() == 5


def test_a_table_redraws_only_the_rows_that_changed(qtbot):
    view = TableWidget()
    qtbot.addWidget(view)
    rows = [[str(i), f"row {i}"] for i in range(10000)]
    view.update_from({"headers": ["#", "name"], "rows": rows, "cursor": 0}, True)
    seen = spans(view.model_)
    view.update_from({"headers": ["#", "name"], "rows": [list(r) for r in rows], "cursor": 3}, True)
    assert seen == [] and view.currentIndex().row() == 3
    changed = [list(r) for r in rows]
    changed[10][1] = "ten"
    changed[9000][0] = "nine thousand"
    view.update_from({"headers": ["#", "name"], "rows": changed, "cursor": 3}, True)
    assert seen == [(10, 9000, 0, 1)]
    assert view.model_.index(10, 1).data() == "ten" and view.model_.index(9000, 0).data() == "nine thousand"
    assert isinstance(view.model_, TableModel)
