"""The plugins' part in a build (SPEC 9): before_render filters each entry's rendering, after_build hears
which files were written. Both go through the same dispatcher, approvals and budgets as the content
hooks; a before_render budget applies per entry."""
from __future__ import annotations

import json
import logging

from ..errors import HookAbort, ReadRefused, ValidationError
from ..plugins.runtime.dispatch import HookDispatcher
from .collect import Entry, digest
from .errors import BuildError

log = logging.getLogger(__name__)

EDITABLE = ("html", "title", "fields")  # what a before_render hook may change, for that rendering only


def _apply(current: dict, changes: dict) -> dict:
    for key, kind in (("html", str), ("title", str), ("fields", dict)):
        if key in changes and not isinstance(changes[key], kind):
            if key == "fields" and changes[key] == []:  # an empty Lua table
                changes[key] = {}
                continue
            raise ValidationError(f"'{key}' must be {'text' if kind is str else 'a table of fields'}")
    return dict(current, **changes)


class RenderHooks:
    """Built once per build from the service; the pipeline calls it for every rendered entry."""

    def __init__(self, service, continue_on_error: bool | None = None):
        self.service = service
        self.dispatcher = HookDispatcher(service.plugins, service.settings.plugins, service.logbook,
                                         service.metrics, editable=EDITABLE)
        self.continue_on_error = (service.settings.build.continue_on_plugin_error if continue_on_error is None
                                  else continue_on_error)
        self.warnings: list[str] = []

    def fingerprint(self) -> str:
        """Changes when the set or the versions of approved before_render plugins change: every page
        is then rendered again."""
        chain = self.dispatcher.chain("before_render")
        return digest([(b.plugin.name, b.generation.manifest.version) for b in chain]) if chain else ""

    def __call__(self, entry: Entry, html: str) -> tuple[str, dict]:
        if not self.dispatcher.chain("before_render"):
            return html, {"title": entry.title}
        data = {"id": entry.id, "type": entry.type, "title": entry.title, "slug": entry.slug, "body": entry.body,
                "status": "published", "fields": entry.fields, "published_at": entry.published_at,
                "updated_at": entry.updated_at, "html": html}
        try:
            out = self.dispatcher.run_before("before_render", data, _apply)
        except HookAbort as exc:
            who = f"The {exc.plugin} plugin's before_render hook" if exc.plugin else "A before_render hook"
            self._failed(f"{who} failed on '{entry.slug}': {exc}", "builds without its changes",
                         "built without the render hooks' changes")
            return html, {"title": entry.title}
        return out["html"], {"title": out["title"], "fields": out["fields"]}

    def _failed(self, message: str, instead: str, done: str):
        """A plugin failed on an entry: BuildError, unless [build] continue_on_plugin_error lets the build
        go on (then a warning saying what was done instead)."""
        if not self.continue_on_error:
            raise BuildError(f"{message} The build stopped; the published output is unchanged "
                             f"([build] continue_on_plugin_error = true {instead}).") from None
        self.warnings.append(f"{message} ({done})")

    # ---- the read hooks (SPEC 3.6): each published entry is read by the build ----------------
    def has_read_hooks(self) -> bool:
        return self.dispatcher.has_read_hooks()

    def read(self, entry: Entry) -> bool:
        """before_read and after_read for one entry the build is about to publish (source "build").
        after_read's changes (title, body, fields; dropped ones become empty) go into the entry. False:
        a hook refused or failed and [build] continue_on_plugin_error leaves the entry out; otherwise
        that stops the build with BuildError naming the plugin."""
        from ..reads import Reader, read_entry

        data = {"id": entry.id, "type": entry.type, "title": entry.title, "slug": entry.slug, "body": entry.body,
                "status": "published", "fields": entry.fields, "published_at": entry.published_at,
                "updated_at": entry.updated_at}
        try:
            shown, _headers = read_entry(self.dispatcher, data, Reader("build"))
        except ReadRefused as exc:
            who = f"The {exc.plugin} plugin's read hooks" if exc.plugin else "A read hook"
            self._failed(f"{who} refused '{entry.slug}': {exc}", "builds without that entry", "left out of the build")
            return False
        entry.title = shown.get("title") or entry.slug
        entry._body = shown.get("body") or ""
        fields = shown.get("fields")
        entry.fields = fields if isinstance(fields, dict) else {}
        return True

    def build_routes(self) -> list[tuple[str, bytes, str]]:
        """(output path, bytes, label) of every approved GET route declared {public = true, build = true}
        without parameters, fetched now and written at plugins/<name><path> ("/" ends in index.html)."""
        manager = self.service.plugins
        out = []
        for name in manager.names():
            gen = manager.get(name).current
            if gen is None:
                continue
            for spec in gen.routes:
                if not (spec.build and spec.public and spec.method == "GET") or "{" in spec.path:
                    continue
                label = f"the {name} plugin's build route GET {spec.path}"
                match = manager.match_route(name, "GET", spec.path)
                if match is None:  # not approved
                    continue
                try:
                    data = self._fetch(manager, match, spec.path)
                except BuildError as exc:
                    if not self.continue_on_error:
                        raise BuildError(f"{exc} The build stopped; the published output is unchanged.") from None
                    self.warnings.append(f"{exc} (left out of the build)")
                    continue
                path = f"plugins/{name}{spec.path}"
                out.append((path + "index.html" if path.endswith("/") else path, data, label))
        return out

    @staticmethod
    def _fetch(manager, match, path: str) -> bytes:
        from ..plugins.lifecycle.manager import RouteFailure

        name = match.plugin.name
        request = {"method": "GET", "path": path, "body": b"", "client_ip": "127.0.0.1", "headers": {},
                   "query": {}, "params": {}}
        try:
            response = manager.call_route(match, request)
        except RouteFailure as exc:
            raise BuildError(f"The {name} plugin's build route GET {path} failed: {exc.detail}.") from None
        status = response.get("status") or 200
        if not 200 <= status < 300:
            raise BuildError(f"The {name} plugin's build route GET {path} answered {status}.")
        if response.get("has_json"):
            encoded = response.get("encoded")
            return encoded if encoded is not None else json.dumps(response["json"]).encode()
        body = response.get("body") or b""
        return body.encode("utf-8") if isinstance(body, str) else body

    def after_build(self, written: list[str], removed: list[str], out: str):
        """Queue the after_build hooks (they run off the build's thread, like every after-hook)."""
        if self.dispatcher.chain("after_build", "content"):
            self.dispatcher.run_after("after_build", {"paths": list(written), "removed": list(removed),
                                                      "out": out})

    def wait(self, timeout: float | None = None) -> bool:
        return self.dispatcher.wait(timeout)


def filter_preview(service, entry: dict, html: str) -> tuple[str, str]:
    """The before_render hooks for /preview/<slug>, so the preview shows what the build writes.
    Returns (html, title); a failing hook leaves the rendering as it was (the preview still shows)."""
    hooks = RenderHooks(service, continue_on_error=True)
    if service.plugins is None or not hooks.dispatcher.chain("before_render"):
        return html, entry.get("title") or ""
    e = Entry(entry.get("id"), entry.get("type"), entry.get("title") or "", entry.get("slug") or "",
              entry.get("fields") or {}, entry.get("published_at") or "", entry.get("updated_at") or "", None)
    e._body = entry.get("body") or ""
    out, changed = hooks(e, html)
    return out, changed.get("title", e.title)
