"""docs/PLUGINS.md stays in step with the Lua API the sandbox really offers (STYLE.md, after Datasette)."""
import dataclasses
from pathlib import Path

import pytest

from modula_desktop.core.plugins.lifecycle.manifest import KNOWN_PERMISSIONS as PERMISSIONS
from modula_desktop.core.plugins.runtime.vm import EVENTS, PluginVM, VMContext
from modula_desktop.core.settings import PluginSettings

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "PLUGINS.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    d = tmp_path_factory.mktemp("p") / "probe"
    d.mkdir()
    (d / "init.lua").write_text(
        'plugin_info = {name="probe", version="1", description="d"}\n'
        "local out = {}\n"
        "for _, m in ipairs({'db', 'http', 'hooks', 'log', 'json', 'request', 'core'}) do\n"
        "  for k in pairs(_G[m]) do out[#out + 1] = m .. '.' .. k end\n"
        "end\n"
        "api_names = table.concat(out, ' ')\n")
    vm = PluginVM(VMContext("probe", d, PluginSettings()))
    vm.load()
    names = vm.sandbox.fn("get_global")(b"api_names").decode().split()
    return names


def test_every_lua_api_function_is_documented(api):
    assert len(api) > 20
    missing = [n for n in api if n.split(".")[1] not in ("tx_begin",) and n not in DOC]
    assert missing == []


def test_every_event_permission_and_budget_key_is_documented():
    for e in EVENTS:
        assert e in DOC
    for p in PERMISSIONS:
        assert f"`{p}`" in DOC
    for key in ("max_instructions", "max_ops", "hook_max_ops", "timeout_s", "hook_timeout_ms",
                "hook_event_timeout_ms", "after_hook_timeout_ms", "memory_limit_mb", "max_vms",
                "hook_reserve_vms", "max_failures", "reset_interval_s", "hot_reload", "poll_interval_s",
                "debounce_s", "cooldown_s", "drain_timeout_s"):
        assert key in DOC and key in {f.name for f in dataclasses.fields(PluginSettings)}


def test_documented_budget_defaults_match_settings():
    s = PluginSettings()
    assert f"| {s.max_instructions:,} |" in DOC
    assert f"| {s.max_ops} |" in DOC and f"| {s.hook_max_ops} |" in DOC
    assert f"| {s.memory_limit_mb} MiB |" in DOC
