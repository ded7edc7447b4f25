"""`modula plugin init NAME`: a new plugin folder with a manifest, an example route and hook, lib/, test/, and
the editor annotations of the plugin API (types/ and .luarc.json, for lua-language-server)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ...errors import ValidationError
from ..lifecycle.manifest import check_name


def _lua_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


INIT = """-- {name}: created by `modula plugin init`.
plugin_info = {{
  name = {q_name},
  version = {q_version},
  description = {q_description},
  author = {q_author},
  license = {q_license},
  -- What this plugin may use. Remove what it does not need: the author approves each route and hook.
  permissions = {{"db", "http", "hooks"}},
}}

local greeting = require("greeting")

function on_init()
  db.define_table("notes", {{
    columns = {{
      {{name = "text", type = "text", not_null = true}},
    }},
  }})
  log.info("{name} ready")
end

-- Served at /api/v1/plugins/{name}/hello once approved.
http.handle("GET", "/hello", function(req)
  return {{status = 200, json = {{message = greeting.hello(req.query.name)}}}}
end)

-- Runs after an entry is published (once approved).
hooks.on("after_publish", "content", function(entry)
  db.insert("notes", {{text = "published: " .. entry.title}})
end)
"""

LIB = """-- Modules in lib/ are loaded with require("greeting").
local M = {}

function M.hello(name)
  return "Hello, " .. (name or "world") .. "!"
end

return M
"""

TEST = """-- Run with: modula plugin test plugins/{name}

function test_hello_default()
  local res = test.request("GET", "/hello")
  test.assert_eq(res.status, 200)
  test.assert_eq(res.json.message, "Hello, world!")
end

function test_hello_name()
  local res = test.request("GET", "/hello?name=Ada")
  test.assert_eq(res.json.message, "Hello, Ada!")
end

function test_publish_writes_a_note()
  test.fire("after_publish", "content", {{title = "First post"}})
  test.assert_eq(db.count("notes", {{}}), 1)
end
"""


TYPES_DIR = Path(__file__).resolve().parent / "types"

# lua-language-server's settings: Lua 5.4, the API annotations in types/, and the API's globals known
LUARC = {
    "$schema": "https://raw.githubusercontent.com/LuaLS/vscode-lua/master/setting/schema.json",
    "runtime.version": "Lua 5.4",
    "workspace.library": ["types"],
    "workspace.checkThirdParty": False,
    "diagnostics.globals": ["plugin_info", "on_init", "on_shutdown", "db", "http", "hooks", "log", "json",
                            "request", "core", "test", "tui", "screen", "interface", "unpack"],
    "diagnostics.disable": ["lowercase-global"],
}


def write_editor_support(target: Path):
    """types/*.lua (the API's annotations) and .luarc.json into a plugin folder; existing files are replaced."""
    types = target / "types"
    types.mkdir(exist_ok=True)
    for stub in sorted(TYPES_DIR.glob("*.lua")):
        shutil.copyfile(stub, types / stub.name)
    (target / ".luarc.json").write_text(json.dumps(LUARC, indent=2) + "\n", encoding="utf-8")


def scaffold_plugin(plugins_dir: Path, name: str, version="0.1.0", description="", author="", license="MIT") -> Path:
    reason = check_name(name)
    if reason:
        raise ValidationError(f"plugin name '{name}' {reason}")
    target = plugins_dir / name
    if target.exists():
        raise ValidationError(f"{target} already exists")
    (target / "lib").mkdir(parents=True)
    (target / "test").mkdir()
    values = {"name": name, "q_name": _lua_string(name), "q_version": _lua_string(version),
              "q_description": _lua_string(description or f"The {name} plugin"),
              "q_author": _lua_string(author), "q_license": _lua_string(license)}
    (target / "init.lua").write_text(INIT.format(**values), encoding="utf-8")
    (target / "lib" / "greeting.lua").write_text(LIB, encoding="utf-8")
    (target / "test" / f"{name}.test.lua").write_text(TEST.format(**values), encoding="utf-8")
    write_editor_support(target)
    return target
