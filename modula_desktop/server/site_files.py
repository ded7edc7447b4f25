"""GET /site/...: the last build of the site, served from its output folder (SPEC 9).

Only regular files inside the build folder are served: a path is resolved (symlinks followed) and must
stay inside the folder; dot-files (the build manifest) are not served. A folder's address without its
trailing slash redirects to it with one, so the pages' relative links work. The pages run with a CSP
sandbox: a script in a theme or plugin output gets an opaque origin and cannot read this server's
other answers."""
from __future__ import annotations

import mimetypes
import os
from pathlib import Path

import falcon

from ..core.build import default_output

TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8", ".json": "application/json",
         ".xml": "application/xml; charset=utf-8", ".txt": "text/plain; charset=utf-8",
         ".svg": "image/svg+xml", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
         ".gif": "image/gif", ".webp": "image/webp", ".ico": "image/x-icon", ".woff2": "font/woff2"}
CSP = ("sandbox allow-scripts allow-popups allow-popups-to-escape-sandbox; default-src 'self'; "
       "img-src 'self' data:; style-src 'self' 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")


def content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    return TYPES.get(suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


class SiteFiles:
    def __init__(self, service, root: Path | None = None):
        self.service = service
        self.root = Path(root) if root is not None else default_output(service.site.root)

    def on_get(self, req, resp, path: str = ""):
        resp.set_header("Content-Security-Policy", CSP)
        resp.set_header("Referrer-Policy", "no-referrer")
        target = self._resolve(path)
        if target is not None and target.is_dir():
            if req.path.endswith("/"):
                target = self._resolve(path.rstrip("/") + "/index.html" if path else "index.html")
            else:
                raise falcon.HTTPMovedPermanently(req.path + "/")
        if target is None or not target.is_file():
            self._not_found(resp)
            return
        self._send(resp, target)

    def _resolve(self, path: str) -> Path | None:
        parts = [p for p in path.split("/") if p]
        if any(p.startswith(".") or "\\" in p or "\0" in p for p in parts):
            return None
        try:
            root = self.root.resolve(strict=True)
            target = root.joinpath(*parts).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if target != root and root not in target.parents:
            return None  # a symlink out of the build folder
        return target

    def _not_found(self, resp):
        resp.status = falcon.HTTP_404
        page = self._resolve("404.html")
        if page is not None and page.is_file():
            self._send(resp, page)
        else:
            resp.content_type = "text/plain; charset=utf-8"
            resp.text = "There is no build of the site yet: run 'modula build'." if not self.root.is_dir() \
                else "Not found."

    @staticmethod
    def _send(resp, target: Path):
        resp.content_type = content_type(target)
        fd = os.open(target, os.O_RDONLY)
        stream = os.fdopen(fd, "rb")
        resp.set_stream(stream, os.fstat(fd).st_size)
