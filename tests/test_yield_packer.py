"""The bridge's packer of what a screen yields (_luabridge.c: pack_yield, take_yield; runtime/screens.py:
_copied). A yield is written as JSON text while Lua runs and read back with json.loads, instead of a
Python walk of every table (which held the interpreter lock long enough to stall the window on a
10,000-row table). What it hands over must be exactly what Sandbox.from_lua returns, types included,
and it must decline (the host then converts with from_lua, which raises its own errors) everything
where the two could differ: odd keys, odd values, too deep, a budget at or past its limit."""
from __future__ import annotations

import json
import math
import threading

import pytest

from modula_desktop.core.plugins.api import tui as protocol
from modula_desktop.core.plugins.errors import ApiError, ConversionLimit
from modula_desktop.core.plugins.runtime import sandbox as sandbox_module
from modula_desktop.core.plugins.runtime.sandbox import Sandbox, runtime_lock

bridge = sandbox_module._luabridge
pytestmark = pytest.mark.skipif(bridge is None, reason="the C bridge is not built here (no C compiler)")
ITEMS, BYTES = protocol.MAX_YIELD_ITEMS, protocol.MAX_YIELD_BYTES


@pytest.fixture(scope="module")
def sb():
    return Sandbox(64)


def lua_value(sb, expr: str):
    with runtime_lock(sb.lua):
        return sb.lua.execute("return " + expr)


def packed(sb, value, items=ITEMS, room=BYTES):
    """The packer's data for value, or None when it declined."""
    packer = sb._t["yield_packer"]()
    assert packer, "the bridge registered no packer"
    with runtime_lock(sb.lua):
        token = packer(value, items, room)
    if token is None:
        return None
    text = bridge.take_yield(token)
    assert text is not None
    return ("data", json.loads(text))


def converted(sb, value, items=ITEMS, room=BYTES):
    try:
        return ("data", sb.from_lua(value, _budget=[items, room]))
    except (ApiError, ConversionLimit) as exc:
        return ("error", type(exc), str(exc))


def same(a, b) -> bool:
    """Equal with the same types throughout: 3 is not 3.0, -0.0 is not 0.0, NaN equals NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


PACKED = [
    # strings: JSON escapes, control bytes, invalid and valid UTF-8, at a string's end before the quote
    r'{s = "plain", q = "a \"quoted\" \\ back\\slash", c = "\0\1\9\10\13\27\31\127"}',
    r'{"caf\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xff", "a\xe2\x82", "\xed\xa0\x80", "\x80\x80x", "\xc3"}',
    r'{["\xff"] = 1, ["\xfe"] = 2, ["k\0"] = 3, ["\"k\""] = 4}',  # two keys that decode alike: the last wins
    r'{string.rep("x", 10240), string.rep("\1", 300), ""}',
    # numbers: integers at the ends, floats that look like integers, the odd ones
    "{0, -1, math.maxinteger, math.mininteger, 1.5, 3.0, -0.0, 0.1, 1e300, 1e-300, 5e-324, 2^53 + 1, 1e16, -2.5e-7}",
    "{1/0, -1/0, 0/0, -(0/0), 123456789012345678}",
    "{true, false, {true}, {x = false}}",
    # shapes: empty tables, nesting, shared subtables copied, a layout
    "{}",
    "{{}, {{}}, {a = {}}}",
    "(function() local s = {1, 2} return {s, s, {s = s}} end)()",
    "(function() local t = {} for i = 1, 63 do t = {t} end return t end)()",  # 64 levels: from_lua's limit
    '{type = "grid", columns = {{span = 12, cells = {{title = "T", height = 1, content = {type = "table", '
    'headers = {"#", "name"}, rows = {{"1", "a"}, {"2", "b"}}, cursor = 0}}}}}}',
    '{action = "toast", message = "saved", level = "info"}',
    # a table built out of order and one whose array part was emptied: still exactly 1..n
    "(function() local t = {} t[3] = 'c' t[1] = 'a' t[2] = 'b' return t end)()",
    "(function() local t = {1, 2, 3, 4} t[4] = nil t[3] = nil return t end)()",
    # metatables: raw access only, as from_lua (no __index, __pairs or __len runs)
    "setmetatable({a = 1}, {__index = function() error('ran') end, __pairs = function() error('ran') end})",
    "setmetatable({1, 2}, {__len = function() return 5 end, __index = function() return 'x' end})",
]

DECLINED = [
    "{[2] = 'b'}",                 # not 1..n: a dict with integer keys
    "{[0] = 'z', 'a'}",
    "{'a', x = 1}",                # mixed keys
    "{x = 1, 'a'}",
    "{[1.5] = 'f'}",
    "{[true] = 1}",
    "{f = function() end}",
    "{coroutine.create(function() end)}",
    "{[{}] = 1}",
    "(function() local t = {} for i = 1, 64 do t = {t} end return t end)()",  # 65 levels: from_lua refuses
    "(function() local t = {} t.self = t return t end)()",                  # a cycle
]


@pytest.mark.parametrize("expr", PACKED)
def test_packed_data_is_from_luas_data(sb, expr):
    value = lua_value(sb, expr)
    got, want = packed(sb, value), converted(sb, value)
    assert got is not None, "the packer declined a value it handles"
    assert want[0] == "data"
    assert same(got[1], want[1]), (got[1], want[1])


@pytest.mark.parametrize("expr", DECLINED)
def test_what_could_differ_is_declined(sb, expr):
    value = lua_value(sb, expr)
    assert packed(sb, value) is None


def test_the_metamethods_did_not_run(sb):
    value = lua_value(sb, "(function() ran = 0 return setmetatable({a = 1}, {__index = function() ran = ran + 1 end,"
                          " __pairs = function() ran = ran + 1 end}) end)()")
    assert same(packed(sb, value)[1], {"a": 1})
    assert lua_value(sb, "ran") == 0


@pytest.mark.parametrize("expr", [
    '{type = "text", lines = {"a", "bb", {text = "ccc", bold = true}}}',
    "{{}, {{}}, {}}",                                     # empty tables last: their cost is not checked
    '{rows = {{"1", "x"}, {"2", "yy"}}, n = 3.5, e = {}}',
])
def test_at_every_budget_the_packer_hands_over_only_what_from_lua_gives(sb, expr):
    """Around the least items and bytes from_lua needs: where the packer hands something over, from_lua
    gives the same; where from_lua raises, the packer declined (at the very limit it may decline what
    from_lua still allows: the host then converts)."""
    value = lua_value(sb, expr)
    need_items = next(n for n in range(1, 200) if converted(sb, value, n, BYTES)[0] == "data")
    need_bytes = next(n for n in range(1, 2000) if converted(sb, value, ITEMS, n)[0] == "data")
    for items in range(need_items - 3, need_items + 4):
        for room in range(need_bytes - 3, need_bytes + 4):
            got, want = packed(sb, value, items, room), converted(sb, value, items, room)
            if got is not None:
                assert want[0] == "data" and same(got[1], want[1]), (items, room)
            if want[0] == "error":
                assert got is None, (items, room)
    assert packed(sb, value, need_items + 1, need_bytes + 1) is not None


def test_a_budget_far_exceeded_is_declined_and_from_lua_says_why(sb):
    value = lua_value(sb, "(function() local t = {} for i = 1, 5000 do t[i] = {i, 'row ' .. i} end return t end)()")
    assert packed(sb, value, 1000, BYTES) is None
    assert converted(sb, value, 1000, BYTES)[:2] == ("error", ApiError)
    assert packed(sb, value, ITEMS, 10_000) is None
    assert converted(sb, value, ITEMS, 10_000)[:2] == ("error", ConversionLimit)


def test_a_token_is_taken_once_on_its_own_thread_and_a_newer_pack_replaces_it(sb):
    packer = sb._t["yield_packer"]()
    a, b = lua_value(sb, "{'a'}"), lua_value(sb, "{'b'}")
    with runtime_lock(sb.lua):
        first = packer(a, ITEMS, BYTES)
        second = packer(b, ITEMS, BYTES)
    assert bridge.take_yield(first) is None  # replaced by the second
    seen = []
    other = threading.Thread(target=lambda: seen.append(bridge.take_yield(second)))
    other.start()
    other.join()
    assert seen == [None]  # another thread's buffer holds nothing of it
    assert json.loads(bridge.take_yield(second)) == ["b"]
    assert bridge.take_yield(second) is None  # taken
    assert bridge.take_yield(0) is None and bridge.take_yield(-5) is None
    with pytest.raises(TypeError):
        bridge.take_yield("1")


def test_a_large_text_is_handed_over_and_its_buffer_let_go(sb):
    value = lua_value(sb, "(function() local t = {} for i = 1, 10000 do t[i] = {tostring(i), 'row ' .. i, "
                          "string.rep('x', 200)} end return t end)()")
    got = packed(sb, value)
    assert got is not None and len(got[1]) == 10000 and got[1][9999] == ["10000", "row 10000", "x" * 200]
    assert same(got[1], converted(sb, value)[1])


def test_the_packer_refuses_what_is_not_a_table_and_odd_arguments(sb):
    packer = sb._t["yield_packer"]()
    with runtime_lock(sb.lua):
        assert packer("text", ITEMS, BYTES) is None
        assert packer(5, ITEMS, BYTES) is None
        assert packer(lua_value(sb, "{1}"), "x", BYTES) is None
        assert packer(lua_value(sb, "{1}"), ITEMS) is None


# ---- through a session: the same layouts with the packer and without it -------------------------------
SCREEN = r'''
function screen(ctx)
  local rows = {}
  for i = 1, 3000 do rows[i] = {tostring(i), "caf\xc3\xa9 \"" .. i .. "\"", "\xff\1"} end
  local ev = coroutine.yield(tui.grid({tui.column(12, {tui.cell("Rows", 1, tui.table({"#", "a", "b"}, rows, 2))})}))
  ev = coroutine.yield(tui.grid({tui.column(6, {tui.cell("P", 1, tui.progress(0.25, "quarter"))}),
    tui.column(6, {tui.cell("L", 2, tui.list({{label = "x", id = "1"}, {label = "y", id = 2.0}}, 1))})}))
  ev = coroutine.yield({type = "table", headers = {"n"}, rows = {{1, 2.5, true}, {"s"}}})
  local big = {}
  for i = 1, 200000 do big[i] = {i, i} end
  coroutine.yield({type = "text", lines = big})
end
'''


def run_screen(tmp_path, monkeypatch, with_bridge: bool):
    import queue

    from _server_fixtures import running_site
    from helpers import write_plugin

    from modula_desktop.core.plugins.runtime import screens

    if not with_bridge:
        monkeypatch.setattr(sandbox_module, "_luabridge", None)
    d = write_plugin(tmp_path, "pk", "", info_extra='permissions = {}, screens = {{name = "main"}}')
    (d / "screens").mkdir()
    (d / "screens" / "main.lua").write_text(SCREEN, encoding="utf-8")
    tokens = []
    real = screens._copied

    def spy(vm, value, token):
        tokens.append(token)
        return real(vm, value, token)
    monkeypatch.setattr(screens, "_copied", spy)
    outs = []
    with running_site(tmp_path, {"ui_timeout_s": 5.0}, plugins=()) as site:
        svc = site.service
        svc.approvals.set_ui("pk", "screen", "main", True)
        q: queue.Queue = queue.Queue()
        session = svc.screens.open("pk", "screen", "main", protocol.init_event(80, 24), q.put)
        for i in range(4):
            out = q.get(timeout=30)
            outs.append(out)
            if i < 3:
                session.send(protocol.key_event("down"))
        session.close()
        session.join(10)
    return outs, tokens


def test_a_session_renders_the_same_with_the_packer_and_without_it(tmp_path, monkeypatch):
    from modula_desktop.core.plugins.runtime.screens import Failed, Render

    with_packer, tokens = run_screen(tmp_path / "a", monkeypatch, True)
    assert all(t is not None for t in tokens[:3]), tokens  # the layouts were packed
    monkeypatch.undo()
    without, tokens_without = run_screen(tmp_path / "b", monkeypatch, False)
    assert tokens_without == [None] * len(tokens_without)
    for a, b in zip(with_packer[:3], without[:3]):
        assert isinstance(a, Render) and isinstance(b, Render)
        assert same(a.value.layout or a.value.primitive, b.value.layout or b.value.primitive)
    table = with_packer[0].value.layout["columns"][0]["cells"][0]["content"]
    assert table["rows"][0] == ["1", 'caf\u00e9 "1"', "\ufffd\x01"] and table["cursor"] == 2
    assert with_packer[2].value.primitive["rows"] == [["1", "2.5", "true"], ["s"]]
    # 400,002 items is past the yield's budget: declined by the packer, refused by from_lua, same words
    assert isinstance(with_packer[3], Failed) and isinstance(without[3], Failed)
    assert with_packer[3].message == without[3].message and "unusable value" in with_packer[3].message


@pytest.mark.parametrize("rows", [
    [["1", "a"], ["2", "b", "c"], []],
    [["1", "x" * (protocol.MAX_STRING_LEN + 5)]],          # a cell to cut: the slow path
    [["1", 2], ["3", 4.0, True, None]],                     # cells to write as gopher-lua does
    [{1: "a", 2: "b"}, ["c"], "not a row", 7],              # rows that are dicts, and rows dropped
    [],
])
def test_plain_rows_skip_the_per_cell_step_and_give_the_same_table(rows):
    """parse_yield's fast path for a table of plain string rows gives what the per-cell path gives."""
    import copy

    got = protocol.parse_yield({"type": "table", "headers": ["a"], "rows": copy.deepcopy(rows)}).primitive["rows"]
    want = [[protocol._cut(protocol._lua_text(c)) for c in protocol._seq(r)] for r in rows if protocol._table(r)]
    assert got == want
    assert all(type(c) is str for r in got for c in r)
