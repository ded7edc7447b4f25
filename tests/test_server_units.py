"""Pieces of the server on their own: rate limiter, token checks, the app under falcon's TestClient,
and the runner's binding rules."""
from __future__ import annotations

import json
import socket

import falcon.testing
import pytest

from _server_fixtures import make_site
from modula_desktop.core.service import SiteService
from modula_desktop.core.settings import Settings
from modula_desktop.server import create_app, start_background
from modula_desktop.server.auth import TokenAuth
from modula_desktop.server.ratelimit import RateLimiter
from modula_desktop.server.runner import PortInUse, check_host


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_rate_limiter_bucket():
    clock = FakeClock()
    rl = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [rl.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = rl.acquire("a")
    assert wait == pytest.approx(0.5)
    assert rl.acquire("b") == 0.0  # per client
    clock.now += 0.5
    assert rl.acquire("a") == 0.0
    assert rl.acquire("a") > 0
    clock.now += 100
    assert [rl.acquire("a") for _ in range(3)] == [0.0] * 3  # never more than the burst
    assert rl.acquire("a") > 0


def test_rate_limiter_off_and_bounded():
    assert RateLimiter(0, 0).acquire("x") == 0.0
    clock = FakeClock()
    rl = RateLimiter(rate=10.0, burst=1, clock=clock, max_clients=100)
    for i in range(1000):
        rl.acquire(f"10.0.{i // 250}.{i % 250}")
        clock.now += 1
    assert len(rl._buckets) <= 101


def test_token_auth():
    auth = TokenAuth("s3cret")
    assert auth.check("Bearer s3cret")
    assert auth.check("bearer  s3cret ")
    for bad in (None, "", "Bearer", "Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret", "Bearer S3CRET",
                "Bearer s3cret\x00", "Bearer\ts3cret2", "XBearer s3cret", "Bearer s3cretBearer s3cret"):
        assert not auth.check(bad), bad
    # a token outside ASCII: the header arrives as latin-1 text of its UTF-8 bytes (WSGI)
    wide = TokenAuth("s\u00e9cret")
    assert wide.check("Bearer s\u00e9cret".encode().decode("latin-1"))
    assert not wide.check("Bearer s\u00e9cret")
    key = auth.preview_key("a-slug")
    assert auth.check_preview_key("a-slug", key)
    assert not auth.check_preview_key("b-slug", key)
    assert not auth.check_preview_key("a-slug", None)
    assert "s3cret" not in key
    with pytest.raises(ValueError):
        TokenAuth("")


@pytest.fixture
def service(tmp_path):
    site = make_site(tmp_path / "site", plugins=("http_test_plugin",))
    svc = SiteService(site, Settings().replace(plugins={"hot_reload": False})).start(hot_reload=False)
    yield svc
    svc.close()


def test_app_under_falcon_testclient(service):
    app = create_app(service, port=8642, token="tok")
    client = falcon.testing.TestClient(app)
    ok = client.simulate_get("/api/v1/health", headers={"Host": "127.0.0.1:8642"})
    assert ok.status_code == 200 and ok.json == {"status": "ok"}
    assert client.simulate_get("/api/v1/health", headers={"Host": "localhost:8642"}).status_code == 200
    bad = client.simulate_get("/api/v1/health", headers={"Host": "127.0.0.1:8643"})
    assert bad.status_code == 421 and "127.0.0.1:8642" in bad.json["error"]
    assert client.simulate_get("/api/v1/health").status_code == 421  # falcon's default host
    admin = client.simulate_get("/api/v1/admin/plugins", headers={"Host": "127.0.0.1:8642"})
    assert admin.status_code == 401
    admin = client.simulate_get("/api/v1/admin/plugins",
                                headers={"Host": "127.0.0.1:8642", "Authorization": "Bearer tok"})
    assert admin.status_code == 200
    assert [p["name"] for p in admin.json["plugins"]] == ["http_test_plugin"]


def test_unknown_paths_are_json_404(service):
    client = falcon.testing.TestClient(create_app(service, port=1, token="tok"))
    r = client.simulate_get("/nothing/here", headers={"Host": "127.0.0.1:1"})
    assert r.status_code == 404 and r.json == {"error": "not found"}
    plugin_404 = client.simulate_get("/api/v1/plugins/zzz/hello", headers={"Host": "127.0.0.1:1"})
    # the same status; plugin routes answer ModulaCMS's envelope (SPEC 3.5), the rest keeps its own shape
    assert plugin_404.status_code == 404
    error = plugin_404.json["error"]
    assert error["code"] == "ROUTE_NOT_FOUND" and plugin_404.headers["x-request-id"] == error["request_id"]


def test_check_host():
    assert check_host(None) == "127.0.0.1"
    assert check_host("127.0.0.1") == "127.0.0.1"
    assert check_host("localhost") == "127.0.0.1"
    for bad in ("0.0.0.0", "::", "192.168.1.10", "example.com", "::1"):
        with pytest.raises(ValueError, match="127.0.0.1"):
            check_host(bad)


def test_port_in_use_and_announce(service):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    try:
        with pytest.raises(PortInUse, match="already in use"):
            start_background(service, port=blocker.getsockname()[1])
    finally:
        blocker.close()
    handle = start_background(service, port=0, announce=True)
    try:
        info = json.loads(service.site.server_info_path.read_text())
        assert info["port"] == handle.port and info["host"] == "127.0.0.1"
        assert service.site.read_server_info()["port"] == handle.port
    finally:
        handle.stop()
    assert not service.site.server_info_path.exists()
    handle.stop()  # idempotent


def test_the_prebuilt_json_encoder_answers_like_the_standard_one():
    from modula_desktop.server.plugin_routes import _ENCODE_JSON, _encode_json

    values = [{"a": 1}, [1, 2.5, None, True, "é\n\u2028\x7f\x00"], "x", 1, 1e300, -0.0, {"k": {"n": [1, {}]}},
              {1: "a", 2.5: "b", True: "c"}, float("nan"), {"x": float("inf")}, object(), {(1,): 2}]
    for value in values:
        answers = []
        for encode in (_encode_json, _ENCODE_JSON):
            try:
                answers.append(encode(value))
            except (TypeError, ValueError) as exc:
                answers.append(f"{type(exc).__name__}: {exc}")
        assert answers[0] == answers[1], value
