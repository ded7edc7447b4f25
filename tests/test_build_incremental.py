"""Incremental builds plan only what an edit reaches (render.plan_changes) and trust what the last build
of the process left (state.py). Whatever was edited, a rebuild must leave exactly what a clean build of
the same content writes, and write exactly the files whose bytes changed."""
from __future__ import annotations

import os
import shutil

import pytest

from build_helpers import add_posts, leftovers, open_site, snapshot
from modula_desktop.core.build import BuildError, ThemeError, build_site
from modula_desktop.core.build import state as warm
from modula_desktop.core.build.write import MANIFEST, read_manifest


@pytest.fixture
def service(tmp_path):
    svc = open_site(tmp_path / "site", site={"posts_per_page": 3}, build={"feed_items": 4, "menu_pages": 2})
    yield svc
    svc.close()


def _files(out) -> dict:
    return {p: data for p, (data, _) in snapshot(out).items() if p != MANIFEST}


def _rebuild_and_compare(service, tmp_path, change, name: str) -> tuple[set, set]:
    """Run change, rebuild incrementally, and check the output against a clean build of another folder.
    Returns (written, removed) of the incremental build."""
    out = service.site.root / "build"
    before = _files(out)
    change()
    result = build_site(service)
    assert not result.full
    planned[name] = result.planned < result.outputs
    after = _files(out)
    reference = tmp_path / ("clean-" + name.replace(" ", "-"))
    clean = build_site(service, reference, clean=True)
    expected = _files(reference)
    for path in sorted(set(after) | set(expected)):
        if after.get(path) != expected.get(path):
            import difflib
            print(path, "".join(difflib.unified_diff((after.get(path) or b"").decode().splitlines(True),
                                                    (expected.get(path) or b"").decode().splitlines(True))))
    assert after == expected, f"after {name}: the incremental build differs from a clean one"
    assert result.outputs == clean.outputs
    # every key as a full plan works it out (so nothing that changed was left unplanned), read back as
    # another process would: the base line and the change lines
    lines_seen.append(len((out / MANIFEST).read_text().splitlines()))
    mine, theirs = read_manifest(out), read_manifest(reference)
    assert mine["outputs"] == theirs["outputs"] and mine["entries"] == theirs["entries"], f"after {name}"
    changed = {p for p in after if before.get(p) != after[p]}
    assert set(result.written) == changed, f"after {name}"
    assert set(result.removed) == set(before) - set(after), f"after {name}"
    assert leftovers(out) == []
    shutil.rmtree(reference)
    warm.forget(reference)
    return set(result.written), set(result.removed)


lines_seen: list[int] = []  # lines of the manifest file after each rebuild
planned: dict[str, bool] = {}  # edit -> whether the rebuild planned only part of the site


def _sql(service, statement: str, *args):
    with service.db.atomic():
        service.db.execute_sql(statement, args)


def test_every_kind_of_edit_leaves_what_a_clean_build_writes(service, tmp_path):
    posts = add_posts(service, 14)  # newest first: 13 12 11 | 10 9 8 | ...; tags alpha/beta/gamma, group N
    pages = [service.content.create({"type": "page", "title": f"Page {c}", "slug": f"page-{c}",
                                     "status": "published", "body": f"About {c}."}, run_hooks=False)
             for c in "abc"]
    build_site(service)
    update = service.content.update
    edits = [
        ("body", lambda: update(posts[7]["id"], {"body": "New first paragraph.\n\nMore."}, run_hooks=False)),
        ("title", lambda: update(posts[5]["id"], {"title": "Renamed"}, run_hooks=False)),
        ("tags only", lambda: update(posts[2]["id"], {"fields": {"tags": ["delta", "group 2"]}},
                                     run_hooks=False)),
        ("tag spelling", lambda: update(posts[13]["id"], {"fields": {"tags": ["Alpha", "group 6"]}},
                                        run_hooks=False)),
        ("excerpt", lambda: update(posts[9]["id"], {"fields": {"tags": ["beta"], "excerpt": "Short."}},
                                   run_hooks=False)),
        ("slug", lambda: update(posts[4]["id"], {"slug": "moved-post"}, run_hooks=False)),
        ("unpublish", lambda: service.content.unpublish(posts[10]["id"], run_hooks=False)),
        ("republish", lambda: service.content.publish(posts[10]["id"], run_hooks=False)),
        ("delete", lambda: service.content.delete(posts[0]["id"], run_hooks=False)),
        ("new post", lambda: service.content.create(
            {"type": "post", "title": "Brand new", "slug": "brand-new", "status": "published",
             "body": "Fresh.", "fields": {"tags": ["Alpha", "epsilon"]}}, run_hooks=False)),
        # a writer that bypasses the content service (an import, another tool): no updated_at change
        ("date by SQL", lambda: _sql(service, "UPDATE content SET published_at = ? WHERE id = ?",
                                     "2001-01-01T00:00:00.000Z", posts[12]["id"])),
        ("page", lambda: update(pages[2]["id"], {"title": "Page c, renamed"}, run_hooks=False)),  # not in the menu
        ("menu page", lambda: update(pages[1]["id"], {"title": "Page b, renamed"}, run_hooks=False)),
        ("page menu", lambda: update(pages[2]["id"], {"fields": {"menu": True}}, run_hooks=False)),
        ("post to page", lambda: _sql(service, "UPDATE content SET type = 'page' WHERE id = ?", posts[3]["id"])),
        ("last tag use", lambda: update(posts[2]["id"], {"fields": {"tags": []}}, run_hooks=False)),
        ("two at once", lambda: (update(posts[6]["id"], {"body": "Six."}, run_hooks=False),
                                 update(posts[8]["id"], {"title": "Eight"}, run_hooks=False))),
    ]
    seen = {}
    for name, change in edits:
        seen[name] = _rebuild_and_compare(service, tmp_path, change, name)

    # the manifest's change lines were folded into its base as they grew; read cold, it is the same
    lines = (service.site.root / "build" / MANIFEST).read_text().splitlines()
    assert 1 <= len(lines) < len(edits) and max(lines_seen) >= 2, lines_seen
    warm.forget(service.site.root / "build")
    again = build_site(service)
    assert again.written == [] and again.removed == [] and again.planned == again.outputs

    # the theme, the settings and the menu are on every page; a new spelling of a tag on other posts' pages
    assert {name for name, _ in edits if not planned[name]} == {"menu page", "page menu", "tag spelling"}
    written, removed = seen["tags only"]
    assert {"tag/delta/index.html", "tag/gamma/index.html", "post-2/index.html"} <= written
    assert removed == {"tag/gamma/page/2/index.html"}  # gamma had 4 posts, 3 to a page
    written, removed = seen["slug"]
    assert "moved-post/index.html" in written and removed == {"post-4/index.html"}
    assert "tag/delta/index.html" in seen["last tag use"][1]
    assert "post-0/index.html" in seen["delete"][1]


def test_an_edit_of_only_the_tags_rewrites_the_old_and_new_tag_pages(service):
    posts = add_posts(service, 6, tags=("alpha", "beta"))  # post-5 is newest; alpha: 4 2 0, beta: 5 3 1
    out = build_site(service).out
    before = snapshot(out)
    service.content.update(posts[1]["id"], {"fields": {"tags": ["alpha", "group 1"]}}, run_hooks=False)
    result = build_site(service)
    # beta loses it, alpha gains it (and grows to a second page), the page, its home page and group 1 show
    # its tags;
    # the archive shows the tags' counts; it is not among the feeds' newest posts
    expected = {"post-1/index.html", "tag/beta/index.html", "tag/alpha/index.html", "tag/group-1/index.html",
                "tag/alpha/page/2/index.html", "page/2/index.html", "archive/index.html"}
    assert set(result.written) == expected | ({"feed.xml", "atom.xml"} & set(result.written))
    assert result.removed == []
    after = snapshot(out)
    assert {p for p in after if p in before and after[p] != before[p]} - {MANIFEST} == \
        set(result.written) - {"tag/alpha/page/2/index.html"}
    assert "post-1" in (out / "tag/alpha/page/2/index.html").read_text() + (out / "tag/alpha/index.html").read_text()
    assert "post-1/" not in (out / "tag/beta/index.html").read_text()


def test_a_build_by_another_process_makes_the_next_one_start_cold(service):
    add_posts(service, 4)
    out = build_site(service).out
    (out / "post-1/index.html").unlink()
    assert build_site(service).written == []  # this process trusts what it wrote (state.py)
    # another process rewrote the manifest: this one reads it again and checks the files
    copy = out / "manifest.copy"
    shutil.copy(out / MANIFEST, copy)
    os.replace(copy, out / MANIFEST)
    assert build_site(service).written == ["post-1/index.html"]


def test_a_new_slug_taken_by_another_output_is_refused_and_nothing_changes(service):
    posts = add_posts(service, 4)
    out = build_site(service).out
    before = snapshot(out)
    service.content.update(posts[1]["id"], {"slug": "archive"}, run_hooks=False)
    with pytest.raises(BuildError, match="Two things would be written at archive/index.html"):
        build_site(service)
    assert snapshot(out) == before and leftovers(out) == []


def test_after_a_failed_build_the_next_one_is_right(service, tmp_path):
    posts = add_posts(service, 5)
    build_site(service)
    theme = service.site.root / "themes" / "default"
    theme.mkdir(parents=True)
    service.content.update(posts[2]["id"], {"title": "Retitled"}, run_hooks=False)
    (theme / "post.html").write_text("{% extends 'base.html' %}{% block main %}{{ entry.title.nope() }}"
                                     "{% endblock %}")
    with pytest.raises(ThemeError):
        build_site(service)
    (theme / "post.html").unlink()
    _rebuild_and_compare(service, tmp_path, lambda: None, "after-failure")
    assert "Retitled" in (service.site.root / "build/post-2/index.html").read_text()


def test_changed_settings_or_theme_plan_everything_again(service, tmp_path):
    add_posts(service, 4)
    build_site(service)
    theme = service.site.root / "themes" / "default"
    theme.mkdir(parents=True)
    (theme / "post.html").write_text("{% extends 'base.html' %}{% block main %}<p class=mine>{{ entry.title }}"
                                     "</p>{% endblock %}")
    written, _ = _rebuild_and_compare(service, tmp_path, lambda: None, "theme")
    assert {f"post-{i}/index.html" for i in range(4)} <= written


EXPLODING = """
hooks.on("before_render", "content", function(entry)
  if string.find(entry.body, "explode", 1, true) then error("cannot render this body") end
  return {html = entry.html .. "<p>rendered by a plugin</p>"}
end)
"""


def test_a_plugin_failing_in_a_partial_rebuild_leaves_the_output_intact(tmp_path):
    from helpers import write_plugin

    from modula_desktop.core.service import SiteService
    from modula_desktop.core.settings import Settings
    from modula_desktop.core.site import Site

    root = tmp_path / "site"
    write_plugin(root, "fragile", EXPLODING, info_extra='permissions = {"hooks", "hooks:before"}')
    svc = SiteService(Site(root), Settings().replace(plugins={"hot_reload": False})).start(hot_reload=False)
    try:
        svc.approvals.approve_hook("fragile", "before_render", "content")
        posts = add_posts(svc, 6)
        out = build_site(svc).out
        before = snapshot(out)
        svc.content.update(posts[3]["id"], {"body": "This one will explode."}, run_hooks=False)
        with pytest.raises(BuildError, match="fragile.*'post-3'.*cannot render this body"):
            build_site(svc)
        assert snapshot(out) == before and leftovers(out) == []
        svc.content.update(posts[3]["id"], {"body": "Calm again."}, run_hooks=False)
        result = build_site(svc)
        assert not result.full and "post-3/index.html" in result.written
        page = (out / "post-3/index.html").read_text()
        assert "Calm again." in page and "rendered by a plugin" in page
        clean = build_site(svc, tmp_path / "clean", clean=True)
        assert _files(out) == _files(clean.out)
    finally:
        svc.close()


def test_the_journal_says_what_changed_and_a_pruned_one_falls_back_to_every_row(service, tmp_path):
    import sqlite3

    posts = add_posts(service, 6)
    build_site(service)
    # another program writes the database (its own connection): the triggers note it all the same
    other = sqlite3.connect(service.db.database)
    with other:
        other.execute("UPDATE content SET title = 'Written elsewhere' WHERE id = ?", (posts[2]["id"],))
    other.close()
    written, _ = _rebuild_and_compare(service, tmp_path, lambda: None, "other connection")
    assert "post-2/index.html" in written
    # the journal pruned past what this process's last build read: it reads every row instead
    service.content.update(posts[4]["id"], {"body": "After the pruning."}, run_hooks=False)
    _sql(service, "DELETE FROM content_change")
    service.content.update(posts[1]["id"], {"title": "Also after"}, run_hooks=False)
    written, _ = _rebuild_and_compare(service, tmp_path, lambda: None, "pruned journal")
    assert {"post-4/index.html", "post-1/index.html"} <= written


def test_random_edits_leave_what_a_clean_build_writes(service, tmp_path):
    import random

    rng = random.Random(1616)
    posts = add_posts(service, 16)
    pages = [service.content.create({"type": "page", "title": f"Page {c}", "slug": f"page-{c}",
                                     "status": "published", "body": f"About {c}."}, run_hooks=False)
             for c in "abcd"]
    build_site(service)
    pool = ["alpha", "Alpha", "beta", "gamma", "delta", "group 1", "group 2"]
    ids = [p["id"] for p in posts]
    trashed: list[str] = []
    made = 0

    def edit():
        nonlocal made
        kind = rng.choice(["body", "title", "tags", "excerpt", "slug", "status", "trash", "restore", "new",
                           "date", "page", "menu"])
        live = [i for i in ids if i not in trashed]
        target = rng.choice(live)
        update = service.content.update
        if kind == "body":
            update(target, {"body": f"Body {rng.random()}.\n\nMore."}, run_hooks=False)
        elif kind == "title":
            update(target, {"title": f"Title {rng.randint(0, 99)}"}, run_hooks=False)
        elif kind == "tags":
            update(target, {"fields": {"tags": rng.sample(pool, rng.randint(0, 3))}}, run_hooks=False)
        elif kind == "excerpt":
            update(target, {"fields": {"excerpt": rng.choice(["", "Short one."])}}, run_hooks=False)
        elif kind == "slug":
            update(target, {"slug": f"moved-{rng.randint(0, 10_000)}"}, run_hooks=False)
        elif kind == "status":
            entry = service.content.get(target)
            (service.content.unpublish if entry["status"] == "published" else service.content.publish)(
                target, run_hooks=False)
        elif kind == "trash" and len(live) > 4:
            service.content.delete(target, run_hooks=False)
            trashed.append(target)
        elif kind == "restore" and trashed:
            service.content.restore_from_trash(trashed.pop(), run_hooks=False)
        elif kind == "new":
            made += 1
            ids.append(service.content.create(
                {"type": "post", "title": f"New {made}", "slug": f"new-{made}", "status": "published",
                 "body": "New.", "fields": {"tags": rng.sample(pool, 2)}}, run_hooks=False)["id"])
        elif kind == "date":
            _sql(service, "UPDATE content SET published_at = ? WHERE id = ?",
                 f"20{rng.randint(10, 30)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T00:00:00.000Z", target)
        elif kind == "page":
            update(rng.choice(pages)["id"], {"title": f"Page {rng.choice('abcdxyz')}{rng.randint(0, 9)}"},
                   run_hooks=False)
        elif kind == "menu":
            update(rng.choice(pages)["id"], {"fields": {"menu": rng.choice([True, False])}}, run_hooks=False)
        for _ in range(rng.choice([0, 0, 0, 1])):  # now and then two edits in one rebuild
            update(rng.choice([i for i in ids if i not in trashed]), {"body": "And another."}, run_hooks=False)

    for n in range(30):
        _rebuild_and_compare(service, tmp_path, edit, f"random {n}")
    assert sum(planned[f"random {n}"] for n in range(30)) >= 15  # most of them planned only part


def test_the_change_journal_stays_bounded_without_builds(tmp_path):
    """Every write adds a journal row; a site that is never built must not grow it for ever."""
    from modula_desktop.core.storage import open_database

    db = open_database(tmp_path / "site.db")
    try:
        with db.atomic():
            db.connection().executemany("INSERT INTO content_change (content_id) VALUES (?)",
                                        [(f"e{i}",) for i in range(45_000)])
        low, high, n = db.execute_sql("SELECT min(seq), max(seq), count(*) FROM content_change").fetchone()
        assert high == 45_000 and n <= 25_000 and low > 20_000
    finally:
        db.close()
