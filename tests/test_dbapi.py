"""The `db` module (SPEC 3.4) through real Lua in a real PluginVM on a real SQLite file."""
from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path

import pytest

from modula_desktop.core.plugins.api.db import PluginDB
from modula_desktop.core.plugins.errors import ApiError, PluginCallError, PluginLoadError
from modula_desktop.core.plugins.runtime.vm import OpBudget, PluginVM, VMContext
from modula_desktop.core.settings import PluginSettings
from modula_desktop.core.storage import open_database

REPO = Path(__file__).resolve().parents[1]
ULID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
RFC3339_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


class Plugin:
    """A plugin written to disk (on_init code plus POST routes) and loaded into a real VM."""

    def __init__(self, root: Path, database, name: str, init: str, routes: dict, settings: PluginSettings,
                 header: str = ""):
        root.mkdir(parents=True, exist_ok=True)
        parts = [f'plugin_info = {{name = "{name}", version = "1.0.0", description = "test plugin"}}', header,
                 "function on_init()", init, "end"]
        for route, body in routes.items():
            parts += [f'http.handle("POST", "/{route}", function(req)', body, "end)"]
        (root / "init.lua").write_text("\n".join(parts), encoding="utf-8")
        self.database = database
        self.vm = PluginVM(VMContext(name, root, settings, database=database))
        self.vm.load()
        self.vm.call_init()
        self.index = {r.path.lstrip("/"): r.index for r in self.vm.routes}

    def call(self, route: str, payload=None):
        """Run a route; returns the `json` of its response."""
        request = {"method": "POST", "path": "/" + route, "body": "", "client_ip": "127.0.0.1", "headers": {},
                   "query": {}, "params": {}, "json": payload}
        return self.vm.read_response(self.vm.call_route(self.index[route], request))["json"]

    def error(self, route: str, payload=None) -> PluginCallError:
        with pytest.raises(PluginCallError) as info:
            self.call(route, payload)
        return info.value

    def sql(self, sql, params=()):
        return self.database.execute_sql(sql, params).fetchall()


@pytest.fixture
def database(tmp_path):
    db = open_database(tmp_path / "site.db")
    yield db
    db.close()


@pytest.fixture
def make_plugin(tmp_path, database):
    def make(init: str = "", routes: dict | None = None, name: str = "demo", settings: PluginSettings | None = None,
             header: str = ""):
        return Plugin(tmp_path / "plugins" / name, database, name, init, routes or {}, settings or PluginSettings(),
                      header)
    return make


ITEMS = """
db.define_table("items", {
  columns = {
    {name = "name", type = "text", not_null = true},
    {name = "qty", type = "integer", default = 0},
    {name = "price", type = "real"},
    {name = "active", type = "boolean", default = true},
    {name = "meta", type = "json"},
    {name = "due", type = "timestamp"},
    {name = "data", type = "blob"},
  },
  indexes = {{columns = {"name"}, unique = true}, {columns = {"qty", "active"}}},
})
"""

SEED = ITEMS + """
db.insert("items", {name = "apple", qty = 1, price = 0.5, active = true})
db.insert("items", {name = "banana", qty = 2, price = 0.25, active = false})
db.insert("items", {name = "cherry", qty = 3, active = true})
db.insert("items", {name = "date", qty = 4, price = 2.0, active = false})
db.insert("items", {name = "elder", qty = 5, price = 3.5, active = true})
"""


def seeded(make_plugin, **routes):
    return make_plugin(SEED, routes)


def names(rows):
    return sorted(r["name"] for r in rows)


# ---- define_table ------------------------------------------------------------------------------
def test_define_table_creates_prefixed_table_with_automatic_columns(make_plugin, database):
    p = make_plugin(ITEMS)
    cols = {r[1]: (r[2], r[3], r[5]) for r in p.sql('PRAGMA table_info("plugin_demo__items")')}
    assert list(cols) == ["id", "name", "qty", "price", "active", "meta", "due", "data", "created_at", "updated_at"]
    assert cols["id"] == ("TEXT", 1, 1)  # text, not null, primary key
    assert cols["name"][1] == 1 and cols["created_at"][1] == 1 and cols["updated_at"][1] == 1
    indexes = {r[0]: r[1] for r in p.sql("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                                          "AND tbl_name = 'plugin_demo__items' AND sql IS NOT NULL")}
    assert any("UNIQUE" in sql and '("name")' in sql for sql in indexes.values())
    assert any('("qty", "active")' in sql for sql in indexes.values())
    owner = p.sql("SELECT plugin, name FROM plugin_schema WHERE table_name = 'plugin_demo__items'")
    assert owner == [("demo", "items")]


def test_define_table_is_idempotent(make_plugin):
    first = make_plugin(ITEMS + 'db.insert("items", {name = "kept"})')
    schema = first.sql("SELECT name, sql FROM sqlite_master ORDER BY name")
    again = make_plugin(ITEMS + 'db.define_table("items", {columns = {{name = "name", type = "text", not_null = true},'
                                '{name = "qty", type = "integer", default = 0}, {name = "price", type = "real"},'
                                '{name = "active", type = "boolean", default = true}, {name = "meta", type = "json"},'
                                '{name = "due", type = "timestamp"}, {name = "data", type = "blob"}}})')
    assert again.sql("SELECT name, sql FROM sqlite_master ORDER BY name") == schema
    assert again.sql('SELECT name FROM "plugin_demo__items"') == [("kept",)]


@pytest.mark.parametrize("column", ["id", "created_at", "updated_at"])
def test_define_table_rejects_reserved_columns(make_plugin, column):
    with pytest.raises(PluginLoadError, match=f"column '{column}' is added automatically and may not be declared"):
        make_plugin(f'db.define_table("t", {{columns = {{{{name = "{column}", type = "text"}}}}}})')


@pytest.mark.parametrize("definition, message", [
    ('{columns = {{name = "a", type = "varchar"}}}', "column 'a' has unknown type 'varchar' (use one of text, "
                                                     "integer, boolean, real, timestamp, json, blob)"),
    ('{columns = {{name = "a"}}}', "column 'a' has unknown type nil"),
    ('{columns = {}}', "needs a non-empty columns list"),
    ('{}', "needs a non-empty columns list"),
    ('{columns = {{name = "a", type = "text"}, {name = "a", type = "integer"}}}', "column 'a' is declared twice"),
    ('{columns = {{name = "a", type = "text"}}, indexes = {{columns = {"b"}}}}', "index column 'b' is not a column"),
    ('{columns = {{name = "a", type = "text"}}, indexes = {{columns = {}}}}', "an index needs a non-empty columns"),
    ('{columns = {{name = "a", type = "integer", default = "many"}}}', "default of column 'a' (integer) must be an "
                                                                       "integer"),
    ('{columns = {{name = "a", type = "boolean", default = 3}}}', "default of column 'a' (boolean) must be true or "
                                                                  "false"),
    ('{columns = {{name = "a", type = "text", not_null = "yes"}}}', "not_null must be true or false"),
])
def test_define_table_rejects_bad_definitions(make_plugin, definition, message):
    with pytest.raises(PluginLoadError) as info:
        make_plugin(f'db.define_table("t", {definition})')
    assert message in str(info.value)
    assert "db.define_table" in str(info.value)


def test_define_table_renders_defaults_of_every_type(make_plugin):
    p = make_plugin("""
    db.define_table("d", {columns = {
      {name = "t", type = "text", default = "it's \\"quoted\\""},
      {name = "i", type = "integer", default = 7},
      {name = "r", type = "real", default = 1.5},
      {name = "b", type = "boolean", default = false},
      {name = "j", type = "json", default = {a = {1, 2}}},
      {name = "ts", type = "timestamp", default = "2024-01-01T00:00:00Z"},
    }})
    """, {"row": 'return {json = db.insert("d", {})}'})
    row = p.call("row")
    assert row["t"] == "it's \"quoted\"" and row["i"] == 7 and row["r"] == 1.5
    assert row["b"] is False and row["j"] == {"a": [1, 2]} and row["ts"] == "2024-01-01T00:00:00Z"


def test_foreign_key_to_own_table_with_cascade(make_plugin):
    p = make_plugin("""
    db.define_table("lists", {columns = {{name = "title", type = "text"}}})
    db.define_table("entries", {
      columns = {{name = "list_id", type = "text", not_null = true}, {name = "text", type = "text"}},
      indexes = {{columns = {"list_id"}}},
      foreign_keys = {{column = "list_id", ref_table = "plugin_demo__lists", ref_column = "id", on_delete = "cascade"}},
    })
    """, {
        "run": """
          local l = db.insert("lists", {title = "L"})
          db.insert("entries", {list_id = l.id, text = "a"})
          db.insert("entries", {list_id = l.id, text = "b"})
          local before = db.count("entries")
          local none, err = db.insert("entries", {list_id = "missing", text = "c"})  -- a data error: nil, err
          db.delete("lists", {where = {id = l.id}})
          return {json = {before = before, fk_error = err, after = db.count("entries")}}
        """,
    })
    out = p.call("run")
    assert out["before"] == 2 and out["after"] == 0
    assert "FOREIGN KEY constraint failed" in out["fk_error"]
    fks = p.sql('PRAGMA foreign_key_list("plugin_demo__entries")')
    assert [(r[2], r[3], r[4], r[6]) for r in fks] == [("plugin_demo__lists", "list_id", "id", "CASCADE")]


@pytest.mark.parametrize("fk, message", [
    ('{column = "x", ref_table = "plugin_other_things", ref_column = "id"}',
     "references 'plugin_other_things', which is not one of this plugin's tables: ref_table must be a full name "
     "starting with 'plugin_demo__'"),
    ('{column = "x", ref_table = "content", ref_column = "id"}',
     "references 'content', which is not one of this plugin's tables"),
    ('{column = "x", ref_table = "lists", ref_column = "id"}', "did you mean 'plugin_demo__lists'?"),
    ('{column = "x", ref_table = "plugin_demo__nothing", ref_column = "id"}',
     "references 'plugin_demo__nothing', which this plugin has not defined (define 'nothing' first)"),
    ('{column = "x", ref_table = "plugin_demo__lists", ref_column = "title"}',
     "must reference 'id' or a column with a unique index"),
    ('{column = "x", ref_table = "plugin_demo__lists", ref_column = "nope"}',
     "'plugin_demo__lists' has no column 'nope'"),
    ('{column = "y", ref_table = "plugin_demo__lists", ref_column = "id"}',
     "foreign key column 'y' is not a declared column"),
    ('{column = "x", ref_table = "plugin_demo__lists", on_delete = "EXPLODE"}', "on_delete must be one of CASCADE"),
])
def test_foreign_key_errors(make_plugin, database, fk, message):
    # another plugin's table exists, so the refusal is about ownership, not existence
    make_plugin('db.define_table("things", {columns = {{name = "a", type = "text"}}})', name="other")
    with pytest.raises(PluginLoadError) as info:
        make_plugin(f"""
        db.define_table("lists", {{columns = {{{{name = "title", type = "text"}}}}}})
        db.define_table("entries", {{columns = {{{{name = "x", type = "text"}}}}, foreign_keys = {{{fk}}}}})
        """)
    assert message in str(info.value)
    assert database.execute_sql("SELECT COUNT(*) FROM sqlite_master WHERE name = 'plugin_demo__entries'"
                                ).fetchone()[0] == 0


def test_foreign_key_may_reference_a_unique_column_and_itself(make_plugin):
    p = make_plugin("""
    db.define_table("users", {columns = {{name = "email", type = "text", unique = true}}})
    db.define_table("nodes", {
      columns = {{name = "parent_id", type = "text"}, {name = "owner", type = "text"}},
      foreign_keys = {
        {column = "parent_id", ref_table = "plugin_demo__nodes", ref_column = "id", on_delete = "SET NULL"},
        {column = "owner", ref_table = "plugin_demo__users", ref_column = "email"},
      },
    })
    """, {"run": """
      db.insert("users", {email = "a@b"})
      local root = db.insert("nodes", {owner = "a@b"})
      local child = db.insert("nodes", {parent_id = root.id})
      db.delete("nodes", {where = {id = root.id}})
      return {json = db.query_one("nodes", {where = {id = child.id}})}
    """})
    child = p.call("run")
    assert "parent_id" not in child  # SET NULL: a nil field is absent from the Lua table


def test_later_definition_adds_columns(make_plugin):
    make_plugin('db.define_table("t", {columns = {{name = "a", type = "text"}}})\n'
                'db.insert("t", {a = "old"})')
    p = make_plugin("""
    db.define_table("t", {columns = {
      {name = "a", type = "text"},
      {name = "n", type = "integer", not_null = true, default = 7},
      {name = "flag", type = "boolean"},
      {name = "tags", type = "json"},
    }, indexes = {{columns = {"n"}}}})
    """, {"run": """
      db.insert("t", {a = "new", n = 1, flag = true, tags = {"x"}})
      return {json = db.query("t", {order_by = "n"})}
    """})
    rows = p.call("run")
    assert [(r["a"], r["n"]) for r in rows] == [("new", 1), ("old", 7)]
    assert rows[0]["flag"] is True and rows[0]["tags"] == ["x"]
    assert [r[1] for r in p.sql('PRAGMA table_info("plugin_demo__t")')] == \
        ["id", "a", "created_at", "updated_at", "n", "flag", "tags"]
    assert p.sql("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'plugin_demo__t' "
                 "AND sql LIKE '%(\"n\")%'") == [(1,)]


@pytest.mark.parametrize("columns, message", [
    ('{name = "a", type = "integer"}', "column 'a' of 't' is text in the database; changing it to integer is not "
                                       "supported"),
    ('{name = "a", type = "text"}, {name = "b", type = "text", not_null = true}',
     "cannot add NOT NULL column 'b' without a default to the existing table 't'"),
])
def test_drift_that_cannot_be_applied_is_an_error(make_plugin, columns, message):
    first = make_plugin('db.define_table("t", {columns = {{name = "a", type = "text"}}})\ndb.insert("t", {a = "x"})')
    schema = first.sql("SELECT sql FROM sqlite_master WHERE name = 'plugin_demo__t'")
    with pytest.raises(PluginLoadError) as info:
        make_plugin(f'db.define_table("t", {{columns = {{{columns}}}}})')
    assert message in str(info.value)
    assert first.sql("SELECT sql FROM sqlite_master WHERE name = 'plugin_demo__t'") == schema
    assert first.sql('SELECT a FROM "plugin_demo__t"') == [("x",)]


def test_removed_column_is_kept_and_reported(make_plugin, caplog):
    make_plugin('db.define_table("t", {columns = {{name = "a", type = "text"}, {name = "j", type = "json"}}})\n'
                'db.insert("t", {a = "x", j = {k = 1}})')
    with caplog.at_level("WARNING"):
        p = make_plugin('db.define_table("t", {columns = {{name = "a", type = "text"}}})',
                        {"run": 'return {json = db.query_one("t", {where = {a = "x"}})}'})
    assert "column 'j' of 't' is no longer declared; it stays in the database" in caplog.text
    assert p.call("run")["j"] == {"k": 1}  # still decoded as json


def test_unknown_definition_fields_are_warned_not_fatal(make_plugin, caplog):
    with caplog.at_level("WARNING"):
        make_plugin('db.define_table("t", {columns = {{name = "a", type = "text", notnull = true}}})')
    assert "column 'a': ignoring unknown field 'notnull'" in caplog.text


def test_create_index(make_plugin):
    p = make_plugin(ITEMS, {"run": 'db.create_index("items", {columns = {"price"}, unique = true})\n'
                                   'db.insert("items", {name = "a", price = 1})\n'
                                   'local row, err = db.insert("items", {name = "b", price = 1})\n'
                                   'return {json = {row == nil, err}}'})
    got_nil, err = p.call("run")
    assert got_nil is True and "UNIQUE constraint failed: plugin_demo__items.price" in err


# ---- reads -------------------------------------------------------------------------------------
WHERE_CASES = [
    ('{name = "apple"}', ["apple"]),
    ('{qty = db.eq(3)}', ["cherry"]),
    ('{qty = db.neq(3)}', ["apple", "banana", "date", "elder"]),
    ('{qty = db.gt(3)}', ["date", "elder"]),
    ('{qty = db.gte(3)}', ["cherry", "date", "elder"]),
    ('{qty = db.lt(2)}', ["apple"]),
    ('{qty = db.lte(2)}', ["apple", "banana"]),
    ('{name = db.like("%an%")}', ["banana"]),
    ('{name = db.not_like("%e%")}', ["banana"]),
    ('{name = db.in_list("apple", "date", "zzz")}', ["apple", "date"]),
    ('{name = db.in_list({"apple", "date"})}', ["apple", "date"]),
    ('{qty = db.not_in(1, 2, 3)}', ["date", "elder"]),
    ('{qty = db.between(2, 4)}', ["banana", "cherry", "date"]),
    ('{price = db.is_null()}', ["cherry"]),
    ('{price = db.is_not_null()}', ["apple", "banana", "date", "elder"]),
    ('{active = true}', ["apple", "cherry", "elder"]),
    ('{active = false}', ["banana", "date"]),
    ('{active = 0}', ["banana", "date"]),
    ('{active = true, qty = db.gt(1)}', ["cherry", "elder"]),
    ('{{"qty", ">", 3}}', ["date", "elder"]),
    ('{{"qty", ">=", 2}, {"qty", "<", 4}}', ["banana", "cherry"]),
    ('{{"name", "!=", "apple"}, {"qty", "<=", 2}}', ["banana"]),
    ('{{"name", "<>", "apple"}, {"qty", "=", 2}}', ["banana"]),
    ('{{"OR", {{"name", "=", "apple"}, {"qty", "=", 5}}}}', ["apple", "elder"]),
    ('{"OR", {{"name", "=", "apple"}, {qty = db.gt(4)}}}', ["apple", "elder"]),
    ('{{"AND", {{"qty", ">", 1}, {"qty", "<", 3}}}}', ["banana"]),
    ('{{"NOT", {"qty", "IN", {1, 2}}}}', ["cherry", "date", "elder"]),
    ('{{"price", "IS NULL"}}', ["cherry"]),
    ('{{"price", "is not null"}, {"name", "like", "%e%"}}', ["apple", "date", "elder"]),
    ('{{"qty", "BETWEEN", {4, 5}}}', ["date", "elder"]),
    ('{{"name", "NOT IN", {"apple"}}, {"qty", "<", 3}}', ["banana"]),
    ('{{"name", "NOT LIKE", "%e%"}}', ["banana"]),
    ('{{"qty", db.gt(4)}}', ["elder"]),
    ('{{"active", "=", true}, {"OR", {{"qty", "=", 1}, {"qty", "=", 5}}}}', ["apple", "elder"]),
]


@pytest.mark.parametrize("where, expected", WHERE_CASES)
def test_where_operators(make_plugin, where, expected):
    p = seeded(make_plugin, run=f'return {{json = db.query("items", {{where = {where}}})}}')
    assert names(p.call("run")) == expected


def test_where_or(make_plugin):
    p = seeded(make_plugin, run='return {json = db.query("items", {where = {active = true}, '
                                'where_or = {{name = "apple"}, {qty = db.gt(4)}, {name = "banana"}}})}')
    assert names(p.call("run")) == ["apple", "elder"]


def test_condition_helpers_return_plain_marker_tables(make_plugin):
    p = make_plugin("", {"run": """
      return {json = {gt = db.gt(3), in_list = db.in_list("a", "b"), between = db.between(1, 2),
                      is_null = db.is_null(), like = db.like("a%"), agg = db.agg_count("*", "n")}}
    """})
    out = p.call("run")
    assert out["gt"] == {"__op": "gt", "__val": 3}
    assert out["in_list"] == {"__op": "in", "__val": ["a", "b"]}
    assert out["between"] == {"__op": "between", "__val": [1, 2]}
    assert out["is_null"] == {"__op": "is_null"}
    assert out["like"] == {"__op": "like", "__val": "a%"}
    assert out["agg"] == {"__agg": "COUNT", "__arg": "*", "__alias": "n"}


@pytest.mark.parametrize("expr, message", [
    ('db.eq(nil)', "db.eq: value must not be nil (use db.is_null())"),
    ('db.gt({})', "db.gt: value must be a string, number or boolean"),
    ('db.in_list()', "db.in_list: needs at least one value"),
    ('db.not_in({})', "db.not_in: needs at least one value"),
    ('db.between(1)', "db.between: needs two values (low, high)"),
    ('db.like(5)', "db.like: pattern must be a string"),
    ('db.timestamp_ago("soon")', "db.timestamp_ago: seconds must be a number"),
    ('db.query("items", {where = {qty = {__op = "explode", __val = 1}}})', "unknown condition operator 'explode'"),
    ('db.query("items", {where = {{"qty", "~~", 1}}})', "unknown operator '~~'"),
    ('db.query("items", {where = {{"price", "IS NULL", 3}}})', "IS NULL on 'price' takes no value"),
    ('db.query("items", {where = {{"qty", "IN", {}}}})', "IN on 'qty' needs a non-empty list of values"),
    ('db.query("items", {where = {{"qty", "BETWEEN", {1}}}})', "BETWEEN on 'qty' needs exactly two values"),
    ('db.query("items", {where = {{"OR"}}})', "OR takes one list of conditions"),
    ('db.query("items", {where = {name = "a", {"qty", "=", 1}}})', "cannot mix named fields"),
    ('db.query("items", {where = {name = {1, 2}}})', "value for 'name' must be a string, number or boolean, not a "
                                                     "table"),
    ('db.query("items", {where = "qty > 1"})', "where: must be a table"),
    ('db.query("items", {where = {active = "yes"}})', "column 'active' (boolean) takes true or false"),
    ('db.query("items", {limit = 10001})', "db.query: limit 10001 is above the maximum of 10000"),
    ('db.query("items", {limit = -1})', "db.query: limit must not be negative"),
    ('db.query("items", {limit = 2.5})', "db.query: limit must be an integer"),
    ('db.query("items", {offset = -3})', "db.query: offset must be a non-negative integer"),
    ('db.count("items", {joins = {}})', "db.count: unknown option 'joins'"),
    ('db.query("items", {having = {qty = 1}})', "db.query: having needs group_by or aggregate columns"),
    ('db.query("items", {order_by = 3})', "order_by must be a string or a list"),
    ('db.query("items", {order_by = {{col = "qty"}}})', "each order_by entry must be {column=, desc=}"),
    ('db.query("items", {distinct = "yes"})', "distinct must be true or false"),
    ('db.query("items", {columns = {db.agg_sum("*")}})', "only COUNT takes '*'"),
    ('db.exists("items", {where = {{"qty"}}})', "condition on 'qty' must be"),
])
def test_read_and_helper_errors(make_plugin, expr, message):
    p = seeded(make_plugin, run=f"return {{json = {expr}}}")
    err = p.error("run")
    assert err.kind == "error"
    assert message in err.message


DATA_ERRORS = [
    ('db.query("items", {where = {nope = 1}})', "unknown column 'nope' in table 'items'"),
    ('db.query("nothing")', "db.query: table 'nothing' is not defined (call db.define_table in on_init)"),
    ('db.query_one("nothing", {})', "db.query_one: table 'nothing' is not defined"),
    ('db.count("items", {where = {{"zz", "=", 1}}})', "db.count: unknown column 'zz'"),
    ('db.exists("nothing")', "db.exists: table 'nothing' is not defined"),
    ('db.query("items", {order_by = "nope"})', "db.query: unknown column 'nope'"),
]


@pytest.mark.parametrize("expr, message", DATA_ERRORS)
def test_data_errors_return_nil_and_the_error(make_plugin, expr, message):
    # ModulaCMS's convention: the data's refusal is a value (nil, err); argument errors raise
    p = seeded(make_plugin, run=f"local r, err = {expr}\nreturn {{json = {{is_nil = r == nil, err = err}}}}")
    out = p.call("run")
    assert out["is_nil"] is True and message in out["err"]


def test_query_returns_a_list_and_query_one_a_row_or_nil(make_plugin):
    p = seeded(make_plugin, run="""
      local none = db.query("items", {where = {name = "zzz"}})
      return {json = {none_type = type(none), none_len = #none,
                      one = db.query_one("items", {where = {qty = 2}}),
                      missing = db.query_one("items", {where = {qty = 99}}) == nil,
                      first = db.query_one("items", {order_by = "qty DESC"}).name}}
    """)
    out = p.call("run")
    assert out["none_type"] == "table" and out["none_len"] == 0
    assert out["one"]["name"] == "banana" and out["one"]["active"] is False and out["one"]["price"] == 0.25
    assert ULID_RE.match(out["one"]["id"])
    assert out["missing"] is True
    assert out["first"] == "elder"


def test_query_columns_order_by_offset_distinct(make_plugin):
    p = seeded(make_plugin, run="""
      return {json = {
        cols = db.query("items", {columns = {"name", "qty"}, where = {qty = 1}}),
        desc = db.query("items", {order_by = "qty DESC", limit = 2}),
        legacy_desc = db.query("items", {order_by = "qty", desc = true, limit = 1}),
        multi = db.query("items", {order_by = {{column = "active", desc = true}, {column = "name"}}}),
        multi_str = db.query("items", {order_by = "active DESC, name ASC"}),
        paged = db.query("items", {order_by = "qty", limit = 2, offset = 3}),
        distinct = db.query("items", {columns = {"active"}, distinct = true, order_by = "active"}),
      }}
    """)
    out = p.call("run")
    assert out["cols"] == [{"name": "apple", "qty": 1}]
    assert [r["name"] for r in out["desc"]] == ["elder", "date"]
    assert [r["name"] for r in out["legacy_desc"]] == ["elder"]
    expected = ["apple", "cherry", "elder", "banana", "date"]
    assert [r["name"] for r in out["multi"]] == expected
    assert [r["name"] for r in out["multi_str"]] == expected
    assert [r["name"] for r in out["paged"]] == ["date", "elder"]
    assert out["distinct"] == [{"active": False}, {"active": True}]


def test_group_by_with_aggregates(make_plugin):
    p = seeded(make_plugin, run="""
      return {json = db.query("items", {
        columns = {"active", db.agg_count("*", "n"), db.agg_sum("qty", "total"), db.agg_max("price")},
        group_by = {"active"}, order_by = {{column = "total", desc = true}}})}
    """)
    assert p.call("run") == [
        {"active": True, "n": 3, "total": 9, "max_price": 3.5},
        {"active": False, "n": 2, "total": 6, "max_price": 2.0},
    ]


def test_limit_defaults_to_100_and_is_capped_at_10000(make_plugin):
    p = make_plugin(ITEMS, {
        "fill": """
          local rows = {}
          for i = 1, 150 do rows[i] = {"n" .. i, i} end
          return {json = db.insert_many("items", {"name", "qty"}, rows)}
        """,
        "run": """
          return {json = {default = #db.query("items"), zero = #db.query("items", {limit = 0}),
                          explicit = #db.query("items", {limit = 120}),
                          cap = #db.query("items", {limit = 10000})}}
        """,
        "over": 'return {json = db.query("items", {limit = 20000})}',
    })
    assert p.call("fill") == 150
    assert p.call("run") == {"default": 100, "zero": 100, "explicit": 120, "cap": 150}
    assert "limit 20000 is above the maximum of 10000" in p.error("over").message


def test_count_and_exists(make_plugin):
    p = seeded(make_plugin, run="""
      return {json = {all = db.count("items"), empty_opts = db.count("items", {}),
                      active = db.count("items", {where = {active = true}}),
                      seq = db.count("items", {where = {{"qty", ">", 3}}}),
                      yes = db.exists("items", {where = {name = "apple"}}),
                      no = db.exists("items", {where = {name = "zzz"}}),
                      any = db.exists("items"), int = math.type(db.count("items"))}}
    """)
    assert p.call("run") == {"all": 5, "empty_opts": 5, "active": 3, "seq": 2, "yes": True, "no": False,
                             "any": True, "int": "integer"}


# ---- writes ------------------------------------------------------------------------------------
def test_insert_fills_id_and_timestamps_and_returns_the_row(make_plugin):
    p = make_plugin(ITEMS, {"run": """
      local row = db.insert("items", {name = "a", meta = {tags = {"x", "y"}, n = 1}, data = "bytes"})
      local mine = db.insert("items", {id = "my-id", name = "b", created_at = "2020-01-01T00:00:00Z",
                                      meta = '{"from": "text"}', active = 0})
      return {json = {row = row, mine = mine}}
    """})
    out = p.call("run")
    row, mine = out["row"], out["mine"]
    assert ULID_RE.match(row["id"])
    assert RFC3339_RE.match(row["created_at"]) and row["created_at"] == row["updated_at"]
    assert row["qty"] == 0 and row["active"] is True  # column defaults
    assert row["meta"] == {"tags": ["x", "y"], "n": 1} and row["data"] == "bytes"
    assert mine["id"] == "my-id" and mine["created_at"] == "2020-01-01T00:00:00Z"
    assert mine["meta"] == {"from": "text"} and mine["active"] is False
    stored = p.sql('SELECT meta, active, typeof(data) FROM "plugin_demo__items" WHERE name = ?', ("a",))
    assert stored == [('{"n":1,"tags":["x","y"]}', 1, "blob")]


@pytest.mark.parametrize("values, message", [
    ('{name = "a", qty = "many"}', "column 'qty' (integer) takes an integer, not 'many'"),
    ('{name = "a", price = "cheap"}', "column 'price' (real) takes a number"),
    ('{name = "a", active = "yes"}', "column 'active' (boolean) takes true or false"),
    ('{name = {1}}', "column 'name' (text) cannot store a table (only json columns do)"),
    ('{name = true}', "column 'name' (text) takes a string, not a boolean"),
    ('{name = "a", meta = "not json"}', "column 'meta' (json) takes a table or JSON text"),
])
def test_insert_errors(make_plugin, values, message):
    p = seeded(make_plugin, run=f'db.insert("items", {values})')
    assert message in p.error("run").message
    assert p.sql('SELECT COUNT(*) FROM "plugin_demo__items"') == [(5,)]


@pytest.mark.parametrize("values, message", [
    ('{name = "a", nope = 1}', "db.insert: unknown column 'nope' in table 'items'"),
    ('{qty = 1}', "NOT NULL constraint failed: plugin_demo__items.name"),
    ('{name = "apple"}', "UNIQUE constraint failed: plugin_demo__items.name"),
])
def test_insert_data_errors_return_nil_and_change_nothing(make_plugin, values, message):
    p = seeded(make_plugin, run=f'local row, err = db.insert("items", {values})\n'
                                'return {json = {is_nil = row == nil, err = err}}')
    out = p.call("run")
    assert out["is_nil"] is True and message in out["err"]
    assert p.sql('SELECT COUNT(*) FROM "plugin_demo__items"') == [(5,)]


def test_insert_converts_numeric_strings_and_integral_floats(make_plugin):
    p = make_plugin(ITEMS, {"run": 'return {json = db.insert("items", {name = 5, qty = "12", price = "2.5"})}'})
    row = p.call("run")
    assert row["name"] == "5" and row["qty"] == 12 and row["price"] == 2.5


def test_insert_many(make_plugin):
    p = make_plugin(ITEMS, {
        "run": """
          local rows = {}
          for i = 1, 250 do rows[i] = {"n" .. i, i, i % 2 == 0} end
          return {json = db.insert_many("items", {"name", "qty", "active"}, rows)}
        """,
        "bad_row": 'return {json = db.insert_many("items", {"name", "qty"}, {{"x1", 1}, {"x2"}})}',
        "dup": 'return {json = {db.insert_many("items", {"name"}, {{"y1"}, {"y1"}})}}',
        "too_many": 'local r = {} for i = 1, 1001 do r[i] = {"z" .. i} end\n'
                    'return {json = db.insert_many("items", {"name"}, r)}',
        "no_rows": 'return {json = db.insert_many("items", {"name"}, {})}',
    })
    assert p.call("run") == 250
    assert p.vm.ops.used == 3  # one operation per batch of 100 rows
    assert p.sql('SELECT COUNT(*), COUNT(DISTINCT id), SUM(active) FROM "plugin_demo__items"') == [(250, 250, 125)]
    assert "row 2 must be a list of exactly 2 values" in p.error("bad_row").message
    assert "UNIQUE constraint failed" in p.call("dup")[2]  # nil, err: {[2] = err}
    assert "at most 1000 rows per call (got 1001)" in p.error("too_many").message
    assert "rows must not be empty" in p.error("no_rows").message
    # all or nothing: the failed calls left no rows behind
    assert p.sql('SELECT COUNT(*) FROM "plugin_demo__items"') == [(250,)]


def test_upsert(make_plugin):
    p = seeded(make_plugin,
               insert='return {json = db.upsert("items", {values = {name = "fig", qty = 9}, '
                      'conflict_columns = {"name"}})}',
               replace='return {json = db.upsert("items", {values = {name = "apple", qty = 50, price = 9.5}, '
                       'conflict_columns = {"name"}})}',
               update_map='return {json = db.upsert("items", {values = {name = "banana", qty = 70}, '
                          'conflict_columns = {"name"}, update = {price = 1.25}})}',
               skip='return {json = {skipped = db.upsert("items", {values = {name = "cherry", qty = 80}, '
                    'conflict_columns = {"name"}, do_nothing = true}) == nil}}',
               before='return {json = db.query_one("items", {where = {name = "apple"}})}')
    fig = p.call("insert")
    assert fig["name"] == "fig" and fig["qty"] == 9 and ULID_RE.match(fig["id"])
    before = p.call("before")
    time.sleep(0.01)
    after = p.call("replace")
    assert after["id"] == before["id"] and after["created_at"] == before["created_at"]
    assert after["qty"] == 50 and after["price"] == 9.5 and after["updated_at"] > before["updated_at"]
    banana = p.call("update_map")
    assert banana["qty"] == 2 and banana["price"] == 1.25  # only `update` is applied on conflict
    assert p.call("skip") == {"skipped": True}  # do_nothing on a conflict returns nil
    assert p.sql('SELECT qty FROM "plugin_demo__items" WHERE name = ?', ("cherry",)) == [(3,)]
    assert p.sql('SELECT COUNT(*) FROM "plugin_demo__items"') == [(6,)]


@pytest.mark.parametrize("opts, message", [
    ('{values = {name = "x"}}', "conflict_columns must not be empty"),
    ('{values = {}, conflict_columns = {"name"}}', "values must not be empty"),
    ('{values = {qty = 1}, conflict_columns = {"name"}}', "conflict column 'name' needs a value in values"),
    ('{values = {name = "x"}, conflict_columns = {"name"}, do_nothing = true, update = {qty = 1}}',
     "use either update or do_nothing, not both"),
])
def test_upsert_errors(make_plugin, opts, message):
    p = seeded(make_plugin, run=f'return {{json = db.upsert("items", {opts})}}')
    assert message in p.error("run").message


def test_upsert_on_columns_without_a_unique_index_returns_nil_err(make_plugin):
    p = seeded(make_plugin, run='local row, err = db.upsert("items", {values = {name = "x", qty = 1}, '
                                'conflict_columns = {"qty"}})\nreturn {json = {is_nil = row == nil, err = err}}')
    out = p.call("run")
    assert out["is_nil"] is True
    assert "ON CONFLICT clause does not match any PRIMARY KEY or UNIQUE constraint" in out["err"]


def test_update_sets_updated_at_and_returns_the_count(make_plugin):
    p = seeded(make_plugin,
               run='return {json = db.update("items", {set = {qty = 10, meta = {note = "x"}}, '
                   'where = {active = false}})}',
               none='return {json = db.update("items", {set = {qty = 1}, where = {name = "zzz"}})}',
               seq='return {json = db.update("items", {set = {active = false}, where = {{"qty", "<", 2}}})}')
    before = dict(p.sql('SELECT name, updated_at FROM "plugin_demo__items"'))
    time.sleep(0.01)
    assert p.call("run") == 2
    rows = {r[0]: r[1:] for r in p.sql('SELECT name, qty, meta, updated_at FROM "plugin_demo__items"')}
    assert rows["banana"][:2] == (10, '{"note":"x"}') and rows["date"][0] == 10
    assert rows["banana"][2] > before["banana"] and rows["apple"][2] == before["apple"]
    assert p.call("none") == 0
    assert p.call("seq") == 1


@pytest.mark.parametrize("call, message", [
    ('db.update("items", {set = {qty = 0}})', "db.update: 'where' is required and must not be empty"),
    ('db.update("items", {set = {qty = 0}, where = {}})', "db.update: 'where' is required and must not be empty"),
    ('db.update("items", {set = {qty = 0}, where_or = {}})', "db.update: 'where' is required"),
    ('db.update("items", {where = {name = "apple"}})', "db.update: 'set' is required and must not be empty"),
    ('db.update("items", {set = {}, where = {name = "apple"}})', "db.update: 'set' is required"),
    ('db.update("items")', "db.update: 'set' is required"),
    ('db.delete("items", {})', "db.delete: 'where' is required and must not be empty"),
    ('db.delete("items", {where = {}})', "db.delete: 'where' is required and must not be empty"),
    ('db.delete("items")', "db.delete: 'where' is required"),
    ('db.delete("items", {where = {qty = 1}, limit = 3})', "db.delete: unknown option 'limit'"),
])
def test_update_and_delete_refuse_to_touch_every_row(make_plugin, call, message):
    p = seeded(make_plugin, run=call)
    snapshot = p.sql('SELECT * FROM "plugin_demo__items" ORDER BY name')
    assert message in p.error("run").message
    assert p.sql('SELECT * FROM "plugin_demo__items" ORDER BY name') == snapshot


def test_delete_returns_the_count(make_plugin):
    p = seeded(make_plugin, run='return {json = {db.delete("items", {where = {qty = db.gte(4)}}), '
                                'db.delete("items", {where = {name = "zzz"}})}}')
    assert p.call("run") == [2, 0]
    assert p.sql('SELECT name FROM "plugin_demo__items" ORDER BY name') == [("apple",), ("banana",), ("cherry",)]


# ---- ids and time ------------------------------------------------------------------------------
def test_ulid_and_timestamps(make_plugin):
    p = make_plugin("", {"run": """
      return {json = {a = db.ulid(), b = db.ulid(), now = db.timestamp(), ago = db.timestamp_ago(3600)}}
    """})
    out = p.call("run")
    assert ULID_RE.match(out["a"]) and ULID_RE.match(out["b"]) and out["a"] != out["b"]
    assert RFC3339_RE.match(out["now"]) and RFC3339_RE.match(out["ago"])
    now = dt.datetime.fromisoformat(out["now"].replace("Z", "+00:00"))
    ago = dt.datetime.fromisoformat(out["ago"].replace("Z", "+00:00"))
    assert abs((now - ago).total_seconds() - 3600) < 5
    assert abs((dt.datetime.now(dt.timezone.utc) - now).total_seconds()) < 5


# ---- the operation budget ----------------------------------------------------------------------
def test_helpers_do_not_spend_operations(make_plugin):
    p = make_plugin("", {"run": """
      for i = 1, 3000 do db.eq(i); db.ulid(); db.timestamp(); db.in_list(i, i + 1); db.is_null() end
      return {json = true}
    """})
    assert p.call("run") is True
    assert p.vm.ops.used == 0


def test_budget_stops_a_plugin_that_loops_over_insert(make_plugin):
    p = make_plugin(ITEMS, {
        "loop": 'for i = 1, 5000 do db.insert("items", {name = "n" .. i}) end',
        "swallow": 'for i = 1, 5000 do pcall(db.insert, "items", {name = "m" .. i}) end\nreturn {json = "done"}',
        "count": 'return {json = db.count("items")}',
    })
    err = p.error("loop")
    assert err.kind == "ops"
    assert err.message == "operation budget exceeded (1000 db operations per request)"
    assert p.sql('SELECT COUNT(*) FROM "plugin_demo__items"') == [(1000,)]
    # the next checkout starts with a fresh budget
    assert p.call("count") == 1000
    # catching the error does not buy more operations
    err = p.error("swallow")
    assert err.kind == "ops" and "1000 db operations" in err.message
    assert p.call("count") == 2000


def test_budget_counts_reads_and_define_table_too(make_plugin):
    p = make_plugin(ITEMS, {"run": 'for i = 1, 10 do db.count("items") end\n'
                                   'db.define_table("x", {columns = {{name = "a", type = "text"}}})'},
                    settings=PluginSettings(max_ops=10))
    err = p.error("run")
    assert err.kind == "ops" and err.message == "operation budget exceeded (10 db operations per request)"
    assert p.sql("SELECT COUNT(*) FROM sqlite_master WHERE name = 'plugin_demo__x'") == [(0,)]


# ---- transactions ------------------------------------------------------------------------------
TX_ROUTES = {
    "commit": """
      local ok, err = db.transaction(function()
        db.insert("items", {name = "t1"})
        db.insert("items", {name = "t2"})
      end)
      return {json = {ok = ok, err = err}}
    """,
    "rollback": """
      local ok, err = db.transaction(function()
        db.insert("items", {name = "r1"})
        error("deliberate rollback")
      end)
      return {json = {ok = ok, err = err}}
    """,
    "nested": """
      local ok, err = db.transaction(function()
        db.insert("items", {name = "outer"})
        db.transaction(function() db.insert("items", {name = "inner"}) end)
      end)
      return {json = {ok = ok, err = err}}
    """,
    "sql_error": """
      local ok, err = db.transaction(function()
        db.insert("items", {name = "s1"})
        db.insert("items", {name = "s1"})
      end)
      return {json = {ok = ok, err = err}}
    """,
    "names": 'local out = json.array() for _, r in ipairs(db.query("items", {order_by = "name"})) do '
             'out[#out + 1] = r.name end\nreturn {json = out}',
    "data_error": """
      local ok, err = db.transaction(function()
        db.insert("items", {name = "d1"})
        local row, ierr = db.insert("items", {name = "d1"})  -- nil, err: the plugin carries on
        assert(row == nil and ierr)
        db.insert("items", {name = "d2"})
      end)
      return {json = {ok = ok, err = err}}
    """,
}


def test_transaction_commits(make_plugin):
    p = make_plugin(ITEMS, TX_ROUTES)
    assert p.call("commit") == {"ok": True}
    assert p.call("names") == ["t1", "t2"]
    assert not p.vm.db_api.in_transaction


def test_transaction_rolls_back_on_error_and_returns_false_err(make_plugin):
    p = make_plugin(ITEMS, TX_ROUTES)
    out = p.call("rollback")
    assert out["ok"] is False and "deliberate rollback" in out["err"]
    assert p.call("names") == []
    out = p.call("sql_error")
    assert out["ok"] is False and "UNIQUE constraint failed: plugin_demo__items.name" in out["err"]
    assert p.call("names") == []
    # a data error inside returns nil, err there, and the whole transaction still rolls back
    out = p.call("data_error")
    assert out["ok"] is False and "UNIQUE constraint failed: plugin_demo__items.name" in out["err"]
    assert p.call("names") == []
    assert not p.vm.db_api.in_transaction


def test_transaction_rejects_nesting(make_plugin):
    p = make_plugin(ITEMS, TX_ROUTES)
    out = p.call("nested")
    assert out["ok"] is False and "db.transaction: nested transactions are not supported" in out["err"]
    assert p.call("names") == []  # the outer transaction was rolled back too
    assert not p.vm.db_api.in_transaction


def test_nested_tx_begin_raises(database):
    api = PluginDB("demo", database, OpBudget(limit=10))
    api.tx_begin()
    with pytest.raises(ApiError, match="^db.transaction: nested transactions are not supported$"):
        api.tx_begin()
    assert api.in_transaction
    api.tx_rollback()
    assert not api.in_transaction and not database.in_transaction()


def test_transaction_is_a_savepoint_inside_a_host_transaction(make_plugin, database):
    p = make_plugin(ITEMS, dict(TX_ROUTES, plain='db.insert("items", {name = "plain"})'))
    with database.atomic() as outer:
        assert p.call("commit") == {"ok": True}
        assert p.call("names") == ["t1", "t2"]
        outer.rollback()  # the host's content change fails: the plugin's committed work goes with it
    assert p.call("names") == []
    with database.atomic():
        p.call("plain")
        assert p.call("rollback")["ok"] is False  # rolls back to its savepoint only
    assert p.call("names") == ["plain"]


def test_budget_exhausted_inside_a_transaction_rolls_it_back(make_plugin):
    p = make_plugin(ITEMS, {
        "run": 'db.transaction(function() for i = 1, 50 do db.insert("items", {name = "n" .. i}) end end)',
        "count": 'return {json = db.count("items")}',
    }, settings=PluginSettings(max_ops=20))
    err = p.error("run")
    assert err.kind == "ops"
    assert not p.vm.db_api.in_transaction
    assert p.call("count") == 0


def test_abandon_rolls_back_an_open_transaction(database, make_plugin):
    make_plugin(ITEMS)
    api = PluginDB("demo", database, OpBudget(limit=10))
    api.tx_begin()
    api.insert("items", {"name": "left open"})
    api.abandon()
    assert not api.in_transaction and not database.in_transaction()
    assert database.execute_sql('SELECT COUNT(*) FROM "plugin_demo__items"').fetchone() == (0,)


# ---- other VMs, offline use --------------------------------------------------------------------
def test_another_vm_sees_tables_defined_by_the_first(make_plugin, tmp_path, database):
    p = make_plugin(ITEMS, {"run": 'return {json = db.insert("items", {name = "x", meta = {a = 1}, active = false})}'})
    p.call("run")
    # a second VM of the same plugin loads the module but does not run on_init
    vm = PluginVM(VMContext("demo", tmp_path / "plugins" / "demo", PluginSettings(), database=database))
    vm.load()
    row = vm.db_api.query_one("items", {"where": {"name": "x"}})
    assert row["meta"] == {"a": 1} and row["active"] is False


def test_offline_vm_builds_without_touching_a_database(tmp_path):
    root = tmp_path / "offline"
    root.mkdir()
    (root / "init.lua").write_text('plugin_info = {name = "offline", version = "1", description = "d"}\n'
                                   'function on_init() db.define_table("t", {columns = {{name = "a", type = "text"}}})'
                                   ' end\n')
    vm = PluginVM(VMContext("offline", root, PluginSettings(), database=None))
    assert vm.load().name == "offline"
    assert set(PluginDB.LUA_FUNCTIONS) >= {
        "define_table", "query", "query_one", "count", "exists", "insert", "insert_many", "upsert", "update",
        "delete", "ulid", "timestamp", "timestamp_ago", "eq", "neq", "gt", "gte", "lt", "lte", "like", "not_like",
        "in_list", "not_in", "between", "is_null", "is_not_null"}
    assert "ulid" in PluginDB.PURE_FUNCTIONS and "eq" in PluginDB.PURE_FUNCTIONS
    assert not PluginDB.PURE_FUNCTIONS & {"query", "insert", "define_table", "transaction"}
    with pytest.raises(PluginLoadError, match="the database is not available here"):
        vm.call_init()


# ---- the bundled example plugin ----------------------------------------------------------------
def _route(vm, method, path):
    for r in vm.routes:
        pattern = "^" + re.sub(r"\{[a-z_]+\}", "([^/]+)", r.path) + "$"
        m = re.match(pattern, path)
        if r.method == method and m:
            keys = re.findall(r"\{([a-z_]+)\}", r.path)
            return r.index, dict(zip(keys, m.groups()))
    raise AssertionError(f"no route {method} {path}")


def _request(vm, method, path, body=None, query=None):
    index, params = _route(vm, method, path)
    req = {"method": method, "path": path, "body": json.dumps(body) if body is not None else "",
           "client_ip": "127.0.0.1", "headers": {"content-type": "application/json"}, "query": query or {},
           "params": params, "json": body}
    return vm.read_response(vm.call_route(index, req))


def test_task_tracker_example_plugin(database):
    ctx = VMContext("task_tracker", REPO / "plugins" / "task_tracker", PluginSettings(), database=database)
    vm = PluginVM(ctx)
    manifest = vm.load()
    assert manifest.permissions == ("db", "http")
    vm.call_init()
    assert {(r.method, r.path) for r in vm.routes} == {
        ("GET", "/tasks"), ("POST", "/tasks"), ("GET", "/tasks/{id}"), ("PUT", "/tasks/{id}"),
        ("DELETE", "/tasks/{id}"), ("GET", "/categories")}
    categories = _request(vm, "GET", "/categories")["json"]["categories"]
    assert [c["name"] for c in categories] == ["Bug", "Documentation", "Feature", "Improvement"]
    bug = categories[0]["id"]

    created = _request(vm, "POST", "/tasks", {"title": "  Fix it ", "category_id": bug, "priority": 2,
                                              "tags": ["a"]})
    assert created["status"] == 201
    task = created["json"]
    assert task["title"] == "Fix it" and task["status"] == "todo" and task["tags"] == ["a"]
    assert _request(vm, "POST", "/tasks", {"category_id": bug})["json"] == {"error": "title is required"}
    assert _request(vm, "POST", "/tasks", {"title": "x", "category_id": "nope"})["status"] == 400

    got = _request(vm, "GET", f"/tasks/{task['id']}")
    assert got["status"] == 200 and got["json"]["id"] == task["id"]
    put = _request(vm, "PUT", f"/tasks/{task['id']}", {"status": "done"})
    assert put["json"]["status"] == "done" and RFC3339_RE.match(put["json"]["completed_at"])
    _request(vm, "POST", "/tasks", {"title": "Second", "category_id": bug, "priority": 5})
    listed = _request(vm, "GET", "/tasks")["json"]
    assert listed["total"] == 2 and [t["title"] for t in listed["tasks"]] == ["Second", "Fix it"]
    assert _request(vm, "GET", "/tasks", query={"status": "done"})["json"]["total"] == 1
    counts = {c["name"]: c["task_count"] for c in _request(vm, "GET", "/categories")["json"]["categories"]}
    assert counts == {"Bug": 2, "Documentation": 0, "Feature": 0, "Improvement": 0}

    assert _request(vm, "DELETE", f"/tasks/{task['id']}")["status"] == 204
    assert _request(vm, "GET", f"/tasks/{task['id']}")["status"] == 404
    assert _request(vm, "DELETE", f"/tasks/{task['id']}")["status"] == 404

    # seeding happens once: a second start finds the categories and adds none
    again = PluginVM(ctx)
    again.load()
    again.call_init()
    assert database.execute_sql('SELECT COUNT(*) FROM "plugin_task_tracker__categories"').fetchone() == (4,)


def test_task_tracker_lua_tests_pass():
    from modula_desktop.core.plugins.authoring.testrunner import run_plugin_tests

    run = run_plugin_tests(REPO / "plugins" / "task_tracker")
    assert run.load_error is None
    failures = [(r.name, r.error) for r in run.results if not r.ok]
    assert failures == []
    assert run.passed >= 8
