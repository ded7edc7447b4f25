"""Screens and field interfaces without Qt (SPEC 3.12): the tui module, ModulaCMS's protocol, sessions on
their UI VMs under the budgets, request actions through the request module's rules, and approvals —
on a real site (SQLite file, real Lua, a real waitress server and a real upstream HTTP server)."""
from __future__ import annotations

import queue
import time

import pytest
from _outbound_servers import LoopbackServer
from _server_fixtures import running_site
from helpers import write_plugin

from modula_desktop.core.errors import SettingsError
from modula_desktop.core.plugins.api import tui as protocol
from modula_desktop.core.plugins.errors import PluginLoadError
from modula_desktop.core.plugins.lifecycle.manifest import parse_manifest
from modula_desktop.core.plugins.runtime.screens import Act, Ended, Failed, Render
from modula_desktop.core.plugins.runtime.vm import PluginVM, VMContext
from modula_desktop.core.settings import PluginSettings, Settings

INFO = {"name": "p", "version": "1", "description": "d"}


def manifest(**extra):
    return parse_manifest(dict(INFO, **extra), "p")[0]


# ---- manifest --------------------------------------------------------------------------------------
def test_manifest_reads_screens_and_interfaces():
    m = manifest(screens=[{"name": "main", "label": "Main", "icon": "list"}, {"name": "hidden_one", "hidden": True}],
                 interfaces=[{"name": "color", "label": "Colour", "mode": "overlay"}, {"name": "size"}])
    assert [(s.name, s.label, s.icon, s.hidden) for s in m.screens] == [
        ("main", "Main", "list", False), ("hidden_one", "hidden_one", "", True)]
    assert [(i.name, i.label, i.mode) for i in m.interfaces] == [("color", "Colour", "overlay"), ("size", "size", "inline")]
    assert m.to_dict()["screens"][0]["name"] == "main"


@pytest.mark.parametrize("extra, message", [
    ({"screens": "main"}, "plugin_info.screens must be a list"),
    ({"screens": [{"label": "x"}]}, "plugin_info.screens[1].name must be"),
    ({"screens": [{"name": "../x"}]}, "plugin_info.screens[1].name must be"),
    ({"screens": [{"name": "a"}, {"name": "a"}]}, "'a' is declared twice"),
    ({"screens": [{"name": "a", "hidden": "yes"}]}, "hidden must be true or false"),
    ({"interfaces": [{"name": "a", "mode": "popup"}]}, 'mode must be "overlay" or "inline"'),
])
def test_manifest_refuses_bad_declarations(extra, message):
    with pytest.raises(PluginLoadError, match=message.replace("[", r"\[").replace("]", r"\]")):
        manifest(**extra)


# ---- the tui module --------------------------------------------------------------------------------
def vm_with(tmp_path, body, info_extra='screens = {{name = "s"}}'):
    d = write_plugin(tmp_path, "p", body, info_extra=info_extra)
    vm = PluginVM(VMContext("p", d, PluginSettings()))
    vm.load()
    return vm


def lua_json(vm, expr):
    vm.sandbox.fn("load_main")(f"out = json.encode({expr})".encode(), b"=t")
    chunk = vm.sandbox.fn("load_main")(f"out = json.encode({expr})".encode(), b"=t")
    vm.sandbox.call("run", 10**7, time.monotonic() + 5, b"t", b"module", chunk)
    import json
    return json.loads(vm.sandbox.fn("get_global")(b"out"))


def test_constructors_build_modulacms_tables(tmp_path):
    vm = vm_with(tmp_path, "")
    try:
        assert lua_json(vm, 'tui.grid({tui.column(3, {tui.cell("List", 1.0, tui.list({{label = "a"}}, 2))})}, {{key = "n", label = "new"}})') == {
            "type": "grid", "hints": [{"key": "n", "label": "new"}],
            "columns": [{"span": 3, "cells": [{"title": "List", "height": 1.0,
                                              "content": {"type": "list", "items": [{"label": "a"}], "cursor": 2}}]}]}
        assert lua_json(vm, "tui.list({})") == {"type": "list", "items": [], "cursor": 0}
        assert lua_json(vm, 'tui.input("q")') == {"type": "input", "id": "q", "value": "", "placeholder": ""}
        assert lua_json(vm, 'tui.select_field("s", {{label = "A", value = "a"}})') == {
            "type": "select", "id": "s", "options": [{"label": "A", "value": "a"}], "selected": 0}
        assert lua_json(vm, 'tui.table({"A"}, {{"1"}})') == {"type": "table", "headers": ["A"], "rows": [["1"]], "cursor": 0}
        assert lua_json(vm, "tui.progress(0.5)") == {"type": "progress", "value": 0.5, "label": ""}
        assert lua_json(vm, "tui.tree({})") == {"type": "tree", "nodes": [], "cursor": 0}
        assert lua_json(vm, 'tui.text({"x"})') == {"type": "text", "lines": ["x"]}
        assert lua_json(vm, "tui.detail({})") == {"type": "detail", "fields": []}
        assert lua_json(vm, 'require("tui") == tui') is True
    finally:
        vm.close()


def test_tui_is_frozen_and_checks_arguments(tmp_path):
    body = '''
    function on_init()
      local ok1, e1 = pcall(function() tui.grid = nil end)
      local ok2, e2 = pcall(tui.cell, "t", "tall", {})
      local ok3, e3 = pcall(tui.list)
      results = {ok1, e1, ok2, e2, ok3, e3, getmetatable(tui)}
    end
    '''
    vm = vm_with(tmp_path, body)
    try:
        vm.call_init()
        r = vm.sandbox.from_lua(vm.sandbox.fn("get_global")(b"results"))
        assert r[0] is False and "cannot modify frozen module 'tui'" in r[1]
        assert r[2] is False and "bad argument #2 to 'cell' (number expected, got string)" in r[3]
        assert r[4] is False and "bad argument #1 to 'list' (table expected, got no value)" in r[5]
        assert r[6] == "frozen module tui"
    finally:
        vm.close()


def test_tui_only_for_plugins_with_screens_or_interfaces(tmp_path):
    vm = vm_with(tmp_path, 'has = tui ~= nil', info_extra="")
    try:
        # installed once the manifest is known (after the main chunk), for plugins that declare UI only
        assert vm.sandbox.fn("get_global")(b"has") is False
        assert vm.sandbox.fn("get_global")(b"tui") is None
        chunk = vm.sandbox.fn("load_main")(b'ok, err = pcall(require, "tui")', b"=t")
        vm.sandbox.call("run", 10**7, time.monotonic() + 5, b"t", b"module", chunk)
        assert vm.sandbox.fn("get_global")(b"ok") is False
        assert b"not found" in vm.sandbox.fn("get_global")(b"err")
    finally:
        vm.close()


def test_parse_yield_follows_modulacms():
    y = protocol.parse_yield({"action": "toast", "message": "hi", "level": "success"})
    assert y.action == "toast" and y.params == {"message": "hi", "level": "success"}
    with pytest.raises(protocol.ProtocolError, match="unknown action 'explode'"):
        protocol.parse_yield({"action": "explode"})
    with pytest.raises(protocol.ProtocolError, match="unknown primitive type 'spaceship'"):
        protocol.parse_yield({"type": "spaceship"})
    with pytest.raises(protocol.ProtocolError, match="grid has 13 columns"):
        protocol.parse_yield({"type": "grid", "columns": [{"cells": []}] * 13})
    layout = protocol.parse_yield({"type": "grid", "columns": [{"span": 0, "cells": [
        {"title": "A", "height": -1, "content": {"type": "progress", "value": 7}}]}]}).layout
    assert layout["columns"][0]["span"] == 1  # ModulaCMS: a span <= 0 is 1
    cell = layout["columns"][0]["cells"][0]
    assert cell["height"] == 1.0 and cell["content"]["value"] == 1.0  # height defaults, progress clamps
    text = protocol.parse_yield({"type": "text", "lines": ["x" * 20000, 5]}).primitive
    assert len(text["lines"][0]["text"]) == protocol.MAX_STRING_LEN and text["lines"][1]["text"] == "5"
    rows = protocol.parse_yield({"type": "table", "headers": ["a"], "rows": [[1, 2.5, True]]}).primitive["rows"]
    assert rows == [["1", "2.5", "true"]]


# ---- sessions ------------------------------------------------------------------------------------
SCREEN = r'''
function screen(ctx)
  local ev = coroutine.yield(tui.text({"w=" .. ctx.width, "h=" .. ctx.height, "v=" .. ctx.protocol_version,
                                       "p=" .. tostring(ctx.params and ctx.params.id)}))
  while true do
    if ev.type == "key" and ev.key == "q" then coroutine.yield({action = "quit"}) end
    if ev.type == "key" and ev.key == "r" then return end
    if ev.type == "key" and ev.key == "f" then
      ev = coroutine.yield({action = "fetch", id = "f1"})
    elseif ev.type == "key" and ev.key == "g" then
      ev = coroutine.yield({action = "request", id = "r1", url = ctx.params.url, method = "GET"})
    elseif ev.type == "key" and ev.key == "s" then
      local ok, err = pcall(request.get, ctx.params.url)
      ev = coroutine.yield(tui.text({tostring(err)}))
    elseif ev.type == "key" and ev.key == "t" then
      ev = coroutine.yield({action = "toast", message = "hello", level = "info"})
    elseif ev.type == "key" and ev.key == "x" then
      local ok, e = db.transaction(function() coroutine.yield(tui.text({"in tx"})) end)
      ev = coroutine.yield(tui.text({"tx: " .. tostring(e)}))
    elseif ev.type == "key" and ev.key == "m" then
      local t = {} for i = 1, 1e8 do t[i] = ("x"):rep(100) .. i end
    elseif ev.type == "key" and ev.key == "w" then
      leaked = "yes"
      ev = coroutine.yield(tui.text({"set"}))
    elseif ev.type == "key" and ev.key == "l" then
      ev = coroutine.yield(tui.text({"leaked=" .. tostring(leaked)}))
    elseif ev.type == "key" and ev.key == "meta" then
      local t = setmetatable({type = "text", lines = {"raw"}}, {__index = function() while true do end end,
                                                               __pairs = function() while true do end end})
      ev = coroutine.yield(t)
    elseif ev.type == "data" then
      local r = ev.result or {}
      ev = coroutine.yield(tui.text({"data " .. ev.id .. " " .. tostring(ev.ok) .. " " .. tostring(ev.error) ..
                                     " " .. tostring(r.status) .. " " .. tostring(r.json and r.json.ok)}))
    else
      ev = coroutine.yield(tui.text({"key " .. tostring(ev.key or ev.type)}))
    end
  end
end
'''
IFACE = '''
function interface(ctx)
  local ev = coroutine.yield(tui.input("v", ctx.value .. "|" .. (ctx.config and ctx.config.k or "")))
  coroutine.yield({action = "commit", value = ctx.value .. "!"})
end
'''


@pytest.fixture
def upstream():
    with LoopbackServer() as s:
        yield s


@pytest.fixture
def site(tmp_path):
    d = write_plugin(tmp_path, "scr", 'request.register("127.0.0.1")\n',
                     info_extra='permissions = {"db", "request"}, screens = {{name = "main", label = "Main"}}, '
                                'interfaces = {{name = "field", mode = "inline"}}')
    (d / "screens").mkdir()
    (d / "screens" / "main.lua").write_text(SCREEN, encoding="utf-8")
    (d / "interfaces").mkdir()
    (d / "interfaces" / "field.lua").write_text(IFACE, encoding="utf-8")
    with running_site(tmp_path, {"allow_localhost": True, "ui_timeout_s": 1.0, "ui_vms": 2}, plugins=()) as r:
        yield r


class Outputs:
    def __init__(self):
        self.q = queue.Queue()

    def __call__(self, out):
        self.q.put(out)

    def next(self, timeout=10):
        return self.q.get(timeout=timeout)

    def text(self, timeout=10):
        out = self.next(timeout)
        assert isinstance(out, Render), out
        return [line["text"] for line in out.value.primitive["lines"]]


def open_main(site, params=None, approve=True):
    svc = site.service
    if approve:
        svc.approvals.set_ui("scr", "screen", "main", True)
    outs = Outputs()
    session = svc.screens.open("scr", "screen", "main", protocol.init_event(80, 24, params or {}), outs)
    return session, outs


def key(session, k):
    session.send(protocol.key_event(k))


def test_unapproved_screen_never_runs(site):
    session, outs = open_main(site, approve=False)
    out = outs.next()
    assert isinstance(out, Failed) and out.kind == "unapproved"
    assert "not approved" in out.message


def test_init_keys_quit_and_return(site):
    session, outs = open_main(site, {"id": "42"})
    assert outs.text() == ["w=80", "h=24", "v=1", "p=42"]
    key(session, "j")
    assert outs.text() == ["key j"]
    session.send(protocol.resize_event(100, 30))
    assert outs.text() == ["key resize"]
    key(session, "q")
    assert outs.next() == Ended("quit")
    session.join(5)
    session, outs = open_main(site)
    outs.text()
    key(session, "r")
    assert outs.next() == Ended("returned")


def test_toast_is_an_action_and_fetch_answers_like_modulacms(site):
    session, outs = open_main(site)
    outs.text()
    key(session, "t")
    out = outs.next()
    assert isinstance(out, Act) and out.name == "toast" and out.params == {"message": "hello", "level": "info"}
    key(session, "f")
    assert outs.text() == ["data f1 false async fetch is not supported: use the db module nil nil"]
    session.close()


def test_request_action_goes_through_domain_approval_and_arrives_as_data(site, upstream):
    url = f"http://127.0.0.1:{upstream.port}/ok"
    session, outs = open_main(site, {"url": url})
    outs.text()
    key(session, "g")
    assert outs.text() == ["data r1 false domain not approved: 127.0.0.1 nil nil"]
    assert upstream.requests == []
    site.service.approvals.approve_domain("scr", "127.0.0.1")
    key(session, "g")
    assert outs.text() == ["data r1 true nil 200 true"]
    assert [r["path"] for r in upstream.requests] == ["/ok"]
    # the request runs beside the screen: keys are answered while it waits for a slow server
    session2, outs2 = open_main(site, {"url": f"http://127.0.0.1:{upstream.port}/slow?ms=1500"})
    outs2.text()
    key(session2, "g")
    started = time.monotonic()
    key(session2, "j")
    assert outs2.text() == ["key j"]
    assert time.monotonic() - started < 1.0
    assert outs2.text(timeout=10)[0].startswith("data r1 true")
    session.close()
    session2.close()


def test_request_send_inside_a_screen_is_refused(site, upstream):
    site.service.approvals.approve_domain("scr", "127.0.0.1")
    session, outs = open_main(site, {"url": f"http://127.0.0.1:{upstream.port}/ok"})
    outs.text()
    key(session, "s")
    assert outs.text() == ["request.send() cannot be called in current VM phase 'screen'"]
    assert upstream.requests == []
    session.close()


def test_a_transaction_cannot_stay_open_across_a_yield(site):
    session, outs = open_main(site)
    outs.text()
    key(session, "x")
    lines = outs.text()
    assert len(lines) == 1 and lines[0].endswith("cannot yield inside db.transaction (a transaction cannot be suspended)")
    session.close()


def test_a_yield_is_read_raw_no_metamethod_runs(site):
    session, outs = open_main(site)
    outs.text()
    started = time.monotonic()
    key(session, "meta")
    assert outs.text() == ["raw"]
    assert time.monotonic() - started < 1.0
    session.close()


def test_memory_bomb_fails_the_session_and_its_vm_is_thrown_away(site):
    session, outs = open_main(site)
    outs.text()
    key(session, "m")
    out = outs.next(timeout=30)
    assert isinstance(out, Failed) and out.kind in ("memory", "budget", "timeout"), out
    session.join(10)
    stats = site.service.screens.pool_stats("scr")
    assert stats["discarded"] == 1 and stats["busy"] == 0


def test_a_vm_per_session_and_globals_reset_between_sessions(site):
    a, outs_a = open_main(site)
    outs_a.text()
    b, outs_b = open_main(site)
    outs_b.text()
    c, outs_c = open_main(site)  # ui_vms = 2: the third finds none free and says so, at once
    out = outs_c.next()
    assert isinstance(out, Failed) and out.kind == "busy" and "2 of its screens are open" in out.message
    key(a, "w")
    assert outs_a.text() == ["set"]
    a.close()
    b.close()
    a.join(5)
    b.join(5)
    for _ in range(2):  # whichever VM it gets, the global set by the other session is gone
        s, outs = open_main(site)
        outs.text()
        key(s, "l")
        assert outs.text() == ["leaked=nil"]
        s.close()
        s.join(5)


def test_field_interface_gets_value_and_config_and_commits(site):
    svc = site.service
    svc.approvals.set_ui("scr", "interface", "field", True)
    outs = Outputs()
    s = svc.screens.open("scr", "interface", "field", protocol.field_init_event(60, 3, "#fff", {"k": "v"}), outs)
    out = outs.next()
    assert out.value.primitive == {"type": "input", "id": "v", "value": "#fff|v", "placeholder": "", "focused": False,
                                   "char_limit": 0}
    key(s, "enter")
    out = outs.next()
    assert out == Act("commit", {"value": "#fff!"}, 1)
    s.close()


def test_ui_approvals_through_the_admin_api_and_reset_on_a_new_version(site, tmp_path):
    c = site.client
    listed = c.get("/api/v1/admin/plugins/screens").json()["screens"]
    assert {(s["plugin"], s["kind"], s["name"], s["approved"]) for s in listed} == {
        ("scr", "screen", "main", False), ("scr", "interface", "field", False)}
    r = c.post("/api/v1/admin/plugins/screens/approve", json={"screens": [
        {"plugin": "scr", "name": "main"}, {"plugin": "scr", "kind": "interface", "name": "field"}]})
    assert r.status == 200, r.body
    assert site.service.approvals.ui_approved("scr", "screen", "main")
    assert site.service.approvals.ui_approved("scr", "interface", "field")
    r = c.post("/api/v1/admin/plugins/screens/approve", json={"screens": [{"plugin": "scr", "name": "nope"}]})
    assert r.status == 400 and b"has no screen 'nope'" in r.body
    r = c.post("/api/v1/admin/plugins/screens/approve", json={"screens": [{"plugin": "scr", "kind": "x", "name": "main"}]})
    assert r.status == 400
    info = c.get("/api/v1/admin/plugins/scr").json()
    assert info["screens"][0]["approved"] is True and info["interfaces"][0]["mode"] == "inline"
    r = c.post("/api/v1/admin/plugins/screens/revoke", json={"screens": [{"plugin": "scr", "name": "main"}]})
    assert r.status == 200 and not site.service.approvals.ui_approved("scr", "screen", "main")
    # a new version: every approval of the plugin goes, the interface's too
    init = tmp_path / "plugins" / "scr" / "init.lua"
    init.write_text(init.read_text().replace('version = "1.0.0"', 'version = "1.1.0"'))
    assert site.service.plugins.load("scr")
    assert not site.service.approvals.ui_approved("scr", "interface", "field")
    assert site.service.db.execute_sql("SELECT COUNT(*) FROM plugin_ui_approval").fetchone() == (0,)
    entries = site.service.screens.entries()
    assert {(e.name, e.approved, e.version) for e in entries} == {("main", False, "1.1.0"), ("field", False, "1.1.0")}


def test_a_reload_drains_the_old_ui_pool(site, tmp_path):
    session, outs = open_main(site)
    outs.text()
    old = session.generation
    assert site.service.plugins.load("scr")
    assert site.service.plugins.plugins["scr"].current is not old
    # the open session keeps its VM until it closes; the new generation builds its own pool
    key(session, "j")
    assert outs.text() == ["key j"]
    session.close()
    session.join(5)
    s2, outs2 = open_main(site)
    outs2.text()
    assert s2.generation is site.service.plugins.plugins["scr"].current
    s2.close()


def test_fields_settings():
    s = Settings().replace(fields={"colour": {"plugin": "p", "interface": "c"}})
    assert s.fields["colour"].label == "colour" and s.fields["colour"].type == "plugin"
    with pytest.raises(SettingsError, match=r"\[fields.colour\] needs a plugin and an interface"):
        Settings().replace(fields={"colour": {"plugin": "p"}})
    with pytest.raises(SettingsError, match=r'type must be "plugin"'):
        Settings().replace(fields={"colour": {"plugin": "p", "interface": "c", "type": "text"}})
    with pytest.raises(SettingsError, match=r"unknown key \[fields.colour\] colour"):
        Settings().replace(fields={"colour": {"plugin": "p", "interface": "c", "colour": 1}})


def test_a_screen_file_that_is_a_link_is_not_read(tmp_path):
    outside = tmp_path / "outside.lua"
    outside.write_text('function screen(ctx) coroutine.yield(tui.text({"outside"})) end', encoding="utf-8")
    d = write_plugin(tmp_path, "lnk", "", info_extra='permissions = {}, screens = {{name = "main"}, {name = "dir"}}')
    (d / "screens").mkdir()
    (d / "screens" / "main.lua").symlink_to(outside)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "dir.lua").write_text(outside.read_text(), encoding="utf-8")
    with running_site(tmp_path, plugins=()) as r:
        svc = r.service
        for name in ("main", "dir"):
            svc.approvals.set_ui("lnk", "screen", name, True)
        outs = Outputs()
        svc.screens.open("lnk", "screen", "main", protocol.init_event(80, 24), outs)
        out = outs.next()
        assert isinstance(out, Failed) and out.message == "screens/main.lua not found"
    # a screens folder that is a link is not followed either
    (d / "screens" / "main.lua").unlink()
    (d / "screens").rmdir()
    (d / "screens").symlink_to(other)
    with running_site(tmp_path, plugins=()) as r:
        r.service.approvals.set_ui("lnk", "screen", "dir", True)
        outs = Outputs()
        r.service.screens.open("lnk", "screen", "dir", protocol.init_event(80, 24), outs)
        out = outs.next()
        assert isinstance(out, Failed) and "not found" in out.message


def test_a_failed_screen_is_in_the_plugins_log(site):
    session, outs = open_main(site)
    outs.text()
    key(session, "meta2")  # not handled: answered with text; then an unknown action
    outs.text()
    site.service.screens  # noqa: B018
    bad = site.service.screens.open("scr", "screen", "main", protocol.init_event(80, 24, {"url": 5}), outs)
    outs.text()
    key(bad, "g")  # url = 5: the request action is answered as data (not a failure)
    assert outs.text()[0].startswith("data r1 false")
    key(bad, "m")
    out = outs.next(timeout=30)
    assert isinstance(out, Failed)
    entries = site.service.logbook.entries("scr", 50)
    assert any(e["level"] == "error" and e["message"].startswith("screen main: ") for e in entries)


def test_revoking_or_disabling_ends_an_open_session(site):
    session, outs = open_main(site)
    outs.text()
    site.service.approvals.set_ui("scr", "screen", "main", False)
    key(session, "j")
    out = outs.next()
    assert isinstance(out, Failed) and out.kind == "unapproved" and "no longer approved" in out.message
    session, outs = open_main(site)
    outs.text()
    site.service.plugins.disable("scr")
    key(session, "j")
    out = outs.next()
    assert isinstance(out, Failed) and out.kind == "unavailable" and "not running" in out.message
