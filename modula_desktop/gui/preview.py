"""Live Markdown preview: the shared renderer (core.markdown: CommonMark, tables, strikethrough, task
lists, raw HTML escaped) shown in a QTextBrowser."""
from __future__ import annotations

import re

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QImage, QTextDocument
from PySide6.QtWidgets import QTextBrowser

from ..core.markdown import render_markdown

# Qt's rich text draws no border on a blockquote: a quote becomes a two-cell table, the first cell
# being the bar. Raw HTML in the author's text is escaped, so these tags come only from the renderer.
_QUOTE_OPEN = ('<table class="quote" cellspacing="0" cellpadding="0" width="100%"><tr>'
               '<td class="bar" width="3" bgcolor="#d0d7de"></td><td class="quote">')
_QUOTE_CLOSE = "</td></tr></table>"
# an inline style on a cell makes Qt drop the stylesheet's border of that cell: use the align attribute
_CELL_ALIGN = re.compile(r'<(td|th) style="text-align:(left|right|center)">')


def preview_html(text: str) -> str:
    """The shared renderer's HTML, adapted to what QTextBrowser can draw."""
    out = render_markdown(text)
    if "<blockquote>" in out:
        out = out.replace("<blockquote>", _QUOTE_OPEN).replace("</blockquote>", _QUOTE_CLOSE)
    return _CELL_ALIGN.sub(r'<\1 align="\2">', out)

# QTextBrowser understands a subset of CSS 2.1; keep to what it renders.
PREVIEW_CSS = """
body { font-size: 10.5pt; color: #1f2328; }
h1 { font-size: 20pt; font-weight: 600; margin-top: 4px; margin-bottom: 8px; }
h2 { font-size: 15pt; font-weight: 600; margin-top: 14px; margin-bottom: 6px; }
h3 { font-size: 12.5pt; font-weight: 600; margin-top: 12px; margin-bottom: 4px; }
p { margin-top: 0px; margin-bottom: 10px; line-height: 140%; }
a { color: #0a66c2; }
code { font-family: monospace; background-color: #eff1f3; }
pre { font-family: monospace; background-color: #f4f5f7; padding: 8px; }
table.quote { border: none; margin-top: 2px; margin-bottom: 10px; }
td.quote { border: none; color: #57606a; padding: 0px 0px 0px 10px; }
td.bar { border: none; padding: 0px; }
li { margin-bottom: 2px; }
li.task-list-item { list-style-type: none; }
table { border-collapse: collapse; margin-bottom: 10px; }
th { background-color: #f4f5f7; font-weight: 600; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; }
s { color: #57606a; }
"""


class MarkdownPreview(QTextBrowser):
    """Shows rendered Markdown; ``schedule(text)`` debounces, so typing stays fluid on long bodies."""

    rendered = Signal()

    def __init__(self, parent=None, delay_ms: int = 250):
        super().__init__(parent)
        self.setOpenLinks(False)
        self.anchorClicked.connect(self._open_link)
        self.document().setDefaultStyleSheet(PREVIEW_CSS)
        self.document().setDocumentMargin(14)
        self.document().setIndentWidth(22)  # Qt's 40 px per list level is far wider than a web page's
        self._pending = ""
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(delay_ms)
        self._timer.timeout.connect(self.render_now)

    def schedule(self, text: str):
        self._pending = text
        self._timer.start()

    def render_now(self, text: str | None = None):
        if text is not None:
            self._pending = text
        self._timer.stop()
        bar = self.verticalScrollBar()
        keep = bar.value()
        self.setHtml(preview_html(self._pending))
        bar.setValue(keep)
        self.rendered.emit()

    media_folder = None  # the site's media/ (the window sets it): its images are shown
    MEDIA_WIDTH = 560  # px: a preview image is never drawn wider (nor decoded at full size twice)
    MEDIA_CACHE = 64

    def loadResource(self, kind, url):  # noqa: N802 - Qt override
        # Never read local files or anything else the Markdown points at: images show as their alt text.
        # The one exception is /media/<content hash>.<ext> from the site's own media folder: the name
        # is checked against the media names, so nothing else can be reached through it.
        image_kind = QTextDocument.ResourceType.ImageResource.value
        if getattr(kind, "value", kind) == image_kind and self.media_folder is not None:
            return self._media_image(url.path())
        return None

    def _media_image(self, path: str):
        from ..core.build.media import NAME_RE

        name = path[len("/media/"):] if path.startswith("/media/") else ""
        if not NAME_RE.match(name):
            return None
        cache = self.__dict__.setdefault("_media_cache", {})
        if name not in cache:  # a content-hashed name never changes what it shows
            image = QImage(str(self.media_folder / name))
            if not image.isNull() and image.width() > self.MEDIA_WIDTH:
                image = image.scaledToWidth(self.MEDIA_WIDTH, Qt.TransformationMode.SmoothTransformation)
            if len(cache) >= self.MEDIA_CACHE:
                cache.pop(next(iter(cache)))
            cache[name] = None if image.isNull() else image
        return cache[name]

    @staticmethod
    def _open_link(url: QUrl):
        if url.scheme() in ("http", "https", "mailto"):
            QDesktopServices.openUrl(url)
