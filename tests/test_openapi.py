"""The admin API reference: the OpenAPI document covers exactly the app's routes, is a valid OpenAPI 3.1
document, real answers match its schemas, it is served with the token only, and docs/ADMIN_API.md is
what it renders."""
from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest
from openapi_spec_validator import validate

from _server_fixtures import running_site
from modula_desktop.server.openapi import document, markdown

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_PATH = "/api/v1/plugins/{plugin}/{path}"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with running_site(tmp_path_factory.mktemp("site")) as r:
        r.client.approve_all("http_test_plugin")
        yield r


def app_routes(srv) -> set[tuple[str, str]]:
    """(path template, method) of every responder the Falcon app has (plugin routes live behind their
    own dispatcher and are documented as one templated path)."""
    from modula_desktop.server.app import create_app

    app = create_app(srv.service, port=srv.port)
    found = set()

    def walk(nodes):
        for node in nodes:
            if node.uri_template:
                for method, responder in node.method_map.items():
                    if hasattr(responder, "__self__"):  # a resource's own on_*; Falcon's defaults are functions
                        found.add((node.uri_template, method.lower()))
            walk(node.children)

    walk(app.falcon._router._roots)
    return found


# Falcon's spelling of a path template where the document's differs (a converter)
FALCON_TEMPLATES = {"/site/{path}": "/site/{path:path}"}


def documented() -> set[tuple[str, str]]:
    return {(FALCON_TEMPLATES.get(path, path), method) for path, item in document()["paths"].items()
            for method in item if path != PLUGIN_PATH}


def test_every_route_of_the_app_is_documented_and_nothing_else(srv):
    routes = app_routes(srv)
    assert routes, "the router walk found nothing"
    missing = sorted(routes - documented())
    extra = sorted(documented() - routes)
    assert not missing, f"routes of the app missing from server/openapi.py: {missing}"
    assert not extra, f"documented routes the app does not have: {extra}"


def test_the_document_is_valid_openapi_3_1():
    doc = document()
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_served_with_the_token_only(srv):
    c = srv.client
    assert c.get("/api/v1/openapi.json", token=False).status == 401
    r = c.get("/api/v1/openapi.json")
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == document()


def _schema(name: str) -> dict:
    doc = document()
    return {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}


def check(value, name: str):
    jsonschema.validate(value, _schema(name), cls=jsonschema.Draft202012Validator)


def test_real_answers_match_the_documented_schemas(srv):
    c = srv.client
    check(c.get("/api/v1/health", token=False).json(), "Health")
    check(c.get("/api/v1/admin/plugins").json(), "PluginList")
    check(c.get("/api/v1/admin/plugins/http_test_plugin").json(), "PluginInfo")
    check(c.get("/api/v1/admin/plugins/routes").json(), "RouteList")
    check(c.get("/api/v1/admin/plugins/hooks").json(), "HookList")
    created = c.post("/api/v1/admin/content", json={"type": "post", "title": "Schema check", "body": "x"})
    assert created.status == 201
    check(created.json(), "Entry")
    check(c.get("/api/v1/admin/content").json(), "EntryList")
    check(c.get("/api/v1/admin/content/nope").json(), "Error")
    check(c.get("/api/v1/plugins/http_test_plugin/nope").json(), "PluginError")
    check(c.get("/api/v1/admin/plugins/domains").json(), "DomainList")
    entry = created.json()
    assert c.request("PUT", f"/api/v1/admin/content/{entry['id']}", json={"body": "y"}).status == 200
    revs = c.get(f"/api/v1/admin/content/{entry['id']}/revisions").json()
    check(revs, "RevisionList")
    assert [r["number"] for r in revs["items"]] == [2, 1] and revs["items"][0]["source"] == "api"
    check(c.get(f"/api/v1/admin/content/{entry['id']}/revisions/1").json(), "Revision")
    assert c.get(f"/api/v1/admin/content/{entry['id']}/revisions/9").status == 404
    assert c.get(f"/api/v1/admin/content/{entry['id']}/revisions/x").status == 400
    restored = c.post(f"/api/v1/admin/content/{entry['id']}/revisions/1/restore")
    assert restored.status == 200 and restored.json()["body"] == "x"
    check(restored.json(), "Entry")
    assert c.request("DELETE", f"/api/v1/admin/content/{entry['id']}").status == 200
    trash = c.get("/api/v1/admin/trash").json()
    check(trash, "TrashList")
    assert [e["id"] for e in trash["items"]] == [entry["id"]]
    check(c.get(f"/api/v1/admin/trash/{entry['id']}").json(), "TrashedEntry")
    back = c.post(f"/api/v1/admin/trash/{entry['id']}/restore")
    assert back.status == 200 and c.get(f"/api/v1/admin/content/{entry['id']}").status == 200
    assert c.request("DELETE", f"/api/v1/admin/content/{entry['id']}").status == 200
    assert c.request("DELETE", f"/api/v1/admin/trash/{entry['id']}").status == 200
    assert c.get(f"/api/v1/admin/trash/{entry['id']}").status == 404
    c.request("DELETE", f"/api/v1/admin/content/{c.post('/api/v1/admin/content', json={'title': 'Gone'}).json()['id']}")
    emptied = c.request("DELETE", "/api/v1/admin/trash").json()
    check(emptied, "Emptied")
    assert emptied["removed"] >= 1 and c.get("/api/v1/admin/trash").json()["items"] == []


def test_content_lists_carry_the_total_and_the_next_page(srv):
    c = srv.client
    for n in range(5):
        assert c.post("/api/v1/admin/content", json={"type": "page", "title": f"Paged {n}", "body": "paged"}).status == 201
    seen, url = [], "/api/v1/admin/content?search=paged&limit=2"
    while url:
        page = c.get(url).json()
        assert page["total"] == 5
        seen += [e["title"] for e in page["items"]]
        url = page["next"]
    assert sorted(seen) == [f"Paged {n}" for n in range(5)]


def test_admin_api_md_is_what_the_document_renders():
    committed = (ROOT / "docs" / "ADMIN_API.md").read_text(encoding="utf-8")
    assert committed == markdown(), ("docs/ADMIN_API.md is stale: run "
                                     "`python -m modula_desktop.server.apidoc --markdown > docs/ADMIN_API.md`")


def test_the_readme_links_only_to_files_in_the_repository():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#]+)\)", readme):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        assert (ROOT / target).exists(), f"README links to {target}, which is not in the repository"


def _plugin_answer_schema(status: int) -> dict:
    doc = document()
    response = doc["paths"][PLUGIN_PATH]["get"]["responses"][str(status)]
    assert response["headers"]["X-Request-Id"]["schema"] == {"type": "string"}
    return {**response["content"]["application/json"]["schema"], "components": doc["components"]}


def test_plugin_route_errors_match_the_document_status_by_status(srv):
    c = srv.client
    answers = [
        c.get("/api/v1/plugins/http_test_plugin/nope"),  # 404 ROUTE_NOT_FOUND
        c.get("/api/v1/plugins/http_test_plugin/hello", token=False),  # 401 UNAUTHORIZED
        c.post("/api/v1/plugins/http_test_plugin/echo", body=b"{", headers={"Content-Type": "application/json"}),
        c.post("/api/v1/plugins/http_test_plugin/echo", body=b"x" * (2**20 + 1)),  # 413 BODY_TOO_LARGE
    ]
    assert [a.status for a in answers] == [404, 401, 400, 413]
    for a in answers:
        jsonschema.validate(a.json(), _plugin_answer_schema(a.status), cls=jsonschema.Draft202012Validator)
        assert a.headers["x-request-id"] == a.json()["error"]["request_id"]
    # a code documented under another status fails the check: the schema narrows the codes per status
    wrong = {"error": {"code": "HANDLER_ERROR", "message": "x", "request_id": "y"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong, _plugin_answer_schema(404), cls=jsonschema.Draft202012Validator)


def test_every_plugin_error_code_is_documented_under_its_status():
    from modula_desktop.core.plugins.api.http import ROUTE_ERRORS

    responses = document()["paths"][PLUGIN_PATH]["get"]["responses"]
    described = document()["paths"][PLUGIN_PATH]["get"]["description"]
    for code, (status, _message) in ROUTE_ERRORS.items():
        if code in ("MISDIRECTED_REQUEST", "METHOD_NOT_ALLOWED"):  # not for a documented method and Host
            assert f"{status} `{code}`" in described
            continue
        enum = responses[str(status)]["content"]["application/json"]["schema"]["allOf"][1]
        assert code in enum["properties"]["error"]["properties"]["code"]["enum"], code
        assert f"`{code}`" in responses[str(status)]["description"]
