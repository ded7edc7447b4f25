"""The one Markdown renderer: the editor's preview and the server's /preview/ pages show the same HTML.

CommonMark plus the GitHub features authors expect (tables, ~~strikethrough~~, ``- [ ]`` task lists).
Raw HTML in the text is escaped, never interpreted (``html=False``); markdown-it's link check refuses
javascript:, vbscript:, file: and non-image data: URLs. Task lists are a small rule of our own rather
than mdit-py-plugins, to stay within the stack.
"""
from __future__ import annotations

import re
import threading

from markdown_it import MarkdownIt
from markdown_it.token import Token

_TASK = re.compile(r"^\[([ xX])\][ \t]+")
# Ballot boxes rather than <input>: the Qt preview cannot draw form controls, and the page needs none.
UNCHECKED, CHECKED = "\u2610", "\u2611"


def _task_lists(state) -> None:
    """Turn list items that open with "[ ] " or "[x] " into task items with a box."""
    tokens = state.tokens
    for i in range(2, len(tokens)):
        inline = tokens[i]
        if inline.type != "inline" or tokens[i - 1].type != "paragraph_open" \
                or tokens[i - 2].type != "list_item_open" or not inline.children:
            continue
        first = inline.children[0]
        if first.type != "text":
            continue
        m = _TASK.match(first.content)
        if m is None:
            continue
        done = m.group(1) != " "
        first.content = first.content[m.end():]
        box = Token("html_inline", "", 0)
        box.content = (f'<span class="task-box" aria-label="{"done" if done else "to do"}">'
                       f'{CHECKED if done else UNCHECKED}</span> ')
        inline.children.insert(0, box)
        tokens[i - 2].attrSet("class", "task-list-item" + (" done" if done else ""))


def make_renderer() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
    md.core.ruler.push("task_lists", _task_lists)
    return md


_local = threading.local()


def _renderer() -> MarkdownIt:
    # a MarkdownIt instance is not documented as thread-safe: one per thread (the server has many)
    md = getattr(_local, "md", None)
    if md is None:
        md = _local.md = make_renderer()
    return md


def render_markdown(text: str | None) -> str:
    """HTML for an author's Markdown body; raw HTML in it is shown as text, never interpreted."""
    return _renderer().render(text or "")
