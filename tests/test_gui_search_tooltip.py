"""Issue 17: while the content list searches, an entry's tooltip shows the words found in its text."""
from __future__ import annotations

from PySide6.QtCore import Qt

from conftest_content import make_site  # noqa: F401 - a fixture
from modula_desktop.gui.content_list import ContentModel


def test_the_tooltip_shows_the_snippet_while_searching(qtbot, make_site):
    service = make_site()
    e = service.content.create({"title": "Walks", "body": "We took the <lantern> along the river at night."})
    model = ContentModel(service.content)
    model.reload()
    tip = model.data(model.index(model.row_of(e["id"]), 0), Qt.ItemDataRole.ToolTipRole)
    assert "<" not in tip and tip.startswith("Walks\n"), "no search: the plain tooltip"
    model.filters["search"] = "lanterns OR lantern"
    model.reload()
    tip = model.data(model.index(model.row_of(e["id"]), 0), Qt.ItemDataRole.ToolTipRole)
    assert "<b>lantern</b>" in tip and "&lt;" in tip and "Walks" in tip, tip
