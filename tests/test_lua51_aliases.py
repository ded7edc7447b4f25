"""The Lua 5.1 globals ModulaCMS plugins rely on exist as aliases (issue 15, item 5)."""
from __future__ import annotations

from modula_desktop.core.plugins.runtime.vm import PluginVM, VMContext
from modula_desktop.core.settings import PluginSettings


def run(tmp_path, body):
    d = tmp_path / "p"
    d.mkdir()
    (d / "init.lua").write_text('plugin_info = {name="p", version="1", description="d"}\n' + body)
    vm = PluginVM(VMContext("p", d, PluginSettings()))
    vm.load()
    return lambda name: vm.sandbox.from_lua(vm.sandbox.fn("get_global")(name.encode()))


def test_unpack_getn_pow(tmp_path):
    g = run(tmp_path, """
a, b, c = unpack({1, 2, 3})
n = table.getn({"x", "y"})
p = math.pow(2, 10)
same = unpack == table.unpack
ok1, e1 = pcall(table.getn, 5)
ok2, e2 = pcall(math.pow, "a", 2)
""")
    assert (g("a"), g("b"), g("c")) == (1, 2, 3)
    assert g("n") == 2 and g("p") == 1024.0 and g("same") is True
    assert "table expected" in g("e1") and "number expected" in g("e2")


def test_unpack_keeps_its_bounds(tmp_path):
    # the alias is the sandbox's bounded table.unpack, not the raw C one
    g = run(tmp_path, "ok, err = pcall(unpack, {}, 1, 1e8)")
    assert g("ok") is False and g("err")
