"""Packed responses (bootstrap.lua: route_caller). The VM encodes the common JSON answers itself and
hands them back in one string; everything else goes through route_results and the host's encoder. The
two paths must give the same bytes for the same value. Here a real server serves each value twice:
from /fast, which may be packed, and from /slow, whose extra response header always takes the host's
path. The test then compares the two answers."""
from __future__ import annotations

import random

import pytest

from _server_fixtures import running_site
from helpers import route_error

from modula_desktop.core.plugins.runtime import sandbox as sandbox_module

# Lua expressions, each the json of a response. Some are packed, some are not (floats, non-ASCII
# or escaped text, mixed or sparse keys, too deep, too large), and some are errors.
CASES = [
    '{status = "ok"}', "{}", "{1, 2, 3}", "{{}, {{}}, {a = {}}}", "{a = {b = {c = {d = {}}}}}",
    "{true, false}", "{n = math.maxinteger, m = math.mininteger, z = 0, neg = -17}",
    '"plain"', '""', "5", "-5", "true", "false", "1.5", "1.0", "-0.0", "1e300", "2^53", "0/0", "1/0",
    '{s = "a\\"b"}', '{s = "back\\\\slash"}', '{s = "tab\\there"}', '{s = "nl\\n"}', '{s = "nul\\0x"}',
    '{s = "del\\127"}', '{s = "caf\\195\\169"}', '{s = "bad\\255utf8"}', '{s = "\\226\\130"}',
    '{["a\\"b"] = 1}', '{["caf\\195\\169"] = 1}', '{[""] = 1}', '{["\\1"] = 1}',
    "{1, a = 2}", "{[1] = 1, [3] = 3}", "{[0] = 1}", "{[-1] = 1}", "{[2] = 2}", "{[1.5] = 1}",
    "{[true] = 1}", "{[1] = 'a', [2] = 'b'}", "{x = 1.25, y = {1, 2.5}}",
    "setmetatable({a = 1}, {__index = function() return 'meta' end, __pairs = function() error('no') end})",
    "setmetatable({}, {__len = function() return 5 end})",
    "(function() local t = {} t.self = t return t end)()",
    "(function() local t = {} local c = t for i = 1, 20 do c.x = {} c = c.x end return t end)()",
    "(function() local t = {} for i = 1, 600 do t[i] = i end return t end)()",
    "(function() local t = {} for i = 1, 100 do t['k' .. i] = {i, 'v' .. i, i % 2 == 0} end return t end)()",
    'string.rep("x", 70000)', '{s = string.rep("y", 60000)}', '{s = string.rep("y", 70000)}',
    # at the packing limits: 512 items and 65536 bytes of JSON pack, one more does not
    "(function() local t = {} for i = 1, 512 do t[i] = i end return t end)()",
    "(function() local t = {} for i = 1, 513 do t[i] = i end return t end)()",
    'string.rep("z", 65534)', 'string.rep("z", 65535)',
    "{f = function() end}", "{c = coroutine.create(function() end)}",
]

_TEXT = 'abcXYZ019 -_.~!#$%&()*+,/:;<=>?@[]^`{|}' + '"\\'


def _random_value(rng: random.Random, depth: int = 0) -> str:
    """A random Lua expression of the shapes a handler returns: mostly packable, sometimes not."""
    roll = rng.random()
    if depth > 3 or roll < 0.45:
        kind = rng.choice(["int", "int", "str", "str", "bool", "float"])
        if kind == "int":
            return str(rng.randint(-10**12, 10**12))
        if kind == "bool":
            return rng.choice(["true", "false"])
        if kind == "float":
            return repr(rng.uniform(-1e6, 1e6))
        text = "".join(rng.choice(_TEXT) for _ in range(rng.randint(0, 12)))
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if roll < 0.7:
        return "{" + ", ".join(_random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))) + "}"
    items = []
    for _ in range(rng.randint(0, 5)):
        key = "".join(rng.choice(_TEXT) for _ in range(rng.randint(0, 6)))
        key = key.replace("\\", "\\\\").replace('"', '\\"')
        items.append(f'["{key}"] = {_random_value(rng, depth + 1)}')
    return "{" + ", ".join(items) + "}"


RANDOM_CASES = [_random_value(random.Random(seed)) for seed in range(150)]
ALL = CASES + RANDOM_CASES

PLUGIN = """
plugin_info = {name = "packer", version = "1.0.0", description = "packed and unpacked answers",
               permissions = {"http"}}
local CASES = {
%s
}
http.handle("GET", "/fast", function(req) return {json = CASES[tonumber(req.query.i)]()} end)
http.handle("GET", "/slow", function(req)
  return {json = CASES[tonumber(req.query.i)](), headers = {["X-Path"] = "host"}}
end)
http.handle("GET", "/body", function(req) return {status = tonumber(req.query.s), body = req.query.b} end)
http.handle("GET", "/body_slow", function(req)
  return {status = tonumber(req.query.s), body = req.query.b, headers = {["X-Path"] = "host"}}
end)
http.handle("GET", "/float_status", function(req) return {status = 201.0, json = {ok = true}} end)
""" % ",\n".join(f"  function() return {expr} end" for expr in ALL)


@pytest.fixture(scope="module", params=["bridge", "lua"])
def server(request, tmp_path_factory):
    """The answers are packed by the C bridge's pack_response when it is built, else (and always with
    the "lua" parameter) by the bootstrap's Lua version: both must agree with the host."""
    if request.param == "bridge" and sandbox_module._luabridge is None:
        pytest.skip("the C bridge is not built here")
    path = tmp_path_factory.mktemp("packed")
    (path / "plugins" / "packer").mkdir(parents=True)
    (path / "plugins" / "packer" / "init.lua").write_text(PLUGIN, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "lua":
            patch.setattr(sandbox_module, "_luabridge", None)
        with running_site(path, {"rate_limit": 0.0}, plugins=()) as r:
            r.client.approve_all("packer")
            vm = r.service.plugins.match_route("packer", "GET", "/fast").generation.pool.checkout(5.0)
            assert (vm.sandbox._entry is not None) == (request.param == "bridge")
            r.service.plugins.match_route("packer", "GET", "/fast").generation.pool.give_back(vm)
            yield r


def _pair(r, fast: str, slow: str):
    a, b = r.client.get(fast), r.client.get(slow)
    assert b.headers.get("x-path") == "host" or b.status >= 500
    return _Seen(r, a), _Seen(r, b)


class _Seen:
    """An answer as compared here: an error answer (whose request id is new each time) as its code and
    what the plugin's log says under that id, minus the route (fast and slow are different routes)."""

    def __init__(self, r, resp):
        self.status, self.headers, self.body = resp.status, resp.headers, resp.body
        if resp.status >= 500 and "x-request-id" in resp.headers:
            error = route_error(resp)
            entries = [e["message"] for e in r.service.logbook.entries("packer", 500)
                       if (e.get("context") or {}).get("request_id") == error["request_id"]]
            assert len(entries) == 1, entries
            self.body = (error["code"], entries[0].split(": ", 1)[1])


@pytest.mark.parametrize("i", range(len(ALL)))
def test_packed_json_is_byte_for_byte_the_hosts(server, i):
    fast, slow = _pair(server, f"/api/v1/plugins/packer/fast?i={i + 1}", f"/api/v1/plugins/packer/slow?i={i + 1}")
    assert (fast.status, fast.body) == (slow.status, slow.body), ALL[i]
    assert fast.headers["content-type"] == slow.headers["content-type"]


def _vm_result(r, path: str, query: dict):
    """What the VM hands the host for one call: packed bytes, or a tuple read from route_results."""
    match = r.service.plugins.match_route("packer", "GET", path)
    pool = match.generation.pool
    vm = pool.checkout(5.0)
    try:
        req = {"method": "GET", "path": path, "headers": {}, "query": query, "params": {}, "body": b"",
               "client_ip": "127.0.0.1"}
        raw = vm.call_route(match.spec.index, req)
        return raw, vm.read_response(raw)
    finally:
        pool.give_back(vm)


def test_the_common_answers_are_packed_and_the_others_are_not(server):
    packed = ['{status = "ok"}', "{}", "{1, 2, 3}", '"plain"', "5", "true", "{true, false}",
              "(function() local t = {} for i = 1, 512 do t[i] = i end return t end)()", 'string.rep("z", 65534)',
              "(function() local t = {} for i = 1, 100 do t['k' .. i] = {i, 'v' .. i, i % 2 == 0} end return t end)()"]
    unpacked = ["1.5", '{s = "a\\"b"}', '{s = "caf\\195\\169"}', "{1, a = 2}", "{[2] = 2}", '{s = "nl\\n"}',
                "(function() local t = {} local c = t for i = 1, 20 do c.x = {} c = c.x end return t end)()",
                "(function() local t = {} for i = 1, 600 do t[i] = i end return t end)()",
                '{s = string.rep("y", 70000)}',
                "(function() local t = {} for i = 1, 513 do t[i] = i end return t end)()", 'string.rep("z", 65535)']
    for expr in packed:
        raw, out = _vm_result(server, "/fast", {"i": str(ALL.index(expr) + 1)})
        assert isinstance(raw, bytes) and raw.startswith(b"J200"), expr
        assert out["encoded"] is not None
    for expr in unpacked:
        raw, out = _vm_result(server, "/fast", {"i": str(ALL.index(expr) + 1)})
        assert isinstance(raw, tuple), expr
        assert out["encoded"] is None
    # a packed answer still gives its value to whoever asks (tests, the plugin test harness)
    raw, out = _vm_result(server, "/fast", {"i": str(ALL.index("{n = math.maxinteger, m = math.mininteger, z = 0, neg = -17}") + 1)})
    assert isinstance(raw, bytes)
    assert out["json"] == {"n": 2**63 - 1, "m": -(2**63), "z": 0, "neg": -17}


@pytest.mark.parametrize("status,body", [
    ("200", "hello"), ("201", ""), ("404", "nope"), ("599", "x"), ("150", "early"), ("600", "late"),
    ("99", "low"), ("204", "dropped"), ("304", "dropped"), ("200", "caf\u00e9 \u2603"), ("200", "caf\u00e9"),
])
def test_packed_bodies_answer_like_the_host(server, status, body):
    from urllib.parse import quote
    q = f"s={status}&b={quote(body)}"
    fast, slow = _pair(server, f"/api/v1/plugins/packer/body?{q}", f"/api/v1/plugins/packer/body_slow?{q}")
    assert (fast.status, fast.body, fast.headers["content-type"]) == (slow.status, slow.body, slow.headers["content-type"])
    if 200 <= int(status) <= 599 and status not in ("204", "304"):
        assert fast.status == int(status) and fast.body == body.encode()


def test_ascii_bodies_are_packed_and_others_are_not(server):
    raw, out = _vm_result(server, "/body", {"s": "201", "b": "hello"})
    assert raw == b"B201hello" and out["body"] == b"hello" and out["status"] == 201
    # lupa hands str() results over as UTF-8 when they decode, so "caf\xc3\xa9" would come back as
    # four characters: such bodies go through route_results as bytes
    raw, out = _vm_result(server, "/body", {"s": "200", "b": "caf\u00e9"})
    assert isinstance(raw, tuple) and out["body"] == "caf\u00e9".encode()


def test_a_float_status_takes_the_hosts_path(server):
    raw, out = _vm_result(server, "/float_status", {})
    assert isinstance(raw, tuple)
    r = server.client.get("/api/v1/plugins/packer/float_status")
    assert (r.status, r.json()) == (201, {"ok": True})


def test_results_of_an_unpacked_call_are_not_kept_alive(server):
    # a large answer goes through route_results; the next (packed) call clears them, so the VM's
    # memory does not hold on to the last big body
    i_big = ALL.index('{s = string.rep("y", 70000)}') + 1
    match = server.service.plugins.match_route("packer", "GET", "/fast")
    pool = match.generation.pool
    vm = pool.checkout(5.0)
    try:
        req = {"method": "GET", "path": "/fast", "headers": {}, "params": {}, "body": b"", "client_ip": "127.0.0.1"}
        assert isinstance(vm.call_route(match.spec.index, dict(req, query={"i": str(i_big)})), tuple)
        assert isinstance(vm.call_route(match.spec.index, dict(req, query={"i": "1"})), bytes)
        assert vm.sandbox._route_results[4] is None and vm.sandbox._route_results[1] is None
    finally:
        pool.give_back(vm)
