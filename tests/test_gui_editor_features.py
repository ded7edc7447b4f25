"""Issue 14 §3, the editor: Ctrl+B / Ctrl+I / Ctrl+K, Markdown highlighting, word count and reading
time, and autosave (unsaved text survives a crash; a restore is offered at the next start).

A real service on a real temp site; the window offscreen, driven through qtbot.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QTextCharFormat, QTextCursor

from modula_desktop.core.service import SiteService
from modula_desktop.core.settings import Settings
from modula_desktop.core.site import Site
from modula_desktop.gui.markdown_syntax import COLOURS, count_text, word_count
from test_gui_support import service, site_root, wait_idle, window  # noqa: F401

pytestmark = pytest.mark.timeout(60)
CTRL = Qt.KeyboardModifier.ControlModifier


def select(edit, start, end):
    c = edit.textCursor()
    c.setPosition(start)
    c.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
    edit.setTextCursor(c)


# ---- formatting shortcuts -------------------------------------------------------------------------
def test_ctrl_b_and_ctrl_i_wrap_and_unwrap_the_selection(qtbot, window):
    body = window.editor.body
    body.setPlainText("make this bold")
    body.setFocus()
    select(body, 5, 9)
    qtbot.keyClick(body, Qt.Key.Key_B, CTRL)
    assert body.toPlainText() == "make **this** bold"
    assert body.textCursor().selectedText() == "this", "the text stays selected for another shortcut"
    qtbot.keyClick(body, Qt.Key.Key_I, CTRL)
    assert body.toPlainText() == "make ***this*** bold"
    qtbot.keyClick(body, Qt.Key.Key_I, CTRL)
    qtbot.keyClick(body, Qt.Key.Key_B, CTRL)
    assert body.toPlainText() == "make this bold", "pressed again, the markers go"
    body.undo()
    assert body.toPlainText() == "make **this** bold", "one undo step per shortcut"
    assert window.editor.is_dirty()


def test_ctrl_b_without_selection_inserts_markers_around_the_cursor(qtbot, window):
    body = window.editor.body
    body.setPlainText("x ")
    body.setFocus()
    body.moveCursor(QTextCursor.MoveOperation.End)
    qtbot.keyClick(body, Qt.Key.Key_B, CTRL)
    qtbot.keyClicks(body, "loud")
    assert body.toPlainText() == "x **loud**"


def test_ctrl_k_makes_a_link_with_the_address_ready_to_type(qtbot, window):
    body = window.editor.body
    body.setPlainText("see the docs")
    body.setFocus()
    select(body, 8, 12)
    qtbot.keyClick(body, Qt.Key.Key_K, CTRL)
    assert body.toPlainText() == "see the [docs](https://)"
    qtbot.keyClicks(body, "example.org")
    assert body.toPlainText() == "see the [docs](example.org)"
    body.setPlainText("https://modula.example/a")
    select(body, 0, len(body.toPlainText()))
    qtbot.keyClick(body, Qt.Key.Key_K, CTRL)
    qtbot.keyClicks(body, "Modula")
    assert body.toPlainText() == "[Modula](https://modula.example/a)"


def test_the_shortcuts_belong_to_the_body_only(qtbot, window):
    window.editor.body.setPlainText("body")
    window.editor.title.setText("Title")
    window.editor.title.setFocus()
    window.editor.title.selectAll()
    qtbot.keyClick(window.editor.title, Qt.Key.Key_B, CTRL)
    assert window.editor.body.toPlainText() == "body" and window.editor.title.text() == "Title"


# ---- highlighting -------------------------------------------------------------------------------
def formats_of(edit, line: int):
    block = edit.document().findBlockByNumber(line)
    ranges = block.layout().formats()
    return [(r.start, r.length, QTextCharFormat(r.format)) for r in ranges]


def test_markdown_is_highlighted(qtbot, window):
    body = window.editor.body
    body.setPlainText("# Heading\n> a quote\n- item with **bold** and `code` and [a link](https://x.y)\n"
                      "```\n# not a heading in code\n```\nplain")
    qtbot.waitUntil(lambda: bool(formats_of(body, 0)), timeout=2000)
    light = {k: v[0].lower() for k, v in COLOURS.items()}
    [(start, length, heading)] = formats_of(body, 0)
    assert (start, length) == (0, 9) and heading.fontWeight() == QFont.Weight.Bold
    assert heading.foreground().color().name() == light["heading"]
    assert formats_of(body, 1)[0][2].fontItalic()
    line = "- item with **bold** and `code` and [a link](https://x.y)"
    spans = {line[s:s + n]: f for s, n, f in formats_of(body, 2)}
    assert spans["-"].foreground().color().name() == light["list"]
    assert spans["**bold**"].fontWeight() == QFont.Weight.Bold
    assert spans["`code`"].background().color().name() == light["code_bg"]
    assert spans["[a link](https://x.y)"].foreground().color().name() == light["link"]
    in_code = formats_of(body, 4)
    assert in_code and in_code[0][2].fontWeight() != QFont.Weight.Bold, "a # inside a fence is code"
    assert formats_of(body, 6) == []


# ---- word count -------------------------------------------------------------------------------------
def test_word_count_and_reading_time_follow_the_text(qtbot, window):
    label = window.editor.word_count
    window.editor.body.setPlainText("")
    assert label.text() == "0 words · nothing to read yet"
    window.editor.body.setPlainText("One [link text](https://example.org/a-b-c) **bold**.")
    assert label.text().startswith("4 words")
    window.editor.body.setPlainText(" ".join(["word"] * 401))
    assert label.text() == "401 words · 3 min read"
    assert word_count("don't re-use `code_name`") == 3
    assert count_text("a b", 200) == "2 words · under a minute to read"


# ---- autosave -------------------------------------------------------------------------------------
def autosave_dir(service) -> Path:
    return service.site.state_dir / "autosave"


@pytest.fixture
def quick_service(site_root):
    s = Settings().replace(plugins={"hot_reload": False}, server={"port": 0}, window={"autosave_interval_s": 0.5})
    svc = SiteService(Site(site_root), s).start(hot_reload=False)
    yield svc
    svc.close()


def open_window(qtbot, service):
    from modula_desktop.gui.main_window import MainWindow

    w = MainWindow(service)
    w.ask_unsaved = lambda: pytest.fail("unexpected unsaved-changes prompt")
    w.confirm = lambda *a: pytest.fail("unexpected confirmation prompt")
    w.show()
    qtbot.waitExposed(w)
    return w


def close_window(w):
    w.shutdown()
    w.close()
    w.deleteLater()


def test_unsaved_text_is_written_every_few_seconds_and_removed_on_save(qtbot, quick_service):
    e = quick_service.content.create({"title": "Notes", "body": "old"})
    w = open_window(qtbot, quick_service)
    try:
        w.open_entry(e["id"])
        w.editor.body.setPlainText("new words, not saved yet")
        path = autosave_dir(quick_service) / f"{e['id']}.json"
        qtbot.waitUntil(path.exists, timeout=5000)
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data["values"]["body"] == "new words, not saved yet" and data["entry_id"] == e["id"]
        w.save()
        wait_idle(qtbot, w)
        assert not path.exists()
        w.act_new_page.trigger()
        qtbot.keyClicks(w.editor.title, "Fresh")
        new_path = autosave_dir(quick_service) / "new.json"
        qtbot.waitUntil(new_path.exists, timeout=5000)
        w.ask_unsaved = lambda: "discard"
        w._entry_activated(e["id"])
        assert not new_path.exists(), "discarded text is not offered again"
    finally:
        close_window(w)


def test_a_new_window_offers_the_autosave_and_restores_it(qtbot, service):
    e = service.content.create({"title": "Prices", "body": "tea 2"})
    folder = autosave_dir(service)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{e['id']}.json").write_text(json.dumps({
        "entry_id": e["id"], "title": "Prices", "saved_at": "2026-12-01T10:00:00.000Z",
        "values": {"title": "Prices", "slug": "prices", "type": "page", "body": "tea 2\ncoffee 3"}}))
    w = open_window(qtbot, service)
    try:
        bar = w.editor.restore_bar
        assert bar.isVisibleTo(w) and "“Prices”" in bar.label.text()
        qtbot.mouseClick(bar.restore_button, Qt.MouseButton.LeftButton)
        assert w.editor.entry["id"] == e["id"] and w.editor.body.toPlainText() == "tea 2\ncoffee 3"
        assert w.editor.is_dirty() and not bar.isVisibleTo(w)
        assert service.content.get(e["id"])["body"] == "tea 2", "restored into the editor, not saved yet"
        w.save()
        wait_idle(qtbot, w)
        assert service.content.get(e["id"])["body"] == "tea 2\ncoffee 3"
        assert list(folder.glob("*.json")) == []
    finally:
        close_window(w)


def test_restoring_over_a_newer_save_warns(qtbot, service):
    e = service.content.create({"title": "Hours", "body": "9-5"})
    folder = autosave_dir(service)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{e['id']}.json").write_text(json.dumps({
        "entry_id": e["id"], "title": "Hours", "saved_at": "2026-12-01T10:00:00.000Z",
        "entry_updated_at": e["updated_at"],
        "values": {"title": "Hours", "slug": "hours", "type": "page", "body": "9-6"}}))
    service.content.update(e["id"], {"body": "8-5"}, source="api")  # saved elsewhere since
    w = open_window(qtbot, service)
    try:
        w.editor.restore_bar.restore_button.click()
        assert w.editor.body.toPlainText() == "9-6" and w.editor.message_bar.kind == "warning"
        assert "saved again after these changes" in w.editor.message_bar.text()
    finally:
        close_window(w)


def test_the_autosave_is_not_rewritten_while_nothing_changes(qtbot, quick_service):
    e = quick_service.content.create({"title": "Still", "body": "a"})
    w = open_window(qtbot, quick_service)
    try:
        w.open_entry(e["id"])
        w.editor.body.setPlainText("b")
        path = autosave_dir(quick_service) / f"{e['id']}.json"
        qtbot.waitUntil(path.exists, timeout=5000)
        first = path.stat().st_mtime_ns
        qtbot.wait(1300)  # two more intervals
        assert path.stat().st_mtime_ns == first
        w.editor.body.setPlainText("c")
        qtbot.waitUntil(lambda: json.loads(path.read_text())["values"]["body"] == "c", timeout=5000)
    finally:
        close_window(w)


def test_discarding_the_offer_removes_it_and_a_new_entry_draft_restores_as_new(qtbot, service):
    folder = autosave_dir(service)
    folder.mkdir(parents=True, exist_ok=True)
    gone_id = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
    (folder / f"{gone_id}.json").write_text(json.dumps({
        "entry_id": gone_id, "title": "Deleted meanwhile", "saved_at": "2026-12-01T09:00:00.000Z",
        "values": {"title": "Deleted meanwhile", "slug": "", "type": "post", "body": "still here"}}))
    (folder / "new.json").write_text(json.dumps({
        "entry_id": None, "title": "Idea", "saved_at": "2026-12-01T11:00:00.000Z",
        "values": {"title": "Idea", "slug": "", "type": "post", "body": "draft idea"}}))
    (folder / "junk.json").write_text("{not json")
    w = open_window(qtbot, service)
    try:
        bar = w.editor.restore_bar
        assert "“Idea”" in bar.label.text() and "1 more" in bar.label.text()  # the newest first
        bar.discard_button.click()
        assert not (folder / "new.json").exists() and "“Deleted meanwhile”" in bar.label.text()
        bar.restore_button.click()
        assert w.editor.is_new() and w.editor.body.toPlainText() == "still here"
        assert w.editor.type.currentData() == "post" and "no longer exists" in w.editor.message_bar.text()
        assert not bar.isVisibleTo(w)
        assert (folder / "new.json").exists(), "kept under its new key until saved"
        w.save()
        wait_idle(qtbot, w)
        [entry] = service.content.list(search="Deleted meanwhile")
        assert entry["body"] == "still here" and not (folder / "new.json").exists()
    finally:
        close_window(w)


CHILD = textwrap.dedent("""
    import os, sys, time
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from pathlib import Path
    from PySide6.QtWidgets import QApplication
    from modula_desktop.core.service import SiteService
    from modula_desktop.core.settings import Settings
    from modula_desktop.core.site import Site
    from modula_desktop.gui.main_window import MainWindow
    app = QApplication([])
    s = Settings().replace(plugins={"hot_reload": False}, window={"autosave_interval_s": 0.5})
    svc = SiteService(Site(Path(sys.argv[1])), s).start(hot_reload=False)
    e = svc.content.create({"title": "Crash test", "body": "saved"})
    w = MainWindow(svc)
    w.show()
    w.open_entry(e["id"])
    w.editor.body.setPlainText("typed, then the power went out")
    path = svc.site.state_dir / "autosave" / (e["id"] + ".json")
    deadline = time.monotonic() + 20
    while not path.exists() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.05)
    print("written" if path.exists() else "not written", flush=True)
    time.sleep(60)
""")


def test_unsaved_text_survives_a_killed_process(qtbot, tmp_path):
    site = tmp_path / "site"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(site)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "written"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    svc = SiteService(Site(site), Settings().replace(plugins={"hot_reload": False}, server={"port": 0}))
    svc.start(hot_reload=False)
    w = open_window(qtbot, svc)
    try:
        assert "“Crash test”" in w.editor.restore_bar.label.text()
        w.editor.restore_bar.restore_button.click()
        assert w.editor.body.toPlainText() == "typed, then the power went out" and w.editor.is_dirty()
    finally:
        close_window(w)
        svc.close()
