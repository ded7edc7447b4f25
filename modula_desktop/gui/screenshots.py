"""Screenshots for docs/screenshots/: ``python -m modula_desktop.gui.screenshots OUT_DIR``.

Builds a temporary site with the four example plugins and sample content, serves real traffic through
the local server, and grabs offscreen: the main window (light and dark), the editor with a table in
the preview, the plugin manager (with plugins and on a site without any), the metrics view with
traffic, a revision's diff, the site settings dialog (with a field's inline problem) and the status
bar's build progress (light and dark). Nothing of the user's (site, settings) is read or written.
"""
from __future__ import annotations

import math
import os
import random
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

SHOTS = ("main-light.png", "main-dark.png", "editor-table.png", "plugins.png", "plugins-empty.png",
         "metrics.png", "revisions-diff.png", "site-settings-light.png", "site-settings-dark.png",
         "build-progress-light.png", "build-progress-dark.png", "editor-post.png", "screen-tasks-light.png",
         "screen-tasks-dark.png", "field-interface-light.png", "field-interface-dark.png")
TASKS = [("Write the spring menu", 2), ("Order oat milk", 1), ("Fix the terrace lights", 3), ("Update opening hours", 0)]

TABLE_BODY = """# Opening hours

We are open every day but one. **Bookings** are welcome; walk-ins too.

| Day       | Opens | Closes | Notes            |
|-----------|-------|--------|------------------|
| Monday    | —     | —      | closed           |
| Tuesday   | 09:00 | 18:00  |                  |
| Saturday  | 08:00 | 20:00  | ~~brunch~~ market |

> Holidays may change these hours: see the [news](https://example.org/news).

- [x] new coffee machine
- [ ] terrace
"""

SAMPLES = [
    ("post", "Spring menu is here", "published", "Asparagus, wild garlic and the first strawberries.\n\n"
     "## Starters\n\n- asparagus soup\n- radish salad\n"),
    ("post", "Behind the counter: meet Ana", "published", "Ana has baked our bread since 2019.\n"),
    ("post", "Terrace opening (draft)", "draft", "When the weather allows. *Maybe* May.\n"),
    ("page", "About us", "published", "A small café by the river.\n\nFounded in **2012**.\n"),
    ("page", "Contact", "published", "Call us or write to hello@example.org.\n"),
    ("post", "Notes for the team", "draft", "Order more oat milk.\n"),
]


def _settle(app, ms: int = 150):
    end = time.monotonic() + ms / 1000.0
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def _wait(app, predicate, timeout_s: float = 20.0):
    end = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def _approve_everything(service):
    for name in service.plugins.names():
        info = service.plugins.info(name)
        for r in info["routes"]:
            service.approvals.approve_route(name, r["method"], r["path"])
        for h in info["hooks"]:
            service.approvals.approve_hook(name, h["event"], h["table"])
        for kind, key in (("screen", "screens"), ("interface", "interfaces")):
            for d in info.get(key, []):
                service.approvals.set_ui(name, kind, d["name"], True)


def _seed_tasks(base: str, token: str):
    """A few tasks for the Tasks screen, through task_tracker's own API."""
    import json

    def call(method, path, body=None):
        req = urllib.request.Request(base + "/api/v1/plugins/task_tracker" + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=10).read() or b"null")

    cats = {c["name"]: c["id"] for c in call("GET", "/categories")["categories"]}
    for i, (title, priority) in enumerate(TASKS):
        call("POST", "/tasks", {"title": title, "priority": priority, "category_id": cats["Feature" if i % 2 else "Bug"],
                                "status": "done" if i == 1 else "todo"})


def _traffic(base: str, token: str, rounds: int):
    """One burst of plugin requests (a few 404s and 401s among them)."""
    paths = ["/api/v1/plugins/hello_world/hello?name=Ada", "/api/v1/plugins/task_tracker/tasks",
             "/api/v1/plugins/http_test_plugin/hello", "/api/v1/plugins/hello_world/hello/Grace",
             "/api/v1/plugins/task_tracker/categories"]
    for _ in range(rounds):
        path = random.choice(paths)
        auth = random.random() > 0.05
        if random.random() < 0.06:
            path = "/api/v1/plugins/task_tracker/tasks/999999"
        req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"} if auth else {})
        try:
            urllib.request.urlopen(req, timeout=10).read()
        except urllib.error.HTTPError:
            pass


def _grab(widget, path: Path):
    widget.grab().save(str(path))
    print(f"wrote {path}")


def make_screenshots(out_dir: Path, seconds_of_traffic: int = 120) -> list[Path]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from ..core.service import SiteService
    from ..core.settings import Settings
    from ..core.site import Site
    from ..server.runner import start_background
    from .app import _application

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="modula-shots-"))
    # the theme choice goes to a throwaway settings file, never the user's
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp / "qsettings"))
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    app = _application()
    app.setFont(app.font())
    random.seed(14)

    from .main_window import MainWindow

    # the traffic is compressed in time (a chart second is a few real milliseconds): no rate limit
    settings = Settings().replace(plugins={"hot_reload": False, "rate_limit": 0.0}, server={"port": 0},
                                  fields={"colour": {"plugin": "task_tracker", "interface": "color_picker",
                                                     "label": "Colour"}})
    site = Site(tmp / "cafe-site")
    site.ensure()
    site.seed_bundled_plugins()
    service = SiteService(site, settings).start(hot_reload=False)
    _approve_everything(service)
    content = service.content
    for kind, title, status, body in SAMPLES:
        content.create({"type": kind, "title": title, "body": body, "status": status}, source="editor")
    table = content.create({"type": "page", "title": "Opening hours", "body": TABLE_BODY,
                            "fields": {"colour": "#43a047"}}, source="editor")
    menu = content.create({"type": "post", "title": "Lunch menu",
                           "body": "Soup of the day\nBread and butter\nApple cake\n",
                           "fields": {"tags": ["menu", "lunch"], "excerpt": "What we cook at noon this week."}},
                          source="api")
    content.update(menu["id"], {"body": "Soup of the day\nSourdough and butter\nApple cake\nCoffee\n"},
                   source="editor")
    content.update(menu["id"], {"body": "Soup of the day\nSourdough and butter\nPlum cake\nCoffee\n\n"
                                        "Served 12:00–14:30."}, source="editor")
    content.wait_for_hooks(10)
    server = start_background(service, port=0)
    made = []
    try:
        window = MainWindow(service, server)
        window.resize(1280, 780)
        window.show()
        _settle(app, 400)

        window.set_theme("light")
        window.open_entry(table["id"])
        _settle(app, 400)
        made.append(out_dir / "main-light.png")
        _grab(window, made[-1])
        window.set_theme("dark")
        _settle(app, 400)
        made.append(out_dir / "main-dark.png")
        _grab(window, made[-1])
        window.set_theme("light")
        _settle(app, 300)

        service.save_site_settings({"title": "Riverside Café", "description": "Coffee, cake and the river",
                                    "author": "Ana Costa", "permalink": "/<year>/<slug>/"})
        for scheme in ("light", "dark"):
            window.set_theme(scheme)
            dialog = window.site_actions.show_settings()
            dialog.base_url.setText("riverside.example")  # the inline problem under its field
            dialog.resize(660, 420)
            _settle(app, 300)
            made.append(out_dir / f"site-settings-{scheme}.png")
            _grab(dialog, made[-1])
            dialog.reject()
            # the status bar as a build shows it (the numbers a 412-file build shows a third of the way)
            actions = window.site_actions
            actions.running = "build"
            actions.update()
            actions.panel.show_phase("build", 137, 412, "post-137/index.html")
            _settle(app, 300)
            made.append(out_dir / f"build-progress-{scheme}.png")
            _grab(window, made[-1])
            actions.running = None
            actions.panel.hide()
            actions.update()
        # the task_tracker's Tasks screen, and its colour picker for the entry's Colour field
        base, token = server.url.rstrip("/"), site.token()
        _seed_tasks(base, token)
        for theme in ("light", "dark"):
            window.set_theme(theme)
            page = window.pages.open_screen("task_tracker", "tasks")
            _wait(app, lambda: page.stack.currentWidget() is page.view and page.view.cells)
            page.reload()  # the tasks seeded above, drawn in this theme
            _wait(app, lambda: page.stack.currentWidget() is page.view and page.view.cells
                  and page.view.cells[0].model().rowCount() == len(TASKS))
            page.send_key("j")
            _settle(app, 400)
            made.append(out_dir / f"screen-tasks-{theme}.png")
            _grab(window, made[-1])
            window.pages.show_content()
            window.open_entry(table["id"])
            _settle(app, 200)
            dialog = window.fields.edit("colour")
            _wait(app, lambda: dialog.body.view.cells)
            dialog.body.send_key("down")
            _settle(app, 400)
            made.append(out_dir / f"field-interface-{theme}.png")
            _grab(dialog, made[-1])
            dialog.reject()
            _settle(app, 100)
        window.set_theme("light")
        _settle(app, 300)

        window.editor.split.setSizes([480, 440])
        _settle(app, 300)
        made.append(out_dir / "editor-table.png")
        _grab(window.editor, made[-1])

        window.open_entry(menu["id"])
        _settle(app, 300)
        made.append(out_dir / "editor-post.png")  # a post: its tags and excerpt
        _grab(window.editor, made[-1])
        window.editor.tabs.setCurrentWidget(window.editor.revisions)
        window.editor.revisions.list.setCurrentRow(window.editor.revisions.list.count() - 1)
        _settle(app, 300)
        made.append(out_dir / "revisions-diff.png")
        _grab(window.editor, made[-1])

        dialog = window.show_plugins()
        dialog.resize(1100, 720)
        names = service.plugins.names()
        if "task_tracker" in names:
            dialog.select("task_tracker")
        _settle(app, 500)
        made.append(out_dir / "plugins.png")
        _grab(dialog, made[-1])
        dialog.hide()

        # traffic: real requests between samples; the samples are a second apart on the chart's clock
        recorder = window.recorder
        recorder.stop()
        recorder.history.points.clear()  # the real-time samples taken so far would be out of order
        start = time.time() - seconds_of_traffic
        recorder.history.tick(now=start)
        for i in range(1, seconds_of_traffic + 1):
            wave = 6 + int(5 * (1 + math.sin(i / 7.0)))
            _traffic(base, token, wave)
            if i % 9 == 0:
                e = content.create({"type": "post", "title": f"Note {i}", "body": "x"}, source="api")
                content.publish(e["id"])
            recorder.history.tick(now=start + i)
        content.wait_for_hooks(10)
        metrics = window.show_metrics()
        metrics.resize(1100, 900)
        metrics.refresh()
        _settle(app, 600)
        made.append(out_dir / "metrics.png")
        _grab(metrics, made[-1])
        metrics.hide()

        # a site with no plugins: the plugin manager's empty state
        empty_site = Site(tmp / "empty-site")
        empty = SiteService(empty_site, settings).start(hot_reload=False)
        try:
            other = MainWindow(empty)
            other.show()
            d2 = other.show_plugins()
            d2.resize(900, 560)
            _settle(app, 400)
            made.append(out_dir / "plugins-empty.png")
            _grab(d2, made[-1])
            other.shutdown()
            other.close()
        finally:
            empty.close()
        window.shutdown()
        window.close()
        _settle(app, 100)
    finally:
        server.stop()
        service.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return made


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m modula_desktop.gui.screenshots",
                                 description="Make the docs/screenshots/ images offscreen on a sample site.")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--traffic-seconds", type=int, default=120, help="seconds of traffic on the metrics charts")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    made = make_screenshots(args.out_dir, seconds_of_traffic=max(2, args.traffic_seconds))
    missing = [p.name for p in made if not p.is_file() or p.stat().st_size == 0]
    if missing:
        print(f"could not write {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
