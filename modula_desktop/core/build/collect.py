"""Step 1, collect: the published entries of the site as the build sees them (drafts never enter).

An incremental build does not read every body: the manifest keeps each entry's body digest and media
with the (updated_at, body length) it was computed for, and only entries whose pair changed are read
again. Bodies are loaded when a page that shows them is rendered."""
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
                 "digest", "card", "media", "body_digest", "_body", "_loader")

    def __init__(self, id, type, title, slug, fields, published_at, updated_at, loader):
        self.id, self.type, self.title, self.slug = id, type, title, slug
        self.fields, self.published_at, self.updated_at = fields, published_at, updated_at
        self.path = ""  # site path of its page: "my-post/" or "2026/05/my-post.html"
        self.tags: list[Tag] = []
        self.digest = self.card = self.body_digest = ""
        self.media: list = []
        self._body = None
        self._loader = loader

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


def collect(db, permalink_pattern: str, cache: dict | None = None, reads=None) -> SiteModel:
    """Read every published entry; with cache (the last build's), read again only the bodies that changed.

    reads(entry) -> bool: the plugins' read hooks (build/hooks.py), given only when one is approved; False
    leaves the entry out. They may change what an entry shows, so every body is read and no cache is
    kept for the next build (it must not take a filtered digest for the stored body)."""
    cache = {} if reads is not None else (cache or {})
    with_body = not cache
    body_column = "body" if with_body else "NULL"
    rows = db.execute_sql(
        f"SELECT id, type, title, slug, fields, published_at, updated_at, length(body), {body_column} "
        f"FROM content WHERE status = 'published' AND deleted_at IS NULL").fetchall()  # not the Trash

    def load(id):
        row = db.execute_sql("SELECT body FROM content WHERE id = ?", (id,)).fetchone()
        return (row[0] or "") if row else ""

    entries, tags, stale, new_cache = [], {}, [], {}
    for id, type, title, slug, fields_json, published_at, updated_at, length, body in rows:
        fields = _fields(fields_json) if fields_json else {}
        e = Entry(id, type, title or slug, slug, fields, published_at or "", updated_at or "", load)
        if reads is not None:
            e._body = body or ""
            if not reads(e):
                continue
            fields = e.fields
        e.path = permalink(permalink_pattern, e)
        if type == "post":
            for name in tag_names(fields):
                s = _tag_slug(name)
                tag = tags.get(s)
                if tag is None:
                    tag = tags[s] = Tag(name, s)
                e.tags.append(tag)
        known = cache.get(id)
        if with_body and e._body is None:  # (reads set it already, perhaps filtered)
            e._body = body or ""
        if known is not None and known[0] == e.updated_at and known[1] == length:
            e.body_digest, e.media = known[2], known[3]
        else:
            stale.append(e)
        e.digest = fields_json or ""  # completed below, once the body digest is known
        new_cache[id] = length
        entries.append(e)
    _read_bodies(db, stale)
    for e in entries:
        if not e.body_digest:
            body = e.body
            e.body_digest = hashlib.blake2b(body.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
            e.media = sorted(set(MEDIA_REF.findall(body))) if "/media/" in body else []
        new_cache[e.id] = [e.updated_at, new_cache[e.id], e.body_digest, e.media]
        tag_list = [t.name for t in e.tags]
        e.digest = digest(e.type, e.title, e.slug, e.body_digest, e.digest, e.published_at, e.path)
        e.card = digest(e.title, e.path, e.published_at, e.explicit_excerpt or e.body_digest, tag_list)
    posts = sorted((e for e in entries if e.type == "post"), key=lambda e: (e.published_at, e.id), reverse=True)
    pages = sorted((e for e in entries if e.type == "page"), key=lambda e: (e.title.lower(), e.slug))
    for post in posts:
        for tag in post.tags:
            tag.posts.append(post)
    return SiteModel(entries, posts, pages, sorted(tags.values(), key=lambda t: t.name.lower()),
                     new_cache if reads is None else {})


def _read_bodies(db, entries: list):
    pending = [e for e in entries if e._body is None]
    for start in range(0, len(pending), _CHUNK):
        chunk = {e.id: e for e in pending[start:start + _CHUNK]}
        marks = ",".join("?" * len(chunk))
        for id, body in db.execute_sql(f"SELECT id, body FROM content WHERE id IN ({marks})", list(chunk)):
            chunk[id]._body = body or ""
