"""The static build (SPEC 9) on a real site: every page type, drafts, incremental and atomic builds."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from build_helpers import add_posts, html_files, leftovers, open_site, snapshot
from modula_desktop.core.build import BuildCancelled, BuildError, ThemeError, build_site
from modula_desktop.core.build import state as warm


@pytest.fixture
def service(tmp_path):
    svc = open_site(tmp_path / "site", site={"title": "Field Notes", "posts_per_page": 3,
                                             "base_url": "https://notes.example/blog/"})
    yield svc
    svc.close()


def _about(service):
    return service.content.create({"type": "page", "title": "About", "slug": "about", "status": "published",
                                   "body": "Who writes here."}, run_hooks=False)


def test_every_page_type_renders(service):
    add_posts(service, 7)
    _about(service)
    result = build_site(service)
    out = result.out
    assert out == service.site.root / "build" and result.full
    home = (out / "index.html").read_text()
    assert "<title>Field Notes</title>" in home and 'lang="en"' in home
    assert "Post number 6" in home and "Opening paragraph of post 6, with <em>emphasis</em>." in home
    assert "Post number 3" not in home  # 3 per page: 6, 5, 4
    assert 'href="page/2/"' in home
    assert "Post number 3" in (out / "page/2/index.html").read_text()
    assert (out / "page/3/index.html").is_file() and not (out / "page/4").exists()
    post = (out / "post-5/index.html").read_text()
    assert "<h1>Post number 5</h1>" in post and "<h2>Section</h2>" in post
    assert 'href="../tag/gamma/"' in post and 'href="../post-4/"' in post and 'href="../post-6/"' in post
    page = (out / "about/index.html").read_text()
    assert "Who writes here." in page and 'href="../about/"' in page  # in the navigation
    tag = (out / "tag/alpha/index.html").read_text()
    assert "Posts tagged “alpha”" in tag and "Post number 6" in tag and "Post number 5" not in tag
    assert "Post number 1" in (out / "tag/group-1/index.html").read_text()
    archive = (out / "archive/index.html").read_text()
    assert all(f"Post number {i}" in archive for i in range(7))
    assert "Page not found" in (out / "404.html").read_text()
    assert 'href="/blog/"' in (out / "404.html").read_text()  # served at any depth
    assert "Sitemap: https://notes.example/blog/sitemap.xml" in (out / "robots.txt").read_text()
    assert ET.fromstring((out / "feed.xml").read_bytes()).tag == "rss"
    assert ET.fromstring((out / "atom.xml").read_bytes()).tag.endswith("feed")
    css = [p.name for p in (out / "assets").iterdir()]
    assert len(css) == 1 and css[0].startswith("style.") and css[0].endswith(".css") and len(css[0]) > 14
    assert f'href="assets/{css[0]}"' in home and f'href="../assets/{css[0]}"' in post


def test_drafts_never_appear(service):
    add_posts(service, 10, drafts_every=3)  # 0, 3, 6, 9 are drafts
    draft_page = service.content.create({"type": "page", "title": "Secret plan", "slug": "secret-plan",
                                         "body": "unpublished words"}, run_hooks=False)
    out = build_site(service).out
    assert not (out / "post-3").exists() and not (out / "secret-plan").exists()
    for path, (data, _) in snapshot(out).items():
        text = data.decode("utf-8", "replace")
        assert "post-3/" not in text and "Post number 9" not in text, path
        assert "Secret plan" not in text and "unpublished words" not in text, path
    service.content.publish(draft_page["id"], run_hooks=False)
    assert "unpublished words" in (build_site(service).out / "secret-plan/index.html").read_text()


def test_excerpt_explicit_and_tags_from_fields(service):
    service.content.create({"type": "post", "title": "Hello", "slug": "hello", "status": "published",
                            "body": "# Big title\n\nThe first paragraph.\n\nThe second.",
                            "fields": {"tags": ["News", "news", "  ", 3, "C++"]}}, run_hooks=False)
    service.content.create({"type": "post", "title": "Other", "slug": "other", "status": "published",
                            "body": "Body text.", "fields": {"excerpt": "Hand <written> summary"}},
                           run_hooks=False)
    out = build_site(service).out
    home = (out / "index.html").read_text()
    assert "The first paragraph." in home and "The second." not in home and "Big title" not in home
    assert "Hand &lt;written&gt; summary" in home
    assert sorted(p.name for p in (out / "tag").iterdir()) == ["c", "news"]


def test_permalink_with_dates(tmp_path):
    svc = open_site(tmp_path / "site", site={"permalink": "/<year>/<month>/<slug>.html"})
    try:
        entry = add_posts(svc, 1)[0]
        _about(svc)
        out = build_site(svc).out
        year, month = entry["published_at"][:4], entry["published_at"][5:7]
        post = out / year / month / "post-0.html"
        assert post.is_file()
        assert f'href="{year}/{month}/post-0.html"' in (out / "index.html").read_text()
        assert 'href="../../assets/' in post.read_text()
        assert (out / "about/index.html").is_file()  # pages keep /<slug>/
    finally:
        svc.close()


def _rebuild_after(service, change) -> tuple[set, dict, dict]:
    out = build_site(service).out
    before = snapshot(out)
    change()
    result = build_site(service)
    after = snapshot(out)
    assert not result.full
    return set(result.written), before, after


def test_one_edit_rewrites_exactly_the_affected_files(service):
    posts = add_posts(service, 10)  # newest first: 9 8 7 | 6 5 4 | 3 2 1 | 0
    _about(service)
    target = posts[5]  # on home page 2, tags beta and group 5

    written, before, after = _rebuild_after(
        service, lambda: service.content.update(target["id"], {"body": "A new opening.\n\nRest."},
                                                run_hooks=False))
    expected = {"post-5/index.html", "page/2/index.html", "tag/gamma/index.html", "tag/group-5/index.html",
                "feed.xml", "atom.xml"}
    # the sitemap is rendered again too, but its <lastmod> is a date: written only on a new day
    assert expected <= written <= expected | {"sitemap.xml"}
    changed = {p for p in after if p in before and after[p] != before[p]} - {".modula-build.json"}
    assert changed == written  # nothing else was touched, not even its mtime
    assert set(after) == set(before)
    assert "A new opening." in (service.site.root / "build/post-5/index.html").read_text()


def test_a_rebuild_with_no_change_writes_nothing(service):
    add_posts(service, 5)
    out = build_site(service).out
    before = snapshot(out)
    result = build_site(service)
    assert result.written == [] and result.removed == [] and snapshot(out) == before


def test_unpublishing_and_deleting_remove_pages(service):
    posts = add_posts(service, 5)
    out = build_site(service).out
    assert (out / "post-2/index.html").is_file() and (out / "post-3/index.html").is_file()
    service.content.unpublish(posts[2]["id"], run_hooks=False)
    service.content.delete(posts[3]["id"], run_hooks=False)
    result = build_site(service)
    assert {"post-2/index.html", "post-3/index.html"} <= set(result.removed)
    assert not (out / "post-2").exists() and not (out / "post-3").exists()
    assert "Post number 2" not in (out / "index.html").read_text()
    assert "post-3" not in (out / "sitemap.xml").read_text()


def test_a_broken_theme_leaves_the_last_output_untouched(service):
    add_posts(service, 4)
    out = build_site(service).out
    before = snapshot(out)
    theme = service.site.root / "themes" / "default"
    theme.mkdir(parents=True)
    (theme / "post.html").write_text('{% extends "base.html" %}\n{% block main %}\n<h1>{{ entry.title }</h1>\n'
                                     '{% endblock %}\n')
    with pytest.raises(ThemeError) as info:
        build_site(service)
    assert info.value.template == "post.html" and info.value.line == 3
    assert "post.html line 3" in str(info.value)
    assert snapshot(out) == before and leftovers(out) == []

    # an error while rendering names the entry too
    (theme / "post.html").write_text('{% extends "base.html" %}\n{% block main %}\n\n'
                                     '{{ entry.title.no_such_method() }}\n{% endblock %}\n')
    with pytest.raises(ThemeError) as info:
        build_site(service, clean=True)
    assert info.value.template == "post.html" and info.value.line == 4 and info.value.entry.startswith("post-")
    assert f"while rendering '{info.value.entry}'" in str(info.value)
    assert snapshot(out) == before and leftovers(out) == []


def test_a_user_theme_overrides_template_by_template(tmp_path):
    svc = open_site(tmp_path / "site", site={"theme": "mine"})
    try:
        add_posts(svc, 2)
        _about(svc)
        theme = svc.site.root / "themes" / "mine"
        (theme / "static").mkdir(parents=True)
        (theme / "page.html").write_text('{% extends "base.html" %}{% block main %}<p class="mine">'
                                         '{{ entry.title }}</p>{% endblock %}')
        (theme / "static" / "extra.js").write_text("// mine\n")
        out = build_site(svc).out
        assert '<p class="mine">About</p>' in (out / "about/index.html").read_text()
        assert "<h1>Post number 1</h1>" in (out / "post-1/index.html").read_text()  # the default's
        assert any(p.name.startswith("extra.") for p in (out / "assets").iterdir())
        (theme / "page.html").write_text('{% extends "base.html" %}{% block main %}<p class="mine2">'
                                         '{{ entry.title }}</p>{% endblock %}')
        assert "mine2" in (build_site(svc).out / "about/index.html").read_text()
    finally:
        svc.close()


def test_a_missing_theme_is_one_clear_error(tmp_path):
    svc = open_site(tmp_path / "site", site={"theme": "nope"})
    try:
        with pytest.raises(BuildError, match="The theme 'nope' is not in"):
            build_site(svc)
    finally:
        svc.close()


def test_cancel_leaves_the_last_output_untouched(service):
    posts = add_posts(service, 12)
    out = build_site(service).out
    before = snapshot(out)
    seen = []
    for p in posts:
        service.content.update(p["id"], {"body": "changed"}, run_hooks=False)
    with pytest.raises(BuildCancelled):
        build_site(service, progress=lambda done, total, what: seen.append((done, total)),
                   cancel=lambda: len(seen) >= 3)
    assert len(seen) == 3 and seen[0][1] > 12
    assert snapshot(out) == before and leftovers(out) == []
    with pytest.raises(BuildCancelled):  # a full build too
        build_site(service, clean=True, cancel=lambda: True)
    assert snapshot(out) == before and leftovers(out) == []


def test_clean_rebuilds_everything_and_swaps_the_folder(service):
    add_posts(service, 3)
    out = build_site(service).out
    (out / "stray.txt").write_text("left by hand")
    result = build_site(service, clean=True)
    assert result.full and len(result.written) == result.outputs
    assert not (out / "stray.txt").exists() and leftovers(out) == []


def test_a_file_removed_by_hand_is_written_again(service):
    add_posts(service, 3)
    out = build_site(service).out
    (out / "post-1/index.html").unlink()
    # by the next build of another process (the command line): the window's trusts what it wrote (state.py)
    warm.forget(out)
    assert build_site(service).written == ["post-1/index.html"]
    (out / "post-2/index.html").unlink()
    assert "post-2/index.html" in build_site(service, clean=True).written


def test_output_that_is_not_a_build_is_refused(service, tmp_path):
    add_posts(service, 1)
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "thesis.txt").write_text("precious")
    with pytest.raises(BuildError, match="not empty and holds no earlier build"):
        build_site(service, folder)
    assert (folder / "thesis.txt").read_text() == "precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (build_site(service, empty).out / "index.html").is_file()


def test_two_outputs_at_one_path_are_refused(service):
    service.content.create({"type": "page", "title": "Archive", "slug": "archive", "status": "published"},
                           run_hooks=False)
    with pytest.raises(BuildError, match="Two things would be written at archive/index.html"):
        build_site(service)


def test_every_html_file_is_complete(service):
    add_posts(service, 4)
    for page in html_files(build_site(service).out):
        text = page.read_text()
        assert text.startswith("<!doctype html>") and text.rstrip().endswith("</html>"), page
