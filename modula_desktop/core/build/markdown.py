"""The one place the build turns Markdown into HTML: the renderer of /preview/<slug> and the editor's
preview (core/markdown.py: CommonMark, tables, strikethrough, task lists, raw HTML escaped), so the
preview shows what the build writes."""
from ..markdown import render_inline, render_markdown

__all__ = ["render_inline", "render_markdown"]
