"""`modula plugin list/init/validate/test` and bad input, through the real console entry point."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import write_plugin

ROOT = Path(__file__).resolve().parents[1]


def modula(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "modula_desktop", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=env, cwd=cwd)


def one_line_error(result):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_init_then_validate_then_test_then_list(tmp_path):
    r = modula("plugin", "init", "notes_demo", "--site", tmp_path, "--author", "Ada", "--version", "2.0.0")
    assert r.returncode == 0, r.stderr
    plugin = tmp_path / "plugins" / "notes_demo"
    assert (plugin / "init.lua").is_file() and (plugin / "lib").is_dir() and (plugin / "test").is_dir()
    r = modula("plugin", "validate", plugin)
    assert r.returncode == 0, r.stderr
    assert "ok: notes_demo 2.0.0: 1 route(s), 1 hook(s)" in r.stdout
    r = modula("plugin", "test", plugin)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == "3 passed, 0 failed"
    r = modula("plugin", "list", "--site", tmp_path, "--json")
    data = json.loads(r.stdout)
    assert [(p["name"], p["version"], p["routes"], p["hooks"]) for p in data["plugins"]] == [("notes_demo", "2.0.0", 1, 1)]


def test_init_refuses_bad_names_and_existing_folders(tmp_path):
    assert "must be 1 to 32 characters" in one_line_error(modula("plugin", "init", "Bad-Name", "--site", tmp_path))
    modula("plugin", "init", "twice", "--site", tmp_path)
    assert "already exists" in one_line_error(modula("plugin", "init", "twice", "--site", tmp_path))


def test_validate_errors_exit_1_and_warnings_exit_0(tmp_path):
    bad = write_plugin(tmp_path, "bad", "local x = = 1")
    r = modula("plugin", "validate", bad)
    assert r.returncode == 1 and "syntax error" in one_line_error(r)
    warn = tmp_path / "plugins" / "warn"
    warn.mkdir(parents=True)
    (warn / "init.lua").write_text('plugin_info = {name="warn", version="1", description="d"}')
    r = modula("plugin", "validate", warn)
    assert r.returncode == 0 and "warning: plugin_info.author is not set" in r.stdout
    assert "has no init.lua" in one_line_error(modula("plugin", "validate", tmp_path))
    assert "is not a folder" in one_line_error(modula("plugin", "validate", tmp_path / "missing"))


def test_list_shows_failures_in_text(tmp_path):
    write_plugin(tmp_path, "fine", "")
    write_plugin(tmp_path, "broken", "error('x')")
    r = modula("plugin", "list", "--site", tmp_path)
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "STATE", "ROUTES", "HOOKS"]
    assert any(l.startswith("broken") and "failed" in l for l in lines)
    assert any(l.startswith("fine") and "discovered" in l for l in lines)


def test_plugin_test_failures_and_load_errors(tmp_path):
    p = write_plugin(tmp_path, "t", 'http.handle("GET", "/n", function() return {json={n=1}} end)')
    (p / "test").mkdir()
    (p / "test" / "a.test.lua").write_text(
        "function test_ok() test.assert_eq(test.request('GET', '/n').json.n, 1) end\n"
        "function test_bad() test.assert_eq(1, 2, 'numbers') end\n"
        "function test_writes_are_rolled_back() end\n")
    r = modula("plugin", "test", p, "-v")
    assert r.returncode == 1
    assert "FAIL: numbers: expected 1, got 2 (test/a.test.lua:2)" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "2 passed, 1 failed"
    r = modula("plugin", "test", p, "--filter", "ok", "--json")
    data = json.loads(r.stdout)
    assert (data["passed"], data["failed"]) == (1, 0) and r.returncode == 0
    broken = write_plugin(tmp_path, "broken", "function on_init() error('nope') end")
    r = modula("plugin", "test", broken)
    assert r.returncode == 2 and "nope" in r.stdout


@pytest.mark.parametrize("args, fragment", [
    (["plugin", "frobnicate"], "invalid choice"),
    (["plugin", "list", "--bogus"], "unrecognized arguments"),
    (["plugin", "test", "/nonexistent/x"], "is not a folder"),
    (["plugin", "list", "--site", "/nonexistent/site"], "does not exist"),
    (["serve", "--port", "abc"], "invalid port"),
    (["serve", "--port", "99999"], "invalid port 99999"),
])
def test_wrong_flags_give_one_line(args, fragment):
    line = one_line_error(modula(*args))
    assert fragment in line


def test_bundled_plugins_pass_their_own_tests():
    for plugin in sorted((ROOT / "plugins").iterdir()):
        if (plugin / "test").is_dir():
            r = modula("plugin", "test", plugin)
            assert r.returncode == 0, f"{plugin.name}:\n{r.stdout}\n{r.stderr}"
