"""The main window on a real service: every action reaches the database through service.content."""
from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import Qt

from test_gui_support import approve_all_hooks, service, site_root, wait_idle, window  # noqa: F401

pytestmark = pytest.mark.timeout(60)


def make(service, **data):
    return service.content.create(dict({"type": "page", "body": ""}, **data))


def test_new_page_is_created_in_the_database(qtbot, window, service):
    window.act_new_page.trigger()
    assert window.editor.is_new() and window.editor.heading.text() == "New page"
    qtbot.keyClicks(window.editor.title, "Opening hours")
    window.editor.body.setPlainText("Open **daily**.")
    assert window.editor.is_dirty() and window.isWindowModified()
    window.act_save.trigger()
    wait_idle(qtbot, window)
    [entry] = service.content.list(search="Opening hours")
    assert entry["slug"] == "opening-hours" and entry["type"] == "page" and entry["status"] == "draft"
    assert entry["body"] == "Open **daily**."
    assert not window.editor.is_dirty() and not window.isWindowModified()
    assert window.editor.slug.text() == "opening-hours"  # the slug the service made is shown
    assert window.list.current_id() == entry["id"] and entry["id"] in window.list.ids()


def test_new_post_and_ctrl_s(qtbot, window, service):
    window.act_new_post.trigger()
    window.editor.title.setText("News")
    qtbot.keyClick(window.editor.body, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    wait_idle(qtbot, window)
    [entry] = service.content.list(type="post")
    assert entry["title"] == "News"


def test_editing_and_saving_updates_the_entry(qtbot, window, service):
    e = make(service, title="About", body="old text")
    window.list.refresh()
    window.open_entry(e["id"])
    assert window.editor.body.toPlainText() == "old text"
    assert not window.act_save.isEnabled()
    window.editor.body.setPlainText("new text")
    assert window.act_save.isEnabled() and window.editor.dirty_label.isVisibleTo(window.editor)
    window.save()
    wait_idle(qtbot, window)
    assert service.content.get(e["id"])["body"] == "new text"
    assert [r["number"] for r in service.content.revisions(e["id"])] == [2, 1]
    assert window.editor.revisions.list.count() == 2


def test_publish_and_unpublish(qtbot, window, service):
    e = make(service, title="Launch", body="we are live")
    window.list.refresh()
    window.open_entry(e["id"])
    assert window.act_publish.isEnabled() and not window.act_unpublish.isEnabled()
    window.act_publish.trigger()
    wait_idle(qtbot, window)
    stored = service.content.get(e["id"])
    assert stored["status"] == "published" and stored["published_at"]
    assert window.editor.status_badge.text() == "Published"
    assert window.act_unpublish.isEnabled() and not window.act_publish.isEnabled()
    window.act_unpublish.trigger()
    wait_idle(qtbot, window)
    assert service.content.get(e["id"])["status"] == "draft"


def test_publishing_unsaved_edits_saves_them_in_the_same_change(qtbot, window, service):
    e = make(service, title="Draft", body="v1")
    window.list.refresh()
    window.open_entry(e["id"])
    window.editor.body.setPlainText("v2")
    window.publish()
    wait_idle(qtbot, window)
    stored = service.content.get(e["id"])
    assert (stored["status"], stored["body"]) == ("published", "v2")
    assert not window.editor.is_dirty()


def test_filter_by_type_and_status_and_search(qtbot, window, service):
    a = make(service, title="Apple page", body="fruit")
    b = make(service, type="post", title="Banana post", body="yellow fruit", status="published")
    c = make(service, type="post", title="Cherry post", body="red")
    window.list.set_filters()
    assert set(window.list.ids()) >= {a["id"], b["id"], c["id"]}
    window.list.set_filters(type="post")
    assert set(window.list.ids()) == {b["id"], c["id"]}
    window.list.set_filters(type="post", status="published")
    assert window.list.ids() == [b["id"]]
    window.list.set_filters(search="fruit")
    assert set(window.list.ids()) == {a["id"], b["id"]}
    assert "match" in window.list.count_label.text()
    # typing in the search box narrows the list after a short debounce
    window.list.set_filters()
    qtbot.keyClicks(window.list.search, "cherry")
    qtbot.waitUntil(lambda: window.list.ids() == [c["id"]], timeout=3000)
    # and the combo boxes work as the user picks them
    window.list.search.clear()
    window.list.status_filter.setCurrentIndex(window.list.status_filter.findData("draft"))
    qtbot.waitUntil(lambda: b["id"] not in window.list.ids() and a["id"] in window.list.ids(), timeout=3000)


def test_a_before_publish_abort_shows_the_message_and_keeps_the_text(qtbot, window, service):
    approve_all_hooks(service, "guard")
    e = make(service, title="Plans", body="harmless")
    window.list.refresh()
    window.open_entry(e["id"])
    typed = "harmless\n\nnow with forbidden words the author typed"
    window.editor.body.setPlainText(typed)
    window.act_publish.trigger()
    wait_idle(qtbot, window)
    bar = window.editor.message_bar
    assert bar.isVisibleTo(window) and bar.kind == "error"
    assert "need a review before publishing" in bar.text()
    assert "guard" in bar.title() and "publish" in bar.title()
    # the unsaved text is still there, still unsaved, and nothing reached the database
    assert window.editor.body.toPlainText() == typed
    assert window.editor.is_dirty() and window.act_save.isEnabled()
    stored = service.content.get(e["id"])
    assert (stored["status"], stored["body"]) == ("draft", "harmless")
    # Save alone (no publish) is allowed by the guard: the text reaches the database
    window.save()
    wait_idle(qtbot, window)
    assert service.content.get(e["id"])["body"] == typed
    assert not bar.isVisibleTo(window)


def test_a_before_update_abort_on_save_keeps_the_text(qtbot, window, service):
    approve_all_hooks(service, "guard")
    e = make(service, title="Menu", body="soup")
    window.list.refresh()
    window.open_entry(e["id"])
    window.editor.title.setText("Menu LOCKED")
    window.editor.body.setPlainText("soup and bread")
    window.save()
    wait_idle(qtbot, window)
    assert window.editor.message_bar.text() == "Locked titles cannot be saved."
    assert "save" in window.editor.message_bar.title()
    assert window.editor.title.text() == "Menu LOCKED"
    assert window.editor.body.toPlainText() == "soup and bread"
    assert window.editor.is_dirty()
    assert service.content.get(e["id"])["body"] == "soup"


def test_unapproved_hooks_do_not_refuse(qtbot, window, service):
    e = make(service, title="Plans", body="forbidden")
    window.list.refresh()
    window.open_entry(e["id"])
    window.publish()
    wait_idle(qtbot, window)
    assert service.content.get(e["id"])["status"] == "published"
    assert not window.editor.message_bar.isVisibleTo(window)


def test_switching_with_unsaved_edits_asks(qtbot, window, service):
    first = make(service, title="First", body="one")
    second = make(service, title="Second", body="two")
    window.list.refresh()
    window.open_entry(first["id"])
    answers = []
    window.ask_unsaved = lambda: answers.pop(0)

    window.editor.body.setPlainText("one, edited")
    answers.append("cancel")
    window.list._current_changed(window.list.index_of(second["id"]), None)
    assert window.editor.entry["id"] == first["id"] and window.editor.body.toPlainText() == "one, edited"
    qtbot.waitUntil(lambda: window.list.current_id() == first["id"])

    answers.append("save")
    window.list._current_changed(window.list.index_of(second["id"]), None)
    wait_idle(qtbot, window)
    qtbot.waitUntil(lambda: window.editor.entry["id"] == second["id"])
    assert service.content.get(first["id"])["body"] == "one, edited"

    window.editor.body.setPlainText("two, edited")
    answers.append("discard")
    window.new_entry("post")
    assert window.editor.is_new() and window.editor.body.toPlainText() == ""
    assert service.content.get(second["id"])["body"] == "two"
    assert answers == []


def test_clicking_an_entry_in_the_list_opens_it(qtbot, window, service):
    e = make(service, title="Clickable", body="text")
    window.list.refresh()
    rect = window.list.tree.visualRect(window.list.index_of(e["id"]))
    qtbot.mouseClick(window.list.tree.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert window.editor.entry["id"] == e["id"]
    assert window.editor.title.text() == "Clickable"


def test_delete_asks_and_removes(qtbot, window, service):
    keep = make(service, title="Keep", body="")
    gone = make(service, title="Gone", body="")
    window.list.refresh()
    window.open_entry(gone["id"])
    window.confirm = lambda *a: False
    window.delete()
    assert service.content.get(gone["id"])
    window.confirm = lambda *a: True
    window.act_delete.trigger()
    wait_idle(qtbot, window)
    assert gone["id"] not in [e["id"] for e in service.content.list()]
    assert gone["id"] not in window.list.ids()
    assert window.editor.entry is None or window.editor.entry["id"] == keep["id"]


def test_revisions_restore(qtbot, window, service):
    e = make(service, title="History", body="first")
    service.content.update(e["id"], {"body": "second"})
    window.list.refresh()
    window.open_entry(e["id"])
    panel = window.editor.revisions
    assert panel.list.count() == 2
    panel.list.setCurrentRow(0)
    assert not panel.restore_button.isEnabled()  # the newest is what is saved already
    panel.list.setCurrentRow(1)
    assert panel.selected_number() == 1 and panel.restore_button.isEnabled()
    assert "first" in panel.preview.toPlainText()
    panel.restore_button.click()
    wait_idle(qtbot, window)
    assert service.content.get(e["id"])["body"] == "first"
    assert window.editor.body.toPlainText() == "first"
    assert panel.list.count() == 3


def test_live_preview_renders_markdown_and_escapes_html(qtbot, window):
    window.new_entry("page")
    window.editor.body.setPlainText("# Big title\n\nSome *emphasis* and <b>raw html</b>")
    with qtbot.waitSignal(window.editor.preview.rendered, timeout=2000):
        pass
    html = window.editor.preview.toHtml()
    text = window.editor.preview.toPlainText()
    assert "Big title" in text and "emphasis" in text
    assert "<b>raw html</b>" in text  # shown as text, not interpreted
    assert "font-style:italic" in html.replace(" ", "")


def test_changes_made_elsewhere_show_up(qtbot, window, service):
    e = make(service, title="Shared", body="v1")
    window.list.refresh()
    window.open_entry(e["id"])
    t = threading.Thread(target=lambda: service.content.update(e["id"], {"body": "v2 from the API"}))
    t.start()
    t.join()
    qtbot.waitUntil(lambda: window.editor.body.toPlainText() == "v2 from the API", timeout=3000)
    other = []
    t = threading.Thread(target=lambda: other.append(make(service, title="Made by API")))
    t.start()
    t.join()
    qtbot.waitUntil(lambda: other and other[0]["id"] in window.list.ids(), timeout=3000)


def test_preview_in_browser_uses_the_server_address(qtbot, window, service, monkeypatch):
    opened = []
    monkeypatch.setattr("modula_desktop.gui.main_window.QDesktopServices.openUrl",
                        lambda url: opened.append(url.toString()))

    class FakeServer:
        url = "http://127.0.0.1:9999"

    e = make(service, title="Preview me", body="")
    window.list.refresh()
    window.open_entry(e["id"])
    assert not window.act_open_preview.isEnabled()  # no server yet
    assert "not available" in window.server_label.text()
    window.set_server(FakeServer())
    assert "http://127.0.0.1:9999" in window.server_label.text()
    assert window.act_open_preview.isEnabled()
    window.act_open_preview.trigger()
    assert opened == ["http://127.0.0.1:9999/preview/preview-me"]
    window.copy_server_address()
    from PySide6.QtGui import QGuiApplication
    assert QGuiApplication.clipboard().text() == "http://127.0.0.1:9999"
