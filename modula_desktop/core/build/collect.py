"""Step 1, collect: the published entries of the site as the build sees them (drafts never enter).

An incremental build does not read every body: the manifest keeps each entry's body digest and media
with the (updated_at, body length) it was computed for, and only entries whose pair changed are read
again. Bodies are loaded when a page that shows them is rendered.

In a process that built the same output before (the window), collect() is also given the last build's
Entry objects: an entry whose row (every column read, the body's length included) is the same keeps its
path, digests and tag names, so only the edited entries are worked out again."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache

from ..content import slugify

MEDIA_REF = re.compile(r"/media/([0-9a-f]{16,64}\.(?:png|jpe?g|gif|webp))")
_CHUNK = 500  # ids per "IN (...)" query, below SQLite's variable limit


def digest(*parts) -> str:
    return hashlib.blake2b(repr(parts).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def digest_text(text: str) -> str:
    """The digest of a long text (the repr of 10,000 tuples costs more than joining their kept reprs)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@lru_cache(maxsize=65536)
def _fields(text: str):
    # shared between builds of one process (the window's): templates only read them
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@lru_cache(maxsize=4096)
def _tag_slug(name: str) -> str:
    return slugify(name)


@dataclass
class Tag:
    name: str
    slug: str
    posts: list = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"tag/{self.slug}/"


class Entry:
    __slots__ = ("id", "type", "title", "slug", "fields", "published_at", "updated_at", "path", "tags",
                 "digest", "card", "media", "body_digest", "_body", "_loader",
                 "row", "fields_json", "length", "file", "tag_names", "own_tags", "tag_key", "link", "dated", "sitemap_line")

    def __init__(self, id, type, title, slug, fields, published_at, updated_at, loader):
        self.id, self.type, self.title, self.slug = id, type, title, slug
        self.fields, self.published_at, self.updated_at = fields, published_at, updated_at
        self.path = ""  # site path of its page: "my-post/" or "2026/05/my-post.html"
        self.tags: list[Tag] = []
        self.digest = self.card = self.body_digest = ""
        self.media: list = []
        self._body = None
        self._loader = loader
        # worked out once per row, and kept by the next build of the same process while the row is the same
        self.row = None  # the signature of the row it was read from (collect._SIGNATURE)
        self.fields_json, self.length = "", 0  # its fields as stored, its body's length
        self.file = ""  # the output file of its page, "my-post/index.html"
        self.tag_names: tuple = ()  # (name, slug) of each tag, as this entry spells it
        self.own_tags: tuple = ()  # (name, tag page path) of each tag, as this entry spells it
        self.tag_key: tuple = ()  # the same as the pages show them (a tag's name is its newest post's)
        self.link: tuple = ()  # (title, path): what a neighbour's or a list's link shows
        self.dated = ""  # repr((title, path, date)): an archive line, joined with the others for its key
        self.sitemap_line = ""  # that line (render.py; for the settings of the renderer's memo)

    @property
    def body(self) -> str:
        if self._body is None:
            self._body = self._loader(self.id)
        return self._body

    @property
    def date(self) -> str:
        return (self.published_at or self.updated_at or "")[:10]

    @property
    def explicit_excerpt(self) -> str:
        value = self.fields.get("excerpt")
        return value.strip() if isinstance(value, str) else ""


def tag_names(fields: dict) -> list[str]:
    tags = fields.get("tags") if isinstance(fields, dict) else None
    if isinstance(tags, str):
        tags = tags.split(",")
    if not isinstance(tags, list):
        return []
    seen, out = set(), []
    for t in tags:
        if isinstance(t, str) and t.strip():
            s = _tag_slug(t.strip())
            if s not in seen:
                seen.add(s)
                out.append(t.strip())
    return out


def permalink(pattern: str, entry: Entry) -> str:
    if entry.type == "page":
        return f"{entry.slug}/"
    date = entry.published_at or entry.updated_at or "0000-00-00"
    path = (pattern.replace("<slug>", entry.slug).replace("<year>", date[0:4])
            .replace("<month>", date[5:7]).replace("<day>", date[8:10]))
    return path.lstrip("/")


@dataclass
class SiteModel:
    entries: list  # every published entry
    posts: list  # newest first
    pages: list  # by title
    tags: list  # Tag, by name
    cache: dict  # id -> [updated_at, body length, body digest, media]: for the next build's manifest
    by_id: dict = field(default_factory=dict)  # id -> Entry
    fresh: list = field(default_factory=list)  # the entries read again (not the last build's, unchanged)
    rows: list = field(default_factory=list)  # (signature,) of each row, for the next build to compare


_COLUMNS = "id, type, title, slug, fields, published_at, updated_at, length(body)"
# every column read, in one string (slugs, types, dates and JSON hold no U+001F): a warm build fetches
# only this, and the rows whose signature changed; fetching 10,000 strings costs half as much as rows
_SIGNATURE = ("id || char(31) || type || char(31) || ifnull(title, '') || char(31) || slug || char(31) || "
              "ifnull(fields, '') || char(31) || ifnull(published_at, '') || char(31) || "
              "ifnull(updated_at, '') || char(31) || ifnull(length(body), 0)")
_PUBLISHED = "FROM content WHERE status = 'published' AND deleted_at IS NULL"  # not the Trash
_SLICE = 256  # signatures compared at once with the last build's


def collect(db, permalink_pattern: str, cache: dict | None = None, last: SiteModel | None = None) -> SiteModel:
    """Read every published entry; with cache (the last build's manifest), read again only the bodies that
    changed; with last (the last build's model in this process, for the same permalink pattern), reuse
    every entry whose row is the same, and the order and tags when no edit moved an entry or changed its
    tags. last is not changed (its tags are: they are this model's too)."""
    cache = cache or {}
    known = last.by_id if last is not None else {}
    with_body = not cache

    def load(id):
        row = db.execute_sql("SELECT body FROM content WHERE id = ?", (id,)).fetchone()
        return (row[0] or "") if row else ""

    stale, fresh = [], []

    def read(row) -> Entry:
        e = _entry(row, permalink_pattern, load, with_body)
        cached = cache.get(e.id)
        if cached is not None and cached[0] == e.updated_at and cached[1] == e.length:
            e.body_digest, e.media = cached[2], cached[3]
        else:
            stale.append(e)
        fresh.append(e)
        return e

    def rows_of(ids: list) -> dict:
        found = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            found.update((r[1], r) for r in db.execute_sql(
                f"SELECT {_SIGNATURE}, {_COLUMNS} FROM content WHERE id IN ({','.join('?' * len(chunk))})",
                chunk))
        return found

    if last is None:
        rows = db.execute_sql(f"SELECT {_SIGNATURE}, {_COLUMNS}{', body' if with_body else ''} {_PUBLISHED} "
                              f"ORDER BY rowid").fetchall()
        entries = [read(row) for row in rows]
        signatures = [(row[0],) for row in rows]
    else:
        signatures = db.execute_sql(f"SELECT {_SIGNATURE} {_PUBLISHED} ORDER BY rowid").fetchall()
        old = last.rows
        if len(signatures) == len(old):
            # the usual rebuild: a few rows changed in place; slices of signatures are compared in C
            entries = list(last.entries)
            changed = []
            for start in range(0, len(signatures), _SLICE):
                if signatures[start:start + _SLICE] != old[start:start + _SLICE]:
                    changed += [i for i in range(start, min(start + _SLICE, len(signatures)))
                                if signatures[i] != old[i]]
        else:
            entries = [known.get(sig.partition("\x1f")[0]) for (sig,) in signatures]
            changed = [i for i, e in enumerate(entries) if e is None or e.row != signatures[i][0]]
        full = rows_of([signatures[i][0].partition("\x1f")[0] for i in changed])
        for i in changed:
            row = full.get(signatures[i][0].partition("\x1f")[0])
            entries[i] = read(row) if row is not None else None  # None: deleted meanwhile
            if row is not None and row[0] != signatures[i][0]:
                signatures[i] = (row[0],)  # changed meanwhile: the next build compares with what was read
        if len(full) != len(changed):
            kept = [i for i, e in enumerate(entries) if e is not None]
            entries, signatures = [entries[i] for i in kept], [signatures[i] for i in kept]
    new_cache = dict(cache) if last is not None else {}
    for e in entries:
        e._loader = load
    _read_bodies(db, stale)
    for e in fresh:
        if not e.body_digest:
            body = e.body
            e.body_digest = hashlib.blake2b(body.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
            e.media = sorted(set(MEDIA_REF.findall(body))) if "/media/" in body else []
        new_cache[e.id] = [e.updated_at, e.length, e.body_digest, e.media]
        e.digest = digest(e.type, e.title, e.slug, e.body_digest, e.fields_json, e.published_at, e.path)
        # what a list shows of it, but its tags (in tag_key: their names depend on other entries)
        e.card = digest(e.title, e.path, e.published_at, e.explicit_excerpt or e.body_digest)
        e.link = (e.title, e.path)
        e.dated = repr((e.title, e.path, e.date))
    if last is not None:
        by_id = dict(known)
        by_id.update((e.id, e) for e in fresh)
        if len(by_id) != len(entries):  # some went
            by_id = {e.id: e for e in entries}
            for id in [id for id in new_cache if id not in by_id]:
                del new_cache[id]
    else:
        by_id = {e.id: e for e in entries}
    model = _in_place(last, entries, fresh, new_cache, by_id, signatures) if last is not None else None
    if model is not None:
        return model
    posts = sorted((e for e in entries if e.type == "post"), key=_newest_first, reverse=True)
    pages = sorted((e for e in entries if e.type == "page"), key=_by_title)
    tags: dict[str, Tag] = {}
    for post in posts:
        post.tags = []
        spelled_otherwise = False
        for name, s in post.tag_names:
            tag = tags.get(s)
            if tag is None:
                tag = tags[s] = Tag(name, s)
            elif tag.name != name:
                spelled_otherwise = True
            tag.posts.append(post)
            post.tags.append(tag)
        post.tag_key = tuple((t.name, t.path) for t in post.tags) if spelled_otherwise else post.own_tags
    return SiteModel(entries, posts, pages, sorted(tags.values(), key=lambda t: t.name.lower()), new_cache,
                     by_id, fresh, signatures)


def _entry(row, permalink_pattern: str, load, with_body: bool) -> Entry:
    signature, id, type, title, slug, fields_json, published_at, updated_at, length = row[:9]
    fields = _fields(fields_json) if fields_json else {}
    e = Entry(id, type, title or slug, slug, fields, published_at or "", updated_at or "", load)
    e.row = signature
    e.fields_json, e.length = fields_json or "", length or 0
    e.path = permalink(permalink_pattern, e)
    e.file = e.path + "index.html" if e.path == "" or e.path.endswith("/") else e.path
    if type == "post":
        e.tag_names = tuple((name, _tag_slug(name)) for name in tag_names(fields))
        e.own_tags = tuple((name, f"tag/{s}/") for name, s in e.tag_names)
    if with_body:
        e._body = row[9] or ""
    return e


def _in_place(last: SiteModel, entries, fresh, cache, by_id, rows) -> SiteModel | None:
    """The model when every changed entry kept its place in the lists and its tags: the last build's
    order with the changed entries swapped in. None otherwise (collect sorts again)."""
    if len(by_id) != len(last.by_id):
        return None
    swaps = []
    for e in fresh:
        old = last.by_id.get(e.id)
        if old is None or old.type != e.type or old.tag_names != e.tag_names:
            return None
        if e.type == "post" and _newest_first(old) != _newest_first(e):
            return None
        if e.type == "page" and _by_title(old) != _by_title(e):
            return None
        swaps.append((old, e))
    posts, pages = list(last.posts), list(last.pages)
    for old, e in swaps:
        if e.type == "post":
            posts[posts.index(old)] = e
            e.tags = old.tags
            for tag in e.tags:
                tag.posts[tag.posts.index(old)] = e
            e.tag_key = tuple((t.name, t.path) for t in e.tags)
        else:
            pages[pages.index(old)] = e
    return SiteModel(entries, posts, pages, last.tags, cache, by_id, fresh, rows)


def _newest_first(e: Entry):
    return e.published_at, e.id


def _by_title(e: Entry):
    return e.title.lower(), e.slug


def _read_bodies(db, entries: list):
    pending = [e for e in entries if e._body is None]
    for start in range(0, len(pending), _CHUNK):
        chunk = {e.id: e for e in pending[start:start + _CHUNK]}
        marks = ",".join("?" * len(chunk))
        for id, body in db.execute_sql(f"SELECT id, body FROM content WHERE id IN ({marks})", list(chunk)):
            chunk[id]._body = body or ""
