"""What the author types in a search box, made into an SQLite FTS5 query that cannot fail.

The text is never handed to FTS5 as syntax: every word and phrase is quoted, so FTS5's operators
(AND, NOT, NEAR, ``*``, ``^``, ``:``, parentheses) are plain words. What the author can say:

- words: every one must appear (a word of two letters or more also matches as a prefix, so "garden"
  is found while "gard" is still being typed);
- ``"a phrase"``: those words next to each other (an unclosed quote runs to the end);
- ``-word``, ``-"a phrase"``: entries with it are left out;
- ``OR`` (in capitals) between words: either side.

Punctuation alone is no word: a query of only punctuation matches nothing (``fts_query`` gives None).
"""
from __future__ import annotations

import html

MAX_QUERY_CHARS = 500  # longer search text is cut: no one types more, and each term costs a lookup
MAX_TERMS = 16
MIN_PREFIX = 2  # a one-letter prefix would walk most of the index's terms
MARK_OPEN, MARK_CLOSE = "\x02", "\x03"  # what snippet() wraps matches in, before they become <mark>


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _is_term(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _terms(text: str):
    """(kind, text, negated) in order: kind is "word", "phrase" or "or"."""
    parts = text.split('"')  # odd parts are inside quotes
    negate_next = False
    for i, part in enumerate(parts):
        if i % 2 == 1:
            yield "phrase", part, negate_next
            negate_next = False
            continue
        if i + 1 < len(parts) and part.endswith("-") and (len(part) == 1 or part[-2].isspace()):
            part, negate_next = part[:-1], True  # -"a phrase"
        for word in part.split():
            if word == "OR":
                yield "or", word, False
            elif word.startswith("-") and len(word) > 1:
                yield "word", word[1:], True
            else:
                yield "word", word, False


def fts_query(text) -> str | None:
    """The FTS5 MATCH expression for the author's search text; None when it holds no word."""
    if not isinstance(text, str):
        return None
    text = "".join(ch if ch >= " " else " " for ch in text[:MAX_QUERY_CHARS])
    groups: list[tuple[list[str], list[str]]] = [([], [])]
    count = 0
    for kind, term, negated in _terms(text):
        if kind == "or":
            groups.append(([], []))
            continue
        if not _is_term(term) or count >= MAX_TERMS:
            continue
        count += 1
        expr = _quoted(term)
        if kind == "word" and not negated and len(term) >= MIN_PREFIX:
            expr += "*"
        groups[-1][1 if negated else 0].append(expr)
    exprs = []
    for positives, negatives in groups:
        if not positives:
            continue  # FTS5 cannot ask for "everything but": a group of exclusions alone is dropped
        expr = "(" + " AND ".join(positives) + ")"
        if negatives:
            expr += " NOT (" + " OR ".join(negatives) + ")"
        exprs.append(expr)
    return " OR ".join(exprs) if exprs else None


def snippet_html(raw: str | None) -> str:
    """snippet()'s text as safe HTML: everything escaped, the matches in <mark>."""
    return html.escape(raw or "", quote=False).replace(MARK_OPEN, "<mark>").replace(MARK_CLOSE, "</mark>")
