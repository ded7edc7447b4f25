"""The LuaLS annotation files (issue 15, editor stubs): `modula plugin init` writes them with a .luarc.json, and
they are kept in step with the API — every function a real VM's modules hold is annotated, and every
annotated function exists."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from modula_desktop.core.plugins.authoring.scaffold import TYPES_DIR
from modula_desktop.core.plugins.runtime.vm import PluginVM, VMContext
from modula_desktop.core.settings import PluginSettings
from modula_desktop.core.storage import open_database

# every Lua API module a plugin may see; one absent from this build (not yet built) is skipped
MODULES = ("db", "http", "hooks", "log", "json", "request", "core", "tui")
STUB = re.compile(r"^function (\w+)\.(\w+)\(", re.M)


def annotated() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in TYPES_DIR.glob("*.lua"):
        text = path.read_text(encoding="utf-8")
        assert text.startswith("---@meta"), f"{path.name} must start with ---@meta (LuaLS never runs it)"
        for module, fn in STUB.findall(text):
            out.setdefault(module, set()).add(fn)
    return out


def live_modules(tmp_path) -> dict[str, set[str]]:
    root = tmp_path / "plugins" / "p"
    root.mkdir(parents=True)
    names = ", ".join(f'"{m}"' for m in MODULES)
    # a screen declared: the tui module is there too (from on_init on)
    (root / "screens").mkdir()
    (root / "screens" / "main.lua").write_text("function screen(ctx) coroutine.yield(tui.grid({})) end\n")
    (root / "init.lua").write_text(
        'plugin_info = {name = "p", version = "1.0.0", description = "stubs", '
        'screens = {{name = "main", label = "Main"}}}\n'
        f"function on_init()\n  FOUND = {{}}\n  for _, m in ipairs({{{names}}}) do\n"
        "    local t = _G[m]\n    if type(t) == 'table' then\n      local fns = {}\n"
        "      for k, v in pairs(t) do if type(v) == 'function' then fns[#fns + 1] = k end end\n"
        "      FOUND[m] = table.concat(fns, ' ')\n    end\n  end\nend\n", encoding="utf-8")
    vm = PluginVM(VMContext("p", root, PluginSettings(), database=open_database(tmp_path / "site.db")))
    vm.load()
    vm.call_init()
    try:
        found = vm.sandbox.fn("get_global")(b"_G")[b"FOUND"]
        return {k.decode(): set(found[k].decode().split()) for k in found}
    finally:
        vm.close()


def test_every_api_function_is_annotated_and_nothing_else(tmp_path):
    live = live_modules(tmp_path)
    stubs = annotated()
    assert {"db", "http", "hooks", "log", "json", "request", "tui"} <= set(live)
    for module, functions in live.items():
        assert functions == stubs.get(module, set()), (
            f"types/ for `{module}`: missing {sorted(functions - stubs.get(module, set()))}, "
            f"not in the API {sorted(stubs.get(module, set()) - functions)}")
    extra = set(stubs) - set(live) - {"test"}
    assert not extra, f"annotated modules no plugin sees: {sorted(extra)}"


def test_the_test_module_is_annotated_as_testing_lua_defines_it():
    lua = (Path(__file__).resolve().parents[1] / "modula_desktop/core/plugins/lua/testing.lua").read_text()
    defined = set(re.findall(r"^function test\.(\w+)\(", lua, re.M))
    assert defined and defined == annotated()["test"]


def test_plugin_init_writes_the_annotations_and_luarc(tmp_path):
    out = subprocess.run([sys.executable, "-m", "modula_desktop", "plugin", "init", "my_notes",
                          "--site", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    plugin = tmp_path / "plugins" / "my_notes"
    luarc = json.loads((plugin / ".luarc.json").read_text())
    assert luarc["runtime.version"] == "Lua 5.4" and luarc["workspace.library"] == ["types"]
    assert {p.name for p in (plugin / "types").glob("*.lua")} == {p.name for p in TYPES_DIR.glob("*.lua")}
    # the new plugin still validates and passes its own tests with the annotations beside it
    for cmd in (["plugin", "validate", str(plugin)], ["plugin", "test", str(plugin)]):
        run = subprocess.run([sys.executable, "-m", "modula_desktop", *cmd], capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
