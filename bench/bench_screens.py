"""How fast plugin screens answer (SPEC 3.12), and how long the window's thread is held. Not part of the
unit suite; prints, never asserts.

1. Round trip: a key sent to a screen session until its next layout arrives (resume under the budgets,
   the yield copied out of the VM and parsed), for a small screen and for one yielding a 10,000-row table.
   Median and 95th percentile over --keys keys, one at a time.
2. The window: the same two screens in a ScreenPage offscreen, --keys keys pressed as fast as the
   page answers; a 10 ms QTimer measures the longest the GUI thread went without returning to its event
   loop (wall clock) and its own CPU time in that gap. Goal: under 50 ms.

    PYTHONPATH=. python bench/bench_screens.py [--keys 200]
"""
from __future__ import annotations

import argparse
import os
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from bench._report import result  # noqa: E402

GOAL_MS = 50
SMALL = '''function screen(ctx)
  local cursor = 0
  local items = {}
  for i = 1, 50 do items[i] = {label = "item " .. i, id = tostring(i)} end
  while true do
    local ev = coroutine.yield(tui.grid({tui.column(4, {tui.cell("List", 1, tui.list(items, cursor))}),
      tui.column(8, {tui.cell("Detail", 1, tui.detail({{label = "Name", value = items[cursor + 1].label}}))})}))
    if ev.type == "key" and ev.key == "down" then cursor = (cursor + 1) % #items end
  end
end
'''
BIG = '''function screen(ctx)
  local rows = {}
  for i = 1, 10000 do rows[i] = {tostring(i), "row " .. i, "some text in the third column"} end
  local cursor = 0
  while true do
    local ev = coroutine.yield(tui.grid({tui.column(12, {tui.cell("Rows", 1, tui.table({"#", "name", "text"}, rows, cursor))})}))
    if ev.type == "key" and ev.key == "down" then cursor = cursor + 1 end
  end
end
'''
LIST = '''function screen(ctx)
  local items = {}
  for i = 1, 10000 do items[i] = {label = "item " .. i .. " with some words", id = tostring(i)} end
  local cursor = 0
  while true do
    local ev = coroutine.yield(tui.grid({tui.column(12, {tui.cell("Items", 1, tui.list(items, cursor))})}))
    if ev.type == "key" and ev.key == "down" then cursor = cursor + 1 end
  end
end
'''


def make_site(root: Path):
    from helpers import write_plugin

    d = write_plugin(root, "bench", "", info_extra='permissions = {}, screens = {{name = "small"}, {name = "big"}, {name = "list"}}')
    (d / "screens").mkdir()
    (d / "screens" / "small.lua").write_text(SMALL, encoding="utf-8")
    (d / "screens" / "big.lua").write_text(BIG, encoding="utf-8")
    (d / "screens" / "list.lua").write_text(LIST, encoding="utf-8")


def round_trips(service, name: str, keys: int) -> list[float]:
    from modula_desktop.core.plugins.api import tui as protocol
    from modula_desktop.core.plugins.runtime.screens import Render

    outs: queue.Queue = queue.Queue()
    s = service.screens.open("bench", "screen", name, protocol.init_event(120, 40), outs.put)
    assert isinstance(outs.get(timeout=30), Render)
    times = []
    for _ in range(keys):
        t = time.perf_counter()
        s.send(protocol.key_event("down"))
        out = outs.get(timeout=30)
        times.append((time.perf_counter() - t) * 1000)
        assert isinstance(out, Render), out
    s.close()
    s.join(10)
    return times


def window(service, name: str, keys: int) -> tuple[float, float, int]:
    """(longest gap in ms, the GUI thread's CPU in its longest stretch, keys answered). The keys are
    pressed one at a time, each as soon as the layout for the one before is shown, from the running
    event loop (as a user's keys arrive: the loop sleeps in between, not a busy wait that would itself
    hold the interpreter lock)."""
    from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from modula_desktop.core.plugins.runtime.screens import Render
    from modula_desktop.gui.app import settle_heap
    from modula_desktop.gui.plugin_screens import ScreenPage
    from modula_desktop.gui.tui_widgets import warm_up

    app = QApplication.instance() or QApplication([])
    warm_up()
    settle_heap()  # as run_gui does once the window is up
    entry = service.screens.entry("bench", "screen", name)
    page = ScreenPage(service.screens, entry, service.approvals)
    page.resize(1100, 700)
    page.show()
    worst = [0, 0.0]
    clock, cpu = QElapsedTimer(), [time.thread_time()]
    clock.start()

    def tick():
        now = time.thread_time()
        worst[0] = max(worst[0], clock.restart())
        worst[1] = max(worst[1], (now - cpu[0]) * 1000)
        cpu[0] = now
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    renders = [0]
    page.relay.output.connect(lambda _session, out: renders.__setitem__(0, renders[0] + isinstance(out, Render)))
    page.start()
    loop = QEventLoop()
    state = {"sent": 0, "shown": None}

    def step():
        if page.stack.currentWidget() is not page.view or page.session is None:
            return  # not up yet (or failed: the deadline ends the loop)
        if state["shown"] is None:  # the first layout is up: the meter starts
            state["shown"] = renders[0]
            clock.restart()
            cpu[0] = time.thread_time()
            timer.start()
        if renders[0] - state["shown"] >= state["sent"]:  # the layout for the last key is in
            if state["sent"] == keys:
                loop.quit()
                return
            state["sent"] += 1
            page.send_key("down")
    poll = QTimer()
    poll.setInterval(1)
    poll.timeout.connect(step)
    poll.start()
    QTimer.singleShot(60_000, loop.quit)
    loop.exec()
    poll.stop()
    timer.stop()
    answered = renders[0] - (state["shown"] or 0)
    page.close_session()
    page.deleteLater()
    app.processEvents()
    return worst[0], worst[1], answered


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=200)
    args = ap.parse_args(argv)
    from modula_desktop.core.service import SiteService
    from modula_desktop.core.settings import Settings
    from modula_desktop.core.site import Site

    root = Path(tempfile.mkdtemp(prefix="modula-bench-screens-"))
    make_site(root)
    svc = SiteService(Site(root), Settings().replace(plugins={"hot_reload": False})).start(hot_reload=False)
    try:
        for name in ("small", "big", "list"):
            svc.approvals.set_ui("bench", "screen", name, True)
        for name, label in (("small", "a 50-item list"), ("big", "a 10,000-row table"), ("list", "a 10,000-item list")):
            t = round_trips(svc, name, args.keys)
            med, p95 = statistics.median(t), sorted(t)[int(len(t) * 0.95) - 1]
            print(f"round trip, {label}: median {med:.2f} ms, p95 {p95:.2f} ms over {len(t)} keys")
            result(f"screen round trip ({label}), median", med, "ms", goal="")
            result(f"screen round trip ({label}), p95", p95, "ms", goal="")
        for name, label in (("small", "a 50-item list"), ("big", "a 10,000-row table"), ("list", "a 10,000-item list")):
            keys = max(20, args.keys // 4)
            wall, cpu, answered = window(svc, name, keys)
            print(f"window, {label}: longest GUI-thread gap {wall} ms (its own CPU {cpu:.1f} ms), "
                  f"{answered} layouts shown for {keys} keys")
            result(f"GUI thread's longest gap ({label})", wall, "ms", goal=f"< {GOAL_MS} ms")
            result(f"GUI thread's longest own work ({label})", cpu, "ms", goal=f"< {GOAL_MS} ms")
    finally:
        svc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
