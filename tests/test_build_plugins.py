"""Plugins in the build (SPEC 9): before_render filters a rendering, after_build hears the written paths;
both need approval; a failing plugin stops the build (naming plugin and entry) unless allowed."""
from __future__ import annotations

import pytest

from build_helpers import add_posts, leftovers, snapshot
from helpers import write_plugin
from modula_desktop.core.build import BuildError, build_site
from modula_desktop.core.service import SiteService
from modula_desktop.core.settings import Settings
from modula_desktop.core.site import Site

PERMS = 'permissions = {"hooks", "hooks:before"}'

SHORTCODES = """
hooks.on("before_render", "content", function(entry)
  local html = string.gsub(entry.html, "%[year%]", "2026")
  return {html = html .. "<p class=\\"by-plugin\\">" .. entry.slug .. "</p>", title = entry.title .. " (filtered)"}
end)
"""

FAILING = """
hooks.on("before_render", "content", function(entry)
  if entry.slug == "post-1" then error("cannot render this one") end
  return {html = entry.html .. "<p>ok</p>"}
end)
"""

AFTER = """
hooks.on("after_build", "*", function(data)
  log.info("built " .. #data.paths .. " files into " .. data.out)
  for _, p in ipairs(data.paths) do
    if p == "index.html" then log.info("home was written") end
  end
end)
"""


def _service(root, plugins: dict, approve=True, **build) -> SiteService:
    for name, body in plugins.items():
        write_plugin(root, name, body, info_extra=PERMS)
    settings = Settings().replace(plugins={"hot_reload": False}, build=build)
    service = SiteService(Site(root), settings).start(hot_reload=False)
    if approve:
        for name in plugins:
            for h in service.plugins.info(name)["hooks"]:
                service.approvals.approve_hook(name, h["event"], h["table"])
    return service


@pytest.fixture
def services():
    made = []
    yield made
    for s in made:
        s.close()


def test_before_render_filters_the_rendering_only(tmp_path, services):
    svc = _service(tmp_path / "site", {"shortcodes": SHORTCODES})
    services.append(svc)
    post = svc.content.create({"type": "post", "title": "Dated", "slug": "dated", "status": "published",
                               "body": "Written in [year]."}, run_hooks=False)
    out = build_site(svc).out
    page = (out / "dated/index.html").read_text()
    assert "Written in 2026." in page and '<p class="by-plugin">dated</p>' in page
    assert "<h1>Dated (filtered)</h1>" in page
    assert "Written in 2026." in (out / "feed.xml").read_text()
    assert svc.content.get(post["id"])["body"] == "Written in [year]."  # nothing saved


def test_before_render_needs_approval(tmp_path, services):
    svc = _service(tmp_path / "site", {"shortcodes": SHORTCODES}, approve=False)
    services.append(svc)
    add_posts(svc, 2)
    out = build_site(svc).out
    assert "by-plugin" not in (out / "post-1/index.html").read_text()
    # approving it changes every page: the build renders them all again
    svc.approvals.approve_hook("shortcodes", "before_render", "content")
    result = build_site(svc)
    assert {"post-0/index.html", "post-1/index.html"} <= set(result.written)
    assert "by-plugin" in (out / "post-1/index.html").read_text()


def test_a_failing_plugin_stops_the_build_and_names_plugin_and_entry(tmp_path, services):
    svc = _service(tmp_path / "site", {"fragile": FAILING})
    services.append(svc)
    add_posts(svc, 3)
    svc.approvals.revoke_hook("fragile", "before_render", "content")
    out = build_site(svc).out
    before = snapshot(out)
    svc.approvals.approve_hook("fragile", "before_render", "content")
    with pytest.raises(BuildError) as info:
        build_site(svc)
    message = str(info.value)
    assert "fragile" in message and "'post-1'" in message and "cannot render this one" in message
    assert snapshot(out) == before and leftovers(out) == []


def test_continue_on_plugin_error_builds_without_its_changes(tmp_path, services):
    svc = _service(tmp_path / "site", {"fragile": FAILING}, continue_on_plugin_error=True)
    services.append(svc)
    add_posts(svc, 3)
    result = build_site(svc)
    assert any("fragile" in w and "'post-1'" in w for w in result.warnings)
    assert "<p>ok</p>" not in (result.out / "post-1/index.html").read_text()
    assert "<p>ok</p>" in (result.out / "post-2/index.html").read_text()


def test_after_build_gets_the_written_paths(tmp_path, services):
    svc = _service(tmp_path / "site", {"indexer": AFTER})
    services.append(svc)
    add_posts(svc, 2)
    result = build_site(svc)
    assert result.wait_for_plugins(10)
    messages = [e["message"] for e in svc.logbook.entries("indexer", 50)]
    assert f"built {len(result.written)} files into {result.out}" in messages
    assert "home was written" in messages


def test_after_build_needs_approval(tmp_path, services):
    svc = _service(tmp_path / "site", {"indexer": AFTER}, approve=False)
    services.append(svc)
    add_posts(svc, 1)
    assert build_site(svc).wait_for_plugins(10)
    assert not [e for e in svc.logbook.entries("indexer", 50) if e["message"].startswith("built")]


SEARCH = """
http.handle("GET", "/search.json", function(req)
  local rows = {}
  rows[1] = {title = "indexed"}
  return {json = {entries = rows}}
end, {public = true, build = true})
http.handle("GET", "/info.html", function(req) return {body = "<p>plugin page</p>"} end, {public = true, build = true})
http.handle("GET", "/not-built", function(req) return {body = "x"} end, {public = true})
http.handle("GET", "/private", function(req) return {body = "x"} end, {build = true})
http.handle("GET", "/item/{id}", function(req) return {body = "x"} end, {public = true, build = true})
"""

BROKEN_ROUTE = """
http.handle("GET", "/data.json", function(req) error("no data today") end, {public = true, build = true})
"""


def _route_service(root, body, **build):
    write_plugin(root, "search", body, info_extra='permissions = {"http"}')
    settings = Settings().replace(plugins={"hot_reload": False}, build=build)
    return SiteService(Site(root), settings).start(hot_reload=False)


def _approve_routes(svc, name="search"):
    for r in svc.plugins.info(name)["routes"]:
        svc.approvals.approve_route(name, r["method"], r["path"], bool(r["public"]))


def test_build_routes_are_fetched_and_written_once_approved(tmp_path, services):
    svc = _route_service(tmp_path / "site", SEARCH)
    services.append(svc)
    add_posts(svc, 1)
    out = build_site(svc).out
    assert not (out / "plugins").exists()  # nothing approved yet
    _approve_routes(svc)
    build_site(svc)
    assert (out / "plugins/search/search.json").read_text() == '{"entries":[{"title":"indexed"}]}'
    assert (out / "plugins/search/info.html").read_text() == "<p>plugin page</p>"
    files = sorted(p.relative_to(out).as_posix() for p in (out / "plugins").rglob("*") if p.is_file())
    assert files == ["plugins/search/info.html", "plugins/search/search.json"]
    assert build_site(svc).written == []  # the same answers: nothing written again


def test_a_failing_build_route_stops_the_build(tmp_path, services):
    svc = _route_service(tmp_path / "site", BROKEN_ROUTE)
    services.append(svc)
    add_posts(svc, 1)
    out = build_site(svc).out
    before = snapshot(out)
    _approve_routes(svc)
    with pytest.raises(BuildError, match="The search plugin's build route GET /data.json failed"):
        build_site(svc)
    assert snapshot(out) == before and leftovers(out) == []


def test_a_failing_build_route_is_left_out_when_allowed(tmp_path, services):
    svc = _route_service(tmp_path / "site", BROKEN_ROUTE, continue_on_plugin_error=True)
    services.append(svc)
    add_posts(svc, 1)
    _approve_routes(svc)
    result = build_site(svc)
    assert any("GET /data.json" in w for w in result.warnings)
    assert not (result.out / "plugins").exists()


def test_the_preview_runs_the_same_before_render_hooks(tmp_path):
    from _server_fixtures import running_site

    with running_site(tmp_path / "site", plugins=()) as running:
        svc = running.service
        write_plugin(running.path, "shortcodes", SHORTCODES, info_extra=PERMS)
        svc.plugins.load_all()
        svc.content.create({"type": "post", "title": "Dated", "slug": "dated", "status": "published",
                            "body": "Written in [year]."}, run_hooks=False)
        assert b"Written in [year]." in running.client.get("/preview/dated", token=False).body
        svc.approvals.approve_hook("shortcodes", "before_render", "content")
        body = running.client.get("/preview/dated", token=False).body
        assert b"Written in 2026." in body and b"Dated (filtered)" in body
