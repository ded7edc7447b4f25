"""The Lua `request` module (SPEC 3.11): registration, approval, phases, answers, request.all, served by a
real site against real HTTP servers on loopback."""
from __future__ import annotations

import json
import threading

import pytest
from _outbound_servers import LoopbackServer
from _server_fixtures import running_site
from helpers import write_plugin

from modula_desktop.core.plugins.errors import PluginLoadError
from modula_desktop.core.plugins.api.outbound import OutboundClient
from modula_desktop.core.plugins.runtime.vm import PluginVM, VMContext
from modula_desktop.core.settings import PluginSettings

FETCHER = """
request.register("127.0.0.1", {description = "the upstream test server"})
request.register("api.example.test")
function on_init()
  local ok, e = pcall(request.get, "http://127.0.0.1/")
  log.warn("init: " .. tostring(e))
end
local function out(r)
  return {json = {status = r.status, body = r.body, json = r.json, error = r.error, headers = r.headers}}
end
http.handle("GET", "/fetch", function(req)
  return out(request.get(req.query.url, {parse_json = true, timeout = tonumber(req.query.t)}))
end)
http.handle("POST", "/send", function(req)
  return out(request.send(req.json.method, req.json.url, req.json.opts))
end)
http.handle("GET", "/all", function(req)
  local base = req.query.base
  local list = {}
  for i = 1, tonumber(req.query.n) do
    list[i] = {"GET", base .. "/barrier?i=" .. i, {parse_json = true}}
  end
  local answers = request.all(list)
  local ids = {}
  for i, a in ipairs(answers) do ids[i] = a.json and a.json.i or a.error end
  return {json = {ids = ids}}
end)
hooks.on("before_create", "content", function(entry)
  local ok, e = pcall(request.get, "http://127.0.0.1/")
  if not ok then error(e) end
end)
"""
INFO = 'permissions = {"http", "hooks", "hooks:before", "request"}'


@pytest.fixture
def upstream():
    with LoopbackServer() as s:
        yield s


@pytest.fixture
def site(tmp_path):
    write_plugin(tmp_path, "fetcher", FETCHER, info_extra=INFO)
    with running_site(tmp_path, {"allow_localhost": True}, plugins=()) as r:
        r.client.approve_all("fetcher")
        yield r


def approve_domains(client, *domains, revoke=False):
    body = {"domains": [{"plugin": "fetcher", "domain": d} for d in domains]}
    return client.post(f"/api/v1/admin/plugins/domains/{'revoke' if revoke else 'approve'}", json=body)


def test_unapproved_domain_is_refused_and_nothing_is_sent(site, upstream):
    c = site.client
    r = c.get(f"/api/v1/plugins/fetcher/fetch?url=http://127.0.0.1:{upstream.port}/ok")
    assert r.status == 200 and r.json()["error"] == "domain not approved: 127.0.0.1"
    assert upstream.requests == []
    # an unregistered domain is refused even when it would be approvable
    r = c.get("/api/v1/plugins/fetcher/fetch?url=https://other.example.com/")
    assert r.json()["error"] == "domain not approved: other.example.com"


def test_domains_listed_and_approved_through_the_admin_api(site, upstream):
    c = site.client
    listed = c.get("/api/v1/admin/plugins/domains").json()["domains"]
    assert {(d["plugin"], d["domain"], d["approved"]) for d in listed} == {
        ("fetcher", "127.0.0.1", False), ("fetcher", "api.example.test", False)}
    assert [d["description"] for d in listed if d["domain"] == "127.0.0.1"] == ["the upstream test server"]
    r = approve_domains(c, "127.0.0.1")
    assert r.status == 200, r.body
    r = c.get(f"/api/v1/plugins/fetcher/fetch?url=http://127.0.0.1:{upstream.port}/ok")
    body = r.json()
    assert body["status"] == 200 and body["json"] == {"ok": True, "server": "127.0.0.1"}
    assert body["headers"]["content-type"] == "application/json" and "error" not in body
    assert len(upstream.requests) == 1
    info = c.get("/api/v1/admin/plugins/fetcher").json()
    assert {"domain": "127.0.0.1", "description": "the upstream test server", "approved": True} in info["domains"]
    # revoked: refused again, nothing sent
    assert approve_domains(c, "127.0.0.1", revoke=True).status == 200
    r = c.get(f"/api/v1/plugins/fetcher/fetch?url=http://127.0.0.1:{upstream.port}/ok")
    assert r.json()["error"] == "domain not approved: 127.0.0.1"
    assert len(upstream.requests) == 1
    # ModulaCMS's spelling of the same endpoints
    r = c.post("/api/v1/admin/plugins/requests/approve",
               json={"requests": [{"plugin": "fetcher", "domain": "127.0.0.1"}]})
    assert r.status == 200, r.body
    assert c.get("/api/v1/admin/plugins/requests").json()["requests"][0]["approved"] is True


def test_approving_an_undeclared_domain_is_refused(site):
    r = approve_domains(site.client, "evil.example.com")
    assert r.status == 400 and b"has no domain evil.example.com" in r.body


def test_private_addresses_stay_refused_with_allow_localhost(site):
    approve_domains(site.client, "127.0.0.1")
    # 127.0.0.1 is a registered and approved name; the redirect target is an internal address
    with LoopbackServer() as up:
        url = f"http://127.0.0.1:{up.port}/redirect?to=http://169.254.169.254/latest/meta-data/"
        r = site.client.get(f"/api/v1/plugins/fetcher/fetch?url={url}")
        assert "blocked" in r.json()["error"] or "not approved" in r.json()["error"]


def test_host_name_resolved_once_and_pinned(site, upstream):
    # the site's outbound client with a DNS answer of this test: api.example.test is 127.0.0.1
    calls = []

    def resolver(host, port):
        calls.append(host)
        return ["127.0.0.1"]

    site.service.plugins.outbound = OutboundClient(site.service.settings.plugins, resolver=resolver)
    assert site.client.post("/api/v1/admin/plugins/fetcher/reload").status == 200
    approve_domains(site.client, "api.example.test")
    r = site.client.get(f"/api/v1/plugins/fetcher/fetch?url=http://api.example.test:{upstream.port}/ok")
    assert r.json()["status"] == 200
    assert calls == ["api.example.test"]
    assert upstream.requests[0]["headers"]["Host"] == f"api.example.test:{upstream.port}"


def test_send_with_body_json_and_headers(site, upstream):
    approve_domains(site.client, "127.0.0.1")
    url = f"http://127.0.0.1:{upstream.port}/echo"
    r = site.client.post("/api/v1/plugins/fetcher/send", json={
        "method": "put", "url": url, "opts": {"json": {"a": 1}, "headers": {"X-Key": "k"}, "parse_json": True}})
    echoed = r.json()["json"]
    assert echoed["method"] == "PUT" and json.loads(echoed["body"]) == {"a": 1}
    assert echoed["headers"]["X-Key"] == "k" and echoed["headers"]["Content-Type"] == "application/json"
    r = site.client.post("/api/v1/plugins/fetcher/send", json={
        "method": "POST", "url": url, "opts": {"body": "raw text"}})
    assert r.json()["status"] == 200 and "json" not in r.json()
    # an argument error raises in Lua: the handler fails (the text goes to the plugin's log)
    r = site.client.post("/api/v1/plugins/fetcher/send", json={
        "method": "POST", "url": url, "opts": {"body": "a", "json": {"b": 1}}})
    assert r.status == 500
    logs = site.client.get("/api/v1/admin/plugins/fetcher").json()["logs"]
    assert any("mutually exclusive" in e["message"] for e in logs)


def test_timeout_stays_within_the_handler_deadline(site, upstream):
    approve_domains(site.client, "127.0.0.1")
    # the handler has 5 s; the request's own default (10 s) is cut to fit, so the handler answers
    r = site.client.get(f"/api/v1/plugins/fetcher/fetch?url=http://127.0.0.1:{upstream.port}/slow?ms=8000")
    assert r.status == 200 and r.json()["error"].startswith("request timed out")


def test_request_all_runs_concurrently_in_order(site, upstream):
    approve_domains(site.client, "127.0.0.1")
    upstream.recorder.barrier = threading.Barrier(8)
    r = site.client.get(f"/api/v1/plugins/fetcher/all?n=8&base=http://127.0.0.1:{upstream.port}")
    assert r.json()["ids"] == [str(i) for i in range(1, 9)]
    r = site.client.get(f"/api/v1/plugins/fetcher/all?n=9&base=http://127.0.0.1:{upstream.port}")
    assert r.status == 500
    logs = site.client.get("/api/v1/admin/plugins/fetcher").json()["logs"]
    assert any("request.all: at most 8 requests at once" in e["message"] for e in logs)


def test_not_allowed_in_on_init_or_before_hooks(site, upstream):
    approve_domains(site.client, "127.0.0.1")
    logs = site.client.get("/api/v1/admin/plugins/fetcher").json()["logs"]
    assert any("init: " in e["message"] and "request.send() cannot be called inside on_init()" in e["message"]
               for e in logs)
    site.client.post("/api/v1/admin/plugins/hooks/approve",
                     json={"hooks": [{"plugin": "fetcher", "event": "before_create", "table": "content"}]})
    r = site.client.post("/api/v1/admin/content", json={"type": "post", "title": "t", "slug": "t"})
    assert r.status == 422 and b"cannot be called inside a before-hook handler" in r.body
    assert upstream.requests == []


def test_version_change_resets_domain_approvals(site, tmp_path):
    c = site.client
    approve_domains(c, "127.0.0.1")
    write_plugin(tmp_path, "fetcher", FETCHER, version="2.0.0", info_extra=INFO)
    assert c.post("/api/v1/admin/plugins/fetcher/reload").status == 200
    info = c.get("/api/v1/admin/plugins/fetcher").json()
    assert all(not d["approved"] for d in info["domains"])


# ---- the VM alone: registration rules, phases, permission ----------------------------------------
def vm_for(tmp_path, body, perms='{"request"}', **ctx):
    d = tmp_path / "p"
    d.mkdir(exist_ok=True)
    (d / "init.lua").write_text(f'plugin_info = {{name="p", version="1", description="d", permissions={perms}}}\n'
                                + body)
    vm = PluginVM(VMContext("p", d, PluginSettings(**ctx.pop("settings", {})), **ctx))
    return vm


def test_register_rules(tmp_path):
    vm = vm_for(tmp_path, """
errs = {}
for _, d in ipairs({"", "https://a.com", "a.com/x", "a.com:80", "*.a.com", "a_b.com", "localhost"}) do
  local ok, e = pcall(request.register, d)
  errs[#errs + 1] = e
end
request.register("A.Example.com")
request.register("a.example.com")
""")
    vm.load()
    errs = vm.sandbox.from_lua(vm.sandbox.fn("get_global")(b"errs"))
    for text in ("cannot be empty", "must not include scheme", "must not include path", "must not include port",
                 "must not contain wildcards", "invalid character '_'", "at least one dot"):
        assert any(text in e for e in errs), text
    assert vm.domains == {"a.example.com": ""}


def test_register_limit_and_scope(tmp_path):
    vm = vm_for(tmp_path, "for i = 1, 51 do request.register('d' .. i .. '.example.com') end")
    with pytest.raises(PluginLoadError, match="exceeded maximum domain registration limit"):
        vm.load()
    vm = vm_for(tmp_path, "function on_init() request.register('a.example.com') end")
    vm.load()
    with pytest.raises(PluginLoadError, match="must be called at module scope"):
        vm.call_init()


def test_register_needs_the_permission(tmp_path):
    vm = vm_for(tmp_path, "request.register('a.example.com')", perms='{"http"}')
    with pytest.raises(PluginLoadError, match="did not declare the 'request' permission"):
        vm.load()
    # declared permissions without request: the module is absent
    vm = vm_for(tmp_path, "has = request ~= nil", perms='{"http"}')
    vm.load()
    assert vm.sandbox.fn("get_global")(b"request") is None
    # the ModulaCMS default (no permissions field) does not include request: every call says so
    d = tmp_path / "q"
    d.mkdir()
    (d / "init.lua").write_text('plugin_info = {name="q", version="1", description="d"}\n'
                                'function try() local ok, e = pcall(request.get, "https://a.example.com/"); return e end\n')
    vm = PluginVM(VMContext("q", d, PluginSettings()))
    vm.load()
    err = vm.sandbox.call("run", *vm._budget_args(5, "t"), b"handler", vm.sandbox.fn("get_global")(b"try"))[0]
    assert b"did not declare the 'request' permission" in err


def test_a_modulacms_plugin_that_registers_a_domain_may_call_it_once_approved(tmp_path):
    # no permissions field (ModulaCMS's manifest): request.register is the declaration, as in ModulaCMS,
    # and the domain still waits for the author's approval before anything is sent
    d = tmp_path / "m"
    d.mkdir()
    (d / "init.lua").write_text('plugin_info = {name="m", version="1", description="d"}\n'
                                'request.register("a.example.com")\n'
                                'function try() return request.get("https://a.example.com/").error end\n')
    vm = PluginVM(VMContext("m", d, PluginSettings(), domain_approved=lambda plugin, domain: False,
                            outbound=OutboundClient(PluginSettings())))
    vm.load()
    assert vm.domains == {"a.example.com": ""}
    err = vm.sandbox.call("run", *vm._budget_args(5, "t"), b"handler", vm.sandbox.fn("get_global")(b"try"))[0]
    assert b"not approved" in err and b"permission" not in err


def test_not_allowed_in_on_shutdown(tmp_path):
    logs = []
    vm = vm_for(tmp_path, """
request.register("a.example.com")
function on_shutdown() local ok, e = pcall(request.get, "https://a.example.com/"); log.info(e) end
""", perms='{"request"}', log_sink=lambda p, lvl, msg, ctx: logs.append(msg))
    vm.load()
    vm.call_shutdown()
    assert any("request.send() cannot be called inside on_shutdown()" in m for m in logs)


def test_request_module_is_frozen(tmp_path):
    vm = vm_for(tmp_path, "ok, err = pcall(function() request.get = nil end)")
    vm.load()
    assert "cannot modify frozen module" in vm.sandbox.fn("get_global")(b"err").decode()


def test_binary_body_and_answer(tmp_path, upstream):
    r = vm_for(tmp_path, """
request.register("127.0.0.1")
function go(url)
  local a = request.post(url, {body = "\\0\\255\\1"})
  local e = request.get(url:gsub("/echo", "/big") .. "?n=3")
  return a.status, #e.body, e.body
end
""", settings={"allow_localhost": True}, outbound=OutboundClient(PluginSettings(allow_localhost=True)))
    r.load()
    status, n, body = r.sandbox.call("run", *r._budget_args(5, "t"), b"handler", r.sandbox.fn("get_global")(b"go"),
                                     f"http://127.0.0.1:{upstream.port}/echo".encode())
    assert status == 200 and n == 3 and body == b"xxx"
    assert upstream.requests[0]["body"] == b"\x00\xff\x01"


# ---- the CLI ------------------------------------------------------------------------------------
def test_cli_shows_and_approves_domains(tmp_path):
    from test_cli_online import Served, modula

    from _server_fixtures import make_site

    site = tmp_path / "site"
    make_site(site, plugins=())
    write_plugin(site, "fetcher", FETCHER, info_extra=INFO)
    served = Served(site)
    try:
        r = modula("plugin", "info", "fetcher", "--site", site)
        assert "outbound domains (2):" in r.stdout and "[unapproved] 127.0.0.1  the upstream test server" in r.stdout
        r = modula("plugin", "approve", "fetcher", "--domain", "127.0.0.1", "--yes", "--site", site)
        assert r.returncode == 0, r.stderr
        assert "1 domain of fetcher" in r.stdout
        info = served.client.get("/api/v1/admin/plugins/fetcher").json()
        assert {d["domain"]: d["approved"] for d in info["domains"]} == {"127.0.0.1": True, "api.example.test": False}
        r = modula("plugin", "approve", "fetcher", "--all-domains", "--yes", "--site", site)
        assert r.returncode == 0 and "1 domain of fetcher" in r.stdout
        r = modula("plugin", "revoke", "fetcher", "--domain", "api.example.test", "--site", site)
        assert r.returncode == 0
        r = modula("plugin", "info", "fetcher", "--site", site)
        assert "[approved  ] 127.0.0.1" in r.stdout and "[unapproved] api.example.test" in r.stdout
        r = modula("plugin", "validate", site / "plugins" / "fetcher")
        assert r.returncode == 0 and "  outbound requests to api.example.test" in r.stdout
        r = modula("plugin", "approve", "fetcher", "--domain", "evil.example.com", "--yes", "--site", site)
        assert r.returncode == 1 and "has no outbound domain evil.example.com" in r.stderr
    finally:
        served.stop()


# ---- the GUI plugin manager -----------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_gui_lists_domains_with_approve_and_revoke(qtbot, tmp_path):
    from PySide6.QtCore import Qt
    from test_gui_support import start_service

    from modula_desktop.gui.main_window import MainWindow

    write_plugin(tmp_path, "fetcher", FETCHER, info_extra=INFO)
    service = start_service(tmp_path)
    w = MainWindow(service)
    try:
        w.show()
        d = w.show_plugins()
        qtbot.waitExposed(d)
        d.select("fetcher")
        table = d.domains.table
        assert table.rowCount() == 2
        assert [table.item(r, 1).text() for r in range(2)] == ["127.0.0.1", "api.example.test"]
        assert table.item(0, 2).text() == "the upstream test server"
        assert d.tabs.tabText(d.tabs.indexOf(d.domains)) == "Domains (2)"
        assert "request" in d.domains.permissions.text()
        table.item(0, 0).setCheckState(Qt.CheckState.Checked)
        assert service.approvals.domain_approved("fetcher", "127.0.0.1")
        assert not service.approvals.domain_approved("fetcher", "api.example.test")
        d.domains.approve_all.click()
        assert service.approvals.domains_of("fetcher") == {"127.0.0.1", "api.example.test"}
        d.domains.revoke_all.click()
        assert service.approvals.domains_of("fetcher") == set()
        assert not d.domains.is_checked(0)
    finally:
        w.shutdown()
        w.close()
        service.close()
