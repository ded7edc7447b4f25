"""hooks.on with any table name (ModulaCMS accepts any non-empty name): data._table, warnings for tables
the site lacks, and approvals of arbitrary names through the service, the admin API and the CLI."""
from __future__ import annotations

import json

import pytest

from conftest_content import MARK, approve_all, fired, make_site  # noqa: F401
from modula_desktop.core.plugins.runtime.vm import PluginVM, VMContext
from modula_desktop.core.settings import PluginSettings


def test_a_table_the_site_lacks_loads_never_fires_and_warns(make_site):
    service = make_site({"other": f"""
        hooks.on("after_create", "media", function(d) print("{MARK}media") end)
        hooks.on("after_create", "content_data", function(d) print("{MARK}" .. d._table) end)
        hooks.on("after_create", "*", function(d) print("{MARK}star:" .. d._table) end)
        hooks.on("after_create", "content", function(d) print("{MARK}" .. d._table) end)
    """})
    info = service.plugins.info("other")
    assert sorted((h["event"], h["table"]) for h in info["hooks"]) == [
        ("after_create", "*"), ("after_create", "content"), ("after_create", "content"), ("after_create", "media")]
    assert any("no table 'media'" in w for w in info["warnings"])
    logged = [e["message"] for e in service.logbook.entries("other", 50) if e["level"] == "warn"]
    assert sum("no table 'media'" in m for m in logged) == 1  # once per generation, not per VM
    service.content.create({"title": "x"})
    assert service.content.wait_for_hooks(10)
    got = fired(service, "other")
    assert "media" not in got
    assert sorted(got) == ["content", "content_data", "star:content"]


@pytest.mark.parametrize("bad", ['""', "42", '"a\\nb"', 'string.rep("t", 129)'])
def test_table_names_must_be_non_empty_text(tmp_path, bad):
    root = tmp_path / "p"
    root.mkdir()
    (root / "init.lua").write_text('plugin_info = {name = "p", version = "1", description = "d"}\n'
                                   f'hooks.on("after_create", {bad}, function() end)\n')
    vm = PluginVM(VMContext("p", root, PluginSettings()))
    try:
        with pytest.raises(Exception, match="table name"):
            vm.load()
    finally:
        vm.close()


def test_arbitrary_table_names_are_approved_over_the_admin_api(tmp_path):
    from _server_fixtures import running_site

    (tmp_path / "plugins" / "anytable").mkdir(parents=True)
    (tmp_path / "plugins" / "anytable" / "init.lua").write_text(
        'plugin_info = {name = "anytable", version = "1", description = "d"}\n'
        'hooks.on("before_update", "content_fields", function() end)\n'
        'hooks.on("after_read", "content_data", function() end)\n')
    with running_site(tmp_path, plugins=()) as site:
        c = site.client
        body = {"hooks": [{"plugin": "anytable", "event": "before_update", "table": "content_fields"},
                          {"plugin": "anytable", "event": "after_read", "table": "content_data"}]}
        r = c.post("/api/v1/admin/plugins/hooks/approve", json=body)
        assert r.status == 200, r.body
        hooks = {(h["event"], h["table"]): h for h in c.get("/api/v1/admin/plugins/anytable").json()["hooks"]}
        assert hooks[("before_update", "content_fields")]["approved"] is True
        assert hooks[("after_read", "content")]["approved"] is True  # the alias is approved as "content"
        r = c.post("/api/v1/admin/plugins/hooks/approve",
                   json={"hooks": [{"plugin": "anytable", "event": "before_update", "table": ""}]})
        assert r.status == 400
        assert "non-empty" in json.dumps(r.json())
