"""How fast the window is. Not part of the unit suite. Goals (issue 14): 1.5 s and 1 s.

1. Launch: from starting a new Python process to the main window shown (exposed and painted) on a site
   with the four example plugins loaded and the local server running — what ``modula run`` does,
   offscreen. Median over --runs fresh processes (imports included: they are part of a launch).
2. Scroll: the content list of a site with 50,000 entries, its scroll bar's thumb dragged from the top
   to the bottom as an author drags it: a sixtieth of the range per frame, each frame painted with the
   rows under it (the list reads them from the database as it draws them; if it fetched incrementally,
   the bench would fetch as the view does when the thumb reaches the end of what it has). The bench
   prints the per-frame cost, how many block reads the list made, and checks that the frames showed the
   rows' data (the titles under the thumb, the oldest entry in the last row). The 50,000 entries are
   written straight into the database in one transaction (creating them through the service, hooks and
   all, would take minutes and measures something else).

    PYTHONPATH=. python bench/bench_window.py [--runs 5] [--entries 50000] [--scroll-only] [--shot last.png]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

LAUNCH_GOAL_S = 1.5
SCROLL_GOAL_S = 1.0

CHILD = r"""
import time
t0 = time.perf_counter()
import os, sys
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from pathlib import Path
from PySide6.QtCore import QSettings
QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, sys.argv[2])
QSettings.setDefaultFormat(QSettings.Format.IniFormat)
from modula_desktop.gui.app import Session, _application
from modula_desktop.gui.main_window import MainWindow
app = _application()
t1 = time.perf_counter()
session = Session.open(Path(sys.argv[1]), hot_reload=False)
t2 = time.perf_counter()
window = MainWindow(session.service, session.server, session.server_error)
window.show()
app.processEvents()
window.repaint()  # the first paint done: what an author would see
t3 = time.perf_counter()
plugins = [session.service.plugins.summary(n)["state"] for n in session.service.plugins.names()]
print("shown", len(plugins), plugins.count("running"), f"{t1 - t0:.2f}", f"{t2 - t1:.2f}", f"{t3 - t2:.2f}",
      flush=True)
window.shutdown()
session.close()
"""


def make_plugin_site(root: Path) -> Path:
    from modula_desktop.core.service import SiteService
    from modula_desktop.core.site import Site

    site = Site(root)
    site.ensure()
    site.seed_bundled_plugins()
    with SiteService(site) as service:  # first open: migrations, token, welcome-free
        for i in range(20):
            service.content.create({"title": f"Entry {i}", "body": "Some *text*."}, run_hooks=False)
    return root


def bench_launch_to_print(runs: int) -> tuple[float, list[float], str]:
    """The clock runs from starting the process to the child saying the window is shown."""
    with tempfile.TemporaryDirectory(prefix="modula-bench-") as tmp:
        site = make_plugin_site(Path(tmp) / "site")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        times, phases, note = [], [], ""
        for _ in range(runs):
            start = time.perf_counter()
            child = subprocess.Popen([sys.executable, "-c", CHILD, str(site), str(Path(tmp) / "qsettings")],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
            line = child.stdout.readline()
            elapsed = time.perf_counter() - start
            child.wait(120)
            if not line.startswith("shown"):
                raise SystemExit("the window did not start")
            times.append(elapsed)
            _, total, running, imports, session, window = line.split()[:6]
            phases.append((float(imports), float(session), float(window)))
            note = f"{running} of {total} plugins running"
        mid = sorted(phases)[len(phases) // 2]
        note += (f"; in the process: imports and QApplication {mid[0]:.2f} s, site, plugins and server "
                 f"{mid[1]:.2f} s, window built and painted {mid[2]:.2f} s")
        return statistics.median(times), times, note


def fill(service, n: int):
    """n entries straight into the tables (with one revision each), newest first in the list."""
    from ulid import ULID

    from modula_desktop.core.storage import Content, Revision

    base = time.time() - n
    rows, revs = [], []
    for i in range(n):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + i)) + ".000Z"
        eid = str(ULID())
        kind = "post" if i % 3 else "page"
        status = "published" if i % 4 else "draft"
        rows.append({"id": eid, "type": kind, "title": f"Entry number {i}", "slug": f"entry-{i}",
                     "body": f"Body of entry {i}.", "status": status, "fields": "{}",
                     "published_at": stamp if status == "published" else None, "created_at": stamp,
                     "updated_at": stamp})
        revs.append({"id": str(ULID()), "content_id": eid, "number": 1, "type": kind, "title": f"Entry number {i}",
                     "slug": f"entry-{i}", "body": f"Body of entry {i}.", "status": status, "fields": "{}",
                     "created_at": stamp, "source": "app", "changed_by": "[]"})
    with service.db.atomic():
        for start in range(0, n, 500):
            Content.insert_many(rows[start:start + 500]).execute()
            Revision.insert_many(revs[start:start + 500]).execute()


def bench_scroll(entries: int, shot: str = "") -> tuple[float, int, int, dict]:
    from PySide6.QtCore import QModelIndex, QSettings
    from PySide6.QtWidgets import QAbstractItemView

    from modula_desktop.core.service import SiteService
    from modula_desktop.core.settings import Settings
    from modula_desktop.core.site import Site

    with tempfile.TemporaryDirectory(prefix="modula-bench-") as tmp:
        QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(Path(tmp) / "qsettings"))
        QSettings.setDefaultFormat(QSettings.Format.IniFormat)
        from modula_desktop.gui.app import _application
        from modula_desktop.gui.main_window import MainWindow

        app = _application()
        service = SiteService(Site(Path(tmp) / "site"), Settings().replace(plugins={"hot_reload": False}))
        service.start(hot_reload=False)
        try:
            fill(service, entries)
            total = service.content.count()
            window = MainWindow(service)
            window.resize(1280, 800)
            window.show()
            app.processEvents()
            # the list's own view (not a filter combo box's popup), whatever the list calls it
            view = next(v for v in (getattr(window.list, n, None) for n in ("view", "tree", "table"))
                        if isinstance(v, QAbstractItemView))
            model = view.model()
            bar = view.verticalScrollBar()
            bar.setValue(0)
            app.processEvents()
            # the author drags the scroll bar's thumb to the bottom: each frame shows the rows under it,
            # and the list fetches more whenever the thumb reaches the end of what it has (as the view
            # does), until the last entry is on screen; the thumb moves a sixtieth of the way per frame
            reads = getattr(model, "reads", None)
            frames, wrong, elapsed, cpu = [], [], 0.0, 0.0
            while True:
                start, start_cpu = time.perf_counter(), time.thread_time()
                if bar.value() >= bar.maximum():
                    if not model.canFetchMore(QModelIndex()):
                        break
                    model.fetchMore(QModelIndex())  # what the view does when it reaches the end
                    app.processEvents()
                    if bar.value() >= bar.maximum():
                        elapsed += time.perf_counter() - start
                        cpu += time.thread_time() - start_cpu
                        break
                bar.setValue(min(bar.maximum(), bar.value() + max(bar.pageStep(), bar.maximum() // 60)))
                view.viewport().repaint()
                app.processEvents()
                frames.append(time.perf_counter() - start)
                elapsed += frames[-1]
                cpu += time.thread_time() - start_cpu
                # off the clock: the rows just painted had their data (fill() titles entries by age,
                # the newest on top), read for that paint (asking for them now reads nothing more)
                top = view.rowAt(0)
                before = getattr(model, "reads", 0)
                if model.index(top, 0).data() != f"Entry number {entries - 1 - top}" \
                        or getattr(model, "reads", 0) != before:
                    wrong.append(top)
            if wrong:
                raise SystemExit(f"{len(wrong)} frames showed rows without their data (first at row {wrong[0]})")
            bottom = view.rowAt(view.viewport().height() - 2)
            last_title = model.index(bottom, 0).data()
            if bottom != model.rowCount(QModelIndex()) - 1 or last_title != "Entry number 0":
                raise SystemExit(f"the drag ended at row {bottom} showing {last_title!r}, not the oldest entry")
            if shot:
                view.viewport().grab().save(shot)
            stats = {"frames": len(frames), "mean_ms": 1000 * statistics.mean(frames), "cpu_s": cpu,
                     "max_ms": 1000 * max(frames), "reads": None if reads is None else model.reads - reads}
            reached = model.rowCount(QModelIndex())
            window.shutdown()
            window.close()
        finally:
            service.close()
        return elapsed, reached, total, stats


def verdict(measured: float, goal: float) -> str:
    return "meets the goal" if measured <= goal else "MISSES the goal"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--entries", type=int, default=50_000)
    ap.add_argument("--shot", default="", help="save the last frame of the drag as this PNG")
    ap.add_argument("--scroll-only", action="store_true", help="skip the launch figure")
    args = ap.parse_args()

    median = None
    if not args.scroll_only:
        median, times, note = bench_launch_to_print(args.runs)
        print(f"launch → window shown ({note}, local server on): median {median:.2f} s over {args.runs} runs "
              f"[{', '.join(f'{t:.2f}' for t in times)}]; goal {LAUNCH_GOAL_S} s: {verdict(median, LAUNCH_GOAL_S)}")
    elapsed, reached, total, stats = bench_scroll(args.entries, args.shot)
    if reached < total:
        judged = (f"not comparable: the list holds only {reached:,} rows, the rest is not reachable by "
                  "scrolling")
    else:
        judged = verdict(elapsed, SCROLL_GOAL_S)
    print(f"scroll the list top to bottom (a drag of the thumb): {elapsed:.2f} s, {reached:,} rows reached of "
          f"{total:,} entries; goal {SCROLL_GOAL_S} s: {judged}")
    print(f"  {stats['frames']} frames, each painted: {stats['mean_ms']:.1f} ms a frame on average, "
          f"{stats['max_ms']:.1f} ms at most" + (f"; {stats['reads']} block reads from the database"
                                                  if stats["reads"] is not None else "")
          + f"; the GUI thread's own CPU time {stats['cpu_s']:.2f} s (the wall time less waiting for a CPU)")
    from _report import result
    if median is not None:
        result("launch to window shown", median, "s", goal=f"<= {LAUNCH_GOAL_S} s")
    result(f"drag the list to the bottom of {total:,} entries", elapsed, "s", goal=f"<= {SCROLL_GOAL_S} s")
    result("a frame of that drag (mean)", stats["mean_ms"], "ms")
    if hasattr(os, "getloadavg"):
        print(f"(load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
              "other work on the machine slows both)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
