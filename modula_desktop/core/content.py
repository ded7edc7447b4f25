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
import unicodedata
from typing import Callable

from peewee import SQL, IntegrityError, fn
from ulid import ULID

from .errors import NotFound, ValidationError
from .plugins.hooks import HookDispatcher
from .settings import PluginSettings
from .storage import Content, Revision, utc_now

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


LIVE = Content.deleted_at.is_null()
IN_TRASH = Content.deleted_at.is_null(False)


class ContentService:
    """Pages and posts with revisions, firing the plugins' content hooks. Thread-safe."""

    def __init__(self, db, plugins=None, settings: PluginSettings | None = None, logbook=None, metrics=None):
        self.db = db
        self.hooks = HookDispatcher(plugins, settings, logbook, metrics, editable=EDITABLE)
        self._listeners: list[Listener] = []

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
        """Entries, most recently updated first. search matches title, slug and body (case-insensitive)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValidationError(f"limit must be a whole number from 1 to {MAX_LIMIT}.")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValidationError("offset must be a whole number of at least 0.")
        query = self._filtered(type, status, search).order_by(Content.updated_at.desc(), Content.id.desc())
        return [_entry(row) for row in query.limit(limit).offset(offset)]

    def count(self, type: str | None = None, status: str | None = None, search: str | None = None) -> int:
        return self._filtered(type, status, search).count()

    def list_sorted(self, type: str | None = None, status: str | None = None, search: str | None = None,
                    sort: str = "updated_at", descending: bool = True, limit: int = DEFAULT_LIMIT,
                    after: dict | None = None) -> list[dict]:
        """One page of entries in the order of a list column (title, type, status or updated_at), the id
        breaking ties. after is the last entry of the previous page: keyset paging, so the 50th page costs
        what the first does (an OFFSET walks every row before it). Each order has its index (storage).
        The entries carry LIST_FIELDS only: a list needs no bodies, and reading them would cost the most."""
        if sort not in SORT_KEYS:
            raise ValidationError(f"sort must be one of {', '.join(SORT_KEYS)}, not {sort!r}.")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValidationError(f"limit must be a whole number from 1 to {MAX_LIMIT}.")
        column = getattr(Content, sort)
        key = column.collate("NOCASE") if sort == "title" else column
        query = self._filtered(type, status, search)
        if after is not None:
            mark = (after.get(sort) or "", after.get("id") or "")
            # row values: (key, id) strictly beyond the last one shown, in the direction of the sort
            before = SQL(f"({'title COLLATE NOCASE' if sort == 'title' else sort}, id) "
                         f"{'<' if descending else '>'} (?, ?)", mark)
            query = query.where(before)
        order = (key.desc(), Content.id.desc()) if descending else (key.asc(), Content.id.asc())
        columns = [getattr(Content, name) for name in LIST_FIELDS]
        # the rows straight from the cursor: text columns need none of peewee's per-value conversion,
        # which cost more than the query when a list scrolls through tens of thousands of entries
        sql, params = query.select(*columns).order_by(*order).limit(limit).sql()
        return [dict(zip(LIST_FIELDS, row)) for row in self.db.execute_sql(sql, params).fetchall()]

    def list_window(self, type: str | None = None, status: str | None = None, search: str | None = None,
                    sort: str = "updated_at", descending: bool = True, limit: int = DEFAULT_LIMIT,
                    after: dict | None = None, skip: int = 0) -> list[dict]:
        """list_sorted from anywhere in the order: skip entries after `after` (or from the top) first. The
        content list reads a block deep in the list from the nearest entry it knows before it, so the skip
        stays short; from the top, 50,000 entries are skipped in a few milliseconds on the list's index."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValidationError(f"limit must be a whole number from 1 to {MAX_LIMIT}.")
        if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
            raise ValidationError("skip must be a whole number of at least 0.")
        query = self._in_order(type, status, search, sort, descending, after, "<" if descending else ">")
        sql, params = query.select(*[getattr(Content, name) for name in LIST_FIELDS]).limit(limit).offset(skip).sql()
        return [dict(zip(LIST_FIELDS, row)) for row in self.db.execute_sql(sql, params).fetchall()]

    def position(self, id: str, type: str | None = None, status: str | None = None, search: str | None = None,
                 sort: str = "updated_at", descending: bool = True) -> int | None:
        """How many entries come before entry id in that order and filter (its row in the list), or None
        when it is not among them."""
        entry = self._in_order(type, status, search, sort, descending, None, "").where(Content.id == id)
        row = entry.select(getattr(Content, sort), Content.id).tuples().first()
        if row is None:
            return None
        mark = {sort: row[0], "id": row[1]}
        return self._in_order(type, status, search, sort, descending, mark, ">" if descending else "<").count()

    def _in_order(self, type, status, search, sort, descending, mark, beyond):
        """The live entries of the filter in a list order, those beyond mark ((key, id) compared by beyond).
        The type and status filters are tested inside the order's index (unary +: not searched by the index
        of their own column, which would make SQLite sort every match)."""
        if sort not in SORT_KEYS:
            raise ValidationError(f"sort must be one of {', '.join(SORT_KEYS)}, not {sort!r}.")
        self._filtered(type, status, None)  # the filters' own checks and messages
        query = self._filtered(None, None, search)
        for name, value in (("type", type), ("status", status)):
            if value is not None:
                query = query.where(SQL(f"+{name} = ?", (value,)))
        key = "title COLLATE NOCASE" if sort == "title" else sort
        if mark is not None:
            # the collation on the value, not the column: SQLite walks the index from there (with it on the
            # column it read the whole index to the mark)
            value = "? COLLATE NOCASE" if sort == "title" else "?"
            query = query.where(SQL(f"({sort}, id) {beyond} ({value}, ?)",
                                    (mark.get(sort) or "", mark.get("id") or "")))
        direction = "DESC" if descending else "ASC"
        return query.order_by(SQL(f"{key} {direction}"), SQL(f"id {direction}"))

    def _filtered(self, type, status, search):
        query = Content.select().where(LIVE)
        if type is not None:
            if type not in TYPES:
                raise ValidationError(f"type must be one of {', '.join(TYPES)}, not {type!r}.")
            query = query.where(Content.type == type)
        if status is not None:
            if status not in STATUSES:
                raise ValidationError(f"status must be one of {', '.join(STATUSES)}, not {status!r}.")
            query = query.where(Content.status == status)
        if search:
            # instr(): a search text with % or _ means itself, not a LIKE wildcard
            needle = str(search).lower()
            query = query.where((fn.instr(fn.lower(Content.title), needle) > 0)
                                | (fn.instr(fn.lower(Content.slug), needle) > 0)
                                | (fn.instr(fn.lower(Content.body), needle) > 0))
        return query

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
    def _transaction(self):
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads, runs hooks and
        # then writes could fail with "database is locked" when another thread committed meanwhile.
        return self.db.atomic("IMMEDIATE")

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

    def _committed(self, events: list[str], entry: dict, run_hooks: bool) -> dict:
        self._notify(events[0], entry)
        if run_hooks:
            for event in events:
                self.hooks.run_after(f"after_{event}", entry)
        return entry

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
        taken = {r.slug for r in Content.select(Content.slug).where(
            ((Content.slug == base) | Content.slug.startswith(base + "-")) & (Content.id != own_id))}
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
