"""The Lua `core` module (SPEC 3.10): a plugin reads and writes the site's own content, compatible with
ModulaCMS's core.* API.

Which tables, and what each allows, is fixed here (``CORE_TABLES``): ``content`` (alias ``content_data``,
ModulaCMS's name) read and write, ``revisions`` (alias ``content_revision``) read only, nothing else. A
table name is looked up as it is in that map and never reaches SQL: each table's SQL is the fixed text
below, a subquery of the live entries (the Trash is invisible, as to every other read). Columns, where,
order_by go through the `db` module's builders (identifier checks, bound values, the caller's deadline).

Reads are SQL. Writes go through the content service, exactly as the window's and the admin API's do
(validation, revisions, every plugin's hooks), as "plugin:<name>" in the revision's source. A hook that
writes content fires hooks again: runtime/nesting.py bounds the chain at ``core_max_depth``.

Access is declared (``permissions`` core:read / core:write, or ModulaCMS's ``core_access``) and approved by
the author per plugin (approvals.py). As in ModulaCMS, a table that is not accessible, access that was
not approved and data errors answer ``nil, err``; argument errors and budgets raise. Not at module scope,
in ``on_init`` or ``on_shutdown``: a new version's on_init runs before its changed permissions revoke the
old version's approvals (manager.py), so core access there could outlive what the author approved.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from ...errors import ModulaError
from ..errors import ApiError
from ..runtime import nesting
from ..runtime.sandbox import MAX_ITEMS, _lua_source
from .db import DEFAULT_LIMIT, PluginDB, TableInfo, lua_args, q

CONTENT_TYPES = {"id": "text", "type": "text", "title": "text", "slug": "text", "body": "text",
                 "status": "text", "fields": "json", "published_at": "timestamp", "created_at": "timestamp",
                 "updated_at": "timestamp"}
REVISION_TYPES = {"id": "text", "content_id": "text", "number": "integer", "type": "text", "title": "text",
                  "slug": "text", "body": "text", "status": "text", "fields": "json", "created_at": "timestamp",
                  "source": "text", "changed_by": "json"}
# ModulaCMS's content_data names for the columns both models have (content_data_id is a ULID there too)
MODULA_ALIASES = {"content_data_id": "id", "date_created": "created_at", "date_modified": "updated_at"}
# ModulaCMS's content_data columns this model has no equivalent of (no routes, datatypes, authors or
# content tree here): on content_data they read as nil and are ignored in writes
MODULA_ONLY = ("parent_id", "first_child_id", "next_sibling_id", "prev_sibling_id", "route_id", "datatype_id",
               "author_id")
# ModulaCMS's core.* options (no joins, group_by, having, distinct there either)
CORE_OPTIONS = {"where", "where_or", "columns", "order_by", "desc", "limit", "offset"}
WRITE_OPTIONS = {"set", "where", "where_or"}
LIVE = 'FROM "content" WHERE "deleted_at" IS NULL'


@dataclass(frozen=True)
class CoreTable:
    name: str  # as the plugin named it
    sql: str  # trusted: the subquery the plugin's query selects from
    types: dict
    write: bool
    aliases: bool = False  # rows carry ModulaCMS's column names too


def _columns(types: dict) -> str:
    return ", ".join(q(c) for c in types)


def _content_table(name: str, aliases: bool) -> CoreTable:
    types = dict(CONTENT_TYPES)
    cols = _columns(CONTENT_TYPES)
    if aliases:
        cols += ", " + ", ".join(f"{q(ours)} AS {q(theirs)}" for theirs, ours in MODULA_ALIASES.items())
        cols += ", " + ", ".join(f"NULL AS {q(c)}" for c in MODULA_ONLY)
        types.update({theirs: CONTENT_TYPES[ours] for theirs, ours in MODULA_ALIASES.items()})
        types.update({c: "text" for c in MODULA_ONLY})
    return CoreTable(name, f"(SELECT {cols} {LIVE})", types, write=True, aliases=aliases)


def _revision_table(name: str) -> CoreTable:
    sql = (f'(SELECT {_columns(REVISION_TYPES)} FROM "content_revision" '
           f'WHERE "content_id" IN (SELECT "id" {LIVE}))')
    return CoreTable(name, sql, dict(REVISION_TYPES), write=False)


CORE_TABLES = {
    "content": _content_table("content", False),
    "content_data": _content_table("content_data", True),
    "revisions": _revision_table("revisions"),
    "content_revision": _revision_table("content_revision"),
}


class _Refused(Exception):
    """A call answered nil, err (ModulaCMS's data-error convention)."""


class CoreArgumentError(ApiError):
    """A call the plugin got wrong (or may not make here): raised, as ModulaCMS raises these."""


class CoreDB(PluginDB):
    """The read side: db's query builders over the fixed subqueries of CORE_TABLES."""

    # bytes of rows one call may read: the site's content is not bounded by a plugin's quota, and what
    # the VM's memory limit cannot hold is refused before the host holds all of it
    max_bytes: int = 32 * 1024 * 1024

    def _fetch(self, fname: str, cursor) -> list:
        rows, total = [], 0
        while True:
            chunk = cursor.fetchmany(64)
            if not chunk:
                return rows
            for row in chunk:
                total += sum(len(v) + 16 if isinstance(v, (str, bytes)) else 16 for v in row)
            if total > self.max_bytes:
                raise ApiError(f"core.{fname}: the rows asked for are larger than {self.max_bytes} bytes "
                               "(the plugin's memory limit): ask for fewer rows or columns")
            rows.extend(chunk)

    def select(self, fname: str, table: CoreTable, opts: dict, limit: int, offset: int = 0,
               columns: str | None = None):
        info = TableInfo(table.name, table.sql, types=dict(table.types))
        if columns is None:
            select, _group, order, _aliases = self._select_parts(fname, info, opts)
        else:
            select, order = columns, []
        where, params = self._filter(fname, info, opts)
        sql = f"SELECT {select} FROM {table.sql} AS t"
        if where:
            sql += f" WHERE {where}"
        if order:
            sql += " ORDER BY " + ", ".join(order)
        sql += " LIMIT ? OFFSET ?"
        names, rows = self._rows(fname, sql, params + [limit, offset])
        return info, names, rows

    def scalar(self, fname: str, table: CoreTable, opts: dict, what: str):
        info = TableInfo(table.name, table.sql, types=dict(table.types))
        # columns, order_by, limit and offset do not change a count, but are checked all the same
        self._select_parts(fname, info, opts)
        self._limit(fname, opts.get("limit"), DEFAULT_LIMIT)
        self._offset(fname, opts.get("offset"))
        where, params = self._filter(fname, info, opts)
        inner = f"SELECT 1 FROM {table.sql} AS t" + (f" WHERE {where}" if where else "")
        sql = f"SELECT COUNT(*) FROM ({inner})" if what == "count" else f"SELECT EXISTS ({inner})"
        return self._sql(fname, sql, params).fetchone()[0]


class CoreModule:
    """The per-VM core module: the host functions behind lua/core.lua."""

    FUNCTIONS = ("query", "query_one", "count", "exists", "insert", "update", "delete")

    def __init__(self, vm):
        self.vm = vm
        self._db: CoreDB | None = None
        self._told: set = set()  # refusals already written to the plugin's log (once per VM each)

    def install(self):
        sb = self.vm.sandbox
        py = sb.raw_host_table({name: sb.host_function(self._entry(name), convert_args=False, name=f"core.{name}")
                                for name in self.FUNCTIONS})
        module = sb.lua.execute(_lua_source("core.lua"), sb.trusted, py, name="=core", mode="t")
        sb.fn("install_module")(b"core", module)

    # ---- plumbing ----------------------------------------------------------------------------
    def _entry(self, fname: str):
        method = getattr(self, "_" + fname)

        def call(phase, *args):
            sb = self.vm.sandbox
            budget = [MAX_ITEMS, sb.memory_limit]  # one copy budget for all the arguments, as db's
            args = [lua_args(sb.from_lua(a, binary=True, _budget=budget)) for a in args]
            self._check_phase(fname, phase)
            self.vm.ops.spend()
            try:
                return method(fname, *args)
            except _Refused as exc:
                return None, str(exc)
            except ApiError as exc:
                if isinstance(exc, CoreArgumentError) or self.vm.ops.exceeded or self._late():
                    raise  # argument errors and budgets raise
                return None, _renamed(fname, str(exc))
        return call

    def _late(self) -> bool:
        sb = self.vm.sandbox
        return sb._armed and time.monotonic() > sb._deadline

    def _check_phase(self, fname: str, phase):
        phase = phase.decode() if isinstance(phase, bytes) else str(phase)
        vm = self.vm
        if phase == "module":
            raise ApiError(f"core.{fname}() cannot be called at module scope")
        if phase == "init":
            where = "on_shutdown()" if vm.current_call == "on_shutdown" else "on_init()"
            raise ApiError(f"core.{fname}() cannot be called inside {where}")

    def _reader(self) -> CoreDB:
        if self._db is None:
            vm = self.vm
            db = CoreDB(vm.name, vm.ctx.database, None, vm.settings)  # ops are spent per call, in _entry
            sandbox = vm.sandbox
            db.deadline = lambda: sandbox._deadline if sandbox._armed else None
            db.warn = lambda message: vm._emit("warn", message, None)
            db.max_bytes = sandbox.memory_limit or CoreDB.max_bytes
            self._db = db
        return self._db

    def _table(self, fname: str, table, access: str) -> CoreTable:
        """The table's policy after every check: accessible, allowed, declared, approved."""
        if not isinstance(table, str):
            raise CoreArgumentError(f"bad argument #1 to '{fname}' (table name expected)")
        policy = CORE_TABLES.get(table)
        shown = table if len(table) <= 80 else table[:80] + "…"
        if policy is None:
            raise _Refused(f"core.{fname}: table {shown!r} is not accessible to plugins "
                           f"(only content, content_data and revisions are)")
        if access == "write" and not policy.write:
            raise _Refused(f"core.{fname}: table {shown!r} does not allow write access")
        vm = self.vm
        manifest = vm.manifest
        if manifest is not None and access not in manifest.core:
            self._tell(access, f"core.{fname} refused: the plugin did not declare the 'core:{access}' permission")
            raise _Refused(f"core.{fname}: plugin {vm.name!r} did not declare the 'core:{access}' permission")
        check = vm.ctx.core_approved
        if check is None or not check(vm.name, access):
            self._tell(access, f"core.{fname} refused: {access} access to the site's content is not approved "
                               "(approve it in the plugin manager, or: modula plugin approve "
                               f"{vm.name} --core {access})")
            raise _Refused(f"core.{fname}: plugin {vm.name!r} has no approved {access} access to table {shown!r}")
        if vm.ctx.database is None:
            raise _Refused(f"core.{fname}: the site's content is not available here")
        return policy

    def _tell(self, access: str, message: str):
        if access not in self._told:
            self._told.add(access)
            self.vm._emit("warn", message, None)

    @staticmethod
    def _opts(fname: str, opts, allowed: set) -> dict:
        if opts is None or opts == [] or opts is False:
            return {}
        if not isinstance(opts, dict) or any(not isinstance(k, str) for k in opts):
            raise ApiError(f"core.{fname}: options must be a table with named fields")
        unknown = sorted(set(opts) - allowed)
        if unknown:
            raise ApiError(f"core.{fname}: unknown option '{unknown[0]}' (allowed: {', '.join(sorted(allowed))})")
        return opts

    def _row(self, table: CoreTable, row: dict) -> dict:
        if table.aliases:
            row = dict(row, **{theirs: row.get(ours) for theirs, ours in MODULA_ALIASES.items()})
        return row

    # ---- reads -------------------------------------------------------------------------------
    def _query(self, fname, table=None, opts=None, *_):
        policy = self._table(fname, table, "read")
        opts = self._opts(fname, opts, CORE_OPTIONS)
        db = self._reader()
        limit = db._limit(fname, opts.get("limit"), DEFAULT_LIMIT)
        info, names, rows = db.select(fname, policy, opts, limit, db._offset(fname, opts.get("offset")))
        return [db._decode_row(info, names, r) for r in rows]

    def _query_one(self, fname, table=None, opts=None, *_):
        policy = self._table(fname, table, "read")
        opts = self._opts(fname, opts, CORE_OPTIONS)
        db = self._reader()
        db._limit(fname, opts.get("limit"), 1)
        info, names, rows = db.select(fname, policy, opts, 1, db._offset(fname, opts.get("offset")))
        return db._decode_row(info, names, rows[0]) if rows else None

    def _count(self, fname, table=None, opts=None, *_):
        policy = self._table(fname, table, "read")
        return self._reader().scalar(fname, policy, self._opts(fname, opts, CORE_OPTIONS), "count")

    def _exists(self, fname, table=None, opts=None, *_):
        policy = self._table(fname, table, "read")
        return bool(self._reader().scalar(fname, policy, self._opts(fname, opts, CORE_OPTIONS), "exists"))

    # ---- writes (through the content service) ------------------------------------------------
    def _content(self, fname: str):
        get = self.vm.ctx.content
        service = get() if get is not None else None
        if service is None:
            raise _Refused(f"core.{fname}: the site's content is not available here")
        return service

    def _write(self, fname: str, work):
        """Run work(service) as a plugin's content write: refused inside the plugin's own db.transaction
        (the content service commits on its own) and beyond core_max_depth nested writes."""
        vm = self.vm
        if vm.db_api is not None and vm.db_api.in_transaction:
            raise CoreArgumentError(f"core.{fname} cannot be called inside db.transaction (a content change commits, "
                           "runs hooks and records a revision on its own)")
        limit = vm.settings.core_max_depth
        depth = nesting.depth()
        if depth >= limit:
            raise CoreArgumentError(f"core.{fname}: content writes nested {limit} deep (a hook writing content that "
                           "fires hooks writing content, ...): stopped here so it cannot recurse without end "
                           "([plugins] core_max_depth)")
        service = self._content(fname)
        try:
            with nesting.at_depth(depth + 1):
                return work(service)
        except ModulaError as exc:  # ValidationError, HookAbort, NotFound: one sentence for the plugin
            text = str(exc)
            raise _Refused(text if text.startswith("core.") else f"core.{fname}: {text}") from None

    def _source(self) -> str:
        return f"plugin:{self.vm.name}"

    def _values(self, fname: str, policy: CoreTable, values, what: str) -> dict:
        if values is None or values == []:
            return {}
        if not isinstance(values, dict) or any(not isinstance(k, str) for k in values):
            raise CoreArgumentError(f"core.{fname}: {what} must be a table of column names and values")
        # ModulaCMS's names for the read-only columns: dropped, as the content service drops ours
        out = {k: v for k, v in values.items() if k not in MODULA_ALIASES}
        if policy.aliases:
            ignored = sorted(k for k in out if k in MODULA_ONLY)
            if ignored:
                self._tell("modula:" + ",".join(ignored),
                           f"core.{fname}: content_data.{', content_data.'.join(ignored)} "
                           "has no equivalent in this app and is ignored")
                out = {k: v for k, v in out.items() if k not in MODULA_ONLY}
        return out

    def _insert(self, fname, table=None, values=None, *_):
        if not isinstance(values, (dict, list)):
            raise CoreArgumentError(f"bad argument #2 to '{fname}' (table of values expected)")
        policy = self._table(fname, table, "write")
        values = self._values(fname, policy, values, "values")
        entry = self._write(fname, lambda service: service.create(values, source=self._source()))
        return self._row(policy, entry)

    def _matching(self, fname: str, policy: CoreTable, opts: dict) -> list[str]:
        """The ids of the entries a write's where selects: at most core_max_write_rows, or refused."""
        where = opts.get("where")
        where_or = opts.get("where_or")
        if where in (None, [], {}) and where_or in (None, [], {}):
            raise CoreArgumentError(f"core.{fname} requires non-empty where or where_or "
                           "(it protects against changing every entry)")
        limit = self.vm.settings.core_max_write_rows
        read = {k: v for k, v in opts.items() if k in ("where", "where_or")}
        _info, _names, rows = self._reader().select(fname, policy, read, limit + 1, columns=q("id"))
        if len(rows) > limit:
            raise _Refused(f"core.{fname}: would affect more than {limit} entries, exceeding the limit of "
                           f"{limit} ([plugins] core_max_write_rows)")
        return [r[0] for r in rows]

    def _update(self, fname, table=None, opts=None, *_):
        opts = {} if opts == [] else opts  # an empty Lua table
        if not isinstance(opts, dict):
            raise CoreArgumentError(f"core.{fname} requires a table with 'set' and 'where'")
        opts = self._opts(fname, opts, WRITE_OPTIONS)
        if not opts.get("set"):
            raise CoreArgumentError(f"core.{fname} requires a non-empty 'set' table")
        policy = self._table(fname, table, "write")
        changes = self._values(fname, policy, opts.get("set"), "set")
        if not changes:
            raise _Refused(f"core.{fname}: nothing to change (the columns in 'set' are set by the content "
                           "service or have no equivalent here)")
        ids = self._matching(fname, policy, opts)
        if len(ids) > 1:
            self.vm.ops.spend(len(ids) - 1)  # one operation per entry written

        def work(service):
            with service.batch():
                for id in ids:
                    service.update(id, changes, source=self._source())
            return len(ids)
        return self._write(fname, work)

    def _delete(self, fname, table=None, opts=None, *_):
        opts = {} if opts == [] else opts
        if not isinstance(opts, dict):
            raise CoreArgumentError(f"core.{fname} requires a table with 'where'")
        opts = self._opts(fname, opts, WRITE_OPTIONS - {"set"})
        policy = self._table(fname, table, "write")
        ids = self._matching(fname, policy, opts)
        if len(ids) > 1:
            self.vm.ops.spend(len(ids) - 1)

        def work(service):
            with service.batch():
                for id in ids:
                    service.delete(id)
            return len(ids)
        return self._write(fname, work)


def _renamed(fname: str, message: str) -> str:
    """db's builders name themselves db.<fname>: the plugin called core.<fname>."""
    prefix = f"db.{fname}"
    return "core." + message[3:] if message.startswith(prefix) else message
