"""GET /site/...: the last build on the local server, with content types, security headers, and no way
out of the build folder (attacks first: .., encoded dots, symlinks, dot-files)."""
from __future__ import annotations

import os

import pytest

from _server_fixtures import running_site
from build_helpers import add_posts
from modula_desktop.core.build import build_site


@pytest.fixture
def site(tmp_path):
    with running_site(tmp_path / "site", plugins=()) as running:
        add_posts(running.service, 3)
        build_site(running.service)
        (tmp_path / "outside.txt").write_text("SECRET OUTSIDE")
        yield running


def _assert_headers(r):
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert "sandbox" in r.headers["content-security-policy"]


def test_pages_assets_and_feeds_with_their_types(site):
    c = site.client
    r = c.get("/site/", token=False)
    assert r.status == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert b"Post number 2" in r.body
    _assert_headers(r)
    r = c.get("/site/post-1/", token=False)
    assert r.status == 200 and b"<h1>Post number 1</h1>" in r.body
    css = next((site.path / "build" / "assets").iterdir()).name
    r = c.get(f"/site/assets/{css}", token=False)
    assert r.status == 200 and r.headers["content-type"] == "text/css; charset=utf-8"
    _assert_headers(r)
    assert c.get("/site/feed.xml", token=False).headers["content-type"] == "application/xml; charset=utf-8"
    assert c.get("/site/robots.txt", token=False).headers["content-type"] == "text/plain; charset=utf-8"


def test_a_folder_without_its_slash_redirects(site):
    r = site.client.get("/site/post-1", token=False)
    assert r.status == 301 and r.headers["location"].endswith("/site/post-1/")


def test_a_missing_page_is_the_builds_404(site):
    r = site.client.get("/site/no/such/page/", token=False)
    assert r.status == 404 and b"Page not found" in r.body
    _assert_headers(r)


@pytest.mark.parametrize("path", [
    "/site/../site.db", "/site/%2e%2e/site.db", "/site/%2E%2E/%2e%2e/outside.txt", "/site/..%2fsite.db",
    "/site/.%2e/site.db", "/site/%2e%2e%5csite.db", "/site/post-1/../../site.db", "/site//../site.db",
    "/site/.modula-build.json", "/site/..", "/site/%2e%2e", "/site/\\..\\site.db",
])
def test_no_path_leaves_the_build_folder(site, path):
    r = site.client.get(path, token=False)
    assert r.status in (400, 404), (path, r.status)
    assert b"SQLite format" not in r.body and b"SECRET OUTSIDE" not in r.body and b'"outputs"' not in r.body


def test_symlinks_out_of_the_build_are_not_followed(site, tmp_path):
    build = site.path / "build"
    os.symlink(tmp_path / "outside.txt", build / "evil.txt")
    os.symlink(tmp_path, build / "evil-dir")
    os.symlink(site.path / "site.db", build / "post-1" / "db.html")
    for path in ("/site/evil.txt", "/site/evil-dir/outside.txt", "/site/evil-dir/", "/site/post-1/db.html"):
        r = site.client.get(path, token=False)
        assert r.status == 404, path
        assert b"SECRET OUTSIDE" not in r.body and b"SQLite format" not in r.body


def test_before_any_build(tmp_path):
    with running_site(tmp_path / "fresh", plugins=()) as running:
        r = running.client.get("/site/", token=False)
        assert r.status == 404 and b"modula build" in r.body


def test_site_without_a_slash(site):
    r = site.client.get("/site", token=False)
    assert r.status == 301 and r.headers["location"].endswith("/site/")
