"""Live Markdown preview: markdown-it-py (CommonMark, raw HTML escaped) rendered into a QTextBrowser."""
from __future__ import annotations

from markdown_it import MarkdownIt
from PySide6.QtCore import QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QTextBrowser

_md = MarkdownIt("commonmark", {"html": False})

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
blockquote { color: #57606a; margin-left: 12px; padding-left: 8px; }
table { border-collapse: collapse; }
th, td { border: 1px solid #d0d7de; padding: 4px; }
"""


def render_markdown(text: str) -> str:
    """HTML for the author's Markdown body; raw HTML in it is shown as text, never interpreted."""
    return _md.render(text or "")


class MarkdownPreview(QTextBrowser):
    """Shows rendered Markdown; ``schedule(text)`` debounces, so typing stays fluid on long bodies."""

    rendered = Signal()

    def __init__(self, parent=None, delay_ms: int = 250):
        super().__init__(parent)
        self.setOpenLinks(False)
        self.anchorClicked.connect(self._open_link)
        self.document().setDefaultStyleSheet(PREVIEW_CSS)
        self.document().setDocumentMargin(14)
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
        self.setHtml(render_markdown(self._pending))
        bar.setValue(keep)
        self.rendered.emit()

    def loadResource(self, kind, url):  # noqa: N802 - Qt override
        # Never read local files or anything else the Markdown points at: images show as their alt text.
        return None

    @staticmethod
    def _open_link(url: QUrl):
        if url.scheme() in ("http", "https", "mailto"):
            QDesktopServices.openUrl(url)
