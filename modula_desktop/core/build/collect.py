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
import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache

from ..content import slugify

log = logging.getLogger(__name__)
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
        self.row = None  # the row it was read from
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
    journal: int | None = None  # the journal's last row when it was read (storage.add_content_changes)


_COLUMNS = "id, type, title, slug, fields, published_at, updated_at, length(body)"
_PUBLISHED = "status = 'published' AND deleted_at IS NULL"  # not the Trash
_JOURNAL_KEEP = 10_000  # journal rows kept when it is pruned (storage.add_content_changes)


def collect(db, permalink_pattern: str, cache: dict | None = None, last: SiteModel | None = None,
            reads=None) -> SiteModel:
    """Read every published entry; with cache (the last build's manifest), read again only the bodies that
    changed; with last (the last build's model in this process, for the same permalink pattern), read
    only the entries the journal says were written since (every row when it cannot say), reuse every
    entry whose row is the same, and the order and tags when no edit moved an entry or changed its tags.
    last is not changed (its tags are: they are this model's too).

    reads(entry) -> bool: the plugins' read hooks (build/hooks.py), given only when one is approved; False
    leaves the entry out. They may change what an entry shows, so every entry and body is read, nothing
    of the last build is reused and no cache is kept for the next (it must not take a filtered digest for
    the stored body)."""
    if reads is not None:
        cache, last = {}, None
    cache = cache or {}
    known = last.by_id if last is not None else {}
    with_body = not cache

    def load(id):
        row = db.execute_sql("SELECT body FROM content WHERE id = ?", (id,)).fetchone()
        return (row[0] or "") if row else ""

    stale, fresh = [], []

    def read(row) -> Entry:
        e = known.get(row[0])
        if e is not None and e.row == row[:8]:
            return e
        e = _entry(row, permalink_pattern, load, with_body)
        if reads is not None:
            if not reads(e):
                return None
            _refilter(e, permalink_pattern)
        cached = cache.get(e.id)
        if cached is not None and cached[0] == e.updated_at and cached[1] == e.length:
            e.body_digest, e.media = cached[2], cached[3]
        else:
            stale.append(e)
        fresh.append(e)
        return e

    with db.atomic():  # one snapshot: the journal's position and the rows agree
        position = _journal_position(db)
        changed = _changed_since(db, last.journal, position, len(known)) if last is not None else None
        if changed is None:
            rows = db.execute_sql(f"SELECT {_COLUMNS}{', body' if with_body else ''} FROM content "
                                  f"WHERE {_PUBLISHED} ORDER BY rowid").fetchall()
        else:
            rows = []
            for start in range(0, len(changed), _CHUNK):
                chunk = changed[start:start + _CHUNK]
                rows += db.execute_sql(f"SELECT {_COLUMNS} FROM content WHERE {_PUBLISHED} AND id IN "
                                       f"({','.join('?' * len(chunk))})", chunk).fetchall()
    if changed is None:
        entries = [e for e in map(read, rows) if e is not None]
    else:
        found = {row[0]: read(row) for row in rows}
        entries = list(last.entries)
        gone = set()
        for id in changed:
            old, new = known.get(id), found.get(id)
            if old is None:
                if new is not None:
                    entries.append(new)
            elif new is None:
                gone.add(id)
            elif new is not old:
                entries[entries.index(old)] = new
        if gone:
            entries = [e for e in entries if e.id not in gone]
    new_cache = dict(cache) if last is not None else {}
    for e in entries:
        # with read hooks, the bodies as they left them: never reloaded from the database
        e._loader = load if reads is None else (lambda id, e=e: e._body or "")
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
    model = _in_place(last, entries, fresh, new_cache, by_id, position) if last is not None else None
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
    return SiteModel(entries, posts, pages, sorted(tags.values(), key=lambda t: t.name.lower()),
                     new_cache if reads is None else {}, by_id, fresh, position)


def _refilter(e: Entry, permalink_pattern: str):
    """What a read hook changed in e (title, body, fields): the derived values follow."""
    e.fields_json = json.dumps(e.fields, sort_keys=True, ensure_ascii=False)
    e.path = permalink(permalink_pattern, e)
    e.file = e.path + "index.html" if e.path == "" or e.path.endswith("/") else e.path
    if e.type == "post":
        e.tag_names = tuple((name, _tag_slug(name)) for name in tag_names(e.fields))
        e.own_tags = tuple((name, f"tag/{s}/") for name, s in e.tag_names)
    e.length = len(e._body or "")


def _journal_position(db) -> int | None:
    """The last journal row written (0: none yet); None without a journal."""
    try:
        row = db.execute_sql("SELECT seq FROM sqlite_sequence WHERE name = 'content_change'").fetchone()
        db.execute_sql("SELECT 1 FROM content_change LIMIT 1").fetchone()
    except Exception:  # noqa: BLE001 - a database without the journal: every row is read
        return None
    return row[0] if row else 0


def _changed_since(db, since: int | None, position: int | None, entries: int) -> list | None:
    """The ids written after journal row since; None when the journal cannot say (pruned past it, or
    another database) or so many changed that reading every row is as quick."""
    if since is None or position is None or position < since:
        return None
    if position == since:
        return []
    low = db.execute_sql("SELECT min(seq) FROM content_change").fetchone()[0]
    if low is None or low > since + 1:
        return None
    ids = [r[0] for r in db.execute_sql("SELECT DISTINCT content_id FROM content_change WHERE seq > ?",
                                        (since,))]
    return ids if len(ids) <= max(50, entries // 50) else None


def prune_journal(db, position: int | None):
    """Keep the journal short: a build of another process that is further behind reads every row."""
    if not position:
        return
    try:
        low = db.execute_sql("SELECT min(seq) FROM content_change").fetchone()[0]
        if low is not None and position - low > 2 * _JOURNAL_KEEP:
            with db.atomic():
                db.execute_sql("DELETE FROM content_change WHERE seq <= ?", (position - _JOURNAL_KEEP,))
    except Exception:  # noqa: BLE001 - busy: pruned by a later build
        log.debug("journal not pruned", exc_info=True)


def _entry(row, permalink_pattern: str, load, with_body: bool) -> Entry:
    id, type, title, slug, fields_json, published_at, updated_at, length = row[:8]
    fields = _fields(fields_json) if fields_json else {}
    e = Entry(id, type, title or slug, slug, fields, published_at or "", updated_at or "", load)
    e.row = row[:8]
    e.fields_json, e.length = fields_json or "", length or 0
    e.path = permalink(permalink_pattern, e)
    e.file = e.path + "index.html" if e.path == "" or e.path.endswith("/") else e.path
    if type == "post":
        e.tag_names = tuple((name, _tag_slug(name)) for name in tag_names(fields))
        e.own_tags = tuple((name, f"tag/{s}/") for name, s in e.tag_names)
    if with_body:
        e._body = row[8] or ""
    return e


def _in_place(last: SiteModel, entries, fresh, cache, by_id, position) -> SiteModel | None:
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
    return SiteModel(entries, posts, pages, last.tags, cache, by_id, fresh, position)


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
