"""Content at 100,000 entries: list, filter, search, save with and without hooks, database size per
1,000 saves, and the admin-API create rate with the example hooks against without them.

    python bench/bench_content.py [--entries 100000] [--repeat 40] [--saves 1000] [--rounds 7] [--quick]

The site is built in one transaction of plain INSERTs (the search index's triggers fire for each, as
for a create); every entry gets one revision, compressed as the service stores it. The list figures are
medians of --repeat calls of the content service; the save figures alternate with and without the
bundled hooks_plugin's approved hooks (before_update fills reading_time, after_update writes an audit
row) on one entry of the big site. The create rate runs on two small sites served by waitress on
loopback, alternating rounds of POST /api/v1/admin/content. --quick: 100,000 entries still, fewer
calls and saves (what ``python -m bench`` runs). Prints, never asserts.
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import json
import random
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
from modula_desktop.core.storage import (FTS_TRIGGERS, compress_body, database_proxy,  # noqa: E402
                                         rebuild_search_index, utc_now)

from _report import result  # noqa: E402

HOOKS = ("before_create", "after_create", "before_update", "after_update")
API_BODY = "A paragraph of words to count. " * 60


def vocabulary(rng: random.Random, n: int = 4000) -> tuple[list[str], list[float]]:
    """Made-up words with Zipf-like frequencies: a few very common, most rare (as in prose)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = sorted({"".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(n)})
    rng.shuffle(words)
    weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(words))))
    return words, weights


def build(service: SiteService, entries: int, seed: int = 17) -> dict:
    rng = random.Random(seed)
    words, weights = vocabulary(rng)
    started = time.perf_counter()
    base = time.time() - 400 * 86400
    content, revisions = [], []
    # one long stream of prose, each body a slice of it from a random place (drawing every word
    # of 100,000 bodies on its own took longer than indexing them)
    stream = rng.choices(words, cum_weights=weights, k=400_000)
    for i in range(entries):
        moment = time.gmtime(base + i * (400 * 86400 / entries))
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", moment) + f".{i % 1000:03d}Z"
        at, size = rng.randrange(len(stream) - 300), rng.randint(80, 260)
        title = " ".join(stream[at + size:at + size + rng.randint(3, 7)]).capitalize()
        body = " ".join(stream[at:at + size])
        entry_id = f"01BENCH{i:019d}"
        status = "published" if rng.random() < 0.8 else "draft"
        content.append((entry_id, rng.choice(("page", "post", "post")), title, f"entry-{i}", body, status, "{}",
                        stamp if status == "published" else None, stamp, stamp))
        revisions.append((f"01BREV{i:020d}", entry_id, 1, content[-1][1], title, f"entry-{i}", compress_body(body),
                          status, "{}", stamp, "app", "[]"))
    conn = service.db.connection()
    # a bulk import's cache: the search index's merges rewrite pages that a 2 MiB cache keeps evicting
    service.db.execute_sql("PRAGMA cache_size = -262144")
    with service.db.atomic():
        # as a bulk import would: the search index built once at the end (as the migration does) rather
        # than by its triggers row by row, which took four times as long
        for name in ("insert", "update", "delete"):
            service.db.execute_sql(f"DROP TRIGGER content_fts_{name}")
        conn.executemany("INSERT INTO content (id, type, title, slug, body, status, fields, published_at, "
                         "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", content)
        conn.executemany("INSERT INTO content_revision (id, content_id, number, type, title, slug, body, status, "
                         "fields, created_at, source, changed_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         revisions)
        rebuild_search_index(service.db)
        for trigger in FTS_TRIGGERS:
            service.db.execute_sql(trigger)
    service.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    service.db.execute_sql("PRAGMA cache_size = -2000")  # the default again, as the app runs
    # the words to search for: a common one, a rare one, two common ones, a prefix
    return {"seconds": time.perf_counter() - started, "common": words[3], "rare": words[2500],
            "two": f"{words[5]} {words[9]}", "prefix": words[20][:3], "ids": [c[0] for c in content]}


def median_ms(fn, repeat: int) -> float:
    fn()  # warm: the pages it needs in the cache
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def db_bytes(service: SiteService) -> int:
    """Bytes of site.db in use (its pages less the free ones: a file keeps pages it freed for reuse)."""
    db = service.db
    db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = db.execute_sql("PRAGMA page_count").fetchone()[0] - db.execute_sql("PRAGMA freelist_count").fetchone()[0]
    return pages * db.execute_sql("PRAGMA page_size").fetchone()[0]


def edited(body: str, rng: random.Random) -> str:
    """An author's edit: one sentence changed somewhere in the text."""
    words = body.split()
    at = rng.randrange(len(words))
    words[at:at + 8] = [w[::-1] for w in words[at:at + 8]]
    return " ".join(words)


# ---- the admin API's create rate ------------------------------------------------------------------
def api_site(root: Path, hooked: bool):
    from modula_desktop.server.runner import start_background

    if hooked:
        shutil.copytree(ROOT / "plugins" / "hooks_plugin", root / "plugins" / "hooks_plugin")
    service = SiteService(Site(root), Settings().replace(plugins={"hot_reload": False})).start(hot_reload=False)
    if hooked:
        for event in ("before_create", "after_create"):
            service.approvals.approve_hook("hooks_plugin", event, "content")
        assert len(service.plugins.hook_chain("before_create")) == 1
    return service, start_background(service, port=0)


def create_burst(service: SiteService, handle, n: int) -> tuple[float, float]:
    """(creates per second, CPU seconds of this process per create), the after-hooks drained."""
    conn = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=30)
    headers = {"Authorization": "Bearer " + service.site.token(), "Content-Type": "application/json"}
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        conn.request("POST", "/api/v1/admin/content", headers=headers,
                     body=json.dumps({"title": f"Bench {i} {time.time_ns()}", "body": API_BODY}))
        answer = conn.getresponse()
        answer.read()
        if answer.status != 201:
            raise RuntimeError(f"create answered {answer.status}")
    service.content.wait_for_hooks(60)
    conn.close()
    return n / (time.perf_counter() - wall), (time.process_time() - cpu) / n


def api_create_ratio(rounds: int, per_round: int):
    with tempfile.TemporaryDirectory(prefix="modula-bench-api-") as tmp:
        plain, hooked = api_site(Path(tmp) / "plain", False), api_site(Path(tmp) / "hooked", True)
        try:
            for site in (plain, hooked):
                create_burst(*site, 30)
            rates = {"plain": [], "hooked": []}
            cpus = {"plain": [], "hooked": []}
            ratios = []
            for i in range(rounds):
                order = (("plain", plain), ("hooked", hooked)) if i % 2 == 0 else (("hooked", hooked), ("plain", plain))
                got = {}
                for name, site in order:
                    got[name] = create_burst(*site, per_round)
                    rates[name].append(got[name][0])
                    cpus[name].append(got[name][1])
                ratios.append(got["hooked"][0] / got["plain"][0])
            audit = hooked[0].db.execute_sql("SELECT COUNT(*) FROM plugin_hooks_plugin__audit").fetchone()[0]
        finally:
            for service, handle in (plain, hooked):
                handle.stop()
                service.close()
    return rates, cpus, ratios, audit


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=40, help="calls per list or search figure")
    ap.add_argument("--saves", type=int, default=1000, help="saves for the size figure (and the save timings)")
    ap.add_argument("--rounds", type=int, default=9, help="alternating rounds of API creates")
    ap.add_argument("--per-round", type=int, default=150, help="API creates per round")
    ap.add_argument("--quick", action="store_true", help="fewer calls, saves and rounds (python -m bench)")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeat, args.saves, args.rounds, args.per_round = 15, 300, 5, 80

    with tempfile.TemporaryDirectory(prefix="modula-bench-content-") as tmp:
        root = Path(tmp) / "site"
        Site(root).ensure()
        shutil.copytree(ROOT / "plugins" / "hooks_plugin", root / "plugins" / "hooks_plugin")
        service = SiteService(Site(root), Settings().replace(plugins={"hot_reload": False}))
        database_proxy.initialize(service.db)
        try:
            made = build(service, args.entries)
            service.start(hot_reload=False)
            for event in HOOKS:
                service.approvals.approve_hook("hooks_plugin", event, "content")
            c = service.content
            n = f"{args.entries:,}"
            print(f"built {n} entries in {made['seconds']:.1f} s; site.db {db_bytes(service) / 2**20:.0f} MiB")

            # ---- list and filter
            middle = sorted(made["ids"])[len(made["ids"]) // 2]
            mark = c.get(middle)
            figures = [
                ("list: 100 newest (the window's query)", lambda: c.list_sorted(limit=100)),
                ("list: 100 newest, whole entries (admin API)", lambda: c.list(limit=100)),
                ("filter: 100 newest posts", lambda: c.list_sorted(type="post", limit=100)),
                ("filter: 100 newest drafts", lambda: c.list_sorted(status="draft", limit=100)),
                ("filter: 100 newest draft pages", lambda: c.list_sorted(type="page", status="draft", limit=100)),
                ("sort: first 100 by title", lambda: c.list_sorted(sort="title", descending=False, limit=100)),
                ("sort: 100 by title from the middle (keyset)",
                 lambda: c.list_sorted(sort="title", descending=False, limit=100, after=mark)),
                ("count: all entries", lambda: c.count()),
                ("count: drafts", lambda: c.count(status="draft")),
            ]
            for label, fn in figures:
                ms = median_ms(fn, args.repeat)
                goal = "<= 5 ms" if label.startswith(("list", "filter", "sort")) else ""
                print(f"{label:50s} {ms:8.2f} ms  (of {n})")
                result(f"{label} (of {n})", ms, "ms", goal=goal)
            print("plan of the list:", c.query_plan())

            # ---- search
            searches = [
                ("search: a common word, 20 best", made["common"], lambda q: c.search(q, limit=20)),
                ("search: a rare word, 20 best", made["rare"], lambda q: c.search(q, limit=20)),
                ("search: two words, 20 best", made["two"], lambda q: c.search(q, limit=20)),
                ("search: a 3-letter prefix, 20 best", made["prefix"], lambda q: c.search(q, limit=20)),
                ("search box: a common word, newest 100", made["common"],
                 lambda q: c.list_sorted(search=q, limit=100)),
                ("search box: a rare word, newest 100", made["rare"],
                 lambda q: c.list_sorted(search=q, limit=100)),
                ("search box: the count for a common word", made["common"], lambda q: c.count(search=q)),
            ]
            for label, query, fn in searches:
                ms = median_ms(lambda: fn(query), max(5, args.repeat // 2))
                print(f"{label:55s} {ms:8.2f} ms  ({query!r}: {c.count(search=query):,} matching)")
                result(f"{label} (of {n})", ms, "ms")

            # ---- saves, with and without the example hooks, and the size they add
            rng = random.Random(5)
            targets = rng.sample(made["ids"], 50)
            # real prose for the size figure (the made-up words above compress far worse than text does):
            # windows of this repository's own documentation, about 1,200 characters each
            prose = " ".join(" ".join(p.read_text(encoding="utf-8").split())
                             for p in sorted((ROOT / "docs").glob("*.md")))
            bodies = {}
            for i in targets:
                at = rng.randrange(len(prose) - 1300)
                bodies[i] = prose[at:at + 1200]
                c.update(i, {"body": bodies[i]}, run_hooks=False)
            before = db_bytes(service)
            written = 0
            lat = {"plain": [], "hooked": []}
            for k in range(args.saves):
                entry_id = targets[k % len(targets)]
                bodies[entry_id] = edited(bodies[entry_id], rng)
                written += len(bodies[entry_id].encode())
                hooked = k % 2 == 1
                started = time.perf_counter()
                c.update(entry_id, {"body": bodies[entry_id]}, run_hooks=hooked)
                lat["hooked" if hooked else "plain"].append(time.perf_counter() - started)
                c.wait_for_hooks(10)  # the after-hook off the clock, as the author feels a save
            grown = db_bytes(service) - before
            lp, lh = (statistics.median(lat[k]) * 1000 for k in ("plain", "hooked"))
            per = 1000 / args.saves
            print(f"save: {lp:.2f} ms without hooks, {lh:.2f} ms with the example hooks ({lh / lp:.2f}x), "
                  f"median of {len(lat['plain'])} each")
            print(f"size: +{grown * per / 2**20:.2f} MiB per 1,000 saves (the bodies saved: "
                  f"{written * per / 2**20:.2f} MiB per 1,000)")
            result(f"save, no hooks (entries: {n})", lp, "ms")
            result(f"save with the example hooks (entries: {n})", lh, "ms", baseline=lp, baseline_label="no hooks")
            result("database growth per 1,000 saves", grown * per / 2**20, "MiB",
                   baseline=written * per / 2**20, baseline_label="the bodies saved, uncompressed")
            row = c.get(targets[1])  # saved with the hooks (odd saves are)
            print(f"(sanity: reading_time={row['fields'].get('reading_time')}, "
                  f"{len(c.revisions(targets[1]))} revisions of one entry, now {utc_now()})")
        finally:
            service.close()

    rates, cpus, ratios, audit = api_create_ratio(args.rounds, args.per_round)
    rp, rh = statistics.median(rates["plain"]), statistics.median(rates["hooked"])
    cp, ch = statistics.median(cpus["plain"]), statistics.median(cpus["hooked"])
    ratio = statistics.median(ratios)
    print(f"admin API create: {rp:.0f}/s without hooks, {rh:.0f}/s with the example hooks; ratio per round "
          f"{', '.join(f'{r:.2f}' for r in ratios)}; median {ratio:.2f} (goal >= 0.85)")
    print(f"  CPU per create: {cp * 1e6:.0f} us without, {ch * 1e6:.0f} us with ({cp / ch:.2f}); "
          f"{audit} audit rows written")
    result("admin API creates with the example hooks", rh, "creates/s", baseline=rp, baseline_label="no hooks",
           goal="ratio >= 0.85", better="higher")
    result("admin API create, CPU with the example hooks", ch * 1e6, "us", baseline=cp * 1e6,
           baseline_label="no hooks")


if __name__ == "__main__":
    main()
