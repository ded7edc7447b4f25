"""The C bridge for route calls (core/plugins/runtime/_luabridge.c, Sandbox.call_route).

Route calls go through the bridge when it is built, else through lupa. Both must answer the same for
every request and every failure, the bridge must refuse what it cannot push (lupa takes over), and it
must never take the process down: memory runs out while it pushes the arguments, the checks that
recognise lupa fail."""
from __future__ import annotations

import os

import pytest

from modula_desktop.core.plugins.runtime import sandbox as sandbox_module
from modula_desktop.core.plugins.errors import PluginCallError
from modula_desktop.core.plugins.runtime.sandbox import ARGUMENT_ROOM, ROUTE_ENTRY_KEY, Sandbox, runtime_lock

from test_sandbox_adversarial import (FILL, GLOBAL_CHANGES, MEMORY, OK_JSON, SEEN_BEFORE, call_json, handler,
                                      make_vm, request)

bridge = sandbox_module._luabridge
needs_bridge = pytest.mark.skipif(bridge is None, reason="the C bridge is not built here (no C compiler)")


def test_ci_builds_the_bridge():
    # CI has a compiler: a bridge that silently stopped building would leave every route on lupa's path
    if not os.environ.get("CI"):
        pytest.skip("checked in CI only")
    assert bridge is not None
    assert Sandbox(32)._entry is not None


ROUTES = r'''
counter = 0
http.handle("GET", "/echo", function(req)
  counter = counter + 1
  local h = {}
  for k, v in pairs(req.headers) do h[#h + 1] = k .. "=" .. v end
  table.sort(h)
  local q = {}
  for k, v in pairs(req.query) do q[#q + 1] = k .. "=" .. v end
  table.sort(q)
  return {json = {method = req.method, path = req.path, body = req.body, ip = req.client_ip, headers = h,
                  query = q, id = req.params.id or "", json = req.json, counter = counter}}
end)
http.handle("GET", "/text", function(req) return {status = 201, body = req.body .. "!"} end)
http.handle("GET", "/error", function(req) error("boom " .. req.path) end)
http.handle("GET", "/spin", function(req) while true do end end)
http.handle("GET", "/bad", function(req) return 5 end)
http.handle("GET", "/leak", function(req)
  leaked = req.path; counter = nil; string.upper = nil; setmetatable(_G, {__index = function() return "meta" end})
  return {json = {ok = true}}
end)
http.handle("GET", "/peek", function(req)
  return {json = {leaked = leaked or "none", counter = counter, upper = string.upper ~= nil, mt = getmetatable(_G) == nil}}
end)
'''

REQUESTS = [
    ("/echo", {}),
    ("/echo", {"query": {"a": "1", "b": "caf\u00e9"}, "params": {"id": "42"}}),
    ("/echo", {"headers": {"x-one": "1", "accept": "*/*", "x-utf": "\u2603"}, "body": "payload"}),
    ("/echo", {"headers": [b"host", b"127.0.0.1:1", b"x-raw", b"\xff\xfe"], "body": b"\x00\x01binary"}),
    ("/echo", {"json": {"nested": [1, 2, {"k": "v"}]}, "body": '{"nested": [1, 2, {"k": "v"}]}'}),
    ("/echo", {"query": {"n": "x" * 10000}}),
    ("/echo", {"path": "/caf\u00e9/\u2603", "client_ip": "::1"}),  # text beyond ASCII
    ("/echo", {"path": "/x\udcff", "body": "b\udcfe"}),  # bytes that are not UTF-8, escaped
    ("/echo", {"method": b"GET", "path": b"/as-bytes", "client_ip": b"10.0.0.1"}),
    ("/text", {"body": "plain"}),
    ("/text", {"body": "caf\u00e9"}),
    ("/error", {}),
    ("/bad", {}),
    ("/leak", {}),
    ("/peek", {}),
    ("/echo", {}),
    ("/spin", {}),
]


def _outcome(vm, path, extra, timeout=0.3):
    index = next(r.index for r in vm.routes if r.path == path)
    req = dict(request(path), **extra)
    try:
        out = vm.read_response(vm.call_route(index, req, timeout=timeout))
    except PluginCallError as exc:
        return ("error", exc.kind, exc.message.split(" (")[0])
    finally:
        vm.reset()
    return (out["status"], out["has_json"], out["json"], out["body"], out["headers"])


@needs_bridge
def test_the_bridge_and_lupa_answer_alike(tmp_path):
    fast = make_vm(tmp_path / "a", ROUTES)
    slow = make_vm(tmp_path / "b", ROUTES)
    slow.sandbox._entry = None
    assert fast.sandbox._entry is not None
    for path, extra in REQUESTS:
        assert _outcome(fast, path, extra) == _outcome(slow, path, extra), (path, extra)
    # the globals a handler changed were put back on both paths
    assert _outcome(fast, "/echo", {})[2]["counter"] == 1
    assert _outcome(fast, "/peek", {})[2] == {"leaked": "none", "counter": 0, "upper": True, "mt": True}
    # the globals check ran in C (the bridge installs it with the entry)
    assert fast.sandbox.fn("snapshot_check_in_c")() is True


@needs_bridge
def test_route_calls_take_the_bridge(tmp_path):
    vm = make_vm(tmp_path, ROUTES)
    index = next(r.index for r in vm.routes if r.path == "/echo")
    entry, seen = vm.sandbox._entry, []

    def recording(*args):
        seen.append(args)
        return entry(*args)

    vm.sandbox._entry = recording
    raw = vm.call_route(index, dict(request("/echo"), query={"a": "b"}, headers={"x": "y"}))
    # flat: strings as bytes, the maps as lists the bridge turns into tables
    (args,) = seen
    assert args[3:8] == (index, b"GET", b"/echo", b"", b"127.0.0.1")
    assert args[8:] == (None, [b"a", b"b"], None, [b"x", b"y"])
    assert raw.startswith(b"J200{") and b'"query":["a=b"]' in raw
    assert vm.sandbox._route_inbox[1] is None  # lupa's path was not taken


@needs_bridge
@pytest.mark.parametrize("bad", [
    object(), 2**70, -(2**64), "text", (b"a", b"b"), [b"odd"], [b"k", "not bytes"], [b"k", 1], {b"k": b"v"},
    bytearray(b"x"),
])
def test_arguments_the_bridge_cannot_push_leave_the_call_to_lupa(tmp_path, bad):
    vm = make_vm(tmp_path, ROUTES)
    entry = vm.sandbox._entry
    assert entry(1000, 1e18, b"m", 1, bad) is None
    assert entry(*[None] * 33) is None  # more arguments than any route call has
    # nothing was called: the VM still answers
    assert _outcome(vm, "/text", {"body": "x"})[:4] == (201, False, None, b"x!")


@needs_bridge
def test_memory_running_out_while_the_bridge_pushes_does_not_abort(tmp_path):
    vm = make_vm(tmp_path, FILL + handler("fill() return {json = {filled = true}}"))
    index = next(r.index for r in vm.routes if r.path == "/ok")
    with pytest.raises(PluginCallError) as info:
        vm.read_response(vm.call_route(next(r.index for r in vm.routes if r.path == "/x"), request("/x")))
    assert (info.value.kind, info.value.message) == ("memory", MEMORY)
    sb = vm.sandbox
    left = sb.memory_limit - sb.memory_used()
    assert left < ARGUMENT_ROOM  # full: the bridge declines, lupa's path collects and refuses
    big = dict(request("/ok"), headers={"x-big": "z" * 300_000})
    for _ in range(3):
        with pytest.raises(PluginCallError) as info:
            vm.call_route(index, big, timeout=1.0)
        assert (info.value.kind, info.value.message) == ("memory", MEMORY)
        vm.reset()
    # room for the arguments but not for the headers table the bridge builds: the memory error is
    # raised inside the protected call and reported, the process lives on
    args = [*vm._budget_args(1.0, "the handler"), index, b"GET", b"/ok", b"", b"127.0.0.1", None, None, None,
            [b"x-big", b"z" * 300_000]]
    limit = sb.memory_used() + ARGUMENT_ROOM + 1024
    entry = bridge.Entry(sb.lua, runtime_lock(sb.lua), int(sb.fn("state_address")().decode(), 16), ROUTE_ENTRY_KEY, limit, ARGUMENT_ROOM,
                         sb.memory_used())
    status, message = entry(*args)
    assert status == sandbox_module.LUA_ERRMEM and b"memory" in message
    assert sb.memory_used() <= limit  # the limit held, and is off again for lupa
    assert sb.lua.get_max_memory(total=True) == 0
    assert list(sb.lua.table_from([1, 2]).values()) == [1, 2]


@needs_bridge
def test_the_bridge_refuses_a_state_it_does_not_recognise(tmp_path):
    sb = Sandbox(32)
    address = int(sb.fn("state_address")().decode(), 16)
    used = sb.memory_used()
    with pytest.raises(RuntimeError, match="allocator"):
        bridge.Entry(sb.lua, runtime_lock(sb.lua), address, ROUTE_ENTRY_KEY, sb.memory_limit, ARGUMENT_ROOM, used + 12345)
    with pytest.raises(RuntimeError, match="no function"):
        bridge.Entry(sb.lua, runtime_lock(sb.lua), address, "modula.no_such_entry", sb.memory_limit, ARGUMENT_ROOM, used)
    sb._limit_on()
    try:
        with pytest.raises(RuntimeError, match="allocator"):  # made while the limit is on: refused
            bridge.Entry(sb.lua, runtime_lock(sb.lua), address, ROUTE_ENTRY_KEY, sb.memory_limit, ARGUMENT_ROOM, used)
    finally:
        sb._limit_off()
    # a sandbox whose entry could not be made still serves routes, through lupa
    sb.memory_used = lambda: -1
    assert sb._route_entry() is None


def test_without_the_bridge_routes_go_through_lupa(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox_module, "_luabridge", None)
    vm = make_vm(tmp_path, ROUTES)
    assert vm.sandbox._entry is None
    assert _outcome(vm, "/echo", {"query": {"a": "1"}, "params": {"id": "7"}})[2]["query"] == ["a=1"]
    assert _outcome(vm, "/text", {"body": "b"})[:4] == (201, False, None, b"b!")
    assert _outcome(vm, "/error", {})[:2] == ("error", "error")
    # the globals check in Lua (the bridge's C version is not there either) puts everything back
    _outcome(vm, "/leak", {})
    assert _outcome(vm, "/peek", {})[2] == {"leaked": "none", "counter": 0, "upper": True, "mt": True}
    assert vm.sandbox.fn("snapshot_check_in_c")() is False


def test_plugins_cannot_reach_the_bridges_entry(tmp_path):
    vm = make_vm(tmp_path, handler("""
        local found = {}
        for _, name in ipairs({"debug", "rawget", "rawset", "load", "loadstring"}) do
          found[#found + 1] = name .. "=" .. type(_G[name])
        end
        return {json = found}"""))
    index = next(r.index for r in vm.routes if r.path == "/x")
    out = vm.read_response(vm.call_route(index, request("/x")))["json"]
    assert "debug=nil" in out and "rawget=nil" in out and "rawset=nil" in out and "load=nil" in out


@needs_bridge
def test_sandboxes_with_an_entry_are_still_collected(tmp_path):
    # the entry keeps its LuaRuntime alive and tells the cycle collector so: a closed VM's sandbox
    # (runtime -> host callables -> sandbox -> entry -> runtime) must not leak
    import gc
    import weakref

    def make():
        vm = make_vm(tmp_path / str(len(refs)), ROUTES)
        assert vm.sandbox._entry is not None
        refs.append(weakref.ref(vm.sandbox))
        vm.close()

    refs = []
    for _ in range(3):
        make()
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


@needs_bridge
def test_an_entry_outliving_its_sandbox_still_works(tmp_path):
    vm = make_vm(tmp_path, ROUTES)
    entry = vm.sandbox._entry
    index = next(r.index for r in vm.routes if r.path == "/text")
    vm.close()
    import gc
    gc.collect()
    packed = entry(1_000_000, 1e18, b"m", index, b"GET", b"/text", b"late", b"127.0.0.1", None, None, None, [])
    assert packed == b"B201late!"


@needs_bridge
def test_another_thread_using_the_runtime_waits_for_a_bridge_call(tmp_path):
    # A VM is one thread's at a time (the pool); should code break that rule, the bridge holds lupa's
    # runtime lock like lupa's own calls, so the other thread waits instead of running Lua alongside
    # (without the lock this crashed the process: the handler releases the GIL while it spins).
    import dataclasses
    import threading
    import time

    from test_sandbox_adversarial import FAST
    vm = make_vm(tmp_path, handler("local i = 0 while true do i = i + 1 end"),
                 settings=dataclasses.replace(FAST, max_instructions=10**12))
    index = next(r.index for r in vm.routes if r.path == "/x")
    events, entry, failures = [], vm.sandbox._entry, []

    def recording(*args):
        events.append("bridge call started")
        try:
            return entry(*args)
        finally:
            events.append("bridge call ended")

    vm.sandbox._entry = recording

    def spin():
        with pytest.raises(PluginCallError) as info:
            vm.call_route(index, request("/x"), timeout=0.5)
        failures.append(info.value.kind)  # (reading the outcome takes the lock again: no order asserted)

    t = threading.Thread(target=spin)
    t.start()
    time.sleep(0.15)
    assert events == ["bridge call started"]
    table = vm.sandbox.lua.table_from([b"y" * 1_000_000] * 40)  # through lupa, on the same runtime
    events.append("converted")
    t.join()
    assert events == ["bridge call started", "bridge call ended", "converted"]
    assert failures == ["timeout"]
    assert len(table) == 40


# ---- the request headers of a WSGI environ (server/plugin_routes.py: wsgi_headers) --------------
ENVIRONS = [
    {"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "HTTP_HOST": "127.0.0.1:8080", "HTTP_USER_AGENT": "wrk",
     "HTTP_AUTHORIZATION": "Bearer secret", "wsgi.input": object(), "REMOTE_ADDR": "127.0.0.1"},
    {"CONTENT_TYPE": "application/json", "CONTENT_LENGTH": "12", "HTTP_X_MULTI_PART_NAME": "v",
     "HTTP_ACCEPT": "", "HTTP_": "no name", "HTTP": "not a header", "SERVER_NAME": "x", "QUERY_STRING": "a=1",
     "CUSTOM_KEY": "not a header", "HTTP_MIXED_Case": "kept"},
    {"HTTP_X_LONG": "v" * 10_000, "HTTP_" + "N" * 300: "a name longer than the C buffer"},
    {"HTTP_X_UTF": "caf\u00c3\u00a9", "HTTP_HOST": "h"},  # latin-1 text of UTF-8 bytes, as WSGI hands them
    {"HTTP_X_BAD": "\u00ff\u00fe", "HTTP_HOST": "h"},  # not UTF-8: replaced
    {"HTTP_X_\u00e9": "v"},  # a non-ASCII key
    {"HTTP_X_NUM": 5},  # not text: the Python version's error, not a wrong answer
]


@needs_bridge
@pytest.mark.parametrize("env", ENVIRONS, ids=range(len(ENVIRONS)))
@pytest.mark.parametrize("drop", [True, False])
def test_flat_headers_matches_the_python_version(env, drop):
    from modula_desktop.server.plugin_routes import wsgi_headers
    fast = bridge.flat_headers(env, drop)
    try:
        expected = wsgi_headers(env, drop)
    except AttributeError:  # a value that is not text
        assert fast is None
        return
    ascii_only = all(k.isascii() and (not (k.startswith("HTTP_") or k.startswith("CONTENT_")) or v.isascii())
                     for k, v in env.items())
    if ascii_only and not any(len(k) > 261 for k in env):
        assert fast == expected  # the common case never falls back
    else:
        assert fast is None or fast == expected
    names = expected[::2]
    assert (b"authorization" in names) == (not drop and "HTTP_AUTHORIZATION" in env)


@needs_bridge
def test_flat_headers_refuses_what_is_not_an_environ():
    with pytest.raises(TypeError):
        bridge.flat_headers([("HTTP_HOST", "x")], True)
    with pytest.raises(TypeError):
        bridge.flat_headers({})


# ---- the image of the globals (_luabridge.c: snapshot_save, snapshot_clean) ----------------------
SEE = """
http.handle("GET", "/see", function()
  return {json = {n = normal_global, leaked = type(leaked), print = print ~= nil, http = http ~= nil,
                  g = type(g150), i = type(_G[1]), up = ("abc"):upper(), mt = getmetatable(_G) == nil}}
end)
"""


@needs_bridge
@pytest.mark.parametrize("change", sorted(GLOBAL_CHANGES))
def test_the_globals_image_is_checked_first_and_taken_again_after_a_change(tmp_path, change):
    vm = make_vm(tmp_path, SEE + handler(GLOBAL_CHANGES[change] + "\nreturn {json = {done = true}}"))
    imaged = vm.sandbox.fn("snapshot_imaged")
    assert imaged() is True  # taken with the snapshot
    assert call_json(vm, "/ok") == OK_JSON and imaged() is True
    assert call_json(vm) == {"done": True}
    assert call_json(vm, "/see") == SEEN_BEFORE
    # taken again after the walk restored the globals; not when they grew an array part (the image
    # covers hash parts only: every later check walks, as without the bridge)
    assert imaged() is (change != "integer_keys")
    for _ in range(3):
        assert call_json(vm, "/see") == SEEN_BEFORE and call_json(vm, "/ok") == OK_JSON


@needs_bridge
def test_a_slot_the_collector_changes_only_costs_a_walk(tmp_path):
    # a global emptied before the snapshot leaves its key in a slot; a full collection marks that key
    # dead, which changes the slot's bytes, never the globals
    vm = make_vm(tmp_path, "temporary = {}\ntemporary = nil\nlater = 1\n" + SEE + handler("return {json = {x = 1}}"))
    imaged = vm.sandbox.fn("snapshot_imaged")
    assert call_json(vm, "/see") == SEEN_BEFORE and imaged()
    vm.sandbox.lua.gccollect()
    vm.sandbox.lua.gccollect()
    assert call_json(vm, "/see") == SEEN_BEFORE and imaged()
    assert call_json(vm) == {"x": 1} and call_json(vm, "/ok") == OK_JSON


def test_without_the_bridge_there_is_no_image(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox_module, "_luabridge", None)
    vm = make_vm(tmp_path, SEE + handler("leaked = 1\nreturn {json = {done = true}}"))
    assert vm.sandbox.fn("snapshot_imaged")() is False
    assert call_json(vm) == {"done": True} and call_json(vm, "/see") == SEEN_BEFORE

