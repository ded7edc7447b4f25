"""A plugin written against ModulaCMS's documented Lua db API runs here unchanged.

The plugin below follows ModulaCMS's plugin guide and API reference (internal/plugin, ai/lua/PLUGIN_API.md):
no `permissions` field, `require` from lib/, define_table with indexes and a foreign key given as the full
prefixed name, ModulaCMS habits such as 0/1 for booleans and JSON text for json columns, `db.count(t, {})`,
`local ok, err = db.transaction(...)`, and assertions made with `error()` inside on_init.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from modula_desktop.core.plugins.errors import PluginCallError
from modula_desktop.core.plugins.runtime.vm import PluginVM, VMContext
from modula_desktop.core.settings import PluginSettings
from modula_desktop.core.storage import open_database

VALIDATORS = """
local M = {}

function M.trim(s)
    if type(s) ~= "string" then return s end
    return s:match("^%s*(.-)%s*$")
end

function M.is_valid_url(s)
    return type(s) == "string" and (s:match("^https?://[%w%.%-]+") ~= nil)
end

return M
"""

INIT = """
local validators = require("validators")

plugin_info = {
    name        = "bookmarks",
    version     = "1.0.0",
    description = "Bookmarks in collections (written for ModulaCMS)",
    author      = "someone",
    license     = "MIT",
}

local function check(cond, msg)
    if not cond then error(msg, 2) end
end

function on_init()
    db.define_table("collections", {
        columns = {
            {name = "name",        type = "text",    not_null = true},
            {name = "description", type = "text"},
            {name = "sort_order",  type = "integer", not_null = true, default = 0},
            {name = "is_public",   type = "boolean", not_null = true, default = 0},
            {name = "metadata",    type = "json"},
        },
        indexes = {
            {columns = {"name"}},
            {columns = {"is_public", "sort_order"}},
        },
    })

    db.define_table("bookmarks", {
        columns = {
            {name = "collection_id", type = "text",      not_null = true},
            {name = "url",           type = "text",      not_null = true},
            {name = "title",         type = "text",      not_null = true},
            {name = "rating",        type = "real"},
            {name = "notes",         type = "blob"},
            {name = "visited_at",    type = "timestamp"},
        },
        indexes = {
            {columns = {"collection_id"}},
            {columns = {"url"}, unique = true},
        },
        foreign_keys = {
            {column = "collection_id", ref_table = "plugin_bookmarks_collections", ref_column = "id",
             on_delete = "CASCADE"},
        },
    })

    if db.count("collections", {}) > 0 then
        log.info("already seeded")
        return
    end

    local col_id = db.ulid()
    local now = db.timestamp()
    check(type(col_id) == "string" and #col_id == 26, "db.ulid() returned " .. tostring(col_id))
    check(type(now) == "string" and now ~= "", "db.timestamp() returned " .. tostring(now))

    local _, insert_err = db.insert("collections", {
        id = col_id, name = "Reading", sort_order = 1, is_public = 1, metadata = '{"theme":"dark"}',
    })
    check(insert_err == nil, "insert reported " .. tostring(insert_err))

    local found = db.query("collections", {where = {name = "Reading"}})
    check(#found == 1, "expected 1 collection, got " .. #found)
    check(db.query_one("collections", {where = {id = col_id}}) ~= nil, "query_one missed a known row")
    check(db.query_one("collections", {where = {id = "nonexistent"}}) == nil, "query_one found a missing row")
    check(db.count("collections", {}) == 1, "count")
    check(db.exists("collections", {where = {id = col_id}}) == true, "exists (hit)")
    check(db.exists("collections", {where = {id = "nonexistent"}}) == false, "exists (miss)")

    local inserted = 0
    for _, entry in ipairs({
        {url = "https://www.lua.org/manual/5.4/", title = " Lua 5.4 manual "},
        {url = "https://sqlite.org/lang.html", title = "SQLite SQL"},
        {url = "not-a-url", title = "Invalid"},
    }) do
        if validators.is_valid_url(entry.url) then
            db.insert("bookmarks", {collection_id = col_id, url = entry.url,
                                   title = validators.trim(entry.title), rating = 4.5})
            inserted = inserted + 1
        else
            log.warn("skipped invalid URL", {url = entry.url})
        end
    end
    check(inserted == 2, "expected 2 bookmarks")

    local all = db.query("bookmarks", {order_by = "title", limit = 50})
    check(#all == 2 and all[1].title == "Lua 5.4 manual", "query with order_by")

    db.update("bookmarks", {set = {rating = 5.0, visited_at = now}, where = {url = "https://sqlite.org/lang.html"}})
    local updated = db.query_one("bookmarks", {where = {url = "https://sqlite.org/lang.html"}})
    check(updated.rating == 5.0 and updated.visited_at == now, "update")

    db.delete("bookmarks", {where = {url = "https://www.lua.org/manual/5.4/"}})
    check(db.count("bookmarks", {}) == 1, "delete")

    local ok, err = db.transaction(function()
        db.insert("bookmarks", {collection_id = col_id, url = "https://a.example/", title = "A"})
        db.insert("bookmarks", {collection_id = col_id, url = "https://b.example/", title = "B"})
    end)
    if not ok then error("transaction commit failed: " .. tostring(err)) end
    check(db.count("bookmarks", {}) == 3, "committed transaction")

    local ok2, err2 = db.transaction(function()
        db.insert("bookmarks", {collection_id = col_id, url = "https://gone.example/", title = "Gone"})
        error("deliberate rollback")
    end)
    check(not ok2, "a failing transaction reported success")
    check(type(err2) == "string" and err2:find("deliberate rollback", 1, true), "rollback error: " .. tostring(err2))
    log.info("Transaction rollback verified", {err = err2})
    check(db.count("bookmarks", {}) == 3, "rolled back transaction left rows")

    db.insert("collections", {name = "Later", description = "to read", sort_order = 2, is_public = 0})
    check(db.count("collections", {}) == 2, "second collection")
    check(#db.query("collections", {where = {is_public = 1}}) == 1, "boolean column compared with 1")

    log.info("all checks passed", {collections = 2, bookmarks = 3})
end

http.handle("GET", "/bookmarks/{id}", function(req)
    local bookmark = db.query_one("bookmarks", {where = {id = req.params.id}})
    if not bookmark then
        return {status = 404, json = {error = "not found"}}
    end
    return {status = 200, json = bookmark}
end, {public = true})

http.handle("POST", "/bookmarks", function(req)
    local body = req.json or {}
    if not validators.is_valid_url(body.url) then
        return {status = 400, json = {error = "invalid url"}}
    end
    local collection = db.query_one("collections", {where = {name = body.collection or "Reading"}})
    if not collection then
        return {status = 404, json = {error = "unknown collection"}}
    end
    local id = db.ulid()
    -- ModulaCMS: a data error is returned (nil, err), not raised
    local _, err = db.insert("bookmarks", {id = id, collection_id = collection.id, url = body.url,
                                          title = validators.trim(body.title or body.url)})
    if err then
        return {status = 409, json = {error = err}}
    end
    return {status = 201, json = {id = id}}
end)

function on_shutdown()
    log.info("bookmarks shutting down")
end
"""


@pytest.fixture
def plugin_root(tmp_path) -> Path:
    root = tmp_path / "plugins" / "bookmarks"
    (root / "lib").mkdir(parents=True)
    (root / "init.lua").write_text(INIT, encoding="utf-8")
    (root / "lib" / "validators.lua").write_text(VALIDATORS, encoding="utf-8")
    return root


@pytest.fixture
def database(tmp_path):
    db = open_database(tmp_path / "site.db")
    yield db
    db.close()


def start(root, database, logs):
    vm = PluginVM(VMContext("bookmarks", root, PluginSettings(), database=database,
                            log_sink=lambda plugin, level, msg, ctx: logs.append((level, msg, ctx))))
    manifest = vm.load()
    vm.call_init()
    return vm, manifest


def request(vm, method, path, params=None, body=None):
    index = next(r.index for r in vm.routes if r.method == method and
                 r.path.split("/")[1] == path.split("/")[1] and r.path.count("/") == path.count("/"))
    req = {"method": method, "path": path, "body": json.dumps(body) if body else "", "client_ip": "127.0.0.1",
           "headers": {"content-type": "application/json"}, "query": {}, "params": params or {}, "json": body}
    return vm.read_response(vm.call_route(index, req))


def test_modulacms_plugin_runs_unchanged(plugin_root, database):
    logs = []
    vm, manifest = start(plugin_root, database, logs)
    assert manifest.permissions is None  # ModulaCMS default: every module
    assert ("info", "all checks passed", {"collections": 2, "bookmarks": 3}) in logs
    assert any(level == "info" and msg == "Transaction rollback verified" and "deliberate rollback" in ctx["err"]
               for level, msg, ctx in logs)

    rows = database.execute_sql('SELECT name, sort_order, is_public, metadata FROM "plugin_bookmarks__collections" '
                                "ORDER BY sort_order").fetchall()
    assert rows == [("Reading", 1, 1, '{"theme":"dark"}'), ("Later", 2, 0, None)]
    urls = database.execute_sql('SELECT url, title, rating FROM "plugin_bookmarks__bookmarks" ORDER BY url').fetchall()
    assert urls == [("https://a.example/", "A", None), ("https://b.example/", "B", None),
                    ("https://sqlite.org/lang.html", "SQLite SQL", 5.0)]
    fk = database.execute_sql('PRAGMA foreign_key_list("plugin_bookmarks__bookmarks")').fetchall()
    assert [(r[2], r[3], r[4], r[6]) for r in fk] == [("plugin_bookmarks__collections", "collection_id", "id",
                                                      "CASCADE")]

    # its routes work too
    created = request(vm, "POST", "/bookmarks", body={"url": "https://c.example/", "title": " C "})
    assert created["status"] == 201
    got = request(vm, "GET", f"/bookmarks/{created['json']['id']}", params={"id": created["json"]["id"]})
    assert got["status"] == 200 and got["json"]["title"] == "C"
    assert request(vm, "GET", "/bookmarks/nope", params={"id": "nope"})["status"] == 404
    assert request(vm, "POST", "/bookmarks", body={"url": "ftp://x"})["status"] == 400

    # a restart finds its tables and data and does not seed again
    again, _ = start(plugin_root, database, logs)
    assert ("info", "already seeded", None) in logs
    assert database.execute_sql('SELECT COUNT(*) FROM "plugin_bookmarks__bookmarks"').fetchone() == (4,)
    again.call_shutdown()
    assert logs[-1] == ("info", "bookmarks shutting down", None)


def test_modulacms_plugin_cascade_and_unique_index(plugin_root, database):
    vm, _ = start(plugin_root, database, [])
    again = request(vm, "POST", "/bookmarks", body={"url": "https://a.example/", "title": "again"})
    assert again["status"] == 409
    assert "UNIQUE constraint failed: plugin_bookmarks__bookmarks.url" in again["json"]["error"]
    database.execute_sql('DELETE FROM "plugin_bookmarks__collections" WHERE name = ?', ("Reading",))
    assert database.execute_sql('SELECT COUNT(*) FROM "plugin_bookmarks__bookmarks"').fetchone() == (0,)
