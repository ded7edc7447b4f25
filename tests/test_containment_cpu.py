"""Issue 13, item 3: wall-clock deadlines hold for C work (SPEC 3.3).

The count hook fires every TICK instructions; a loop whose every instruction is milliseconds of C work
(utf8.len of a 16 MB string, comparing two 8 MB strings) would see it fire seconds apart, overrun its
deadline and, while it holds the GIL, stall every other thread of the server. These attacks must end
within their deadline + 0.5 s, never keep another Python thread waiting for more than 0.1 s, and the
O(n) library functions must charge the instruction budget for the bytes they touch. Each runs with
and without the C bridge (sandbox._luabridge), on a real Sandbox and on a real server.
"""
from __future__ import annotations

import statistics
import threading
import time

import pytest

from _server_fixtures import running_site
from helpers import write_plugin as write_site_plugin
from test_sandbox_adversarial import OK_JSON, assert_recovers, call, call_json, handler, make_vm

from modula_desktop.core.plugins.runtime import sandbox as sandbox_module
from modula_desktop.core.plugins.errors import PluginCallError
from modula_desktop.core.settings import PluginSettings

# the slack the issue allows past a deadline, and the longest another thread may wait for the GIL in
# these in-process tests (a call holding it would show a gap of its whole 0.5 s deadline; the rest of
# the margin is for a machine busy with other work; the server test asserts the 100 ms p95)
OVERRUN = 0.5
MAX_GAP = 0.25

# strings built inside the 32 MiB limit: 16 MiB and 8 MiB of ASCII, two distinct 6 MiB ones, 8 MiB of
# spaces before a digit (tonumber and string arithmetic skip them one by one), a table of 200,000 strings
S16 = 'local s16 = ("a"):rep(2^22) s16 = s16 .. s16 .. s16 .. s16\n'
S8 = 'local s8 = ("a"):rep(2^23)\n'
AB = 'local a8, b8 = ("a"):rep(6 * 2^20), ("a"):rep(6 * 2^20 - 1) .. "b"\n'
SP = 'local sp = (" "):rep(2^23) .. "1"\n'
T = 'local t = {} for i = 1, 200000 do t[i] = "abcdefgh" end\n'

# every one loops on C work the count hook cannot see
C_WORK = {
    "utf8_len_16mb": S16 + "local n = 0 while true do n = n + utf8.len(s16) end",
    "utf8_len_in_coroutine": S16 + "coroutine.wrap(function() while true do utf8.len(s16) end end)()",
    "utf8_len_in_nested_coroutines": S16 + """
        coroutine.wrap(function()
          local co = coroutine.create(function() while true do utf8.len(s16) end end)
          coroutine.resume(co)
          while true do utf8.len(s16) end
        end)()""",
    "utf8_len_pcall_swallows": S16 + """
        for i = 1, 1e9 do pcall(function() while true do utf8.len(s16) end end) end
        return {json = {survived = true}}""",
    "utf8_len_xpcall_swallows": S16 + """
        for i = 1, 1e9 do xpcall(function() while true do utf8.len(s16) end end, function() return 1 end) end
        return {json = {survived = true}}""",
    "utf8_codepoint_range": S8 + "while true do local x = utf8.codepoint(s8, 1, 900000) end",
    "utf8_char_many": "local c = {} for i = 1, 200000 do c[i] = 0x10FFFF end "
                      "while true do local x = utf8.char(table.unpack(c)) end",
    "utf8_offset_continuation_run": 'local u = "a" .. ("\\128"):rep(2^23) while true do utf8.offset(u, 2, 1) end',
    "string_byte_range": S8 + "while true do local x = s8:byte(1, 900000) end",
    "string_upper": S8 + "while true do local x = s8:upper() end",
    "string_lower": S8 + "while true do local x = s8:lower() end",
    "string_reverse": S8 + "while true do local x = s8:reverse() end",
    "string_sub": S8 + "while true do local x = s8:sub(2) end",
    "string_rep_huge": 'while true do local x = ("ab"):rep(2^22) end',
    "string_format_s": S8 + 'while true do local x = string.format("%s", s8) end',
    "string_format_width": S8 + 'while true do local x = string.format("%99s|%-99s", s8, "x") end',
    "concat_operator": S8 + 'while true do local x = s8 .. "y" end',
    "table_concat": T + "while true do local x = table.concat(t) end",
    "table_insert_front": T + "while true do table.insert(t, 1, 'x') table.remove(t, 1) end",
    "table_unpack": T + "while true do local n = select('#', table.unpack(t, 1, 200000)) end",
    "tonumber_long": SP + "while true do local x = tonumber(sp) end",
    "string_arithmetic": SP + "while true do local x = sp + 1 end",
    "tostring_long_name": S8 + "local o = setmetatable({}, {__name = s8}) while true do local x = tostring(o) end",
    # no library function at all: only the watchdog can stop these in time
    "compare_long_strings": AB + "while true do local x = a8 < b8 end",
    "equal_long_strings": AB + "while true do local x = a8 == b8 end",
    "compare_in_coroutine": AB + "coroutine.wrap(function() while true do local x = a8 < b8 end end)()",
    "compare_pcall_swallows": AB + """
        for i = 1, 1e9 do pcall(function() while true do local x = a8 < b8 end end) end
        return {json = {survived = true}}""",
}
# the path without the bridge: a sample of each kind
LUPA_SAMPLE = ("utf8_len_16mb", "utf8_len_in_coroutine", "utf8_len_pcall_swallows", "table_concat",
               "string_arithmetic", "compare_long_strings", "compare_in_coroutine", "compare_pcall_swallows")


@pytest.fixture(params=["bridge", "lupa"])
def path(request, monkeypatch):
    if request.param == "bridge" and sandbox_module._luabridge is None:
        pytest.skip("the C bridge is not built here")
    if request.param == "lupa":
        monkeypatch.setattr(sandbox_module, "_luabridge", None)
    return request.param


class Ticker:
    """A Python thread that sleeps 1 ms at a time and records how long each sleep really took: a thread
    that holds the GIL shows up as one long gap."""

    def __init__(self):
        self.gaps, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        last = time.monotonic()
        while not self._stop.is_set():
            time.sleep(0.001)
            now = time.monotonic()
            self.gaps.append(now - last)
            last = now

    def __enter__(self):
        self._thread.start()
        time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_attack(vm, timeout):
    with Ticker() as ticker:
        start = time.monotonic()
        with pytest.raises(PluginCallError) as info:
            call(vm, timeout=timeout)
        elapsed = time.monotonic() - start
    return info.value, elapsed, max(ticker.gaps)


@pytest.mark.parametrize("name", sorted(C_WORK))
def test_c_work_ends_by_its_deadline_without_holding_the_gil(tmp_path, path, name):
    if path == "lupa" and name not in LUPA_SAMPLE:
        pytest.skip("sampled on the lupa path")
    # the default instruction budget (50 M): the deadline or the bytes charged must stop these
    vm = make_vm(tmp_path, handler(C_WORK[name]), settings=PluginSettings())
    err, elapsed, gap = run_attack(vm, timeout=0.5)
    assert err.kind in ("timeout", "budget"), err.message
    assert "exceeded" in err.message
    assert elapsed < 0.5 + OVERRUN, f"ran {elapsed:.2f} s against a 0.5 s deadline"
    assert gap < MAX_GAP, f"another thread waited {gap * 1000:.0f} ms for the GIL"
    assert_recovers(vm, broken=True)


def test_a_request_the_bridge_does_not_take_is_held_to_its_deadline_too(tmp_path, path):
    # a JSON body goes to Lua as a table: the bridge's entry declines it and the call goes through lupa
    vm = make_vm(tmp_path, handler(AB + "while true do local x = a8 < b8 end"), settings=PluginSettings())
    index = next(r.index for r in vm.routes if r.path == "/x")
    req = {"method": "POST", "path": "/x", "body": '{"a": [1]}', "client_ip": "127.0.0.1", "headers": {},
           "query": {}, "params": {}, "json": {"a": [1]}}
    with Ticker() as ticker:
        start = time.monotonic()
        with pytest.raises(PluginCallError) as info:
            vm.call_route(index, req, timeout=0.5)
        elapsed = time.monotonic() - start
    assert info.value.message == "time budget exceeded (the handler ran longer than 0.5 s)"
    assert elapsed < 0.5 + OVERRUN
    assert max(ticker.gaps) < MAX_GAP
    assert_recovers(vm, broken=True)


# Library functions that do O(n) work in C charge the instruction budget for the bytes (or elements)
# they touch: with a deadline far away, the 5 M instruction budget stops each loop within seconds.
CHARGED = {
    "utf8.len": "utf8.len(s8)",
    "utf8.codepoint": "utf8.codepoint(s8, 1, 200000)",
    "utf8.char": "utf8.char(table.unpack(t, 1, 50000))",
    "utf8.offset": "utf8.offset(s8, -1, 1)",
    "string.byte": "s8:byte(1, 200000)",
    "string.upper": "s8:upper()",
    "string.lower": "s8:lower()",
    "string.reverse": "s8:reverse()",
    "string.sub": "s8:sub(2)",
    "string.rep": '("x"):rep(2^23)',
    "string.format": 'string.format("%s", s8)',
    "string.char": "string.char(table.unpack(t, 1, 50000))",
    "table.concat": "table.concat(t)",
    "table.insert": "table.insert(t, 1, 1)",
    "table.remove": "table.remove(t, 1)",
    "table.unpack": "table.unpack(t, 1, 200000)",
    "table.sort": "table.sort(t)",
    "tonumber": "tonumber(sp)",
    "tostring": "tostring(named)",
    "string arithmetic": "sp + 1",
}
CHARGE_PRELUDE = """
local s8 = ("a"):rep(2^23)
local sp = (" "):rep(2^23) .. "1"
local t = {} for i = 1, 200000 do t[i] = 65 end
local named = setmetatable({}, {__name = s8})
"""


@pytest.mark.parametrize("name", sorted(CHARGED))
def test_o_n_library_functions_charge_the_instruction_budget(tmp_path, name):
    vm = make_vm(tmp_path, handler(CHARGE_PRELUDE + "while true do local x = " + CHARGED[name] + " end"))
    start = time.monotonic()
    with pytest.raises(PluginCallError) as info:
        call(vm, timeout=30.0)
    assert info.value.kind == "budget", info.value.message
    assert info.value.message == "instruction budget exceeded (5000000 instructions)"
    assert time.monotonic() - start < 3.0
    assert_recovers(vm, broken=True)


def test_small_work_is_not_charged_out_of_proportion(tmp_path):
    # 20,000 calls on short strings stay far inside the 5 M budget
    vm = make_vm(tmp_path, handler("""
        local s, n = "hello, world", 0
        for i = 1, 20000 do
          n = n + utf8.len(s) + #s:upper() + #s:sub(2, 5) + s:byte(1) + #table.concat({s, s}) + #tostring(i)
          n = n + (tonumber("12") or 0) + #string.format("%d %s", i, s) + ("3" + 1)
        end
        return {json = {n = n}}"""))
    assert call_json(vm)["n"] > 0
    vm.reset()
    assert call_json(vm, "/ok") == OK_JSON


def test_the_watchdog_trip_is_sticky(tmp_path, path):
    # the deadline passes during one long comparison loop; the plugin catches the error and tries to
    # keep going and to return normally: the call still fails with the time budget
    vm = make_vm(tmp_path, handler(AB + """
        local caught = 0
        for i = 1, 100 do
          local ok = pcall(function() while true do local x = a8 < b8 end end)
          if not ok then caught = caught + 1 end
        end
        return {json = {caught = caught}}"""), settings=PluginSettings())
    err, elapsed, _ = run_attack(vm, timeout=0.5)
    assert err.kind == "timeout", err.message
    assert err.message == "time budget exceeded (the handler ran longer than 0.5 s)"
    assert elapsed < 0.5 + OVERRUN


def test_a_plain_handler_still_serves_after_a_long_one(tmp_path, path):
    # after a call dropped the GIL and was stopped by the watchdog, the same runtime serves again
    vm = make_vm(tmp_path, handler(AB + "while true do local x = a8 < b8 end"), settings=PluginSettings())
    run_attack(vm, timeout=0.3)
    vm.broken = False
    for _ in range(3):
        vm.reset()
        assert call_json(vm, "/ok") == OK_JSON


# ---- on a real server: three clients hammer such a route ----------------------------------------

ATTACK_PLUGIN = """
local s16 = ("a"):rep(2^22) s16 = s16 .. s16 .. s16 .. s16
http.handle("GET", "/utf8", function(req)
  local n = 0
  while true do n = n + utf8.len(s16) end
end)
http.handle("GET", "/compare", function(req)
  local a, b = ("a"):rep(2^23), ("a"):rep(2^23 - 1) .. "b"
  while true do local x = a < b end
end)
"""


def hammer(client, route, seconds, durations, statuses):
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        start = time.monotonic()
        r = client.get(route)
        durations.append(time.monotonic() - start)
        statuses.append(r.status)


@pytest.mark.parametrize("route", ["utf8", "compare"])
def test_three_clients_hammering_c_work_on_a_real_server(tmp_path, path, route):
    deadline = 2.0
    write_site_plugin(tmp_path, "attack", ATTACK_PLUGIN, info_extra='permissions = {"http"}')
    settings = {"timeout_s": deadline, "max_failures": 1000, "max_vms": 4, "hook_reserve_vms": 1}
    with running_site(tmp_path, settings, plugins=("http_test_plugin",)) as r:
        c = r.client
        c.approve_all("attack")
        c.approve_all("http_test_plugin")
        durations, statuses = [], []
        clients = [threading.Thread(target=hammer, args=(c, f"/api/v1/plugins/attack/{route}", 2 * deadline,
                                                         durations, statuses)) for _ in range(3)]
        for t in clients:
            t.start()
        time.sleep(0.3)
        health, others = [], []
        while any(t.is_alive() for t in clients):
            start = time.monotonic()
            assert c.get("/api/v1/health").status == 200
            health.append(time.monotonic() - start)
            if len(health) % 10 == 0:
                others.append(c.get("/api/v1/plugins/http_test_plugin/hello").status)
            time.sleep(0.02)
        for t in clients:
            t.join()
        assert statuses and set(statuses) <= {500, 504}, statuses
        assert max(durations) < deadline + OVERRUN, f"a handler ran {max(durations):.2f} s"
        assert len(health) >= 20
        p95 = statistics.quantiles(health, n=20)[-1]
        assert p95 < 0.1, f"health p95 {p95 * 1000:.0f} ms under attack (max {max(health) * 1000:.0f} ms)"
        assert others and set(others) == {200}
        assert c.get("/api/v1/plugins/http_test_plugin/hello").status == 200

