"""Peewee on SQLite: one file per site, WAL, foreign keys, a busy timeout, and numbered migrations.

Each thread gets its own connection (peewee's default); plugin tables live in the same file,
so a before-hook's `db.*` writes share the content change's transaction on the caller's thread.
"""
from __future__ import annotations

import datetime as _dt
import json

from peewee import (
    BooleanField,
    CompositeKey,
    DatabaseProxy,
    ForeignKeyField,
    IntegerField,
    SQL,
    Model,
    SqliteDatabase,
    TextField,
)

PRAGMAS = {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 10000, "synchronous": "normal"}

database_proxy = DatabaseProxy()


def utc_now() -> str:
    """RFC 3339 UTC timestamp with millisecond precision (sortable as text)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class JSONField(TextField):
    def db_value(self, value):
        return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BaseModel(Model):
    class Meta:
        database = database_proxy


class SchemaVersion(BaseModel):
    version = IntegerField()
    applied_at = TextField()

    class Meta:
        table_name = "schema_version"


class Content(BaseModel):
    id = TextField(primary_key=True)
    type = TextField()  # page | post
    title = TextField(default="")
    slug = TextField(unique=True)
    body = TextField(default="")
    status = TextField(default="draft")  # draft | published
    fields = JSONField(default=dict)
    published_at = TextField(null=True)
    created_at = TextField()
    updated_at = TextField()
    # In the Trash (migration 2): when it was moved there, and its slug, which the live slug column gives
    # back ("~" + id stands in) so a new entry may take it; restoring needs it free again.
    deleted_at = TextField(null=True, index=True)
    deleted_slug = TextField(null=True)

    class Meta:
        table_name = "content"


class Revision(BaseModel):
    id = TextField(primary_key=True)
    content = ForeignKeyField(Content, backref="revisions", on_delete="CASCADE", column_name="content_id")
    number = IntegerField()
    type = TextField()
    title = TextField()
    slug = TextField()
    body = TextField()
    status = TextField()
    fields = JSONField(default=dict)
    created_at = TextField()
    # Who saved it (migration 2): "editor", "api", "app" …; "" on revisions older than the column.
    source = TextField(default="")
    # The plugins whose before-hooks (filters) changed what was saved, as a JSON list.
    changed_by = JSONField(default=list)

    class Meta:
        table_name = "content_revision"
        indexes = ((("content", "number"), True),)


class PluginRecord(BaseModel):
    """What we last saw of a plugin: its version and permissions decide whether approvals survive."""

    name = TextField(primary_key=True)
    version = TextField()
    permissions = TextField()  # canonical JSON of the declared permissions (or "null")
    enabled = BooleanField(default=True)
    updated_at = TextField()

    class Meta:
        table_name = "plugin_record"


class RouteApproval(BaseModel):
    plugin = TextField()
    method = TextField()
    path = TextField()
    # what was approved includes whether the route needs the token: a route made public since is
    # not covered (issue 13 item 9)
    public = BooleanField(default=False, constraints=[SQL("DEFAULT 0")])  # as add_route_public adds it
    approved_at = TextField()

    class Meta:
        table_name = "plugin_route_approval"
        primary_key = CompositeKey("plugin", "method", "path")


class HookApproval(BaseModel):
    plugin = TextField()
    event = TextField()
    table = TextField(column_name="table_name")
    approved_at = TextField()

    class Meta:
        table_name = "plugin_hook_approval"
        primary_key = CompositeKey("plugin", "event", "table")


class PluginLog(BaseModel):
    plugin = TextField(index=True)
    level = TextField()
    message = TextField()
    context = JSONField(null=True)
    created_at = TextField()

    class Meta:
        table_name = "plugin_log"


class DomainApproval(BaseModel):
    """An outbound domain (the request module) the author approved for a plugin."""

    plugin = TextField()
    domain = TextField()
    approved_at = TextField()

    class Meta:
        table_name = "plugin_domain_approval"
        primary_key = CompositeKey("plugin", "domain")


class UIApproval(BaseModel):
    """A screen or field interface (SPEC 3.12) the author approved for a plugin."""

    plugin = TextField()
    kind = TextField()  # "screen" or "interface"
    name = TextField()
    approved_at = TextField()

    class Meta:
        table_name = "plugin_ui_approval"
        primary_key = CompositeKey("plugin", "kind", "name")


def _m1(db):
    db.create_tables([SchemaVersion, Content, Revision, PluginRecord, RouteApproval, HookApproval, PluginLog])


def _add_columns(db, table: str, columns: dict[str, str]):
    # _m1 creates the tables from today's models, so a new site already has every column
    have = {c.name for c in db.get_columns(table)}
    for name, sql in columns.items():
        if name not in have:
            db.execute_sql(f'ALTER TABLE "{table}" ADD COLUMN "{name}" {sql}')


def add_route_public(db):
    # approvals given before this column existed were of routes the author saw needing the token as far
    # as we can tell: they stay approvals of non-public routes, and a public route needs approving again
    _add_columns(db, "plugin_route_approval", {"public": "INTEGER NOT NULL DEFAULT 0"})


def add_trash_and_revision_source(db):
    """The Trash and the source of each revision. Existing revisions get an empty source ("not
    recorded"), existing entries stay live."""
    _add_columns(db, "content", {"deleted_at": "TEXT", "deleted_slug": "TEXT"})
    db.execute_sql('CREATE INDEX IF NOT EXISTS "content_deleted_at" ON "content" ("deleted_at")')
    _add_columns(db, "content_revision", {"source": "TEXT NOT NULL DEFAULT ''",
                                          "changed_by": "TEXT NOT NULL DEFAULT '[]'"})


def add_list_indexes(db):
    """One index per sort order of the content list (ContentService.list_sorted): each (column, id)
    pair walks in either direction without a sort step, however many entries the site has."""
    for name, key in (("updated", "updated_at"), ("title", "title COLLATE NOCASE"), ("type", "type"),
                      ("status", "status")):
        db.execute_sql(f"CREATE INDEX IF NOT EXISTS content_list_{name} ON content ({key}, id)")


def add_domain_approvals(db):
    # a table of its own (CREATE TABLE IF NOT EXISTS): safe whatever number the migration gets
    db.create_tables([DomainApproval])


def add_ui_approvals(db):
    # a table of its own (CREATE TABLE IF NOT EXISTS): safe whatever number the migration gets
    db.create_tables([UIApproval])


# Append only: a site created by an older version runs every migration it has not seen yet.
MIGRATIONS = [_m1, add_route_public, add_trash_and_revision_source, add_list_indexes, add_domain_approvals,
              add_ui_approvals]
SCHEMA_VERSION = len(MIGRATIONS)


def open_database(path) -> SqliteDatabase:
    """Open (and migrate) a site database. A file that is not a usable SQLite database is one
    clear SiteError, never a driver traceback."""
    from peewee import DatabaseError

    from .errors import SiteError

    db = SqliteDatabase(str(path), pragmas=PRAGMAS, check_same_thread=False)
    database_proxy.initialize(db)
    try:
        db.connect(reuse_if_open=True)
        migrate(db)
        from .plugins.api.db import migrate_namespace  # here: dbapi imports this module

        migrate_namespace(db)
    except DatabaseError as exc:
        db.close()
        raise SiteError(f"{path} cannot be opened as a site database: {exc}") from None
    return db


def current_version(db) -> int:
    if not db.table_exists("schema_version"):
        return 0
    row = db.execute_sql("SELECT MAX(version) FROM schema_version").fetchone()
    return row[0] or 0


def migrate(db) -> int:
    """Run the migrations the file has not seen, each in its own transaction. Returns the new version."""
    version = current_version(db)
    if version > SCHEMA_VERSION:
        from .errors import SiteError

        raise SiteError(f"site.db has schema version {version}, newer than this app understands ({SCHEMA_VERSION})")
    for number in range(version + 1, SCHEMA_VERSION + 1):
        with db.atomic():
            MIGRATIONS[number - 1](db)
            SchemaVersion.create(version=number, applied_at=utc_now())
    return SCHEMA_VERSION
