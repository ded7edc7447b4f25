"""Adversarial tests of the globals image (_luabridge.c: snapshot_save, snapshot_clean; bootstrap.lua:
save_image, take_snapshot, restore_snapshot).

After every route call the plugin's global table must be what the snapshot holds, so nothing a handler
does to the globals reaches the next request. The bridge first compares a byte image of the global
table's hash part (and of the library overlays); equal bytes are taken to mean equal globals and the
walk is skipped. Each case below is a hostile handler trying to change what the next request sees
while keeping those bytes, or to make the check read memory it should not. Each asserts that the next
request sees exactly the snapshot's globals, through a probe route that compares every global (raw
identity, number subtype and the sign of zero), the global table's metatable and every library table
with what module scope left.

The cases at the end were defects when the review wrote them: a number replaced by an equal one of
the other subtype (42.0 for 42, -0.0 for 0.0) stayed, since the checks compared with rawequal; a long
string replaced by an equal copy left the image pointing at an object only the globals kept alive,
whose address a handler could get back for another string; and a metatable's own __eq ran in the
restore, outside any budget. They pass since the fix.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from modula_desktop.core.plugins.runtime import sandbox as sandbox_module
from modula_desktop.core.plugins.errors import PluginCallError
from test_sandbox_adversarial import OK_JSON, call, call_json, make_vm

needs_bridge = pytest.mark.skipif(sandbox_module._luabridge is None, reason="the C bridge is not built here")
# the defects below that are not the image's own also show without the bridge (the Lua walk)
BOTH_PATHS = pytest.mark.parametrize("bridge", [pytest.param(True, marks=needs_bridge), False], ids=["bridge", "lua"])


def choose_path(monkeypatch, bridge):
    if not bridge:
        monkeypatch.setattr(sandbox_module, "_luabridge", None)

# Runs a full collection cycle from plugin code (no collectgarbage in the sandbox): allocate until a
# weak table loses its key, twice (the second cycle sweeps what the first one found dead).
CHURN = """
local function churn(rounds)
  for _ = 1, rounds or 2 do
    local w = setmetatable({}, {__mode = "k"})
    w[{}] = true
    while next(w) ~= nil do local junk = {} end
  end
end
"""

# Appended last to every plugin: captures the globals as module scope leaves them (which is what the
# snapshot holds) and answers /see with every difference from them.
PROBE = """
local captured, captured_n, captured_mt, captured_libs = {}, 0, getmetatable(_G), {}
local function kind(v) return math.type(v) or type(v) end
local function same(a, b)
  return a == b and kind(a) == kind(b) and (a ~= 0 or 1 / a == 1 / b)
end
for k, v in next, _G do captured[k] = v; captured_n = captured_n + 1 end
local LIBS = {"string", "table", "math", "utf8", "coroutine", "os"}
for _, name in ipairs(LIBS) do
  local copy = {}
  for k, v in pairs(_G[name]) do copy[k] = v end
  captured_libs[name] = copy
end
http.handle("GET", "/see", function()
  local diff, n = json.array(), 0  -- an array even when empty (an empty table encodes as {})
  for k, v in next, _G do
    n = n + 1
    local was = captured[k]
    if was == nil then diff[#diff + 1] = "extra " .. tostring(k)
    elseif not same(was, v) then diff[#diff + 1] = "changed " .. tostring(k) end
  end
  if n ~= captured_n then diff[#diff + 1] = "count " .. n end
  if getmetatable(_G) ~= captured_mt then diff[#diff + 1] = "metatable" end
  for _, name in ipairs(LIBS) do
    local copy, lib, m = captured_libs[name], _G[name] or {}, 0
    for k, v in pairs(lib) do
      m = m + 1
      if not same(copy[k], v) then diff[#diff + 1] = name .. "." .. tostring(k) end
    end
    for k in pairs(copy) do if lib[k] == nil then diff[#diff + 1] = name .. "." .. tostring(k) .. " gone" end end
  end
  return {json = {diff = diff}}
end)
"""

CLEAN = {"diff": []}


def plugin(tmp_path, body, **kw):
    return make_vm(tmp_path, CHURN + textwrap.dedent(body) + PROBE, **kw)


def imaged(vm):
    return vm.sandbox.fn("snapshot_imaged")()


def route(path, body):
    return f'http.handle("GET", "{path}", function(req)\n{textwrap.dedent(body)}\nend)\n'


def assert_isolated(vm, *attacks, rounds=2, ok=True):
    """Each attack route, then the probe: the next request sees the snapshot's globals."""
    assert call_json(vm, "/see") == CLEAN  # the probe itself is clean to begin with
    for _ in range(rounds):
        for path in attacks:
            call(vm, path)
            assert call_json(vm, "/see") == CLEAN, path
            assert call_json(vm, "/see") == CLEAN, path  # and again: the image taken after the walk
    if ok:  # /ok also asserts that the globals have no metatable
        assert call_json(vm, "/ok") == OK_JSON
    assert vm.clean and not vm.broken


# ---- attacks the image withstands ----------------------------------------------------------------

@needs_bridge
def test_a_handler_that_errors_after_changing_globals(tmp_path):
    vm = plugin(tmp_path, route("/boom", """
        leaked = 1; normal_global = 7; string.upper = nil; string.extra = 1; math.pi = 3
        setmetatable(_G, {__index = function() return "meta" end})
        error("boom")"""))
    assert imaged(vm)
    for _ in range(3):
        with pytest.raises(PluginCallError) as info:
            call(vm, "/boom")
        assert info.value.kind == "error" and "boom" in info.value.message
        assert not vm.broken
        assert call_json(vm, "/see") == CLEAN and imaged(vm)
    vm.reset()  # the pool's give-back after a failed call: a second restore, on an image that matches
    assert call_json(vm, "/see") == CLEAN and imaged(vm)


@needs_bridge
def test_a_handler_stopped_by_the_budget_after_changing_globals(tmp_path):
    vm = plugin(tmp_path, route("/spin", "leaked = 1; normal_global = 7; while true do end"))
    with pytest.raises(PluginCallError) as info:
        call(vm, "/spin")
    assert info.value.kind == "budget" and vm.broken  # the pool throws this VM away
    vm.broken = False  # even so, route_call restored the globals before it answered
    assert call_json(vm, "/see") == CLEAN


@needs_bridge
def test_an_emptied_slot_refilled_with_and_without_a_collection(tmp_path):
    # a global emptied at module scope leaves its key in a slot: refilling that slot (its key still
    # live, or marked dead by a collection) must show as a change
    vm = plugin(tmp_path, """
        temporary = {}
        temporary = nil
        later = 1
        """ + route("/refill", "temporary = 1") + route("/collect_refill", "churn() temporary = {}")
        + route("/refill_and_empty", "churn() temporary = 1; temporary = nil; leaked = 2; leaked = nil"))
    assert_isolated(vm, "/refill", "/collect_refill", "/refill_and_empty")


@needs_bridge
def test_the_node_array_grown_and_shrunk_back(tmp_path):
    # the table is resized twice: its node array may come back at the same address with the same size
    vm = plugin(tmp_path, route("/resize", """
        for i = 1, 2000 do _G["g" .. i] = i end
        for i = 1, 2000 do _G["g" .. i] = nil end
        for i = 1, 3000 do _G["t" .. i] = i; _G["t" .. i] = nil end -- rehashes once no slot is free
        normal_global = nil; normal_global = 42"""))
    assert_isolated(vm, "/resize")
    assert imaged(vm)


@needs_bridge
def test_integer_keys_and_table_functions_on_the_globals(tmp_path):
    vm = plugin(tmp_path, route("/move", "table.move({1, 2, 3}, 1, 3, 1, _G)")
                + route("/insert", "table.insert(_G, 'x'); table.insert(_G, 1, 'y'); table.remove(_G, 1)")
                + route("/holes", "_G[1] = 1; _G[2] = 2; _G[1] = nil; _G[2] = nil; _G[1.5] = 1; _G[true] = 1"))
    assert_isolated(vm, "/move", "/insert", "/holes")


@needs_bridge
def test_library_overlays_with_integer_keys_and_many_keys(tmp_path):
    vm = plugin(tmp_path, route("/int", "table.insert(string, 'x'); math[1] = 2; os[-1] = 3")
                + route("/many", "for i = 1, 300 do math['f' .. i] = i; utf8['f' .. i] = i end")
                + route("/replace", """
                    string.upper = function() return 'x' end; table.concat = nil; coroutine.wrap = print
                    os.time = function() return 0 end"""))
    assert_isolated(vm, "/int", "/many", "/replace")


@needs_bridge
def test_metatables_on_the_globals(tmp_path):
    vm = plugin(tmp_path, route("/swallow", """
        setmetatable(_G, {__newindex = function() end, __index = function() return 'meta' end})
        leaked = 1; normal_global = nil""")
        + route("/weak", "setmetatable(_G, {__mode = 'kv'}); leaked = {}; churn()"))
    assert_isolated(vm, "/swallow", "/weak")


@needs_bridge
def test_a_weak_global_table_set_at_module_scope(tmp_path):
    # the collector itself may clear entries of a weak global table: only ever a handler's own ones
    # (the snapshot holds the rest)
    vm = plugin(tmp_path, """
        setmetatable(_G, {__mode = "kv"})
        kept = {}
        """ + route("/garbage", "leaked = {}; other = function() end; churn(); leaked2 = {}; churn()"))
    assert_isolated(vm, "/garbage", ok=False)


@needs_bridge
def test_a_suspended_coroutine_writes_only_when_resumed(tmp_path):
    vm = plugin(tmp_path, """
        pending = {}
        """ + route("/start", """
            local co = coroutine.create(function() leaked = 1; coroutine.yield(); leaked = 2; normal_global = 9 end)
            coroutine.resume(co)
            pending[#pending + 1] = co""")
        + route("/resume", """
            for i = 1, #pending do coroutine.resume(pending[i]) end
            return {json = {leaked = leaked, n = normal_global}}"""))
    assert_isolated(vm, "/start")
    # the next request resuming it does the writing itself, and it is undone after that request too
    assert call_json(vm, "/resume") == {"leaked": 2, "n": 9}
    assert call_json(vm, "/see") == CLEAN
    assert call_json(vm, "/resume") == {"n": 42}


@needs_bridge
def test_a_hook_on_a_vm_that_served_routes(tmp_path):
    vm = plugin(tmp_path, """
        hooks.on("before_create", "content", function(entry)
          leaked = 1; normal_global = 7; string.lower = nil; setmetatable(_G, {__index = print})
        end)
        """ + route("/r", "return {json = {n = normal_global}}"))
    assert call_json(vm, "/r") == {"n": 42} and imaged(vm)
    for _ in range(2):
        vm.call_hook(vm.hooks[0].index, {"_table": "content", "_event": "before_create", "title": "t"}, timeout=0.5)
        vm.reset()  # the pool's give-back after a hook
        assert not vm.broken and imaged(vm)
        assert call_json(vm, "/see") == CLEAN


@needs_bridge
def test_more_globals_than_the_image_covers(tmp_path):
    # 2^17 slots: no image any more (MAX_LSIZENODE), every check walks
    vm = plugin(tmp_path, route("/huge", "for i = 1, 70000 do _G[i .. ''] = i end"))
    call(vm, "/huge")
    assert call_json(vm, "/see") == CLEAN and not imaged(vm)
    assert_isolated(vm, "/see", rounds=1)


@needs_bridge
def test_a_long_string_global_replaced_by_an_equal_copy(tmp_path):
    # a long string raw-equal to the snapshot's, but another object: nothing visible changes
    vm = plugin(tmp_path, 'long_text = string.rep("a", 600)\n'
                + route("/copy", "churn(); long_text = string.rep('a', 599) .. 'a'"))
    assert_isolated(vm, "/copy")


@needs_bridge
def test_memory_exhausted_when_the_image_is_taken(tmp_path):
    # a handler grows the global table's node array (the image then needs a larger buffer) and leaves
    # the memory nearly full: the restore still runs, taking the image fails, and that only means no
    # image (every check walks)
    body = """
        hold = {}
        """ + route("/fill", """
            leaked = 1; normal_global = 7
            for i = 1, 5000 do _G[i + 0.5] = true end -- float keys: a larger node array, no garbage
            for i = 1, 5000 do _G[i + 0.5] = nil end
            local piece = string.rep("f", 8000)
            for i = 1, tonumber(req.query.n) // 8000 do hold[#hold + 1] = piece .. i end""")
    for margin in (330, 300, 360, 280, 390):  # KiB left free (roughly: the accounting is not exact)
        vm = plugin(tmp_path / str(margin), body)
        sb = vm.sandbox
        sb.lua.gccollect()
        n = sb.memory_limit - sb.memory_used() - 24 * 8192 - margin * 1024
        index = next(r.index for r in vm.routes if r.path == "/fill")
        req = {"method": "GET", "path": "/fill", "body": "", "client_ip": "127.0.0.1", "headers": {},
               "query": {"n": str(n)}, "params": {}, "json": None}
        try:
            vm.read_response(vm.call_route(index, req))
        except PluginCallError as exc:  # the handler itself ran out: not this case
            assert exc.kind == "memory" and vm.broken
            continue
        if imaged(vm):
            continue  # there was room for the image after all
        # the route answered, restored the globals, and left no image
        assert not vm.broken and vm.clean
        assert sb.fn("get_global")(b"leaked") is None and sb.fn("get_global")(b"normal_global") == 42
        vm.reset()  # the give-back (memory limit off): walks, finds them clean, takes the image again
        assert imaged(vm) and sb.fn("get_global")(b"leaked") is None
        return
    pytest.skip("no margin left the handler room and the image none")


# ---- defects the review found, fixed since -----------------------------------------------------

@BOTH_PATHS
def test_an_integer_global_replaced_by_the_equal_float(tmp_path, monkeypatch, bridge):
    choose_path(monkeypatch, bridge)
    vm = plugin(tmp_path, route("/float", "normal_global = 42.0"))
    assert_isolated(vm, "/float")


@BOTH_PATHS
def test_a_zero_global_replaced_by_negative_zero(tmp_path, monkeypatch, bridge):
    choose_path(monkeypatch, bridge)
    vm = plugin(tmp_path, "zero = 0.0\n" + route("/neg", "zero = -0.0"))
    assert_isolated(vm, "/neg")


@needs_bridge
def test_the_address_of_a_replaced_long_string_reused(tmp_path):
    vm = plugin(tmp_path, """
        long_text = string.rep("a", 600)
        long_addr = string.format("%p", long_text)
        """ + route("/copy", """
            churn() -- empty slots get their dead-key marks before the image is taken again
            long_text = string.rep("a", 599) .. "a" -- raw-equal to the snapshot's value, another object""")
        + route("/swap", """
            local want = string.format("%p", long_text)
            if want == long_addr then return {json = {hunted = false}} end -- the snapshot's own: never freed
            long_text = "short" -- a store into the same slot: the slot never goes empty
            local keep = {}
            for _ = 1, 20000 do
              local c = string.rep("b", 600)
              if string.format("%p", c) == want then
                long_text = c
                return {json = {hunted = true, hit = true}}
              end
              keep[#keep + 1] = c
              for _ = 1, 20 do local junk = {} end
            end
            long_text = string.rep("a", 600)
            return {json = {hunted = true, hit = false}}"""))
    assert call_json(vm, "/see") == CLEAN
    call(vm, "/copy")
    assert call_json(vm, "/see") == CLEAN
    hunt = call_json(vm, "/swap")
    if hunt.get("hunted") and not hunt.get("hit"):
        pytest.skip("the allocator never handed the address back (a sanitizer's quarantine?)")
    assert call_json(vm, "/see") == CLEAN


EQ_CHILD = """
import sys
sys.path[:0] = [{tests!r}, {root!r}]
from pathlib import Path
from test_sandbox_adversarial import call_json, make_vm
from modula_desktop.core.plugins.runtime import sandbox
if not {bridge!r}:
    sandbox._luabridge = None
vm = make_vm(Path({tmp!r}), '''
setmetatable(_G, {{}})
http.handle("GET", "/eq", function()
  setmetatable(_G, setmetatable({{}}, {{__eq = function() while true do end end}}))
  return {{json = {{done = true}}}}
end)
''')
print(call_json(vm, "/eq", timeout=0.5), flush=True)
"""


def test_an_eq_metamethod_on_the_globals_metatable_cannot_hang_the_restore(tmp_path):
    # in child processes, with and without the bridge, side by side: the hang cannot be interrupted
    # from inside
    tests = str(Path(__file__).parent)
    children = {}
    for bridge in (True, False):
        code = EQ_CHILD.format(tests=tests, root=str(Path(tests).parent), tmp=str(tmp_path / str(bridge)),
                               bridge=bridge)
        children[bridge] = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True,
                                            env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    deadline = time.monotonic() + 3
    hung = []
    for bridge, child in children.items():
        try:
            out, err = child.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            hung.append("with the bridge" if bridge else "without the bridge")
            continue
        assert child.returncode == 0, err
        assert "'done': True" in out
    assert not hung, "the route call never returned (%s): the plugin's __eq ran outside the budget" % ", ".join(hung)
