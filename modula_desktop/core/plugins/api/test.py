"""The `test` module of the plugin API (SPEC 3.9), installed only under `modula plugin test`: test.request,
test.fire, test.mock_request and the assertions (the Lua half is ../lua/testing.lua)."""
from __future__ import annotations

import json
import urllib.parse

from ...settings import PluginSettings
from ..errors import ApiError
from ..runtime.sandbox import _lua_source
from ..runtime.vm import EVENTS, HOOK_TABLES, PluginVM
from .http import BLOCKED_HEADERS, RouteTable, new_request_id
from .outbound import OutboundClient


def install_test_module(vm: PluginVM, routes, hooks, mock: "MockOutbound"):
    """Install the test module in vm; returns the trusted runner that calls setup, a test, teardown."""
    sb = vm.sandbox
    table = RouteTable(routes)

    def match(method, p):
        found = table.match(method, p)
        if not found:
            return None
        return found[0].index, found[1]

    def hooks_for(event, table):
        table = HOOK_TABLES.get(table, table)
        chosen = [h for h in hooks if h.event == event and h.table in (table, "*")]
        chosen.sort(key=lambda h: (*h.rank, h.index))
        return [h.index for h in chosen]

    host = sb.raw_host_table({
        "match": sb.fn("bind")(sb.host_function(match, name="test.request")),
        "hooks_for": sb.fn("bind")(sb.host_function(hooks_for, name="test.fire")),
        "prefix": f"/api/v1/plugins/{vm.name}".encode(),
        "mock": sb.fn("bind")(sb.host_function(mock.add_rule, name="test.mock_request")),
        "in_before_hook": sb.fn("bind")(sb.host_function(
            lambda on: setattr(vm, "current_call", TEST_BEFORE_HOOK if on else None), name="test.fire")),
        "events": sb.to_lua(list(EVENTS)),
        "blocked_headers": sb.to_lua(sorted(BLOCKED_HEADERS)),
        "request_id": sb.fn("bind")(sb.host_function(new_request_id, name="test.request")),
        # as served: a handler's error goes to the plugin's log under the answer's request id
        "log_error": sb.fn("bind")(sb.host_function(
            lambda message, request_id: vm._emit("error", message, {"request_id": request_id}),
            name="test.request")),
    })
    env = sb.fn("get_global")(b"_G")
    test_module, runner = sb.lua.execute(_lua_source("testing.lua"), sb.trusted, env, host, name="=testing",
                                         mode="t")
    sb.fn("install_module")(b"test", test_module)
    return runner


# PluginVM.current_call while test.fire runs a before-hook (request_api refuses outbound calls there)
TEST_BEFORE_HOOK = "test:before_hook"


class MockOutbound:
    """The request module under `modula plugin test`, as in ModulaCMS's harness: nothing goes to the
    network; test.mock_request(method, "host/path", {status=, json= | body=, headers=}) rules answer,
    first match wins, cleared before every test. Arguments are checked as the real client does."""

    def __init__(self, settings: PluginSettings):
        self._real = OutboundClient(settings)
        self.rules: list[tuple[str, str, dict]] = []

    def clear(self):
        self.rules = []

    def add_rule(self, method, pattern, response):
        if not isinstance(method, str) or not isinstance(pattern, str):
            raise ApiError("test.mock_request(method, url, response): method and url must be strings")
        if not isinstance(response, dict):
            response = {}
        self.rules.append((method.upper(), pattern, response))

    def prepare(self, method, url, opts):
        return self._real.prepare(method, url, opts)

    def send(self, plugin, request, approved, deadline=None):
        parts = urllib.parse.urlsplit(request["url"])
        host = (parts.hostname or "").lower()
        if not approved(host):
            return {"error": f"domain not approved: {host}"}
        host_path = parts.netloc.lower() + parts.path
        for method, pattern, response in self.rules:
            if method == request["method"] and pattern == host_path:
                return self._answer(response)
        return {"error": f"mock: no rule matched {request['method']} {request['url']}"}

    def send_all(self, plugin, requests, approved, deadline=None):
        return [self.send(plugin, r, approved, deadline) for r in requests]

    @staticmethod
    def _answer(response: dict) -> dict:
        status = response.get("status", 200)
        out = {"status": int(status) if isinstance(status, (int, float)) else 200,
               "headers": response.get("headers") if isinstance(response.get("headers"), dict) else {}}
        if "json" in response:
            out["json"] = response["json"]
            out["body"] = json.dumps(response["json"])
        else:
            out["body"] = response.get("body", "")
        return out
