"""The content list over the whole table: fetched as it scrolls, sortable by every column (in SQL, on
an index), the real total shown, titles given the width, and a search with no match that says so."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from test_gui_support import service, site_root, window  # noqa: F401

pytestmark = pytest.mark.timeout(120)

N = 2002


@pytest.fixture
def many(service):
    content = service.content
    with service.db.atomic():
        for i in range(N):
            content.create({"type": "post" if i % 3 else "page", "title": f"Entry {i:04d} {'zeta' if i % 2 else 'Alpha'}",
                            "status": "published" if i % 5 == 0 else "draft"}, run_hooks=False)
    return service


def scroll_to_end(qtbot, lst):
    bar = lst.tree.verticalScrollBar()
    for _ in range(200):
        bar.setValue(bar.maximum())
        qtbot.wait(5)
        if not lst.model.canFetchMore():
            break
    return len(lst.ids())


def test_every_entry_is_reachable_by_scrolling_and_the_total_is_real(qtbot, many, window):
    lst = window.list
    lst.refresh()
    assert lst.count_label.text() == "2,002 entries"
    first = len(lst.ids())
    assert 0 < first < N and lst.model.canFetchMore()  # not everything up front
    assert scroll_to_end(qtbot, lst) == N
    ids = lst.ids()
    assert len(set(ids)) == N
    # the oldest entry, beyond the old 1,000 limit, is the last row and opens from the list
    oldest = many.content.list_sorted(descending=False, limit=1)[0]
    assert ids[-1] == oldest["id"]
    lst.tree.setCurrentIndex(lst.index_of(oldest["id"]))
    qtbot.waitUntil(lambda: window.editor.entry and window.editor.entry["id"] == oldest["id"], timeout=3000)


@pytest.mark.parametrize("column,key", [(0, "title"), (1, "type"), (2, "status"), (3, "updated_at")])
def test_every_column_sorts_the_whole_table_both_ways(qtbot, many, window, column, key):
    lst = window.list
    everything = []
    while True:
        page = many.content.list(limit=1000, offset=len(everything))
        if not page:
            break
        everything += page
    assert len(everything) == N
    for order in (Qt.SortOrder.AscendingOrder, Qt.SortOrder.DescendingOrder):
        # a click on the header, as the author sorts
        header = lst.tree.horizontalHeader()
        header.setSortIndicator(column, order)
        qtbot.waitUntil(lambda: lst.model.sort_column == column, timeout=2000)
        scroll_to_end(qtbot, lst)
        rank = (lambda e: (e[key].lower(), e["id"])) if key == "title" else (lambda e: (e[key], e["id"]))
        expected = [e["id"] for e in sorted(everything, key=rank, reverse=order == Qt.SortOrder.DescendingOrder)]
        assert lst.ids() == expected


def test_each_sort_order_is_served_by_an_index(many):
    # the list's own queries (every filter is checked in tests/test_content_scale.py)
    for sort in ("title", "type", "status", "updated_at"):
        for descending in (False, True):
            text = many.content.query_plan(sort=sort, descending=descending, after=True)
            assert "INDEX content_live_" in text and "TEMP B-TREE" not in text, (sort, descending, text)


def test_list_sorted_pages_without_gaps_or_repeats(many):
    seen = []
    after = None
    while True:
        page = many.content.list_sorted(sort="title", descending=False, limit=333, after=after)
        if not page:
            break
        seen += [e["id"] for e in page]
        after = page[-1]
    assert len(seen) == len(set(seen)) == N


def test_list_sorted_refuses_an_unknown_column(service):
    from modula_desktop.core.errors import ValidationError

    with pytest.raises(ValidationError, match="sort must be one of"):
        service.content.list_sorted(sort="body; DROP TABLE content")


def test_titles_get_the_width(qtbot, many, window):
    header = window.list.tree.horizontalHeader()
    widths = [header.sectionSize(i) for i in range(4)]
    assert widths[0] >= 2 * max(widths[1:]), widths
    assert widths[0] >= 0.45 * window.list.tree.viewport().width(), widths
    # the narrow columns still show their longest values whole
    fm = window.list.tree.fontMetrics()
    assert widths[2] >= fm.horizontalAdvance("Published") and widths[3] >= fm.horizontalAdvance("2026-12-31")
    assert window.grab().save("/tmp/gui2shots/main_window_list.png")


def test_the_updated_column_is_compact():
    import datetime as dt

    from modula_desktop.gui.content_list import list_time

    today = dt.date(2026, 5, 20)
    assert list_time("2026-05-20T14:05:09.123Z", today) == "14:05"
    assert list_time("2026-05-01T10:20:30.123Z", today) == "May 1"
    assert list_time("2024-05-01T10:20:30.123Z", today) == "2024-05-01"


def test_a_search_with_no_match_says_so(qtbot, service, window):
    service.content.create({"type": "page", "title": "Only page"})
    window.list.refresh()
    assert not window.list.empty_label.isVisibleTo(window)
    qtbot.keyClicks(window.list.search, "no such words")
    qtbot.waitUntil(lambda: window.list.empty_label.isVisibleTo(window), timeout=3000)
    assert "No entry matches “no such words”" in window.list.empty_label.text()
    assert not window.list.tree.isVisibleTo(window)
    assert window.list.count_label.text() == "0 entries match the filter"
    window.list.search.clear()
    qtbot.waitUntil(lambda: window.list.tree.isVisibleTo(window), timeout=3000)
    assert not window.list.empty_label.isVisibleTo(window)


def test_a_refresh_keeps_a_deep_selection_and_the_scroll(qtbot, many, window):
    lst = window.list
    lst.refresh()
    bar = lst.tree.verticalScrollBar()
    while len(lst.ids()) < 900:
        bar.setValue(bar.maximum())
        qtbot.wait(5)
    target = lst.ids()[850]
    lst.tree.setCurrentIndex(lst.index_of(target))
    qtbot.waitUntil(lambda: window.editor.entry and window.editor.entry["id"] == target, timeout=3000)
    lst.tree.scrollTo(lst.index_of(target))
    scroll = bar.value()
    many.content.create({"type": "page", "title": "Made elsewhere"})  # a change through the service
    qtbot.waitUntil(lambda: lst.total() == N + 1, timeout=3000)
    assert lst.current_id() == target and lst.tree.currentIndex().data(Qt.ItemDataRole.UserRole) == target
    assert abs(bar.value() - scroll) <= 1  # the new entry on top moves the rows by one
    assert lst.count_label.text() == f"{N + 1:,} entries"


def test_a_new_order_starts_at_its_top(qtbot, many, window):
    lst = window.list
    lst.refresh()
    scroll_to_end(qtbot, lst)
    header = lst.tree.horizontalHeader()
    header.setSortIndicator(0, Qt.SortOrder.AscendingOrder)
    qtbot.waitUntil(lambda: lst.model.sort_column == 0, timeout=2000)
    assert lst.tree.verticalScrollBar().value() == 0
    assert len(lst.ids()) < N and lst.model.canFetchMore()  # not every row read again
    first = lst.tree.indexAt(lst.tree.viewport().rect().topLeft())
    assert first.row() == 0 and first.data() == "Entry 0000 Alpha"
