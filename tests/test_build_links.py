"""A built 300-entry site is whole: every internal link resolves to a written file, pages parse as HTML5,
the feeds parse, the sitemap lists every published entry once."""
from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import feedparser
import html5lib
import pytest
from PIL import Image

from build_helpers import add_posts, html_files, internal_links, open_site, resolve
from modula_desktop.core.build import add_media, build_site


def _png(color, size=(1200, 800)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("big") / "site"
    svc = open_site(root, site={"posts_per_page": 7, "title": "Big & <Busy>", "author": "A. Writer"})
    posts = add_posts(svc, 280, drafts_every=10)
    image = add_media(root, _png("teal"), alt="A teal square")
    for i in range(20):
        svc.content.create({"type": "page", "title": f"Page {i}", "slug": f"page-{i}", "status": "published",
                            "body": f"See [the first post](/post-1/) and [home](/).\n\n{image}\n"},
                           run_hooks=False)
    published = [p for p in posts if p["status"] == "published"]
    result = build_site(svc)
    yield svc, result.out, published
    svc.close()


def test_every_internal_link_resolves(built):
    _, out, _ = built
    pages = html_files(out)
    assert len(pages) > 300
    checked = 0
    for page in pages:
        for link in internal_links(page):
            target = resolve(out, page, link)
            assert target.is_file(), f"{page.relative_to(out)} links to {link}, which was not written"
            checked += 1
    assert checked > 5000


def test_pages_parse_as_html5_without_errors(built):
    _, out, _ = built
    for page in html_files(out):
        parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False)
        parser.parse(page.read_bytes())  # strict: the first parse error raises
        assert not parser.errors, page


def test_feeds_parse(built):
    _, out, published = built
    for name, version in (("feed.xml", "rss20"), ("atom.xml", "atom10")):
        feed = feedparser.parse((out / name).read_bytes())
        assert not feed.bozo, (name, feed.get("bozo_exception"))
        assert feed.version == version
        assert feed.feed.title == "Big & <Busy>"
        assert len(feed.entries) == 20
        # posts published in the same instant may come in either order: any of the newest is first
        latest = max(p["published_at"] for p in published)
        newest = {p["title"]: p for p in published if p["published_at"] == latest}
        assert feed.entries[0].title in newest
        assert feed.entries[0].link == f"https://example.com/{newest[feed.entries[0].title]['slug']}/"
        assert "Opening paragraph" in feed.entries[0].content[0].value


def test_sitemap_lists_every_published_entry_once(built):
    svc, out, published = built
    ns = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    locs = [e.text for e in ET.parse(out / "sitemap.xml").getroot().findall("s:url/s:loc", ns)]
    assert len(locs) == len(set(locs))
    entries = [loc for loc in locs if "/post-" in loc or "/page-" in loc and "/page/" not in loc]
    expected = {f"https://example.com/{p['slug']}/" for p in published} | \
        {f"https://example.com/page-{i}/" for i in range(20)}
    assert set(entries) == expected


def test_media_variants_srcset_and_lazy_loading(built):
    _, out, _ = built
    page = (out / "page-3/index.html").read_text()
    assert 'loading="lazy"' in page and 'width="1200" height="800"' in page
    assert "480w" in page and "960w" in page and "1200w" in page and "1600w" not in page
    names = sorted(p.name for p in (out / "media").iterdir())
    assert len(names) == 3  # the original and two narrower copies
    sizes = sorted(Image.open(out / "media" / n).size for n in names)
    assert sizes == [(480, 320), (960, 640), (1200, 800)]
