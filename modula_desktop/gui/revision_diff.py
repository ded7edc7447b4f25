"""What restoring a revision would change, as coloured HTML for a QTextBrowser (difflib, by line)."""
from __future__ import annotations

import datetime as _dt
import difflib
import html

# (light, dark) backgrounds and text colours of removed / added lines, readable in both themes
COLOURS = {
    "del_bg": ("#ffebe9", "#4b1c1f"), "del_fg": ("#82071e", "#ffb3ad"),
    "add_bg": ("#dafbe1", "#173a24"), "add_fg": ("#116329", "#aff5b4"),
    "same_fg": ("#57606a", "#9198a1"), "head_fg": ("#1f2328", "#e6edf3"),
}
CONTEXT = 3  # unchanged lines kept around each change

SOURCE_LABELS = {
    "editor": "saved in the editor",
    "api": "saved through the admin API",
    "app": "saved by the app",
    "restore": "restored from an older revision",
    "trash": "restored from the Trash",
    "": "source not recorded",
}


def revision_time(iso: str | None) -> str:
    """A stored UTC timestamp as local time to the second ("2026-12-02 04:41:07")."""
    if not iso:
        return ""
    try:
        when = _dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


SHORT_SOURCE_LABELS = {"editor": "editor", "api": "admin API", "app": "app", "restore": "restore",
                       "trash": "from the Trash", "": "source unknown"}


def revision_source_short(rev: dict) -> str:
    """"admin API + filter hooks_plugin": for the one-line list; revision_source() says it in full."""
    source = rev.get("source") or ""
    text = SHORT_SOURCE_LABELS.get(source, source)
    plugins = [p for p in rev.get("changed_by") or [] if p]
    return text + (f" + filter {', '.join(plugins)}" if plugins else "")


def revision_source(rev: dict) -> str:
    source = rev.get("source") or ""
    text = SOURCE_LABELS.get(source, f"saved by {source}")
    plugins = [p for p in rev.get("changed_by") or [] if p]
    if plugins:
        names = ", ".join(plugins)
        text += f", changed by the plugin{'s' if len(plugins) > 1 else ''} {names}"
    return text


def diff_lines(current: str, revision: str) -> list[tuple[str, str]]:
    """(kind, line) from the current text to the revision: kind is "-" (restoring removes it), "+" (it
    comes back), " " (unchanged) or "…" (a run of unchanged lines left out)."""
    a, b = (current or "").splitlines(), (revision or "").splitlines()
    out: list[tuple[str, str]] = []
    for group in difflib.SequenceMatcher(None, a, b, autojunk=False).get_grouped_opcodes(CONTEXT):
        if out:
            out.append(("…", ""))
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                out.extend((" ", line) for line in a[i1:i2])
                continue
            if tag in ("replace", "delete"):
                out.extend(("-", line) for line in a[i1:i2])
            if tag in ("replace", "insert"):
                out.extend(("+", line) for line in b[j1:j2])
    return out


def diff_html(current: dict, revision: dict, dark: bool = False) -> str:
    """HTML of what restoring revision over current (both with title, slug, type, body) would change."""
    c = {k: v[1 if dark else 0] for k, v in COLOURS.items()}
    parts = [f'<div style="color:{c["head_fg"]}">']
    for key in ("title", "slug", "type"):
        old, new = current.get(key) or "", revision.get(key) or ""
        if old != new:
            parts.append(f'<p style="margin:2px 0">{key.capitalize()}: '
                         f'<span style="background-color:{c["del_bg"]};color:{c["del_fg"]}">'
                         f'<s>{html.escape(old) or "(empty)"}</s></span> → '
                         f'<span style="background-color:{c["add_bg"]};color:{c["add_fg"]}">'
                         f'{html.escape(new) or "(empty)"}</span></p>')
    lines = diff_lines(current.get("body") or "", revision.get("body") or "")
    if not lines:
        same = len(parts) == 1
        parts.append(f'<p style="color:{c["same_fg"]}">'
                     + ("This revision is the same as the current text." if same else "The body is the same.")
                     + "</p>")
    else:
        rows = []
        for kind, line in lines:
            text = html.escape(line) or "&nbsp;"
            if kind == "-":
                style = f'background-color:{c["del_bg"]};color:{c["del_fg"]}'
            elif kind == "+":
                style = f'background-color:{c["add_bg"]};color:{c["add_fg"]}'
            elif kind == "…":
                style, text = f'color:{c["same_fg"]}', "⋯"
            else:
                style = f'color:{c["same_fg"]}'
            mark = {"-": "−", "+": "+", " ": "&nbsp;", "…": "&nbsp;"}[kind]
            rows.append(f'<tr><td style="{style};font-family:monospace;white-space:pre-wrap">{mark} {text}</td></tr>')
        parts.append('<table width="100%" cellspacing="0" cellpadding="1">' + "".join(rows) + "</table>")
    parts.append("</div>")
    return "".join(parts)
