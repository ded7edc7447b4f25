"""Markdown in the body editor: syntax highlighting, the Ctrl+B / Ctrl+I / Ctrl+K edits, word count.

Qt only, no service: the editor owns one highlighter and calls the edit functions on its text box.
"""
from __future__ import annotations

import math
import re

from PySide6.QtGui import QColor, QFont, QSyntaxHighlighter, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QPlainTextEdit

# (light, dark): each readable on the editor's base colour of that theme
COLOURS = {
    "heading": ("#0550ae", "#79c0ff"),
    "emphasis": ("#953800", "#ffa657"),
    "code": ("#0a3069", "#a5d6ff"),
    "code_bg": ("#eff1f3", "#2d333b"),
    "link": ("#0969da", "#58a6ff"),
    "url": ("#6e7781", "#8b949e"),
    "quote": ("#57606a", "#9198a1"),
    "list": ("#8250df", "#d2a8ff"),
}

FENCE = re.compile(r"^\s{0,3}(```|~~~)")
HEADING = re.compile(r"^\s{0,3}#{1,6}(\s.*)?$")
QUOTE = re.compile(r"^\s{0,3}>.*$")
LIST = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)])(?=\s)")
INLINE = [  # applied in order; a later match overrides an earlier one where they overlap
    ("emphasis_bold", re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")),
    ("emphasis_italic", re.compile(r"(?<![*\w])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?!\*)|(?<![_\w])_(?=\S)(.+?)(?<=\S)_(?!\w)")),
    ("strike", re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")),
    ("link", re.compile(r"!?\[[^\]\n]*\]\([^)\n]*\)|<https?://[^>\s]+>")),
    ("code", re.compile(r"(`+)(.+?)\1")),
]
IN_FENCE = 1


class MarkdownHighlighter(QSyntaxHighlighter):
    """Headings, emphasis, code (inline and fenced), links, quotes and list markers."""

    def __init__(self, document, dark: bool = False):
        super().__init__(document)
        self._formats: dict[str, QTextCharFormat] = {}
        self.set_dark(dark)

    def set_dark(self, dark: bool):
        self.dark = bool(dark)
        pick = {name: QColor(pair[1 if self.dark else 0]) for name, pair in COLOURS.items()}

        def fmt(colour, bold=False, italic=False, strike=False, background=None):
            f = QTextCharFormat()
            f.setForeground(pick[colour])
            if bold:
                f.setFontWeight(QFont.Weight.Bold)
            if italic:
                f.setFontItalic(True)
            if strike:
                f.setFontStrikeOut(True)
            if background:
                f.setBackground(pick[background])
            return f

        self._formats = {
            "heading": fmt("heading", bold=True),
            "emphasis_bold": fmt("emphasis", bold=True),
            "emphasis_italic": fmt("emphasis", italic=True),
            "strike": fmt("url", strike=True),
            "code": fmt("code", background="code_bg"),
            "fence": fmt("code", background="code_bg"),
            "link": fmt("link"),
            "quote": fmt("quote", italic=True),
            "list": fmt("list", bold=True),
        }
        self.rehighlight()

    def format_for(self, name: str) -> QTextCharFormat:
        return self._formats[name]

    def highlightBlock(self, text: str):  # noqa: N802 - Qt override
        in_fence = self.previousBlockState() == IN_FENCE
        if FENCE.match(text):
            self.setFormat(0, len(text), self._formats["fence"])
            self.setCurrentBlockState(0 if in_fence else IN_FENCE)
            return
        if in_fence:
            self.setFormat(0, len(text), self._formats["fence"])
            self.setCurrentBlockState(IN_FENCE)
            return
        self.setCurrentBlockState(0)
        if HEADING.match(text):
            self.setFormat(0, len(text), self._formats["heading"])
            return
        if QUOTE.match(text):
            self.setFormat(0, len(text), self._formats["quote"])
        marker = LIST.match(text)
        if marker:
            self.setFormat(0, marker.end(), self._formats["list"])
        for name, pattern in INLINE:
            for m in pattern.finditer(text):
                self.setFormat(m.start(), m.end() - m.start(), self._formats[name])


# ---- edits -----------------------------------------------------------------------------------------
def toggle_wrap(edit: QPlainTextEdit, marker: str):
    """Wrap the selection in marker (** bold, * italic), or unwrap it when it is wrapped already; with
    no selection, insert a pair of markers and put the cursor between them. One undo step."""
    cursor = edit.textCursor()
    n = len(marker)
    cursor.beginEditBlock()
    try:
        if not cursor.hasSelection():
            pos = cursor.position()
            cursor.insertText(marker + marker)
            cursor.setPosition(pos + n)
        else:
            start, end = cursor.selectionStart(), cursor.selectionEnd()
            text = cursor.selectedText()
            doc_text = edit.toPlainText()
            if len(text) >= 2 * n and text.startswith(marker) and text.endswith(marker):
                inner = text[n:-n]  # the selection includes the markers
                cursor.insertText(inner)
                start_inner = start
            elif _wrapped_outside(doc_text, start, end, marker):
                inner = text  # the markers sit just outside the selection
                cursor.setPosition(start - n)
                cursor.setPosition(end + n, QTextCursor.MoveMode.KeepAnchor)
                cursor.insertText(inner)
                start_inner = start - n
            else:
                inner = text
                cursor.insertText(marker + text + marker)
                start_inner = start + n
            cursor.setPosition(start_inner)
            cursor.setPosition(start_inner + len(inner), QTextCursor.MoveMode.KeepAnchor)
    finally:
        cursor.endEditBlock()
    edit.setTextCursor(cursor)


def _run(text: str, i: int, step: int, char: str) -> int:
    n = 0
    while 0 <= i < len(text) and text[i] == char:
        n, i = n + 1, i + step
    return n


def _wrapped_outside(text: str, start: int, end: int, marker: str) -> bool:
    """Whether marker already wraps text[start:end]: * counts in odd runs (* or ***), ** in runs of two
    or more, so italic inside bold is told apart from bold."""
    before, after = _run(text, start - 1, -1, marker[0]), _run(text, end, 1, marker[0])
    if len(marker) == 1:
        return before % 2 == 1 and after % 2 == 1
    return before >= len(marker) and after >= len(marker)


URL_LIKE = re.compile(r"^(https?://|mailto:)\S+$")


def insert_link(edit: QPlainTextEdit, placeholder_url: str = "https://"):
    """Make the selection a link: [text](https://) with the address selected to type over; a selected
    address becomes [](address) with the cursor in the brackets; nothing selected gives [link text](…)
    with "link text" selected."""
    cursor = edit.textCursor()
    text = cursor.selectedText() if cursor.hasSelection() else ""
    cursor.beginEditBlock()
    try:
        start = cursor.selectionStart()
        if URL_LIKE.match(text):
            cursor.insertText(f"[]({text})")
            cursor.setPosition(start + 1)
        elif text:
            cursor.insertText(f"[{text}]({placeholder_url})")
            url_start = start + len(text) + 3
            cursor.setPosition(url_start)
            cursor.setPosition(url_start + len(placeholder_url), QTextCursor.MoveMode.KeepAnchor)
        else:
            label = "link text"
            cursor.insertText(f"[{label}]({placeholder_url})")
            cursor.setPosition(start + 1)
            cursor.setPosition(start + 1 + len(label), QTextCursor.MoveMode.KeepAnchor)
    finally:
        cursor.endEditBlock()
    edit.setTextCursor(cursor)


# ---- counting --------------------------------------------------------------------------------------
_LINK_TARGET = re.compile(r"\]\([^)\n]*\)")
_WORD = re.compile(r"[^\W_](?:[\w'’-]*[^\W_])?")


def word_count(markdown: str) -> int:
    """Words a reader reads: link addresses and Markdown markers do not count."""
    return len(_WORD.findall(_LINK_TARGET.sub("]", markdown or "")))


def reading_time(words: int, words_per_minute: int) -> str:
    if words <= 0:
        return "nothing to read yet"
    minutes = math.ceil(words / max(1, words_per_minute))
    return "under a minute to read" if words < words_per_minute / 2 else f"{minutes} min read"


def count_text(markdown: str, words_per_minute: int) -> str:
    words = word_count(markdown)
    return f"{words:,} word{'s' if words != 1 else ''} · {reading_time(words, words_per_minute)}"
