"""How much do content hooks cost a save?

    python bench/bench_hooks.py [--rounds 15] [--saves 40]

Builds two temporary sites: one with no plugins, one with the bundled hooks_plugin where exactly one
before-hook (before_update: fills reading_time, a filter) and one after-hook (after_update: writes an
audit row through db.insert) are approved. Saves (updates) the same kind of entry in both, alternating
rounds, and prints medians and the ratio. Two figures:

- latency: one save as the author feels it (the after-hook runs off the caller's thread, so it is
  drained, untimed, before the next save);
- throughput: a burst of saves back to back, timed until every after-hook has finished as well.

Target: latency ratio <= 1.5x. Prints, never asserts.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modula_desktop.core.service import SiteService  # noqa: E402
from modula_desktop.core.settings import Settings  # noqa: E402
from modula_desktop.core.site import Site  # noqa: E402
from modula_desktop.core.storage import database_proxy  # noqa: E402

BODY = "A paragraph of words to count. " * 60


def make_site(root: Path, with_plugin: bool) -> SiteService:
    if with_plugin:
        shutil.copytree(ROOT / "plugins" / "hooks_plugin", root / "plugins" / "hooks_plugin")
    service = SiteService(Site(root), Settings().replace(plugins={"hot_reload": False})).start(hot_reload=False)
    if with_plugin:
        assert service.plugins.get("hooks_plugin").state == "running", service.plugins.get("hooks_plugin").error
        service.approvals.approve_hook("hooks_plugin", "before_update", "content")
        service.approvals.approve_hook("hooks_plugin", "after_update", "content")
        assert len(service.plugins.hook_chain("before_update")) == 1
        assert len(service.plugins.hook_chain("after_update")) == 1
    return service


class Bench:
    def __init__(self, service: SiteService):
        self.service = service
        self.activate()
        self.entry = service.content.create({"title": "Bench", "body": BODY, "type": "post"})
        self.n = 0

    def activate(self):
        # The storage models are bound to one process-wide proxy (one site per process in the app);
        # point it at this site before using its content service.
        database_proxy.initialize(self.service.db)

    def save(self):
        self.n += 1
        self.service.content.update(self.entry["id"], {"title": f"Bench {self.n}", "body": BODY})

    def timed_save(self) -> float:
        self.activate()
        started = time.perf_counter()
        self.save()
        seconds = time.perf_counter() - started
        self.service.content.wait_for_hooks(10)
        return seconds

    def burst(self, saves: int) -> float:
        self.activate()
        started = time.perf_counter()
        for _ in range(saves):
            self.save()
        self.service.content.wait_for_hooks(30)
        return (time.perf_counter() - started) / saves


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--saves", type=int, default=40, help="saves per round")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="modula-bench-") as tmp:
        plain = Bench(make_site(Path(tmp) / "plain", with_plugin=False))
        hooked = Bench(make_site(Path(tmp) / "hooked", with_plugin=True))
        try:
            for b in (plain, hooked):  # warm up: VMs, connections, caches
                b.burst(20)
            lat = {"plain": [], "hooked": []}
            thr = {"plain": [], "hooked": []}
            for i in range(args.rounds):
                order = (("plain", plain), ("hooked", hooked)) if i % 2 == 0 else (("hooked", hooked), ("plain", plain))
                # latency alternates save by save, so background load hits both sides alike
                for _ in range(args.saves):
                    for name, b in order:
                        lat[name].append(b.timed_save())
                for name, b in order:
                    thr[name].append(b.burst(args.saves))
            hooked.activate()
            audit = hooked.service.db.execute_sql("SELECT COUNT(*) FROM plugin_hooks_plugin__audit").fetchone()[0]
            fields = hooked.service.content.get(hooked.entry["id"])["fields"]
        finally:
            for b in (plain, hooked):
                b.activate()
                b.service.close()
    ms = lambda v: f"{v * 1000:.3f} ms"  # noqa: E731
    lp, lh = statistics.median(lat["plain"]), statistics.median(lat["hooked"])
    tp, th = statistics.median(thr["plain"]), statistics.median(thr["hooked"])
    print(f"save latency  (median of {len(lat['plain'])}): no plugins {ms(lp)}, "
          f"1 before + 1 after hook {ms(lh)}  ->  ratio {lh / lp:.2f}x  (target <= 1.5x)")
    print(f"save burst incl. after-hooks (median of {len(thr['plain'])} rounds, per save): no plugins {ms(tp)}, "
          f"hooked {ms(th)}  ->  ratio {th / tp:.2f}x")
    from _report import result
    result("save latency with 1 before + 1 after hook", lh * 1000, "ms", baseline=lp * 1000,
           baseline_label="no plugins", goal="ratio <= 1.5")
    result("save burst incl. after-hooks, per save", th * 1000, "ms", baseline=tp * 1000, baseline_label="no plugins")
    print(f"(sanity: {audit} audit rows written by the after-hook; reading_time={fields.get('reading_time')})")


if __name__ == "__main__":
    main()
