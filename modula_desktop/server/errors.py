"""Every error the admin and content API answers is JSON ``{"error": "..."}`` (HTML only for the preview
pages). Plugin routes answer ModulaCMS's envelope instead: see plugin_routes.error_body."""
from __future__ import annotations

import http
import json
import logging

import falcon

from ..core.errors import HookAbort, ModulaError, NotFound, ReadRefused, SettingsError, SiteError, ValidationError
from ..core.plugins.errors import PluginLoadError

log = logging.getLogger(__name__)

JSON = "application/json"


def error_json(message: str) -> bytes:
    return json.dumps({"error": message}, ensure_ascii=False).encode("utf-8")


def error_message(exc: falcon.HTTPError) -> str:
    if exc.description:
        return str(exc.description)
    try:
        return http.HTTPStatus(exc.status_code).phrase.lower()
    except ValueError:
        return "error"


def serialize_error(req, resp, exc: falcon.HTTPError):
    """Falcon's error serializer: one shape for every error, whatever the client accepts."""
    resp.data = error_json(error_message(exc))
    resp.content_type = JSON


def _raise_as(status: int):
    def handler(req, resp, exc, params):
        raise falcon.HTTPError(status, description=str(exc))
    return handler


def _read_refused(req, resp, exc: ReadRefused, params):
    """A read hook refused: its status, its JSON (ModulaCMS's before_read answer) or one sentence, and the
    headers it set (already checked by the dispatcher)."""
    resp.status = exc.status
    for name, value in exc.headers.items():
        resp.set_header(name, value)
    if exc.body is not None:
        resp.data = json.dumps(exc.body, ensure_ascii=False).encode("utf-8")
    else:
        body = {"error": str(exc), "code": "READ_REFUSED"}
        if exc.plugin:
            body["plugin"] = exc.plugin
        resp.data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    resp.content_type = JSON


def _internal(req, resp, exc, params):
    log.exception("unhandled error in %s %s", req.method, req.path)
    raise falcon.HTTPInternalServerError(description="internal server error")


def add_error_handlers(app: falcon.App):
    """User-caused errors of the core become their HTTP status with the core's own sentence.

    Falcon picks the most specific handler by the exception's MRO, so HTTPError keeps Falcon's own
    handler (and our serializer) and anything unexpected is logged and answered 500.
    """
    app.add_error_handler(Exception, _internal)
    app.add_error_handler(ModulaError, _raise_as(400))
    app.add_error_handler(ValidationError, _raise_as(400))
    app.add_error_handler(SettingsError, _raise_as(400))
    app.add_error_handler(NotFound, _raise_as(404))
    app.add_error_handler(PluginLoadError, _raise_as(404))
    app.add_error_handler(HookAbort, _raise_as(422))
    app.add_error_handler(ReadRefused, _read_refused)
    app.add_error_handler(SiteError, _raise_as(500))
