"""Admin API for plugins (SPEC 5): list, detail, lifecycle, route and hook approvals.
The admin token is checked for every path under /api/v1/admin by the RequestGuard."""
from __future__ import annotations

import falcon

from ..core.plugins.errors import PluginLoadError
from ..core.plugins.manager import RUNNING, STOPPED
from ..core.plugins.vm import EVENTS, HOOK_TABLES, METHODS
from .bodies import read_json_object
from .responses import send_json


class _Admin:
    def __init__(self, service):
        self.service = service
        self.manager = service.plugins
        self.approvals = service.approvals
        self.body_limit = service.settings.plugins.max_request_body

    def plugin(self, name: str):
        try:
            return self.manager.get(name)
        except PluginLoadError as exc:
            raise falcon.HTTPNotFound(description=str(exc)) from None


class PluginList(_Admin):
    def on_get(self, req, resp):
        send_json(resp, {"plugins": [self.manager.summary(n) for n in self.manager.names()]})


class PluginDetail(_Admin):
    def on_get(self, req, resp, name):
        self.plugin(name)
        send_json(resp, self.manager.info(name))

    def on_post_reload(self, req, resp, name):
        plugin = self.plugin(name)
        if plugin.state == STOPPED:
            raise falcon.HTTPConflict(description=f"plugin '{name}' is disabled: enable it instead of reloading")
        if not self.manager.reload(name):
            raise falcon.HTTPUnprocessableEntity(description=f"reload of '{name}' failed: {plugin.error}")
        send_json(resp, self.manager.summary(name))

    def on_post_enable(self, req, resp, name):
        plugin = self.plugin(name)
        if not self.manager.enable(name):
            raise falcon.HTTPUnprocessableEntity(description=f"plugin '{name}' could not start: {plugin.error}")
        send_json(resp, self.manager.summary(name))

    def on_post_disable(self, req, resp, name):
        self.plugin(name)
        self.manager.disable(name)
        send_json(resp, self.manager.summary(name))


# ---- approvals ---------------------------------------------------------------------------------
def _items(body: dict, key: str, fields: tuple) -> list[dict]:
    example = "{" + ", ".join(f'"{f}": "..."' for f in fields) + "}"
    items = body.get(key)
    if not isinstance(items, list) or not items:
        raise falcon.HTTPBadRequest(description=f'body must be {{"{key}": [{example}, ...]}} with at least one entry')
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise falcon.HTTPBadRequest(description=f"{key}[{i}] must be an object like {example}")
        for f in fields:
            if not isinstance(item.get(f), str) or not item[f]:
                raise falcon.HTTPBadRequest(description=f"{key}[{i}].{f} must be a non-empty string")
        out.append({f: item[f] for f in fields})
    return out


class RouteApprovals(_Admin):
    def _rows(self):
        rows = []
        for name in self.manager.names():
            plugin = self.manager.get(name)
            gen = plugin.current
            if gen is not None:
                for r in gen.routes:
                    rows.append({"plugin": name, "method": r.method, "path": r.path, "public": r.public,
                                 "approved": self.approvals.route_approved(name, r.method, r.path),
                                 "state": plugin.state})
            else:  # a stopped or failed plugin: only what was approved is known
                for m, p in sorted(self.approvals.routes_of(name)):
                    rows.append({"plugin": name, "method": m, "path": p, "public": None, "approved": True,
                                 "state": plugin.state})
        return rows

    def on_get(self, req, resp):
        send_json(resp, {"routes": self._rows()})

    def _parse(self, req, check_declared: bool):
        items = _items(read_json_object(req, self.body_limit), "routes", ("plugin", "method", "path"))
        for i, it in enumerate(items):
            it["method"] = it["method"].upper()
            if it["method"] not in METHODS:
                raise falcon.HTTPBadRequest(description=f"routes[{i}].method must be one of {', '.join(METHODS)}")
            if check_declared:
                plugin = self.plugin_for(i, "routes", it["plugin"])
                declared = {r.key for r in plugin.current.routes}
                if (it["method"], it["path"]) not in declared:
                    raise falcon.HTTPBadRequest(
                        description=f"routes[{i}]: plugin '{it['plugin']}' has no route {it['method']} {it['path']}")
        return items

    def plugin_for(self, i, key, name):
        try:
            plugin = self.manager.get(name)
        except PluginLoadError:
            raise falcon.HTTPBadRequest(description=f"{key}[{i}]: no plugin named '{name}'") from None
        if plugin.state != RUNNING or plugin.current is None:
            raise falcon.HTTPConflict(
                description=f"{key}[{i}]: plugin '{name}' is {plugin.state}; enable it before approving")
        return plugin

    def on_post_approve(self, req, resp):
        items = self._parse(req, check_declared=True)
        for it in items:
            self.approvals.approve_route(it["plugin"], it["method"], it["path"])
        send_json(resp, {"routes": [dict(it, approved=True) for it in items]})

    def on_post_revoke(self, req, resp):
        items = self._parse(req, check_declared=False)
        for it in items:
            self.approvals.revoke_route(it["plugin"], it["method"], it["path"])
        send_json(resp, {"routes": [dict(it, approved=False) for it in items]})


class HookApprovals(RouteApprovals):
    def _rows(self):
        rows = []
        for name in self.manager.names():
            plugin = self.manager.get(name)
            gen = plugin.current
            if gen is not None:
                for h in gen.hooks:
                    rows.append({"plugin": name, "event": h.event, "table": h.table, "priority": h.priority,
                                 "approved": self.approvals.hook_approved(name, h.event, h.table),
                                 "disabled": plugin.hook_breaker.is_disabled(h.key), "state": plugin.state})
            else:
                for e, t in sorted(self.approvals.hooks_of(name)):
                    rows.append({"plugin": name, "event": e, "table": t, "priority": None, "approved": True,
                                 "disabled": False, "state": plugin.state})
        return rows

    def on_get(self, req, resp):
        send_json(resp, {"hooks": self._rows()})

    def _parse(self, req, check_declared: bool):
        items = _items(read_json_object(req, self.body_limit), "hooks", ("plugin", "event", "table"))
        for i, it in enumerate(items):
            if it["event"] not in EVENTS:
                raise falcon.HTTPBadRequest(description=f"hooks[{i}].event '{it['event']}' is not a hook event")
            if it["table"] not in HOOK_TABLES:
                raise falcon.HTTPBadRequest(description=f"hooks[{i}].table must be \"content\" or \"*\"")
            it["table"] = HOOK_TABLES[it["table"]]
            if check_declared:
                plugin = self.plugin_for(i, "hooks", it["plugin"])
                declared = {h.key for h in plugin.current.hooks}
                if (it["event"], it["table"]) not in declared:
                    raise falcon.HTTPBadRequest(
                        description=f"hooks[{i}]: plugin '{it['plugin']}' has no hook {it['event']}:{it['table']}")
        return items

    def on_post_approve(self, req, resp):
        items = self._parse(req, check_declared=True)
        for it in items:
            self.approvals.approve_hook(it["plugin"], it["event"], it["table"])
        send_json(resp, {"hooks": [dict(it, approved=True) for it in items]})

    def on_post_revoke(self, req, resp):
        items = self._parse(req, check_declared=False)
        for it in items:
            self.approvals.revoke_hook(it["plugin"], it["event"], it["table"])
        send_json(resp, {"hooks": [dict(it, approved=False) for it in items]})
