"""Status codes of plugin routes that need special settings: rate limit, body limits, plugin state,
breaker, VM pool, handler timeout and errors (SPEC 5), against a real waitress server."""
from __future__ import annotations

import threading
import time

import pytest

from _server_fixtures import running_site, wait_for
from helpers import logged, route_error

F = "/api/v1/plugins/faulty"


def test_rate_limit_429_with_retry_after(tmp_path):
    with running_site(tmp_path, {"rate_limit": 5.0, "rate_burst": 5}, plugins=("http_test_plugin",)) as r:
        c = r.client
        c.approve_all("http_test_plugin")
        statuses = [c.get("/api/v1/plugins/http_test_plugin/hello").status for _ in range(8)]
        assert statuses[:5] == [200] * 5
        assert 429 in statuses[5:]
        limited = c.get("/api/v1/plugins/http_test_plugin/hello")
        assert limited.status == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert route_error(limited)["code"] == "RATE_LIMITED"
        # other endpoints are not rate limited, and unknown routes answer 404 before the limit
        assert c.get("/api/v1/health").status == 200
        assert c.get("/api/v1/plugins/http_test_plugin/nope").status == 404
        time.sleep(0.45)  # 5/s: two tokens back
        assert c.get("/api/v1/plugins/http_test_plugin/hello").status == 200


def test_small_body_limit_and_response_limit(tmp_path):
    with running_site(tmp_path, {"max_request_body": 1024, "max_response_body": 1000},
                      plugins=("http_test_plugin", "faulty")) as r:
        c = r.client
        c.approve_all("http_test_plugin")
        c.approve_all("faulty")
        echo = "/api/v1/plugins/http_test_plugin/echo"
        assert c.post(echo, json={"x": "a" * 900}).status == 200
        big = c.post(echo, json={"x": "a" * 2000})
        assert big.status == 413 and route_error(big)["code"] == "BODY_TOO_LARGE"
        # public routes have the same limit
        assert c.post("/api/v1/plugins/http_test_plugin/webhook", body=b"x" * 1025, token=False).status == 413
        # admin bodies too
        assert c.post("/api/v1/admin/content", json={"title": "x" * 2000}).status == 413
        assert c.get(f"{F}/big?n=1000").status == 200
        r2 = c.get(f"{F}/big?n=1001")
        assert r2.status == 500
        too_large = route_error(r2)
        assert too_large["code"] == "RESPONSE_TOO_LARGE"
        assert "response too large" in logged(r.service.logbook, "faulty", too_large["request_id"])
        assert r2.headers["content-type"] == "application/json"


def test_plugin_errors_are_500_with_json(tmp_path):
    with running_site(tmp_path, {"max_failures": 100}, plugins=("faulty",)) as r:
        c = r.client
        c.approve_all("faulty")
        err = c.get(f"{F}/fail")
        assert err.status == 500
        # ModulaCMS's answer; the Lua error's text only in the plugin's log, under the answer's id
        error = route_error(err)
        assert (error["code"], error["message"]) == ("HANDLER_ERROR", "internal plugin error")
        assert "deliberate failure" not in err.body.decode()
        assert "deliberate failure" in logged(r.service.logbook, "faulty", error["request_id"])
        # the plugin manager's log view shows the entry with the id a client would report
        from modula_desktop.gui.plugin_manager import format_log_entry

        entry = next(e for e in r.service.logbook.entries("faulty") if "deliberate failure" in e["message"])
        shown = format_log_entry(entry)
        assert "deliberate failure" in shown and error["request_id"] in shown
        assert err.headers["x-content-type-options"] == "nosniff"
        for code in (99, 100, 700, 1.5):
            bad = c.get(f"{F}/status?code={code}")
            assert bad.status == 500, code
            assert route_error(bad)["code"] == "HANDLER_ERROR"
        for code in (201, 299, 404, 418, 503):
            assert c.get(f"{F}/status?code={code}").status == code
        assert c.get(f"{F}/status?code=204").body == b""
        nan = c.get(f"{F}/nan")
        assert nan.status == 500 and route_error(nan)["code"] == "HANDLER_ERROR"
        assert "json" in logged(r.service.logbook, "faulty", route_error(nan)["request_id"])
        inj = c.get(f"{F}/inject")
        assert inj.status == 200
        assert inj.headers["x-ok"] == "fine"
        assert "x-bad" not in inj.headers and "set-cookie" not in inj.headers
        text = c.get("/metrics").body.decode()
        assert 'modula_plugin_http_requests_total{plugin="faulty",route="GET /fail",status="500"} 1.0' in text


def test_disabled_plugin_is_503_and_enable_brings_it_back(tmp_path):
    with running_site(tmp_path, plugins=("http_test_plugin",)) as r:
        c = r.client
        c.approve_routes("http_test_plugin", "GET /hello")
        hello = "/api/v1/plugins/http_test_plugin/hello"
        unknown = c.get("/api/v1/plugins/http_test_plugin/nope").comparable()
        assert c.post("/api/v1/admin/plugins/http_test_plugin/disable").json()["state"] == "stopped"
        off = c.get(hello)
        assert off.status == 503
        assert route_error(off)["code"] == "PLUGIN_UNAVAILABLE" and "not running" in route_error(off)["message"]
        # an unapproved route of a disabled plugin is still just unknown
        assert c.get("/api/v1/plugins/http_test_plugin/items/1").comparable() == unknown
        assert c.post("/api/v1/admin/plugins/http_test_plugin/reload").status == 409
        assert c.post("/api/v1/admin/plugins/http_test_plugin/enable").json()["state"] == "running"
        assert c.get(hello).status == 200


def test_breaker_opens_503_then_enable_resets(tmp_path):
    with running_site(tmp_path, {"max_failures": 2, "reset_interval_s": 60.0}, plugins=("faulty",)) as r:
        c = r.client
        c.approve_all("faulty")
        assert c.get(f"{F}/fail").status == 500
        assert c.get(f"{F}/fail").status == 500
        opened = c.get(f"{F}/ok")
        assert opened.status == 503
        assert route_error(opened)["code"] == "CIRCUIT_BREAKER_OPEN"
        assert "circuit breaker" in route_error(opened)["message"]
        assert 1 <= int(opened.headers["retry-after"]) <= 60
        info = c.get("/api/v1/admin/plugins/faulty").json()
        assert info["breaker"]["state"] == "open"
        assert c.post("/api/v1/admin/plugins/faulty/enable").status == 200
        assert c.get(f"{F}/ok").status == 200


def test_no_free_vm_is_503(tmp_path):
    with running_site(tmp_path, {"max_vms": 1, "hook_reserve_vms": 0, "timeout_s": 10.0}, plugins=("faulty",)) as r:
        c = r.client
        c.approve_all("faulty")
        slow = {}
        t = threading.Thread(target=lambda: slow.setdefault("r", c.get(f"{F}/spin?s=1.5")))
        t.start()
        try:
            assert wait_for(lambda: r.service.plugins.get("faulty").current.pool.stats()["busy"] == 1, 5)
            started = time.monotonic()
            busy = c.get(f"{F}/ok")
            waited = time.monotonic() - started
            assert busy.status == 503
            assert route_error(busy)["code"] == "POOL_EXHAUSTED" and "no VM free" in route_error(busy)["message"]
            assert busy.headers["retry-after"] == "1"
            assert waited < 1.0
        finally:
            t.join(10)
        assert slow["r"].status == 200
        assert c.get(f"{F}/ok").status == 200


def test_handler_timeout_is_504(tmp_path):
    with running_site(tmp_path, {"timeout_s": 0.5, "max_failures": 100}, plugins=("faulty",)) as r:
        c = r.client
        c.approve_all("faulty")
        started = time.monotonic()
        t = c.get(f"{F}/spin?s=5")
        assert t.status == 504
        timeout = route_error(t)
        assert (timeout["code"], timeout["message"]) == ("HANDLER_TIMEOUT", "plugin execution timed out")
        assert "time budget" in logged(r.service.logbook, "faulty", timeout["request_id"])
        assert time.monotonic() - started < 3
        assert c.get(f"{F}/ok").status == 200  # the broken VM was replaced
