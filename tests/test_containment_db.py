"""Issue 13 items 2, 4, 8 and 11, as an attacker tries them: a real plugin on a real server (or a real
PluginManager on a real SQLite file). Each test asserts the safe outcome and that the site stays
healthy: a content save works, /api/v1/health answers, another plugin keeps serving."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from _server_fixtures import running_site
from helpers import logged, route_error

from modula_desktop.core.plugins.api.db import sql_table_name
from modula_desktop.core.plugins.errors import PluginCallError
from modula_desktop.core.plugins.api.log import Logbook
from modula_desktop.core.plugins.lifecycle.manager import PluginManager
from modula_desktop.core.plugins.lifecycle.manifest import NAME_RE, check_name
from modula_desktop.core.settings import PluginSettings
from modula_desktop.core.storage import open_database

P = "/api/v1/plugins"


def write_plugin(site: Path, name: str, source: str):
    folder = site / "plugins" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "init.lua").write_text(source, encoding="utf-8")


def assert_healthy(c, label: str = "after the attack"):
    assert c.get("/api/v1/health").status == 200, label
    r = c.post("/api/v1/admin/content", json={"title": f"still saving {time.monotonic()}"}, timeout=15)
    assert r.status == 201, (label, r.status, r.body)
    assert c.get("/api/v1/plugins/inspect/req").status == 200, label


def site(tmp_path, plugins: dict, settings: dict | None = None):
    for name, source in plugins.items():
        write_plugin(tmp_path, name, source)
    return running_site(tmp_path, dict({"max_failures": 1000}, **(settings or {})),
                        plugins=("inspect",))


# ---- item 2: no lock outlives a call -------------------------------------------------------------
YIELDER = """
plugin_info = {name = "yielder", version = "1.0.0", description = "yields inside a transaction"}
local results = {}
local function attack(tag)
  local co = coroutine.create(function()
    local ok, err = db.transaction(function()
      db.insert("t", {v = tag})
      coroutine.yield("suspended")
      db.insert("t", {v = tag .. "-after"})
    end)
    results[#results + 1] = {ok = ok, err = err}
    return "finished"
  end)
  local resumed, what = coroutine.resume(co)
  return resumed, what, coroutine.status(co)
end
function on_init()
  db.define_table("t", {columns = {{name = "v", type = "text"}}})
  attack("init")
end
http.handle("GET", "/attack", function(req)
  local resumed, what, status = attack("route")
  return {json = {resumed = resumed, what = what, status = status, result = results[#results],
                  rows = db.count("t")}}
end)
http.handle("GET", "/init", function(req) return {json = {rows = db.count("t")}} end)
http.handle("GET", "/generator", function(req)
  -- a coroutine used *inside* a transaction (an iterator) still works: only the thread that opened the
  -- transaction may not yield
  local got = {}
  local ok, err = db.transaction(function()
    for v in coroutine.wrap(function() for i = 1, 3 do coroutine.yield("g" .. i) end end) do
      db.insert("t", {v = v})
      got[#got + 1] = v
    end
  end)
  return {json = {ok = ok, err = err, got = got}}
end)
http.handle("GET", "/isyieldable", function(req)
  local inside
  local co = coroutine.create(function()
    db.transaction(function() inside = coroutine.isyieldable() end)
    return coroutine.isyieldable()
  end)
  local _, outside = coroutine.resume(co)
  return {json = {inside = inside, outside = outside}}
end)
"""


def test_yield_inside_a_transaction_is_an_error_and_rolls_back(tmp_path):
    with site(tmp_path, {"yielder": YIELDER}) as r:
        c = r.client
        c.approve_all("yielder")
        c.approve_all("inspect")
        assert r.service.plugins.get("yielder").state == "running"
        # on_init's attempt was rolled back: no row, no lock
        assert c.get(f"{P}/yielder/init").json() == {"rows": 0}
        assert_healthy(c, "after on_init's attempt")
        out = c.get(f"{P}/yielder/attack").json()
        assert out["resumed"] is True and out["what"] == "finished" and out["status"] == "dead"
        assert out["result"]["ok"] is False
        assert "cannot yield inside db.transaction" in out["result"]["err"]
        assert out["rows"] == 0
        assert_healthy(c, "after the route's attempt")
        assert c.get(f"{P}/yielder/generator").json() == {"ok": True, "got": ["g1", "g2", "g3"]}
        assert c.get(f"{P}/yielder/isyieldable").json() == {"inside": False, "outside": True}
        # lifecycle commands answer at once
        assert c.post("/api/v1/admin/plugins/yielder/disable", timeout=10).json()["state"] == "stopped"
        assert_healthy(c, "after disable")


def test_a_transaction_left_open_by_a_call_is_rolled_back_and_the_vm_discarded(tmp_path):
    """Defence in depth below the Lua rule: whatever opens a transaction and does not close it (here the
    host side of db.transaction called directly, as a bootstrap bug would), the call's end rolls it back
    on the same thread and the VM is not reused."""
    db = open_database(tmp_path / "site.db")
    plugins = tmp_path / "plugins"
    write_plugin(tmp_path, "leaky", """
plugin_info = {name = "leaky", version = "1.0.0", description = "x"}
function on_init() db.define_table("t", {columns = {{name = "v", type = "text"}}}) end
http.handle("GET", "/x", function(req) db.insert("t", {v = "x"}); return {json = {}} end)
""")
    manager = PluginManager(plugins, PluginSettings(), db, None, Logbook())
    try:
        manager.load_all()
        pool = manager.get("leaky").current.pool
        vm = pool.checkout(1.0)
        vm.db_api.tx_begin()  # what a suspended db.transaction leaves behind
        with pytest.raises(PluginCallError, match="db.transaction was still open when the call ended"):
            vm.call_route(vm.routes[0].index, {"method": "GET", "path": "/x", "body": "", "client_ip": "1",
                                               "headers": {}, "query": {}, "params": {}})
        assert not vm.db_api.in_transaction and vm.broken
        pool.give_back(vm)
        assert pool.discarded == 1
        # the row written inside the abandoned transaction is gone, and the database is not locked
        assert db.execute_sql('SELECT COUNT(*) FROM "plugin_leaky__t"').fetchone() == (0,)
        other = open_database(tmp_path / "site.db")
        other.execute_sql("BEGIN IMMEDIATE")
        other.execute_sql("ROLLBACK")
    finally:
        manager.shutdown()
        db.close()


SLOW_SHUTDOWN = """
plugin_info = {name = "stubborn", version = "1.0.0", description = "slow to stop"}
http.handle("GET", "/x", function(req) return {json = {}} end)
function on_shutdown() local t = os.clock(); while os.clock() - t < 4 do end end
"""


def test_disable_does_not_wait_on_the_plugin(tmp_path):
    with site(tmp_path, {"stubborn": SLOW_SHUTDOWN}) as r:
        c = r.client
        c.approve_all("inspect")
        started = time.monotonic()
        assert c.post("/api/v1/admin/plugins/stubborn/disable", timeout=10).json()["state"] == "stopped"
        assert time.monotonic() - started < 2.0  # on_shutdown spins 4 s behind it
        assert_healthy(c, "after disable")
        assert c.post("/api/v1/admin/plugins/stubborn/enable", timeout=15).json()["state"] == "running"


# ---- item 4: SQL is bounded ------------------------------------------------------------------------
LIKER = """
plugin_info = {name = "liker", version = "1.0.0", description = "expensive LIKE"}
function on_init()
  db.define_table("big", {columns = {{name = "v", type = "text"}}})
  if db.count("big") == 0 then
    local row = string.rep("a", 1000000)
    for i = 1, 12 do db.insert("big", {v = row}) end
  end
end
hooks.on("before_create", "content", function(entry)
  if string.find(entry.title or "", "slow write", 1, true) then
    -- SQLite rolls back the whole (content) transaction when it interrupts a write
    db.insert("big", {v = "marker"})
    db.update("big", {set = {v = "y"}, where = {v = db.like("%" .. string.rep("a", 98) .. "b")}})
  elseif string.find(entry.title or "", "slow", 1, true) then
    db.count("big", {where = {v = db.like("%" .. string.rep("a", 98) .. "b")}})
  end
end)
http.handle("GET", "/huge", function(req)
  return {json = {n = db.count("big", {where = {v = db.like("%" .. string.rep("a", 20000) .. "b")}})}}
end)
http.handle("GET", "/slow", function(req)
  return {json = {n = db.count("big", {where = {v = db.like("%" .. string.rep("a", 98) .. "b")}})}}
end)
http.handle("GET", "/slowtx", function(req)
  local ok, err = db.transaction(function()
    db.insert("big", {v = "x"})
    db.count("big", {where = {v = db.like("%" .. string.rep("a", 98) .. "b")}})
  end)
  return {json = {ok = ok, err = err}}
end)
http.handle("GET", "/slowupdate", function(req)
  local ok, err = db.transaction(function()
    db.insert("big", {v = "x"})
    db.update("big", {set = {v = "y"}, where = {v = db.like("%" .. string.rep("a", 98) .. "b")}})
  end)
  return {json = {ok = ok, err = err}}
end)
http.handle("GET", "/bigkey", function(req)
  return {json = {n = db.count("big", {where = {v = string.rep("k", 5 * 1024 * 1024)}})}}
end)
http.handle("GET", "/fast", function(req)
  return {json = {n = db.count("big", {where = {v = db.like("x%")}})}}
end)
"""


@pytest.fixture
def liker(tmp_path):
    with site(tmp_path, {"liker": LIKER}, {"timeout_s": 1.0, "hook_timeout_ms": 1000}) as r:
        r.client.approve_all("liker")
        r.client.approve_all("inspect")
        assert r.service.plugins.get("liker").state == "running", r.service.plugins.get("liker").error
        yield r


def test_a_huge_like_pattern_is_refused_at_once(liker):
    c = liker.client
    started = time.monotonic()
    out = c.get(f"{P}/liker/huge")
    assert out.status == 500 and "time budget" not in out.json()["error"]
    assert time.monotonic() - started < 1.0
    assert any("LIKE pattern" in e["message"] and "at most 100" in e["message"]
               for e in liker.service.logbook.entries("liker"))
    assert_healthy(c)


def test_an_expensive_statement_stops_at_the_handler_deadline(liker):
    c = liker.client
    started = time.monotonic()
    out = c.get(f"{P}/liker/slow")
    elapsed = time.monotonic() - started
    assert out.status == 504 and route_error(out)["code"] == "HANDLER_TIMEOUT", out.body
    assert "time budget" in logged(liker.service.logbook, "liker", route_error(out)["request_id"])
    assert elapsed < 1.0 + 1.0, elapsed  # 12 rows of 1 MB cost ~3 s of LIKE without the brake
    assert_healthy(c)
    # no stale deadline: the next fast statement on the same threads is not interrupted
    assert c.get(f"{P}/liker/fast").json() == {"n": 0}


def test_an_expensive_statement_inside_a_transaction_releases_the_write_lock(liker):
    c = liker.client
    started = time.monotonic()
    out = c.get(f"{P}/liker/slowtx")
    assert time.monotonic() - started < 2.0
    assert out.status == 504 and route_error(out)["code"] == "HANDLER_TIMEOUT", out.body
    assert "time budget" in logged(liker.service.logbook, "liker", route_error(out)["request_id"])
    assert_healthy(c)
    assert liker.service.db.execute_sql('SELECT COUNT(*) FROM "plugin_liker__big" WHERE v = ?',
                                              ("x",)).fetchone() == (0,)


@pytest.mark.parametrize("title", ["a slow one", "a slow write"])
def test_an_expensive_statement_in_a_before_hook_aborts_the_save_at_the_hook_deadline(liker, title, caplog):
    c = liker.client
    r = c.post("/api/v1/admin/plugins/hooks/approve",
               json={"hooks": [{"plugin": "liker", "event": "before_create", "table": "content"}]})
    assert r.status == 200, r.body
    before = liker.service.db.execute_sql("SELECT COUNT(*) FROM content").fetchone()
    started = time.monotonic()
    r = c.post("/api/v1/admin/content", json={"title": title}, timeout=30)
    assert time.monotonic() - started < 1.0 + 1.5
    assert r.status == 422, (r.status, r.body)
    assert "time budget" in r.json()["error"]
    assert liker.service.db.execute_sql("SELECT COUNT(*) FROM content").fetchone() == before
    assert liker.service.db.execute_sql('SELECT COUNT(*) FROM "plugin_liker__big" WHERE v IN (?, ?)',
                                        ("marker", "y")).fetchone() == (0,)
    assert "rollback failed" not in caplog.text
    assert_healthy(c)


def test_an_interrupted_write_in_a_transaction_rolls_back_cleanly(liker, caplog):
    c = liker.client
    out = c.get(f"{P}/liker/slowupdate")
    assert out.status == 504 and route_error(out)["code"] == "HANDLER_TIMEOUT", out.body
    assert "time budget" in logged(liker.service.logbook, "liker", route_error(out)["request_id"])
    assert "rollback failed" not in caplog.text
    assert liker.service.db.execute_sql('SELECT COUNT(*) FROM "plugin_liker__big" WHERE v IN (?, ?)',
                                        ("x", "y")).fetchone() == (0,)
    assert_healthy(c)


def test_a_huge_value_is_refused(liker):
    c = liker.client
    out = c.get(f"{P}/liker/bigkey")
    assert out.status == 500 and "time budget" not in out.json()["error"]
    assert_healthy(c)


# ---- item 8: disk is bounded -----------------------------------------------------------------------
FILLER = """
plugin_info = {name = "filler", version = "1.0.0", description = "fills the disk"}
function on_init()
  db.define_table("junk", {columns = {{name = "v", type = "text"}, {name = "n", type = "integer"}}})
end
local chunk = string.rep("z", 256 * 1024)
http.handle("GET", "/fill", function(req)
  local n = 0
  local ok, err = pcall(function()
    for i = 1, 400 do db.insert("junk", {v = chunk, n = i}); n = n + 1 end
  end)
  return {json = {n = n, err = err}}
end)
http.handle("GET", "/many", function(req)
  local rows = {}
  for i = 1, 40 do rows[i] = {chunk, i} end
  local ok, err = pcall(db.insert_many, "junk", {"v", "n"}, rows)
  return {json = {ok = ok, err = err}}
end)
http.handle("GET", "/grow", function(req)
  local ok, err = pcall(db.update, "junk", {set = {v = chunk .. chunk .. chunk}, where = {n = db.gt(0)}})
  return {json = {ok = ok, err = err}}
end)
http.handle("GET", "/upsert", function(req)
  local ok, err = pcall(db.upsert, "junk", {values = {id = "fixed", v = chunk .. chunk, n = 1},
                                             conflict_columns = {"id"}})
  return {json = {ok = ok, err = err}}
end)
http.handle("GET", "/txfill", function(req)
  local ok, err = db.transaction(function()
    for i = 1, 400 do db.insert("junk", {v = chunk, n = 1000 + i}) end
  end)
  return {json = {ok = ok, err = err, n = db.count("junk", {where = {n = db.gt(1000)}})}}
end)
http.handle("GET", "/free", function(req)
  return {json = {deleted = db.delete("junk", {where = {n = db.gt(0)}})}}
end)
http.handle("GET", "/small", function(req)
  return {json = {row = db.insert("junk", {v = "tiny", n = -1}) ~= nil}}
end)
"""


def test_storage_quota_stops_writes_with_an_error_naming_it(tmp_path):
    with site(tmp_path, {"filler": FILLER}, {"storage_quota_mb": 4}) as r:
        c = r.client
        c.approve_all("filler")
        c.approve_all("inspect")
        out = c.get(f"{P}/filler/fill").json()
        assert "storage quota" in out["err"] and "4 MiB" in out["err"] and "storage_quota_mb" in out["err"]
        assert 12 <= out["n"] <= 17, out  # 4 MiB of 256 KiB rows
        for route in ("many", "grow", "upsert", "txfill"):
            out = c.get(f"{P}/filler/{route}").json()
            assert out["ok"] is False and "storage quota" in out["err"], (route, out)
        assert c.get(f"{P}/filler/txfill").json()["n"] == 0  # the transaction rolled back whole
        assert_healthy(c)
        # deleting makes room again
        assert c.get(f"{P}/filler/free").json()["deleted"] >= 12
        assert c.get(f"{P}/filler/small").json() == {"row": True}
        assert c.get(f"{P}/filler/fill").json()["n"] >= 12
        size = tmp_path.joinpath("site.db").stat().st_size + tmp_path.joinpath("site.db-wal").stat().st_size
        assert size < 64 * 2**20


# ---- item 11: names and bytes ----------------------------------------------------------------------
def _plugin_src(name, table, route=True):
    return f"""
plugin_info = {{name = "{name}", version = "1.0.0", description = "x"}}
function on_init() db.define_table("{table}", {{columns = {{{{name = "v", type = "text"}}}}}}) end
http.handle("GET", "/put", function(req) return {{json = db.insert("{table}", {{v = "{name}"}})}} end)
http.handle("GET", "/all", function(req) return {{json = db.query("{table}")}} end)
"""


def test_a_plugin_cannot_squat_another_plugins_table_name(tmp_path):
    with site(tmp_path, {"a": _plugin_src("a", "b_c"), "a_b": _plugin_src("a_b", "c")}) as r:
        c = r.client
        assert r.service.plugins.get("a").state == "running"
        assert r.service.plugins.get("a_b").state == "running", r.service.plugins.get("a_b").error
        for name in ("a", "a_b", "inspect"):
            c.approve_all(name)
        assert c.get(f"{P}/a/put").status == 200 and c.get(f"{P}/a_b/put").status == 200
        assert [row["v"] for row in c.get(f"{P}/a/all").json()] == ["a"]
        assert [row["v"] for row in c.get(f"{P}/a_b/all").json()] == ["a_b"]
        assert_healthy(c)


@pytest.mark.parametrize("plugin,table", [
    ("a", "b_c"), ("a_b", "c"), ("a", "b__c"), ("a__b", "c"), ("a_", "b"), ("x1", "y"), ("x", "1y")])
def test_sql_names_are_injective(plugin, table):
    """plugin_<p>__<t> with p a plugin name and t a table name (starts with a letter, holds no "__"):
    the last "__" is the separator (one further right would start with t's first letter or lie inside
    t), so the pair is recovered from the name."""
    ok_plugin = check_name(plugin) is None
    try:
        name = sql_table_name(plugin, table)
    except ValueError:
        assert not ok_plugin or "__" in table or not table[0].isalpha()
        return
    assert ok_plugin and NAME_RE.match(plugin)
    head, _, rest = name[len("plugin_"):].rpartition("__")
    assert (head, rest) == (plugin, table)


def test_sql_names_are_injective_exhaustively():
    alphabet = "ab_"
    words = [""]
    for _ in range(4):
        words = words + [w + ch for w in words for ch in alphabet]
    seen = {}
    for p in set(words):
        if not p or check_name(p) is not None:
            continue
        for t in set(words):
            try:
                name = sql_table_name(p, t)
            except ValueError:
                continue
            assert seen.setdefault(name, (p, t)) == (p, t)
    assert len(seen) > 1000


OLD_SITE_PLUGIN = """
plugin_info = {name = "shop", version = "1.0.0", description = "x"}
function on_init()
  db.define_table("cats", {columns = {{name = "title", type = "text"}}})
  db.define_table("items", {columns = {{name = "cat_id", type = "text"}, {name = "name", type = "text", unique = true}},
    foreign_keys = {{column = "cat_id", ref_table = "%s", ref_column = "id", on_delete = "CASCADE"}}})
end
http.handle("GET", "/all", function(req)
  return {json = {cats = db.query("cats"), items = db.query("items"), n = db.count("items")}}
end)
http.handle("GET", "/drop", function(req)
  return {json = {deleted = db.delete("cats", {where = {title = "c1"}})}}
end)
"""


def _make_old_site(path: Path):
    """A site.db as the previous release wrote it: tables plugin_shop_cats and plugin_shop_items,
    an index named after the old table and a foreign key to the old name."""
    db = open_database(path / "site.db")
    db.execute_sql('CREATE TABLE "plugin_schema" (table_name TEXT PRIMARY KEY NOT NULL, plugin TEXT NOT NULL, '
                   'name TEXT NOT NULL, definition TEXT NOT NULL, created_at TEXT NOT NULL, '
                   'updated_at TEXT NOT NULL)')
    db.execute_sql('CREATE TABLE "plugin_shop_cats" (\n  "id" TEXT PRIMARY KEY NOT NULL,\n  "title" TEXT,\n'
                   '  "created_at" TEXT NOT NULL,\n  "updated_at" TEXT NOT NULL\n)')
    db.execute_sql('CREATE TABLE "plugin_shop_items" (\n  "id" TEXT PRIMARY KEY NOT NULL,\n  "cat_id" TEXT,\n'
                   '  "name" TEXT,\n  "created_at" TEXT NOT NULL,\n  "updated_at" TEXT NOT NULL,\n'
                   '  FOREIGN KEY ("cat_id") REFERENCES "plugin_shop_cats" ("id") ON DELETE CASCADE\n)')
    db.execute_sql('CREATE UNIQUE INDEX IF NOT EXISTS "idx_plugin_shop_items_name_unique" '
                   'ON "plugin_shop_items" ("name")')
    import json
    cats = {"columns": [{"name": "title", "type": "text", "not_null": False}], "indexes": [], "foreign_keys": []}
    items = {"columns": [{"name": "cat_id", "type": "text", "not_null": False},
                         {"name": "name", "type": "text", "not_null": False}],
             "indexes": [{"columns": ["name"], "unique": True}],
             "foreign_keys": [{"column": "cat_id", "ref_table": "plugin_shop_cats", "ref_column": "id",
                               "on_delete": "CASCADE"}]}
    for table, short, d in (("plugin_shop_cats", "cats", cats), ("plugin_shop_items", "items", items)):
        db.execute_sql('INSERT INTO "plugin_schema" VALUES (?, ?, ?, ?, ?, ?)',
                       (table, "shop", short, json.dumps(d, sort_keys=True), "2026-01-01T00:00:00.000Z",
                        "2026-01-01T00:00:00.000Z"))
    db.execute_sql("INSERT INTO plugin_shop_cats VALUES ('c1', 'c1', 't', 't')")
    db.execute_sql("INSERT INTO plugin_shop_items VALUES ('i1', 'c1', 'first', 't', 't')")
    db.execute_sql("INSERT INTO plugin_shop_items VALUES ('i2', 'c1', 'second', 't', 't')")
    db.close()


@pytest.mark.parametrize("ref", ["plugin_shop__cats", "plugin_shop_cats"])
def test_an_old_sites_tables_migrate_and_keep_data(tmp_path, ref):
    _make_old_site(tmp_path)
    write_plugin(tmp_path, "shop", OLD_SITE_PLUGIN % ref)
    for attempt in range(2):  # the migration is idempotent: opening again changes nothing
        with running_site(tmp_path, {"max_failures": 1000}, plugins=("inspect",)) as r:
            c = r.client
            c.approve_all("shop")
            c.approve_all("inspect")
            assert r.service.plugins.get("shop").state == "running", r.service.plugins.get("shop").error
            names = {row[0] for row in r.service.db.execute_sql(
                "SELECT name FROM sqlite_master WHERE name LIKE '%shop%' AND name NOT LIKE 'sqlite_%'").fetchall()}
            assert names == {"plugin_shop__cats", "plugin_shop__items", "idx_plugin_shop__items_name_unique"}
            out = c.get(f"{P}/shop/all").json()
            assert [x["title"] for x in out["cats"]] == ["c1"] and out["n"] == 2
            fks = r.service.db.execute_sql('PRAGMA foreign_key_list("plugin_shop__items")').fetchall()
            assert [(f[2], f[6]) for f in fks] == [("plugin_shop__cats", "CASCADE")]
            assert_healthy(c)
    with running_site(tmp_path, {"max_failures": 1000}, plugins=("inspect",)) as r:
        r.client.approve_all("shop")
        assert r.client.get(f"{P}/shop/drop").json() == {"deleted": 1}  # the cascade still works
        assert r.client.get(f"{P}/shop/all").json()["n"] == 0


BLOBBER = r"""
plugin_info = {name = "blobber", version = "1.0.0", description = "binary data"}
function on_init() db.define_table("b", {columns = {{name = "data", type = "blob"}, {name = "tag", type = "text"}}}) end
local function all_bytes()
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char(i) end
  return table.concat(t)
end
http.handle("GET", "/roundtrip", function(req)
  local v = "\0\1\255\254"
  local row = db.insert("b", {data = v, tag = "x"})
  local q = db.query_one("b", {where = {id = row.id}})
  local by_value = db.count("b", {where = {data = v}})
  local w = all_bytes() .. "\192\128\237\160\128"
  db.update("b", {set = {data = w}, where = {id = row.id}})
  local q2 = db.query_one("b", {where = {id = row.id}})
  db.insert_many("b", {"data", "tag"}, {{v, "many"}})
  local m = db.query_one("b", {where = {tag = "many"}})
  local u = db.upsert("b", {values = {id = "u1", data = "\255", tag = "up"}, conflict_columns = {"id"}})
  return {json = {inserted = row.data == v, queried = q.data == v, by_value = by_value,
                  updated = q2.data == w, len = #q2.data, many = m.data == v, upserted = u.data == "\255"}}
end)
"""


def test_blob_columns_are_binary_safe(tmp_path):
    with site(tmp_path, {"blobber": BLOBBER}) as r:
        c = r.client
        c.approve_all("blobber")
        c.approve_all("inspect")
        out = c.get(f"{P}/blobber/roundtrip").json()
        assert out == {"inserted": True, "queried": True, "by_value": 1, "updated": True, "len": 261,
                       "many": True, "upserted": True}
        stored = r.service.db.execute_sql('SELECT data FROM "plugin_blobber__b" WHERE tag = ?',
                                                ("many",)).fetchone()
        assert stored == (b"\x00\x01\xff\xfe",)
        assert_healthy(c)


def test_the_db_bounds_are_modula_toml_keys(tmp_path):
    from modula_desktop.core.errors import SettingsError
    from modula_desktop.core.settings import load_settings

    assert PluginSettings().storage_quota_mb == 256
    toml = tmp_path / "modula.toml"
    toml.write_text("[plugins]\nstorage_quota_mb = 8\ndb_max_like_chars = 20\ndb_max_value_bytes = 4096\n")
    s = load_settings(toml).plugins
    assert (s.storage_quota_mb, s.db_max_like_chars, s.db_max_value_bytes) == (8, 20, 4096)
    toml.write_text('[plugins]\nstorage_quota_mb = "lots"\n')
    with pytest.raises(SettingsError, match="storage_quota_mb must be an integer"):
        load_settings(toml)


def test_a_value_over_the_bound_is_refused_on_write(tmp_path):
    db = open_database(tmp_path / "site.db")
    write_plugin(tmp_path, "writer", """
plugin_info = {name = "writer", version = "1.0.0", description = "x"}
function on_init() db.define_table("t", {columns = {{name = "v", type = "text"}, {name = "j", type = "json"}}}) end
http.handle("GET", "/x", function(req)
  local a = {pcall(db.insert, "t", {v = string.rep("v", 5000)})}
  local b = {pcall(db.insert, "t", {j = {string.rep("j", 5000)}})}
  local c = {pcall(db.insert, "t", {v = string.rep("v", 4000)})}
  return {json = {a = a[2], b = b[2], c = c[1]}}
end)
""")
    manager = PluginManager(tmp_path / "plugins", PluginSettings(db_max_value_bytes=4096), db, None, Logbook())
    try:
        manager.load_all()
        pool = manager.get("writer").current.pool
        vm = pool.checkout(1.0)
        try:
            out = vm.read_response(vm.call_route(vm.routes[0].index, {
                "method": "GET", "path": "/x", "body": "", "client_ip": "1", "headers": {}, "query": {},
                "params": {}}))["json"]
        finally:
            pool.give_back(vm)
        assert "value for 'v' is larger than 4096 bytes ([plugins] db_max_value_bytes)" in out["a"]
        assert "value for 'j' is larger than 4096 bytes" in out["b"]
        assert out["c"] is True
        assert db.execute_sql('SELECT COUNT(*) FROM "plugin_writer__t"').fetchone() == (1,)
    finally:
        manager.shutdown()
        db.close()


INDEXED_FILLER = """
plugin_info = {name = "indexer", version = "1.0.0", description = "indexes copy values"}
function on_init()
  db.define_table("junk", {columns = {{name = "v", type = "text"}, {name = "n", type = "integer"}},
                           indexes = {{columns = {"v"}}, {columns = {"v", "n"}}, {columns = {"n", "v"}}}})
end
local chunk = string.rep("z", 256 * 1024)
http.handle("GET", "/fill", function(req)
  local n = 0
  local ok, err = pcall(function()
    for i = 1, 400 do db.insert("junk", {v = chunk .. i, n = i}); n = n + 1 end
  end)
  return {json = {n = n, err = err}}
end)
"""


def test_the_quota_counts_what_indexes_copy(tmp_path):
    with site(tmp_path, {"indexer": INDEXED_FILLER}, {"storage_quota_mb": 4}) as r:
        c = r.client
        c.approve_all("indexer")
        c.approve_all("inspect")
        out = c.get(f"{P}/indexer/fill").json()
        assert "storage quota" in out["err"]
        assert 3 <= out["n"] <= 4, out  # each 256 KiB value is stored four times
        size = tmp_path.joinpath("site.db").stat().st_size + tmp_path.joinpath("site.db-wal").stat().st_size
        assert size < 16 * 2**20
        assert_healthy(c)
