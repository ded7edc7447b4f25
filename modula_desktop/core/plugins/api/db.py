"""The `db` module of the plugin API (SPEC 3.4), compatible with ModulaCMS's Lua db API.

A plugin reaches only its own tables: Lua uses the short name, SQL uses ``plugin_<plugin>__<short>``
(``sql_table_name``), and the table must be registered to this plugin in ``plugin_schema`` (written by
``define_table``). The double underscore makes the name injective: a new table name starts with a
letter and never holds ``__``, so the last ``__`` of the name is the separator (one further right
would start with the table's first letter or lie inside it), whatever the plugin name holds. Sites written with the old single-underscore names (where plugin ``a``'s
table ``b_c`` and plugin ``a_b``'s table ``c`` were both ``plugin_a_b_c``) are renamed on open
(``migrate_namespace``). No CMS table holds ``__``, so no plugin reaches one.

Nothing from Lua is spliced into SQL except identifiers that match ``IDENT_RE`` *and* name a column
the table really has, and operators from a fixed whitelist. Every value is a bound parameter; the one
exception is a column's DEFAULT in DDL, which SQLite cannot bind: it is type-checked and rendered as a
quoted literal.

Instances are used by one VM, hence by one thread at a time; peewee gives each thread its own
connection, so a before-hook's writes share the host's content transaction on that thread.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import re
import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable

import peewee
from ulid import ULID

from ...storage import utc_now
from ..errors import ApiError, DataError

log = logging.getLogger(__name__)

IDENT_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
PLUGIN_RE = re.compile(r"^[a-z0-9_]{1,32}$")
ORDER_RE = re.compile(r"^\s*([a-z][a-z0-9_]{0,62}(?:\.[a-z][a-z0-9_]{0,62})?)(?:\s+(asc|desc))?\s*$",
                      re.IGNORECASE)

# Logical column type -> SQL type. The logical type (json, boolean, ...) lives in the registry.
SQL_TYPES = {"text": "TEXT", "integer": "INTEGER", "boolean": "INTEGER", "real": "REAL",
             "timestamp": "TEXT", "json": "TEXT", "blob": "BLOB"}
AUTO_COLUMNS = {"id": "text", "created_at": "timestamp", "updated_at": "timestamp"}
REGISTRY = "plugin_schema"

# Numbers of SPEC 3.4 and of ModulaCMS's db package (MaxBulkInsertRows, MaxOrderByCols).
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
MAX_BULK_ROWS = 1000
BULK_BATCH_ROWS = 100
MAX_ORDER_BY = 8
MAX_COLUMNS = 200
MAX_INDEXES = 32
MAX_IN_VALUES = 1000
MAX_CONDITIONS = 500
MAX_CONDITION_DEPTH = 16
MAX_DEFAULT_CHARS = 4096
MAX_SQL_VARIABLES = 32766
# SQLite's progress handler runs every this many virtual machine steps of a plugin's statement (a
# callback per millisecond or so of SQL: each takes the GIL, which under contention can cost more
# than the SQL itself, so not finer). One step can be long (a LIKE over a large value) and the
# handler never runs during it: the watchdog below interrupts those at the deadline.
PROGRESS_STEPS = 100_000
# bytes counted per stored row beyond its values (record header, rowid, b-tree cell)
ROW_OVERHEAD = 32
WATCHDOG_LINGER_S = 1.0
NUMBER_BYTES = 8

# Condition markers returned by db.eq(), db.gt(), ... (ModulaCMS's sentinel keys).
OP_KEY, VAL_KEY = "__op", "__val"
AGG_KEY, AGG_ARG_KEY, AGG_ALIAS_KEY = "__agg", "__arg", "__alias"
MARKER_OPS = ("eq", "neq", "gt", "gte", "lt", "lte", "like", "not_like", "in", "not_in", "between",
              "is_null", "is_not_null")
AGGREGATES = ("COUNT", "SUM", "AVG", "MIN", "MAX")

# Operator spellings accepted in the sequence form -> canonical SQL operator.
SEQ_OPS = {
    "=": "=", "==": "=", "EQ": "=",
    "!=": "<>", "<>": "<>", "~=": "<>", "NEQ": "<>",
    ">": ">", "GT": ">", ">=": ">=", "GTE": ">=", "<": "<", "LT": "<", "<=": "<=", "LTE": "<=",
    "LIKE": "LIKE", "NOT LIKE": "NOT LIKE", "NOT_LIKE": "NOT LIKE",
    "IN": "IN", "IN_LIST": "IN", "NOT IN": "NOT IN", "NOT_IN": "NOT IN",
    "BETWEEN": "BETWEEN", "NOT BETWEEN": "NOT BETWEEN",
    "IS NULL": "IS NULL", "IS_NULL": "IS NULL", "IS NOT NULL": "IS NOT NULL", "IS_NOT_NULL": "IS NOT NULL",
}
MARKER_TO_SQL = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "like": "LIKE",
                 "not_like": "NOT LIKE", "in": "IN", "not_in": "NOT IN", "between": "BETWEEN",
                 "is_null": "IS NULL", "is_not_null": "IS NOT NULL"}
ON_ACTIONS = {"CASCADE": "CASCADE", "SET NULL": "SET NULL", "SET_NULL": "SET NULL", "SET DEFAULT": "SET DEFAULT",
              "SET_DEFAULT": "SET DEFAULT", "RESTRICT": "RESTRICT", "NO ACTION": "NO ACTION", "NO_ACTION": "NO ACTION"}

SELECT_OPTIONS = {"where", "where_or", "columns", "order_by", "desc", "limit", "offset", "distinct", "group_by"}
# db.query and db.query_one also take ModulaCMS's having and joins
QUERY_OPTIONS = SELECT_OPTIONS | {"having", "joins"}
JOIN_TYPES = {"inner": "INNER JOIN", "left": "LEFT JOIN", "right": "RIGHT JOIN"}
MAX_JOINS = 8
# the db.* functions whose data errors return nil, err (define_table raises: a schema that cannot be
# set up must fail on_init)
DATA_FUNCTIONS = frozenset({"query", "query_one", "count", "exists", "insert", "insert_many", "upsert", "update",
                            "delete", "create_index"})


def q(ident: str) -> str:
    """Quote an identifier that already passed IDENT_RE (so it holds no quote), or a qualified
    "table.column" of a join whose two parts did."""
    if "." in ident:
        table, column = ident.split(".", 1)
        return f'"{table}"."{column}"'
    return f'"{ident}"'


def rfc3339(moment: _dt.datetime) -> str:
    """The same text form as storage.utc_now(): sortable, millisecond precision, UTC."""
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def canonical_json(value) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass
class TableInfo:
    short: str
    sql: str
    types: dict = field(default_factory=dict)  # column -> logical type, in table order
    definition: dict = field(default_factory=dict)  # what the registry holds
    quota_weights: dict | None = None  # column -> how many indexes hold it (PluginDB._values_cost)
    # a join's scope (PluginDB._join_scope): the name a column reference resolves to ("title" ->
    # "tasks.title"); None for a single table
    resolve: dict | None = None
    output: dict | None = None  # a join's columns -> the key each has in a row ("name", or "cats.name")


def sql_table_name(plugin: str, table: str) -> str:
    """The SQL name of a plugin's table. ValueError when the pair could collide with another."""
    if not isinstance(plugin, str) or not PLUGIN_RE.match(plugin) or plugin.endswith("_"):
        raise ValueError(f"invalid plugin name {plugin!r}")
    if not isinstance(table, str) or not IDENT_RE.match(table) or "__" in table:
        raise ValueError(f"invalid table name {table!r}")
    return f"plugin_{plugin}__{table}"


class LuaText(str):
    """A Lua string that is not valid UTF-8: the text (invalid bytes replaced) for every use but a blob
    column, which stores raw, the exact bytes (Lua strings are bytes)."""

    __slots__ = ("raw",)

    def __new__(cls, raw: bytes):
        self = super().__new__(cls, raw.decode("utf-8", "replace"))
        self.raw = raw
        return self


def lua_args(value):
    """Arguments converted with binary=True (Lua strings as bytes) made into the text the API works on,
    keeping the bytes of strings that are not UTF-8 (LuaText)."""
    kind = type(value)
    if kind is bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return LuaText(value)
    if kind is list:
        return [lua_args(v) for v in value]
    if kind is dict:
        return {k: lua_args(v) for k, v in value.items()}
    return value


def _raw(value):
    """A value as it goes back to Lua (a marker's value): a LuaText as its bytes."""
    return value.raw if type(value) is LuaText else value


def _blob(value: str) -> bytes:
    return value.raw if type(value) is LuaText else value.encode("utf-8", "surrogateescape")


def _value_bytes(value) -> int:
    """What a stored value costs, for the storage quota and the value bound (an estimate for numbers)."""
    if value is None:
        return 1
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, str):
        n = len(value)
        return n if value.isascii() else len(value.encode("utf-8", "surrogateescape"))
    return NUMBER_BYTES


class _Usage:
    """A plugin's storage: bytes of its tables as last measured plus what writes added since. Shared by
    the plugin's VMs (one PluginDB each) through _usage()."""

    def __init__(self):
        self.lock = threading.Lock()
        self.bytes: int | None = None  # None: not measured yet
        self.exact = False  # no update or delete since the last measure


_USAGE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_USAGE_LOCK = threading.Lock()


def _usage(database, plugin: str) -> _Usage:
    with _USAGE_LOCK:
        per_db = _USAGE.get(database)
        if per_db is None:
            per_db = _USAGE[database] = {}
        usage = per_db.get(plugin)
        if usage is None:
            usage = per_db[plugin] = _Usage()
        return usage


class _Watchdog:
    """One thread that calls Connection.interrupt() (documented as safe from another thread) on a
    statement still running at its caller's deadline. The progress handler cannot do that alone: it
    runs between virtual machine steps, and one step (a LIKE over a 2 MB value) may take a second.
    SQLite checks the interrupt between rows, so a statement stops within one row's work."""

    def __init__(self):
        self._cond = threading.Condition()
        self._watched: dict[int, tuple[float, object]] = {}
        self._tokens = 0
        self._wake_at = math.inf
        self._thread: threading.Thread | None = None

    def watch(self, conn, deadline: float) -> int:
        with self._cond:
            self._tokens += 1
            token = self._tokens
            self._watched[token] = (deadline, conn)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="modula-sql-watchdog", daemon=True)
                self._thread.start()
            if deadline < self._wake_at:
                self._cond.notify()
            return token

    def unwatch(self, token: int):
        # under the lock: once this returns, no interrupt for this statement can arrive any more
        with self._cond:
            self._watched.pop(token, None)

    def _run(self):
        lingered = False
        with self._cond:
            while True:
                now = time.monotonic()
                for token in [t for t, (d, _c) in self._watched.items() if d <= now]:
                    _deadline, conn = self._watched.pop(token)
                    try:
                        conn.interrupt()
                    except Exception:  # noqa: BLE001 - a closed connection has nothing to stop
                        pass
                if self._watched:
                    lingered = False
                    self._wake_at = min(d for d, _c in self._watched.values())
                elif not lingered:
                    # statements are short: most are unwatched before this thread even runs. Waking up
                    # once more in a while is cheaper than being woken for every next statement (watch()
                    # notifies only for a deadline earlier than _wake_at).
                    lingered = True
                    self._wake_at = now + WATCHDOG_LINGER_S
                else:
                    self._wake_at = math.inf
                self._cond.wait(None if self._wake_at == math.inf else max(0.0, self._wake_at - now))


_WATCHDOG = _Watchdog()


class _Result:
    """A statement's rows read to the end (so no statement stays open), with the cursor's fields."""

    __slots__ = ("rows", "description", "rowcount")

    def __init__(self, rows, description, rowcount):
        self.rows, self.description, self.rowcount = rows, description, rowcount

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self):
        return self.rows


def _constraint(col: dict) -> str:
    """How a column's NOT NULL and default read in a schema message."""
    parts = ["NOT NULL" if col.get("not_null") else "nullable"]
    parts.append(f"default {col['default']}" if col.get("default") is not None else "no default")
    return ", ".join(parts)


class PluginDB:
    """db.* for one plugin. Every method named in LUA_FUNCTIONS is called from Lua with Python values."""

    LUA_FUNCTIONS = (
        "define_table", "create_index",
        "query", "query_one", "count", "exists",
        "insert", "insert_many", "upsert", "update", "delete",
        "ulid", "timestamp", "timestamp_ago",
        "eq", "neq", "gt", "gte", "lt", "lte", "like", "not_like", "in_list", "not_in", "between",
        "is_null", "is_not_null",
        "agg_count", "agg_sum", "agg_avg", "agg_min", "agg_max",
    )
    # Touch no database and spend no operation: a host may offer these even offline.
    PURE_FUNCTIONS = frozenset(LUA_FUNCTIONS) - {
        "define_table", "create_index", "query", "query_one", "count", "exists", "insert", "insert_many", "upsert",
        "update", "delete"}

    def __init__(self, plugin: str, database, ops=None, settings=None):
        if not isinstance(plugin, str) or not PLUGIN_RE.match(plugin):
            raise ValueError(f"invalid plugin name {plugin!r}")
        self.plugin = plugin
        self.prefix = f"plugin_{plugin}__"
        # ModulaCMS's (and this app's former) prefix, still accepted in ref_table
        self.legacy_prefix = f"plugin_{plugin}_"
        self.database = database
        self.ops = ops
        self.settings = settings
        # Set by the host to show schema warnings in the plugin's own log; defaults to the app log.
        self.warn: Callable[[str], None] | None = None
        # define_table declarations the existing tables do not follow (a NOT NULL or default change: SQLite
        # cannot alter a column, so the old constraint stays). The plugin's state shows them as errors.
        self.schema_problems: list[str] = []
        # Set by the host: the running call's deadline (time.monotonic()), or None outside a call.
        self.deadline: Callable[[], float | None] | None = None
        self._tx = None
        # the first data error (nil, err) inside db.transaction: the transaction rolls back at its end,
        # as ModulaCMS documents ("any db.* call inside fails, the entire transaction rolls back")
        self.tx_failed: str | None = None
        self._usage: _Usage | None = None
        self._open: list = []  # the _Atomic blocks entered and not left yet, outermost first
        self._tables: dict[str, TableInfo] = {}
        self._schema_version = None

    # ---- plumbing ----------------------------------------------------------------------------
    @property
    def in_transaction(self) -> bool:
        return self._tx is not None

    def _spend(self, n: int = 1):
        if self.ops is not None and n > 0:
            self.ops.spend(n)

    def _schema_problem(self, msg: str):
        if msg not in self.schema_problems and len(self.schema_problems) < 50:
            self.schema_problems.append(msg)
        self._warn(msg)

    def _warn(self, msg: str):
        if self.warn is not None:
            self.warn(msg)
        else:
            log.warning("[%s] %s", self.plugin, msg)

    def _sql(self, fname: str, sql: str, params=()) -> _Result:
        """Run one statement to its end under the caller's deadline: SQLite's progress handler stops it
        there (the C work of a statement is invisible to the Lua hook), and is removed again before
        this returns, so no later statement on this thread's connection (the content service's, the
        GUI's) meets a stale deadline. The cursor is read to the end and closed: nothing stays open."""
        deadline = self.deadline() if self.deadline is not None else None
        conn = token = None
        try:
            if deadline is not None:
                if time.monotonic() > deadline:
                    raise ApiError(f"db.{fname}: time budget exceeded (the call's deadline passed)")
                conn = self.database.connection()
                monotonic = time.monotonic
                conn.set_progress_handler(lambda: monotonic() > deadline, PROGRESS_STEPS)
                token = _WATCHDOG.watch(conn, deadline)
            cursor = self.database.execute_sql(sql, tuple(params))
            try:
                return _Result(self._fetch(fname, cursor), cursor.description, cursor.rowcount)
            finally:
                cursor.close()
        except (peewee.IntegrityError, sqlite3.IntegrityError) as exc:
            raise DataError(f"db.{fname}: {exc}") from None
        except (peewee.DatabaseError, peewee.InterfaceError, sqlite3.Error) as exc:
            if conn is not None and deadline is not None and time.monotonic() > deadline:
                self._reopen_after_interrupt(conn)
                raise ApiError(f"db.{fname}: time budget exceeded (the statement ran past the call's "
                               f"deadline and was stopped)") from None
            log.warning("[%s] db.%s failed: %s", self.plugin, fname, exc)
            raise DataError(f"db.{fname}: {exc}") from None
        finally:
            if conn is not None:
                if token is not None:
                    _WATCHDOG.unwatch(token)
                conn.set_progress_handler(None, 0)

    def _fetch(self, fname: str, cursor) -> list:
        """A statement's rows (the core module reads them within a byte budget)."""
        return cursor.fetchall()

    def _reopen_after_interrupt(self, conn):
        """An interrupted INSERT, UPDATE or DELETE makes SQLite roll back the whole transaction: the
        plugin's own, or the host's content transaction a before-hook runs in. Every block around this
        statement still expects it (each will roll back, since the call fails): open it again, empty,
        with the savepoints of db.* blocks, so each block ends as it expects and the host's change is
        aborted cleanly instead of failing on its own rollback."""
        try:
            if conn.in_transaction or self.database.transaction_depth() == 0:
                return
            conn.execute("BEGIN")
            for block in self._open:
                helper = getattr(block.ctx, "_helper", None)
                if isinstance(helper, peewee._savepoint):
                    conn.execute(f"SAVEPOINT {helper.quoted_sid}")
        except (sqlite3.Error, peewee.DatabaseError) as exc:
            log.warning("[%s] could not reopen the transaction after an interrupt: %s", self.plugin, exc)

    def _rows(self, fname: str, sql: str, params=()) -> tuple[list[str], list[tuple]]:
        result = self._sql(fname, sql, params)
        names = [d[0] for d in result.description or ()]
        return names, result.rows

    def _atomic(self, fname: str):
        try:
            return _Atomic(self.database.atomic(), fname, self._open)
        except (peewee.DatabaseError, sqlite3.Error) as exc:
            raise ApiError(f"db.{fname}: {exc}") from None

    # ---- names -------------------------------------------------------------------------------
    def _ident(self, fname: str, value, what: str) -> str:
        if not isinstance(value, str):
            raise ApiError(f"db.{fname}: {what} must be a string")
        if not IDENT_RE.match(value):
            shown = value if len(value) <= 80 else value[:80] + "…"
            raise ApiError(f"db.{fname}: invalid {what} {shown!r} "
                           f"(use 1 to 63 characters of a-z, 0-9 and _, starting with a letter)")
        return value

    def _table_name(self, fname: str, table) -> tuple[str, str]:
        short = self._ident(fname, table, "table name")
        return short, self.prefix + short

    # ---- bounds ------------------------------------------------------------------------------
    def _setting(self, key: str, default: int) -> int:
        return getattr(self.settings, key, default) if self.settings is not None else default

    def _check_value(self, fname: str, col: str, value):
        limit = self._setting("db_max_value_bytes", 2 * 1024 * 1024)
        if limit and isinstance(value, (str, bytes)) and len(value) * 4 > limit and _value_bytes(value) > limit:
            raise ApiError(f"db.{fname}: value for '{col}' is larger than {limit} bytes "
                           f"([plugins] db_max_value_bytes)")

    # ---- storage quota ------------------------------------------------------------------------
    def _measure(self) -> int:
        """The plugin's stored bytes, counted from its tables (a full read: only when the running
        estimate would cross the quota and deletes or updates made it inexact)."""
        total = 0
        if not self._registry_exists():
            return 0
        for table_name, definition in self._sql(
                "quota", f"SELECT table_name, definition FROM {q(REGISTRY)} WHERE plugin = ?", (self.plugin,)).fetchall():
            cols = [r[1] for r in self._sql("quota", f"PRAGMA table_info({q(table_name)})").fetchall()]
            if not cols:
                continue
            spec = json.loads(definition)
            weights = _index_weights(spec)
            expr = " + ".join(f"COALESCE(length(CAST({q(c)} AS BLOB)), 1) * {1 + weights.get(c, 0)}" for c in cols)
            n, size = self._sql("quota", f"SELECT COUNT(*), COALESCE(SUM({expr}), 0) FROM {q(table_name)}").fetchone()
            total += n * ROW_OVERHEAD * (1 + len(_indexes(spec))) + size
        return total

    @staticmethod
    def _values_cost(info: TableInfo, values: dict) -> int:
        """Bytes these values take: once in the table and again in every index that holds them."""
        weights = info.quota_weights
        if weights is None:
            weights = info.quota_weights = _index_weights(info.definition)
        return sum(_value_bytes(v) * (1 + weights.get(c, 0)) for c, v in values.items())

    def _row_cost(self, info: TableInfo, values: dict) -> int:
        """Bytes a new row with these values adds (its b-tree entries included)."""
        return ROW_OVERHEAD * (1 + len(_indexes(info.definition))) + self._values_cost(info, values)

    def _charge(self, fname: str, nbytes: int, written: bool = False):
        """Charge nbytes of new data to the plugin's storage quota, or raise the quota error. Before the
        write (written=False) nothing is stored when it raises; after one (an update, which cannot know
        its size before) the caller's savepoint rolls it back."""
        quota = self._setting("storage_quota_mb", 256) * 1024 * 1024
        if not quota or nbytes <= 0 or self.database is None:
            return
        usage = self._usage
        if usage is None:
            usage = self._usage = _usage(self.database, self.plugin)
        with usage.lock:
            if usage.bytes is not None:
                if usage.bytes + nbytes <= quota:
                    usage.bytes += nbytes
                    if written:  # the values it replaced were not subtracted
                        usage.exact = False
                    return
                if usage.exact and not written:
                    self._over_quota(fname, usage.bytes, nbytes, quota)
            measured = self._measure()  # after a write it holds the write already
            total = measured if written else measured + nbytes
            if total > quota:
                usage.bytes, usage.exact = measured, not written
                self._over_quota(fname, measured - (nbytes if written else 0), nbytes, quota)
            usage.bytes, usage.exact = total, True

    def _over_quota(self, fname: str, used: int, nbytes: int, quota: int):
        raise ApiError(f"db.{fname}: storage quota exceeded: plugin '{self.plugin}' may store "
                       f"{quota // (1024 * 1024)} MiB ([plugins] storage_quota_mb); {max(used, 0)} bytes are used "
                       f"and this write adds about {nbytes}")

    def _uncharge(self):
        """Rows were deleted or a transaction rolled back: the estimate is now high, not exact."""
        if self.database is not None:
            usage = _usage(self.database, self.plugin)
            with usage.lock:
                usage.exact = False

    def _check_pattern(self, fname: str, col: str, pattern: str):
        limit = self._setting("db_max_like_chars", 100)
        if limit and len(pattern) > limit:
            raise ApiError(f"db.{fname}: LIKE pattern for '{col}' has {len(pattern)} characters; at most "
                           f"{limit} are allowed ([plugins] db_max_like_chars)")

    def _check_schema_version(self):
        # one read of the database header, on every data call: straight on the connection, without the
        # deadline machinery of _sql (set up, it cost more than the insert it guarded)
        try:
            row = self.database.connection().execute("PRAGMA schema_version").fetchone()
        except (peewee.DatabaseError, peewee.InterfaceError, sqlite3.Error) as exc:
            raise DataError(f"db: the database cannot be read: {exc}") from None
        version = row[0] if row else None
        if version != self._schema_version:
            self._tables.clear()
            self._schema_version = version

    def _registry_exists(self) -> bool:
        row = self._sql("schema", "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (REGISTRY,)).fetchone()
        return row is not None

    def _ensure_registry(self):
        self._sql("define_table", f"CREATE TABLE IF NOT EXISTS {q(REGISTRY)} ("
                  "table_name TEXT PRIMARY KEY NOT NULL, plugin TEXT NOT NULL, name TEXT NOT NULL, "
                  "definition TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)")

    def _registry_row(self, sql_name: str):
        if not self._registry_exists():
            return None
        return self._sql("schema", f"SELECT plugin, definition FROM {q(REGISTRY)} WHERE table_name = ?",
                         (sql_name,)).fetchone()

    def _table(self, fname: str, table) -> TableInfo:
        short, sql_name = self._table_name(fname, table)
        self._check_schema_version()
        info = self._tables.get(sql_name)
        if info is None:
            info = self._load_table(short, sql_name)
            if info is None:
                raise DataError(f"db.{fname}: table '{short}' is not defined (call db.define_table in on_init)")
            self._tables[sql_name] = info
        return info

    def _load_table(self, short: str, sql_name: str) -> TableInfo | None:
        row = self._registry_row(sql_name)
        if row is None or row[0] != self.plugin:
            return None
        definition = json.loads(row[1])
        declared = {c["name"]: c["type"] for c in definition.get("columns", ())}
        info = TableInfo(short, sql_name, definition=definition)
        for _cid, name, decl, *_rest in self._sql("schema", f"PRAGMA table_info({q(sql_name)})").fetchall():
            info.types[name] = AUTO_COLUMNS.get(name) or declared.get(name) or _type_from_sql(decl)
        return info if info.types else None

    def _column(self, fname: str, info: TableInfo, name, what: str = "column") -> str:
        if info.resolve is not None and isinstance(name, str) and "." in name:
            table, column = name.split(".", 1)  # a join's "table.column"
            self._ident(fname, table, f"{what}'s table")
            self._ident(fname, column, what)
        else:
            self._ident(fname, name, what)
        if name not in info.types:
            raise DataError(f"db.{fname}: unknown column '{name}' in table '{info.short}'")
        return info.resolve.get(name, name) if info.resolve is not None else name

    # ---- values ------------------------------------------------------------------------------
    def _encode(self, fname: str, info: TableInfo, col: str, value):
        """A Lua value for column col, as stored in SQLite."""
        ctype = info.types[col]
        where = f"db.{fname}: column '{col}' ({ctype})"
        if value is None:
            return None
        if isinstance(value, float) and not math.isfinite(value):
            raise ApiError(f"{where} cannot store {value}")
        self._check_value(fname, col, value)
        if ctype == "json":
            if isinstance(value, str):
                try:
                    text = canonical_json(json.loads(value))
                except (ValueError, RecursionError):
                    raise ApiError(f"{where} takes a table or JSON text, and this string is not JSON") from None
            else:
                try:
                    text = canonical_json(value)
                except (ValueError, TypeError, RecursionError) as exc:
                    raise ApiError(f"{where}: {exc}") from None
            self._check_value(fname, col, text)
            return text
        if isinstance(value, (list, dict)):
            raise ApiError(f"{where} cannot store a table (only json columns do)")
        if ctype == "boolean":
            if isinstance(value, bool):
                return int(value)
            if isinstance(value, (int, float)) and value in (0, 1):
                return int(value)
            raise ApiError(f"{where} takes true or false")
        if ctype == "integer":
            if isinstance(value, bool):
                return int(value)
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, int):
                return value
            if isinstance(value, str):
                try:
                    return int(value.strip())
                except ValueError:
                    pass
            raise ApiError(f"{where} takes an integer, not {_show(value)}")
        if ctype == "real":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return value
            if isinstance(value, str):
                try:
                    number = float(value.strip())
                    if math.isfinite(number):
                        return number
                except ValueError:
                    pass
            raise ApiError(f"{where} takes a number, not {_show(value)}")
        if ctype == "blob":
            if isinstance(value, str):
                return _blob(value)
            raise ApiError(f"{where} takes a string")
        # text, timestamp
        if isinstance(value, bool):
            raise ApiError(f"{where} takes a string, not a boolean")
        if isinstance(value, (int, float)):
            return value if ctype == "timestamp" else str(value)
        return value

    def _decode_row(self, info: TableInfo, names: list[str], values) -> dict:
        row = {}
        for name, value in zip(names, values):
            ctype = info.types.get(name)
            if value is not None and ctype == "boolean":
                value = bool(value)
            elif value is not None and ctype == "json" and isinstance(value, str):
                try:
                    value = json.loads(value)
                except (ValueError, RecursionError):
                    pass
            row[name] = value
        return row

    # ---- options -----------------------------------------------------------------------------
    @staticmethod
    def _map(fname: str, value, what: str) -> dict:
        """A Lua table with named fields. An empty Lua table arrives as [] and means {}."""
        if value is None or value == []:
            return {}
        if not isinstance(value, dict):
            raise ApiError(f"db.{fname}: {what} must be a table with named fields")
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise ApiError(f"db.{fname}: {what} must have only named fields")
        return value

    @staticmethod
    def _list(fname: str, value, what: str) -> list:
        if value is None or value == {}:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            raise ApiError(f"db.{fname}: {what} must be a list")
        return value

    def _limit(self, fname: str, value, default: int) -> int:
        if value is None:
            return default
        n = _integer(value)
        if n is None:
            raise ApiError(f"db.{fname}: limit must be an integer")
        if n < 0:
            raise ApiError(f"db.{fname}: limit must not be negative")
        if n > MAX_LIMIT:
            raise ApiError(f"db.{fname}: limit {n} is above the maximum of {MAX_LIMIT}")
        return n or default  # ModulaCMS: 0 means the default

    def _offset(self, fname: str, value) -> int:
        if value is None:
            return 0
        n = _integer(value)
        if n is None or n < 0:
            raise ApiError(f"db.{fname}: offset must be a non-negative integer")
        return n

    def _select_parts(self, fname: str, info: TableInfo, opts: dict):
        """SELECT list, GROUP BY and ORDER BY text for opts; names the aggregates add."""
        aliases: dict[str, str] = {}
        select = []
        for item in self._list(fname, opts.get("columns"), "columns"):
            if isinstance(item, str):
                col = self._column(fname, info, item)
                select.append(q(col) if info.resolve is None else f'{q(col)} AS "{info.output[col]}"')
            elif isinstance(item, dict) and AGG_KEY in item:
                expr, alias = self._aggregate(fname, info, item)
                if alias in aliases or alias in info.types:
                    raise ApiError(f"db.{fname}: aggregate alias '{alias}' is used twice or names a column")
                aliases[alias] = expr
                select.append(f"{expr} AS {q(alias)}")
            else:
                raise ApiError(f"db.{fname}: columns must be column names or db.agg_* values")
        group = [q(self._column(fname, info, c)) for c in self._list(fname, opts.get("group_by"), "group_by")]
        order = self._order_by(fname, info, opts.get("order_by"), opts.get("desc"), aliases)
        if not select and info.resolve is not None:  # a join's "*": every column, by its output key
            select = [f'{q(col)} AS "{key}"' for col, key in info.output.items()]  # key: a name, or "t.c"
        return (", ".join(select) or "*"), group, order, aliases

    def _aggregate(self, fname: str, info: TableInfo, item: dict):
        func = item.get(AGG_KEY)
        if not isinstance(func, str) or func.upper() not in AGGREGATES:
            raise ApiError(f"db.{fname}: unknown aggregate {_show(func)}")
        func = func.upper()
        arg = item.get(AGG_ARG_KEY)
        if arg == "*":
            if func != "COUNT":
                raise ApiError(f"db.{fname}: only COUNT takes '*'")
            expr = "COUNT(*)"
        else:
            expr = f"{func}({q(self._column(fname, info, arg))})"
        alias = item.get(AGG_ALIAS_KEY) or (func.lower() if arg == "*" else f"{func.lower()}_{arg}".replace(".", "_"))
        return expr, self._ident(fname, alias, "aggregate alias")

    def _order_by(self, fname: str, info: TableInfo, order_by, desc_flag, aliases) -> list[str]:
        if order_by is None or order_by == [] or order_by == "":
            return []
        entries = []
        if isinstance(order_by, str):
            for part in order_by.split(","):
                m = ORDER_RE.match(part)
                if not m:
                    raise ApiError(f"db.{fname}: invalid order_by {_show(order_by)} "
                                   f"(use \"column\", \"column DESC\" or {{{{column=, desc=}}}})")
                direction = m.group(2)
                desc = direction.lower() == "desc" if direction else desc_flag is True
                entries.append((m.group(1), desc))
        elif isinstance(order_by, list):
            for entry in order_by:
                if isinstance(entry, str):
                    entries.append((entry, False))
                    continue
                entry = self._map(fname, entry, "each order_by entry")
                unknown = set(entry) - {"column", "desc"}
                if unknown or "column" not in entry:
                    raise ApiError(f"db.{fname}: each order_by entry must be {{column=, desc=}}")
                if entry.get("desc") not in (None, True, False):
                    raise ApiError(f"db.{fname}: order_by desc must be true or false")
                entries.append((entry["column"], entry.get("desc") is True))
        else:
            raise ApiError(f"db.{fname}: order_by must be a string or a list of {{column=, desc=}}")
        if len(entries) > MAX_ORDER_BY:
            raise ApiError(f"db.{fname}: at most {MAX_ORDER_BY} order_by columns")
        out = []
        for col, desc in entries:
            if not (isinstance(col, str) and col in aliases):
                col = self._column(fname, info, col, "order_by column")
            out.append(f"{q(col)} {'DESC' if desc else 'ASC'}")
        return out

    def _filter(self, fname: str, info: TableInfo, opts: dict) -> tuple[str, list]:
        """WHERE text (without the keyword, '' for none) and its parameters."""
        builder = _Where(self, fname, info)
        parts = []
        where = opts.get("where")
        if where is not None and where != [] and where != {}:
            parts.append(builder.top(where))
        groups = self._list(fname, opts.get("where_or"), "where_or")
        if groups:
            ors = []
            for group in groups:
                group = self._map(fname, group, "each where_or group")
                if group:
                    ors.append(builder.mapping(group))
            if ors:
                parts.append("(" + " OR ".join(ors) + ")")
        return " AND ".join(parts), builder.params

    def _opts(self, fname: str, opts, allowed: set) -> dict:
        opts = self._map(fname, opts, "options")
        unknown = sorted(set(opts) - allowed)
        if unknown:
            raise ApiError(f"db.{fname}: unknown option '{unknown[0]}' (allowed: {', '.join(sorted(allowed))})")
        return opts

    def _select_sql(self, fname: str, info: TableInfo, opts: dict, limit: int, offset: int):
        source = q(info.sql)
        joins = self._list(fname, opts.get("joins"), "joins")
        if joins:
            info, source = self._join_scope(fname, info, joins)
        select, group, order, aliases = self._select_parts(fname, info, opts)
        where, params = self._filter(fname, info, opts)
        having, having_params = self._having(fname, info, opts, group, aliases)
        if opts.get("distinct") not in (None, True, False):
            raise ApiError(f"db.{fname}: distinct must be true or false")
        sql = ["SELECT", "DISTINCT" if opts.get("distinct") else "", select, "FROM", source]
        if where:
            sql += ["WHERE", where]
        if group:
            sql += ["GROUP BY", ", ".join(group)]
        if having:
            sql += ["HAVING", having]
        if order:
            sql += ["ORDER BY", ", ".join(order)]
        sql += ["LIMIT ? OFFSET ?"]
        return " ".join(s for s in sql if s), params + having_params + [limit, offset], info

    def _join_scope(self, fname: str, info: TableInfo, joins: list) -> tuple[TableInfo, str]:
        """ModulaCMS's joins ({type=, table=, local_col=, foreign_col=}), between the plugin's own tables
        only: each table is one this plugin defined (its short name, prefixed here like every other), each
        column one of them has. Returns the scope the rest of the query resolves names in (the main
        table's columns by name, every table's as "table.column", a joined table's by name too when no
        other table has it) and the FROM text, each table aliased by its short name."""
        if len(joins) > MAX_JOINS:
            raise ApiError(f"db.{fname}: at most {MAX_JOINS} joins")
        tables = {info.short: info}
        parts = [f"{q(info.sql)} AS {q(info.short)}"]
        for n, join in enumerate(joins, 1):
            join = self._map(fname, join, "each join")
            unknown = sorted(set(join) - {"type", "table", "local_col", "foreign_col"})
            if unknown:
                raise ApiError(f"db.{fname}: join {n} has an unknown field '{unknown[0]}' "
                               "(use type, table, local_col, foreign_col)")
            kind = join.get("type") or "inner"
            if not isinstance(kind, str) or kind.lower() not in JOIN_TYPES:
                raise ApiError(f"db.{fname}: join {n}: type must be inner, left or right, not {_show(kind)}")
            if join.get("table") is None:
                raise ApiError(f"db.{fname}: join {n} needs a table")
            other = self._table(fname, join.get("table"))
            if other.short in tables:
                raise ApiError(f"db.{fname}: join {n}: table '{other.short}' is already in the query "
                               "(a table can be joined once, and not with itself)")
            tables[other.short] = other
            ends = []
            for key, default in (("local_col", info.short), ("foreign_col", other.short)):
                col = join.get(key)
                if col is None:
                    raise ApiError(f"db.{fname}: join {n} needs {key}")
                if not isinstance(col, str):
                    raise ApiError(f"db.{fname}: join {n}: {key} must be a string")
                table, dot, column = col.rpartition(".")
                table = table if dot else default
                self._ident(fname, table, f"join {key}'s table")
                self._ident(fname, column, f"join {key}")
                owner = tables.get(table)
                if owner is None:
                    raise DataError(f"db.{fname}: join {n}: {key} names table '{table}', which is not in the query")
                if column not in owner.types:
                    raise DataError(f"db.{fname}: unknown column '{column}' in table '{table}'")
                ends.append(f"{table}.{column}")
            parts.append(f"{JOIN_TYPES[kind.lower()]} {q(other.sql)} AS {q(other.short)} "
                         f"ON {q(ends[0])} = {q(ends[1])}")
        scope = TableInfo(info.short, info.sql, resolve={}, output={})
        seen: dict[str, int] = {}
        for short, t in tables.items():
            for col, ctype in t.types.items():
                scope.types[f"{short}.{col}"] = ctype
                scope.resolve[f"{short}.{col}"] = f"{short}.{col}"
                if short != info.short:
                    seen[col] = seen.get(col, 0) + 1
        for short, t in tables.items():
            for col, ctype in t.types.items():
                if short == info.short or (col not in info.types and seen[col] == 1):
                    scope.types[col] = ctype
                    scope.resolve[col] = f"{short}.{col}"
        used: set[str] = set()
        for short, t in tables.items():
            for col in t.types:
                key = col if col not in used else f"{short}.{col}"
                used.add(key)
                scope.output[f"{short}.{col}"] = key
                if key != col:
                    scope.types[key] = t.types[col]
        return scope, " ".join(parts)

    def _having(self, fname: str, info: TableInfo, opts: dict, group: list, aliases: dict) -> tuple[str, list]:
        """HAVING text and parameters: where's map and sequence forms over the grouped columns and the
        aggregates' aliases (db.agg_count("*", "n") ... having = {n = db.gt(1)})."""
        having = opts.get("having")
        if having is None or having == [] or having == {}:
            return "", []
        if not group and not aliases:
            raise ApiError(f"db.{fname}: having needs group_by or aggregate columns")
        scope = TableInfo(info.short, info.sql, types=dict(info.types),
                          resolve=dict(info.resolve) if info.resolve is not None else None)
        for alias in aliases:
            scope.types[alias] = "real"  # an aggregate's value: numbers bind as they are
            if scope.resolve is not None:
                scope.resolve[alias] = alias
        builder = _Where(self, fname, scope)
        return builder.top(having), builder.params

    # ---- schema ------------------------------------------------------------------------------
    def define_table(self, table=None, definition=None, *_):
        """Create the table (or add the columns and indexes a later definition declares)."""
        fname = "define_table"
        self._spend()
        short, sql_name = self._table_name(fname, table)
        spec = self._parse_definition(fname, short, definition)
        with self._atomic(fname):
            self._ensure_registry()
            self._check_schema_version()
            row = self._registry_row(sql_name)
            if "__" in short and (row is None or row[0] != self.plugin):
                # "__" separates the plugin from the table in SQL names (a table migrated from an
                # older site may keep one)
                raise ApiError(f"db.{fname}: invalid table name '{short}' (it must not contain '__')")
            found = self._sql(fname, "SELECT type FROM sqlite_master WHERE name = ?", (sql_name,)).fetchone()
            if row is not None and row[0] != self.plugin:
                raise ApiError(f"db.{fname}: table name '{sql_name}' already belongs to plugin '{row[0]}'")
            if found is not None and (row is None or found[0] != "table"):
                raise ApiError(f"db.{fname}: '{sql_name}' already exists and was not created by this plugin")
            self._check_foreign_keys(fname, sql_name, spec)
            if found is None:
                self._create(fname, sql_name, spec)
            else:
                spec = self._migrate(fname, short, sql_name, json.loads(row[1]), spec)
            self._create_indexes(fname, sql_name, spec["indexes"])
            now = utc_now()
            self._sql(fname, f"INSERT INTO {q(REGISTRY)} "
                      "(table_name, plugin, name, definition, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
                      "ON CONFLICT (table_name) DO UPDATE SET "
                      "definition = excluded.definition, updated_at = excluded.updated_at",
                      (sql_name, self.plugin, short, json.dumps(spec, sort_keys=True), now, now))
        self._tables.pop(sql_name, None)
        return None

    def _parse_definition(self, fname: str, short: str, definition) -> dict:
        definition = self._map(fname, definition, "the definition")
        self._note_unknown(fname, definition, {"columns", "indexes", "foreign_keys"}, f"table '{short}'")
        columns_in = definition.get("columns")
        if not isinstance(columns_in, list) or not columns_in:
            raise ApiError(f"db.{fname}: table '{short}' needs a non-empty columns list")
        if len(columns_in) > MAX_COLUMNS:
            raise ApiError(f"db.{fname}: at most {MAX_COLUMNS} columns per table")
        columns, indexes = [], []
        seen = set()
        for entry in columns_in:
            entry = self._map(fname, entry, "each column")
            name = entry.get("name")
            if name in AUTO_COLUMNS:
                raise ApiError(f"db.{fname}: column '{name}' is added automatically and may not be declared")
            self._ident(fname, name, "column name")
            self._note_unknown(fname, entry, {"name", "type", "not_null", "default", "unique"}, f"column '{name}'")
            if name in seen:
                raise ApiError(f"db.{fname}: column '{name}' is declared twice")
            seen.add(name)
            ctype = entry.get("type")
            if not isinstance(ctype, str) or ctype.lower() not in SQL_TYPES:
                raise ApiError(f"db.{fname}: column '{name}' has unknown type {_show(ctype)} "
                               f"(use one of {', '.join(SQL_TYPES)})")
            ctype = ctype.lower()
            for flag in ("not_null", "unique"):
                if entry.get(flag) not in (None, True, False):
                    raise ApiError(f"db.{fname}: column '{name}': {flag} must be true or false")
            col = {"name": name, "type": ctype, "not_null": entry.get("not_null") is True}
            if entry.get("default") is not None:
                col["default"] = _default_literal(fname, name, ctype, entry["default"])
            columns.append(col)
            if entry.get("unique") is True:
                indexes.append({"columns": [name], "unique": True})
        known = set(AUTO_COLUMNS) | seen
        for entry in self._list(fname, definition.get("indexes"), "indexes"):
            entry = self._map(fname, entry, "each index")
            self._note_unknown(fname, entry, {"columns", "unique", "name"}, "an index")
            cols = self._list(fname, entry.get("columns"), "index columns")
            if not cols:
                raise ApiError(f"db.{fname}: an index needs a non-empty columns list")
            for c in cols:
                self._ident(fname, c, "index column")
                if c not in known:
                    raise ApiError(f"db.{fname}: index column '{c}' is not a column of '{short}'")
            if len(set(cols)) != len(cols):
                raise ApiError(f"db.{fname}: index columns repeat a column")
            if entry.get("unique") not in (None, True, False):
                raise ApiError(f"db.{fname}: index unique must be true or false")
            indexes.append({"columns": list(cols), "unique": entry.get("unique") is True})
        if len(indexes) > MAX_INDEXES:
            raise ApiError(f"db.{fname}: at most {MAX_INDEXES} indexes per table")
        fks = []
        for entry in self._list(fname, definition.get("foreign_keys"), "foreign_keys"):
            entry = self._map(fname, entry, "each foreign key")
            self._note_unknown(fname, entry, {"column", "ref_table", "ref_column", "on_delete", "on_update"},
                               "a foreign key")
            col = self._ident(fname, entry.get("column"), "foreign key column")
            if col not in seen:
                raise ApiError(f"db.{fname}: foreign key column '{col}' is not a declared column of '{short}'")
            ref_table = entry.get("ref_table")
            if not isinstance(ref_table, str):
                raise ApiError(f"db.{fname}: foreign key on '{col}' needs ref_table (the full table name)")
            fk = {"column": col, "ref_table": ref_table,
                  "ref_column": self._ident(fname, entry.get("ref_column", "id"), "foreign key ref_column")}
            for action in ("on_delete", "on_update"):
                value = entry.get(action)
                if value is None:
                    continue
                key = " ".join(str(value).upper().split()) if isinstance(value, str) else None
                if key not in ON_ACTIONS:
                    raise ApiError(f"db.{fname}: foreign key {action} must be one of "
                                   "CASCADE, SET NULL, SET DEFAULT, RESTRICT, NO ACTION")
                fk[action] = ON_ACTIONS[key]
            fks.append(fk)
        return {"columns": columns, "indexes": _unique_indexes(indexes), "foreign_keys": fks}

    def _note_unknown(self, fname: str, entry: dict, known: set, where: str):
        # ModulaCMS ignores fields it does not know; so do we, but say so (it is often a typo).
        for key in sorted(set(entry) - known):
            self._warn(f"db.{fname}: {where}: ignoring unknown field '{key}'")

    def _check_foreign_keys(self, fname: str, sql_name: str, spec: dict):
        for fk in spec["foreign_keys"]:
            ref = fk["ref_table"]
            ref_short = None
            # the full name, or (ModulaCMS, and this app before the namespace change) plugin_<p>_<t>:
            # unambiguous here, since it must name one of this plugin's own tables
            for prefix in (self.prefix, self.legacy_prefix):
                if ref.startswith(prefix) and IDENT_RE.match(ref[len(prefix):]) and "__" not in ref[len(prefix):]:
                    ref_short = ref[len(prefix):]
                    break
            if ref_short is not None:
                ref = fk["ref_table"] = self.prefix + ref_short
            if ref_short is None:
                hint = f" (did you mean '{self.prefix}{ref}'?)" if IDENT_RE.match(ref) else ""
                raise ApiError(f"db.{fname}: foreign key on '{fk['column']}' references '{ref}', which is not one "
                               f"of this plugin's tables: ref_table must be a full name starting with "
                               f"'{self.prefix}'{hint}")
            if ref == sql_name:
                ref_cols = {c["name"] for c in spec["columns"]} | set(AUTO_COLUMNS)
                uniques = {tuple(i["columns"]) for i in spec["indexes"] if i["unique"]}
            else:
                row = self._registry_row(ref)
                if row is None or row[0] != self.plugin:
                    raise ApiError(f"db.{fname}: foreign key on '{fk['column']}' references '{ref}', which this "
                                   f"plugin has not defined (define '{ref_short}' first)")
                ref_def = json.loads(row[1])
                ref_cols = {c["name"] for c in ref_def["columns"]} | set(AUTO_COLUMNS)
                uniques = {tuple(i["columns"]) for i in ref_def["indexes"] if i["unique"]}
            if fk["ref_column"] not in ref_cols:
                raise ApiError(f"db.{fname}: foreign key on '{fk['column']}': '{ref}' has no column "
                               f"'{fk['ref_column']}'")
            if fk["ref_column"] != "id" and (fk["ref_column"],) not in uniques:
                raise ApiError(f"db.{fname}: foreign key on '{fk['column']}' must reference 'id' or a column "
                               f"with a unique index")

    @staticmethod
    def _column_sql(col: dict, fk: dict | None = None) -> str:
        parts = [q(col["name"]), SQL_TYPES[col["type"]]]
        if col["not_null"]:
            parts.append("NOT NULL")
        if "default" in col:
            parts.append(f"DEFAULT {col['default']}")
        if fk is not None:
            parts.append(_references(fk))
        return " ".join(parts)

    def _create(self, fname: str, sql_name: str, spec: dict):
        lines = ['"id" TEXT PRIMARY KEY NOT NULL']
        lines += [self._column_sql(c) for c in spec["columns"]]
        lines += ['"created_at" TEXT NOT NULL', '"updated_at" TEXT NOT NULL']
        lines += [f"FOREIGN KEY ({q(fk['column'])}) {_references(fk)}" for fk in spec["foreign_keys"]]
        self._sql(fname, f"CREATE TABLE IF NOT EXISTS {q(sql_name)} (\n  " + ",\n  ".join(lines) + "\n)")

    def _migrate(self, fname: str, short: str, sql_name: str, old: dict, spec: dict) -> dict:
        """Apply what can be applied to an existing table; refuse or warn about the rest."""
        actual = {r[1] for r in self._sql(fname, f"PRAGMA table_info({q(sql_name)})").fetchall()}
        old_cols = {c["name"]: c for c in old.get("columns", ())}
        new_cols = {c["name"]: c for c in spec["columns"]}
        new_fks = {fk["column"]: fk for fk in spec["foreign_keys"]}
        old_fks = {fk["column"]: fk for fk in old.get("foreign_keys", ())}
        for name, col in new_cols.items():
            before = old_cols.get(name)
            if name in actual:
                if before is not None and before["type"] != col["type"]:
                    raise ApiError(f"db.{fname}: column '{name}' of '{short}' is {before['type']} in the database; "
                                   f"changing it to {col['type']} is not supported (add a new column instead)")
                if before is not None and (before["not_null"], before.get("default")) != \
                        (col["not_null"], col.get("default")):
                    self._schema_problem(
                        f"db.{fname}: column '{name}' of '{short}' is declared "
                        f"{_constraint(col)} but the existing table has it {_constraint(before)}; SQLite cannot "
                        f"change a column, so the old constraint stays (add a new column instead)")
                    # the registry records what the table has, so declaring it as it is again is clean
                    col.update(not_null=before["not_null"])
                    col.pop("default", None)
                    if before.get("default") is not None:
                        col["default"] = before["default"]
                if new_fks.get(name) != old_fks.get(name):
                    self._warn(f"db.{fname}: '{short}'.{name}: a foreign key cannot be changed on an existing "
                               f"table; the old one stays")
                continue
            if col["not_null"] and "default" not in col:
                self._schema_problem(f"db.{fname}: cannot add NOT NULL column '{name}' to the existing table "
                                     f"'{short}' without a default (give it a default, or drop not_null)")
                raise ApiError(f"db.{fname}: cannot add NOT NULL column '{name}' without a default to the "
                               f"existing table '{short}'")
            fk = new_fks.get(name)
            if fk is not None and "default" in col:
                raise ApiError(f"db.{fname}: cannot add column '{name}' with both a foreign key and a default to "
                               f"the existing table '{short}'")
            self._sql(fname, f"ALTER TABLE {q(sql_name)} ADD COLUMN {self._column_sql(col, fk)}")
        kept = []
        for name, col in old_cols.items():
            if name not in new_cols and name in actual:
                self._warn(f"db.{fname}: column '{name}' of '{short}' is no longer declared; it stays in the "
                           f"database (columns are never dropped)")
                kept.append(dict(col, removed=True))
        new_index_keys = {(tuple(i["columns"]), i["unique"]) for i in spec["indexes"]}
        for index in old.get("indexes", ()):
            if (tuple(index["columns"]), index["unique"]) not in new_index_keys:
                self._warn(f"db.{fname}: index on {', '.join(index['columns'])} of '{short}' is no longer declared; "
                           f"it stays")
        return dict(spec, columns=spec["columns"] + kept)

    def _create_indexes(self, fname: str, sql_name: str, indexes: list):
        for index in indexes:
            name = f"idx_{sql_name}_{'_'.join(index['columns'])}" + ("_unique" if index["unique"] else "")
            owner = self._sql(fname, "SELECT tbl_name FROM sqlite_master WHERE name = ?", (name,)).fetchone()
            if owner is not None and owner[0] != sql_name:
                raise ApiError(f"db.{fname}: index name '{name}' is already used by another table")
            cols = ", ".join(q(c) for c in index["columns"])
            self._sql(fname, f"CREATE {'UNIQUE ' if index['unique'] else ''}INDEX IF NOT EXISTS {q(name)} "
                             f"ON {q(sql_name)} ({cols})")

    def create_index(self, table=None, opts=None, *_):
        """ModulaCMS's db.create_index(t, {columns=, unique=}); also recorded in the table definition."""
        fname = "create_index"
        self._spend()
        info = self._table(fname, table)
        opts = self._opts(fname, opts, {"columns", "unique"})
        cols = self._list(fname, opts.get("columns"), "columns")
        if not cols:
            raise ApiError(f"db.{fname}: columns must not be empty")
        for c in cols:
            self._column(fname, info, c)
        if opts.get("unique") not in (None, True, False):
            raise ApiError(f"db.{fname}: unique must be true or false")
        index = {"columns": list(cols), "unique": opts.get("unique") is True}
        with self._atomic(fname):
            self._create_indexes(fname, info.sql, [index])
            definition = dict(info.definition)
            definition["indexes"] = _unique_indexes(list(definition.get("indexes", [])) + [index])
            self._sql(fname, f"UPDATE {q(REGISTRY)} SET definition = ?, updated_at = ? WHERE table_name = ?",
                      (json.dumps(definition, sort_keys=True), utc_now(), info.sql))
        self._tables.pop(info.sql, None)
        return None

    # ---- reads -------------------------------------------------------------------------------
    def query(self, table=None, opts=None, *_):
        """Rows as a list (never nil)."""
        fname = "query"
        self._spend()
        info = self._table(fname, table)
        opts = self._opts(fname, opts, QUERY_OPTIONS)
        limit = self._limit(fname, opts.get("limit"), DEFAULT_LIMIT)
        sql, params, info = self._select_sql(fname, info, opts, limit, self._offset(fname, opts.get("offset")))
        names, rows = self._rows(fname, sql, params)
        return [self._decode_row(info, names, r) for r in rows]

    def query_one(self, table=None, opts=None, *_):
        """The first matching row, or nil."""
        fname = "query_one"
        self._spend()
        info = self._table(fname, table)
        opts = self._opts(fname, opts, QUERY_OPTIONS)
        self._limit(fname, opts.get("limit"), 1)
        sql, params, info = self._select_sql(fname, info, opts, 1, self._offset(fname, opts.get("offset")))
        names, rows = self._rows(fname, sql, params)
        return self._decode_row(info, names, rows[0]) if rows else None

    def count(self, table=None, opts=None, *_):
        fname = "count"
        self._spend()
        info = self._table(fname, table)
        opts = self._opts(fname, opts, SELECT_OPTIONS)
        where, params = self._filter(fname, info, opts)
        sql = f"SELECT COUNT(*) FROM {q(info.sql)}" + (f" WHERE {where}" if where else "")
        return self._sql(fname, sql, params).fetchone()[0]

    def exists(self, table=None, opts=None, *_):
        fname = "exists"
        self._spend()
        info = self._table(fname, table)
        opts = self._opts(fname, opts, SELECT_OPTIONS)
        where, params = self._filter(fname, info, opts)
        sql = f"SELECT EXISTS (SELECT 1 FROM {q(info.sql)}" + (f" WHERE {where}" if where else "") + ")"
        return bool(self._sql(fname, sql, params).fetchone()[0])

    # ---- writes ------------------------------------------------------------------------------
    def _values(self, fname: str, info: TableInfo, values, what: str = "values") -> dict:
        values = self._map(fname, values, what)
        out = {}
        for col, value in values.items():
            self._column(fname, info, col)
            out[col] = self._encode(fname, info, col, value)
        return out

    @staticmethod
    def _fill(values: dict, now: str) -> dict:
        if values.get("id") is None:
            values["id"] = str(ULID())
        values.setdefault("created_at", now)
        values.setdefault("updated_at", now)
        return values

    def insert(self, table=None, values=None, *_):
        """Insert one row; returns the row as stored (id, timestamps and defaults filled in)."""
        fname = "insert"
        self._spend()
        info = self._table(fname, table)
        row = self._fill(self._values(fname, info, values), utc_now())
        cols = list(row)
        self._charge(fname, self._row_cost(info, row))
        sql = (f"INSERT INTO {q(info.sql)} ({', '.join(q(c) for c in cols)}) "
               f"VALUES ({', '.join('?' * len(cols))}) RETURNING *")
        names, rows = self._rows(fname, sql, [row[c] for c in cols])
        return self._decode_row(info, names, rows[0])

    def insert_many(self, table=None, columns=None, rows=None, *_):
        """Insert rows given as lists matching columns, all or none; returns how many were inserted.

        Counts one operation per batch of 100 rows, as ModulaCMS does."""
        fname = "insert_many"
        self._spend()
        info = self._table(fname, table)
        cols = self._list(fname, columns, "columns")
        if not cols:
            raise ApiError(f"db.{fname}: columns must not be empty")
        for c in cols:
            self._column(fname, info, c)
        if len(set(cols)) != len(cols):
            raise ApiError(f"db.{fname}: columns repeat a column")
        rows = self._list(fname, rows, "rows") if not isinstance(rows, str) else None
        if rows is None:
            raise ApiError(f"db.{fname}: rows must be a list of lists")
        if not rows:
            raise ApiError(f"db.{fname}: rows must not be empty")
        if len(rows) > MAX_BULK_ROWS:
            raise ApiError(f"db.{fname}: at most {MAX_BULK_ROWS} rows per call (got {len(rows)})")
        now = utc_now()
        prepared = []
        for n, row in enumerate(rows, 1):
            if not isinstance(row, list) or len(row) != len(cols):
                raise ApiError(f"db.{fname}: row {n} must be a list of exactly {len(cols)} values "
                               f"(nil cannot appear inside a row)")
            values = {c: self._encode(fname, info, c, v) for c, v in zip(cols, row)}
            prepared.append(self._fill(values, now))
        all_cols = list(prepared[0])
        batch = max(1, min(BULK_BATCH_ROWS, MAX_SQL_VARIABLES // len(all_cols)))
        batches = [prepared[i:i + batch] for i in range(0, len(prepared), batch)]
        self._spend(len(batches) - 1)
        self._charge(fname, sum(self._row_cost(info, r) for r in prepared))
        head = f"INSERT INTO {q(info.sql)} ({', '.join(q(c) for c in all_cols)}) VALUES "
        one = "(" + ", ".join("?" * len(all_cols)) + ")"
        with self._atomic(fname):
            for chunk in batches:
                params = [v[c] for v in chunk for c in all_cols]
                self._sql(fname, head + ", ".join([one] * len(chunk)), params)
        return len(prepared)

    def upsert(self, table=None, opts=None, *_):
        """Insert, or on a conflict update (or skip). Returns the row as stored, or nil when
        do_nothing skipped an existing row."""
        fname = "upsert"
        self._spend()
        info = self._table(fname, table)
        opts = self._opts(fname, opts, {"values", "conflict_columns", "update", "do_nothing"})
        values = self._values(fname, info, opts.get("values"))
        if not values:
            raise ApiError(f"db.{fname}: values must not be empty")
        conflict = self._list(fname, opts.get("conflict_columns"), "conflict_columns")
        if not conflict:
            raise ApiError(f"db.{fname}: conflict_columns must not be empty")
        for c in conflict:
            self._column(fname, info, c, "conflict column")
            if c not in values:
                raise ApiError(f"db.{fname}: conflict column '{c}' needs a value in values")
        do_nothing = opts.get("do_nothing")
        if do_nothing not in (None, True, False):
            raise ApiError(f"db.{fname}: do_nothing must be true or false")
        update_in = opts.get("update")
        if do_nothing and update_in not in (None, [], {}):
            raise ApiError(f"db.{fname}: use either update or do_nothing, not both")
        now = utc_now()
        row = self._fill(values, now)
        cols = list(row)
        params = [row[c] for c in cols]
        sql = (f"INSERT INTO {q(info.sql)} ({', '.join(q(c) for c in cols)}) VALUES ({', '.join('?' * len(cols))}) "
               f"ON CONFLICT ({', '.join(q(c) for c in conflict)}) ")
        extra = 0  # what the update half of an upsert may write besides the row
        if do_nothing:
            sql += "DO NOTHING"
        else:
            if update_in not in (None, [], {}):
                update = self._values(fname, info, update_in, "update")
                extra = self._values_cost(info, update)
                update.setdefault("updated_at", now)
                sets = [f"{q(c)} = ?" for c in update]
                params += list(update.values())
            else:
                keep = set(conflict) | {"id", "created_at"}
                sets = [f"{q(c)} = excluded.{q(c)}" for c in cols if c not in keep]
            sql += "DO UPDATE SET " + ", ".join(sets)
        self._charge(fname, self._row_cost(info, row) + extra)
        names, rows = self._rows(fname, sql + " RETURNING *", params)
        return self._decode_row(info, names, rows[0]) if rows else None

    def update(self, table=None, opts=None, *_):
        """Update the rows matching where (required); sets updated_at. Returns how many changed."""
        fname = "update"
        self._spend()
        info = self._table(fname, table)
        opts = self._opts(fname, opts, {"set", "where", "where_or"})
        changes = self._values(fname, info, opts.get("set"), "set")
        if not changes:
            raise ApiError(f"db.{fname}: 'set' is required and must not be empty")
        where, wparams = self._filter(fname, info, opts)
        if not where:
            raise ApiError(f"db.{fname}: 'where' is required and must not be empty "
                           f"(it protects against changing every row)")
        changes.setdefault("updated_at", utc_now())
        sql = (f"UPDATE {q(info.sql)} SET {', '.join(f'{q(c)} = ?' for c in changes)} WHERE {where}")
        nbytes = self._values_cost(info, changes)
        # how many rows it changes is known only afterwards: charged inside a savepoint, which the
        # quota error rolls back
        with self._atomic(fname):
            count = self._sql(fname, sql, list(changes.values()) + wparams).rowcount
            self._charge(fname, nbytes * count, written=True)
        return count

    def delete(self, table=None, opts=None, *_):
        """Delete the rows matching where (required). Returns how many were deleted."""
        fname = "delete"
        self._spend()
        info = self._table(fname, table)
        opts = self._opts(fname, opts, {"where", "where_or"})
        where, params = self._filter(fname, info, opts)
        if not where:
            raise ApiError(f"db.{fname}: 'where' is required and must not be empty "
                           f"(it protects against deleting every row)")
        count = self._sql(fname, f"DELETE FROM {q(info.sql)} WHERE {where}", params).rowcount
        if count:
            self._uncharge()
        return count

    # ---- transactions (the Lua side of db.transaction is in bootstrap.lua) -------------------
    def tx_begin(self, *_):
        if self._tx is not None:
            raise ApiError("db.transaction: nested transactions are not supported")
        self._spend()
        # atomic() is a real transaction at top level and a savepoint inside the host's own
        # (a before-hook's content transaction), so plugin work commits or rolls back with it.
        tx = self._atomic("transaction")
        tx.__enter__()
        self._tx = tx
        self.tx_failed = None

    def tx_commit(self, *_):
        """Commit; or, when a db.* call inside returned a data error, roll back and return its text."""
        tx, self._tx = self._tx, None
        if tx is None:
            raise ApiError("db.transaction: no transaction is open")
        failed, self.tx_failed = self.tx_failed, None
        if failed is not None:
            self._uncharge()
            tx.rollback()
            return failed
        tx.__exit__(None, None, None)
        return None

    def tx_rollback(self, *_):
        tx, self._tx = self._tx, None
        self.tx_failed = None
        if tx is not None:
            self._uncharge()
            tx.rollback()

    def abandon(self):
        """Roll back a transaction left open (a VM given back mid-transaction). Same thread only."""
        if self._tx is not None:
            try:
                self.tx_rollback()
            except ApiError:
                log.exception("[%s] could not roll back an abandoned transaction", self.plugin)

    # ---- pure helpers: no database, no operation counted -------------------------------------
    @staticmethod
    def ulid(*_):
        return str(ULID())

    @staticmethod
    def timestamp(*_):
        return utc_now()

    @staticmethod
    def timestamp_ago(seconds=None, *_):
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise ApiError("db.timestamp_ago: seconds must be a number")
        try:
            moment = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(seconds=seconds)
        except OverflowError:
            raise ApiError("db.timestamp_ago: seconds is out of range") from None
        return rfc3339(moment)

    @staticmethod
    def _marker(op: str, value=None, has_value=True):
        if has_value and value is None:
            raise ApiError(f"db.{op}: value must not be nil (use db.is_null())")
        if isinstance(value, (dict, list)):
            raise ApiError(f"db.{op}: value must be a string, number or boolean")
        return {OP_KEY: op, VAL_KEY: _raw(value)} if has_value else {OP_KEY: op}

    def eq(self, value=None, *_):
        return self._marker("eq", value)

    def neq(self, value=None, *_):
        return self._marker("neq", value)

    def gt(self, value=None, *_):
        return self._marker("gt", value)

    def gte(self, value=None, *_):
        return self._marker("gte", value)

    def lt(self, value=None, *_):
        return self._marker("lt", value)

    def lte(self, value=None, *_):
        return self._marker("lte", value)

    def like(self, pattern=None, *_):
        if not isinstance(pattern, str):
            raise ApiError("db.like: pattern must be a string")
        self._check_pattern("like", "pattern", pattern)
        return self._marker("like", pattern)

    def not_like(self, pattern=None, *_):
        if not isinstance(pattern, str):
            raise ApiError("db.not_like: pattern must be a string")
        self._check_pattern("not_like", "pattern", pattern)
        return self._marker("not_like", pattern)

    @staticmethod
    def _values_list(op: str, values) -> list:
        # db.in_list(a, b, c) as ModulaCMS, or db.in_list({a, b, c})
        if len(values) == 1 and isinstance(values[0], list):
            values = values[0]
        values = list(values)
        if not values:
            raise ApiError(f"db.{op}: needs at least one value")
        if len(values) > MAX_IN_VALUES:
            raise ApiError(f"db.{op}: at most {MAX_IN_VALUES} values")
        if any(v is None or isinstance(v, (dict, list)) for v in values):
            raise ApiError(f"db.{op}: values must be strings, numbers or booleans (no nil)")
        return [_raw(v) for v in values]

    def in_list(self, *values):
        return {OP_KEY: "in", VAL_KEY: self._values_list("in_list", values)}

    def not_in(self, *values):
        return {OP_KEY: "not_in", VAL_KEY: self._values_list("not_in", values)}

    def between(self, low=None, high=None, *_):
        if low is None or high is None:
            raise ApiError("db.between: needs two values (low, high)")
        if isinstance(low, (dict, list)) or isinstance(high, (dict, list)):
            raise ApiError("db.between: values must be strings or numbers")
        return {OP_KEY: "between", VAL_KEY: [_raw(low), _raw(high)]}

    def is_null(self, *_):
        return {OP_KEY: "is_null"}

    def is_not_null(self, *_):
        return {OP_KEY: "is_not_null"}

    @staticmethod
    def _agg(func: str, arg, alias):
        name = f"agg_{func.lower()}"
        if not isinstance(arg, str):
            raise ApiError(f"db.{name}: column must be a string (or \"*\" for agg_count)")
        if alias is not None and not isinstance(alias, str):
            raise ApiError(f"db.{name}: alias must be a string")
        marker = {AGG_KEY: func, AGG_ARG_KEY: arg}
        if alias:
            marker[AGG_ALIAS_KEY] = alias
        return marker

    def agg_count(self, arg="*", alias=None, *_):
        return self._agg("COUNT", arg, alias)

    def agg_sum(self, arg=None, alias=None, *_):
        return self._agg("SUM", arg, alias)

    def agg_avg(self, arg=None, alias=None, *_):
        return self._agg("AVG", arg, alias)

    def agg_min(self, arg=None, alias=None, *_):
        return self._agg("MIN", arg, alias)

    def agg_max(self, arg=None, alias=None, *_):
        return self._agg("MAX", arg, alias)


class _Atomic:
    """peewee's atomic() entered and left by hand, with database errors turned into ApiError."""

    def __init__(self, ctx, fname: str, stack: list | None = None):
        self.ctx, self.fname = ctx, fname
        self.stack = stack if stack is not None else []

    def __enter__(self):
        try:
            self.ctx.__enter__()
        except (peewee.DatabaseError, sqlite3.Error) as exc:
            raise ApiError(f"db.{self.fname}: {exc}") from None
        self.stack.append(self)
        return self

    def __exit__(self, exc_type, exc, tb):
        if self in self.stack:
            self.stack.remove(self)
        try:
            self.ctx.__exit__(exc_type, exc, tb)
        except (peewee.DatabaseError, sqlite3.Error) as err:
            if exc_type is None:
                raise ApiError(f"db.{self.fname}: commit failed: {err}") from None
            log.warning("rollback failed after %s: %s", exc_type.__name__, err)
        return False

    def rollback(self):
        self.__exit__(ApiError, ApiError("rolled back"), None)


class _Where:
    """Compiles the map form and the sequence form of `where` into SQL text plus parameters."""

    def __init__(self, db: PluginDB, fname: str, info: TableInfo):
        self.db, self.fname, self.info = db, fname, info
        self.params: list = []
        self.terms = 0

    def fail(self, msg: str):
        raise ApiError(f"db.{self.fname}: where: {msg}")

    def top(self, where) -> str:
        if isinstance(where, dict):
            if any(not isinstance(k, str) for k in where):
                self.fail("a table cannot mix named fields ({status=\"x\"}) and list entries ({{\"col\",\"op\",v}})")
            return self.mapping(where)
        if isinstance(where, list):
            return self.node(where, 0)
        self.fail("must be a table")

    def column(self, name) -> str:
        if not isinstance(name, str):
            self.fail("column names must be strings")
        return self.db._column(self.fname, self.info, name)

    def count(self):
        self.terms += 1
        if self.terms > MAX_CONDITIONS:
            self.fail(f"at most {MAX_CONDITIONS} conditions")

    def mapping(self, where: dict) -> str:
        parts = []
        for col, value in where.items():
            col = self.column(col)
            if isinstance(value, dict) and OP_KEY in value:
                op = value.get(OP_KEY)
                op = op.lower() if isinstance(op, str) else None
                op = "in" if op == "in_list" else op
                if op not in MARKER_TO_SQL:
                    self.fail(f"unknown condition operator {_show(value.get(OP_KEY))} for '{col}'")
                if set(value) - {OP_KEY, VAL_KEY}:
                    self.fail(f"condition for '{col}' has unexpected fields")
                parts.append(self.leaf(col, MARKER_TO_SQL[op], value.get(VAL_KEY), VAL_KEY in value))
            else:
                parts.append(self.leaf(col, "=", value, True))
        return " AND ".join(parts) if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def node(self, node, depth: int) -> str:
        if depth > MAX_CONDITION_DEPTH:
            self.fail(f"conditions nested deeper than {MAX_CONDITION_DEPTH}")
        if isinstance(node, dict):
            if not node or any(not isinstance(k, str) for k in node):
                self.fail("each condition must be {\"col\", \"op\", value}, a group, or a table of named fields")
            return self.mapping(node)
        if not isinstance(node, list) or not node:
            self.fail("each condition must be a non-empty table")
        first = node[0]
        if isinstance(first, str):
            keyword = first.upper()
            if keyword in ("AND", "OR"):
                if len(node) != 2 or not isinstance(node[1], list) or not node[1]:
                    self.fail(f"{keyword} takes one list of conditions: {{\"{keyword}\", {{...}}}}")
                children = [self.node(child, depth + 1) for child in node[1]]
                return "(" + f" {keyword} ".join(children) + ")"
            if keyword == "NOT":
                if len(node) != 2:
                    self.fail("NOT takes one condition: {\"NOT\", {...}}")
                return f"(NOT {self.node(node[1], depth + 1)})"
            if len(node) not in (2, 3):
                self.fail(f"condition on '{first}' must be {{\"col\", \"op\", value}}")
            op = node[1]
            if isinstance(op, dict) and OP_KEY in op:  # {"col", db.gt(3)}
                return self.mapping({first: op})
            if not isinstance(op, str) or " ".join(op.upper().split()) not in SEQ_OPS:
                self.fail(f"unknown operator {_show(op)} (use one of = != < <= > >= LIKE, NOT LIKE, IN, NOT IN, "
                          f"BETWEEN, IS NULL, IS NOT NULL)")
            sql_op = SEQ_OPS[" ".join(op.upper().split())]
            return self.leaf(self.column(first), sql_op, node[2] if len(node) == 3 else None, len(node) == 3)
        if isinstance(first, (list, dict)):
            children = [self.node(child, depth + 1) for child in node]
            return children[0] if len(children) == 1 else "(" + " AND ".join(children) + ")"
        self.fail("a condition must start with a column name, AND, OR, NOT, or a nested condition")

    def bind(self, col: str, value, raw: bool = False):
        if value is None:
            self.fail(f"value for '{col}' must not be nil (use db.is_null())")
        if isinstance(value, float) and math.isnan(value):
            self.fail(f"value for '{col}' is not a number")
        ctype = self.info.types[col]
        if raw:
            if not isinstance(value, str):
                self.fail(f"LIKE on '{col}' needs a string pattern")
            self.db._check_pattern(self.fname, col, value)
            return _blob(value) if ctype == "blob" else value
        self.db._check_value(self.fname, col, value)
        if ctype in ("json", "boolean"):
            return self.db._encode(self.fname, self.info, col, value)
        if isinstance(value, (dict, list)):
            self.fail(f"value for '{col}' must be a string, number or boolean, not a table")
        if isinstance(value, bool):
            return int(value)
        if ctype == "blob" and isinstance(value, str):
            return _blob(value)
        return value

    def leaf(self, col: str, op: str, value, has_value: bool) -> str:
        self.count()
        if op in ("IS NULL", "IS NOT NULL"):
            if has_value and value is not None:
                self.fail(f"{op} on '{col}' takes no value")
            return f"{q(col)} {op}"
        if not has_value:
            self.fail(f"{op} on '{col}' needs a value")
        if op in ("IN", "NOT IN"):
            if not isinstance(value, list) or not value:
                self.fail(f"{op} on '{col}' needs a non-empty list of values")
            if len(value) > MAX_IN_VALUES:
                self.fail(f"{op} on '{col}' takes at most {MAX_IN_VALUES} values")
            self.params += [self.bind(col, v) for v in value]
            return f"{q(col)} {op} ({', '.join('?' * len(value))})"
        if op in ("BETWEEN", "NOT BETWEEN"):
            if not isinstance(value, list) or len(value) != 2:
                self.fail(f"{op} on '{col}' needs exactly two values {{low, high}}")
            self.params += [self.bind(col, value[0]), self.bind(col, value[1])]
            return f"{q(col)} {op} ? AND ?"
        self.params.append(self.bind(col, value, raw=op in ("LIKE", "NOT LIKE")))
        return f"{q(col)} {op} ?"


# ---- module helpers --------------------------------------------------------------------------
def _integer(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _show(value) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:60] + "…")
    if value is None:
        return "nil"
    if isinstance(value, (dict, list)):
        return "a table"
    return repr(value)


def _type_from_sql(decl: str) -> str:
    decl = (decl or "").upper()
    if "INT" in decl:
        return "integer"
    if "REAL" in decl or "FLOA" in decl or "DOUB" in decl:
        return "real"
    if "BLOB" in decl:
        return "blob"
    return "text"


def _indexes(definition: dict) -> list:
    return [i for i in definition.get("indexes", ()) if isinstance(i, dict)]


def _index_weights(definition: dict) -> dict:
    """Column -> how many of the table's declared indexes hold it (each stores the value again)."""
    weights: dict = {}
    for index in _indexes(definition):
        for col in index.get("columns", ()):
            weights[col] = weights.get(col, 0) + 1
    return weights


def _references(fk: dict) -> str:
    sql = f"REFERENCES {q(fk['ref_table'])} ({q(fk['ref_column'])})"
    if fk.get("on_delete"):
        sql += f" ON DELETE {fk['on_delete']}"
    if fk.get("on_update"):
        sql += f" ON UPDATE {fk['on_update']}"
    return sql


def _unique_indexes(indexes: list) -> list:
    seen, out = set(), []
    for index in indexes:
        key = (tuple(index["columns"]), index["unique"])
        if key not in seen:
            seen.add(key)
            out.append({"columns": list(index["columns"]), "unique": index["unique"]})
    return out


def _default_literal(fname: str, col: str, ctype: str, value) -> str:
    """A column DEFAULT as SQL text. DDL cannot bind parameters, so the value is checked against the
    column type and rendered as a number or a quoted string literal."""
    where = f"db.{fname}: default of column '{col}' ({ctype})"
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(f"{where} must be a finite number")
    if ctype == "json":
        if isinstance(value, str):
            try:
                text = canonical_json(json.loads(value))
            except (ValueError, RecursionError):
                raise ApiError(f"{where} must be a table or JSON text") from None
        else:
            try:
                text = canonical_json(value)
            except (ValueError, TypeError, RecursionError):
                raise ApiError(f"{where} must be a table or JSON text") from None
        return _quote(where, text)
    if isinstance(value, (dict, list)):
        raise ApiError(f"{where} cannot be a table")
    if ctype == "boolean":
        if isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)):
            return "1" if value else "0"
        raise ApiError(f"{where} must be true or false")
    if ctype == "integer":
        n = int(value) if isinstance(value, bool) else _integer(value)
        if n is None:
            raise ApiError(f"{where} must be an integer")
        return str(n)
    if ctype == "real":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ApiError(f"{where} must be a number")
        return repr(float(value))
    if isinstance(value, bool):
        raise ApiError(f"{where} must be a string")
    if isinstance(value, (int, float)):
        return _quote(where, str(value))
    return _quote(where, value)


def _quote(where: str, text: str) -> str:
    if len(text) > MAX_DEFAULT_CHARS:
        raise ApiError(f"{where} is longer than {MAX_DEFAULT_CHARS} characters")
    if "\x00" in text:
        raise ApiError(f"{where} must not contain NUL characters")
    return "'" + text.replace("'", "''") + "'"


# ---- the namespace migration -----------------------------------------------------------------
def migrate_namespace(database) -> list[tuple[str, str]]:
    """Rename plugin tables registered under the old plugin_<plugin>_<table> names to
    plugin_<plugin>__<table>, with the indexes named after them and the foreign keys that reference
    them, in one transaction. Idempotent: a site already migrated costs one query. Returns the
    (old, new) names renamed."""
    exists = database.execute_sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                  (REGISTRY,)).fetchone()
    if exists is None:
        return []
    rows = database.execute_sql(f"SELECT table_name, plugin, name, definition FROM {q(REGISTRY)}").fetchall()
    renames = {}
    for old, plugin, short, _definition in rows:
        try:
            new = sql_table_name(plugin, short)
        except ValueError:
            # a name the new rule would refuse (a table holding "__"): it keeps working by its
            # registry row under the name it has
            if "__" not in short or not PLUGIN_RE.match(plugin):
                log.warning("plugin table %s has a name this version cannot use; left as it is", old)
                continue
            new = f"plugin_{plugin}__{short}"
        if new != old:
            renames[old] = new
    if not renames:
        return []
    done = []
    with database.atomic():
        taken = {r[0] for r in database.execute_sql("SELECT name FROM sqlite_master").fetchall()}
        for old, new in renames.items():
            if new in taken or old not in taken:
                log.warning("cannot rename plugin table %s to %s (%s)", old, new,
                            "the name is taken" if new in taken else "the table is missing")
                continue
            # SQLite (3.26+) rewrites the REFERENCES of other tables and the indexes' ON clauses
            database.execute_sql(f"ALTER TABLE {q(old)} RENAME TO {q(new)}")
            taken.discard(old)
            taken.add(new)
            old_prefix, new_prefix = f"idx_{old}_", f"idx_{new}_"
            for name, sql in database.execute_sql(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
                    (new,)).fetchall():
                if not name.startswith(old_prefix) or f"{new_prefix}{name[len(old_prefix):]}" in taken:
                    continue
                renamed = new_prefix + name[len(old_prefix):]
                database.execute_sql(f"DROP INDEX {q(name)}")
                database.execute_sql(sql.replace(q(name), q(renamed), 1))
                taken.discard(name)
                taken.add(renamed)
            database.execute_sql(f"UPDATE {q(REGISTRY)} SET table_name = ? WHERE table_name = ?", (new, old))
            done.append((old, new))
        moved = dict(done)
        for table_name, definition in database.execute_sql(
                f"SELECT table_name, definition FROM {q(REGISTRY)}").fetchall():
            spec = json.loads(definition)
            fks = spec.get("foreign_keys") or []
            if any(fk.get("ref_table") in moved for fk in fks):
                for fk in fks:
                    fk["ref_table"] = moved.get(fk.get("ref_table"), fk.get("ref_table"))
                database.execute_sql(f"UPDATE {q(REGISTRY)} SET definition = ? WHERE table_name = ?",
                                     (json.dumps(spec, sort_keys=True), table_name))
    for old, new in done:
        log.info("renamed plugin table %s to %s", old, new)
    return done
