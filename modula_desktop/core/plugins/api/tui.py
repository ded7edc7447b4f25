"""The Lua `tui` module and ModulaCMS's screen protocol, version 1 (SPEC 3.12).

A screen (``screens/<name>.lua``, ``function screen(ctx)``) or a field interface
(``interfaces/<name>.lua``, ``function interface(ctx)``) is a coroutine: it yields a layout (a
``grid`` of columns and cells, or for an inline interface a single primitive) or an action, and gets
the next event back from ``coroutine.yield``. This module installs the constructors (lua/tui.lua),
and reads what a coroutine yields the way ModulaCMS does (internal/plugin/ui_bridge.go and
ui_primitives.go): the same fields, the same defaults, the same limits and the same errors, so a
screen written for ModulaCMS's terminal UI runs unchanged here. Everything returned is plain Python
data; the GUI renders it, nothing here knows about Qt.
"""
from __future__ import annotations

import itertools

from dataclasses import dataclass, field

from ..runtime.sandbox import _lua_source

PROTOCOL_VERSION = 1
EVENTS = ("init", "key", "resize", "data", "dialog")  # and ModulaCMS's "focus" (focus_event)
# ModulaCMS's own list: the seven of SPEC 3.12 and "fetch", which ModulaCMS answers with an error
ACTIONS = ("navigate", "confirm", "toast", "fetch", "request", "commit", "cancel", "quit")
PRIMITIVES = ("list", "detail", "text", "table", "input", "select", "tree", "progress")
# ModulaCMS's validation limits (ui_primitives.go)
MAX_LIST_ITEMS = 10_000
MAX_TABLE_ROWS = 10_000
MAX_STRING_LEN = 10_240
MAX_TREE_DEPTH = 20
MAX_COLUMN_COUNT = 12
GRID_SPAN = 12  # the grid's columns add up to this many units
# beyond ModulaCMS (its tables are Go values; ours are copied out of the VM first): how many tables and
# entries one yield may hold, and the bytes of its strings
MAX_YIELD_ITEMS = 400_000
MAX_YIELD_BYTES = 16 * 1024 * 1024


class ProtocolError(Exception):
    """What a coroutine yielded is not a layout, primitive or action: ModulaCMS's message."""


def install(vm):
    """Put the frozen `tui` module in the VM's environment; return the session steps (start, resume,
    is_action)."""
    sb = vm.sandbox
    module, start, resume, is_action = sb.lua.execute(_lua_source("tui.lua"), sb.trusted, name="=tui", mode="t")
    sb.fn("install_module")(b"tui", module)
    sb.fn("preload")(b"tui", sb.fn("get_global")(b"tui"))
    return start, resume, is_action


# ---- events (host → coroutine) ----------------------------------------------------------------
def init_event(width: int, height: int, params: dict | None = None) -> dict:
    ev = {"type": "init", "protocol_version": PROTOCOL_VERSION, "width": int(width), "height": int(height)}
    if params:
        ev["params"] = {str(k): str(v) for k, v in params.items()}
    return ev


def field_init_event(width: int, height: int, value: str, config: dict | None = None) -> dict:
    ev = {"type": "init", "protocol_version": PROTOCOL_VERSION, "width": int(width), "height": int(height),
          "value": "" if value is None else str(value)}
    if config:
        ev["config"] = {str(k): str(v) for k, v in config.items()}
    return ev


def key_event(key: str) -> dict:
    return {"type": "key", "key": key}


def resize_event(width: int, height: int) -> dict:
    return {"type": "resize", "width": int(width), "height": int(height)}


def data_event(request_id: str, ok: bool, result=None, error: str = "") -> dict:
    ev = {"type": "data", "id": request_id, "ok": bool(ok)}
    if ok:
        ev["result"] = result
    else:
        ev["error"] = error
    return ev


def dialog_event(accepted: bool) -> dict:
    return {"type": "dialog", "accepted": bool(accepted)}


def focus_event(panel: int) -> dict:
    """ModulaCMS's focus event (BuildFocusEvent): the cell that has the keyboard now, counted from 0
    column by column, top to bottom."""
    return {"type": "focus", "panel": int(panel)}


# ---- yields (coroutine → host) -----------------------------------------------------------------
@dataclass
class Yield:
    """One parsed yield: exactly one of layout (a grid), primitive (a single one) or action."""

    layout: dict | None = None
    primitive: dict | None = None
    action: str | None = None
    params: dict = field(default_factory=dict)

    @property
    def is_action(self) -> bool:
        return self.action is not None


def parse_yield(value) -> Yield:
    """ModulaCMS's parseYield: a table with ``action`` is an action; else its ``type`` says: ``grid``
    is a layout, anything else a single primitive. Raises ProtocolError with ModulaCMS's message."""
    if value is None:
        raise ProtocolError("coroutine yielded no values")
    if isinstance(value, list):  # a sequence or an empty table: neither action nor type
        raise ProtocolError("yield missing 'type' field")
    if not isinstance(value, dict):
        kind = {str: "string", bool: "boolean"}.get(type(value), "number")
        raise ProtocolError(f"coroutine yielded non-table value: {kind}")
    if "action" in value:
        name = value["action"]
        if not isinstance(name, str):
            raise ProtocolError("invalid action yield: action field is not a string")
        if name not in ACTIONS:
            raise ProtocolError(f"invalid action yield: unknown action {name!r}")
        return Yield(action=name, params={k: v for k, v in value.items() if k != "action" and isinstance(k, str)})
    kind = value.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("yield missing 'type' field")
    if kind == "grid":
        try:
            return Yield(layout=parse_layout(value))
        except ProtocolError as exc:
            raise ProtocolError(f"invalid layout yield: {exc}") from None
    try:
        return Yield(primitive=parse_primitive(value))
    except ProtocolError as exc:
        raise ProtocolError(f"invalid primitive yield: {exc}") from None


def _seq(value) -> list:
    """A Lua sequence as from_lua gives it (a list; an empty table is []); a table with other keys
    gives its 1..n part, like gopher-lua's MaxN walk."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        out, i = [], 1
        while i in value:
            out.append(value[i])
            i += 1
        return out
    return []


def _table(value) -> bool:
    return isinstance(value, (dict, list))


def _str(t: dict, key: str) -> str:
    v = t.get(key) if isinstance(t, dict) else None
    return v if isinstance(v, str) else ""


def _bool(t: dict, key: str) -> bool:
    return isinstance(t, dict) and t.get(key) is True


def _num(t: dict, key: str):
    v = t.get(key) if isinstance(t, dict) else None
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _cut(text: str) -> str:
    return text[:MAX_STRING_LEN] if len(text) > MAX_STRING_LEN else text


def _lua_text(v) -> str:
    """gopher-lua's LValue.String() for a table cell."""
    if isinstance(v, str):
        return v
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (int, float)):
        return str(v)
    return "table"


def parse_layout(t: dict) -> dict:
    cols = t.get("columns")
    if not _table(cols):
        raise ProtocolError("grid missing 'columns' table")
    cols = _seq(cols)
    if len(cols) > MAX_COLUMN_COUNT:
        raise ProtocolError(f"grid has {len(cols)} columns (max {MAX_COLUMN_COUNT})")
    columns = []
    for i, c in enumerate(cols, 1):
        if not isinstance(c, dict):
            raise ProtocolError(f"column {i} is not a table")
        try:
            columns.append(_parse_column(c))
        except ProtocolError as exc:
            raise ProtocolError(f"column {i}: {exc}") from None
    hints = []
    for h in _seq(t.get("hints")):
        if isinstance(h, dict) and _str(h, "key"):
            hints.append({"key": _str(h, "key"), "label": _str(h, "label")})
    return {"type": "grid", "columns": columns, "hints": hints}


def _parse_column(t: dict) -> dict:
    span = _num(t, "span")
    span = int(span) if span is not None else 0
    if span <= 0:
        span = 1
    cells_raw = t.get("cells")
    if not _table(cells_raw):
        raise ProtocolError("column missing 'cells' table")
    cells = []
    for i, c in enumerate(_seq(cells_raw), 1):
        if not isinstance(c, dict):
            raise ProtocolError(f"cell {i} is not a table")
        height = _num(c, "height")
        height = float(height) if height is not None and height > 0 else 1.0
        content = c.get("content")
        if not isinstance(content, dict):
            raise ProtocolError(f"cell {i}: cell missing 'content' table")
        try:
            prim = parse_primitive(content)
        except ProtocolError as exc:
            raise ProtocolError(f"cell {i}: cell content: {exc}") from None
        cells.append({"title": _str(c, "title"), "height": height, "content": prim})
    return {"span": span, "cells": cells}


def parse_primitive(t: dict) -> dict:
    kind = t.get("type") if isinstance(t, dict) else None
    if not isinstance(kind, str):
        raise ProtocolError("primitive missing 'type' field")
    parser = _PARSERS.get(kind)
    if parser is None:
        raise ProtocolError(f"unknown primitive type {kind!r}")
    return parser(t)


def _cursor(t: dict) -> int:
    c = _num(t, "cursor")
    return int(c) if c is not None else 0


def _list(t):
    items_raw = _seq(t.get("items"))
    if len(items_raw) > MAX_LIST_ITEMS:
        raise ProtocolError(f"list has {len(items_raw)} items (max {MAX_LIST_ITEMS})")
    items = [{"label": _cut(_str(it, "label")), "id": _str(it, "id"), "faint": _bool(it, "faint"),
              "bold": _bool(it, "bold")} for it in items_raw if isinstance(it, dict)]
    return {"type": "list", "items": items, "cursor": _cursor(t), "empty_text": _str(t, "empty_text")}


def _detail(t):
    fields = [{"label": _str(f, "label"), "value": _cut(_str(f, "value")), "faint": _bool(f, "faint")}
              for f in _seq(t.get("fields")) if isinstance(f, dict)]
    return {"type": "detail", "title": _str(t, "title"), "fields": fields}


def _text(t):
    lines = []
    for v in _seq(t.get("lines")):
        if isinstance(v, str):
            lines.append({"text": _cut(v), "bold": False, "faint": False, "accent": False, "style": None})
        elif isinstance(v, dict):
            style = v.get("style")
            lines.append({"text": _cut(_str(v, "text")), "bold": _bool(v, "bold"), "faint": _bool(v, "faint"),
                          "accent": _bool(v, "accent"),
                          "style": {"fg": _str(style, "fg"), "bg": _str(style, "bg")} if isinstance(style, dict) else None})
        else:
            lines.append({"text": _lua_text(v), "bold": False, "faint": False, "accent": False, "style": None})
    return {"type": "text", "lines": lines}


def _plain_rows(rows: list) -> bool:
    """Every row a list of strings no longer than MAX_STRING_LEN (the usual table): checked by C loops
    (map, set, max over a chain) where a comprehension would spend a Python step on each of 30,000 cells."""
    if not set(map(type, rows)) <= {list}:
        return False
    if not set(map(type, itertools.chain.from_iterable(rows))) <= {str}:
        return False
    return max(map(len, itertools.chain.from_iterable(rows)), default=0) <= MAX_STRING_LEN


def _table_prim(t):
    headers = [h for h in _seq(t.get("headers")) if isinstance(h, str)]
    rows_raw = _seq(t.get("rows"))
    if len(rows_raw) > MAX_TABLE_ROWS:
        raise ProtocolError(f"table has {len(rows_raw)} rows (max {MAX_TABLE_ROWS})")
    if _plain_rows(rows_raw):
        rows = rows_raw  # what the line below would make of it, without a Python step per cell
    else:
        rows = [[_cut(_lua_text(c)) for c in _seq(r)] for r in rows_raw if _table(r)]
    return {"type": "table", "headers": headers, "rows": rows, "cursor": _cursor(t)}


def _input(t):
    limit = _num(t, "char_limit")
    return {"type": "input", "id": _str(t, "id"), "placeholder": _str(t, "placeholder"), "value": _str(t, "value"),
            "focused": _bool(t, "focused"), "char_limit": int(limit) if limit is not None else 0}


def _select(t):
    sel = _num(t, "selected")
    options = [{"label": _str(o, "label"), "value": _str(o, "value")}
               for o in _seq(t.get("options")) if isinstance(o, dict)]
    return {"type": "select", "id": _str(t, "id"), "options": options, "selected": int(sel) if sel is not None else 0,
            "focused": _bool(t, "focused")}


def _tree_nodes(raw, depth: int) -> list:
    if depth > MAX_TREE_DEPTH:
        raise ProtocolError(f"tree depth exceeds {MAX_TREE_DEPTH} levels")
    nodes = []
    for n in _seq(raw):
        if not isinstance(n, dict):
            continue
        children = n.get("children")
        nodes.append({"label": _str(n, "label"), "id": _str(n, "id"), "expanded": _bool(n, "expanded"),
                      "children": _tree_nodes(children, depth + 1) if _table(children) else []})
    return nodes


def _tree(t):
    nodes = t.get("nodes")
    return {"type": "tree", "nodes": _tree_nodes(nodes, 0) if _table(nodes) else [], "cursor": _cursor(t)}


def _progress(t):
    v = _num(t, "value")
    v = 0.0 if v is None else min(1.0, max(0.0, float(v)))
    return {"type": "progress", "value": v, "label": _str(t, "label")}


_PARSERS = {"list": _list, "detail": _detail, "text": _text, "table": _table_prim, "input": _input,
            "select": _select, "tree": _tree, "progress": _progress}


def flat_tree(nodes: list) -> list[tuple[int, dict]]:
    """(depth, node) of the nodes a tree shows, in order: ModulaCMS's cursor counts these (the children
    of expanded nodes only)."""
    out: list[tuple[int, dict]] = []
    stack = [(0, n) for n in reversed(nodes)]
    while stack:
        depth, node = stack.pop()
        out.append((depth, node))
        if node["expanded"]:
            stack.extend((depth + 1, c) for c in reversed(node["children"]))
    return out
