"""Step 2, render: one generator per kind of output (entries, index pages, tag pages, archive, feeds,
sitemap, robots.txt, 404, assets, media). Each plans its outputs with the hash of everything the output
shows (its key) before rendering anything, so an incremental build renders only the outputs whose key
changed."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable
from xml.sax.saxutils import escape as xml_escape

from markupsafe import Markup

from .collect import Entry, SiteModel, Tag, digest
from ..markdown import render_markdown  # the renderer of the previews too
from .media import MediaSet, localize

# Bump when the build's own code changes what it writes: every key changes with it.
GENERATOR = "modula-build-1"


@dataclass
class Output:
    path: str  # file path inside the output, "my-post/index.html"
    key: str  # hash of its inputs
    produce: Callable[[], bytes]
    label: str  # what it is, for errors and progress: an entry's slug, "index page 2", "feed.xml"


def file_of(site_path: str) -> str:
    return site_path + "index.html" if site_path == "" or site_path.endswith("/") else site_path


def prefix_of(file_path: str) -> str:
    return "../" * file_path.count("/")


class Renderer:
    """Holds what every page shares (theme, settings, navigation) and renders entries once each."""

    def __init__(self, model: SiteModel, theme, site, build, media: MediaSet, hooks=None, plugins_key=""):
        self.model = model
        self.theme = theme
        self.site = site
        self.build = build
        self.media = media
        self.hooks = hooks  # before_render: (entry, html) -> (html, {"title", "fields"})
        self._html: dict[str, tuple[str, dict]] = {}
        self._excerpts: dict[str, str] = {}
        self.nav = [(p.title, p.path) for p in menu_pages(model.pages, build.menu_pages)]
        settings_key = digest(GENERATOR, sorted(vars(site).items()), build.image_widths, build.image_quality,
                              build.feed_items, plugins_key)
        self.site_key = settings_key
        self.page_key = digest(settings_key, theme.fingerprint, self.nav)

    # ---- entries ---------------------------------------------------------------------------
    def entry_html(self, entry: Entry) -> tuple[str, dict]:
        """(body HTML with site-absolute links, fields): rendered once per build, then filtered by the
        plugins' before_render hooks for this rendering only."""
        cached = self._html.get(entry.id)
        if cached is None:
            html = render_markdown(entry.body)
            fields = {"title": entry.title}
            if self.hooks is not None:
                html, fields = self.hooks(entry, html)
            cached = self._html[entry.id] = (html, fields)
        return cached

    def excerpt(self, entry: Entry) -> str:
        """The explicit excerpt (plain text), else the inside of the rendered body's first paragraph."""
        cached = self._excerpts.get(entry.id)
        if cached is None:
            explicit = entry.explicit_excerpt
            if explicit:
                cached = str(Markup.escape(explicit))
            else:
                html = self.entry_html(entry)[0]
                start = html.find("<p>")
                end = html.find("</p>", start)
                cached = html[start + 3:end] if start >= 0 and end > start else ""
            self._excerpts[entry.id] = cached
        return cached

    def view(self, entry: Entry, prefix: str, full: bool) -> dict:
        html, changed = self.entry_html(entry) if full else ("", {})
        return {
            "id": entry.id, "type": entry.type, "slug": entry.slug,
            "title": changed.get("title", entry.title), "url": self.url(prefix, entry.path),
            "date": entry.date, "published_at": entry.published_at, "fields": changed.get("fields", entry.fields),
            "html": Markup(localize(html, prefix, self.media)) if full else Markup(""),
            "excerpt": Markup(localize(self.excerpt(entry), prefix, self.media)),
            "tags": [{"name": t.name, "url": self.url(prefix, t.path)} for t in entry.tags],
        }

    @staticmethod
    def url(prefix: str, site_path: str) -> str:
        return prefix + site_path if site_path else (prefix or "./")

    def context(self, file_path: str, title: str, prefix: str | None = None, **extra) -> dict:
        prefix = prefix_of(file_path) if prefix is None else prefix
        return dict(
            site=self.site, page_title=title, page_path=file_path,
            canonical=self.site.base_url.rstrip("/") + "/" + (file_path[:-10] if file_path.endswith("index.html")
                                                               else file_path),
            url=lambda p="": self.url(prefix, p),
            asset=lambda name: prefix + self.theme.assets.get(name, "assets/" + name),
            nav=[{"title": t, "url": self.url(prefix, p)} for t, p in self.nav],
            home_url=self.url(prefix, ""), archive_url=self.url(prefix, "archive/"),
            rss_url=self.url(prefix, "feed.xml"), atom_url=self.url(prefix, "atom.xml"),
            year=dt.date.today().year, **extra)

    def page(self, template: str, file_path: str, title: str, label: str, **extra) -> bytes:
        return self.theme.render(template, self.context(file_path, title, **extra), label).encode("utf-8")

    def base_path(self) -> str:
        """The path part of the base URL ("/" or "/blog/"), for pages served at any depth."""
        from urllib.parse import urlsplit

        path = urlsplit(self.site.base_url).path or "/"
        return path if path.endswith("/") else path + "/"

    # ---- the plan --------------------------------------------------------------------------
    def plan(self) -> list[Output]:
        outputs: list[Output] = []
        outputs += self.entries()
        outputs += self.listing("", "index.html", self.model.posts, "index page", {})
        for tag in self.model.tags:
            outputs += self.listing(tag.path, "tag.html", tag.posts, f"tag '{tag.name}'", {"tag": tag})
        outputs.append(self.archive())
        outputs += self.feeds()
        outputs.append(self.sitemap())
        outputs.append(self.robots())
        outputs.append(self.not_found())
        outputs += self.assets()
        outputs += self.media_files()
        if self.hooks is not None:
            # a plugin route's answer can depend on anything: fetched every build, written when it changed
            for path, data, label in self.hooks.build_routes():
                outputs.append(Output(path, digest(self.site_key, data), lambda data=data: data, label))
        return outputs

    def entries(self) -> list[Output]:
        out = []
        posts = self.model.posts
        for i, post in enumerate(posts):
            newer = posts[i - 1] if i > 0 else None
            older = posts[i + 1] if i + 1 < len(posts) else None
            key = digest(self.page_key, post.digest, [(t.name, t.path) for t in post.tags],
                         newer and (newer.title, newer.path), older and (older.title, older.path))
            out.append(Output(file_of(post.path), key, self._entry_page(post, "post.html", newer, older), post.slug))
        for page in self.model.pages:
            out.append(Output(file_of(page.path), digest(self.page_key, page.digest),
                              self._entry_page(page, "page.html", None, None), page.slug))
        return out

    def _entry_page(self, entry: Entry, template: str, newer, older):
        def produce():
            path = file_of(entry.path)
            prefix = prefix_of(path)
            view = self.view(entry, prefix, full=True)
            return self.page(template, path, view["title"], entry.slug, entry=view,
                             newer=newer and self.view(newer, prefix, False),
                             older=older and self.view(older, prefix, False))
        return produce

    def listing(self, base: str, template: str, posts: list, label: str, extra: dict) -> list[Output]:
        per = self.site.posts_per_page
        chunks = [posts[i:i + per] for i in range(0, len(posts), per)] or [[]]
        out = []
        tag = extra.get("tag")
        for n, chunk in enumerate(chunks, 1):
            path = file_of(base if n == 1 else f"{base}page/{n}/")
            key = digest(self.page_key, template, tag and tag.name, n, len(chunks), [p.card for p in chunk])
            out.append(Output(path, key, self._listing_page(base, template, path, n, len(chunks), chunk, tag),
                              f"{label} {n}" if n > 1 else label))
        return out

    def _listing_page(self, base, template, path, n, total, chunk, tag: Tag | None):
        def produce():
            prefix = prefix_of(path)
            pages = {"number": n, "total": total,
                     "newer_url": None if n == 1 else self.url(prefix, base if n == 2 else f"{base}page/{n - 1}/"),
                     "older_url": None if n == total else self.url(prefix, f"{base}page/{n + 1}/")}
            title = f"Tagged “{tag.name}”" if tag else self.site.title
            if n > 1:
                title += f" (page {n})"
            label = f"tag '{tag.name}'" if tag else "the home page"
            return self.page(template, path, title, label, posts=[self.view(p, prefix, False) for p in chunk],
                             pagination=pages, tag=tag and {"name": tag.name, "count": len(tag.posts)})
        return produce

    def archive(self) -> Output:
        posts = self.model.posts
        key = digest(self.page_key, [(p.title, p.path, p.date) for p in posts],
                     [(p.title, p.path) for p in self.model.pages])

        def produce():
            path = "archive/index.html"
            prefix = prefix_of(path)
            groups, current = [], None
            for p in posts:
                month = p.date[:7]
                if current is None or current["month"] != month:
                    current = {"month": month, "posts": []}
                    groups.append(current)
                current["posts"].append({"title": p.title, "url": self.url(prefix, p.path), "date": p.date})
            tags = [{"name": t.name, "url": self.url(prefix, t.path), "count": len(t.posts)}
                    for t in self.model.tags]
            pages = [{"title": p.title, "url": self.url(prefix, p.path)} for p in self.model.pages]
            return self.page("archive.html", path, "Archive", "the archive", groups=groups, tags=tags,
                             pages=pages)
        return Output("archive/index.html", key, produce, "the archive")

    # ---- machine-readable outputs --------------------------------------------------------------
    def absolute(self, site_path: str) -> str:
        return self.site.base_url.rstrip("/") + "/" + site_path

    def feeds(self) -> list[Output]:
        latest = self.model.posts[:self.build.feed_items]
        key = digest(self.site_key, [(p.card, p.digest) for p in latest])
        return [Output("feed.xml", key, lambda: self._feed(latest, "rss"), "feed.xml"),
                Output("atom.xml", key, lambda: self._feed(latest, "atom"), "atom.xml")]

    def _feed(self, posts: list, kind: str) -> bytes:
        from feedgen.feed import FeedGenerator

        fg = FeedGenerator()
        home = self.absolute("")
        fg.id(home)
        fg.title(self.site.title)
        fg.subtitle(self.site.description or self.site.title)
        fg.link(href=home, rel="alternate")
        fg.link(href=self.absolute("atom.xml" if kind == "atom" else "feed.xml"), rel="self")
        fg.language(self.site.language)
        if self.site.author:
            fg.author({"name": self.site.author})
        updated = max((p.published_at for p in posts), default="") or "1970-01-01T00:00:00Z"
        fg.updated(_when(updated))
        for post in reversed(posts):  # feedgen puts the last added first
            fe = fg.add_entry()
            link = self.absolute(post.path)
            fe.id(link)
            fe.guid(link, permalink=True)
            fe.title(post.title)
            fe.link(href=link)
            fe.published(_when(post.published_at))
            fe.updated(_when(post.published_at))
            base = self.absolute("")
            html, _ = self.entry_html(post)
            fe.content(localize(html, base, self.media), type="CDATA" if kind == "rss" else "html")
            fe.description(localize(self.excerpt(post), base, self.media) or post.title)
            for tag in post.tags:
                fe.category(term=tag.name)
        return fg.rss_str(pretty=True) if kind == "rss" else fg.atom_str(pretty=True)

    def sitemap(self) -> Output:
        entries = self.model.posts + self.model.pages
        key = digest(self.site_key, [(e.path, e.updated_at) for e in entries], [t.path for t in self.model.tags])

        def produce():
            lines = ['<?xml version="1.0" encoding="UTF-8"?>',
                     '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">',
                     f"<url><loc>{xml_escape(self.absolute(''))}</loc></url>"]
            for e in entries:
                lines.append(f"<url><loc>{xml_escape(self.absolute(e.path))}</loc>"
                             f"<lastmod>{(e.updated_at or e.published_at)[:10]}</lastmod></url>")
            lines.append(f"<url><loc>{xml_escape(self.absolute('archive/'))}</loc></url>")
            for t in self.model.tags:
                lines.append(f"<url><loc>{xml_escape(self.absolute(t.path))}</loc></url>")
            lines.append("</urlset>\n")
            return "\n".join(lines).encode("utf-8")
        return Output("sitemap.xml", key, produce, "sitemap.xml")

    def robots(self) -> Output:
        text = f"User-agent: *\nAllow: /\n\nSitemap: {self.absolute('sitemap.xml')}\n"
        return Output("robots.txt", digest(self.site_key, text), lambda: text.encode(), "robots.txt")

    def not_found(self) -> Output:
        # a host serves it for any missing path, at any depth: its links start at the base URL's path
        return Output("404.html", digest(self.page_key, "404"),
                      lambda: self.page("404.html", "404.html", "Page not found", "the 404 page",
                                        prefix=self.base_path()), "the 404 page")

    def assets(self) -> list[Output]:
        out = []
        for rel, path in sorted(self.theme.assets.items()):
            src = self.theme.static[rel]
            out.append(Output(path, digest(path), lambda src=src: src.read_bytes(), f"theme file {rel}"))
        return out

    def media_files(self) -> list[Output]:
        names = set()
        for e in self.model.entries:
            names.update(e.media)
        out = []
        for name in sorted(names):
            if self.media.size(name) is None:
                continue  # reported as a warning by the pipeline
            src = self.media.folder / name
            out.append(Output(f"media/{name}", digest(name), lambda src=src: src.read_bytes(), f"media {name}"))
            for width, path in self.media.variants(name):
                out.append(Output(path, digest(name, width, self.build.image_quality),
                                  lambda n=name, w=width: self.media.write_variant(n, w), f"media {name}"))
        return out


def menu_pages(pages: list, limit: int) -> list:
    """The pages in every page's menu: those whose fields say menu = true, else the first few by title
    (a site of a thousand pages does not put them all in its header; the archive lists every page)."""
    chosen = [p for p in pages if p.fields.get("menu") is True]
    if chosen:
        return chosen
    return [p for p in pages if p.fields.get("menu") is not False][:limit]


def _when(stamp: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
