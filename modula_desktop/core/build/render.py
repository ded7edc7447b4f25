"""Step 2, render: one generator per kind of output (entries, index pages, tag pages, archive, feeds,
sitemap, robots.txt, 404, assets, media). Each plans its outputs with the hash of everything the output
shows (its key) before rendering anything, so an incremental build renders only the outputs whose key
changed.

A key is the digest of a tuple of parts (strings, numbers, tuples). Planning a site of 10,000 entries
asks for some 13,000 of them; a process that builds the same output again passes the last build's
Memo, so only the keys whose parts changed are hashed again (a dictionary lookup for the rest)."""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Callable
from xml.sax.saxutils import escape as xml_escape

from markupsafe import Markup

from .collect import Entry, SiteModel, Tag, digest, digest_text
from ..markdown import render_markdown  # the renderer of the previews too
from .media import MediaSet, localize

# Bump when the build's own code changes what it writes: every key changes with it.
GENERATOR = "modula-build-1"


@dataclass
class PlanRecord:
    """What the next build of this process needs to plan only what an edit reaches."""
    page_key: str
    posts: list  # newest first, as planned
    entries: dict  # id -> Entry
    chunks: dict  # pages of each list: "" (the home page's), a tag's slug
    tag_names: dict  # slug -> name
    sitewide: list  # paths of the outputs planned in every build


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


class Memo:
    """What a build renders again and again, kept for the next build of the same output in this process:
    the keys by their parts, each entry's excerpt and the rendered HTML of the entries a feed shows.
    Valid for one settings_key (the settings and the plugins' versions): a build with other settings
    starts from an empty one."""

    def __init__(self, settings_key: str = ""):
        self.settings_key = settings_key
        self.keys: dict[tuple, str] = {}
        self.plan: PlanRecord | None = None
        self.excerpts: dict[str, tuple] = {}  # id -> (stamp, excerpt)
        self.html: dict[str, tuple] = {}  # id -> (stamp, html, fields)


def settings_key(site, build, plugins_key: str) -> str:
    return digest(GENERATOR, sorted(vars(site).items()), build.image_widths, build.image_quality,
                  build.feed_items, plugins_key)


class Renderer:
    """Holds what every page shares (theme, settings, navigation) and renders entries once each."""

    def __init__(self, model: SiteModel, theme, site, build, media: MediaSet, hooks=None, plugins_key="",
                 memo: Memo | None = None):
        self.model = model
        self.theme = theme
        self.site = site
        self.build = build
        self.media = media
        self.hooks = hooks  # before_render: (entry, html) -> (html, {"title", "fields"})
        self._html: dict[str, tuple[str, dict]] = {}
        self._excerpts: dict[str, str] = {}
        self.nav = [(p.title, p.path) for p in menu_pages(model.pages, build.menu_pages)]
        self.site_key = settings_key(site, build, plugins_key)
        self.page_key = digest(self.site_key, theme.fingerprint, self.nav)
        old = memo if memo is not None and memo.settings_key == self.site_key else None
        if old is None:
            old = Memo(self.site_key)
            for e in model.entries:  # kept by unchanged entries, for other settings
                e.sitemap_line = ""
        self._old_keys = old.keys
        self.memo = Memo(self.site_key)  # what this build leaves for the next
        self.last_plan = old.plan
        self.chunks: dict[str, int] = {}
        self.sitewide_paths: list[str] = []
        self.memo.excerpts = old.excerpts
        self._old_html = old.html
        self._unkept: set = set()  # entries a failing plugin rendered: not kept for the next build

    def key(self, *parts) -> str:
        found = self._old_keys.get(parts)
        if found is None:
            found = digest(*parts)
        self.memo.keys[parts] = found
        return found

    # ---- entries ---------------------------------------------------------------------------
    def entry_html(self, entry: Entry) -> tuple[str, dict]:
        """(body HTML with site-absolute links, fields): rendered once per build, then filtered by the
        plugins' before_render hooks for this rendering only."""
        cached = self._html.get(entry.id)
        if cached is None:
            kept = self._old_html.get(entry.id)
            if kept is not None and kept[0] == entry.row:
                cached = self._html[entry.id] = kept[1]
                return cached
            html = render_markdown(entry.body)
            fields = {"title": entry.title}
            failed = False
            if self.hooks is not None:
                warnings = len(self.hooks.warnings)
                html, fields = self.hooks(entry, html)
                failed = len(self.hooks.warnings) != warnings  # not kept: the next build tries again
            cached = self._html[entry.id] = (html, fields)
            if failed:
                self._unkept.add(entry.id)
        return cached

    def excerpt(self, entry: Entry) -> str:
        """The explicit excerpt (plain text), else the inside of the rendered body's first paragraph."""
        cached = self._excerpts.get(entry.id)
        if cached is None:
            kept = self.memo.excerpts.get(entry.id)
            if kept is not None and kept[0] == entry.row:
                cached = self._excerpts[entry.id] = kept[1]
                return cached
            explicit = entry.explicit_excerpt
            if explicit:
                cached = str(Markup.escape(explicit))
            else:
                html = self.entry_html(entry)[0]
                start = html.find("<p>")
                end = html.find("</p>", start)
                cached = html[start + 3:end] if start >= 0 and end > start else ""
            self._excerpts[entry.id] = cached
            if entry.id not in self._unkept:
                self.memo.excerpts[entry.id] = (entry.row, cached)
        return cached

    def finish(self) -> Memo:
        """The memo for the next build, once this one succeeded: excerpts of the entries still published,
        the HTML of the entries the feeds show."""
        ids = {e.id for e in self.model.entries}
        excerpts = self.memo.excerpts
        if len(excerpts) > len(ids):
            self.memo.excerpts = {k: v for k, v in excerpts.items() if k in ids}
        self.memo.html = {e.id: (e.row, self._html[e.id]) for e in self.model.posts[:self.build.feed_items]
                          if e.id in self._html and e.id not in self._unkept}
        for e in self.model.posts[:self.build.feed_items]:
            if e.id not in self.memo.html and e.id in self._old_html and self._old_html[e.id][0] == e.row:
                self.memo.html[e.id] = self._old_html[e.id]
        self.memo.plan = self.record()
        return self.memo

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
        """Every output of the site."""
        outputs: list[Output] = self.entries()
        self.chunks = {}
        outputs += self._listing_of(None)
        for tag in self.model.tags:
            outputs += self._listing_of(tag)
        outputs += self._sitewide()
        return outputs

    def plan_changes(self, last: "PlanRecord | None") -> tuple[list[Output], set[str]] | None:
        """After the last build of this process (last), only the outputs the changed entries can reach:
        their pages and their neighbours' (old and new), the index and tag pages they were or are on,
        and the outputs about the whole site (archive, feeds, sitemap ...). Returns those and the paths of
        the last build they replace (what is not planned again stays as it was); None when too much
        changed for that to pay, or something every page shows (theme, settings, menu, a tag's name)."""
        model = self.model
        if last is None or last.page_key != self.page_key:
            return None
        fresh = model.fresh
        removed = []
        if len(last.entries) + sum(1 for e in fresh if e.id not in last.entries) != len(model.entries):
            removed = [e for id, e in last.entries.items() if id not in model.by_id]
        if len(fresh) + len(removed) > max(50, len(model.entries) // 50):
            return None
        tag_names = {t.slug: t.name for t in model.tags}
        if any(last.tag_names.get(slug, name) != name for slug, name in tag_names.items()):
            return None  # a tag now spelled as another post spells it: on pages of posts that did not change

        posts, old_posts = model.posts, last.posts
        outputs: list[Output] = []
        replaced: set[str] = set()
        touched = set()  # indexes in posts of the post pages to plan again
        changed_at = []  # indexes in posts of the changed posts
        tags = set()  # slugs of the tag listings to plan again
        # is every post where it was? Then only the index pages of the changed posts change
        in_place = not removed and len(posts) == len(old_posts)

        def near(index: int, around: list):
            for i in (index - 1, index + 1):
                if 0 <= i < len(around):
                    now = model.by_id.get(around[i].id)
                    if now is not None and now.type == "post":
                        touched.add(posts.index(now))

        for old in removed:
            replaced.add(old.file)
            tags.update(slug for _, slug in old.tag_names)
            if old.type == "post":
                near(old_posts.index(old), old_posts)
        for e in fresh:
            old = last.entries.get(e.id)
            was = None
            if old is not None:
                replaced.add(old.file)
                tags.update(slug for _, slug in old.tag_names)
                if old.type == "post":
                    was = old_posts.index(old)
                    near(was, old_posts)
            if e.type == "post":
                now = posts.index(e)
                touched.add(now)
                changed_at.append(now)
                near(now, posts)
                tags.update(slug for _, slug in e.tag_names)
                if was != now:
                    in_place = False
            else:
                outputs.append(self.page_output(e))
                if was is not None:
                    in_place = False
        if self._old_keys is not self.memo.keys:  # keys not asked for again stay known
            self._old_keys.update(self.memo.keys)
            self.memo.keys = self._old_keys
        for i in sorted(touched):
            outputs.append(self.post_output(i))
            replaced.add(posts[i].file)

        self.chunks = dict(last.chunks)
        per = self.site.posts_per_page
        home = {i // per + 1 for i in changed_at} if in_place else None
        for tag in [None] + [t for t in model.tags if t.slug in tags]:
            key = "" if tag is None else tag.slug
            only = home if tag is None else None
            replaced.update(self._listing_paths(tag.path if tag else "", last.chunks.get(key, 0), only))
            outputs += self._listing_of(tag, only)
        for slug in tags - set(tag_names):  # tags no post has any more
            replaced.update(self._listing_paths(f"tag/{slug}/", self.chunks.pop(slug, 0), None))
        replaced.update(last.sitewide)
        outputs += self._sitewide()
        return outputs, replaced

    def record(self) -> "PlanRecord":
        return PlanRecord(self.page_key, self.model.posts, self.model.by_id, self.chunks,
                          {t.slug: t.name for t in self.model.tags}, self.sitewide_paths)

    def _listing_of(self, tag: Tag | None, only: set | None = None) -> list[Output]:
        if tag is None:
            out = self.listing("", "index.html", self.model.posts, "index page", {}, only)
        else:
            out = self.listing(tag.path, "tag.html", tag.posts, f"tag '{tag.name}'", {"tag": tag}, only)
        return out

    @staticmethod
    def _listing_paths(base: str, count: int, only: set | None) -> list[str]:
        return [file_of(base if n == 1 else f"{base}page/{n}/") for n in range(1, count + 1)
                if only is None or n in only]

    def _sitewide(self) -> list[Output]:
        outputs = [self.archive(), *self.feeds(), self.sitemap(), self.robots(), self.not_found(),
                   *self.assets(), *self.media_files()]
        if self.hooks is not None:
            # a plugin route's answer can depend on anything: fetched every build, written when it changed
            for path, data, label in self.hooks.build_routes():
                outputs.append(Output(path, digest(self.site_key, data), lambda data=data: data, label))
        self.sitewide_paths = [o.path for o in outputs]
        return outputs

    def entries(self) -> list[Output]:
        out = []
        append = out.append
        key = self.key
        page_key = self.page_key
        entry_page = self._entry_page
        posts = self.model.posts
        last = len(posts) - 1
        for i, post in enumerate(posts):
            newer = posts[i - 1] if i > 0 else None
            older = posts[i + 1] if i < last else None
            k = key(page_key, post.digest, post.tag_key, newer and newer.link, older and older.link)
            append(Output(post.file, k, entry_page(post, "post.html", newer, older), post.slug))
        for page in self.model.pages:
            append(self.page_output(page))
        return out

    def post_output(self, i: int) -> Output:
        posts = self.model.posts
        post = posts[i]
        newer = posts[i - 1] if i > 0 else None
        older = posts[i + 1] if i + 1 < len(posts) else None
        k = self.key(self.page_key, post.digest, post.tag_key, newer and newer.link, older and older.link)
        return Output(post.file, k, self._entry_page(post, "post.html", newer, older), post.slug)

    def page_output(self, page: Entry) -> Output:
        return Output(page.file, self.key(self.page_key, page.digest), self._entry_page(page, "page.html", None, None),
                      page.slug)

    def _entry_page(self, entry: Entry, template: str, newer, older):
        def produce():
            path = file_of(entry.path)
            prefix = prefix_of(path)
            view = self.view(entry, prefix, full=True)
            return self.page(template, path, view["title"], entry.slug, entry=view,
                             newer=newer and self.view(newer, prefix, False),
                             older=older and self.view(older, prefix, False))
        return produce

    def listing(self, base: str, template: str, posts: list, label: str, extra: dict,
                only: set | None = None) -> list[Output]:
        """The pages of one list of posts (all, or only those numbered in only)."""
        per = self.site.posts_per_page
        chunks = [posts[i:i + per] for i in range(0, len(posts), per)] or [[]]
        out = []
        tag = extra.get("tag")
        self.chunks["" if tag is None else tag.slug] = len(chunks)
        for n, chunk in enumerate(chunks, 1):
            if only is not None and n not in only:
                continue
            path = file_of(base if n == 1 else f"{base}page/{n}/")
            key = self.key(self.page_key, template, tag and (tag.name, len(tag.posts)), n, len(chunks),
                           tuple([(p.card, p.tag_key) for p in chunk]))
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
        key = digest(self.page_key, digest_text("\n".join([p.dated for p in posts])),
                     [p.link for p in self.model.pages], [(t.name, len(t.posts)) for t in self.model.tags])

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
        key = self.key(self.site_key, tuple([(p.card, p.digest, p.tag_key) for p in latest]))
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
        # made now (its lines are kept by the entries): its key is the digest of what it says
        lines = ['<?xml version="1.0" encoding="UTF-8"?>',
                 '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">',
                 f"<url><loc>{xml_escape(self.absolute(''))}</loc></url>"]
        line = self._sitemap_line
        lines += [e.sitemap_line or line(e) for e in self.model.posts]
        lines += [e.sitemap_line or line(e) for e in self.model.pages]
        lines.append(f"<url><loc>{xml_escape(self.absolute('archive/'))}</loc></url>")
        for t in self.model.tags:
            lines.append(f"<url><loc>{xml_escape(self.absolute(t.path))}</loc></url>")
        lines.append("</urlset>\n")
        data = "\n".join(lines).encode("utf-8")
        return Output("sitemap.xml", digest(self.site_key, hashlib.blake2b(data, digest_size=16).hexdigest()),
                      lambda: data, "sitemap.xml")

    def _sitemap_line(self, e: Entry) -> str:
        # kept by the entry while its row is the same: the whole sitemap is written again after any edit
        e.sitemap_line = (f"<url><loc>{xml_escape(self.absolute(e.path))}</loc>"
                          f"<lastmod>{(e.updated_at or e.published_at)[:10]}</lastmod></url>")
        return e.sitemap_line

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
            out.append(Output(path, self.key(path), lambda src=src: src.read_bytes(), f"theme file {rel}"))
        return out

    def media_files(self) -> list[Output]:
        names = set().union(*[e.media for e in self.model.entries if e.media])
        out = []
        for name in sorted(names):
            if self.media.size(name) is None:
                continue  # reported as a warning by the pipeline
            src = self.media.folder / name
            out.append(Output(f"media/{name}", self.key(name), lambda src=src: src.read_bytes(), f"media {name}"))
            for width, path in self.media.variants(name):
                out.append(Output(path, self.key(name, width, self.build.image_quality),
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
