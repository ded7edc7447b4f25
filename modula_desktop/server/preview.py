"""GET /preview/<slug>: an entry's Markdown as a clean HTML page (SPEC 5).

The Markdown is rendered by core.markdown, the renderer the editor's preview uses (tables,
strikethrough, task lists; raw HTML escaped; its link check refuses javascript:, vbscript:, file: and
non-image data: URLs). Published entries are open to the
local browser; a draft needs the admin token or the preview key of its slug (``?key=``), so another
user of the machine cannot read unpublished work. A draft without either answers exactly like an
unknown slug.
"""
from __future__ import annotations

import html
from functools import lru_cache
from string import Template
from urllib.parse import quote

from ..core.build.hooks import filter_preview
from ..core.errors import NotFound, ReadRefused
from ..core.markdown import render_markdown
from ..core.paths import RESOURCES
from .auth import TokenAuth
from .content import reader

CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src * data:; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")
_FALLBACK_TEMPLATE = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>$title</title>"
                      "<style>$css</style></head><body>$banner<main>$heading$body</main></body></html>")


@lru_cache(maxsize=1)
def _template() -> Template:
    try:
        return Template((RESOURCES / "preview.html").read_text(encoding="utf-8"))
    except OSError:
        return Template(_FALLBACK_TEMPLATE)


@lru_cache(maxsize=1)
def _css() -> str:
    try:
        return (RESOURCES / "preview.css").read_text(encoding="utf-8")
    except OSError:
        return ""


def preview_path(slug: str, key: str | None = None) -> str:
    path = "/preview/" + quote(slug, safe="")
    return f"{path}?key={key}" if key else path


class Preview:
    def __init__(self, service, auth: TokenAuth):
        self.service = service
        self.auth = auth

    def on_get(self, req, resp, slug):
        content = self.service.content
        try:
            entry = content.get_by_slug(slug) if content is not None else None
        except NotFound:
            entry = None
        if entry is not None and entry.get("status") != "published" and not self._may_see_drafts(req, slug):
            entry = None
        resp.set_header("Content-Security-Policy", CSP)
        resp.set_header("Referrer-Policy", "no-referrer")
        resp.content_type = "text/html; charset=utf-8"
        if entry is not None:
            try:  # the read hooks, as for the admin API (source "preview")
                entry, headers = content.read_entry(entry, reader(req, "preview"))
            except ReadRefused as exc:
                resp.status = exc.status
                resp.text = self.page("Not available", f'<p class="not-found">{html.escape(str(exc))}</p>', meta="")
                return
            for name, value in headers.items():
                resp.set_header(name, value)
        if entry is None:
            resp.status = 404
            resp.text = self.page("Not found", '<p class="not-found">There is no page at this address.</p>',
                                  meta="")
            return
        draft = entry.get("status") != "published"
        banner = '<p class="draft">Draft: not published yet. Only you can see this preview.</p>' if draft else ""
        meta = " · ".join(x for x in (entry.get("type", ""), entry.get("status", ""),
                                      (entry.get("published_at") or entry.get("updated_at") or "")[:10]) if x)
        # the plugins' before_render hooks, as in the build (SPEC 9)
        body_html, title = filter_preview(self.service, entry, render_markdown(entry.get("body") or ""))
        resp.text = self.page(title or entry.get("slug") or "Untitled", body_html, meta=meta, banner=banner)

    def _may_see_drafts(self, req, slug) -> bool:
        return self.auth.check(req.get_header("Authorization")) or \
            self.auth.check_preview_key(slug, req.get_param("key"))

    def page(self, title: str, body_html: str, meta: str, banner: str = "") -> str:
        # a body that opens with its own top heading needs no second one from the title
        heading = "" if body_html.lstrip().startswith("<h1") else f'<h1 class="title">{html.escape(title)}</h1>'
        return _template().safe_substitute(title=html.escape(title), heading=heading, body=body_html,
                                           meta=html.escape(meta), banner=banner, css=_css())
