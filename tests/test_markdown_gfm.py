"""Tables, strikethrough and task lists in the editor's preview and on /preview/ (one renderer for
both), raw HTML still escaped; quotes get a left bar and lists a moderate indent."""
from __future__ import annotations

import pytest
from PySide6.QtGui import QTextCursor

from _server_fixtures import running_site
from modula_desktop.core.markdown import render_markdown

pytestmark = pytest.mark.timeout(60)

BODY = """Intro

| Item | Qty |
|------|----:|
| Apples | 3 |
| Pears | ~~12~~ 11 |

- [ ] write the intro
- [x] pick a title
- plain item
  - nested

> quoted
> > nested quote

<script>alert(1)</script> <b>bold?</b>

[bad](javascript:alert(1))
"""


def test_the_shared_renderer_knows_tables_strikethrough_and_task_lists():
    html = render_markdown(BODY)
    assert "<table>" in html and "<th>Item</th>" in html and '<td style="text-align:right">3</td>' in html
    assert "<s>12</s>" in html
    assert '<li class="task-list-item"><span class="task-box" aria-label="to do">\u2610</span> write' in html
    assert '<li class="task-list-item done"><span class="task-box" aria-label="done">\u2611</span> pick' in html
    assert "<li>plain item" in html and "[ ]" not in html
    # raw HTML is text, never markup; a javascript: link is not a link
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;" in html
    assert 'href="javascript' not in html


def test_a_task_marker_is_only_a_marker_at_the_start_of_an_item():
    html = render_markdown("- see [x] above\n- [y] not a task\n\n[ ] not in a list\n")
    assert "task-box" not in html and "[x] above" in html and "[ ] not in a list" in html


def test_the_editor_preview_draws_the_table_and_the_boxes(qtbot):
    from modula_desktop.gui.preview import MarkdownPreview

    view = MarkdownPreview(delay_ms=0)
    qtbot.addWidget(view)
    view.resize(600, 600)
    view.render_now(BODY)
    doc = view.document()
    tables = []
    cursor = QTextCursor(doc)
    block = doc.begin()
    while block.isValid():
        cursor.setPosition(block.position())
        table = cursor.currentTable()
        if table is not None and table not in tables:
            tables.append(table)
        block = block.next()
    text = doc.toPlainText()
    # the data table (3 rows x 2 columns) and the quotes' bar tables
    assert any(t.rows() == 3 and t.columns() == 2 for t in tables)
    assert "\u2610 write the intro" in text and "\u2611 pick a title" in text
    assert "<script>alert(1)</script>" in text  # shown as typed
    assert sum(1 for t in tables if t.columns() == 2 and t.rows() == 1) >= 2  # two quote bars
    # struck text is drawn struck
    find = doc.find("12")
    assert find.charFormat().fontStrikeOut()
    view.show()
    qtbot.waitExposed(view)
    view.grab().save("/tmp/gui2shots/preview_table.png")


def test_the_server_preview_page_renders_the_same(tmp_path):
    with running_site(tmp_path, plugins=()) as r:
        r.service.content.create({"type": "page", "title": "Table page", "slug": "table-page", "body": BODY,
                                  "status": "published"})
        page = r.client.get("/preview/table-page", token=False)
        assert page.status == 200
        text = page.body.decode()
        assert render_markdown(BODY) in text
        assert "<script>alert" not in text
        assert "border-left" in text and "task-list-item" in text  # the stylesheet styles quotes and tasks
