"""The content list over the whole table: every entry a row from the start, read in blocks as drawn and
forgotten when out of the way (bounded memory), sortable by every column (in SQL, on an index), the real
total shown, titles given the width, and a search with no match that says so."""
from __future__ import annotations

import itertools
import math
import random
import tracemalloc

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QAbstractItemView

from modula_desktop.gui.content_list import ID_ROLE

from test_gui_support import service, site_root, wait_idle, window  # noqa: F401

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


def drag_to_end(qtbot, lst):
    """The thumb dragged to the bottom a sixtieth at a time, each frame drawn (as the author scrolls)."""
    bar = lst.tree.verticalScrollBar()
    while bar.value() < bar.maximum():
        bar.setValue(min(bar.maximum(), bar.value() + max(1, bar.maximum() // 60)))
        lst.tree.viewport().repaint()
    qtbot.wait(5)


def every_row(lst) -> list[str]:
    """The id in every row of the list, top to bottom, as the view would ask for them."""
    model = lst.model
    return [model.index(row, 0).data(ID_ROLE) for row in range(model.rowCount())]


def bottom_row(lst):
    view = lst.tree
    return view.indexAt(QPoint(2, view.viewport().height() - 2))


def test_every_entry_is_a_row_and_the_total_is_real(qtbot, many, window):
    lst = window.list
    lst.refresh()
    assert lst.count_label.text() == "2,002 entries"
    assert lst.model.rowCount() == N  # every entry is a row from the start ...
    assert 0 < len(lst.ids()) < N  # ... but only the rows drawn are read
    drag_to_end(qtbot, lst)
    # the oldest entry, beyond the old 1,000 limit, is the last row, drawn at the bottom, and opens
    oldest = many.content.list_sorted(descending=False, limit=1)[0]
    last = bottom_row(lst)
    assert last.row() == N - 1 and last.data(ID_ROLE) == oldest["id"] and last.data() == oldest["title"]
    ids = every_row(lst)
    assert len(set(ids)) == N and ids[-1] == oldest["id"]
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
        rank = (lambda e: (e[key].lower(), e["id"])) if key == "title" else (lambda e: (e[key], e["id"]))
        expected = [e["id"] for e in sorted(everything, key=rank, reverse=order == Qt.SortOrder.DescendingOrder)]
        assert every_row(lst) == expected


def test_each_sort_order_is_served_by_an_index(many):
    # the list's own queries (every filter is checked in tests/test_content_scale.py)
    for sort in ("title", "type", "status", "updated_at"):
        for descending in (False, True):
            text = many.content.query_plan(sort=sort, descending=descending, after=True)
            assert "INDEX content_live_" in text and "TEMP B-TREE" not in text, (sort, descending, text)


def test_a_site_from_before_gets_the_live_list_indexes(tmp_path):
    """A site made with the indexes of every row (content_deleted_at, the list's on (column, id)) gets
    the partial ones when it opens, and its list reads stop sorting the table."""
    import sqlite3

    from modula_desktop.core import storage
    from modula_desktop.core.service import SiteService
    from modula_desktop.core.site import Site

    SiteService(Site(tmp_path)).close()
    version = storage.MIGRATIONS.index(storage.add_live_indexes)  # the version before it
    db = sqlite3.connect(tmp_path / "site.db")
    db.executescript("DROP INDEX content_trash; CREATE INDEX content_deleted_at ON content (deleted_at);"
                     + "".join(f"DROP INDEX content_live_{name}; " for name, _key in storage.LIVE_INDEXES)
                     + "".join(f"CREATE INDEX content_list_{name} ON content ({key}, id);"
                               for name, key in storage.LIST_INDEXES)
                     + f"DELETE FROM schema_version WHERE version > {version};")
    db.commit()
    db.close()
    svc = SiteService(Site(tmp_path))
    try:
        indexes = dict(svc.db.execute_sql("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                                          "AND tbl_name = 'content' AND sql IS NOT NULL").fetchall())
        assert "content_deleted_at" not in indexes and "WHERE deleted_at IS NOT NULL" in indexes["content_trash"]
        assert not [name for name in indexes if name.startswith("content_list_")]
        for name, _key in storage.LIVE_INDEXES:
            assert indexes[f"content_live_{name}"].endswith("WHERE deleted_at IS NULL")
        plan = svc.content.query_plan(status="draft", sort="updated_at", descending=True, after=True)
        assert "content_live_updated" in plan and "TEMP B-TREE" not in plan, plan
    finally:
        svc.close()


def test_list_window_and_position_agree_with_the_whole_order(many):
    content = many.content
    content.delete(content.list_sorted(limit=1, sort="title")[0]["id"])  # one in the Trash: not a row
    for sort in ("title", "updated_at"):
        for filters in ({}, {"type": "page"}, {"status": "draft", "type": "post"}):
            everything, after = [], None
            while page := content.list_sorted(**filters, sort=sort, descending=False, limit=1000, after=after):
                everything += page
                after = page[-1]
            ids = [e["id"] for e in everything]
            assert len(ids) == content.count(**filters)
            # from the top with a skip, and from any row with a skip after it
            assert [e["id"] for e in content.list_window(**filters, sort=sort, descending=False, limit=7,
                                                         skip=len(ids) - 5)] == ids[-5:]
            for start, skip in ((0, 0), (10, 300), (len(ids) // 2, 1)):
                got = content.list_window(**filters, sort=sort, descending=False, limit=5, after=everything[start],
                                          skip=skip)
                assert [e["id"] for e in got] == ids[start + 1 + skip:start + 6 + skip]
            for row in (0, 1, len(ids) // 3, len(ids) - 1):
                assert content.position(ids[row], **filters, sort=sort, descending=False) == row
                assert content.position(ids[row], **filters, sort=sort, descending=True) == len(ids) - 1 - row
    trashed = content.trash()[0]
    assert content.position(trashed["id"]) is None
    a_page = content.list_sorted(type="page", limit=1)[0]
    assert content.position(a_page["id"], type="post") is None


def test_list_window_refuses_bad_arguments(service):
    from modula_desktop.core.errors import ValidationError

    for bad in ({"skip": -1}, {"skip": True}, {"limit": 0}, {"sort": "body"}, {"status": "gone"}, {"type": "x"}):
        with pytest.raises(ValidationError):
            service.content.list_window(**bad)
    with pytest.raises(ValidationError, match="sort must be one of"):
        service.content.position("x", sort="id; DROP TABLE content")


def test_blocks_read_in_any_order_are_the_right_rows(qtbot, many, window):
    """A jump of the thumb reads a block far from any read before (a skip from the top or from the
    nearest mark); the rows are those of the order whatever the path, also with a cache of two blocks."""
    lst = window.list
    lst.model.block, lst.model.cache_blocks = 64, 2
    lst.refresh()
    expected, after = [], None  # the order by keyset paging alone (list_sorted), no skip anywhere
    while page := many.content.list_sorted(limit=1000, after=after):
        expected += [e["id"] for e in page]
        after = page[-1]
    assert len(expected) == N
    rows = [N - 1, 0, 1000, 1999, 64, 63, 1500, 700, 2001, 5] + random.Random(14).sample(range(N), 200)
    for row in rows:
        assert lst.model.index(row, 0).data(ID_ROLE) == expected[row], row
    assert len(lst.model._blocks) <= 2


def test_scrolling_up_and_down_all_day_keeps_the_memory_bounded(qtbot, many, window):
    """The blocks held are capped (the least recently drawn are forgotten), the marks are two strings per
    block of the list, and scrolling the whole list up and down again and again grows nothing."""
    lst = window.list
    lst.model.block, lst.model.cache_blocks = 50, 4
    bar = lst.tree.verticalScrollBar()

    def up_and_down():
        for target in (bar.maximum(), 0):
            while bar.value() != target:
                step = max(1, bar.maximum() // 30)
                bar.setValue(min(target, bar.value() + step) if target else max(0, bar.value() - step))
                lst.tree.viewport().repaint()

    def rows_kept() -> int:
        # the memory still held that was allocated on the list's behalf (its reads, its marks)
        kept = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, "*/gui/content_list.py", all_frames=True)])
        return sum(trace.size for trace in kept.traces)

    tracemalloc.start(3)  # deep enough to see gui/content_list.py above a read in content.py
    try:
        lst.refresh()
        up_and_down()
        second = rows_kept()
        reads = lst.model.reads
        for _ in range(3):
            up_and_down()
        held = rows_kept()
        before = tracemalloc.get_traced_memory()[0]
        everything = [many.content.list_window(limit=1000, skip=s) for s in range(0, N, 1000)]
        all_rows = tracemalloc.get_traced_memory()[0] - before  # what keeping every row would cost, for scale
        del everything
    finally:
        tracemalloc.stop()
    assert lst.model.reads > reads + 3 * N // 50  # the forgotten blocks were really read again
    assert len(lst.model.held()) <= 4 * 50 and len(lst.model._marks) <= math.ceil(N / 50)
    assert held < all_rows / 4, (held, all_rows)  # the whole list was drawn four times; a fraction is kept
    assert held - second < all_rows / 50, (held - second, all_rows)  # and nothing grows from pass to pass


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
    target = lst.model.index(1850, 0).data(ID_ROLE)
    lst.tree.scrollTo(lst.model.index(1850, 0))
    lst.tree.setCurrentIndex(lst.index_of(target))
    qtbot.waitUntil(lambda: window.editor.entry and window.editor.entry["id"] == target, timeout=3000)
    scroll = bar.value()
    assert scroll > 1000
    many.content.create({"type": "page", "title": "Made elsewhere"})  # a change through the service
    qtbot.waitUntil(lambda: lst.total() == N + 1, timeout=3000)
    assert lst.current_id() == target and lst.tree.currentIndex().data(ID_ROLE) == target
    assert lst.tree.currentIndex().row() == 1851  # the new entry on top moved it down a row
    assert abs(bar.value() - scroll) <= 1
    assert lst.count_label.text() == f"{N + 1:,} entries"
    # an edit elsewhere moves the selected entry to the top of "Updated": the selection follows it
    many.content.update(target, {"title": "Touched elsewhere"})
    qtbot.waitUntil(lambda: lst.tree.currentIndex().row() == 0, timeout=3000)
    assert lst.current_id() == target and lst.tree.currentIndex().data() == "Touched elsewhere"


def test_deleting_the_last_row_of_a_block_opens_the_next_entry(qtbot, many, window):
    """Deep in a long list, on a block's last row with the next block not drawn yet: the entry that
    takes its place opens, as on a short list."""
    lst = window.list
    lst.model.block = 50
    lst.refresh()
    row = 1049  # the last row of block 20
    lst.tree.scrollTo(lst.model.index(row, 0), QAbstractItemView.ScrollHint.PositionAtBottom)
    lst.tree.viewport().repaint()
    gone, after = lst.model.entry_at(row)["id"], lst.model.entry_at(row + 1)["id"]
    lst.model._blocks.pop(21, None)  # as if that block had been forgotten (drawn long ago)
    lst.tree.setCurrentIndex(lst.index_of(gone))
    qtbot.waitUntil(lambda: window.editor.entry and window.editor.entry["id"] == gone, timeout=3000)
    window.confirm = lambda *a: True
    window.delete()
    wait_idle(qtbot, window)
    assert window.editor.entry["id"] == after and lst.current_id() == after
    assert lst.tree.currentIndex().row() == row and lst.total() == N - 1


def test_a_new_order_starts_at_its_top(qtbot, many, window):
    lst = window.list
    lst.refresh()
    drag_to_end(qtbot, lst)
    reads = lst.model.reads
    header = lst.tree.horizontalHeader()
    header.setSortIndicator(0, Qt.SortOrder.AscendingOrder)
    qtbot.waitUntil(lambda: lst.model.sort_column == 0, timeout=2000)
    assert lst.tree.verticalScrollBar().value() == 0
    lst.tree.viewport().repaint()
    assert 0 < len(lst.ids()) < N and lst.model.reads - reads <= 2  # the top read, not every row again
    first = lst.tree.indexAt(lst.tree.viewport().rect().topLeft())
    assert first.row() == 0 and first.data() == "Entry 0000 Alpha"
