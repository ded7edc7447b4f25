"""Peewee on SQLite: one file per site, WAL, foreign keys, a busy timeout, and numbered migrations.

Each thread gets its own connection (peewee's default); plugin tables live in the same file,
so a before-hook's `db.*` writes share the content change's transaction on the caller's thread.
"""
from __future__ import annotations

import datetime as _dt
import json
import zlib

from peewee import (
    BooleanField,
    Field,
    CompositeKey,
    DatabaseProxy,
    ForeignKeyField,
    IntegerField,
    SQL,
    Model,
    SqliteDatabase,
    TextField,
)

# mmap: reads of a large site (counts, searches) from the OS's page cache without a copy per page into
# each connection's own small cache; it is address space, not memory
PRAGMAS = {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 10000, "synchronous": "normal",
           "mmap_size": 256 * 1024 * 1024}

database_proxy = DatabaseProxy()


def utc_now() -> str:
    """RFC 3339 UTC timestamp with millisecond precision (sortable as text)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class JSONField(TextField):
    def db_value(self, value):
        return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)

    def python_value(self, value):
        return None if value is None else json.loads(value)


# Revision bodies shorter than this stay text: zlib's header and the BLOB's would eat what it saves.
COMPRESS_FROM = 64


def compress_body(text: str):
    """A revision body as stored: zlib bytes (a BLOB) when that is smaller, the text itself otherwise."""
    raw = text.encode("utf-8")
    if len(raw) < COMPRESS_FROM:
        return text
    packed = zlib.compress(raw, 6)
    return packed if len(packed) < len(raw) else text


def expand_body(value) -> str:
    """A stored revision body as text: a BLOB is zlib (compress_revisions on), TEXT is as saved before or short."""
    if isinstance(value, (bytes, memoryview)):
        return zlib.decompress(bytes(value)).decode("utf-8")
    return value if value is not None else ""


class CompressedTextField(Field):
    """TEXT in the schema; zlib-compressed BLOB or plain TEXT in each row (SQLite keeps either)."""

    field_type = "TEXT"

    def db_value(self, value):
        return None if value is None else compress_body(value)

    def python_value(self, value):
        return None if value is None else expand_body(value)


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
    # back ("~" + id stands in) so a new entry may take it; restoring needs it free again. Its index holds
    # the Trash only (content_trash): one on every row misled SQLite into sorting the list.
    deleted_at = TextField(null=True)
    deleted_slug = TextField(null=True)

    class Meta:
        table_name = "content"


class Revision(BaseModel):
    id = TextField(primary_key=True)
    # no index of its own: (content_id, number) serves every lookup by entry, the cascade's included
    content = ForeignKeyField(Content, backref="revisions", on_delete="CASCADE", column_name="content_id",
                              index=False)
    number = IntegerField()
    type = TextField()
    title = TextField()
    slug = TextField()
    body = CompressedTextField()  # zlib since compress_revisions; short bodies stay text
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


class CoreApproval(BaseModel):
    """Content access (the core module) the author approved for a plugin: access is "read" or "write"."""

    plugin = TextField()
    access = TextField()
    approved_at = TextField()

    class Meta:
        table_name = "plugin_core_approval"
        primary_key = CompositeKey("plugin", "access")
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


# the content list's sort orders: the name of each one's index and its key
LIST_INDEXES = (("updated", "updated_at"), ("title", "title COLLATE NOCASE"), ("type", "type"), ("status", "status"))


def add_list_indexes(db):
    """One index per sort order of the content list (ContentService.list_sorted): each (column, id)
    pair walks in either direction without a sort step, however many entries the site has."""
    for name, key in LIST_INDEXES:
        db.execute_sql(f"CREATE INDEX IF NOT EXISTS content_list_{name} ON content ({key}, id)")


def add_domain_approvals(db):
    # a table of its own (CREATE TABLE IF NOT EXISTS): safe whatever number the migration gets
    db.create_tables([DomainApproval])


def add_core_approvals(db):
    # a table of its own (CREATE TABLE IF NOT EXISTS): safe whatever number the migration gets
    db.create_tables([CoreApproval])


# The live entries' list orders (ContentService's list queries): one index per order, each led by
# (type, status), so every filter, and the whole list as a merge of the four (type, status) groups,
# walks an index in order with no sort step. Partial: the Trash is not in them. deleted_at (always
# NULL there) makes them covering for counts: SQLite 3.40 reads the row for a column of the WHERE even
# when the index's own condition implies the term, and the columns after the body cost overflow pages.
LIVE_INDEXES = (("updated", "updated_at, id"), ("title", "title COLLATE NOCASE, id"), ("kind", "id"))


def add_live_indexes(db):
    """The list's indexes for 100,000 entries (issue 17). The indexes of add_list_indexes led by the sort
    column could not serve the list's own query (which skips the Trash, so SQLite took the
    deleted_at index and sorted); they go, and the Trash gets a (deleted_at, id) index of its own."""
    for name in ("updated", "title", "type", "status"):
        db.execute_sql(f"DROP INDEX IF EXISTS content_list_{name}")
    for name, key in LIVE_INDEXES:
        db.execute_sql(f"CREATE INDEX IF NOT EXISTS content_live_{name} ON content (type, status, {key}, "
                       "deleted_at) WHERE deleted_at IS NULL")
    db.execute_sql("DROP INDEX IF EXISTS content_deleted_at")
    db.execute_sql("CREATE INDEX IF NOT EXISTS content_trash ON content (deleted_at, id) WHERE deleted_at IS NOT NULL")


# Full-text search over the live entries' title and body (FTS5, an external-content table reading the
# content table by rowid: the text is not stored twice). Triggers keep it in step with every write,
# whoever makes it: an entry moved to the Trash leaves the index, a restored one comes back.
FTS_TABLE = "content_fts"
FTS_SCHEMA = (f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5(title, body, content='content', "
              "content_rowid='rowid', tokenize='unicode61 remove_diacritics 2')")
FTS_TRIGGERS = (
    f"""CREATE TRIGGER IF NOT EXISTS content_fts_insert AFTER INSERT ON content WHEN new.deleted_at IS NULL BEGIN
        INSERT INTO {FTS_TABLE} (rowid, title, body) VALUES (new.rowid, new.title, new.body);
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS content_fts_delete AFTER DELETE ON content WHEN old.deleted_at IS NULL BEGIN
        INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rowid, title, body) VALUES ('delete', old.rowid, old.title, old.body);
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS content_fts_update AFTER UPDATE OF title, body, deleted_at ON content
    WHEN old.title IS NOT new.title OR old.body IS NOT new.body OR old.deleted_at IS NOT new.deleted_at BEGIN
        INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rowid, title, body)
            SELECT 'delete', old.rowid, old.title, old.body WHERE old.deleted_at IS NULL;
        INSERT INTO {FTS_TABLE} (rowid, title, body)
            SELECT new.rowid, new.title, new.body WHERE new.deleted_at IS NULL;
    END""",
)


def rebuild_search_index(db):
    """Index every live entry again (the migration; a repair when the index is out of step)."""
    db.execute_sql(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}) VALUES ('delete-all')")
    db.execute_sql(f"INSERT INTO {FTS_TABLE} (rowid, title, body) "
                   "SELECT rowid, title, body FROM content WHERE deleted_at IS NULL")


def add_search_index(db):
    db.execute_sql(FTS_SCHEMA)
    for trigger in FTS_TRIGGERS:
        db.execute_sql(trigger)
    rebuild_search_index(db)


def compress_revisions(db, batch: int = 500):
    """Existing revision bodies compressed (zlib); the retention policy needs (content_id, created_at), and
    the foreign key's own index goes ((content_id, number) leads with the same column)."""
    db.execute_sql("CREATE INDEX IF NOT EXISTS revision_content_created ON content_revision (content_id, created_at)")
    db.execute_sql("DROP INDEX IF EXISTS revision_content_id")
    last = 0
    while True:
        rows = db.execute_sql("SELECT rowid, body FROM content_revision WHERE rowid > ? AND typeof(body) = 'text' "
                              "ORDER BY rowid LIMIT ?", (last, batch)).fetchall()
        if not rows:
            return
        packed = [(compress_body(body), rowid) for rowid, body in rows]
        db.connection().executemany("UPDATE content_revision SET body = ? WHERE rowid = ?",
                                    [(b, r) for b, r in packed if isinstance(b, bytes)])
        last = rows[-1][0]


def add_content_changes(db):
    """A journal of the entries written, whoever wrote them (the content service, a plugin, plain SQL):
    a build in the window reads which entries changed since its last build instead of every row
    (core/build/collect.py). Safe whatever number the migration gets."""
    db.execute_sql("CREATE TABLE IF NOT EXISTS content_change "
                   "(seq INTEGER PRIMARY KEY AUTOINCREMENT, content_id TEXT NOT NULL)")
    db.execute_sql("CREATE TRIGGER IF NOT EXISTS content_change_insert AFTER INSERT ON content BEGIN "
                   "INSERT INTO content_change (content_id) VALUES (NEW.id); END")
    db.execute_sql("CREATE TRIGGER IF NOT EXISTS content_change_update AFTER UPDATE ON content BEGIN "
                   "INSERT INTO content_change (content_id) VALUES (NEW.id); "
                   "INSERT INTO content_change (content_id) SELECT OLD.id WHERE OLD.id IS NOT NEW.id; END")
    db.execute_sql("CREATE TRIGGER IF NOT EXISTS content_change_delete AFTER DELETE ON content BEGIN "
                   "INSERT INTO content_change (content_id) VALUES (OLD.id); END")
def add_ui_approvals(db):
    # a table of its own (CREATE TABLE IF NOT EXISTS): safe whatever number the migration gets
    db.create_tables([UIApproval])


def bound_content_changes(db):
    """The change journal stays bounded whether or not anything builds (a build prunes it too): every
    10,000th row drops the rows more than 20,000 behind it. A build further behind reads every row."""
    db.execute_sql("CREATE TRIGGER IF NOT EXISTS content_change_bound AFTER INSERT ON content_change "
                   "WHEN NEW.seq % 10000 = 0 BEGIN DELETE FROM content_change WHERE seq <= NEW.seq - 20000; END")


# Append only: a site created by an older version runs every migration it has not seen yet.
MIGRATIONS = [_m1, add_route_public, add_trash_and_revision_source, add_list_indexes, add_domain_approvals,
              add_core_approvals, add_live_indexes, add_search_index, compress_revisions, add_content_changes,
              add_ui_approvals, bound_content_changes]
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
