"""Read hooks (SPEC 3.6): before_read may refuse a read, after_read may hide or replace fields, for the
admin API, /preview/ and the site build, never for the window's own reads. Real Lua plugins, a real
SQLite site, a real waitress server on loopback."""
from __future__ import annotations

import pytest

from _server_fixtures import running_site
from build_helpers import add_posts
from conftest_content import MARK, approve_all, fired, hook_runs, make_site  # noqa: F401
from helpers import write_plugin
from modula_desktop.core.build import BuildError, build_site
from modula_desktop.core.errors import ReadRefused
from modula_desktop.core.reads import Reader

PERMS = 'permissions = {"db", "hooks", "hooks:before", "request"}'

# ModulaCMS's x402 shape: before_read answers {status, json, headers} or passes, and leaves state on
# data._* for after_read, which returns headers; beyond ModulaCMS, after_read hides and replaces fields
PAYWALL = """
hooks.on("before_read", "content_data", function(data)
  print("fired:before:" .. data.source .. ":" .. tostring(data.list) .. ":" .. tostring(data.slug))
  if data.slug == "secret" and data.headers["x-paid"] ~= "yes" then
    return {status = 402, json = {error = "payment required", slug = data.slug}, headers = {["X-Price"] = "5"}}
  end
  if data.slug == "broken" then error("the gate is broken") end
  data._checked = "by-paywall"
end)
hooks.on("after_read", "content_data", function(data)
  print("fired:after:" .. data._table .. ":" .. tostring(data._checked))
  local out = {headers = {["X-Checked"] = tostring(data._checked)}}
  if data.fields and data.fields.members then
    out.body = "(for members)"
    out.drop = {"fields"}
  end
  if data.slug == "renamed" then out.title = data.title .. " [read]" end
  return out
end)
"""


def _site(tmp_path, plugins: dict):
    for name, body in plugins.items():
        write_plugin(tmp_path, name, body, info_extra=PERMS)
    return running_site(tmp_path, plugins=())


def _approve(site, name):
    for h in site.service.plugins.info(name)["hooks"]:
        site.service.approvals.approve_hook(name, h["event"], h["table"])


def _entries(content):
    made = {}
    for slug, extra in (("open", {}), ("secret", {}), ("broken", {}), ("renamed", {}),
                        ("club", {"fields": {"members": True, "tier": "gold"}})):
        made[slug] = content.create(dict({"title": slug.title(), "slug": slug, "body": f"body of {slug}",
                                          "status": "published"}, **extra), run_hooks=False)
    return made


def test_admin_api_reads_pass_both_hooks(tmp_path):
    with _site(tmp_path, {"paywall": PAYWALL}) as site:
        made = _entries(site.service.content)
        c = site.client
        # unapproved: nothing runs
        r = c.get(f"/api/v1/admin/content/{made['secret']['id']}")
        assert r.status == 200 and r.json()["body"] == "body of secret"
        assert fired(site.service, "paywall") == []
        _approve(site, "paywall")

        r = c.get(f"/api/v1/admin/content/{made['secret']['id']}")
        assert r.status == 402
        assert r.json() == {"error": "payment required", "slug": "secret"}
        assert r.headers["x-price"] == "5"
        r = c.get(f"/api/v1/admin/content/{made['secret']['id']}", headers={"X-Paid": "yes"})
        assert r.status == 200 and r.json()["body"] == "body of secret"
        assert r.headers["x-checked"] == "by-paywall"  # state from before_read reached after_read
        assert "fired:" not in "".join(fired(site.service, "paywall"))  # prefix stripped
        assert "after:content_data:by-paywall" in fired(site.service, "paywall")  # _table as registered

        club = c.get(f"/api/v1/admin/content/{made['club']['id']}").json()
        assert club["body"] == "(for members)" and "fields" not in club and club["id"] == made["club"]["id"]
        assert c.get(f"/api/v1/admin/content/{made['renamed']['id']}").json()["title"] == "Renamed [read]"

        r = c.get(f"/api/v1/admin/content/{made['broken']['id']}")
        assert r.status == 403
        assert r.json() == {"error": "the gate is broken", "code": "READ_REFUSED", "plugin": "paywall"}
        # the stored entries are untouched: only what a read returns is filtered
        assert site.service.content.get(made["club"]["id"])["fields"] == {"members": True, "tier": "gold"}


def test_a_list_passes_before_read_once_and_after_read_per_entry(tmp_path):
    with _site(tmp_path, {"paywall": PAYWALL}) as site:
        _entries(site.service.content)
        _approve(site, "paywall")
        before = len(fired(site.service, "paywall"))
        r = site.client.get("/api/v1/admin/content?status=published&limit=10")
        assert r.status == 200, r.body
        items = {e["slug"]: e for e in r.json()["items"]}
        assert items["club"]["body"] == "(for members)" and "fields" not in items["club"]
        assert items["secret"]["body"] == "body of secret"  # a list names no slug: the gate passes it
        got = fired(site.service, "paywall")[before:]
        assert got[0] == "before:api:true:nil"
        assert sum(x.startswith("before:") for x in got) == 1
        assert sum(x.startswith("after:") for x in got) == 5


def test_the_windows_own_reads_fire_nothing(tmp_path, make_site):  # noqa: F811
    service = make_site({"paywall": PAYWALL})
    made = _entries(service.content)
    assert service.content.get(made["secret"]["id"])["body"] == "body of secret"
    assert len(service.content.list()) == 5
    assert service.content.get_by_slug("club")["fields"]["tier"] == "gold"
    assert fired(service, "paywall") == []
    with pytest.raises(ReadRefused) as info:  # the same service, as a reader outside the window
        service.content.read(made["secret"]["id"], Reader("api"))
    assert info.value.status == 402 and info.value.plugin == "paywall"


def test_refusals_do_not_trip_the_hook_breaker_but_failures_do(make_site):  # noqa: F811
    service = make_site({"paywall": PAYWALL}, settings={"hook_max_consecutive_aborts": 3})
    made = _entries(service.content)
    for _ in range(5):  # a paywall refusing readers is doing its job
        with pytest.raises(ReadRefused):
            service.content.read(made["secret"]["id"], Reader("api"))
    assert hook_runs(service, "paywall", "before_read", "refused") == 5
    with pytest.raises(ReadRefused):
        service.content.read(made["secret"]["id"], Reader("api"))  # still gated
    for _ in range(3):
        with pytest.raises(ReadRefused):
            service.content.read(made["broken"]["id"], Reader("api"))
    # three failures in a row: that hook is off until reload, and the reads go through
    assert service.content.read(made["secret"]["id"], Reader("api"))[0]["body"] == "body of secret"


SLOW = """
hooks.on("after_read", "*", function(data)
  local t = os.clock() + 0.2
  while os.clock() < t do end
  return nil
end)
hooks.on("before_read", "content", function(data)
  if data.slug == "loop" then while true do end end
end)
"""


def test_budgets_bind_read_hooks_per_entry_and_per_list(make_site):  # noqa: F811
    # 0.2 s of CPU per after_read; a read's budget is 3 s (room for a loaded machine), a list of 20
    # entries needs 4 s of CPU: past the 3 s the whole list shares whatever the load
    service = make_site({"slow": SLOW}, settings={"hook_timeout_ms": 3000, "hook_event_timeout_ms": 3000,
                                                   "hook_max_consecutive_aborts": 100,
                                                   "max_instructions": 10**10})
    for i in range(19):
        service.content.create({"title": f"t{i}", "slug": f"s{i}"}, run_hooks=False)
    loop = service.content.create({"title": "loop", "slug": "loop"}, run_hooks=False)
    with pytest.raises(ReadRefused) as info:
        service.content.read(loop["id"], Reader("api"))
    assert info.value.status == 503 and "slow" in str(info.value)
    one, _ = service.content.read(service.content.get_by_slug("s1")["id"], Reader("api"))
    assert one["title"] == "t1"  # 0.2 s: within one read's budget
    with pytest.raises(ReadRefused) as info:  # 20 entries x 0.2 s: past the 3 s the whole list shares
        service.content.read_list(Reader("api"))
    assert info.value.status == 503


def test_preview_passes_the_read_hooks(tmp_path):
    with _site(tmp_path, {"paywall": PAYWALL}) as site:
        _entries(site.service.content)
        _approve(site, "paywall")
        r = site.client.get("/preview/secret", token=False)
        assert r.status == 402 and b"payment required" in r.body
        r = site.client.get("/preview/club", token=False)
        assert r.status == 200 and b"(for members)" in r.body and b"body of club" not in r.body
        assert r.headers["x-checked"] == "by-paywall"
        assert "before:preview:nil:club" in fired(site.service, "paywall")


def _build_service(tmp_path, body, **build):
    from build_helpers import open_site

    write_plugin(tmp_path, "reader", body, info_extra=PERMS)
    service = open_site(tmp_path, build=build).start(hot_reload=False)
    approve_all(service)
    return service


BUILD_READER = """
hooks.on("before_read", "content", function(data)
  if data.source == "build" and data.slug == "post-1" then return {status = 451, json = {error = "embargoed"}} end
end)
hooks.on("after_read", "content", function(data)
  if data.slug == "post-2" then return {body = "filtered for the site", title = "Post two (public)"} end
end)
"""


def test_the_build_reads_through_the_hooks(tmp_path):
    service = _build_service(tmp_path, BUILD_READER)
    try:
        add_posts(service, 4)
        out = tmp_path / "out"
        with pytest.raises(BuildError, match="reader plugin's read hooks refused 'post-1': embargoed"):
            build_site(service, out)
        assert not out.exists() or not any(out.iterdir())
        service.settings = service.settings.replace(build={"continue_on_plugin_error": True})
        result = build_site(service, out)
        assert any("post-1" in w and "left out" in w for w in result.warnings)
        pages = {p.relative_to(out).as_posix(): p.read_text(encoding="utf-8") for p in out.rglob("*.html")}
        assert not any("post-1/" in p or "Post number 1<" in t for p, t in pages.items())
        two = next(t for p, t in pages.items() if p.endswith("post-2/index.html"))
        assert "filtered for the site" in two and "Post two (public)" in two and "More of post 2" not in two
        # without the hooks the next build is the stored content again (no filtered digest was kept)
        service.approvals.revoke_hook("reader", "after_read", "content")
        service.approvals.revoke_hook("reader", "before_read", "content")
        service.plugins.notify("reader")
        build_site(service, out)
        two = next(p for p in out.rglob("*.html") if p.as_posix().endswith("post-2/index.html")).read_text(
            encoding="utf-8")
        assert "More of post 2" in two
        assert any(p.as_posix().endswith("post-1/index.html") for p in out.rglob("*.html"))
    finally:
        service.close()


VERIFIER = """
request.register("127.0.0.1")
hooks.on("before_read", "content_data", function(data)
  if data.slug ~= "gated" then return nil end
  -- ModulaCMS's x402 flow: ask a verifier over request.* (allowed in read hooks, unlike before-hooks)
  local r = request.get(VERIFY_URL .. "/echo?sig=" .. (data.headers["x-sig"] or "none"), {parse_json = true})
  if r.error or r.status ~= 200 then return {status = 402, json = {error = "verifier unreachable"}} end
  if (data.headers["x-sig"] or "") ~= "good" then return {status = 402, json = {error = "bad signature"}} end
  data._verified = r.status
end)
hooks.on("after_read", "content_data", function(data)
  if data._verified then return {headers = {["Payment-Response"] = "settled " .. data._verified}} end
end)
"""


def test_read_hooks_may_call_out_like_modulacms_x402(tmp_path):
    from _outbound_servers import LoopbackServer

    with LoopbackServer() as upstream:
        body = f'VERIFY_URL = "http://127.0.0.1:{upstream.port}"\n' + VERIFIER
        write_plugin(tmp_path, "verify", body, info_extra=PERMS)
        with running_site(tmp_path, {"allow_localhost": True}, plugins=()) as site:
            _approve(site, "verify")
            site.client.post("/api/v1/admin/plugins/domains/approve",
                             json={"domains": [{"plugin": "verify", "domain": "127.0.0.1"}]})
            e = site.service.content.create({"title": "Gated", "slug": "gated", "status": "published"},
                                            run_hooks=False)
            r = site.client.get(f"/api/v1/admin/content/{e['id']}", headers={"X-Sig": "bad"})
            assert r.status == 402 and r.json() == {"error": "bad signature"}
            r = site.client.get(f"/api/v1/admin/content/{e['id']}", headers={"X-Sig": "good"})
            assert r.status == 200, r.body
            assert r.headers["payment-response"] == "settled 200"
            assert [q["query"].get("sig") for q in upstream.requests if q["path"] == "/echo"] == ["bad", "good"]


READ_PLUGIN_TESTS = {
    "init.lua": """plugin_info = {name = "readp", version = "1.0.0", description = "read hooks under plugin test"}
hooks.on("before_read", "content_data", function(data)
  if data.slug == "paid" then return {status = 402, json = {error = "pay"}} end
  data._seen = true
end)
hooks.on("after_read", "content", function(data) return {drop = {"body"}} end)
""",
    "test/read.test.lua": """
function test_refusal()
  local r = test.fire("before_read", "content_data", {slug = "paid", headers = {}})
  test.assert_eq(r.ok, false)
  test.assert_eq(r.status, 402)
  test.assert_eq(r.response.json.error, "pay")
end
function test_pass_and_state()
  local r = test.fire("before_read", "content_data", {slug = "free", headers = {}})
  test.assert(r.ok)
  test.assert_eq(r.data._seen, true)
  test.assert_eq(r.data._table, "content_data")
end
function test_after_read_filter()
  local r = test.fire("after_read", "content", {slug = "x", body = "b"})
  test.assert_eq(r.returned.drop[1], "body")
end
""",
}


def test_read_hooks_under_modula_plugin_test(tmp_path):
    import subprocess
    import sys

    root = tmp_path / "readp"
    for rel, text in READ_PLUGIN_TESTS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    done = subprocess.run([sys.executable, "-m", "modula_desktop", "plugin", "test", str(root)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "3 passed, 0 failed"


SPY = """
hooks.on("before_read", "content", function(data)
  local names = {}
  for k in pairs(data.headers) do names[#names + 1] = k end
  for k in pairs(data.query) do names[#names + 1] = "q:" .. k end
  table.sort(names)
  print("fired:" .. table.concat(names, ","))
end)
"""


def test_the_admin_token_and_the_preview_key_never_reach_a_read_hook(tmp_path):
    with _site(tmp_path, {"spy": SPY}) as site:
        _approve(site, "spy")
        draft = site.service.content.create({"title": "Draft", "slug": "draft"}, run_hooks=False)
        assert site.client.get(f"/api/v1/admin/content/{draft['id']}?x=1",
                               headers={"Cookie": "a=b", "X-Other": "y"}).status == 200
        from modula_desktop.server.auth import TokenAuth

        key = TokenAuth(site.service.site.token()).preview_key("draft")
        assert site.client.get("/preview/draft").status == 200  # with the token: drafts are the author's
        assert site.client.get(f"/preview/draft?key={key}", token=False).status == 200  # with the key
        seen = fired(site.service, "spy")
        assert len(seen) == 3
        for line in seen:
            assert "authorization" not in line and "cookie" not in line and "q:key" not in line
        assert "q:x" in seen[0] and "x-other" in seen[0]
        assert key not in "".join(seen) and site.service.site.token() not in "".join(seen)


SLOW_GATE = """
plugin_info = {name = "slowgate", version = "1.0.0", description = "slow to start",
               permissions = {"hooks", "hooks:before"}}
local function spin(s) local t = os.clock() while os.clock() - t < s do end end
hooks.on("before_read", "content", function(data) end)
function on_init() spin(1.5) end
"""


def test_a_gate_still_loading_refuses_reads_instead_of_skipping(tmp_path):
    from modula_desktop.core.plugins.lifecycle.manifest import Manifest
    from modula_desktop.core.service import SiteService
    from modula_desktop.core.settings import Settings
    from modula_desktop.core.site import Site

    (tmp_path / "plugins" / "slowgate").mkdir(parents=True)
    (tmp_path / "plugins" / "slowgate" / "init.lua").write_text(SLOW_GATE)
    service = SiteService(Site(tmp_path), Settings())
    try:  # approved in an earlier session
        perms = Manifest("slowgate", "1.0.0", "d", permissions=("hooks", "hooks:before")).permissions_key
        service.approvals.check_identity("slowgate", "1.0.0", perms)
        service.approvals.approve_hook("slowgate", "before_read", "content")
        entry = service.content.create({"title": "Early", "slug": "early"}, run_hooks=False)
    finally:
        service.close()
    with running_site(tmp_path, {"max_vms": 2, "hook_reserve_vms": 1, "max_instructions": 10**10},
                      plugins=(), loaded=False) as site:
        r = site.client.get(f"/api/v1/admin/content/{entry['id']}")
        assert r.status == 503 and "slowgate plugin is still loading" in r.json()["error"]
        assert site.service.plugins.wait_loaded(30)
        assert site.client.get(f"/api/v1/admin/content/{entry['id']}").status == 200
