"""Issue 16 item 3: the editor edits a post's tags and excerpt (stored in the entry's fields, which the build's
tag pages, home page and feeds read). The real window offscreen over a real service and site."""
from __future__ import annotations

import pytest

from modula_desktop.core.build import build_site
from test_gui_support import service, site_root, wait_idle, window  # noqa: F401

pytestmark = pytest.mark.timeout(60)


def test_tags_and_excerpt_are_shown_for_posts_only(qtbot, window, service):
    page = service.content.create({"title": "About", "type": "page"})
    post = service.content.create({"title": "Trip", "type": "post",
                                   "fields": {"tags": ["travel", "notes"], "excerpt": "Where we went.", "x": 1}})
    window.open_entry(page["id"])
    assert not window.editor.form.isRowVisible(window.editor.tags)
    window.open_entry(post["id"])
    assert window.editor.form.isRowVisible(window.editor.tags)
    assert window.editor.form.isRowVisible(window.editor.excerpt)
    assert window.editor.tags.text() == "travel, notes"
    assert window.editor.excerpt.text() == "Where we went."
    assert not window.editor.is_dirty()


def test_editing_tags_and_excerpt_saves_them_and_keeps_the_other_fields(qtbot, window, service):
    post = service.content.create({"title": "Trip", "type": "post", "status": "published",
                                   "fields": {"tags": ["travel"], "mood": "sunny"}})
    window.open_entry(post["id"])
    window.editor.tags.setText(" travel,  Food & Drink ,, ")
    window.editor.excerpt.setText("  A short trip.  ")
    assert window.editor.is_dirty()
    assert window.editor.changes() == {"fields": {"tags": ["travel", "Food & Drink"], "mood": "sunny",
                                                  "excerpt": "A short trip."}}
    window.save()
    wait_idle(qtbot, window)
    saved = service.content.get(post["id"])
    assert saved["fields"] == {"tags": ["travel", "Food & Drink"], "mood": "sunny", "excerpt": "A short trip."}
    assert not window.editor.is_dirty()
    assert window.editor.tags.text() == "travel, Food & Drink"

    # the build writes a tag page for the new tag and uses the excerpt on the home page
    out = service.site.root / "build"
    build_site(service, out)
    assert any("food" in p.name for p in (out / "tag").iterdir()), sorted(p.name for p in (out / "tag").iterdir())
    assert "A short trip." in (out / "index.html").read_text(encoding="utf-8")

    # clearing both removes them; the unrelated field stays
    window.editor.tags.setText("")
    window.editor.excerpt.setText("")
    window.save()
    wait_idle(qtbot, window)
    assert service.content.get(post["id"])["fields"] == {"mood": "sunny"}


def test_a_new_post_with_tags(qtbot, window, service):
    window.new_entry("post")
    window.editor.title.setText("Fresh")
    window.editor.tags.setText("news")
    window.save()
    wait_idle(qtbot, window)
    made = [e for e in service.content.list() if e["title"] == "Fresh"]
    assert made and made[0]["fields"] == {"tags": ["news"]}
