"""Online plugin commands: they talk to the running instance of a site through its admin API.

The instance is found through the site's ``.modula/server.json``; the token is ``--token`` or the
site's token file. Every failure is one line on stderr (raised as CliError): exit 2 when no instance
runs (or the command was used wrongly), exit 1 when the server refused or failed.
"""
from __future__ import annotations

import json
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

from ..core.errors import SiteError
from ..core.site import Site, default_site_dir
from .main import EXIT_ERROR, EXIT_USAGE_OR_OFFLINE, CliError

ADMIN = "/api/v1/admin/plugins"
TIMEOUT_S = 60  # a reload builds a whole VM pool; give it time
LOAD_WAIT_S = 60  # how long approve/revoke wait for a plugin the instance is still loading
LOAD_POLL_S = 0.2


class Instance:
    """The running server of a site, reached over loopback with the admin token."""

    def __init__(self, site_path: Path | None, token: str | None):
        self.site = Site(site_path if site_path is not None else default_site_dir())
        info = self.site.read_server_info() if self.site.root.is_dir() else None
        if info is None:
            raise self.not_running()
        self.base = f"http://{info['host']}:{int(info['port'])}"
        if token is None:
            try:
                token = self.site.token()
            except SiteError as exc:
                raise CliError(f"{exc} (pass --token)", EXIT_ERROR) from None
        self.token = token.strip()
        # never send the admin token through an HTTP proxy from the environment
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def not_running(self) -> CliError:
        return CliError(f"no running instance for site {self.site.root} "
                        "(start it with 'modula serve' or 'modula run')", EXIT_USAGE_OR_OFFLINE)

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=TIMEOUT_S) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise CliError(_server_error(exc), EXIT_ERROR) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ConnectionRefusedError):
                raise self.not_running() from None
            raise CliError(f"cannot reach the instance at {self.base}: {exc.reason}", EXIT_ERROR) from None
        except (socket.timeout, TimeoutError):
            raise CliError(f"the instance at {self.base} did not answer within {TIMEOUT_S} s", EXIT_ERROR) from None
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            raise CliError(f"the instance at {self.base} sent an answer that is not JSON", EXIT_ERROR) from None

    def plugin(self, name: str) -> dict:
        return self.call("GET", f"{ADMIN}/{quote(name, safe='')}")

    def loaded_plugin(self, name: str) -> dict:
        """The plugin's detail once it has left the loading state: the instance loads plugins behind
        its server, so right after start-up the routes and hooks may not be known yet."""
        deadline = time.monotonic() + LOAD_WAIT_S
        info = self.plugin(name)
        while info.get("state") == "loading":
            if time.monotonic() > deadline:
                raise CliError(f"plugin '{name}' is still loading after {LOAD_WAIT_S} s; try again later",
                               EXIT_ERROR)
            time.sleep(LOAD_POLL_S)
            info = self.plugin(name)
        return info


def _server_error(exc: urllib.error.HTTPError) -> str:
    try:
        message = json.loads(exc.read()).get("error")
    except (ValueError, AttributeError, OSError):
        message = None
    if exc.code == 401:
        return "the instance refused the admin token (pass the right one with --token)"
    return message or f"the instance answered {exc.code} {exc.reason}"


def _instance(args) -> Instance:
    return Instance(args.site, args.token)


# ---- info ----------------------------------------------------------------------------------------
def format_info(info: dict) -> str:
    lines = [f"{info['name']} {info.get('version') or '?'} ({info.get('state')})"]
    if info.get("description"):
        lines.append(f"  {info['description']}")
    if info.get("error"):
        lines.append(f"  error: {info['error']}")
    declared = info.get("permissions")
    perms = ", ".join(info.get("effective_permissions") or [])
    lines.append(f"  permissions: {perms}" + ("" if declared is not None else " (not declared: all of them)"))
    b = info.get("breaker") or {}
    lines.append(f"  breaker: {b.get('state', '?')} ({b.get('consecutive_failures', 0)} consecutive failures)")
    pool = info.get("pool")
    if pool:
        lines.append(f"  VM pool: {pool['size']} VMs, {pool['idle']} idle, {pool['busy']} busy, "
                     f"{pool['hook_reserve']} kept for hooks, {pool['replaced']} replaced")
    else:
        lines.append("  VM pool: none (not running)")
    routes = info.get("routes") or []
    lines.append(f"  routes ({len(routes)}):")
    for r in routes:
        mark = "approved  " if r.get("approved") else "unapproved"
        public = "  public" if r.get("public") else ""
        lines.append(f"    [{mark}] {r['method']:<6} {r['path']}{public}")
    hooks = info.get("hooks") or []
    lines.append(f"  hooks ({len(hooks)}):")
    for h in hooks:
        mark = "approved  " if h.get("approved") else "unapproved"
        off = "  DISABLED (too many aborts)" if h.get("disabled") else ""
        prio = f"  priority {h['priority']}" if h.get("priority") is not None else ""
        lines.append(f"    [{mark}] {h['event']}:{h['table']}{prio}{off}")
    domains = info.get("domains") or []
    if domains or "request" in (info.get("effective_permissions") or []):
        lines.append(f"  outbound domains ({len(domains)}):")
    for d in domains:
        mark = "approved  " if d.get("approved") else "unapproved"
        desc = f"  {d['description']}" if d.get("description") else ""
        lines.append(f"    [{mark}] {d['domain']}{desc}")
    core = info.get("core") or []
    if core:
        lines.append("  content access (core):")
    for c in core:
        mark = "approved  " if c.get("approved") else "unapproved"
        lines.append(f"    [{mark}] {c['access']}")
    for kind, key in (("screen", "screens"), ("interface", "interfaces")):
        items = info.get(key) or []
        if items:
            lines.append(f"  {key} ({len(items)}):")
        for d in items:
            mark = "approved  " if d.get("approved") else "unapproved"
            mode = f"  {d['mode']}" if d.get("mode") else ""
            lines.append(f"    [{mark}] {d['name']}  {d.get('label', '')}{mode}")
    last = info.get("last_reload") or {}
    if last.get("ok") is not None:
        secs = last.get("seconds") or 0
        lines.append(f"  last load: {'ok' if last['ok'] else 'FAILED'} in {secs * 1000:.0f} ms")
    schema = info.get("schema_errors") or []
    if schema:
        lines.append(f"  table definition errors ({len(schema)}):")
        lines.extend(f"    {problem}" for problem in schema)
    errors = info.get("last_errors") or []
    lines.append(f"  last errors ({len(errors)}):" if errors else "  last errors: none")
    for e in errors:
        lines.append(f"    {e.get('time', '')} {e.get('message', '')}")
    return "\n".join(lines)


def cmd_info(args) -> int:
    info = _instance(args).plugin(args.name)
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        print(format_info(info))
    return 0


# ---- lifecycle -----------------------------------------------------------------------------------
def _lifecycle(args, action: str, done: str) -> int:
    summary = _instance(args).call("POST", f"{ADMIN}/{quote(args.name, safe='')}/{action}")
    print(f"{done} {summary.get('name', args.name)} (version {summary.get('version')}, {summary.get('state')})")
    return 0


def cmd_reload(args) -> int:
    return _lifecycle(args, "reload", "reloaded")


def cmd_enable(args) -> int:
    return _lifecycle(args, "enable", "enabled")


def cmd_disable(args) -> int:
    return _lifecycle(args, "disable", "disabled")


# ---- approvals -----------------------------------------------------------------------------------
def _parse_route(text: str) -> tuple[str, str]:
    parts = text.split()
    if len(parts) != 2 or not parts[1].startswith("/"):
        raise CliError(f"--route {text!r}: write it as \"METHOD /path\", e.g. \"GET /hello\"", EXIT_USAGE_OR_OFFLINE)
    return parts[0].upper(), parts[1]


def _parse_hook(text: str) -> tuple[str, str]:
    event, sep, table = text.partition(":")
    if not sep or not event or not table:
        raise CliError(f"--hook {text!r}: write it as \"event:table\", e.g. \"before_create:content\"",
                       EXIT_USAGE_OR_OFFLINE)
    return event.strip(), table.strip()


def _selection(args, info: dict, approving: bool):
    """The routes and hooks the flags name, checked against what the plugin declares."""
    declared_routes = {(r["method"], r["path"]): r for r in info.get("routes") or []}
    declared_hooks = {(h["event"], h["table"]): h for h in info.get("hooks") or []}
    routes, hooks = [], []
    if args.all_routes:
        routes = [k for k, r in declared_routes.items() if r.get("approved") != approving]
    for text in args.route:
        key = _parse_route(text)
        if key not in declared_routes and approving:
            raise CliError(f"plugin '{info['name']}' has no route {key[0]} {key[1]}", EXIT_ERROR)
        if key not in routes:
            routes.append(key)
    if args.all_hooks:
        hooks = [k for k, h in declared_hooks.items() if h.get("approved") != approving]
    for text in args.hook:
        event, table = _parse_hook(text)
        key = (event, "content" if table == "content_data" else table)
        if key not in declared_hooks and approving:
            raise CliError(f"plugin '{info['name']}' has no hook {key[0]}:{key[1]}", EXIT_ERROR)
        if key not in hooks:
            hooks.append(key)
    return routes, hooks


def _shown_public(info: dict, method: str, path: str) -> dict:
    """{"public": ...} as the route was shown to the author, so the server refuses an approval of a
    route that changed since; {} for a route the plugin no longer declares (a revoke)."""
    for r in info.get("routes") or []:
        if (r["method"], r["path"]) == (method, path) and isinstance(r.get("public"), bool):
            return {"public": r["public"]}
    return {}


def _domain_selection(args, info: dict, approving: bool) -> list[str]:
    declared = {d["domain"]: d for d in info.get("domains") or []}
    domains = []
    if getattr(args, "all_domains", False):
        domains = [k for k, d in declared.items() if d.get("approved") != approving]
    for text in getattr(args, "domain", None) or []:
        key = text.strip().lower()
        if key not in declared and approving:
            raise CliError(f"plugin '{info['name']}' has no outbound domain {key}", EXIT_ERROR)
        if key not in domains:
            domains.append(key)
    return domains


def _core_selection(args, info: dict, approving: bool) -> list[str]:
    """The content access --core names ("all": whatever the plugin declares and is not so already)."""
    wanted = getattr(args, "core", None)
    if wanted is None:
        return []
    declared = {c["access"]: c for c in info.get("core") or []}
    if wanted == "all":
        return [a for a, c in declared.items() if c.get("approved") != approving]
    if wanted not in declared and approving:
        raise CliError(f"plugin '{info['name']}' does not declare {wanted} access to the content "
                       f"(permission core:{wanted})", EXIT_ERROR)
    return [wanted]


def _ui_selection(args, info: dict, approving: bool) -> list[tuple[str, str]]:
    """(kind, name) of the screens and interfaces selected with --screen, --interface, --all-screens."""
    declared = {(k, d["name"]): d for k, key in (("screen", "screens"), ("interface", "interfaces"))
                for d in info.get(key) or []}
    out = []
    if getattr(args, "all_screens", False):
        out = [k for k, d in declared.items() if d.get("approved") != approving]
    for kind, names in (("screen", getattr(args, "screen", None) or []),
                        ("interface", getattr(args, "interface", None) or [])):
        for n in names:
            if (kind, n) not in declared and approving:
                raise CliError(f"plugin '{info['name']}' has no {kind} named {n}", EXIT_ERROR)
            if (kind, n) not in out:
                out.append((kind, n))
    return out


def _confirm(info: dict, routes, hooks, domains=(), core=(), screens=()) -> bool:
    declared = info.get("permissions")
    perms = ", ".join(info.get("effective_permissions") or [])
    print(f"Approve for {info['name']} {info.get('version')}"
          f" (permissions: {perms}{'' if declared is not None else ', not declared: all of them'}):")
    public = {(r["method"], r["path"]) for r in info.get("routes") or [] if r.get("public")}
    for m, p in routes:
        note = "  PUBLIC: anyone on this computer may call it, no token" if (m, p) in public else ""
        print(f"  route {m} /api/v1/plugins/{info['name']}{p if p != '/' else ''}{note}")
    for e, t in hooks:
        print(f"  hook  {e}:{t}")
    for d in domains:
        print(f"  outbound requests to {d}")
    for a in core:
        print(f"  {a} access to the site's pages and posts (core:{a})"
              + ("  it may create, change and delete them" if a == "write" else ""))
    for kind, n in screens:
        print(f"  {kind} {n} (its code runs when it is opened)")
    print("Proceed? [y/N] ", end="", flush=True)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _standing(info: dict) -> str:
    """What the plugin declares and what of it still waits for approval, in one line."""
    routes, hooks = info.get("routes") or [], info.get("hooks") or []
    waiting = [f"route {r['method']} {r['path']}" for r in routes if not r.get("approved")]
    waiting += [f"hook {h['event']}:{h['table']}" for h in hooks if not h.get("approved")]
    waiting += [f"domain {d['domain']}" for d in info.get("domains") or [] if not d.get("approved")]
    waiting += [f"core:{c['access']}" for c in info.get("core") or [] if not c.get("approved")]
    waiting += [f"{kind} {d['name']}" for kind, key in (("screen", "screens"), ("interface", "interfaces"))
                for d in info.get(key) or [] if not d.get("approved")]
    line = f"{info['name']} declares {_plural(len(routes), 'route')} and {_plural(len(hooks), 'hook')}"
    if not waiting:
        return line + "; all of them are approved"
    shown = ", ".join(waiting[:6]) + (f" and {len(waiting) - 6} more" if len(waiting) > 6 else "")
    return f"{line}; waiting for approval: {shown}"


def _approvals(args, approving: bool) -> int:
    verb = "approve" if approving else "revoke"
    if not (args.route or args.hook or args.all_routes or args.all_hooks or getattr(args, "domain", None)
            or getattr(args, "all_domains", False) or getattr(args, "core", None) or getattr(args, "screen", None)
            or getattr(args, "interface", None) or getattr(args, "all_screens", False)):
        raise CliError(f"nothing to {verb}: pass --route, --hook, --domain, --core, --screen, --interface, "
                       "--all-routes, --all-hooks, --all-domains or --all-screens", EXIT_USAGE_OR_OFFLINE)
    inst = _instance(args)
    info = inst.loaded_plugin(args.name)
    routes, hooks = _selection(args, info, approving)
    domains = _domain_selection(args, info, approving)
    core = _core_selection(args, info, approving)
    screens = _ui_selection(args, info, approving)
    name = info["name"]
    if not routes and not hooks and not domains and not core and not screens:
        state = "approved" if approving else "unapproved"
        print(f"nothing to {verb}: the selected routes and hooks of {name} are already {state}")
        print(_standing(info))
        return 0
    if approving and not args.yes:
        if not sys.stdin or not sys.stdin.isatty():
            raise CliError("refusing to approve without confirmation: stdin is not a terminal (pass --yes)",
                           EXIT_USAGE_OR_OFFLINE)
        if not _confirm(info, routes, hooks, domains, core, screens):
            print("nothing approved")
            return 1
    if routes:
        inst.call("POST", f"{ADMIN}/routes/{verb}",
                  {"routes": [dict({"plugin": name, "method": m, "path": p}, **_shown_public(info, m, p))
                              for m, p in routes]})
    if hooks:
        inst.call("POST", f"{ADMIN}/hooks/{verb}",
                  {"hooks": [{"plugin": name, "event": e, "table": t} for e, t in hooks]})
    if domains:
        inst.call("POST", f"{ADMIN}/domains/{verb}", {"domains": [{"plugin": name, "domain": d} for d in domains]})
    if core:
        inst.call("POST", f"{ADMIN}/core/{verb}", {"core": [{"plugin": name, "access": a} for a in core]})
    if screens:
        inst.call("POST", f"{ADMIN}/screens/{verb}",
                  {"screens": [{"plugin": name, "kind": k, "name": n} for k, n in screens]})
    done = "approved" if approving else "revoked"
    tail = f" and {_plural(len(domains), 'domain')}" if domains else ""
    if screens:
        tail += f" and {_plural(len(screens), 'screen or interface')}"
    if core:
        access = f"{' and '.join(core)} access to the content"
        if not (routes or hooks or domains or screens):
            print(f"{done} {access} of {name}")
            return 0
        tail += f"{',' if domains or screens else ''} and {access}"
    print(f"{done} {len(routes)} route{'s' if len(routes) != 1 else ''}{',' if domains else ' and'} "
          f"{len(hooks)} hook{'s' if len(hooks) != 1 else ''}{tail} of {name}")
    return 0


def cmd_approve(args) -> int:
    return _approvals(args, approving=True)


def cmd_revoke(args) -> int:
    return _approvals(args, approving=False)
