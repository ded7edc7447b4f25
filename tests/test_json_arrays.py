"""Empty tables encode as {} (ModulaCMS's json module), json.array marks an array, and db.query results are
arrays, the same through json.encode and through route responses, packed (the C bridge and the bootstrap's
packer) or encoded by the host, on a real server."""
from __future__ import annotations

import pytest

from _server_fixtures import running_site

PLUGIN = """
plugin_info = {name = "arrays", version = "1.0.0", description = "json shapes"}
function on_init()
  db.define_table("things", {columns = {{name = "name", type = "text"}}})
  if db.count("things") == 0 then db.insert("things", {name = "a"}) end
end
local function shapes()
  local emptied = db.query("things")  -- one row, removed: still an array
  table.remove(emptied, 1)
  return {
    empty = {}, marked = json.array(), made = json.array({}), none = db.query("things", {where = {name = "zz"}}),
    emptied = emptied, nested = {list = {1, 2}, obj = {a = {}}}, decoded = json.decode('{"x":[],"y":{}}'),
  }
end
http.handle("GET", "/packed", function() return {json = shapes()} end, {public = true})
-- a float is not packed: the host encodes the answer
http.handle("GET", "/host", function() local s = shapes() s.f = 1.5 return {json = s} end, {public = true})
http.handle("GET", "/encode", function() return {body = json.encode(shapes())} end, {public = true})
http.handle("GET", "/top", function() return {json = {}} end, {public = true})
http.handle("GET", "/top_array", function() return {json = json.array()} end, {public = true})
http.handle("GET", "/bad", function() return {json = json.array(5)} end, {public = true})
"""

EXPECTED = {"empty": {}, "marked": [], "made": [], "none": [], "emptied": [], "nested": {"list": [1, 2], "obj": {"a": {}}},
            "decoded": {"x": [], "y": {}}}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    path = tmp_path_factory.mktemp("arrays")
    (path / "plugins" / "arrays").mkdir(parents=True)
    (path / "plugins" / "arrays" / "init.lua").write_text(PLUGIN)
    with running_site(path, plugins=()) as running:
        running.client.approve_all("arrays")
        yield running


@pytest.mark.parametrize("route", ["/packed", "/host", "/encode"])
def test_every_path_encodes_the_same_shapes(site, route):
    r = site.client.get(f"/api/v1/plugins/arrays{route}")
    assert r.status == 200, r.body
    got = r.json()
    got.pop("f", None)
    assert got == EXPECTED


def test_top_level_empty_tables(site):
    assert site.client.get("/api/v1/plugins/arrays/top").body == b"{}"
    assert site.client.get("/api/v1/plugins/arrays/top_array").body == b"[]"


def test_json_array_refuses_a_non_table(site):
    assert site.client.get("/api/v1/plugins/arrays/bad").status == 500
