"""The admin API described as OpenAPI 3.1: served at ``GET /api/v1/openapi.json`` (admin token) and
rendered as docs/ADMIN_API.md by ``python -m modula_desktop.server.apidoc --markdown``.

tests/test_openapi.py fails when a route of the app is missing here or a documented one does not exist,
and when docs/ADMIN_API.md is not what this module renders."""
from __future__ import annotations

import json

from .. import __version__
from ..core.plugins.api.http import ROUTE_ERRORS

# ---- schemas --------------------------------------------------------------------------------------
S = "string"
NULLABLE_S = {"type": [S, "null"]}


def _obj(props: dict, required=(), extra=False, description: str | None = None) -> dict:
    out = {"type": "object", "properties": props, "additionalProperties": extra}
    if required:
        out["required"] = list(required)
    if description:
        out["description"] = description
    return out


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _list_of(name: str) -> dict:
    return {"type": "array", "items": _ref(name)}


ENTRY_FIELDS = {
    "id": {"type": S, "description": "ULID"},
    "type": {"type": S, "enum": ["page", "post"]},
    "title": {"type": S},
    "slug": {"type": S, "description": "unique among entries not in the trash; made from the title when absent"},
    "body": {"type": S, "description": "Markdown"},
    "status": {"type": S, "enum": ["draft", "published"]},
    "fields": {"type": "object", "description": "free-form fields (plugins' filters may add some)"},
    "published_at": {**NULLABLE_S, "description": "RFC 3339 UTC"},
    "created_at": {"type": S, "description": "RFC 3339 UTC"},
    "updated_at": {"type": S, "description": "RFC 3339 UTC"},
}

SCHEMAS = {
    "Error": _obj({"error": {"type": S, "description": "one sentence saying what was wrong"}}, ["error"],
                  description="Every error the admin and content API answers (plugin routes: PluginError)."),
    "PluginError": _obj({"error": _obj({
        "code": {"type": S, "enum": list(ROUTE_ERRORS), "description": "what went wrong, for programs"},
        "message": {"type": S, "description": "one sentence for people; never the text of a Lua error "
                                              "(that goes to the plugin's log, under the request id)"},
        "request_id": {"type": S, "description": "new for each error answer, also in the X-Request-Id header "
                                                 "and in the plugin's log entry when one was written"}},
        ["code", "message", "request_id"])}, ["error"],
        description="Every error a plugin route answers: ModulaCMS's envelope and codes."),
    "Health": _obj({"status": {"type": S, "const": "ok"}}, ["status"]),
    "Entry": _obj(ENTRY_FIELDS, list(ENTRY_FIELDS), extra=True, description="A page or post."),
    "EntryInput": _obj({k: v for k, v in ENTRY_FIELDS.items()
                        if k not in ("id", "created_at", "updated_at", "published_at")},
                       description="Fields to create an entry with (title required) or to change."),
    "EntryList": _obj({"items": _list_of("Entry"),
                       "total": {"type": "integer", "description": "entries matching the filters"},
                       "next": {**NULLABLE_S, "description": "the URL of the next page, null on the last"}},
                      ["items", "total", "next"]),
    "SearchHit": _obj({
        "id": {"type": S}, "type": {"type": S, "enum": ["page", "post"]}, "title": {"type": S}, "slug": {"type": S},
        "status": {"type": S, "enum": ["draft", "published"]}, "updated_at": {"type": S},
        "snippet": {"type": S, "description": "HTML: the text around the matches, escaped, with the matched "
                                              "words in `<mark>`"},
        "rank": {"type": "number", "description": "bm25 (a title word weighs five body words): lower is a "
                                                 "better match"}},
        ["id", "title", "slug", "status", "snippet", "rank"], description="An entry a search found."),
    "SearchResults": _obj({"items": _list_of("SearchHit"),
                           "total": {"type": "integer", "description": "entries matching the search and filters"},
                           "next": {**NULLABLE_S, "description": "the URL of the next page, null on the last"}},
                          ["items", "total", "next"], description="Best match first."),
    "PluginSummary": _obj({
        "name": {"type": S}, "state": {"type": S, "enum": ["discovered", "loading", "running", "failed", "stopped"]},
        "version": NULLABLE_S, "description": {"type": S}, "error": NULLABLE_S,
        "routes": {"type": "integer"}, "hooks": {"type": "integer"},
        "permissions": {"type": ["array", "null"], "items": {"type": S},
                        "description": "as declared; null: not declared (ModulaCMS's default set)"},
        "effective_permissions": {"type": "array", "items": {"type": S}},
    }, ["name", "state"], extra=True),
    "PluginList": _obj({"plugins": _list_of("PluginSummary"),
                        "loading": {"type": "boolean", "description": "plugins are still loading after start-up"}},
                       ["plugins"]),
    "PluginInfo": _obj({
        "name": {"type": S}, "state": {"type": S, "enum": ["discovered", "loading", "running", "failed", "stopped"]},
        "version": NULLABLE_S, "description": {"type": S}, "error": NULLABLE_S,
        "permissions": {"type": ["array", "null"], "items": {"type": S}},
        "effective_permissions": {"type": "array", "items": {"type": S}},
        "routes": {"type": "array", "items": _ref("RouteState")},
        "hooks": {"type": "array", "items": _ref("HookState")},
        "core": {"type": "array", "items": _ref("CoreState"),
                 "description": "content access (core:read / core:write) it declares, with its approval"},
        "core_access": {"type": "array", "items": {"type": S},
                        "description": "what ModulaCMS's plugin_info.core_access asks for (read, write)"},
        "breaker": {"type": "object"}, "hook_breaker": {"type": "object"}, "pool": {"type": ["object", "null"]},
        "logs": {"type": "array", "items": {"type": "object"}},
        "last_errors": {"type": "array", "items": {"type": "object"}},
    }, ["name", "state", "routes", "hooks"], extra=True, description="Everything `modula plugin info` shows."),
    "RouteState": _obj({"plugin": {"type": S}, "state": {"type": S}, "method": {"type": S},
                        "path": {"type": S}, "public": {"type": ["boolean", "null"]},
                        "approved": {"type": "boolean"}}, ["method", "path", "approved"], extra=True),
    "HookState": _obj({"plugin": {"type": S}, "state": {"type": S}, "event": {"type": S}, "table": {"type": S},
                       "priority": {"type": ["integer", "null"]}, "approved": {"type": "boolean"},
                       "disabled": {"type": "boolean"}}, ["event", "table", "approved"], extra=True),
    "DomainState": _obj({"plugin": {"type": S}, "state": {"type": S}, "domain": {"type": S},
                         "description": {"type": S}, "approved": {"type": "boolean"}},
                        ["domain", "approved"], extra=True),
    "DomainList": _obj({"domains": _list_of("DomainState")}, ["domains"]),
    "DomainSelection": _obj({"domains": {"type": "array", "minItems": 1, "items": _obj(
        {"plugin": {"type": S}, "domain": {"type": S}}, ["plugin", "domain"])}}, ["domains"]),
    "CoreState": _obj({"plugin": {"type": S}, "state": {"type": S},
                       "access": {"type": S, "enum": ["read", "write"]}, "approved": {"type": "boolean"}},
                      ["access", "approved"], extra=True),
    "CoreList": _obj({"core": _list_of("CoreState")}, ["core"]),
    "CoreSelection": _obj({"core": {"type": "array", "minItems": 1, "items": _obj(
        {"plugin": {"type": S}, "access": {"type": S, "enum": ["read", "write"]}}, ["plugin", "access"])}},
        ["core"]),
    "ScreenState": _obj({"plugin": {"type": S}, "state": {"type": S},
                         "kind": {"type": S, "enum": ["screen", "interface"]}, "name": {"type": S},
                         "label": {"type": S}, "approved": {"type": "boolean"}},
                        ["kind", "name", "approved"], extra=True),
    "ScreenList": _obj({"screens": _list_of("ScreenState")}, ["screens"]),
    "ScreenSelection": _obj({"screens": {"type": "array", "minItems": 1, "items": _obj(
        {"plugin": {"type": S}, "kind": {"type": S, "enum": ["screen", "interface"], "default": "screen"},
         "name": {"type": S}}, ["plugin", "name"])}}, ["screens"]),
    "Revision": _obj({"number": {"type": "integer"}, "type": {"type": S}, "title": {"type": S},
                      "slug": {"type": S}, "body": {"type": S}, "status": {"type": S}, "fields": {"type": "object"},
                      "created_at": {"type": S},
                      "source": {"type": S, "description": "who saved it: editor, api, restore, trash, app"},
                      "changed_by": {"type": "array", "items": {"type": S},
                                     "description": "plugins whose before-hook filters changed what was saved"}},
                     ["number", "title", "body", "created_at", "source"], extra=True),
    "RevisionList": _obj({"items": _list_of("Revision")}, ["items"],
                         description="Newest first."),
    "TrashedEntry": {"allOf": [_ref("Entry"), _obj({"deleted_at": {"type": S}}, ["deleted_at"], extra=True)]},
    "TrashList": _obj({"items": _list_of("TrashedEntry"), "total": {"type": "integer"}, "next": {"type": "null"}},
                      ["items", "total", "next"]),
    "Emptied": _obj({"removed": {"type": "integer"}}, ["removed"]),
    "RouteList": _obj({"routes": _list_of("RouteState")}, ["routes"]),
    "HookList": _obj({"hooks": _list_of("HookState")}, ["hooks"]),
    "RouteSelection": _obj({"routes": {"type": "array", "minItems": 1, "items": _obj(
        {"plugin": {"type": S}, "method": {"type": S}, "path": {"type": S}, "public": {"type": "boolean"}},
        ["plugin", "method", "path"])}}, ["routes"]),
    "HookSelection": _obj({"hooks": {"type": "array", "minItems": 1, "items": _obj(
        {"plugin": {"type": S}, "event": {"type": S}, "table": {"type": S}}, ["plugin", "event", "table"])}},
        ["hooks"]),
}

# ---- paths ----------------------------------------------------------------------------------------
JSON = "application/json"


def _json(schema: str | dict) -> dict:
    return {"content": {JSON: {"schema": _ref(schema) if isinstance(schema, str) else schema}}}


def _answer(description: str, schema: str | dict | None = None) -> dict:
    out = {"description": description}
    if schema is not None:
        out.update(_json(schema))
    return out


def _err(description: str) -> dict:
    return _answer(description, "Error")


COMMON = {"401": _err("no or wrong admin token"), "421": _err("the Host header is not this server's")}


def _op(summary: str, ok: tuple, *, errors: dict | None = None, body: str | None = None, params=(),
        description: str | None = None, tag: str = "admin", auth: bool = True, query=()) -> dict:
    status, text, schema = ok
    responses = {status: _answer(text, schema)}
    for code, why in (errors or {}).items():
        responses[code] = _err(why)
    if auth:
        responses.update(COMMON)
    else:
        responses["421"] = COMMON["421"]
    op = {"summary": summary, "tags": [tag], "responses": dict(sorted(responses.items()))}
    if description:
        op["description"] = description
    parameters = [{"name": p, "in": "path", "required": True, "schema": {"type": S}} for p in params]
    parameters += [{"name": n, "in": "query", "required": False, "schema": s, "description": d} for n, s, d in query]
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = {"required": True, **_json(body)}
    if not auth:
        op["security"] = []
    return op


NOT_PLUGIN = {"404": "no plugin of that name"}
NO_ENTRY = {"404": "no entry with that id"}
BAD = {"400": "the body or a parameter is not what this endpoint takes (the sentence says which)"}
ABORT = {"422": "a plugin's before-hook refused the change (its message)"}
TOO_LARGE = {"413": "the body is over the request limit (1 MiB)"}


def _paths() -> dict:
    paths = {
        "/api/v1/health": {"get": _op("Is the server up (no plugin code, no database)", ("200", "up", "Health"),
                                      tag="server", auth=False)},
        "/api/v1/openapi.json": {"get": _op("This document", ("200", "the OpenAPI 3.1 document", {"type": "object"}),
                                            tag="server")},
        "/metrics": {"get": {**_op("Prometheus metrics", ("200", "text format", None), tag="server"),
                             "description": "Plugin requests, hooks, errors, breaker trips, reloads, VM pools "
                                            "and budget exhaustions, in Prometheus's text format."}},
        "/preview/{slug}": {"get": _op(
            "An entry rendered as a page", ("200", "HTML", None), params=("slug",), tag="server", auth=False,
            errors={"404": "no such entry (drafts: without the token or the entry's preview link)"},
            query=(("key", {"type": S}, "the per-entry preview key the window opens drafts with"),),
            description="Published entries for anyone on this computer; drafts with the admin token or the "
                        "entry's preview link.")},
        "/api/v1/admin/plugins": {"get": _op("Every plugin with its state", ("200", "the list", "PluginList"))},
        "/api/v1/admin/plugins/{name}": {"get": _op(
            "One plugin: routes, hooks, approvals, breaker, VM pool, logs", ("200", "the plugin", "PluginInfo"),
            params=("name",), errors=NOT_PLUGIN)},
        "/api/v1/admin/plugins/{name}/reload": {"post": _op(
            "Blue-green reload", ("200", "reloaded", "PluginSummary"), params=("name",),
            errors={**NOT_PLUGIN, "409": "the plugin is disabled", "422": "the new version failed to load "
                                                                           "(the old one keeps serving)"})},
        "/api/v1/admin/plugins/{name}/enable": {"post": _op(
            "Enable (and start) a plugin", ("200", "enabled", "PluginSummary"), params=("name",),
            errors={**NOT_PLUGIN, "422": "the plugin could not start"})},
        "/api/v1/admin/plugins/{name}/disable": {"post": _op(
            "Disable (stop) a plugin", ("200", "disabled", "PluginSummary"), params=("name",), errors=NOT_PLUGIN)},
    }
    for kind, item, sel in (("routes", "RouteList", "RouteSelection"), ("hooks", "HookList", "HookSelection"),
                            ("domains", "DomainList", "DomainSelection"), ("requests", "DomainList", "DomainSelection"),
                            ("core", "CoreList", "CoreSelection"), ("screens", "ScreenList", "ScreenSelection")):
        one = "access" if kind == "core" else kind[:-1]
        alias = kind == "requests"
        what = {"domains": "outbound domains", "requests": "outbound domains",
                "core": "content access (core:read / core:write)",
                "screens": "screens and field interfaces"}.get(kind, kind)
        note = " ModulaCMS's spelling of `/domains`: the same endpoint." if alias else ""
        paths[f"/api/v1/admin/plugins/{kind}"] = {"get": _op(
            f"Every plugin's declared {what} with their approval", ("200", "the list", item),
            description=note.strip() or None)}
        for verb in ("approve", "revoke"):
            paths[f"/api/v1/admin/plugins/{kind}/{verb}"] = {"post": _op(
                f"{verb.capitalize()} {what}", ("200", f"what was {verb}d", item), body=sel,
                errors={**BAD, "409": "the plugin is not running", **TOO_LARGE},
                description=("Each item is a plugin and an access, \"read\" or \"write\"; approving needs the "
                             "running plugin to declare it (permissions core:read / core:write, or ModulaCMS's "
                             "core_access)." if kind == "core" else
                             f"Each {one} is named by its plugin and key; approving needs the {one} to be "
                             "declared by the running plugin.") + (
                                " A route is approved as public or not: an approval whose `public` differs from "
                                "the declaration is refused." if kind == "routes" else "") + note)}
    filters = (("type", {"type": S, "enum": ["page", "post"]}, "only this type"),
               ("status", {"type": S, "enum": ["draft", "published"]}, "only this status"),
               ("search", {"type": S}, "words in the title or body (full-text, as in /content/search); "
                                       "the order stays newest first"),
               ("limit", {"type": "integer", "default": 100}, "at most this many (cap 1000)"),
               ("offset", {"type": "integer", "default": 0}, "skip this many"))
    # a read hook's refusal (docs/PLUGINS.md, read hooks): its own 4xx (e.g. 402), 403 for error(), 503 for a
    # hook that was stopped
    READ = {"403": "a before_read hook refused the read (or answered its own 4xx status and JSON)",
            "503": "a read hook was stopped by a budget or failed, so the read was refused"}
    paths["/api/v1/admin/content"] = {
        "get": _op("Entries, newest first (runs the read hooks: before_read once, after_read per entry)",
                   ("200", "a page of entries", "EntryList"), query=filters, errors={**BAD, **READ}),
        "post": _op("Create an entry (runs before/after_create hooks)", ("201", "the new entry", "Entry"),
                    body="EntryInput", errors={**BAD, **ABORT, **TOO_LARGE}),
    }
    paths["/api/v1/admin/content/search"] = {"get": _op(
        "Full-text search of titles and bodies, best match first", ("200", "a page of hits", "SearchResults"),
        errors=BAD,
        query=(("q", {"type": S}, "the words to find (see below); none: no hits"),
               ("type", {"type": S, "enum": ["page", "post"]}, "only this type"),
               ("status", {"type": S, "enum": ["draft", "published"]}, "only this status"),
               ("limit", {"type": "integer", "default": 20}, "at most this many (cap 1000)"),
               ("offset", {"type": "integer", "default": 0}, "skip this many")),
        description="Entries in the Trash are not searched. Every word must appear (words of two letters or "
                    "more also match as prefixes); `\"a phrase\"` finds the words together; `-word` leaves "
                    "out entries with it; `OR` in capitals between words finds either. Any other character is "
                    "text, never search syntax: no query is an error.")}
    paths["/api/v1/admin/content/{id}"] = {
        "get": _op("One entry (runs the before_read and after_read hooks)", ("200", "the entry", "Entry"),
                   params=("id",), errors={**NO_ENTRY, **READ}),
        "put": _op("Change an entry (runs before/after_update hooks)", ("200", "the changed entry", "Entry"),
                   params=("id",), body="EntryInput", errors={**NO_ENTRY, **BAD, **ABORT, **TOO_LARGE}),
        "delete": _op("Move an entry to the Trash (runs before/after_delete hooks)", ("200", "the entry", "Entry"),
                      params=("id",), errors={**NO_ENTRY, **ABORT}),
    }
    for verb in ("publish", "unpublish"):
        paths[f"/api/v1/admin/content/{{id}}/{verb}"] = {"post": _op(
            f"{verb.capitalize()} an entry (runs before/after_{verb} hooks)", ("200", "the entry", "Entry"),
            params=("id",), errors={**NO_ENTRY, **ABORT})}
    rev = ("id",)
    paths["/api/v1/admin/content/{id}/revisions"] = {"get": _op(
        "An entry's revisions, newest first", ("200", "the revisions", "RevisionList"), params=rev, errors=NO_ENTRY)}
    paths["/api/v1/admin/content/{id}/revisions/{number}"] = {"get": _op(
        "One revision", ("200", "the revision", "Revision"), params=("id", "number"),
        errors={**NO_ENTRY, "400": "number is not a whole number from 1"})}
    paths["/api/v1/admin/content/{id}/revisions/{number}/restore"] = {"post": _op(
        "Restore a revision (saved as a new revision; runs the update hooks)", ("200", "the entry", "Entry"),
        params=("id", "number"), errors={**NO_ENTRY, **ABORT, "400": "number is not a whole number from 1"})}
    paths["/api/v1/admin/trash"] = {
        "get": _op("Entries in the Trash, most recently deleted first", ("200", "the Trash", "TrashList")),
        "delete": _op("Empty the Trash (for good; no hooks)", ("200", "how many were removed", "Emptied")),
    }
    not_trashed = {"404": "no entry with that id in the Trash"}
    paths["/api/v1/admin/trash/{id}"] = {
        "get": _op("One entry in the Trash", ("200", "the entry", "TrashedEntry"), params=rev, errors=not_trashed),
        "delete": _op("Delete an entry in the Trash for good (no hooks)", ("200", "the entry", "TrashedEntry"),
                      params=rev, errors=not_trashed),
    }
    paths["/api/v1/admin/trash/{id}/restore"] = {"post": _op(
        "Bring an entry back (runs the create hooks; the slug gets a free variant if taken)",
        ("200", "the entry", "Entry"), params=rev, errors={**not_trashed, **ABORT})}
    site = ("the last build of the site (`modula build`), with a sandboxing Content-Security-Policy; a "
            "folder's address serves its index.html")
    paths["/site"] = {"get": _op("The built site's home page", ("200", "a file of the build", None), tag="server",
                                 auth=False, description=site, errors={"404": "no build yet"})}
    paths["/site/{path}"] = {"get": _op("A file of the built site", ("200", "the file", None), params=("path",),
                                        tag="server", auth=False, description=site,
                                        errors={"404": "no such file in the build"})}
    paths["/api/v1/plugins/{plugin}/{path}"] = {
        method: {**_op(f"A plugin's own route ({method.upper()})", ("200", "what the handler answers", None),
                       tag="plugins", params=("plugin", "path"), auth=False),
                 "description": "Served only once the author approved the route; an unapproved route answers "
                                "404 like an unknown one. Routes not declared public need the admin token. "
                                "Every error answer is ModulaCMS's envelope (PluginError) with an X-Request-Id "
                                "header; besides those below, a wrong Host answers 421 `MISDIRECTED_REQUEST` "
                                "and HEAD or OPTIONS 405 `METHOD_NOT_ALLOWED`.",
                 "responses": {"200": _answer("what the handler answers"), **_plugin_errors()}}
        for method in ("get", "post", "put", "delete", "patch")}
    return paths


# when each code of a plugin route is answered (the statuses are api.http.ROUTE_ERRORS')
PLUGIN_ERROR_CASES = {
    "INVALID_REQUEST": "bad JSON in an application/json body, or a request that cannot be handed to the plugin",
    "UNAUTHORIZED": "the route is not public and the admin token is missing",
    "ROUTE_NOT_FOUND": "unknown or unapproved route",
    "BODY_TOO_LARGE": "the body is over the request limit (1 MiB)",
    "RATE_LIMITED": "over the rate limit (Retry-After says when to retry)",
    "HANDLER_ERROR": "the handler (or middleware) raised an error or gave an unusable answer",
    "RESPONSE_TOO_LARGE": "the handler's answer was over the response limit (5 MiB)",
    "INTERNAL_ERROR": "a fault of the server's own",
    "PLUGIN_UNAVAILABLE": "the plugin is disabled, failed, loading or reloading",
    "CIRCUIT_BREAKER_OPEN": "the plugin's circuit breaker is open (Retry-After)",
    "POOL_EXHAUSTED": "no VM of the plugin came free in time (Retry-After)",
    "HANDLER_TIMEOUT": "the handler ran out of time or instructions",
}


def _plugin_errors() -> dict:
    """The error answers of a plugin route by status, each naming its codes."""
    by_status: dict[str, list[str]] = {}
    for code in PLUGIN_ERROR_CASES:
        by_status.setdefault(str(ROUTE_ERRORS[code][0]), []).append(code)
    out = {}
    for status in sorted(by_status):
        codes = by_status[status]
        schema = {"allOf": [_ref("PluginError"), {"properties": {"error": {"properties": {
            "code": {"enum": codes}}}}}]}
        out[status] = {"description": "; ".join(f"`{c}`: {PLUGIN_ERROR_CASES[c]}" for c in codes),
                       "headers": {"X-Request-Id": {"description": "the error's request_id",
                                                    "schema": {"type": S}}},
                       "content": {JSON: {"schema": schema}}}
    return out


def document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Modula Desktop local API", "version": __version__,
                 "description": "The local server of one site, bound to 127.0.0.1. Admin endpoints need "
                                "`Authorization: Bearer <token>` with the token from `<site>/.modula/token`; "
                                "requests whose Host is not `127.0.0.1:<port>` or `localhost:<port>` are "
                                "refused with 421."},
        "servers": [{"url": "http://127.0.0.1:8642", "description": "the default port"}],
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"token": {"type": "http", "scheme": "bearer",
                                                     "description": "the site's admin token"}}},
        "security": [{"token": []}],
        "paths": _paths(),
    }


class OpenApiDocument:
    def __init__(self):
        self.body = json.dumps(document(), indent=1).encode("utf-8")

    def on_get(self, req, resp):
        resp.content_type = JSON
        resp.data = self.body


# ---- docs/ADMIN_API.md ----------------------------------------------------------------------------
def _schema_text(schema: dict) -> str:
    if "allOf" in schema and "$ref" in schema["allOf"][0]:  # a schema narrowed (PluginError to its codes)
        return _schema_text(schema["allOf"][0])
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{name.lower()})"
    if schema.get("type") == "array" and "items" in schema:
        return f"array of {_schema_text(schema['items'])}"
    kind = schema.get("type", "object")
    text = " or ".join(kind) if isinstance(kind, list) else kind
    if "enum" in schema:
        text += " (" + ", ".join(f"`{v}`" for v in schema["enum"]) + ")"
    return text


def _property_rows(schema: dict, prefix: str = "") -> list[str]:
    """Table rows of an object's properties, those of a nested object as `outer.inner`."""
    rows = []
    required = set(schema.get("required", ()))
    for prop, ps in schema.get("properties", {}).items():
        rows.append(f"| `{prefix}{prop}`{' (required)' if prop in required else ''} | {_schema_text(ps)} | "
                    f"{ps.get('description', '')} |")
        if ps.get("type") == "object" and ps.get("properties"):
            rows += _property_rows(ps, f"{prefix}{prop}.")
    return rows


def markdown(doc: dict | None = None) -> str:
    doc = doc or document()
    out = [f"# {doc['info']['title']} (version {doc['info']['version']})", "",
           "<!-- Generated by `python -m modula_desktop.server.apidoc --markdown`; tests/test_openapi.py "
           "checks it. Edit modula_desktop/server/openapi.py, not this file. -->", "",
           doc["info"]["description"], "",
           "The same document is served as OpenAPI 3.1 at `GET /api/v1/openapi.json` (admin token).", "",
           "## Endpoints", ""]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            auth = "no token" if op.get("security") == [] else "admin token"
            out.append(f"### `{method.upper()} {path}`")
            out.append("")
            out.append(f"{op['summary']} ({auth}).")
            if op.get("description"):
                out += ["", op["description"]]
            params = op.get("parameters") or []
            if params:
                out += ["", "| parameter | in | type | |", "|---|---|---|---|"]
                out += [f"| `{p['name']}` | {p['in']} | {_schema_text(p['schema'])} | {p.get('description', '')} |"
                        for p in params]
            body = op.get("requestBody")
            if body:
                out += ["", f"Body: {_schema_text(body['content'][JSON]['schema'])}"]
            out += ["", "| status | answer |", "|---|---|"]
            for code, r in op["responses"].items():
                schema = r.get("content", {}).get(JSON, {}).get("schema")
                out.append(f"| {code} | {r['description']}{' — ' + _schema_text(schema) if schema else ''} |")
            out.append("")
    out += ["## Schemas", ""]
    for name, schema in doc["components"]["schemas"].items():
        out += [f"### {name}", ""]
        if schema.get("description"):
            out += [schema["description"], ""]
        parts = schema.get("allOf") or [schema]
        rows = []
        for part in parts:
            if "$ref" in part:
                rows.append(f"| (all of) | {_schema_text(part)} | |")
                continue
            rows += _property_rows(part)
        if rows:
            out += ["| field | type | |", "|---|---|---|", *rows, ""]
    return "\n".join(out).rstrip() + "\n"
