"""Injection through every part of the db API fails with a clear error and changes nothing.

Each attempt runs as real Lua in a plugin VM on a site that also holds CMS content and another
plugin's table; afterwards the whole database (sqlite_master and every table's rows) is compared
with a snapshot taken before.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from modula_desktop.core.plugins.errors import PluginCallError, PluginLoadError
from modula_desktop.core.plugins.runtime.vm import PluginVM, VMContext
from modula_desktop.core.settings import PluginSettings
from modula_desktop.core.storage import open_database, utc_now


def write_plugin(database, root: Path, name: str, body: str) -> PluginVM:
    root.mkdir(parents=True, exist_ok=True)
    (root / "init.lua").write_text(
        f'plugin_info = {{name = "{name}", version = "1.0.0", description = "test"}}\n{body}\n', encoding="utf-8")
    return PluginVM(VMContext(name, root, PluginSettings(), database=database))


@pytest.fixture
def database(tmp_path):
    db = open_database(tmp_path / "site.db")
    now = utc_now()
    db.execute_sql("INSERT INTO content (id, type, title, slug, body, status, fields, created_at, updated_at) "
                   "VALUES ('c1', 'page', 'Home', 'home', 'hello', 'published', '{}', ?, ?)", (now, now))
    other = write_plugin(db, tmp_path / "plugins" / "other", "other", """
      function on_init()
        db.define_table("secrets", {columns = {{name = "value", type = "text"}}})
        db.insert("secrets", {id = "s1", value = "top secret"})
      end""")
    other.load()
    other.call_init()
    yield db
    db.close()


def snapshot(db) -> dict:
    """Everything in the file: the schema and the rows of every table."""
    schema = db.execute_sql("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
    data = {}
    for (table,) in db.execute_sql("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall():
        # sorted here: some tables (the search index's shadow tables) have no rowid to order by
        data[table] = sorted(db.execute_sql(f'SELECT * FROM "{table}"').fetchall(), key=repr)
    return {"schema": schema, "data": data}


SHOP = """
function on_init()
  db.define_table("items", {
    columns = {{name = "name", type = "text", not_null = true}, {name = "qty", type = "integer", default = 0}},
    indexes = {{columns = {"name"}, unique = true}},
  })
  db.insert("items", {name = "apple", qty = 1})
  db.insert("items", {name = "banana", qty = 2})
end
local cases = {
%s
}
http.handle("POST", "/run", function(req) return {json = {result = cases[req.json.case]()}} end)
"""


@pytest.fixture
def shop(tmp_path, database):
    def make(expr: str) -> PluginVM:
        # a data error comes back as nil, err (ModulaCMS): raised here, so every attack fails alike
        body = SHOP % (f"attack = function() local r, err = {expr}\n"
                       "if r == nil and err then error('nil, err: ' .. err, 0) end return r end,")
        vm = write_plugin(database, tmp_path / "plugins" / "shop", "shop", body)
        vm.load()
        vm.call_init()
        return vm
    return make


def run(vm: PluginVM, case: str = "attack"):
    request = {"method": "POST", "path": "/run", "body": "", "client_ip": "127.0.0.1", "headers": {}, "query": {},
               "params": {}, "json": {"case": case}}
    return vm.read_response(vm.call_route(vm.routes[0].index, request))["json"]["result"]


DROP = "DROP TABLE content; --"

ATTACKS = [
    # table names
    (f'db.query("items; {DROP}")', "db.query: invalid table name"),
    ('db.query("content")', "db.query: table 'content' is not defined"),
    ('db.query("../content")', "db.query: invalid table name '../content'"),
    ('db.query(\'items"\')', "db.query: invalid table name"),
    ('db.query("ITEMS")', "db.query: invalid table name 'ITEMS'"),
    ('db.query("plugin_other_secrets")', "db.query: table 'plugin_other_secrets' is not defined"),
    ('db.query("sqlite_master")', "db.query: table 'sqlite_master' is not defined"),
    ('db.query("items --")', "db.query: invalid table name"),
    ('db.query("")', "db.query: invalid table name ''"),
    ('db.query(string.rep("a", 64))', "db.query: invalid table name"),
    ('db.query(nil)', "db.query: table name must be a string"),
    ('db.query({})', "db.query: table name must be a string"),
    (f'db.insert("items (name) VALUES (\'x\'); {DROP}", {{name = "x"}})', "db.insert: invalid table name"),
    ('db.update("content", {set = {title = "pwned"}, where = {id = "c1"}})', "db.update: table 'content' is not "
                                                                             "defined"),
    ('db.delete("other_secrets", {where = {id = "s1"}})', "db.delete: table 'other_secrets' is not defined"),
    ('db.count("plugin_route_approval")', "db.count: table 'plugin_route_approval' is not defined"),
    (f'db.define_table("x; {DROP}", {{columns = {{{{name = "a", type = "text"}}}}}})',
     "db.define_table: invalid table name"),
    (f'db.upsert("items\\"; {DROP}", {{values = {{name = "x"}}, conflict_columns = {{"name"}}}})',
     "db.upsert: invalid table name"),
    # column names
    (f'db.insert("items", {{[\'name") VALUES (1); {DROP}\'] = "x"}})', "db.insert: invalid column"),
    ('db.query("items", {where = {["name = name OR 1"] = 1}})', "db.query: invalid column 'name = name OR 1'"),
    ('db.query("items", {where = {{"qty > 0 OR 1", "=", 1}}})', "db.query: invalid column"),
    ('db.update("items", {set = {[\'qty" = 1, "name\'] = 1}, where = {name = "apple"}})', "db.update: invalid column"),
    ('db.update("items", {set = {qty = 9}, where = {["1=1 OR name"] = "x"}})', "db.update: invalid column"),
    ('db.query("items", {columns = {"name, (SELECT sql FROM sqlite_master)"}})', "db.query: invalid column"),
    ('db.query("items", {columns = {"*"}})', "db.query: invalid column '*'"),
    ('db.query("items", {columns = {"secret"}})', "db.query: unknown column 'secret' in table 'items'"),
    (f'db.define_table("evil", {{columns = {{{{name = \'a TEXT); {DROP}\', type = "text"}}}}}})',
     "db.define_table: invalid column name"),
    (f'db.define_table("evil", {{columns = {{{{name = "a", type = "text); {DROP}"}}}}}})',
     "db.define_table: column 'a' has unknown type"),
    (f'db.define_table("evil", {{columns = {{{{name = "a", type = "text"}}}}, '
     f'indexes = {{{{columns = {{\'a"); {DROP}\'}}}}}}}})', "db.define_table: invalid index column"),
    ('db.define_table("evil", {columns = {{name = "a", type = "text"}}, foreign_keys = {{column = "a", '
     f'ref_table = \'plugin_shop_items"(id)); {DROP}\', ref_column = "id"}}}}}})',
     "which is not one of this plugin's tables"),
    ('db.define_table("evil", {columns = {{name = "a", type = "text"}}, foreign_keys = {{column = "a", '
     f'ref_table = "plugin_shop_items", ref_column = "id", on_delete = "CASCADE; {DROP}"}}}}}})',
     "on_delete must be one of CASCADE"),
    ('db.define_table("evil", {columns = {{name = "a", type = "text"}}, foreign_keys = {{column = "a", '
     'ref_table = "plugin_shop_items", ref_column = "id) ON DELETE CASCADE --"}}})',
     "db.define_table: invalid foreign key ref_column"),
    ('db.define_table("evil", {columns = {{name = "a", type = "text"}}, foreign_keys = {{column = "a", '
     'ref_table = "plugin_other_secrets", ref_column = "id"}}})', "which is not one of this plugin's tables"),
    ('db.define_table("evil", {columns = {{name = "a", type = "text"}}, foreign_keys = {{column = "a", '
     'ref_table = "content", ref_column = "id"}}})', "which is not one of this plugin's tables"),
    ('db.insert_many("items", {"name", "qty) SELECT sql, 1 FROM sqlite_master --"}, {{"x", 1}})',
     "db.insert_many: invalid column"),
    ('db.upsert("items", {values = {name = "apple"}, conflict_columns = {"name) DO UPDATE SET name = \'x\' --"}})',
     "db.upsert: invalid conflict column"),
    ('db.upsert("items", {values = {name = "apple"}, conflict_columns = {"name"}, update = {["qty = 0, name"] = 1}})',
     "db.upsert: invalid column"),
    ('db.create_index("items", {columns = {"qty); DROP INDEX x; --"}})', "db.create_index: invalid column"),
    # aggregates
    ('db.query("items", {columns = {db.agg_sum("qty) FROM plugin_other_secrets --")}})', "db.query: invalid column"),
    (f'db.query("items", {{columns = {{{{__agg = "COUNT(*)); {DROP}", __arg = "*"}}}}}})',
     "db.query: unknown aggregate"),
    ('db.query("items", {columns = {db.agg_count("*", \'n" FROM plugin_other_secrets --\')}})',
     "db.query: invalid aggregate alias"),
    # order_by and group_by
    (f'db.query("items", {{order_by = "name; {DROP}"}})', "db.query: invalid order_by"),
    ('db.query("items", {order_by = "(SELECT value FROM plugin_other_secrets)"})', "db.query: invalid order_by"),
    ('db.query("items", {order_by = "name COLLATE NOCASE"})', "db.query: invalid order_by"),
    ('db.query("items", {order_by = "random()"})', "db.query: invalid order_by"),
    ('db.query("items", {order_by = "1"})', "db.query: invalid order_by"),
    ('db.query("items", {order_by = "name DESC, qty; --"})', "db.query: invalid order_by"),
    ('db.query("items", {order_by = "secret DESC"})', "db.query: unknown column 'secret'"),
    (f'db.query("items", {{order_by = {{{{column = "name DESC; {DROP}"}}}}}})',
     "db.query: invalid order_by column"),
    ('db.query("items", {order_by = {{column = "name", desc = "DESC; --"}}})',
     "db.query: order_by desc must be true or false"),
    (f'db.query("items", {{group_by = {{"name; {DROP}"}}}})', "db.query: invalid column"),
    ('db.query("items", {group_by = "name) UNION SELECT sql FROM sqlite_master --"})', "db.query: invalid column"),
    # operators
    ('db.query("items", {where = {{"name", "= \'x\' OR 1=1 --", "y"}}})', "db.query: where: unknown operator"),
    ('db.query("items", {where = {{"name", "LIKE \'%\' OR name LIKE", "y"}}})', "db.query: where: unknown operator"),
    ('db.query("items", {where = {name = {__op = "eq) OR (1=1", __val = 1}}})',
     "db.query: where: unknown condition operator"),
    ('db.query("items", {where = {name = {__op = "eq", __val = "x", __sql = "1=1"}}})',
     "db.query: where: condition for 'name' has unexpected fields"),
    ('db.query("items", {where = {{"OR 1=1 --", {{"name", "=", "x"}}}}})', "db.query: where: unknown operator"),
    ('db.delete("items", {where = {{"qty", ">= 0 OR 1=1; --", 0}}})', "db.delete: where: unknown operator"),
    ('db.update("items", {set = {qty = 0}, where = {{"qty", "IS NULL OR 1=1 --"}}})',
     "db.update: where: unknown operator"),
    ('db.count("items", {where = {{"AND 1=1", {}}}})', "db.count: where: unknown operator"),
    # limit and offset
    (f'db.query("items", {{limit = "1; {DROP}"}})', "db.query: limit must be an integer"),
    ('db.query("items", {offset = "0 UNION SELECT sql FROM sqlite_master"})',
     "db.query: offset must be a non-negative integer"),
    # where/set must be real tables
    ('db.update("items", {set = "qty = 0", where = {name = "apple"}})', "db.update: set must be a table"),
    ('db.delete("items", {where = "1=1"})', "db.delete: where: must be a table"),
]


@pytest.mark.parametrize("expr, message", ATTACKS, ids=[f"{i:02d}" for i in range(len(ATTACKS))])
def test_injection_fails_clearly_and_changes_nothing(shop, database, expr, message):
    vm = shop(expr)
    before = snapshot(database)
    with pytest.raises(PluginCallError) as info:
        run(vm)
    assert info.value.kind == "error"
    assert message in info.value.message
    assert snapshot(database) == before


def test_values_are_data_never_sql(shop, database):
    vm = shop(f"""{{
      inserted = db.insert("items", {{name = "x'); {DROP}", qty = 3}}),
      quoted = db.insert("items", {{name = 'y"; {DROP}'}}),
      where_hit = #db.query("items", {{where = {{name = "x'); {DROP}"}}}}),
      where_miss = #db.query("items", {{where = {{name = "' OR '1'='1"}}}}),
      like_miss = #db.query("items", {{where = {{name = db.like("%' OR 1=1 --")}}}}),
      in_miss = #db.query("items", {{where = {{name = db.in_list("') OR 1=1 --", "x")}}}}),
      seq_miss = #db.query("items", {{where = {{{{"name", "=", "1 OR 1=1"}}}}}}),
      updated = db.update("items", {{set = {{qty = 5}}, where = {{name = "apple' OR '1'='1"}}}}),
      deleted = db.delete("items", {{where = {{name = "' OR 1=1 --"}}}}),
    }}""")
    before = snapshot(database)
    out = run(vm)
    assert out["inserted"]["name"] == f"x'); {DROP}"
    assert out["where_hit"] == 1
    assert out["where_miss"] == out["like_miss"] == out["in_miss"] == out["seq_miss"] == 0
    assert out["updated"] == 0 and out["deleted"] == 0
    after = snapshot(database)
    assert after["schema"] == before["schema"]
    assert {t: rows for t, rows in after["data"].items() if t != "plugin_shop__items"} == \
        {t: rows for t, rows in before["data"].items() if t != "plugin_shop__items"}
    names = [r[0] for r in database.execute_sql('SELECT name FROM "plugin_shop__items" ORDER BY rowid').fetchall()]
    assert names == ["apple", "banana", f"x'); {DROP}", f'y"; {DROP}']


def test_a_default_is_a_literal_not_sql(shop, database):
    vm = shop(f"""{{
      defined = db.define_table("notes", {{columns = {{{{name = "body", type = "text",
                                                        default = "x'); {DROP}"}}}}}}),
      row = db.insert("notes", {{}}),
    }}""")
    before = snapshot(database)
    out = run(vm)
    assert out["row"]["body"] == f"x'); {DROP}"
    after = snapshot(database)
    new = [s for s in after["schema"] if s not in before["schema"]]
    assert [(s[0], s[1]) for s in new] == [("index", "sqlite_autoindex_plugin_shop__notes_1"),
                                          ("table", "plugin_shop__notes")]
    assert after["data"]["content"] == before["data"]["content"]


CROSS_ROUTES = """
local function raised(r, err) if r == nil and err then error(err, 0) end return r end
local cases = {
  query = function() return raised(db.query("%(t)s")) end,
  insert = function() return raised(db.insert("%(t)s", {%(col)s = "x"})) end,
  update = function() return raised(db.update("%(t)s", {set = {%(col)s = "x"}, where = {%(col)s = db.is_not_null()}})) end,
  delete = function() return raised(db.delete("%(t)s", {where = {%(col)s = db.is_not_null()}})) end,
  count = function() return raised(db.count("%(t)s")) end,
}
http.handle("POST", "/run", function(req) return {json = {result = cases[req.json.case]()}} end)
"""


def assert_unreachable(vm: PluginVM, short: str):
    for case in ("query", "insert", "update", "delete", "count"):
        with pytest.raises(PluginCallError) as info:
            run(vm, case)
        assert f"db.{case}: table '{short}' is not defined" in info.value.message


def test_plugins_sharing_a_name_prefix_cannot_reach_each_others_tables(tmp_path, database):
    # plugin "a" with table "b_c" and plugin "a_b" with table "c" were both plugin_a_b_c before the
    # namespace plugin_<plugin>__<table>; now each has its own, and neither reaches the other's
    a = write_plugin(database, tmp_path / "plugins" / "a", "a", """
      function on_init()
        db.define_table("b_c", {columns = {{name = "v", type = "text"}}})
        db.insert("b_c", {v = "mine"})
      end""")
    a.load()
    a.call_init()
    before = snapshot(database)
    a_b = write_plugin(database, tmp_path / "plugins" / "a_b", "a_b", """
      function on_init()
        db.define_table("c", {columns = {{name = "v", type = "text"}}})
        db.insert("c", {v = "theirs"})
      end
    """ + CROSS_ROUTES % {"t": "b_c", "col": "v"})
    a_b.load()
    a_b.call_init()
    assert_unreachable(a_b, "b_c")
    after = snapshot(database)
    assert {t: rows for t, rows in after["data"].items() if t not in ("plugin_a_b__c", "plugin_schema")} == \
        {t: rows for t, rows in before["data"].items() if t != "plugin_schema"}
    assert [r[1] for r in after["data"]["plugin_a__b_c"]] == ["mine"]
    assert [r[1] for r in after["data"]["plugin_a_b__c"]] == ["theirs"]


def test_a_plugin_named_like_a_cms_table_prefix_cannot_adopt_it(tmp_path, database):
    # storage.py's plugin_route_approval reads as "table approval of a plugin named route"
    database.execute_sql("INSERT INTO plugin_route_approval (plugin, method, path, approved_at) "
                         "VALUES ('x', 'GET', '/a', '2024-01-01')")
    before = snapshot(database)
    route = write_plugin(database, tmp_path / "plugins" / "route", "route", """
      function on_init() db.define_table("approval", {columns = {{name = "plugin", type = "text"}}}) end
    """ + CROSS_ROUTES % {"t": "approval", "col": "plugin"})
    route.load()
    route.call_init()  # its table is plugin_route__approval: no CMS table holds "__"
    assert run(route, "count") == 0
    assert run(route, "insert")["plugin"] == "x"
    after = snapshot(database)
    assert after["data"]["plugin_route_approval"] == before["data"]["plugin_route_approval"]
    assert len(after["data"]["plugin_route__approval"]) == 1
