"""Route and hook approvals (SPEC 4), persisted in the site database."""
from __future__ import annotations

import threading

from ...storage import CoreApproval, DomainApproval, HookApproval, PluginRecord, RouteApproval, UIApproval, utc_now

CORE_ACCESS = ("read", "write")


class Approvals:
    """Approved keys are cached in memory (read on every request) and written through to SQLite."""

    def __init__(self, database):
        self.db = database
        self._lock = threading.Lock()
        # (plugin, method, path, public) of every approved route: a set replaced whole on each change
        # (never changed in place), so the hot path reads it without the lock (PluginManager.match_route).
        # public is part of what was approved: a route made public since is not covered by it.
        self.approved_routes: set[tuple[str, str, str, bool]] = set()
        self._hooks: set[tuple[str, str, str]] = set()
        self._domains: set[tuple[str, str]] = set()  # (plugin, domain): the request module
        self._core: set[tuple[str, str]] = set()  # (plugin, "read" | "write"): the core module
        self._ui: set[tuple[str, str, str]] = set()  # (plugin, kind, name): screens and interfaces
        self._listeners = []
        self.refresh()

    def add_listener(self, fn):
        """fn(plugin_name) after any approval of that plugin changed (from any thread)."""
        self._listeners.append(fn)

    def _changed(self, plugin: str):
        for fn in list(self._listeners):
            try:
                fn(plugin)
            except Exception:  # noqa: BLE001 - a listener must not undo an approval
                import logging

                logging.getLogger(__name__).exception("approval listener failed")

    def refresh(self):
        routes = {(r.plugin, r.method, r.path, bool(r.public)) for r in RouteApproval.select()}
        hooks = {(h.plugin, h.event, h.table) for h in HookApproval.select()}
        domains = {(d.plugin, d.domain) for d in DomainApproval.select()}
        core = {(c.plugin, c.access) for c in CoreApproval.select()}
        ui = {(u.plugin, u.kind, u.name) for u in UIApproval.select()}
        with self._lock:
            self.approved_routes, self._hooks, self._domains, self._core = routes, hooks, domains, core
            self._ui = ui

    # ---- reads (hot path) --------------------------------------------------------------------
    def route_approved(self, plugin: str, method: str, path: str, public: bool = False) -> bool:
        """Whether the route is approved as it is: public (no token) or not."""
        return (plugin, method, path, bool(public)) in self.approved_routes

    def hook_approved(self, plugin: str, event: str, table: str) -> bool:
        return (plugin, event, table) in self._hooks

    def routes_of(self, plugin: str) -> set:
        return {(m, p) for (pl, m, p, _) in self.approved_routes if pl == plugin}

    def route_approvals_of(self, plugin: str) -> set:
        """(method, path, public) of the plugin's approved routes."""
        return {(m, p, public) for (pl, m, p, public) in self.approved_routes if pl == plugin}

    def hooks_of(self, plugin: str) -> set:
        return {(e, t) for (pl, e, t) in self._hooks if pl == plugin}

    # ---- writes ------------------------------------------------------------------------------
    def _set(self, model, cache: str, fields: tuple, key: tuple, approved: bool):
        """Write one approval row (or remove it) and the in-memory set named cache, then notify."""
        plugin = key[0]
        with self.db.atomic():
            if approved:
                model.insert(**dict(zip(fields, key)), approved_at=utc_now()).on_conflict_ignore().execute()
            else:
                cond = None
                for f, v in zip(fields, key):
                    term = getattr(model, f) == v
                    cond = term if cond is None else cond & term
                model.delete().where(cond).execute()
        with self._lock:
            current = getattr(self, cache)
            setattr(self, cache, current | {key} if approved else current - {key})
        self._changed(plugin)

    def set_route(self, plugin, method, path, approved: bool, public: bool = False):
        """Approve the route as it is (public: served without the token), or revoke it (either way)."""
        public = bool(public)
        where = (RouteApproval.plugin == plugin) & (RouteApproval.method == method) & (RouteApproval.path == path)
        with self.db.atomic():
            RouteApproval.delete().where(where).execute()
            if approved:
                RouteApproval.insert(plugin=plugin, method=method, path=path, public=public,
                                     approved_at=utc_now()).execute()
        with self._lock:
            kept = {k for k in self.approved_routes if k[:3] != (plugin, method, path)}
            self.approved_routes = kept | {(plugin, method, path, public)} if approved else kept
        self._changed(plugin)

    def set_hook(self, plugin, event, table, approved: bool):
        self._set(HookApproval, "_hooks", ("plugin", "event", "table"), (plugin, event, table), approved)

    def approve_route(self, plugin, method, path, public: bool = False):
        self.set_route(plugin, method, path, True, public)

    def revoke_route(self, plugin, method, path):
        self.set_route(plugin, method, path, False)

    def approve_hook(self, plugin, event, table):
        self.set_hook(plugin, event, table, True)

    def revoke_hook(self, plugin, event, table):
        self.set_hook(plugin, event, table, False)

    def revoke_all(self, plugin: str, notify: bool = True):
        with self.db.atomic():
            RouteApproval.delete().where(RouteApproval.plugin == plugin).execute()
            HookApproval.delete().where(HookApproval.plugin == plugin).execute()
            DomainApproval.delete().where(DomainApproval.plugin == plugin).execute()
            CoreApproval.delete().where(CoreApproval.plugin == plugin).execute()
            UIApproval.delete().where(UIApproval.plugin == plugin).execute()
        with self._lock:
            self._ui = {k for k in self._ui if k[0] != plugin}
            self.approved_routes = {k for k in self.approved_routes if k[0] != plugin}
            self._hooks = {k for k in self._hooks if k[0] != plugin}
            self._domains = {k for k in self._domains if k[0] != plugin}
            self._core = {k for k in self._core if k[0] != plugin}
        if notify:
            self._changed(plugin)

    def revoke_changed_routes(self, plugin: str, routes) -> list:
        """Revoke approvals that no longer cover the route: approved public and now not, or the other
        way round. routes: (method, path, public) as the plugin declares them now. Returns the revoked
        (method, path) pairs."""
        now = {(m, p): bool(public) for m, p, public in routes}
        changed = sorted((m, p) for m, p, public in self.route_approvals_of(plugin)
                         if (m, p) in now and now[(m, p)] != public)
        for m, p in changed:
            self.set_route(plugin, m, p, False)
        return changed

    def check_identity(self, plugin: str, version: str, permissions_key: str) -> bool:
        """Record the plugin's version and permissions. When either changed since we last saw it,
        revoke all its approvals first. Returns True when approvals were reset."""
        with self.db.atomic():
            rec = PluginRecord.get_or_none(PluginRecord.name == plugin)
            if rec is None:
                PluginRecord.create(name=plugin, version=version, permissions=permissions_key,
                                    enabled=True, updated_at=utc_now())
                # approvals left behind by an earlier plugin of the same name are not inherited
                stale = bool(self.routes_of(plugin) or self.hooks_of(plugin) or self.domains_of(plugin)
                             or self.core_of(plugin) or self.ui_of(plugin))
                if stale:
                    self.revoke_all(plugin, notify=False)
                return stale
            if rec.version == version and rec.permissions == permissions_key:
                return False
            rec.version, rec.permissions, rec.updated_at = version, permissions_key, utc_now()
            rec.save()
            self.revoke_all(plugin, notify=False)
            return True

    def set_enabled(self, plugin: str, enabled: bool):
        PluginRecord.update(enabled=enabled, updated_at=utc_now()).where(PluginRecord.name == plugin).execute()

    def is_enabled(self, plugin: str) -> bool:
        rec = PluginRecord.get_or_none(PluginRecord.name == plugin)
        return True if rec is None else bool(rec.enabled)

    def forget(self, plugin: str):
        """A removed plugin: drop its record and approvals (orphans)."""
        self.revoke_all(plugin)
        PluginRecord.delete().where(PluginRecord.name == plugin).execute()

    def clean_orphans(self, present: set[str]):
        names = {r.plugin for r in RouteApproval.select(RouteApproval.plugin).distinct()}
        names |= {h.plugin for h in HookApproval.select(HookApproval.plugin).distinct()}
        names |= {d.plugin for d in DomainApproval.select(DomainApproval.plugin).distinct()}
        names |= {c.plugin for c in CoreApproval.select(CoreApproval.plugin).distinct()}
        names |= {u.plugin for u in UIApproval.select(UIApproval.plugin).distinct()}
        names |= {p.name for p in PluginRecord.select(PluginRecord.name)}
        for name in names - present:
            self.forget(name)


    # ---- outbound domains (the request module) -----------------------------------------------
    def domain_approved(self, plugin: str, domain: str) -> bool:
        return (plugin, domain) in self._domains

    def domains_of(self, plugin: str) -> set:
        return {d for (pl, d) in self._domains if pl == plugin}

    def set_domain(self, plugin: str, domain: str, approved: bool):
        self._set(DomainApproval, "_domains", ("plugin", "domain"), (plugin, domain.lower()), approved)

    def approve_domain(self, plugin: str, domain: str):
        self.set_domain(plugin, domain, True)

    def revoke_domain(self, plugin: str, domain: str):
        self.set_domain(plugin, domain, False)

    # ---- content access (the core module) ----------------------------------------------------
    def core_approved(self, plugin: str, access: str) -> bool:
        return (plugin, access) in self._core

    def core_of(self, plugin: str) -> set:
        return {a for (pl, a) in self._core if pl == plugin}

    def set_core(self, plugin: str, access: str, approved: bool):
        if access not in CORE_ACCESS:
            raise ValueError(f"core access must be one of {', '.join(CORE_ACCESS)}, not {access!r}")
        self._set(CoreApproval, "_core", ("plugin", "access"), (plugin, access), approved)

    def approve_core(self, plugin: str, access: str):
        self.set_core(plugin, access, True)

    def revoke_core(self, plugin: str, access: str):
        self.set_core(plugin, access, False)
    # ---- screens and field interfaces (SPEC 3.12) --------------------------------------------
    def ui_approved(self, plugin: str, kind: str, name: str) -> bool:
        return (plugin, kind, name) in self._ui

    def ui_of(self, plugin: str) -> set:
        """(kind, name) of the plugin's approved screens and interfaces."""
        return {(k, n) for (pl, k, n) in self._ui if pl == plugin}

    def set_ui(self, plugin: str, kind: str, name: str, approved: bool):
        self._set(UIApproval, "_ui", ("plugin", "kind", "name"), (plugin, kind, name), approved)
