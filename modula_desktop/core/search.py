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
import re
import unicodedata

MAX_QUERY_CHARS = 500  # longer search text is cut: no one types more, and each term costs a lookup
MAX_TERMS = 16
MIN_PREFIX = 2  # a one-letter prefix would walk most of the index's terms
SNIPPET_WORDS = 16
_WORD = re.compile(r"\w+")


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


def fold(text: str) -> str:
    """Lower case without accents, as the index's tokenizer (unicode61, remove_diacritics 2) sees words."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def wanted_words(text) -> list[tuple[str, bool]]:
    """The words a search looks for (not the excluded ones), folded, each with whether it matches as a
    prefix: what a snippet marks."""
    if not isinstance(text, str):
        return []
    out = []
    for kind, term, negated in _terms("".join(ch if ch >= " " else " " for ch in text[:MAX_QUERY_CHARS])):
        if kind == "or" or negated or not _is_term(term):
            continue
        words = _WORD.findall(fold(term))
        prefix = kind == "word" and len(term) >= MIN_PREFIX
        out += [(w, prefix and i == len(words) - 1) for i, w in enumerate(words)]
    return out[:MAX_TERMS * 4]


def snippet(title: str, body: str, words: list[tuple[str, bool]], size: int = SNIPPET_WORDS) -> str:
    """The part of the body with the most of the words, as safe HTML: escaped, the matches in <mark>,
    "…" where it is cut. The title when the body has none of them. Made here rather than by FTS5's
    snippet(), which re-reads the whole doclist of a common word for every row it marks."""
    for text in (body or "", title or ""):
        tokens = [(m.start(), m.end(), fold(m.group())) for m in _WORD.finditer(text)]
        hits = [any(t == w or (prefix and t.startswith(w)) for w, prefix in words) for _, _, t in tokens]
        if not any(hits):
            continue
        best, score = 0, -1
        for start in range(0, max(1, len(tokens) - size + 1)):
            found = sum(hits[start:start + size])
            if found > score:
                best, score = start, found
            if start + size >= len(tokens):
                break
        first = max(0, next(i for i in range(best, len(tokens)) if hits[i]) - 2)  # a little before
        last = min(len(tokens), first + size)
        out = ["…"] if first > 0 else []
        at = tokens[first][0] if first > 0 else 0
        for i in range(first, last):
            s, e, _ = tokens[i]
            out.append(html.escape(text[at:s], quote=False))
            word = html.escape(text[s:e], quote=False)
            out.append(f"<mark>{word}</mark>" if hits[i] else word)
            at = e
        if last < len(tokens):
            out.append("…")
        elif at < len(text):
            out.append(html.escape(text[at:], quote=False))
        return "".join(out).strip()
    return html.escape(" ".join((body or "").split()[:size]), quote=False)
