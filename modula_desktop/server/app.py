"""The Falcon application: a factory taking the site service and the port it is served on."""
from __future__ import annotations

import falcon
from prometheus_client import CONTENT_TYPE_LATEST

from . import admin, content
from .auth import TokenAuth
from .errors import JSON, add_error_handlers, serialize_error
from .openapi import OpenApiDocument
from .middleware import RequestGuard
from .plugin_routes import PREFIX, PluginDispatcher
from .preview import Preview
from .site_files import SiteFiles

HEALTH_BODY = b'{"status":"ok"}'
PREFIX_LEN = len(PREFIX)


class Health:
    """The speed baseline: no plugin code, no database."""

    def on_get(self, req, resp):
        resp.content_type = JSON
        resp.data = HEALTH_BODY


class MetricsText:
    """Prometheus text format. Needs the admin token (checked by RequestGuard): the numbers name the
    site's plugins and routes and show its traffic, which other local users have no business reading."""

    def __init__(self, metrics):
        self.metrics = metrics

    def on_get(self, req, resp):
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = self.metrics.export()


class SiteApp:
    """The WSGI application: paths under /api/v1/plugins go to the plugin dispatcher, the rest to the
    Falcon app. Plugin routes are the hot path and need nothing of Falcon's request machinery."""

    def __init__(self, falcon_app: falcon.App, plugins: PluginDispatcher):
        self.falcon = falcon_app
        self.plugins = plugins
        self._serve_plugin = plugins.__call__  # a bound method: called without the slot lookup

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith(PREFIX) and (len(path) == PREFIX_LEN or path[PREFIX_LEN] == "/"):
            return self._serve_plugin(environ, start_response)
        return self.falcon(environ, start_response)


def create_app(service, *, port: int, token: str | None = None) -> SiteApp:
    """Build the WSGI app for service. port: the port the server really listens on (the Host check
    accepts only 127.0.0.1:<port> and localhost:<port>). token: the admin token (default: the site's)."""
    auth = TokenAuth(token if token is not None else service.site.token())
    guard = RequestGuard(port, auth)
    app = falcon.App(middleware=[guard], cors_enable=False)
    app.req_options.strip_url_path_trailing_slash = False
    app.set_error_serializer(serialize_error)
    add_error_handlers(app)

    app.add_route("/api/v1/health", Health())
    app.add_route("/metrics", MetricsText(service.metrics))
    app.add_route("/api/v1/openapi.json", OpenApiDocument())

    app.add_route("/api/v1/admin/plugins", admin.PluginList(service))
    detail = admin.PluginDetail(service)
    app.add_route("/api/v1/admin/plugins/{name}", detail)
    for action in ("reload", "enable", "disable"):
        app.add_route(f"/api/v1/admin/plugins/{{name}}/{action}", detail, suffix=action)
    for path, resource in (("routes", admin.RouteApprovals(service)), ("hooks", admin.HookApprovals(service)),
                           ("domains", admin.DomainApprovals(service)), ("requests", admin.RequestApprovals(service)),
                           ("core", admin.CoreApprovals(service)), ("screens", admin.ScreenApprovals(service))):
        app.add_route(f"/api/v1/admin/plugins/{path}", resource)
        app.add_route(f"/api/v1/admin/plugins/{path}/approve", resource, suffix="approve")
        app.add_route(f"/api/v1/admin/plugins/{path}/revoke", resource, suffix="revoke")

    app.add_route("/api/v1/admin/content", content.ContentCollection(service))
    app.add_route("/api/v1/admin/content/search", content.ContentSearch(service))  # a literal segment wins over {id}
    item = content.ContentItem(service)
    app.add_route("/api/v1/admin/content/{id}", item)
    app.add_route("/api/v1/admin/content/{id}/publish", item, suffix="publish")
    app.add_route("/api/v1/admin/content/{id}/unpublish", item, suffix="unpublish")
    revisions = content.Revisions(service)
    app.add_route("/api/v1/admin/content/{id}/revisions", revisions)
    app.add_route("/api/v1/admin/content/{id}/revisions/{number}", revisions, suffix="one")
    app.add_route("/api/v1/admin/content/{id}/revisions/{number}/restore", revisions, suffix="restore")
    trash = content.Trash(service)
    app.add_route("/api/v1/admin/trash", trash)
    app.add_route("/api/v1/admin/trash/{id}", trash, suffix="item")
    app.add_route("/api/v1/admin/trash/{id}/restore", trash, suffix="restore")

    app.add_route("/preview/{slug}", Preview(service, auth))
    site_files = SiteFiles(service)
    app.add_route("/site", site_files)
    app.add_route("/site/{path:path}", site_files)

    # every plugin route, behind one dispatcher over the plugin manager's own table
    return SiteApp(app, PluginDispatcher(service, auth, guard))
