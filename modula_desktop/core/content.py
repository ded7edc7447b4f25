"""The content service: the one way the GUI, the HTTP admin API and tests read and change pages and posts.

Every change runs in one SQLite transaction on the caller's thread, together with the before-hooks of
its events (SPEC 3.6), writes the entry and a revision, commits, tells the listeners, and queues the
after-hooks.

Which events an operation fires (each at most once per operation):

=========================  ==================================================================
operation                  events
=========================  ==================================================================
``create``                 create; plus publish when the new entry is published
``update``, ``restore``    update; plus publish/unpublish when the change flips the status
``publish``                publish only (not update); nothing when already published
``unpublish``              unpublish only; nothing when already a draft
``delete``                 delete (the entry moves to the Trash)
``restore_from_trash``     create; plus publish when the entry comes back published
``purge``, ``empty_trash`` nothing: the plugins heard of the deletion when it went to the Trash
=========================  ==================================================================

The Trash: ``delete`` moves an entry there (``deleted_at`` set) instead of removing it. A trashed entry
is invisible to every read (get, list, count, get_by_slug, and so /preview/) and cannot be changed; its
revisions are kept. Its slug is freed at once, so a new entry may take it; restoring gives the slug
back when it is still free and otherwise the next free variant ("about-2"). For plugins a restore is
the entry appearing again, so it runs the create hooks (a before_create may refuse it). Removing an
entry from the Trash for good fires nothing: the delete hooks already ran when it was moved there.

Each revision records its ``source`` (who saved it: "editor" for the window, "api" for the admin
API, "app" when the caller does not say) and ``changed_by``, the plugins whose before-hooks changed
what was saved.

So a plugin that guards publishing (``before_publish``) sees every way an entry can become published.
Before-hooks run in that order (the primary event first, so its filters can still flip the status);
the after-hooks in the same order after commit. A publish/unpublish hook may not change ``status``.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import unicodedata
from contextlib import contextmanager
from typing import Callable

from peewee import IntegrityError, OperationalError, fn
from ulid import ULID

from .errors import NotFound, ValidationError
from .plugins.runtime import nesting
from .plugins.runtime.dispatch import HookDispatcher
from .reads import read_entries, read_entry
from .retention import cutoffs, to_prune
from .search import fts_query, snippet, wanted_words
from .settings import ContentSettings, PluginSettings
from .storage import FTS_TABLE, Content, Revision, utc_now

log = logging.getLogger(__name__)

FIELDS = ("id", "type", "title", "slug", "body", "status", "fields", "published_at", "created_at", "updated_at")
TRASH_FIELDS = FIELDS + ("deleted_at",)
EDITABLE = ("type", "title", "slug", "body", "status", "fields")
READ_ONLY = ("id", "published_at", "created_at", "updated_at")
RESTORED = ("type", "title", "slug", "body", "fields")  # a restore keeps the current status
TYPES = ("page", "post")
STATUSES = ("draft", "published")
DRAFT, PUBLISHED = STATUSES

SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_SLUG = 100
MAX_AUTO_SLUG = 80  # leaves room for a "-N" suffix
MAX_TITLE = 500
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_SOURCE = 40
DEFAULT_SOURCE = "app"
SORT_KEYS = ("title", "type", "status", "updated_at")  # the list's columns (list_sorted)
LIST_FIELDS = ("id", "type", "title", "slug", "status", "published_at", "created_at", "updated_at")

Listener = Callable[[str, dict], None]


def slugify(text: str) -> str:
    """Lowercase ASCII words joined by hyphens ("Crème brûlée, 2 ways!" -> "creme-brulee-2-ways")."""
    ascii_text = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if len(slug) > MAX_AUTO_SLUG:
        slug = slug[:MAX_AUTO_SLUG].rsplit("-", 1)[0] if "-" in slug[:MAX_AUTO_SLUG] else slug[:MAX_AUTO_SLUG]
    return slug or "untitled"


def _entry(row: Content) -> dict:
    return {name: getattr(row, name) for name in FIELDS}


def _trashed(row: Content) -> dict:
    entry = {name: getattr(row, name) for name in TRASH_FIELDS}
    entry["slug"] = row.deleted_slug or row.slug
    return entry


def _revision(row: Revision) -> dict:
    return {"number": row.number, "type": row.type, "title": row.title, "slug": row.slug, "body": row.body,
            "status": row.status, "fields": row.fields, "created_at": row.created_at,
            "source": row.source or "", "changed_by": list(row.changed_by or [])}


def _source(source) -> str:
    if not isinstance(source, str) or not source.strip() or len(source) > MAX_SOURCE:
        raise ValidationError(f"The source of a change must be a short text (at most {MAX_SOURCE} characters).")
    return source.strip()


SORT_SQL = {"updated_at": "updated_at", "title": "title COLLATE NOCASE", "type": "type", "status": "status"}
TITLE_WEIGHT = 5.0  # bm25: a word in the title weighs five in the body


def _check_limit(limit):
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be a whole number from 1 to {MAX_LIMIT}.")


def _check_filters(type, status):
    if type is not None and type not in TYPES:
        raise ValidationError(f"type must be one of {', '.join(TYPES)}, not {type!r}.")
    if status is not None and status not in STATUSES:
        raise ValidationError(f"status must be one of {', '.join(STATUSES)}, not {status!r}.")


def _live_where(table: str, type, status) -> tuple[str, list]:
    where, params = [f"{table}.deleted_at IS NULL"], []
    if type is not None:
        where.append(f"{table}.type = ?")
        params.append(type)
    if status is not None:
        where.append(f"{table}.status = ?")
        params.append(status)
    return " AND ".join(where), params


def _entry_of(row: tuple) -> dict:
    entry = dict(zip(FIELDS, row))
    entry["fields"] = json.loads(entry["fields"]) if entry["fields"] else {}
    return entry


LIVE = Content.deleted_at.is_null()
IN_TRASH = Content.deleted_at.is_null(False)


class ContentService:
    """Pages and posts with revisions, firing the plugins' content hooks. Thread-safe."""

    def __init__(self, db, plugins=None, settings: PluginSettings | None = None, logbook=None, metrics=None,
                 content_settings: ContentSettings | None = None):
        self.db = db
        self.content_settings = content_settings or ContentSettings()
        self.hooks = HookDispatcher(plugins, settings, logbook, metrics, editable=EDITABLE)
        self._listeners: list[Listener] = []
        # per thread: the listener calls and after-hooks of changes made inside an operation's
        # transaction (a plugin's hook writing content, core.update's rows), held until it commits
        self._local = threading.local()

    # ---- listeners -------------------------------------------------------------------------
    def add_listener(self, fn: Listener):
        """fn(event, entry) runs after each committed change, on the thread that made it; event is
        create, update, delete, publish or unpublish (an update that also publishes reports update)."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener):
        try:
            self._listeners.remove(fn)
        except ValueError:
            pass

    def _notify(self, event: str, entry: dict):
        for listener in list(self._listeners):
            try:
                listener(event, dict(entry))
            except Exception:  # noqa: BLE001 - a broken listener must not undo a saved change
                log.exception("content listener failed on %s of %s", event, entry.get("id"))

    # ---- reads -----------------------------------------------------------------------------
    def get(self, id: str) -> dict:
        return _entry(self._row(id))

    def get_by_slug(self, slug: str) -> dict:
        row = Content.get_or_none((Content.slug == slug) & LIVE) if isinstance(slug, str) else None
        if row is None:
            raise NotFound(f"There is no entry with the slug '{slug}'.")
        return _entry(row)

    def list(self, type: str | None = None, status: str | None = None, search: str | None = None,
             limit: int = DEFAULT_LIMIT, offset: int = 0) -> list[dict]:
        """Entries, most recently updated first. search: words of the title or body (see core/search.py)."""
        _check_limit(limit)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValidationError("offset must be a whole number of at least 0.")
        sql, params = self._list_sql(FIELDS, type, status, search, "updated_at", True, None, limit, offset)
        return [_entry_of(row) for row in self._rows(sql, params)]

    def count(self, type: str | None = None, status: str | None = None, search: str | None = None) -> int:
        _check_filters(type, status)
        where, params = _live_where("content", type, status)
        if search:
            match = fts_query(search)
            if match is None:
                return 0
            if type is None and status is None:  # the index holds live entries only: no join needed
                return self._rows(f"SELECT COUNT(*) FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ?", [match])[0][0]
            sql = (f"SELECT COUNT(*) FROM {FTS_TABLE} JOIN content ON content.rowid = {FTS_TABLE}.rowid "
                   f"WHERE {FTS_TABLE} MATCH ? AND {where}")
            params = [match, *params]
        else:
            sql = f"SELECT COUNT(*) FROM content WHERE {where}"
        return self._rows(sql, params)[0][0]

    def list_sorted(self, type: str | None = None, status: str | None = None, search: str | None = None,
                    sort: str = "updated_at", descending: bool = True, limit: int = DEFAULT_LIMIT,
                    after: dict | None = None) -> list[dict]:
        """One page of entries in the order of a list column (title, type, status or updated_at), the id
        breaking ties. after is the last entry of the previous page: keyset paging, so the 50th page costs
        what the first does (an OFFSET walks every row before it). Each order has its index (storage).
        The entries carry LIST_FIELDS only: a list needs no bodies, and reading them would cost the most
        (``snippet`` gives one entry's text around the words searched for)."""
        if sort not in SORT_KEYS:
            raise ValidationError(f"sort must be one of {', '.join(SORT_KEYS)}, not {sort!r}.")
        _check_limit(limit)
        mark = None if after is None else (after.get(sort) or "", after.get("id") or "")
        sql, params = self._list_sql(LIST_FIELDS, type, status, search, sort, descending, mark, limit, 0)
        # the rows straight from the cursor: text columns need none of peewee's per-value conversion,
        # which cost more than the query when a list scrolls through tens of thousands of entries
        return [dict(zip(LIST_FIELDS, row)) for row in self._rows(sql, params)]

    def query_plan(self, type: str | None = None, status: str | None = None, search: str | None = None,
                   sort: str = "updated_at", descending: bool = True, after: bool = False) -> str:
        """SQLite's plan for a list query (EXPLAIN QUERY PLAN, one line): what tests and benchmarks check."""
        # a mark inside the range (in a type or status order, the filter's value or the first one)
        value = {"type": type or TYPES[0], "status": status or STATUSES[0]}.get(sort, "m")
        mark = (value, "z") if after else None
        sql, params = self._list_sql(LIST_FIELDS, type, status, search, sort, descending, mark, DEFAULT_LIMIT, 0)
        return " | ".join(str(row[-1]) for row in self._rows("EXPLAIN QUERY PLAN " + sql, params))

    def search(self, query: str, limit: int = 20, offset: int = 0, type: str | None = None,
               status: str | None = None) -> list[dict]:
        """Entries whose title or body has the words of query, best match first (bm25, a title match
        weighing more than one in the body). Each: id, type, title, slug, status, updated_at, snippet
        (HTML: the text around the matches, escaped, the matches in <mark>) and rank (bm25: lower is a
        better match). Any text is a valid query (core/search.py); one of only punctuation finds nothing."""
        _check_limit(limit)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValidationError("offset must be a whole number of at least 0.")
        _check_filters(type, status)
        match = fts_query(query)
        if match is None:
            return []
        score = f"bm25({FTS_TABLE}, {TITLE_WEIGHT}, 1.0)"
        if type is None and status is None:
            # ranked in the index alone (it holds live entries only): a row read per match, as a join
            # makes, cost more than the ranking for a common word
            ranked = self._rows(f"SELECT rowid, {score} AS score FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ? "
                                "ORDER BY score, rowid LIMIT ? OFFSET ?", [match, limit, offset])
        else:
            where, params = _live_where("c", type, status)
            ranked = self._rows(f"SELECT c.rowid, {score} AS score FROM {FTS_TABLE} JOIN content c "
                                f"ON c.rowid = {FTS_TABLE}.rowid WHERE {FTS_TABLE} MATCH ? AND {where} "
                                "ORDER BY score, c.rowid LIMIT ? OFFSET ?", [match, *params, limit, offset])
        if not ranked:
            return []
        # the page's entries, bodies included (for the snippets), read once each
        rows = {r[0]: r[1:] for r in self._rows(
            "SELECT rowid, id, type, title, slug, status, updated_at, body FROM content "
            f"WHERE rowid IN ({','.join('?' * len(ranked))})", [r[0] for r in ranked])}
        words = wanted_words(query)
        hits = []
        for rowid, rank in ranked:
            r = rows.get(rowid)
            if r is not None:
                hits.append({"id": r[0], "type": r[1], "title": r[2], "slug": r[3], "status": r[4],
                             "updated_at": r[5], "snippet": snippet(r[2], r[6], words), "rank": rank})
        return hits

    def snippet(self, id: str, query: str) -> str:
        """The entry's text around the words of query, as safe HTML (the matches in <mark>); "" when
        the entry is gone or the query has no word."""
        words = wanted_words(query)
        row = Content.get_or_none((Content.id == id) & LIVE) if words and isinstance(id, str) else None
        return snippet(row.title, row.body, words) if row is not None else ""

    def _list_sql(self, columns, type, status, search, sort, descending, mark, limit, offset):
        """The SQL of one page of the list. Without a search: one SELECT per (type, status) group the filters
        leave, each walking its content_live_* index in order, merged by SQLite (UNION ALL with ORDER BY is
        a merge, not a sort). With one: the FTS5 matches, sorted."""
        _check_filters(type, status)
        way = "DESC" if descending else "ASC"
        extra = [mark[0], *mark] if mark is not None else []

        def tail(t: str) -> tuple[str, str]:  # the keyset condition and the order, columns of table t
            key = t + SORT_SQL[sort]
            # the scalar bound lets SQLite seek to the mark (with COLLATE NOCASE the row value alone
            # made it walk the group from its start); the row value then drops the ties before it
            way_ = "<" if descending else ">"
            beyond = (f" AND {key} {way_}= ? AND ({key}, {t}id) {way_} (?, ?)" if mark is not None else "")
            return beyond, f"ORDER BY {key} {way}, {t}id {way} LIMIT ? OFFSET ?"

        if search:
            match = fts_query(search)
            if match is None:
                return "SELECT " + ", ".join(columns) + " FROM content WHERE 0", []
            beyond, order = tail("c.")
            cols = ", ".join(f"c.{c}" for c in columns)
            where, params = _live_where("c", type, status)
            sql = (f"SELECT {cols} FROM {FTS_TABLE} JOIN content c ON c.rowid = {FTS_TABLE}.rowid "
                   f"WHERE {FTS_TABLE} MATCH ? AND {where}{beyond} {order}")
            return sql, [match, *params, *extra, limit, offset]
        beyond, order = tail("")
        cols = ", ".join(columns)
        selects, params = [], []
        for t in (TYPES if type is None else (type,)):
            for st in (STATUSES if status is None else (status,)):
                cond, more = beyond, extra
                if mark is not None and sort in ("type", "status"):
                    # the group's sort value is fixed: it is wholly before the mark, wholly after it, or
                    # continues after the mark's id (a row-value range here would cost a sort step)
                    value = t if sort == "type" else st
                    if value == mark[0]:
                        cond, more = f" AND id {'<' if descending else '>'} ?", [mark[1]]
                    elif (value < mark[0]) == descending:
                        cond, more = "", []
                    else:
                        continue
                selects.append(f"SELECT {cols} FROM content WHERE deleted_at IS NULL AND type = ? AND status = ?"
                               + cond)
                params += [t, st, *more]
        if not selects:
            return "SELECT " + cols + " FROM content WHERE 0", []
        return " UNION ALL ".join(selects) + " " + order, [*params, limit, offset]

    def list_window(self, type: str | None = None, status: str | None = None, search: str | None = None,
                    sort: str = "updated_at", descending: bool = True, limit: int = DEFAULT_LIMIT,
                    after: dict | None = None, skip: int = 0) -> list[dict]:
        """list_sorted from anywhere in the order: skip entries after `after` (or from the top) first. The
        content list reads a block deep in the list from the nearest entry it knows before it, so the skip
        stays short; from the top, 50,000 entries are skipped in a few milliseconds on the list's index."""
        if sort not in SORT_KEYS:
            raise ValidationError(f"sort must be one of {', '.join(SORT_KEYS)}, not {sort!r}.")
        _check_limit(limit)
        if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
            raise ValidationError("skip must be a whole number of at least 0.")
        mark = None if after is None else (after.get(sort) or "", after.get("id") or "")
        sql, params = self._list_sql(LIST_FIELDS, type, status, search, sort, descending, mark, limit, skip)
        return [dict(zip(LIST_FIELDS, row)) for row in self._rows(sql, params)]

    def position(self, id: str, type: str | None = None, status: str | None = None, search: str | None = None,
                 sort: str = "updated_at", descending: bool = True) -> int | None:
        """How many entries come before entry id in that order and filter (its row in the list), or None
        when it is not among them."""
        if sort not in SORT_KEYS:
            raise ValidationError(f"sort must be one of {', '.join(SORT_KEYS)}, not {sort!r}.")
        _check_filters(type, status)
        if not isinstance(id, str):
            return None
        row = self._rows(f"SELECT rowid, {sort}, id, type, status FROM content WHERE id = ? AND deleted_at IS NULL",
                         [id])
        if not row or (type is not None and row[0][3] != type) or (status is not None and row[0][4] != status):
            return None
        rowid, key, own = row[0][0], row[0][1] or "", row[0][2]
        if search:
            match = fts_query(search)
            if match is None or not self._rows(f"SELECT 1 FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ? AND rowid = ?",
                                               [match, rowid]):
                return None
        # the entries before it are those after it in the opposite order
        sql, params = self._list_sql((sort, "id"), type, status, search, sort, not descending, (key, own), -1, 0)
        return self._rows(f"SELECT COUNT(*) FROM ({sql})", params)[0][0]

    def _rows(self, sql: str, params) -> list[tuple]:
        try:
            return self.db.execute_sql(sql, params).fetchall()
        except OperationalError as exc:
            # fts_query quotes every term, so this is our bug, not the author's text: say so once, clearly
            log.error("content query failed: %s (%s; %r)", exc, sql, params)
            raise ValidationError("The search could not be run; the error is in the log.") from None

    # ---- reads with the read hooks (admin API, preview, build: core/reads.py) --------------
    def read(self, id: str, reader) -> tuple[dict, dict]:
        """get() for a reader outside the window: (entry, response headers); raises ReadRefused."""
        return read_entry(self.hooks, self.get(id), reader)

    def read_entry(self, entry: dict, reader) -> tuple[dict, dict]:
        """An entry already looked up (the preview's, after its draft check), through the read hooks."""
        return read_entry(self.hooks, entry, reader)

    def read_list(self, reader, type: str | None = None, status: str | None = None, search: str | None = None,
                  limit: int = DEFAULT_LIMIT, offset: int = 0) -> tuple[list[dict], dict]:
        """list() for a reader outside the window: (entries, response headers); raises ReadRefused."""
        filters = {k: v for k, v in (("type", type), ("status", status), ("search", search)) if v is not None}
        entries = self.list(type=type, status=status, search=search, limit=limit, offset=offset)
        return read_entries(self.hooks, entries, reader, dict(filters, limit=limit, offset=offset))

    def revisions(self, id: str) -> list[dict]:
        """The entry's revisions, newest first: number, type, title, slug, body, status, fields, created_at."""
        self._row(id)
        query = Revision.select().where(Revision.content == id).order_by(Revision.number.desc())
        return [_revision(r) for r in query]

    def _row(self, id) -> Content:
        row = Content.get_or_none((Content.id == id) & LIVE) if isinstance(id, str) else None
        if row is None:
            raise NotFound(f"There is no entry with the id '{id}'.")
        return row

    def _trash_row(self, id) -> Content:
        row = Content.get_or_none((Content.id == id) & IN_TRASH) if isinstance(id, str) else None
        if row is None:
            raise NotFound(f"There is no entry with the id '{id}' in the Trash.")
        return row

    # ---- the Trash -------------------------------------------------------------------------
    def trash(self) -> list[dict]:
        """The entries in the Trash, most recently deleted first (each with its deleted_at)."""
        query = Content.select().where(IN_TRASH).order_by(Content.deleted_at.desc(), Content.id.desc())
        return [_trashed(row) for row in query]

    def trash_count(self) -> int:
        return Content.select().where(IN_TRASH).count()

    def get_trashed(self, id: str) -> dict:
        return _trashed(self._trash_row(id))

    def trashed_revisions(self, id: str) -> list[dict]:
        self._trash_row(id)
        query = Revision.select().where(Revision.content == id).order_by(Revision.number.desc())
        return [_revision(r) for r in query]

    def restore_from_trash(self, id: str, run_hooks: bool = True, source: str = DEFAULT_SOURCE) -> dict:
        """Bring an entry back from the Trash (with the create hooks, as if it appeared again). Its slug
        comes back, or the next free variant when another entry took it meanwhile."""
        source = _source(source)
        with self._transaction():
            row = self._trash_row(id)
            old = _trashed(row)
            del old["deleted_at"]
            now = utc_now()
            entry = dict(old, slug=self._unique_slug(old["slug"], id), updated_at=now)
            # the slug column still holds the stand-in until the write below
            entry, events, changed_by = self._settle(None, entry, {}, auto_slug=False, primary="create",
                                                     run_hooks=run_hooks)
            if entry["status"] == PUBLISHED and old["status"] == PUBLISHED and old["published_at"]:
                entry["published_at"] = old["published_at"]
            Content.update(deleted_at=None, deleted_slug=None).where(Content.id == id).execute()
            self._write(entry, new=False, source=source, changed_by=changed_by)
        return self._committed(events, entry, run_hooks)

    def purge(self, id: str) -> dict:
        """Delete an entry in the Trash and its revisions for good (no hooks: see the module docstring)."""
        with self._transaction():
            entry = _trashed(self._trash_row(id))
            Revision.delete().where(Revision.content == id).execute()
            Content.delete().where(Content.id == id).execute()
        self._notify("purge", entry)
        return entry

    def empty_trash(self) -> int:
        """Delete every entry in the Trash for good. Returns how many."""
        with self._transaction():
            ids = [r.id for r in Content.select(Content.id).where(IN_TRASH)]
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                Revision.delete().where(Revision.content.in_(chunk)).execute()
                Content.delete().where(Content.id.in_(chunk)).execute()
        if ids:
            self._notify("purge", {"ids": ids})
        return len(ids)

    # ---- changes ---------------------------------------------------------------------------
    def create(self, data: dict, run_hooks: bool = True, source: str = DEFAULT_SOURCE) -> dict:
        """Create an entry from data (type, title, slug, body, status, fields; type defaults to page,
        status to draft, an empty slug is made from the title). Returns the entry."""
        values = self._input(data)
        source = _source(source)
        now = utc_now()
        entry = {"id": str(ULID()), "type": "page", "title": "", "slug": "", "body": "", "status": DRAFT,
                 "fields": {}, "published_at": None, "created_at": now, "updated_at": now}
        with self._transaction():
            entry, events, changed_by = self._settle(None, entry, values, auto_slug=not values.get("slug"),
                                                     primary="create", run_hooks=run_hooks)
            self._write(entry, new=True, source=source, changed_by=changed_by)
        return self._committed(events, entry, run_hooks)

    def update(self, id: str, changes: dict, run_hooks: bool = True, source: str = DEFAULT_SOURCE) -> dict:
        """Change some editable fields of an entry (an empty slug is made from the title again)."""
        values = self._input(changes)
        source = _source(source)
        with self._transaction():
            old = _entry(self._row(id))
            entry, events, changed_by = self._settle(old, dict(old, updated_at=utc_now()), values,
                                                     auto_slug="slug" in values and not values["slug"],
                                                     primary="update", run_hooks=run_hooks)
            self._write(entry, new=False, source=source, changed_by=changed_by)
        return self._committed(events, entry, run_hooks)

    def publish(self, id: str, run_hooks: bool = True, source: str = DEFAULT_SOURCE) -> dict:
        return self._set_status(id, PUBLISHED, "publish", run_hooks, source)

    def unpublish(self, id: str, run_hooks: bool = True, source: str = DEFAULT_SOURCE) -> dict:
        return self._set_status(id, DRAFT, "unpublish", run_hooks, source)

    def _set_status(self, id: str, status: str, event: str, run_hooks: bool, source: str) -> dict:
        source = _source(source)
        with self._transaction():
            old = _entry(self._row(id))
            if old["status"] == status:
                return old  # nothing to do, nothing fired
            entry, events, changed_by = self._settle(old, dict(old, updated_at=utc_now()), {"status": status},
                                                     auto_slug=False, primary=event, run_hooks=run_hooks)
            self._write(entry, new=False, source=source, changed_by=changed_by)
        return self._committed(events, entry, run_hooks)

    def delete(self, id: str, run_hooks: bool = True) -> dict:
        """Move an entry to the Trash once the before_delete hooks allowed it (its revisions stay with
        it). Returns the entry as it was."""
        with self._transaction():
            entry = _entry(self._row(id))
            if run_hooks:
                self.hooks.run_before("before_delete", entry)
            # "~" cannot start a valid slug, and the id keeps the stand-in unique
            Content.update(deleted_at=utc_now(), deleted_slug=entry["slug"], slug="~" + id).where(
                Content.id == id).execute()
        return self._committed(["delete"], entry, run_hooks)

    def restore(self, id: str, revision_number: int, run_hooks: bool = True, source: str = DEFAULT_SOURCE) -> dict:
        """Bring back the type, title, slug, body and fields of a revision (the status stays as it is).
        A restore is an update: it fires the update hooks and adds a revision."""
        self._row(id)
        rev = Revision.get_or_none((Revision.content == id) & (Revision.number == revision_number))
        if rev is None:
            raise NotFound(f"The entry has no revision {revision_number}.")
        revision = _revision(rev)
        return self.update(id, {k: revision[k] for k in RESTORED}, run_hooks=run_hooks, source=source)

    # ---- the machinery ---------------------------------------------------------------------
    @contextmanager
    def _transaction(self):
        """One operation's transaction. Inside another one (a plugin's hook writing content) it is a
        savepoint of it, and the listeners and after-hooks of what it changed wait until the outermost
        transaction commits: they never hear of a change that is rolled back after all."""
        local = self._local
        outer = getattr(local, "pending", None)
        if outer is not None:
            mark = len(outer)
            try:
                with self.db.atomic("IMMEDIATE"):
                    yield
            except BaseException:
                del outer[mark:]  # what committed inside this block rolled back with it
                raise
            return
        local.pending = pending = []
        try:
            # IMMEDIATE takes the write lock up front: a deferred transaction that reads, runs hooks and
            # then writes could fail with "database is locked" when another thread committed meanwhile.
            with self.db.atomic("IMMEDIATE"):
                yield
        finally:
            local.pending = None
        for effect in pending:  # committed: the changes made inside it, in the order they were made
            self._fire(*effect)

    def batch(self):
        """Several changes in one transaction: all or none (core.update / core.delete over many entries)."""
        return self._transaction()

    def _settle(self, old: dict | None, entry: dict, values: dict, *, auto_slug: bool, primary: str,
                run_hooks: bool) -> tuple[dict, list[str], list[str]]:
        """Apply values to entry, validate, and run the before-hooks of the operation's events (which may
        change it further). Returns the entry to write, the events fired and the plugins that changed it."""
        # a slug already checked in this operation (or the entry's own stored one) needs no new query
        state = {"auto_slug": auto_slug, "checked": old["slug"] if old is not None else None}

        def apply(current: dict, changes: dict) -> dict:
            changes = self._input(changes, from_hook=True)
            new = dict(current, **changes)
            self._check_values(new)
            if "slug" in changes:
                state["auto_slug"] = not changes["slug"]
            if state["auto_slug"] and (not new["slug"] or new["title"] != current["title"]):
                new["slug"] = self._unique_slug(slugify(new["title"]), new["id"])
            new["published_at"] = self._published_at(old, new)
            if new["slug"] != state["checked"]:
                self._check_slug(new)
                state["checked"] = new["slug"]
            return new

        entry = apply(entry, values)
        events = [primary]
        changed_by: list[str] = []
        if run_hooks:
            locked = ("status",) if primary in ("publish", "unpublish") else ()
            entry = self.hooks.run_before(f"before_{primary}", entry, apply, locked=locked, changed_by=changed_by)
        if primary in ("create", "update"):
            was = old["status"] if old is not None else DRAFT
            if entry["status"] != was:
                flip = "publish" if entry["status"] == PUBLISHED else "unpublish"
                events.append(flip)
                if run_hooks:
                    entry = self.hooks.run_before(f"before_{flip}", entry, apply, locked=("status",),
                                                  changed_by=changed_by)
        return entry, events, changed_by

    @staticmethod
    def _published_at(old: dict | None, new: dict):
        if new["status"] != PUBLISHED:
            return None
        if old is not None and old["status"] == PUBLISHED and old["published_at"]:
            return old["published_at"]
        return new["updated_at"]  # the moment of this operation

    def _write(self, entry: dict, new: bool, source: str = DEFAULT_SOURCE, changed_by=()):
        try:
            if new:
                Content.insert(**entry).execute()
            else:
                Content.update(**{k: entry[k] for k in FIELDS if k != "id"}).where(Content.id == entry["id"]).execute()
        except IntegrityError:
            # two saves raced for the same slug between our check and the write
            raise ValidationError(f"The slug '{entry['slug']}' is already used by another entry.") from None
        number = Revision.select(fn.COALESCE(fn.MAX(Revision.number), 0) + 1).where(Revision.content == entry["id"])
        Revision.insert(id=str(ULID()), content=entry["id"], number=number, type=entry["type"],
                        title=entry["title"], slug=entry["slug"], body=entry["body"], status=entry["status"],
                        fields=entry["fields"], created_at=entry["updated_at"], source=source,
                        changed_by=list(dict.fromkeys(changed_by))).execute()
        if self.content_settings.revision_retention:
            self._thin(entry["id"], *cutoffs(self.content_settings), keep_last=True)

    # ---- revision retention (core/retention.py) ---------------------------------------------
    def _thin(self, id: str, all_from: str, daily_from: str, keep_last: bool) -> int:
        """Delete the entry's revisions the retention policy no longer keeps (inside a transaction)."""
        doomed = self._doomed(id, all_from, daily_from, keep_last)
        self._delete_revisions(doomed)
        return len(doomed)

    def _doomed(self, id: str, all_from: str, daily_from: str, keep_last: bool) -> list[int]:
        old = self.db.execute_sql(
            "SELECT rowid, created_at FROM content_revision WHERE content_id = ? AND created_at < ? "
            "ORDER BY created_at, rowid", (id, all_from)).fetchall()
        if len(old) < 2 and (self.content_settings.revisions_monthly or not old):
            return []  # one old revision is the last of its bucket
        if keep_last:
            keep_last = not self.db.execute_sql(
                "SELECT 1 FROM content_revision WHERE content_id = ? AND created_at >= ? LIMIT 1",
                (id, all_from)).fetchone()
        return to_prune(old, daily_from, self.content_settings.revisions_monthly, keep_last)

    def _delete_revisions(self, rowids: list[int]):
        for start in range(0, len(rowids), 500):
            chunk = rowids[start:start + 500]
            self.db.execute_sql(f"DELETE FROM content_revision WHERE rowid IN ({','.join('?' * len(chunk))})", chunk)

    def prune_revisions(self, now=None, stop=None) -> int:
        """Apply the retention policy to every entry (the Trash's too). What to delete is worked out
        without the write lock; a batch of entries' deletions then take it briefly, so a pass that finds
        nothing never holds it. stop: a threading.Event that ends the pass between batches. Returns how
        many revisions went."""
        s = self.content_settings
        if not s.revision_retention:
            return 0
        all_from, daily_from = cutoffs(s, now)
        # with monthly thinning an entry needs two old revisions before one can go
        having = " HAVING COUNT(*) > 1" if s.revisions_monthly else ""
        ids = [r[0] for r in self.db.execute_sql(
            f"SELECT content_id FROM content_revision WHERE created_at < ? GROUP BY content_id{having}", (all_from,))]
        removed = 0
        for start in range(0, len(ids), s.retention_batch):
            if stop is not None and stop.is_set():
                break
            doomed = [r for id in ids[start:start + s.retention_batch]
                      for r in self._doomed(id, all_from, daily_from, keep_last=True)]
            if doomed:
                # a save since the reads above only adds newer revisions: what was doomed stays doomed
                with self._transaction():
                    self._delete_revisions(doomed)
                removed += len(doomed)
        return removed

    def _committed(self, events: list[str], entry: dict, run_hooks: bool) -> dict:
        effect = (events, dict(entry), run_hooks, nesting.depth())
        pending = getattr(self._local, "pending", None)
        if pending is not None:  # inside another operation's transaction: once that commits
            pending.append(effect)
        else:
            self._fire(*effect)
        return entry

    def _fire(self, events: list[str], entry: dict, run_hooks: bool, depth: int):
        self._notify(events[0], entry)
        if run_hooks:
            with nesting.at_depth(depth):  # the after-hooks carry the depth of the write that caused them
                for event in events:
                    self.hooks.run_after(f"after_{event}", entry)

    # ---- validation ------------------------------------------------------------------------
    @staticmethod
    def _input(data, from_hook: bool = False) -> dict:
        """The editable fields of data, normalised; read-only fields are ignored, unknown ones refused."""
        if not isinstance(data, dict):
            raise ValidationError("The entry must be given as an object of fields.")
        out = {}
        for key, value in data.items():
            if key in EDITABLE:
                out[key] = value
            elif key not in READ_ONLY and not from_hook:
                raise ValidationError(f"Unknown field '{key}' (known: {', '.join(EDITABLE)}).")
        for key in ("title", "body", "slug"):
            if key in out and out[key] is None:
                out[key] = ""
        if "title" in out and isinstance(out["title"], str):
            out["title"] = out["title"].strip()
        if "slug" in out and isinstance(out["slug"], str):
            out["slug"] = out["slug"].strip()
        if "fields" in out and (out["fields"] is None or out["fields"] == []):
            out["fields"] = {}  # an empty Lua table arrives as a list
        return out

    @staticmethod
    def _check_values(entry: dict):
        if entry["type"] not in TYPES:
            raise ValidationError(f"The type must be \"page\" or \"post\", not {entry['type']!r}.")
        if entry["status"] not in STATUSES:
            raise ValidationError(f"The status must be \"draft\" or \"published\", not {entry['status']!r}.")
        for key in ("title", "body", "slug"):
            if not isinstance(entry[key], str):
                raise ValidationError(f"The {key} must be text.")
        if len(entry["title"]) > MAX_TITLE:
            raise ValidationError(f"The title is longer than {MAX_TITLE} characters.")
        fields = entry["fields"]
        if not isinstance(fields, dict):
            raise ValidationError("The custom fields must be an object of names and values.")
        try:
            json.dumps(fields, allow_nan=False)
        except (TypeError, ValueError):
            raise ValidationError("The custom fields must hold only JSON values (text, numbers, true/false, "
                                  "lists and objects).") from None

    @staticmethod
    def _check_slug(entry: dict):
        slug = entry["slug"]
        if len(slug) > MAX_SLUG:
            raise ValidationError(f"The slug is longer than {MAX_SLUG} characters.")
        if not SLUG_RE.match(slug):
            raise ValidationError(f"The slug '{slug}' may contain only lowercase letters, digits and single "
                                  f"hyphens, such as '{slugify(slug)}'.")
        if Content.select().where((Content.slug == slug) & (Content.id != entry["id"]) & LIVE).exists():
            raise ValidationError(f"The slug '{slug}' is already used by another entry.")

    @staticmethod
    def _unique_slug(base: str, own_id: str) -> str:
        # a range of the slug index: [base, base + ".") holds base and every "base-…" ("." follows "-");
        # a LIKE here scanned the whole table on every create
        rows = Content._meta.database.execute_sql(
            "SELECT slug FROM content WHERE slug >= ? AND slug < ? AND id != ?", (base, base + ".", own_id))
        taken = {slug for (slug,) in rows if slug == base or slug.startswith(base + "-")}
        if base not in taken:
            return base
        n = 2
        while f"{base}-{n}" in taken:
            n += 1
        return f"{base}-{n}"

    # ---- lifecycle -------------------------------------------------------------------------
    def wait_for_hooks(self, timeout: float | None = None) -> bool:
        """Wait until the queued after-hooks have run (tests, export, shutdown). True when idle."""
        return self.hooks.wait(timeout)

    def close(self, timeout: float | None = None):
        """Let pending after-hooks finish briefly (up to after_hook_timeout_ms), then drop the rest."""
        self.hooks.close(timeout)
