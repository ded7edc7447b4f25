"""Admin API for plugins (SPEC 5): list, detail, lifecycle, route and hook approvals.
The admin token is checked for every path under /api/v1/admin by the RequestGuard."""
from __future__ import annotations

import falcon

from ..core.plugins.errors import PluginLoadError
from ..core.plugins.lifecycle.manager import LOADING, RUNNING, STOPPED
from ..core.plugins.api.hooks import EVENTS, check_table_name, hook_table
from ..core.plugins.api.http import METHODS
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
        # loading: start-up is still loading plugins (each one's state says which)
        send_json(resp, {"plugins": [self.manager.summary(n) for n in self.manager.names()],
                         "loading": self.manager.loading})


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


class _Approvals(_Admin):
    """GET lists, POST approve/revoke: the same for routes and hooks but for what one item is."""

    KEY = ""
    FIELDS: tuple = ()

    def _rows(self):
        rows = []
        for name in self.manager.names():
            plugin = self.manager.get(name)
            rows.extend(dict(plugin=name, state=plugin.state, **row) for row in self._declared_rows(name, plugin))
        return rows

    def on_get(self, req, resp):
        send_json(resp, {self.KEY: self._rows()})

    def _parse(self, req, check_declared: bool):
        key = self.KEY
        body = read_json_object(req, self.body_limit)
        items = _items(body, key, self.FIELDS)
        for i, it in enumerate(items):
            self._check_item(i, it, body[key][i])
            if check_declared:
                plugin = self.plugin_for(i, key, it["plugin"])
                gen = plugin.current
                if self._item_key(it) not in self._declared(gen):
                    raise falcon.HTTPBadRequest(
                        description=f"{key}[{i}]: plugin '{it['plugin']}' has no {key[:-1]} {self._describe(it)}")
                self._check_declared(i, it, gen)
        return items

    def _check_declared(self, i, it, gen):
        pass

    def plugin_for(self, i, key, name):
        try:
            plugin = self.manager.get(name)
        except PluginLoadError:
            raise falcon.HTTPBadRequest(description=f"{key}[{i}]: no plugin named '{name}'") from None
        if plugin.state == LOADING:
            raise falcon.HTTPConflict(
                description=f"{key}[{i}]: plugin '{name}' is still loading; approve it once it runs")
        if plugin.state != RUNNING or plugin.current is None:
            raise falcon.HTTPConflict(
                description=f"{key}[{i}]: plugin '{name}' is {plugin.state}; enable it before approving")
        return plugin

    def _post(self, req, resp, approved: bool):
        items = self._parse(req, check_declared=approved)
        for it in items:
            self._set(it, approved)
        send_json(resp, {self.KEY: [dict(it, approved=approved) for it in items]})

    def on_post_approve(self, req, resp):
        self._post(req, resp, True)

    def on_post_revoke(self, req, resp):
        self._post(req, resp, False)


class RouteApprovals(_Approvals):
    KEY = "routes"
    FIELDS = ("plugin", "method", "path")

    def _declared_rows(self, name, plugin):
        if plugin.current is not None:
            return [{"method": r.method, "path": r.path, "public": r.public,
                     "approved": self.approvals.route_approved(name, r.method, r.path, r.public)}
                    for r in plugin.current.routes]
        # a stopped or failed plugin: only what was approved is known
        return [{"method": m, "path": p, "public": public, "approved": True}
                for m, p, public in sorted(self.approvals.route_approvals_of(name))]

    def _check_item(self, i, it, raw: dict):
        it["method"] = it["method"].upper()
        if it["method"] not in METHODS:
            raise falcon.HTTPBadRequest(description=f"routes[{i}].method must be one of {', '.join(METHODS)}")
        if "public" in raw:  # what the approver was shown; optional
            if not isinstance(raw["public"], bool):
                raise falcon.HTTPBadRequest(description=f"routes[{i}].public must be true or false")
            it["public"] = raw["public"]

    def _check_declared(self, i, it, gen):
        # an approval covers the route as it is now: public (no token) or not
        spec = next(r for r in gen.routes if r.key == self._item_key(it))
        shown = it.setdefault("public", spec.public)
        if shown != spec.public:
            now = "public now" if spec.public else "no longer public"
            raise falcon.HTTPConflict(description=f"routes[{i}]: route {self._describe(it)} of plugin "
                                                  f"'{it['plugin']}' is {now}, not as shown when you approved it; "
                                                  "look again")

    @staticmethod
    def _item_key(it):
        return (it["method"], it["path"])

    @staticmethod
    def _declared(gen):
        return {r.key for r in gen.routes}

    @staticmethod
    def _describe(it):
        return f"{it['method']} {it['path']}"

    def _set(self, it, approved: bool):
        self.approvals.set_route(it["plugin"], it["method"], it["path"], approved, it.get("public", False))


class HookApprovals(_Approvals):
    KEY = "hooks"
    FIELDS = ("plugin", "event", "table")

    def _declared_rows(self, name, plugin):
        if plugin.current is not None:
            return [{"event": h.event, "table": h.table, "priority": h.priority,
                     "approved": self.approvals.hook_approved(name, h.event, h.table),
                     "disabled": plugin.hook_breaker.is_disabled(h.key)} for h in plugin.current.hooks]
        return [{"event": e, "table": t, "priority": None, "approved": True, "disabled": False}
                for e, t in sorted(self.approvals.hooks_of(name))]

    def _check_item(self, i, it, raw: dict):
        if it["event"] not in EVENTS:
            raise falcon.HTTPBadRequest(description=f"hooks[{i}].event '{it['event']}' is not a hook event")
        bad = check_table_name(it["table"])
        if bad:
            raise falcon.HTTPBadRequest(description=f"hooks[{i}].table {bad}")
        it["table"] = hook_table(it["table"])  # "content_data" is "content"

    @staticmethod
    def _item_key(it):
        return (it["event"], it["table"])

    @staticmethod
    def _declared(gen):
        return {h.key for h in gen.hooks}

    @staticmethod
    def _describe(it):
        return f"{it['event']}:{it['table']}"

    def _set(self, it, approved: bool):
        self.approvals.set_hook(it["plugin"], it["event"], it["table"], approved)


class DomainApprovals(_Approvals):
    """Outbound domains of the request module. ModulaCMS calls these "requests"
    (/api/v1/admin/plugins/requests, body {"requests": [...]}); both spellings are served."""

    KEY = "domains"
    FIELDS = ("plugin", "domain")

    def _declared_rows(self, name, plugin):
        if plugin.current is not None:
            return [{"domain": d, "description": desc, "approved": self.approvals.domain_approved(name, d)}
                    for d, desc in plugin.current.domains.items()]
        return [{"domain": d, "description": "", "approved": True} for d in sorted(self.approvals.domains_of(name))]

    def _check_item(self, i, it, raw: dict):
        it["domain"] = it["domain"].lower()

    @staticmethod
    def _item_key(it):
        return it["domain"]

    @staticmethod
    def _declared(gen):
        return set(gen.domains)

    @staticmethod
    def _describe(it):
        return it["domain"]

    def _set(self, it, approved: bool):
        self.approvals.set_domain(it["plugin"], it["domain"], approved)


class ScreenApprovals(_Approvals):
    """Screens and field interfaces (SPEC 3.12): {"screens": [{"plugin", "kind", "name"}]}, kind "screen"
    (the default) or "interface"."""

    KEY = "screens"
    FIELDS = ("plugin", "name")

    def _declared_rows(self, name, plugin):
        gen = plugin.current
        rows = []
        if gen is not None:
            for kind, defs in (("screen", gen.manifest.screens), ("interface", gen.manifest.interfaces)):
                rows.extend(dict(d.__dict__, kind=kind, approved=self.approvals.ui_approved(name, kind, d.name))
                            for d in defs)
            return rows
        return [{"kind": k, "name": n, "label": n, "approved": True} for k, n in sorted(self.approvals.ui_of(name))]

    def _check_item(self, i, it, raw: dict):
        kind = raw.get("kind", "screen")
        if kind not in ("screen", "interface"):
            raise falcon.HTTPBadRequest(description=f'screens[{i}].kind must be "screen" or "interface"')
        it["kind"] = kind

    @staticmethod
    def _item_key(it):
        return (it["kind"], it["name"])

    @staticmethod
    def _declared(gen):
        return {("screen", d.name) for d in gen.manifest.screens} | \
            {("interface", d.name) for d in gen.manifest.interfaces}

    @staticmethod
    def _describe(it):
        return f"'{it['name']}'" if it["kind"] == "screen" else f"'{it['name']}' of kind interface"

    def _set(self, it, approved: bool):
        self.approvals.set_ui(it["plugin"], it["kind"], it["name"], approved)


class RequestApprovals(DomainApprovals):
    KEY = "requests"


class CoreApprovals(_Approvals):
    """Content access of the core module: "read" and "write" per plugin, as the plugin declares them
    (permissions core:read / core:write, or ModulaCMS's core_access)."""

    KEY = "core"
    FIELDS = ("plugin", "access")

    def _declared_rows(self, name, plugin):
        if plugin.current is not None:
            return [{"access": a, "approved": self.approvals.core_approved(name, a)}
                    for a in plugin.current.manifest.core]
        return [{"access": a, "approved": True} for a in sorted(self.approvals.core_of(name))]

    def _check_item(self, i, it, raw: dict):
        it["access"] = it["access"].lower()
        if it["access"] not in ("read", "write"):
            raise falcon.HTTPBadRequest(description=f'core[{i}].access must be "read" or "write"')

    @staticmethod
    def _item_key(it):
        return it["access"]

    @staticmethod
    def _declared(gen):
        return set(gen.manifest.core)

    @staticmethod
    def _describe(it):
        return f"{it['access']} access to the site's content (core:{it['access']})"

    def _set(self, it, approved: bool):
        self.approvals.set_core(it["plugin"], it["access"], approved)

