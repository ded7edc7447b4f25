"""Admin API for content (SPEC 5): the same ContentService (and so the same hooks) as the GUI.
Errors of the service map in errors.py: ValidationError 400, NotFound 404, HookAbort 422."""
from __future__ import annotations

from urllib.parse import urlencode

import falcon

from ..core.content import DEFAULT_LIMIT
from ..core.reads import Reader
from .bodies import read_json_object
from .responses import send_json

LIST_FILTERS = ("type", "status", "search")
SEARCH_LIMIT = 20
SOURCE = "api"  # what the revisions of changes made here record as their source


# never handed to plugin code: the admin token and the preview key (as for plugin routes), credentials
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_SECRET_PARAMS = frozenset({"key"})


def reader(req, source: str = SOURCE) -> Reader:
    """The request as the read hooks see it (ModulaCMS's data.headers, lowercase; data.client_ip, data.query),
    without the admin token, cookies or the preview key."""
    return Reader(source, {k.lower(): v for k, v in req.headers.items() if k.lower() not in _SECRET_HEADERS},
                  req.remote_addr or "",
                  {k: v for k, v in req.params.items() if isinstance(v, str) and k not in _SECRET_PARAMS})


def set_headers(resp, headers: dict):
    for name, value in headers.items():
        resp.set_header(name, value)


def _int_param(req, name: str):
    raw = req.get_param(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise falcon.HTTPBadRequest(description=f"query parameter '{name}' must be a whole number") from None


class _Content:
    def __init__(self, service):
        self.service = service
        self.body_limit = service.settings.plugins.max_request_body

    @property
    def content(self):
        if self.service.content is None:  # pragma: no cover - only while the core is incomplete
            raise falcon.HTTPServiceUnavailable(description="the content service is not available")
        return self.service.content


class ContentCollection(_Content):
    def on_get(self, req, resp):
        filters = {k: req.get_param(k) for k in LIST_FILTERS if req.get_param(k)}
        limit = _int_param(req, "limit")
        offset = _int_param(req, "offset") or 0
        limit = DEFAULT_LIMIT if limit is None else limit
        # the read hooks run here (admin API reads), not for the window's own lists
        items, headers = self.content.read_list(reader(req), **filters, limit=limit, offset=offset)
        set_headers(resp, headers)
        total = self.content.count(**filters)
        following = None
        if offset + len(items) < total:
            following = req.path + "?" + urlencode({**filters, "limit": limit, "offset": offset + limit})
        send_json(resp, {"items": items, "total": total, "next": following})

    def on_post(self, req, resp):
        entry = self.content.create(read_json_object(req, self.body_limit), source=SOURCE)
        resp.location = f"/api/v1/admin/content/{entry['id']}"
        send_json(resp, entry, status=201)


class ContentSearch(_Content):
    """Full-text search (FTS5): best match first, each hit with its snippet."""

    def on_get(self, req, resp):
        query = req.get_param("q") or ""
        filters = {k: req.get_param(k) for k in ("type", "status") if req.get_param(k)}
        limit = _int_param(req, "limit")
        limit = SEARCH_LIMIT if limit is None else limit
        offset = _int_param(req, "offset") or 0
        items = self.content.search(query, limit=limit, offset=offset, **filters)
        total = self.content.count(search=query, **filters) if query.strip() else 0
        following = None
        if offset + len(items) < total:
            following = req.path + "?" + urlencode({"q": query, **filters, "limit": limit, "offset": offset + limit})
        send_json(resp, {"items": items, "total": total, "next": following})


class ContentItem(_Content):
    def on_get(self, req, resp, id):
        entry, headers = self.content.read(id, reader(req))
        set_headers(resp, headers)
        send_json(resp, entry)

    def on_put(self, req, resp, id):
        send_json(resp, self.content.update(id, read_json_object(req, self.body_limit), source=SOURCE))

    def on_delete(self, req, resp, id):
        # moves the entry to the Trash (restorable in the window); the answer is the entry as before
        send_json(resp, self.content.delete(id))

    def on_post_publish(self, req, resp, id):
        send_json(resp, self.content.publish(id, source=SOURCE))

    def on_post_unpublish(self, req, resp, id):
        send_json(resp, self.content.unpublish(id, source=SOURCE))


def _revision_number(number: str) -> int:
    try:
        value = int(number)
    except ValueError:
        raise falcon.HTTPBadRequest(description=f"revision number must be a whole number, not {number!r}") from None
    if value < 1:
        raise falcon.HTTPBadRequest(description="revision numbers start at 1")
    return value


class Revisions(_Content):
    """An entry's revisions: every save keeps one; a restore saves the old text as a new revision."""

    def on_get(self, req, resp, id):
        send_json(resp, {"items": self.content.revisions(id)})

    def on_get_one(self, req, resp, id, number):
        n = _revision_number(number)
        for rev in self.content.revisions(id):
            if rev["number"] == n:
                send_json(resp, rev)
                return
        raise falcon.HTTPNotFound(description=f"entry '{id}' has no revision {n}")

    def on_post_restore(self, req, resp, id, number):
        send_json(resp, self.content.restore(id, _revision_number(number), source=SOURCE))


class Trash(_Content):
    """Deleted entries: restorable (with the create hooks) or removed for good (no hooks)."""

    def on_get(self, req, resp):
        items = self.content.trash()
        send_json(resp, {"items": items, "total": len(items), "next": None})

    def on_delete(self, req, resp):
        send_json(resp, {"removed": self.content.empty_trash()})

    def on_get_item(self, req, resp, id):
        send_json(resp, self.content.get_trashed(id))

    def on_delete_item(self, req, resp, id):
        send_json(resp, self.content.purge(id))

    def on_post_restore(self, req, resp, id):
        send_json(resp, self.content.restore_from_trash(id, source=SOURCE))
