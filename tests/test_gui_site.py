"""The window's Site menu on a real site: the settings dialog writes modula.toml, Build runs the real
pipeline off the GUI thread with progress and Cancel, Open Site opens the real server's /site/, Publish
sends to a real folder and a real git remote, and images pasted or dropped into the body land in media/."""
from __future__ import annotations

import gc
import io
import subprocess
import time
import urllib.request

import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QObject, QPointF, Qt, QTimer, QUrl, Slot
from PySide6.QtGui import QDesktopServices, QDropEvent, QGuiApplication, QImage, QTextDocument
from PySide6.QtWidgets import QApplication, QMessageBox

from build_helpers import add_posts, leftovers, snapshot
from helpers import write_plugin
from modula_desktop.core.build import add_media
from modula_desktop.core.service import SiteService
from modula_desktop.core.settings import Settings, load_settings
from modula_desktop.core.site import Site

pytestmark = pytest.mark.timeout(120)


def png(colour=(200, 30, 30), size=(40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def make_window(qtbot):
    made = []

    def make(root, *, plugins: dict | None = None, server=False, **sections):
        for name, body in (plugins or {}).items():
            write_plugin(root, name, body, info_extra='permissions = {"hooks", "hooks:before"}')
        settings = Settings().replace(plugins={"hot_reload": False}, server={"port": 0}, **sections)
        service = SiteService(Site(root), settings).start(hot_reload=False)
        for name in plugins or {}:
            for h in service.plugins.info(name)["hooks"]:
                service.approvals.approve_hook(name, h["event"], h["table"])
        handle = None
        if server:
            from modula_desktop.server.runner import start_background
            handle = start_background(service, port=0)
        from modula_desktop.gui.main_window import MainWindow
        w = MainWindow(service, handle)
        w.ask_unsaved = lambda: pytest.fail("unexpected unsaved-changes prompt")
        w.confirm = lambda *a: pytest.fail("unexpected confirmation prompt")
        w.show()
        qtbot.waitExposed(w)
        made.append((w, service, handle))
        return w, service
    yield make
    for w, service, handle in made:
        w.shutdown()
        w.close()
        if handle is not None:
            handle.stop()
        service.close()
        w.deleteLater()


def run_site(qtbot, window, start, timeout=60000) -> bool:
    """Start a build or publish and wait until its result was shown; True when it succeeded."""
    with qtbot.waitSignal(window.site_actions.finished, timeout=timeout) as blocker:
        start()
    return blocker.args[1]


def boxes(window, name):
    return [b for b in window.findChildren(QMessageBox) if b.objectName() == name and b.isVisible()]


# ---- the settings dialog -------------------------------------------------------------------------
def test_settings_dialog_validates_inline_and_writes_site_keeping_the_file(qtbot, make_window, tmp_path):
    root = tmp_path / "site"
    (root / "themes" / "autumn").mkdir(parents=True)
    window, service = make_window(root)
    original = service.site.settings_path.read_text()
    assert window.site_actions.act_settings in window.site_menu.actions()
    dialog = window.site_actions.show_settings()
    qtbot.waitExposed(dialog)
    assert dialog.title.text() == "My site" and dialog.base_url.text() == "https://example.com/"
    assert [dialog.theme.itemData(i) for i in range(dialog.theme.count())] == ["default", "autumn"]
    assert dialog.save_button.isEnabled()

    dialog.base_url.setText("example.com")
    problem = dialog.problem_labels["base_url"]
    assert problem.isVisibleTo(dialog) and problem.text().startswith("The base URL must start with http://")
    assert not dialog.save_button.isEnabled()
    dialog.base_url.setText("https://")
    assert "must name a host" in problem.text()
    dialog.language.setText("english")
    assert dialog.problem_labels["language"].isVisibleTo(dialog)
    dialog.title.setText("")
    assert dialog.problem_labels["title"].text() == "The title must not be empty."
    dialog.posts_per_page.setValue(500)
    assert dialog.posts_per_page.value() == 100  # the box holds 1..100
    dialog.permalink.setEditText("/<id>/")
    assert dialog.problem_labels["permalink"].text().startswith("The permalink must start with '/'")
    assert not dialog.save() and service.site.settings_path.read_text() == original

    dialog.title.setText("Field Notes")
    dialog.base_url.setText("https://notes.example/")
    dialog.language.setText("pt-BR")
    dialog.author.setText("Ada")
    dialog.theme.setCurrentIndex(dialog.theme.findData("autumn"))
    dialog.posts_per_page.setValue(4)
    dialog.permalink.setEditText("/<year>/<slug>/")
    assert not any(label.isVisibleTo(dialog) for label in dialog.problem_labels.values())
    assert dialog.save_button.isEnabled()
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert not dialog.isVisible()
    text = service.site.settings_path.read_text()
    assert text.startswith(original)  # the comments and sections the file had stay as they were
    site = load_settings(service.site.settings_path).site
    assert (site.title, site.base_url, site.language, site.author, site.theme, site.posts_per_page,
            site.permalink) == ("Field Notes", "https://notes.example/", "pt-BR", "Ada", "autumn", 4,
                                "/<year>/<slug>/")
    assert service.settings.site == site  # the next build uses them
    assert "Site settings saved" in window.statusBar().currentMessage()

    add_posts(service, 2)
    assert run_site(qtbot, window, window.site_actions.act_build.trigger)
    home = (root / "build" / "index.html").read_text()
    assert "<title>Field Notes</title>" in home and 'lang="pt-BR"' in home
    assert list((root / "build").glob("*/post-1/index.html"))


def test_settings_dialog_says_when_the_file_cannot_be_saved(qtbot, make_window, tmp_path):
    window, service = make_window(tmp_path / "site")
    dialog = window.site_actions.show_settings()
    broken = "[site\ntitle = 'x'\n"
    service.site.settings_path.write_text(broken)  # edited by hand meanwhile
    dialog.title.setText("New")
    assert not dialog.save()
    assert dialog.isVisible() and dialog.error.isVisibleTo(dialog)
    assert dialog.error.text().startswith("Could not save: modula.toml is not valid TOML")
    assert service.site.settings_path.read_text() == broken and service.settings.site.title == "My site"
    dialog.reject()


def test_a_missing_theme_is_shown_as_missing(qtbot, make_window, tmp_path):
    window, service = make_window(tmp_path / "site", site={"theme": "gone"})
    dialog = window.site_actions.show_settings()
    assert dialog.theme.currentData() == "gone" and "missing" in dialog.theme.currentText()
    dialog.reject()


# ---- build -----------------------------------------------------------------------------------
def test_build_runs_off_the_gui_thread_with_progress(qtbot, make_window, tmp_path):
    window, service = make_window(tmp_path / "site")
    add_posts(service, 40)
    actions = window.site_actions
    seen = []
    actions._relay.changed.connect(lambda phase, done, total, what: seen.append((phase, done, total)))
    assert window.site_menu.actions()[0] is actions.act_build
    assert actions.act_build in window.toolbar.actions()
    ok = run_site(qtbot, window, actions.act_build.trigger)
    assert ok and not actions.panel.isVisible() and actions.act_build.isEnabled()
    out = tmp_path / "site" / "build"
    assert (out / "post-39" / "index.html").is_file() and (out / "feed.xml").is_file()
    result = actions.last_result
    assert seen and seen[-1] == ("build", result.rendered, result.rendered) and result.rendered > 40
    assert all(b[2] == result.rendered for b in seen) and [b[1] for b in seen] == sorted(b[1] for b in seen)
    assert window.statusBar().currentMessage().startswith(f"Built {result.outputs} files")
    assert not boxes(window, "SiteErrorBox")
    # nothing changed: a second build writes nothing
    assert run_site(qtbot, window, actions.build)
    assert actions.last_result.written == []


def test_the_progress_panel_shows_the_work_while_it_runs(qtbot, make_window, tmp_path):
    window, service = make_window(tmp_path / "site")
    add_posts(service, 300)
    actions = window.site_actions
    values = []
    actions._relay.changed.connect(lambda *a: values.append((actions.panel.isVisible(), actions.panel.bar.maximum(),
                                                             actions.panel.label.text())))
    ok = run_site(qtbot, window, actions.build)
    assert ok
    shown = [v for v in values if v[0]]
    assert shown and shown[-1][1] == actions.last_result.rendered
    assert shown[-1][2] == f"Building: {actions.last_result.rendered:,} / {actions.last_result.rendered:,} files"
    assert actions.act_build.isEnabled()


def test_cancel_stops_the_build_and_leaves_the_last_output(qtbot, make_window, tmp_path):
    window, service = make_window(tmp_path / "site")
    posts = add_posts(service, 400)
    actions = window.site_actions
    assert run_site(qtbot, window, actions.build)
    out = tmp_path / "site" / "build"
    before = snapshot(out)
    for p in posts:
        service.content.update(p["id"], {"body": "changed everywhere"}, run_hooks=False)
    progressed = []
    actions._relay.changed.connect(lambda phase, done, total, what: progressed.append(done))

    def start():
        actions.build()
        assert not actions.act_build.isEnabled() and actions.panel.isVisible()
        qtbot.waitUntil(lambda: bool(progressed), timeout=30000)
        qtbot.mouseClick(actions.panel.cancel_button, Qt.MouseButton.LeftButton)
        assert actions.panel.cancel_button.text() == "Cancelling…"
    ok = run_site(qtbot, window, start)
    assert not ok
    assert "cancelled" in window.statusBar().currentMessage()
    assert not boxes(window, "SiteErrorBox")  # a cancel is not an error
    assert snapshot(out) == before and leftovers(out) == []
    assert actions.act_build.isEnabled() and not actions.panel.isVisible()


def test_closing_the_window_cancels_a_running_build(qtbot, make_window, tmp_path):
    window, service = make_window(tmp_path / "site")
    add_posts(service, 400)
    actions = window.site_actions
    actions.build()
    window.shutdown()  # waits for the worker, which stops at the next file
    out = tmp_path / "site" / "build"
    assert not out.exists() and leftovers(out) == []  # cancelled: the first build never arrived


def test_a_broken_theme_is_reported_once_with_template_line_and_entry(qtbot, make_window, tmp_path):
    root = tmp_path / "site"
    window, service = make_window(root)
    add_posts(service, 3)
    assert run_site(qtbot, window, window.site_actions.build)
    before = snapshot(root / "build")
    theme = root / "themes" / "broken"
    theme.mkdir(parents=True)
    (theme / "post.html").write_text('{% extends "base.html" %}\n{% block main %}\n{{ entry.nope.deeper }}\n'
                                     '{% endblock %}\n')
    service.save_site_settings({"theme": "broken"})
    assert not run_site(qtbot, window, window.site_actions.act_build.trigger)
    [box] = boxes(window, "SiteErrorBox")
    assert box.windowTitle() == "The build stopped"
    assert "post.html" in box.text() and "line 3" in box.text() and "post-" in box.text()
    assert "unchanged" in box.informativeText()
    assert snapshot(root / "build") == before and leftovers(root / "build") == []
    box.close()


FAILING = """
hooks.on("before_render", "content", function(entry)
  if entry.slug == "post-1" then error("cannot render this one") end
  return {html = entry.html}
end)
"""


def test_a_failing_plugin_is_reported_once_naming_plugin_and_entry(qtbot, make_window, tmp_path):
    root = tmp_path / "site"
    window, service = make_window(root, plugins={"fragile": FAILING})
    add_posts(service, 3)
    assert not run_site(qtbot, window, window.site_actions.build)
    [box] = boxes(window, "SiteErrorBox")
    assert "fragile" in box.text() and "post-1" in box.text()
    assert not (root / "build").exists()
    box.close()


def test_an_allowed_plugin_failure_builds_and_warns_once(qtbot, make_window, tmp_path):
    root = tmp_path / "site"
    window, service = make_window(root, plugins={"fragile": FAILING}, build={"continue_on_plugin_error": True})
    add_posts(service, 3)
    assert run_site(qtbot, window, window.site_actions.build)
    [box] = boxes(window, "SiteWarningBox")
    assert "fragile" in box.text() and "post-1" in box.text() and not boxes(window, "SiteErrorBox")
    assert (root / "build" / "post-1" / "index.html").is_file()
    box.close()


# ---- the GUI thread stays free -----------------------------------------------------------------
def test_the_window_keeps_responding_during_a_500_entry_build(qtbot, make_window, tmp_path):
    window, service = make_window(tmp_path / "site")
    add_posts(service, 500)
    # what the window does 2 s after it opens: the build's first-use imports, off the GUI thread
    window.site_actions.warm_up()
    qtbot.waitUntil(lambda: window.site_actions.warmed, timeout=30000)
    ticks = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    qtbot.wait(600)  # the same loop without a build: what the machine's load alone costs
    idle = max(b - a for a, b in zip(ticks, ticks[1:]))
    pauses = []  # the garbage collector's, for the report

    def collecting(phase, info, began=[0.0]):
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - began[0])
    gc.callbacks.append(collecting)
    started = time.perf_counter()
    ok = run_site(qtbot, window, window.site_actions.build)
    ended = time.perf_counter()
    timer.stop()
    gc.callbacks.remove(collecting)
    assert ok and window.site_actions.last_result.outputs > 500
    during = [t for t in ticks if started <= t <= ended]
    gaps = [b - a for a, b in zip([started] + during, during + [ended])]
    worst = max(gaps)
    print(f"\n500-entry build in the window: {ended - started:.2f} s, {len(during)} ticks of 10 ms, longest gap "
          f"{worst * 1000:.0f} ms, {sum(g > 0.05 for g in gaps)} over 50 ms (without a build: longest "
          f"{idle * 1000:.0f} ms); {len(pauses)} collections, longest {max(pauses, default=0) * 1000:.0f} ms")
    # a bound, not a speed test: a frozen window shows one gap as long as the build (seconds). The goal
    # is 50 ms; the bound leaves room for the other processes of this shared 2-core machine, which
    # stall the same loop without any build (measured just before) by up to a few hundred ms
    bound = max(0.25, 2 * idle)
    assert worst <= bound < ended - started, \
        f"the GUI thread was blocked for {worst * 1000:.0f} ms (bound {bound * 1000:.0f} ms)"


# ---- open site ---------------------------------------------------------------------------------
class _Opened(QObject):
    def __init__(self):
        super().__init__()
        self.urls = []

    @Slot(QUrl)
    def open(self, url):
        self.urls.append(url.toString())


@pytest.fixture
def url_handler():
    handler = _Opened()
    QDesktopServices.setUrlHandler("http", handler, "open")
    yield handler
    QDesktopServices.unsetUrlHandler("http")


def test_open_site_builds_first_then_opens_the_servers_site_url(qtbot, make_window, tmp_path, url_handler):
    window, service = make_window(tmp_path / "site", server=True, site={"title": "Served Notes"})
    add_posts(service, 2)
    actions = window.site_actions
    assert actions.act_open_site.isEnabled() and actions.act_open_site in window.toolbar.actions()
    url = window.server.url.rstrip("/") + "/site/"
    assert actions.site_url() == url
    assert run_site(qtbot, window, actions.act_open_site.trigger)  # no build yet: it builds first
    qtbot.waitUntil(lambda: url_handler.urls == [url], timeout=5000)
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200 and "<title>Served Notes</title>" in resp.read().decode()
    actions.act_open_site.trigger()  # a build exists: it opens at once
    assert url_handler.urls == [url, url]


def test_open_site_during_the_first_build_opens_when_it_is_done(qtbot, make_window, tmp_path, url_handler):
    window, service = make_window(tmp_path / "site", server=True)
    add_posts(service, 300)
    actions = window.site_actions

    def start():
        actions.build()
        actions.open_site()  # no build yet and one running: wait for it
        assert url_handler.urls == [] and "when the build has finished" in window.statusBar().currentMessage()
    assert run_site(qtbot, window, start)
    assert url_handler.urls == [window.server.url.rstrip("/") + "/site/"]


def test_open_site_needs_the_server(qtbot, make_window, tmp_path):
    window, _service = make_window(tmp_path / "site")
    assert window.site_actions.site_url() is None and not window.site_actions.act_open_site.isEnabled()


# ---- publish -----------------------------------------------------------------------------------
def test_publish_to_a_folder_reports_what_was_sent(qtbot, make_window, tmp_path):
    www = tmp_path / "www"
    window, service = make_window(tmp_path / "site", publish={"www": {"type": "folder", "path": str(www)}})
    posts = add_posts(service, 5)
    actions = window.site_actions
    actions.publish_menu.aboutToShow.emit()
    [item] = actions.publish_menu.actions()
    assert item.text() == f"www — folder: {www}" and item.isEnabled()
    assert run_site(qtbot, window, item.trigger)
    [box] = boxes(window, "PublishReportBox")
    built, sent = actions.last_result
    assert box.text() == f"Sent {len(sent.sent)} files and deleted 0 at “www”." and len(sent.sent) > 5
    assert "+ index.html" in box.detailedText() and str(www) in box.informativeText()
    assert (www / "post-4" / "index.html").is_file() and (www / "feed.xml").is_file()
    box.close()

    service.content.update(posts[2]["id"], {"body": "A new first paragraph."}, run_hooks=False)
    service.content.delete(posts[0]["id"])
    assert run_site(qtbot, window, lambda: actions.publish("www"))
    [box] = boxes(window, "PublishReportBox")
    _built, sent = actions.last_result
    assert "post-2/index.html" in sent.sent and "post-0/index.html" in sent.deleted
    first = len(built.written)
    assert len(sent.sent) < first / 2 and "- post-0/index.html" in box.detailedText()
    assert not (www / "post-0").exists() and "A new first paragraph." in (www / "post-2/index.html").read_text()
    box.close()
    assert run_site(qtbot, window, lambda: actions.publish("www"))
    [box] = boxes(window, "PublishReportBox")
    assert box.text() == "Nothing changed since the last publish to “www”."
    box.close()


def test_publish_to_a_git_remote(qtbot, make_window, tmp_path):
    bare = tmp_path / "pages.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    window, service = make_window(tmp_path / "site",
                                  publish={"pages": {"type": "git", "remote": str(bare), "branch": "gh-pages"}})
    add_posts(service, 3)
    assert run_site(qtbot, window, lambda: window.site_actions.publish("pages"))
    [box] = boxes(window, "PublishReportBox")
    assert box.text().startswith("Sent ") and "gh-pages at" in box.informativeText()
    files = subprocess.run(["git", "--git-dir", str(bare), "ls-tree", "-r", "--name-only", "gh-pages"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert "index.html" in files and "post-2/index.html" in files and ".modula-build.json" not in files
    box.close()


def test_publish_failure_is_reported_once(qtbot, make_window, tmp_path):
    window, service = make_window(tmp_path / "site", publish={
        "pages": {"type": "git", "remote": str(tmp_path / "no-such-remote.git")}})
    add_posts(service, 1)
    assert not run_site(qtbot, window, lambda: window.site_actions.publish("pages"))
    [box] = boxes(window, "SiteErrorBox")
    assert box.windowTitle() == "Publishing stopped" and box.text().startswith("git ")
    assert not boxes(window, "PublishReportBox")
    box.close()


def test_no_targets_says_how_to_add_one(qtbot, make_window, tmp_path):
    window, _service = make_window(tmp_path / "site")
    menu = window.site_actions.publish_menu
    menu.aboutToShow.emit()
    [item] = menu.actions()
    assert not item.isEnabled() and "[publish.NAME]" in item.text()


# ---- media in the editor -----------------------------------------------------------------------
def _paste(body, mime):
    clipboard = QGuiApplication.clipboard()
    clipboard.setMimeData(mime)
    try:
        body.paste()
    finally:
        clipboard.clear()  # the clipboard owns the data: left there, it is freed after Qt at exit


def test_a_pasted_image_goes_to_media_once_and_markdown_in_at_the_cursor(qtbot, make_window, tmp_path):
    root = tmp_path / "site"
    window, _service = make_window(root)
    body = window.editor.body
    body.setPlainText("Before\n\nAfter")
    cursor = body.textCursor()
    cursor.setPosition(len("Before\n"))
    body.setTextCursor(cursor)
    data = png()

    def image_mime():
        mime = QMimeData()
        mime.setData("image/png", data)
        return mime
    _paste(body, image_mime())
    [name] = [p.name for p in (root / "media").iterdir()]
    assert (root / "media" / name).read_bytes() == data and name.endswith(".png")
    assert body.toPlainText() == f"Before\n![](/media/{name})\nAfter"
    assert body.textCursor().position() == len("Before\n![")  # inside the alt text: type it now
    assert window.editor.is_dirty()
    qtbot.keyClicks(body, "a red box")
    assert f"![a red box](/media/{name})" in body.toPlainText()
    preview = window.editor.preview
    preview.render_now(body.toPlainText())
    shown = preview.document().resource(QTextDocument.ResourceType.ImageResource, QUrl(f"/media/{name}"))
    assert isinstance(shown, QImage) and (shown.width(), shown.height()) == (40, 30)  # the preview shows it
    (root / "site-secret.png").write_bytes(data)
    for elsewhere in ("/site-secret.png", "/media/../site-secret.png", f"/media/{name}/../../site-secret.png",
                      "file:///etc/passwd"):
        assert preview.loadResource(QTextDocument.ResourceType.ImageResource, QUrl(elsewhere)) is None
    _paste(body, image_mime())  # the same image again: stored once
    assert [p.name for p in (root / "media").iterdir()] == [name]
    assert body.toPlainText().count(f"/media/{name}") == 2


def test_text_still_pastes_as_text(qtbot, make_window, tmp_path):
    window, _service = make_window(tmp_path / "site")
    mime = QMimeData()
    mime.setText("plain words")
    picture = QImage(4, 4, QImage.Format.Format_RGB32)
    picture.fill(0)
    mime.setImageData(picture)  # an office suite's picture of the text
    _paste(window.editor.body, mime)
    assert window.editor.body.toPlainText() == "plain words"
    assert not (tmp_path / "site" / "media").exists()


def _drop(body, paths, at_position: int):
    rect = body.cursorRect(_cursor_at(body, at_position))
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    point = QPointF(rect.center())
    for kind in ("enter", "move", "drop"):
        from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent
        cls = {"enter": QDragEnterEvent, "move": QDragMoveEvent}.get(kind)
        if cls is not None:
            event = cls(point.toPoint(), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                        Qt.KeyboardModifier.NoModifier)
        else:
            event = QDropEvent(point, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                               Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(body.viewport(), event)
    return event


def _cursor_at(body, position):
    c = body.textCursor()
    c.setPosition(position)
    return c


def test_dropped_image_files_are_added_and_other_files_refused(qtbot, make_window, tmp_path):
    root = tmp_path / "site"
    window, _service = make_window(root)
    body = window.editor.body
    body.setPlainText("First line\nSecond line")
    photo = tmp_path / "garden photo.jpg"
    Image.new("RGB", (64, 48), (20, 160, 40)).save(photo, format="JPEG")
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4 not an image")
    event = _drop(body, [photo], len("First line\n"))
    assert event.isAccepted()
    [name] = [p.name for p in (root / "media").iterdir()]
    assert name.endswith(".jpg")
    assert body.toPlainText() == f"First line\n![garden photo](/media/{name})Second line"
    assert not window.editor.message_bar.isVisible()

    before = body.toPlainText()
    _drop(body, [report], 0)
    assert body.toPlainText() == before and [p.name for p in (root / "media").iterdir()] == [name]
    bar = window.editor.message_bar
    assert bar.isVisible() and bar.kind == "error"
    assert "report.pdf: The file is not an image Modula can use (PNG, JPEG, GIF or WebP)." in bar.text()

    # both at once: the image goes in, the other file is named
    other = tmp_path / "other.png"
    other.write_bytes(png((0, 0, 255)))
    _drop(body, [report, other], 0)
    assert len(list((root / "media").iterdir())) == 2 and "![other](/media/" in body.toPlainText()
    assert "report.pdf" in bar.text()


def test_unused_media_dialog_lists_and_deletes(qtbot, make_window, tmp_path):
    root = tmp_path / "site"
    window, service = make_window(root)
    used = add_media(root, png((1, 2, 3)), "kept")
    unused_a = add_media(root, png((4, 5, 6)))
    unused_b = add_media(root, png((7, 8, 9)))
    service.content.create({"type": "page", "title": "Uses one", "body": f"Look: {used}"}, run_hooks=False)
    name = lambda md: md.split("/media/")[1].rstrip(")")  # noqa: E731
    assert window.site_actions.act_unused_media in window.site_menu.actions()
    window.site_actions.act_unused_media.trigger()
    dialog = window.site_actions._media_dialog
    qtbot.waitUntil(lambda: not dialog.busy and dialog.list.count() == 2, timeout=10000)
    assert sorted(dialog.names()) == sorted([name(unused_a), name(unused_b)])
    assert not dialog.list.item(0).icon().isNull()  # a thumbnail
    assert "2 unused images" in dialog.status.text()
    dialog.confirm = lambda text: "Delete 1 unused image" in text
    dialog.list.item(dialog.names().index(name(unused_a))).setSelected(True)
    qtbot.mouseClick(dialog.remove_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dialog.busy and dialog.names() == [name(unused_b)], timeout=10000)
    assert dialog.status.text() == "Deleted 1 image."
    assert sorted(p.name for p in (root / "media").iterdir()) == sorted([name(used), name(unused_b)])
    dialog.confirm = lambda text: False  # "no" deletes nothing
    qtbot.mouseClick(dialog.remove_all_button, Qt.MouseButton.LeftButton)
    assert dialog.names() == [name(unused_b)] and (root / "media" / name(unused_b)).exists()
    dialog.close()
