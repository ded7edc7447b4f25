"""The local HTTP server against a real waitress server on a loopback port (SPEC 5)."""
from __future__ import annotations

import hmac
import json
import threading
import time

import pytest

from _server_fixtures import running_site, wait_for
from helpers import route_error

PLUGIN = "/api/v1/plugins"
HELLO = f"{PLUGIN}/http_test_plugin/hello"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with running_site(tmp_path_factory.mktemp("site")) as r:
        r.client.approve_all("http_test_plugin")
        r.client.approve_all("inspect")
        yield r


@pytest.fixture
def c(srv):
    return srv.client


# ---- basics ---------------------------------------------------------------------------------------
def test_health_and_security_headers(c):
    r = c.get("/api/v1/health", token=False)
    assert r.status == 200
    assert r.json() == {"status": "ok"}
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"


def test_bound_to_loopback_only(srv):
    assert srv.handle.host == "127.0.0.1"
    assert srv.handle.url == f"http://127.0.0.1:{srv.port}"


@pytest.mark.parametrize("host", ["evil.com:{port}", "evil.com", "127.0.0.1:{other}", "localhost:{other}",
                                  "127.0.0.1", "", "[::1]:{port}", "127.0.0.1.evil.com:{port}"])
def test_host_check_refuses_other_hosts(c, srv, host):
    host = host.format(port=srv.port, other=srv.port + 1 if srv.port < 65535 else 1)
    for path in ("/api/v1/health", HELLO, "/api/v1/admin/plugins", "/metrics"):
        r = c.get(path, host=host)
        assert r.status == 421, (host, path)
        assert "error" in r.json()


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}"])
def test_host_check_accepts_loopback_names(c, srv, host):
    assert c.get("/api/v1/health", host=host.format(port=srv.port)).status == 200


def test_request_without_host_header_is_refused(c):
    out = c.raw(b"GET /api/v1/health HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.0 421") or out.startswith(b"HTTP/1.1 421")


# ---- plugin routes: lookup, approval, auth ----------------------------------------------------
def test_approved_route_answers(c):
    r = c.get(HELLO + "?name=Ada")
    assert r.status == 200
    assert r.json() == {"message": "Hello, Ada!", "middleware": True}
    assert r.headers["x-content-type-options"] == "nosniff"


def test_unknown_and_unapproved_answer_identically(c):
    c.revoke_routes("http_test_plugin", "GET /items/{id}")
    try:
        answers = [
            c.get(f"{PLUGIN}/http_test_plugin/items/1"),  # declared, not approved
            c.get(f"{PLUGIN}/http_test_plugin/nothing"),  # unknown route
            c.get(f"{PLUGIN}/no_such_plugin/hello"),  # unknown plugin
            c.get(f"{PLUGIN}/faulty/ok"),  # a plugin none of whose routes is approved
            c.get(f"{PLUGIN}/http_test_plugin/items/1", token=False),  # no token changes nothing
            c.get(f"{PLUGIN}"),
            c.get(f"{PLUGIN}/"),
        ]
        first = answers[0].comparable()
        assert first[0] == 404
        assert json.loads(first[2]) == {"error": {"code": "ROUTE_NOT_FOUND", "request_id": "<request-id>",
                                                  "message": "the requested plugin endpoint does not exist"}}
        for a in answers[1:]:
            assert a.comparable() == first
    finally:
        c.approve_routes("http_test_plugin", "GET /items/{id}")


def test_approve_then_revoke_through_admin_api(c):
    url = f"{PLUGIN}/faulty/ok"
    unknown = c.get(f"{PLUGIN}/faulty/does-not-exist").comparable()
    assert c.get(url).comparable() == unknown
    c.approve_routes("faulty", "GET /ok")
    assert c.get(url).status == 200
    listed = c.get("/api/v1/admin/plugins/routes").json()["routes"]
    assert {"plugin": "faulty", "method": "GET", "path": "/ok", "public": False, "approved": True,
            "state": "running"} in listed
    c.revoke_routes("faulty", "GET /ok")
    assert c.get(url).comparable() == unknown


def test_token_required_for_non_public_routes(c):
    for token in (False, "Bearer wrong", "Bearer " + c.token + "x", c.token, "Basic " + c.token, "Bearer"):
        r = c.get(HELLO, token=token)
        assert r.status == 401, token
        assert r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
    assert c.get(HELLO, token="bearer " + c.token).status == 200


def test_public_route_needs_no_token(c):
    r = c.post(f"{PLUGIN}/http_test_plugin/webhook", body=b"{}", token=False)
    assert r.status == 202
    assert r.json() == {"accepted": True}


def test_token_compare_is_constant_time(c, monkeypatch):
    from modula_desktop.server import auth

    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert c.get(HELLO, token="Bearer nope").status == 401
    assert c.get("/api/v1/admin/plugins", token="Bearer nope").status == 401
    # the whole header is compared first (the usual spelling), then the parsed token: both in constant time
    token = c.token.encode()
    assert len(calls) >= 4 and all(b in (token, b"Bearer " + token) for _, b in calls)
    assert {b for _, b in calls} == {token, b"Bearer " + token}


# ---- the request table ------------------------------------------------------------------------------
@pytest.fixture(params=["c", "python"])
def headers_impl(request, monkeypatch):
    """The request headers flattened by the C helper (when built) or by wsgi_headers alone."""
    from modula_desktop.server import plugin_routes
    if request.param == "c" and plugin_routes._flat_headers is None:
        pytest.skip("the C bridge is not built here")
    if request.param == "python":
        monkeypatch.setattr(plugin_routes, "_flat_headers", None)
    return request.param


def test_request_table(c, headers_impl):
    r = c.request("POST", f"{PLUGIN}/inspect/req?a=1&b=two&a=3&empty=&sp=%20x", json={"k": [1, 2]},
                  headers={"X-Custom-Thing": "Value", "User-Agent": "tests"})
    assert r.status == 200, r.body
    req = r.json()
    assert req["method"] == "POST"
    assert req["path"] == f"{PLUGIN}/inspect/req"
    assert req["client_ip"] == "127.0.0.1"
    assert req["headers"]["x-custom-thing"] == "Value"
    assert req["headers"]["user-agent"] == "tests"
    assert req["headers"]["content-type"] == "application/json"
    assert all(k == k.lower() for k in req["headers"])
    assert req["query"] == {"a": "1", "b": "two", "empty": "", "sp": " x"}
    assert req["json"] == {"k": [1, 2]}
    assert json.loads(req["body"]) == {"k": [1, 2]}


def test_admin_token_is_never_handed_to_plugins(c, headers_impl):
    req = c.get(f"{PLUGIN}/inspect/req").json()
    assert "authorization" not in req["headers"]
    assert c.token not in json.dumps(req)
    # a public route: the client's own Authorization passes, the admin token does not
    c.approve_routes("inspect", "POST /public")
    own = c.post(f"{PLUGIN}/inspect/public", body=b"x", token="Bearer webhook-secret").json()
    assert own["headers"]["authorization"] == "Bearer webhook-secret"
    admin = c.post(f"{PLUGIN}/inspect/public", body=b"x").json()
    assert "authorization" not in admin["headers"]


def test_path_params(c):
    req = c.request("PUT", f"{PLUGIN}/inspect/req/hello%20world/x/42/", body=b"").json()
    assert req["params"] == {"a": "hello world", "b": "42"}


def test_json_only_for_application_json(c):
    r = c.post(f"{PLUGIN}/inspect/req", body=b'{"a": 1}', headers={"Content-Type": "text/plain"})
    req = r.json()
    assert req["has_json"] is False
    assert req["body"] == '{"a": 1}'
    r = c.post(f"{PLUGIN}/inspect/req", body=b'{"a": 1}', headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.json()["json"] == {"a": 1}


def test_bad_json_is_400_before_plugin_code(c, srv):
    before = srv.service.metrics.sample("modula_plugin_http_requests_total", plugin="http_test_plugin",
                                        route="POST /echo", status="200")
    r = c.post(f"{PLUGIN}/http_test_plugin/echo", body=b'{"broken": ', headers={"Content-Type": "application/json"})
    assert r.status == 400
    assert route_error(r)["code"] == "INVALID_REQUEST" and "not valid JSON" in route_error(r)["message"]
    deep = b"[" * 100_000 + b"]" * 100_000
    r = c.post(f"{PLUGIN}/http_test_plugin/echo", body=deep, headers={"Content-Type": "application/json"})
    assert r.status == 400
    after = srv.service.metrics.sample("modula_plugin_http_requests_total", plugin="http_test_plugin",
                                       route="POST /echo", status="200")
    assert after == before


def test_json_too_deep_for_lua_is_400_and_never_trips_the_breaker(c, srv):
    # 100 levels parse as JSON but cannot become Lua values (64 at most): the client's fault, not the plugin's
    deep = b"[" * 100 + b"1" + b"]" * 100
    plugin = srv.service.plugins.get("http_test_plugin")
    for _ in range(plugin.breaker.max_failures + 2):
        r = c.post(f"{PLUGIN}/http_test_plugin/echo", body=deep, headers={"Content-Type": "application/json"})
        assert r.status == 400
    assert plugin.breaker.state == "closed"
    assert c.post(f"{PLUGIN}/http_test_plugin/echo", json={"x": 1}).status == 200


def test_echo_json(c):
    r = c.post(f"{PLUGIN}/http_test_plugin/echo", json={"x": "é", "n": 3})
    assert r.status == 200
    assert r.json()["received"] == {"x": "é", "n": 3}


def test_middleware_short_circuits(c):
    r = c.get(HELLO, headers={"X-Block-Me": "yes"})
    assert r.status == 403
    assert "middleware" in r.json()["error"]


# ---- responses ------------------------------------------------------------------------------------
def test_blocked_response_headers_are_stripped(c):
    r = c.get(f"{PLUGIN}/http_test_plugin/headers")
    assert r.status == 200
    assert r.body == b"headers test"
    assert r.headers["x-plugin"] == "http_test_plugin"
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    names = [k.lower() for k, _ in r.raw_headers]
    assert "set-cookie" not in names
    assert not any(n.startswith("access-control-") for n in names)
    assert "transfer-encoding" not in names
    assert names.count("cache-control") == 1 and r.headers["cache-control"] == "no-store"
    assert r.headers["content-length"] == str(len(r.body))
    assert r.headers.get("connection", "").lower() != "close"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"


def test_item_route_with_parameter(c):
    assert c.get(f"{PLUGIN}/http_test_plugin/items/42").json() == {"id": 42, "name": "item 42"}
    assert c.get(f"{PLUGIN}/http_test_plugin/items/abc").status == 404


# ---- body limits ------------------------------------------------------------------------------------
def test_request_body_limit(srv, c):
    limit = srv.service.settings.plugins.max_request_body
    ok = c.post(f"{PLUGIN}/inspect/req", body=b"x" * limit)
    assert ok.status == 200
    r = c.post(f"{PLUGIN}/inspect/req", body=b"x" * (limit + 1))
    assert r.status == 413
    assert route_error(r)["code"] == "BODY_TOO_LARGE" and "larger than" in route_error(r)["message"]


def test_declared_length_over_limit_is_refused_without_reading(srv, c):
    limit = srv.service.settings.plugins.max_request_body
    head = (f"POST {PLUGIN}/inspect/req HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
            f"Authorization: Bearer {c.token}\r\nContent-Length: {limit * 100}\r\n\r\n").encode()
    out = c.raw(head + b"x" * 1000)
    assert out.split(b"\r\n", 1)[0].split(b" ")[1] == b"413"


def test_chunked_body_over_limit(srv, c):
    limit = srv.service.settings.plugins.max_request_body
    chunk = b"x" * 65536
    n = limit // len(chunk) + 2
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(n)) + b"0\r\n\r\n"
    head = (f"POST {PLUGIN}/inspect/req HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
            f"Authorization: Bearer {c.token}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    out = c.raw(head + body)
    assert out.split(b"\r\n", 1)[0].split(b" ")[1] == b"413"


# ---- malformed requests ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", [
    "/api/v1/plugins/x/../../admin/plugins",
    "/api/v1/plugins/http_test_plugin/../../admin/plugins",
    "/api/v1/plugins/x/%2e%2e/%2e%2e/admin/plugins",
    "/api/v1/plugins/x/%2E%2E/admin",
    "/api/v1/plugins/http_test_plugin/./hello",
    "/api/v1/plugins/http_test_plugin%2fhello",
    "/api/v1/plugins/http_test_plugin/hello%5c..",
    "/api/v1/plugins/http_test_plugin/hello%00",
    "/api/v1/admin/plugins/../plugins",
])
def test_path_traversal_is_refused(c, path):
    r = c.get(path)
    assert r.status == 400, path
    assert "invalid path" in (route_error(r)["message"] if path.startswith(PLUGIN) else r.json()["error"])


def test_unknown_methods_are_refused(c):
    for method in ("FOO", "TRACE", "CONNECT", "PROPFIND"):
        r = c.request(method, HELLO)
        assert 400 <= r.status < 500 and r.status != 404, method
    r = c.request("HEAD", HELLO)
    assert r.status == 405
    r = c.request("OPTIONS", HELLO)
    assert r.status == 405


def test_bad_content_length_is_400(srv, c):
    head = (f"POST {PLUGIN}/inspect/req HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
            f"Authorization: Bearer {c.token}\r\nContent-Length: abc\r\n\r\n").encode()
    out = c.raw(head)
    assert out.split(b"\r\n", 1)[0].split(b" ")[1] == b"400"


def test_huge_headers_are_refused(c):
    r = c.get(HELLO, headers={"X-Big": "a" * 200_000})
    assert 400 <= r.status < 500


def test_garbage_request_line(c):
    out = c.raw(b"\x00\x01\x02 nonsense\r\n\r\n")
    assert out == b"" or out.split(b" ")[1].startswith(b"4")


# ---- admin API --------------------------------------------------------------------------------------
ADMIN_GETS = ["/api/v1/admin/plugins", "/api/v1/admin/plugins/http_test_plugin", "/api/v1/admin/plugins/routes",
              "/api/v1/admin/plugins/hooks", "/api/v1/admin/content", "/api/v1/admin/nothing-here", "/metrics"]
ADMIN_POSTS = ["/api/v1/admin/plugins/http_test_plugin/reload", "/api/v1/admin/plugins/http_test_plugin/enable",
               "/api/v1/admin/plugins/http_test_plugin/disable", "/api/v1/admin/plugins/routes/approve",
               "/api/v1/admin/plugins/routes/revoke", "/api/v1/admin/plugins/hooks/approve",
               "/api/v1/admin/plugins/hooks/revoke", "/api/v1/admin/content"]


@pytest.mark.parametrize("path", ADMIN_GETS)
def test_admin_get_needs_token(c, path):
    for token in (False, "Bearer nope"):
        r = c.get(path, token=token)
        assert r.status == 401
        assert r.json()["error"]


@pytest.mark.parametrize("path", ADMIN_POSTS)
def test_admin_post_needs_token(c, path):
    r = c.post(path, json={"routes": [{"plugin": "http_test_plugin", "method": "GET", "path": "/hello"}]},
               token=False)
    assert r.status == 401
    assert c.get(HELLO).status == 200  # nothing happened


def test_admin_plugin_list_and_detail(c):
    plugins = {p["name"]: p for p in c.get("/api/v1/admin/plugins").json()["plugins"]}
    assert plugins["http_test_plugin"]["state"] == "running"
    assert plugins["http_test_plugin"]["routes"] == 5
    info = c.get("/api/v1/admin/plugins/http_test_plugin").json()
    assert info["version"] == "1.0.0"
    assert info["permissions"] == ["http"]
    assert {"method": "POST", "path": "/webhook", "public": True, "approved": True} in info["routes"]
    assert info["breaker"]["state"] == "closed"
    assert info["pool"]["size"] == 4
    r = c.get("/api/v1/admin/plugins/nope")
    assert r.status == 404 and "nope" in r.json()["error"]


def test_admin_reload(c):
    r = c.post("/api/v1/admin/plugins/http_test_plugin/reload")
    assert r.status == 200, r.body
    assert r.json()["state"] == "running"
    assert c.get(HELLO).status == 200  # approvals survive a reload of the same version
    assert c.post("/api/v1/admin/plugins/nope/reload").status == 404


def test_admin_hooks_list(c):
    hooks = c.get("/api/v1/admin/plugins/hooks").json()["hooks"]
    assert {"plugin": "guard", "event": "before_create", "table": "content", "priority": 100,
            "approved": False, "disabled": False, "state": "running"} in hooks


@pytest.mark.parametrize("body,fragment", [
    ({}, 'body must be {"routes"'),
    ({"routes": []}, "at least one"),
    ({"routes": "GET /hello"}, 'body must be {"routes"'),
    ({"routes": ["GET /hello"]}, "routes[0] must be an object"),
    ({"routes": [{"plugin": "http_test_plugin", "method": "GET"}]}, "routes[0].path"),
    ({"routes": [{"plugin": "http_test_plugin", "method": "BREW", "path": "/hello"}]}, "routes[0].method"),
    ({"routes": [{"plugin": "nope", "method": "GET", "path": "/hello"}]}, "no plugin named 'nope'"),
    ({"routes": [{"plugin": "http_test_plugin", "method": "GET", "path": "/nope"}]}, "has no route GET /nope"),
    ({"routes": [{"plugin": "http_test_plugin", "method": "GET", "path": 5}]}, "routes[0].path"),
])
def test_admin_route_approval_bodies_are_validated(c, body, fragment):
    r = c.post("/api/v1/admin/plugins/routes/approve", json=body)
    assert r.status == 400
    assert fragment in r.json()["error"]


@pytest.mark.parametrize("body,fragment", [
    ({"hooks": [{"plugin": "guard", "event": "before_lunch", "table": "content"}]}, "not a hook event"),
    ({"hooks": [{"plugin": "guard", "event": "before_create", "table": ""}]}, "table must be a non-empty string"),
    # any other name is a table name as in ModulaCMS: refused only because guard declares no such hook
    ({"hooks": [{"plugin": "guard", "event": "before_create", "table": "users"}]}, "has no hook before_create:users"),
    ({"hooks": [{"plugin": "guard", "event": "after_create", "table": "content"}]}, "has no hook"),
    ({"routes": []}, 'body must be {"hooks"'),
])
def test_admin_hook_approval_bodies_are_validated(c, body, fragment):
    r = c.post("/api/v1/admin/plugins/hooks/approve", json=body)
    assert r.status == 400
    assert fragment in r.json()["error"]


def test_admin_bodies_must_be_json(c):
    url = "/api/v1/admin/plugins/routes/approve"
    r = c.post(url, body=b"routes=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 415
    r = c.post(url, body=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status == 400 and "not valid JSON" in r.json()["error"]
    r = c.post(url, body=b"[1, 2]", headers={"Content-Type": "application/json"})
    assert r.status == 400 and "JSON object" in r.json()["error"]
    r = c.post(url, body=b"")
    assert r.status == 400


# ---- content --------------------------------------------------------------------------------------
def test_content_crud(c):
    r = c.post("/api/v1/admin/content", json={"title": "Hello HTTP", "body": "Some *text*", "type": "post"})
    assert r.status == 201, r.body
    entry = r.json()
    assert entry["title"] == "Hello HTTP" and entry["status"] == "draft" and entry["slug"] == "hello-http"
    assert r.headers["location"].endswith(f"/api/v1/admin/content/{entry['id']}")
    url = f"/api/v1/admin/content/{entry['id']}"
    assert c.get(url).json() == entry
    items = c.get("/api/v1/admin/content?type=post").json()["items"]
    assert entry["id"] in [i["id"] for i in items]
    assert c.get("/api/v1/admin/content?search=Hello%20HTTP&limit=5").json()["items"][0]["id"] == entry["id"]
    r = c.request("PUT", url, json={"title": "Hello again"})
    assert r.status == 200 and r.json()["title"] == "Hello again"
    r = c.post(url + "/publish")
    assert r.status == 200 and r.json()["status"] == "published"
    r = c.post(url + "/unpublish")
    assert r.status == 200 and r.json()["status"] == "draft"
    r = c.request("DELETE", url)
    assert r.status == 200 and r.json()["id"] == entry["id"]
    assert c.get(url).status == 404
    assert c.request("DELETE", url).status == 404
    assert c.post(url + "/publish").status == 404


def test_content_errors(c):
    r = c.post("/api/v1/admin/content", json={"type": "novel", "title": "x"})
    assert r.status == 400 and "type" in r.json()["error"]
    r = c.post("/api/v1/admin/content", json={"title": "x", "colour": "red"})
    assert r.status == 400
    assert c.get("/api/v1/admin/content?limit=abc").status == 400
    assert c.get("/api/v1/admin/content?limit=0").status == 400
    r = c.post("/api/v1/admin/content", body=b"title=x", headers={"Content-Type": "text/plain"})
    assert r.status == 415
    assert c.get("/api/v1/admin/content/nope").status == 404


def test_before_hook_abort_is_422(c):
    # unapproved: the hook never runs
    r = c.post("/api/v1/admin/content", json={"title": "A forbidden title"})
    assert r.status == 201
    c.request("DELETE", f"/api/v1/admin/content/{r.json()['id']}")
    r = c.post("/api/v1/admin/plugins/hooks/approve",
               json={"hooks": [{"plugin": "guard", "event": "before_create", "table": "content_data"}]})
    assert r.status == 200, r.body
    assert r.json()["hooks"] == [{"plugin": "guard", "event": "before_create", "table": "content", "approved": True}]
    try:
        r = c.post("/api/v1/admin/content", json={"title": "Another forbidden title"})
        assert r.status == 422
        assert r.json() == {"error": "titles may not contain 'forbidden'"}
        assert c.post("/api/v1/admin/content", json={"title": "Allowed"}).status == 201
    finally:
        c.post("/api/v1/admin/plugins/hooks/revoke",
               json={"hooks": [{"plugin": "guard", "event": "before_create", "table": "content"}]})


# ---- preview --------------------------------------------------------------------------------------
def test_preview_renders_markdown_and_escapes_html(c):
    body = "# Heading\n\nSome **bold** text.\n\n<script>alert(1)</script>\n\n[x](javascript:alert(1))"
    r = c.post("/api/v1/admin/content", json={"title": "Preview <me>", "slug": "preview-me", "body": body,
                                             "status": "published"})
    assert r.status == 201, r.body
    page = c.get("/preview/preview-me", token=False)
    assert page.status == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.body.decode()
    assert "<h1>Heading</h1>" in html
    assert "<strong>bold</strong>" in html
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "href=\"javascript:" not in html and "<p>[x](javascript:alert(1))</p>" in html
    assert "<title>Preview &lt;me&gt;</title>" in html
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


def test_preview_of_drafts_needs_the_token_or_key(c, srv):
    r = c.post("/api/v1/admin/content", json={"title": "Secret draft", "slug": "secret-draft", "body": "shh"})
    assert r.status == 201
    unknown = c.get("/preview/no-such-slug", token=False)
    assert unknown.status == 404 and unknown.headers["content-type"].startswith("text/html")
    hidden = c.get("/preview/secret-draft", token=False)
    assert hidden.comparable() == unknown.comparable()
    assert c.get("/preview/secret-draft?key=wrong", token=False).comparable() == unknown.comparable()
    with_token = c.get("/preview/secret-draft")
    assert with_token.status == 200 and b"shh" in with_token.body and b"Draft" in with_token.body
    url = srv.handle.preview_url("secret-draft")
    assert url.startswith(srv.handle.url + "/preview/secret-draft?key=")
    by_key = c.get(url[len(srv.handle.url):], token=False)
    assert by_key.status == 200 and b"shh" in by_key.body
    # a key opens its own slug only
    other = c.post("/api/v1/admin/content", json={"title": "Other draft", "slug": "other-draft"})
    assert other.status == 201
    key = url.split("key=")[1]
    assert c.get(f"/preview/other-draft?key={key}", token=False).status == 404


# ---- metrics --------------------------------------------------------------------------------------
def test_metrics(c):
    c.get(HELLO)
    c.get(HELLO, token=False)
    r = c.get("/metrics")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.body.decode()
    assert 'modula_plugin_http_requests_total{plugin="http_test_plugin",route="GET /hello",status="200"}' in text
    assert 'modula_plugin_http_requests_total{plugin="http_test_plugin",route="GET /hello",status="401"}' in text
    assert 'modula_plugin_http_request_duration_seconds_count{plugin="http_test_plugin"}' in text
    assert c.get("/metrics", token=False).status == 401


# ---- graceful stop ----------------------------------------------------------------------------------
def test_stop_finishes_requests_in_flight(tmp_path):
    with running_site(tmp_path / "s", plugins=("faulty",)) as r:
        r.client.approve_routes("faulty", "GET /spin")
        result = {}

        def slow():
            result["r"] = r.client.get(f"{PLUGIN}/faulty/spin?s=0.8")

        t = threading.Thread(target=slow)
        t.start()
        assert wait_for(lambda: r.service.plugins.get("faulty").current.pool.stats()["busy"] == 1, 5)
        r.handle.stop(timeout=10)
        t.join(10)
        assert result["r"].status == 200
        assert result["r"].json() == {"spun": 0.8}
        with pytest.raises(OSError):
            r.client.get("/api/v1/health", timeout=2)


def test_preview_title_heading_is_not_doubled(c):
    c.post("/api/v1/admin/content", json={"title": "Plain", "slug": "plain-body", "body": "just text",
                                         "status": "published"})
    c.post("/api/v1/admin/content", json={"title": "Own heading", "slug": "own-heading", "body": "# Big\n\ntext",
                                         "status": "published"})
    plain = c.get("/preview/plain-body", token=False).body.decode()
    assert '<h1 class="title">Plain</h1>' in plain
    own = c.get("/preview/own-heading", token=False).body.decode()
    assert own.count("<h1") == 1 and "<h1>Big</h1>" in own


# ---- the plugin dispatcher answers its errors like the Falcon app, in ModulaCMS's envelope ----------
def _same_answer(r):
    """status, headers but the length and the request id, and the error's text (the plugin path's in
    the envelope, the Falcon app's in its own shape)."""
    status, headers, body = r.comparable()
    error = json.loads(body)["error"]
    message = error["message"] if isinstance(error, dict) else error
    return status, sorted((k.lower(), v) for k, v in headers if k.lower() not in ("content-length", "x-request-id")), message


@pytest.mark.parametrize("case", ["wrong_host", "unknown_method", "dot_segment", "encoded_slash",
                                  "unknown_route", "head_unknown_route"])
def test_plugin_path_errors_are_byte_for_byte_those_of_the_falcon_app(c, srv, case):
    # the same mistake sent to a Falcon route and to a plugin path
    falcon_path, plugin_path = "/api/v1/nothing/here", f"{PLUGIN}/http_test_plugin/nothing"
    kw, method = {}, "GET"
    if case == "wrong_host":
        kw = {"host": "evil.example"}
    elif case == "unknown_method":
        method = "PROPFIND"
    elif case == "dot_segment":
        falcon_path, plugin_path = "/api/v1/a/./b", f"{PLUGIN}/a/./b"
    elif case == "encoded_slash":
        falcon_path, plugin_path = "/api/v1/a%2Fb", f"{PLUGIN}/a%2Fb"
    elif case == "head_unknown_route":
        method = "HEAD"
    falcon_answer = c.request(method, falcon_path, token=False, **kw)
    plugin_answer = c.request(method, plugin_path, token=False, **kw)
    if case == "head_unknown_route":  # HEAD is not a plugin method at all: 405 (Falcon: 404)
        assert plugin_answer.status == 405 and plugin_answer.body == b""
        assert plugin_answer.headers["allow"] == "GET, POST, PUT, DELETE, PATCH"
        return
    assert falcon_answer.status in (400, 404, 405, 421)
    expected_code = {"wrong_host": "MISDIRECTED_REQUEST", "unknown_method": "METHOD_NOT_ALLOWED",
                     "dot_segment": "INVALID_REQUEST", "encoded_slash": "INVALID_REQUEST",
                     "unknown_route": "ROUTE_NOT_FOUND"}[case]
    assert route_error(plugin_answer)["code"] == expected_code
    if case == "unknown_route":  # ModulaCMS's sentence, not Falcon's "not found"
        assert _same_answer(plugin_answer)[:2] == _same_answer(falcon_answer)[:2]
        assert route_error(plugin_answer)["message"] == "the requested plugin endpoint does not exist"
    else:
        assert _same_answer(plugin_answer) == _same_answer(falcon_answer)


def test_plugin_route_answers_carry_falcon_framing_and_the_security_headers(c):
    r = c.get(HELLO)
    assert r.status == 200
    assert r.headers["content-length"] == str(len(r.body))
    for name, value in (("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"),
                        ("cache-control", "no-store")):
        assert r.headers[name] == value
    head = c.request("HEAD", HELLO)
    assert head.status == 405 and head.body == b""
    bad = c.request("POST", f"{PLUGIN}/inspect/req", body=b"{", headers={"Content-Type": "application/json"})
    assert bad.status == 400 and route_error(bad)["message"].startswith("request body is not valid JSON")
    assert bad.headers["content-type"] == "application/json" and bad.headers["cache-control"] == "no-store"
