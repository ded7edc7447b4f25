"""db.query's having and joins (ModulaCMS's db_api option shapes), joins only between the plugin's own
tables: real Lua in a real PluginVM on a real SQLite file that also holds the site's approvals and another
plugin's table."""
from __future__ import annotations

from pathlib import Path

import pytest

from modula_desktop.core.plugins.errors import PluginCallError
from modula_desktop.core.plugins.runtime.vm import PluginVM, VMContext
from modula_desktop.core.settings import PluginSettings
from modula_desktop.core.storage import open_database

SCHEMA = """
function on_init()
  db.define_table("cats", {columns = {{name = "name", type = "text", not_null = true},
                                      {name = "hidden", type = "boolean", default = false}}})
  db.define_table("tasks", {columns = {{name = "title", type = "text"}, {name = "cat_id", type = "text"},
                                       {name = "points", type = "integer", default = 0},
                                       {name = "meta", type = "json"}}})
  local a = db.insert("cats", {id = "ca", name = "alpha"})
  local b = db.insert("cats", {id = "cb", name = "beta", hidden = true})
  db.insert("cats", {id = "cc", name = "gamma"})
  db.insert("tasks", {id = "t1", title = "one", cat_id = "ca", points = 1, meta = {k = 1}})
  db.insert("tasks", {id = "t2", title = "two", cat_id = "ca", points = 2})
  db.insert("tasks", {id = "t3", title = "three", cat_id = "cb", points = 5})
  db.insert("tasks", {id = "t4", title = "four", cat_id = "zz", points = 7})
end
local cases = {
%s
}
http.handle("POST", "/run", function(req)
  local r, err = cases[req.json.case]()
  return {json = {r = r, err = err}}
end)
"""


def make_vm(database, root: Path, name: str, body: str) -> PluginVM:
    root.mkdir(parents=True, exist_ok=True)
    (root / "init.lua").write_text(
        f'plugin_info = {{name = "{name}", version = "1.0.0", description = "test"}}\n{body}\n', encoding="utf-8")
    vm = PluginVM(VMContext(name, root, PluginSettings(), database=database))
    vm.load()
    vm.call_init()
    return vm


@pytest.fixture
def database(tmp_path):
    db = open_database(tmp_path / "site.db")
    db.execute_sql("INSERT INTO plugin_hook_approval (plugin, event, table_name, approved_at) "
                   "VALUES ('p', 'before_create', 'content', '2024-01-01')")
    make_vm(db, tmp_path / "plugins" / "other", "other", """
      function on_init()
        db.define_table("secrets", {columns = {{name = "value", type = "text"}, {name = "cat_id", type = "text"}}})
        db.insert("secrets", {id = "s1", value = "top secret", cat_id = "ca"})
      end""")
    yield db
    db.close()


@pytest.fixture
def run(tmp_path, database):
    def go(expr: str):
        vm = make_vm(database, tmp_path / "plugins" / "shop", "shop", SCHEMA % f"c = function() return {expr} end,")
        request = {"method": "POST", "path": "/run", "body": "", "client_ip": "127.0.0.1", "headers": {},
                   "query": {}, "params": {}, "json": {"case": "c"}}
        try:
            return vm.read_response(vm.call_route(vm.routes[0].index, request))["json"]
        finally:
            vm.close()
    return go


def test_inner_join_with_qualified_columns_where_and_order(run):
    out = run('db.query("tasks", {columns = {"title", "cats.name"}, '
              'joins = {{table = "cats", local_col = "cat_id", foreign_col = "id"}}, '
              'where = {["cats.hidden"] = false}, order_by = {{column = "points", desc = true}}})')
    assert out.get("err") is None
    assert out["r"] == [{"title": "two", "name": "alpha"}, {"title": "one", "name": "alpha"}]


def test_left_join_keeps_unmatched_rows_and_star_keeps_the_main_ids(run):
    out = run('db.query("tasks", {joins = {{type = "left", table = "cats", local_col = "tasks.cat_id", '
              'foreign_col = "cats.id"}}, order_by = "points"})')
    rows = out.get("r"); assert rows, out
    assert [r["id"] for r in rows] == ["t1", "t2", "t3", "t4"]  # "id" is the main table's; the cat's is cats.id
    assert rows[0]["cats.id"] == "ca" and rows[0]["name"] == "alpha" and rows[0]["meta"] == {"k": 1}
    assert rows[2]["hidden"] is True  # decoded by the joined column's type
    assert "cats.id" not in rows[3] or rows[3]["cats.id"] is None  # no category: NULLs


def test_right_join(run):
    out = run('db.query("tasks", {columns = {"title", "cats.name"}, joins = {{type = "right", table = "cats", '
              'local_col = "cat_id", foreign_col = "id"}}, order_by = "cats.name, title"})')
    assert [(r.get("title"), r["name"]) for r in out["r"]] == [
        ("one", "alpha"), ("two", "alpha"), ("three", "beta"), (None, "gamma")]


def test_group_by_with_having_on_an_aggregate_alias(run):
    out = run('db.query("tasks", {columns = {"cat_id", db.agg_count("*", "n"), db.agg_sum("points", "total")}, '
              'group_by = {"cat_id"}, having = {n = db.gte(2)}})')
    assert out["r"] == [{"cat_id": "ca", "n": 2, "total": 3}]
    out = run('db.query("tasks", {columns = {"cat_id", db.agg_sum("points", "total")}, group_by = {"cat_id"}, '
              'having = {{"total", ">", 4}}, order_by = "cat_id"})')
    assert [r["cat_id"] for r in out["r"]] == ["cb", "zz"]


def test_join_and_group_together(run):
    out = run('db.query("tasks", {columns = {"cats.name", db.agg_sum("tasks.points", "total")}, '
              'joins = {{table = "cats", local_col = "cat_id", foreign_col = "id"}}, group_by = {"cats.name"}, '
              'having = {total = db.gt(2)}})')
    assert out["r"] == [{"name": "alpha", "total": 3}, {"name": "beta", "total": 5}]


def test_query_one_takes_joins(run):
    out = run('db.query_one("tasks", {columns = {"title", "cats.name"}, where = {id = "t3"}, '
              'joins = {{table = "cats", local_col = "cat_id", foreign_col = "id"}}})')
    assert out["r"] == {"title": "three", "name": "beta"}


# ---- the attacks: every one refused, the other tables' rows never returned ------------------------
DATA_REFUSALS = [
    # another plugin's table, by its short name, its full name, and with the two-underscore trick
    ('db.query("tasks", {joins = {{table = "secrets", local_col = "cat_id", foreign_col = "cat_id"}}})',
     "table 'secrets' is not defined"),
    ('db.query("tasks", {joins = {{table = "plugin_other__secrets", local_col = "cat_id", foreign_col = "cat_id"}}})',
     "table 'plugin_other__secrets' is not defined"),
    # the site's own tables: approvals, content
    ('db.query("tasks", {joins = {{table = "plugin_hook_approval", local_col = "id", foreign_col = "plugin"}}})',
     "table 'plugin_hook_approval' is not defined"),
    ('db.query("tasks", {joins = {{table = "content", local_col = "id", foreign_col = "id"}}})',
     "table 'content' is not defined"),
    # a column of a table that is not in the query
    ('db.query("tasks", {columns = {"secrets.value"}, joins = {{table = "cats", local_col = "cat_id", '
     'foreign_col = "id"}}})', "unknown column 'secrets.value'"),
    ('db.query("tasks", {joins = {{table = "cats", local_col = "plugin_other__secrets.cat_id", foreign_col = "id"}}})',
     "names table 'plugin_other__secrets', which is not in the query"),
    ('db.query("tasks", {joins = {{table = "cats", local_col = "cat_id", foreign_col = "nope"}}})',
     "unknown column 'nope' in table 'cats'"),
]


@pytest.mark.parametrize("expr, message", DATA_REFUSALS)
def test_joins_reach_only_the_plugins_own_tables(run, expr, message):
    out = run(expr)
    assert out.get("r") is None and message in out["err"]  # a data error: nil, err
    assert "top secret" not in repr(out) and "before_create" not in repr(out)


ARGUMENT_REFUSALS = [
    # injection through the join's table, type and conditions: identifiers only, never spliced
    ('db.query("tasks", {joins = {{table = "cats ON 1=1 JOIN plugin_other__secrets", local_col = "cat_id", '
     'foreign_col = "id"}}})', "invalid table name"),
    ('db.query("tasks", {joins = {{table = "cats", local_col = "cat_id = cats.id OR 1=1 --", foreign_col = "id"}}})',
     "invalid join local_col"),
    ('db.query("tasks", {joins = {{table = "cats", local_col = "cat_id", '
     'foreign_col = "id) UNION SELECT value, 1, 1, 1, 1, 1, 1 FROM plugin_other__secrets --"}}})',
     "invalid join foreign_col"),
    ('db.query("tasks", {joins = {{table = "cats", local_col = "cat_id", foreign_col = "\\"id\\""}}})',
     "invalid join foreign_col"),
    ('db.query("tasks", {joins = {{type = "cross join plugin_other__secrets --", table = "cats", local_col = "cat_id", '
     'foreign_col = "id"}}})', "type must be inner, left or right"),
    ('db.query("tasks", {joins = {{table = "cats", local_col = "cat_id", foreign_col = "id", on = "1=1"}}})',
     "unknown field 'on'"),
    ('db.query("tasks", {joins = {{table = "tasks", local_col = "id", foreign_col = "id"}}})',
     "already in the query"),
    ('db.query("tasks", {joins = {{table = "cats", local_col = "cat_id"}}})', "needs foreign_col"),
    ('db.query("tasks", {columns = {"cats.name; DROP TABLE content"}, joins = {{table = "cats", '
     'local_col = "cat_id", foreign_col = "id"}}})', "invalid column"),
    ('db.query("tasks", {where = {["cats.name OR 1=1"] = "x"}, joins = {{table = "cats", local_col = "cat_id", '
     'foreign_col = "id"}}})', "invalid column"),
    ('db.query("tasks", {columns = {"cats.name"}})', "invalid column 'cats.name'"),  # qualified without a join
    ('db.query("tasks", {having = {["n) OR (1=1"] = 1}, group_by = {"cat_id"}})', "invalid column"),
    ('db.query("tasks", {having = {n = 1}})', "having needs group_by"),
]


@pytest.mark.parametrize("expr, message", ARGUMENT_REFUSALS)
def test_join_and_having_arguments_are_checked_and_raise(run, expr, message):
    with pytest.raises(PluginCallError) as info:
        run(expr)
    assert info.value.kind == "error" and message in info.value.message


def test_approvals_and_other_plugins_rows_are_unchanged(run, database):
    before = (database.execute_sql("SELECT * FROM plugin_hook_approval").fetchall(),
              database.execute_sql('SELECT * FROM "plugin_other__secrets"').fetchall())
    for expr, _ in DATA_REFUSALS:
        run(expr)
    assert (database.execute_sql("SELECT * FROM plugin_hook_approval").fetchall(),
            database.execute_sql('SELECT * FROM "plugin_other__secrets"').fetchall()) == before
