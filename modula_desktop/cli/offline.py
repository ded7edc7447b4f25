"""Offline plugin commands: list, init, validate, test. They read files (and site.db) only."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..core.errors import ValidationError
from ..core.plugins.errors import PluginLoadError
from ..core.plugins.lifecycle.manager import PluginManager, dependency_order, discover
from ..core.plugins.lifecycle.manifest import provisional_name
from ..core.plugins.runtime.vm import PluginVM, VMContext
from ..core.settings import PluginSettings
from ..core.site import Site, default_site_dir
from .main import CliError, EXIT_USAGE_OR_OFFLINE


def _site(args) -> Site:
    site = Site(args.site if getattr(args, "site", None) else default_site_dir())
    if getattr(args, "site", None) and not site.root.is_dir():
        raise CliError(f"site folder {site.root} does not exist")
    return site


def _settings(site: Site) -> PluginSettings:
    return site.settings().plugins if site.settings_path.exists() else PluginSettings()


def inspect_plugin(root: Path, settings: PluginSettings) -> dict:
    """Load a plugin's main chunk offline; returns manifest facts or the error."""
    out = {"name": root.name, "path": str(root), "version": None, "state": "discovered", "routes": 0,
           "hooks": 0, "error": None, "warnings": [], "permissions": None, "dependencies": []}
    vm = PluginVM(VMContext(provisional_name(root.name), root, settings, database=None, log_sink=lambda *a: None))
    try:
        m = vm.load()
    except PluginLoadError as exc:
        out.update(state="failed", error=str(exc))
        return out
    finally:
        vm.close()
    # known by its plugin_info.name (the folder's name may differ: a warning says so)
    out.update(name=m.name, folder=root.name, version=m.version, description=m.description,
               routes=len(vm.routes), hooks=len(vm.hooks),
               warnings=vm.warnings, permissions=m.to_dict()["permissions"], dependencies=list(m.dependencies),
               route_list=[f"{r.method} {r.path}" + (" (public)" if r.public else "") for r in vm.routes],
               hook_list=[f"{h.event}:{h.table}" for h in vm.hooks], domain_list=list(vm.domains),
               ui_list=[(folder, d.name, (root / folder / f"{d.name}.lua").is_file())
                        for folder, defs in (("screens", m.screens), ("interfaces", m.interfaces)) for d in defs])
    out["_manifest"] = m
    return out


def cmd_list(args) -> int:
    site = _site(args)
    settings = _settings(site)
    rows = [inspect_plugin(p, settings) for p in discover(site.plugins_dir)]
    claims: dict[str, list[str]] = {}
    for r in rows:
        if "_manifest" in r:
            claims.setdefault(r["name"], []).append(Path(r["path"]).name)
    for r in rows:  # two folders claiming one name: neither loads (as the app does)
        folders = claims.get(r["name"], ())
        if "_manifest" in r and len(folders) > 1:
            del r["_manifest"]
            r.update(state="failed", error=PluginManager._claimed_twice(r["name"], folders))
    manifests = {r["name"]: r["_manifest"] for r in rows if "_manifest" in r}
    _, problems = dependency_order(manifests)
    enabled = _enabled_flags(site)
    for r in rows:
        r.pop("_manifest", None)
        r.pop("route_list", None)
        r.pop("hook_list", None)
        if r["name"] in problems:
            r.update(state="failed", error=problems[r["name"]])
        elif r["state"] != "failed" and enabled.get(r["name"]) is False:
            r["state"] = "stopped"
    if args.json:
        print(json.dumps({"site": str(site.root), "plugins": rows}, indent=2))
        return 0
    if not rows:
        print(f"no plugins in {site.plugins_dir}")
        return 0
    width = max(len(r["name"]) for r in rows)
    print(f"{'NAME':<{width}}  {'VERSION':<10} {'STATE':<10} ROUTES HOOKS")
    for r in rows:
        print(f"{r['name']:<{width}}  {str(r['version'] or '-'):<10} {r['state']:<10} {r['routes']:>6} {r['hooks']:>5}"
              + (f"  {r['error']}" if r["error"] else ""))
    return 0


def _enabled_flags(site: Site) -> dict:
    if not site.db_path.exists():
        return {}
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{site.db_path}?mode=ro", uri=True, timeout=5)
        try:
            return {name: bool(en) for name, en in con.execute("SELECT name, enabled FROM plugin_record")}
        finally:
            con.close()
    except sqlite3.Error:
        return {}


def cmd_init(args) -> int:
    site = _site(args)
    if not args.site:
        site.ensure()
    site.plugins_dir.mkdir(parents=True, exist_ok=True)
    from ..core.plugins.authoring.scaffold import scaffold_plugin

    try:
        target = scaffold_plugin(site.plugins_dir, args.name, version=args.plugin_version,
                                 description=args.description, author=args.author, license=args.license)
    except ValidationError as exc:
        raise CliError(str(exc)) from None
    print(f"created {target}")
    print(f"  test it:   modula plugin test {target}")
    print(f"  approve:   modula plugin approve {args.name} --all-routes --all-hooks")
    return 0


def cmd_validate(args) -> int:
    root = Path(args.path).resolve()
    if not root.is_dir():
        raise CliError(f"{args.path} is not a folder")
    if not (root / "init.lua").is_file():
        raise CliError(f"{args.path} has no init.lua")
    info = inspect_plugin(root, PluginSettings())
    if info["error"]:
        print(f"error: {root.name}: {info['error']}", file=sys.stderr)
        return 1
    for w in info["warnings"]:
        print(f"warning: {w}")
    print(f"ok: {info['name']} {info['version']}: {info['routes']} route(s), {info['hooks']} hook(s)")
    for r in info.get("route_list", []):
        print(f"  route {r}")
    for h in info.get("hook_list", []):
        print(f"  hook  {h}")
    for d in info.get("domain_list", []):
        print(f"  outbound requests to {d}")
    for folder, name, present in info.get("ui_list", []):
        print(f"  {folder[:-1]:<9} {name}" + ("" if present else f"  (warning: {folder}/{name}.lua is missing)"))
    return 0


def cmd_test(args) -> int:
    from ..core.plugins.authoring.testrunner import format_run, run_plugin_tests

    root = Path(args.path).resolve()
    if not root.is_dir():
        raise CliError(f"{args.path} is not a folder", EXIT_USAGE_OR_OFFLINE)
    if args.timeout is not None and args.timeout <= 0:
        raise CliError("--timeout must be a positive number of seconds", EXIT_USAGE_OR_OFFLINE)
    run = run_plugin_tests(root, name_filter=args.filter, timeout=args.timeout)
    if args.json:
        print(json.dumps(run.to_dict(), indent=2))
    else:
        print(format_run(run, verbose=args.verbose))
    return run.exit_code
