"""plugin_info: extraction rules and validation (SPEC 3.1, 3.8)."""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass

from ..errors import PluginLoadError

NAME_RE = re.compile(r"^[a-z0-9_]{1,32}$")
PERMISSIONS = ("db", "http", "hooks", "hooks:before")
# permissions a plugin gets only when it declares them (never part of the default above)
EXPLICIT_PERMISSIONS = ("request", "core:read", "core:write")
KNOWN_PERMISSIONS = PERMISSIONS + EXPLICIT_PERMISSIONS
OPTIONAL_TEXT = ("author", "license", "min_cms_version")
# names the admin API uses beside plugin names (/api/v1/admin/plugins/routes, .../hooks)
RESERVED_NAMES = ("routes", "hooks", "domains", "requests", "core", "screens")
# ModulaCMS's plugin_info.core_access = {content_data = {"read", "write"}}: the tables this app has and
# what each allows (SPEC 3.10); core_access is read as the permissions core:read / core:write
CORE_ACCESS_TABLES = {"content": ("read", "write"), "content_data": ("read", "write"),
                      "revisions": ("read",), "content_revision": ("read",)}
# screens/<name>.lua and interfaces/<name>.lua: names as plugin names are
UI_NAME_RE = re.compile(r"^[a-z0-9_]{1,32}$")
INTERFACE_MODES = ("overlay", "inline")


@dataclass(frozen=True)
class ScreenDef:
    """plugin_info.screens[i] (SPEC 3.12): a page of the window's sidebar."""

    name: str
    label: str
    icon: str = ""
    hidden: bool = False


@dataclass(frozen=True)
class InterfaceDef:
    """plugin_info.interfaces[i]: an editor for custom fields of type plugin."""

    name: str
    label: str
    mode: str = "inline"


def check_name(name: str) -> str | None:
    """None when name is a valid plugin name, else the reason."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        return "must be 1 to 32 characters of a-z, 0-9 and _"
    if name.endswith("_"):
        return "must not end with an underscore"
    if name in RESERVED_NAMES:
        return "is reserved by the admin API"
    return None


def provisional_name(folder: str) -> str:
    """The name a plugin's VM goes by before its plugin_info is read: the folder's, when that is a valid
    plugin name (any folder name will do: the plugin is its plugin_info.name)."""
    return folder if check_name(folder) is None else "plugin"


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    description: str
    author: str = ""
    license: str = ""
    min_cms_version: str = ""
    dependencies: tuple = ()
    permissions: tuple | None = None  # None: not declared, ModulaCMS default of everything
    # ("read", "write") as ModulaCMS's plugin_info.core_access asks for them (beside permissions)
    core_access: tuple = ()
    screens: tuple = ()     # ScreenDef
    interfaces: tuple = ()  # InterfaceDef

    @property
    def effective_permissions(self) -> tuple:
        base = PERMISSIONS if self.permissions is None else self.permissions
        extra = tuple(f"core:{a}" for a in self.core_access if f"core:{a}" not in base)
        return tuple(sorted(base + extra)) if extra else base

    def allows(self, permission: str) -> bool:
        perms = self.effective_permissions
        if permission == "hooks":
            return "hooks" in perms or "hooks:before" in perms
        return permission in perms

    @property
    def permissions_key(self) -> str:
        """Canonical text of the declared permissions: a change of it resets approvals."""
        declared = None if self.permissions is None else sorted(self.permissions)
        if self.core_access:  # only then: the key of a plugin without core_access stays as it was
            return json.dumps({"permissions": declared, "core_access": sorted(self.core_access)})
        return json.dumps(declared)

    @property
    def core(self) -> tuple:
        """The core access asked for, "read" and/or "write" (permissions core:* or core_access)."""
        perms = self.effective_permissions
        return tuple(a for a in ("read", "write") if f"core:{a}" in perms)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "version": self.version, "description": self.description,
            "author": self.author, "license": self.license, "min_cms_version": self.min_cms_version,
            "dependencies": list(self.dependencies),
            "permissions": None if self.permissions is None else list(self.permissions),
            "effective_permissions": list(self.effective_permissions),
            "core_access": list(self.core_access),
            "screens": [dataclasses.asdict(d) for d in self.screens],
            "interfaces": [dataclasses.asdict(d) for d in self.interfaces],
        }


def parse_manifest(info, folder_name: str) -> tuple[Manifest, list[str]]:
    """Validate plugin_info (already converted to Python). Returns (manifest, warnings)."""
    if info is None:
        raise PluginLoadError("init.lua does not set the global table plugin_info")
    if not isinstance(info, dict):
        raise PluginLoadError("plugin_info must be a table with name, version and description")
    warnings = []
    for key in ("name", "version", "description"):
        if key not in info:
            raise PluginLoadError(f"plugin_info.{key} is required")
        if not isinstance(info[key], str) or not info[key].strip():
            raise PluginLoadError(f"plugin_info.{key} must be a non-empty string")
    name = info["name"]
    reason = check_name(name)
    if reason:
        raise PluginLoadError(f"plugin_info.name '{name}' {reason}")
    if name != folder_name:
        # as in ModulaCMS the plugin is its plugin_info.name, whatever its folder is called
        warnings.append(f"folder '{folder_name}' holds plugin '{name}': it is known by its plugin_info.name "
                        f"(routes under /api/v1/plugins/{name}/, tables plugin_{name}_*)")
    extra = {}
    for key in OPTIONAL_TEXT:
        if key in info:
            if not isinstance(info[key], str):
                raise PluginLoadError(f"plugin_info.{key} must be a string")
            extra[key] = info[key]
    deps = info.get("dependencies", [])
    if isinstance(deps, dict) and not deps:
        deps = []
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise PluginLoadError("plugin_info.dependencies must be a list of plugin names")
    for d in deps:
        if check_name(d):
            raise PluginLoadError(f"plugin_info.dependencies: '{d}' is not a valid plugin name")
        if d == name:
            raise PluginLoadError("plugin_info.dependencies: a plugin cannot depend on itself")
    perms = None
    if "permissions" in info:
        raw = info["permissions"]
        if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
            raise PluginLoadError('plugin_info.permissions must be a list such as {"db", "http"}')
        unknown = [p for p in raw if p not in KNOWN_PERMISSIONS]
        if unknown:
            raise PluginLoadError(f"plugin_info.permissions: unknown permission '{unknown[0]}' "
                                  f"(known: {', '.join(KNOWN_PERMISSIONS)})")
        perms = tuple(sorted(set(raw)))
    core_access = _core_access(info.get("core_access"), warnings) if "core_access" in info else ()
    screens = tuple(_ui_defs(info, "screens"))
    interfaces = tuple(_ui_defs(info, "interfaces"))
    known = {"name", "version", "description", "dependencies", "permissions", "core_access", "screens",
             "interfaces", *OPTIONAL_TEXT}
    for key in info:
        if key not in known:
            warnings.append(f"plugin_info.{key} is not a known field and is ignored")
    if "author" not in info:
        warnings.append("plugin_info.author is not set")
    if "license" not in info:
        warnings.append("plugin_info.license is not set")
    return Manifest(name=name, version=info["version"], description=info["description"],
                    dependencies=tuple(deps), permissions=perms, core_access=core_access, screens=screens,
                    interfaces=interfaces, **extra), warnings


def _core_access(raw, warnings: list) -> tuple:
    """ModulaCMS's core_access table ({content_data = {"read", "write"}}) as the access it asks for here.
    A table this app does not have is a warning (a call on it answers nil, err), not a failure."""
    if isinstance(raw, list) and not raw:
        return ()
    if not isinstance(raw, dict):
        raise PluginLoadError('plugin_info.core_access must be a table such as {content_data = {"read"}}')
    wanted = set()
    if not all(isinstance(t, str) for t in raw):
        raise PluginLoadError('plugin_info.core_access must map table names to lists, such as {content_data = {"read"}}')
    for table, ops in sorted(raw.items()):
        if not isinstance(ops, list) or not all(o in ("read", "write") for o in ops):
            raise PluginLoadError(f'plugin_info.core_access.{table} must be a list of "read" and "write"')
        allowed = CORE_ACCESS_TABLES.get(table)
        if allowed is None:
            warnings.append(f"plugin_info.core_access.{table}: this app has no core table '{table}' "
                            "(only content, content_data and revisions); ignored")
            continue
        for op in ops:
            if op not in allowed:
                warnings.append(f"plugin_info.core_access.{table}: '{op}' is not allowed on {table}; ignored")
            else:
                wanted.add(op)
    return tuple(a for a in ("read", "write") if a in wanted)


def _ui_defs(info: dict, key: str):
    """plugin_info.screens or .interfaces as ScreenDef / InterfaceDef, in order."""
    raw = info.get(key, [])
    if isinstance(raw, dict) and not raw:
        raw = []
    if not isinstance(raw, list):
        raise PluginLoadError(f"plugin_info.{key} must be a list of tables such as {{name = \"main\"}}")
    seen, out = set(), []
    for i, d in enumerate(raw, 1):
        where = f"plugin_info.{key}[{i}]"
        if not isinstance(d, dict):
            raise PluginLoadError(f"{where} must be a table with a name")
        name = d.get("name")
        if not isinstance(name, str) or not UI_NAME_RE.match(name):
            raise PluginLoadError(f"{where}.name must be 1 to 32 characters of a-z, 0-9 and _")
        if name in seen:
            raise PluginLoadError(f"{where}: '{name}' is declared twice")
        seen.add(name)
        label = d.get("label", name)
        if not isinstance(label, str) or not label.strip():
            raise PluginLoadError(f"{where}.label must be a non-empty string")
        if key == "screens":
            icon, hidden = d.get("icon", ""), d.get("hidden", False)
            if not isinstance(icon, str):
                raise PluginLoadError(f"{where}.icon must be a string")
            if not isinstance(hidden, bool):
                raise PluginLoadError(f"{where}.hidden must be true or false")
            out.append(ScreenDef(name, label[:64], icon[:64], hidden))
        else:
            mode = d.get("mode", "inline")
            if mode not in INTERFACE_MODES:
                raise PluginLoadError(f"{where}.mode must be \"overlay\" or \"inline\"")
            out.append(InterfaceDef(name, label[:64], mode))
    return out
