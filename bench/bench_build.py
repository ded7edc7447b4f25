"""How long does the static build take?

    python bench/bench_build.py [--entries 10000] [--rounds 3] [--plugin]

Makes a temporary site with that many published entries (nine posts to one page, each post with two tags
and a few paragraphs of Markdown; the rows are inserted directly, the setup is not timed), then times:

- a full build (clean, into an empty folder);
- an incremental rebuild after one post's body changed through the content service (the entry's page,
  its index page, its tag pages and the feeds are written again; nothing else), in the same process as
  the builds before it, as the window builds (core/build/state.py: the last build's state is reused);
- the same rebuild in a cold process, as `modula build` on the command line (the state forgotten: the
  manifest is read from disk, every entry's row compared, every output planned and its file checked).

With --plugin, a before_render plugin (bench_render: appends a footer to every body) is approved, so
every page also pays for a plugin call. Goals on this machine: 10 s full, 0.2 s incremental.
Prints, never asserts.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modula_desktop.core.build import build_site  # noqa: E402
from modula_desktop.core.build import state as warm  # noqa: E402
from modula_desktop.core.service import SiteService  # noqa: E402
from modula_desktop.core.settings import Settings  # noqa: E402
from modula_desktop.core.site import Site  # noqa: E402

BODY = """Entry {i} opens with a paragraph of ordinary prose, *some emphasis*, and a [link](/entry-{j}/).

## A section

A second paragraph with `inline code`, a list and a quote:

- one point
- another point

> Quoted words of entry {i}.

The closing paragraph of entry {i}.
"""

PLUGIN = """plugin_info = {name = "bench_render", version = "1.0.0", description = "bench", author = "b",
  license = "MIT", permissions = {"hooks", "hooks:before"}}
hooks.on("before_render", "content", function(entry)
  return {html = entry.html .. "<p>rendered by a plugin</p>"}
end)
"""


def make_site(root: Path, n: int, plugin: bool) -> SiteService:
    if plugin:
        (root / "plugins" / "bench_render").mkdir(parents=True)
        (root / "plugins" / "bench_render" / "init.lua").write_text(PLUGIN)
    service = SiteService(Site(root), Settings().replace(plugins={"hot_reload": False}))
    rows = []
    for i in range(n):
        stamp = f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00.{i % 1000:03d}Z"
        kind = "page" if i % 10 == 9 else "post"
        fields = {"tags": [f"topic {i % 40}", f"series {i % 7}"]} if kind == "post" else {}
        rows.append({"id": f"{i:026d}", "type": kind, "title": f"Entry {i}", "slug": f"entry-{i}",
                     "body": BODY.format(i=i, j=(i + 1) % n), "status": "published",
                     "fields": json.dumps(fields), "published_at": stamp, "created_at": stamp,
                     "updated_at": stamp})
    with service.db.atomic():
        for start in range(0, n, 500):
            service.db.execute_sql(
                "INSERT INTO content (id, type, title, slug, body, status, fields, published_at, created_at, "
                "updated_at) VALUES " + ",".join(["(?,?,?,?,?,?,?,?,?,?)"] * len(rows[start:start + 500])),
                [v for r in rows[start:start + 500] for v in r.values()])
    return service


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--plugin", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-build-"))
    try:
        service = make_site(tmp / "site", args.entries, args.plugin)
        if args.plugin:
            service.start(hot_reload=False)
            service.approvals.approve_hook("bench_render", "before_render", "content")
        fulls, incs, cpus, colds, steps, result = [], [], [], [], {}, None
        edit = 0

        def rebuild(out):
            nonlocal edit
            edit += 1
            service.content.update(f"{edit * 10:026d}", {"body": f"Changed {edit}.\n\nMore."}, run_hooks=False)
            t, c = time.perf_counter(), time.process_time()
            inc = build_site(service, out)
            return inc, time.perf_counter() - t, time.process_time() - c

        for r in range(args.rounds):
            out = tmp / f"out-{r}"
            t = time.perf_counter()
            result = build_site(service, out, clean=True)
            fulls.append(time.perf_counter() - t)
            for k in range(5):
                inc, seconds, cpu = rebuild(out)
                incs.append(seconds)
                cpus.append(cpu)
                for step, took in inc.timings.items():
                    steps.setdefault(step, []).append(took)
            warm.forget(out)
            cold, seconds, _ = rebuild(out)
            colds.append(seconds)
        full, one = statistics.median(fulls), statistics.median(incs)
        print(f"entries: {args.entries} ({'with' if args.plugin else 'without'} a before_render plugin)")
        print(f"full build:        {full:7.3f} s  ({result.outputs} files, "
              f"{full / result.outputs * 1000:.3f} ms per file)   goal 10 s")
        print(f"one-entry rebuild: {one:7.3f} s  ({len(inc.written)} files written: "
              f"{', '.join(inc.written[:8])}{' ...' if len(inc.written) > 8 else ''}; "
              f"{inc.planned} of {inc.outputs} outputs planned)   goal 0.2 s")
        print(f"  its CPU time {statistics.median(cpus) * 1000:.0f} ms; by step (median ms): "
              + ", ".join(f"{k} {statistics.median(v) * 1000:.1f}" for k, v in steps.items()))
        print(f"  the same rebuild in a cold process (modula build): {statistics.median(colds):.3f} s")
        from _report import result
        result(f"full build of {args.entries:,} entries", full, "s", goal="<= 10 s")
        result("one-entry incremental rebuild", one, "s", goal="<= 0.2 s")
        print(f"  runs: full {', '.join(f'{x:.2f}' for x in fulls)}; incremental "
              f"{', '.join(f'{x:.3f}' for x in incs)}; cold {', '.join(f'{x:.3f}' for x in colds)}")
        service.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
