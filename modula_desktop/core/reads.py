"""Read hooks for the readers outside the window (SPEC 3.6): the admin API, /preview/ and the site build.

The window's own reads (its list and editor) fire none: the author owns the content, and a plugin that
could hide an entry from its own editor would make it uneditable. A read passes before_read once
(a list once for the whole list) and each entry it returns passes after_read. Nothing here runs, and
nothing is built, when no read hook is approved."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

READ_META = ("id", "type", "title", "slug", "status", "published_at", "created_at", "updated_at")


@dataclass(frozen=True)
class Reader:
    """Who reads: source ("api", "preview" or "build") and, over HTTP, the request (lowercase headers)."""

    source: str
    headers: dict = field(default_factory=dict)
    client_ip: str = ""
    query: dict = field(default_factory=dict)

    def data(self) -> dict:
        """The reader's part of a read hook's data (ModulaCMS's data.headers, data.client_ip, data.query)."""
        return {"source": self.source, "headers": dict(self.headers), "client_ip": self.client_ip,
                "query": dict(self.query)}


def read_entry(hooks, entry: dict, reader: Reader) -> tuple[dict, dict]:
    """One entry for reader: (the entry as the hooks let it be returned, response headers). Raises
    ReadRefused."""
    if not hooks.has_read_hooks():
        return entry, {}
    state = hooks.run_before_read(dict(reader.data(), **{k: entry.get(k) for k in READ_META}))
    return hooks.run_after_read(entry, state)


def read_entries(hooks, entries: list, reader: Reader, filters: dict) -> tuple[list, dict]:
    """A list for reader: before_read once (data.list = true, with the list's filters), then after_read on
    each entry, all within one event budget (hook_event_timeout_ms for the whole list). Raises ReadRefused."""
    if not hooks.has_read_hooks():
        return entries, {}
    state = hooks.run_before_read(dict(reader.data(), list=True, **filters))
    if not hooks.chain("after_read"):
        return entries, {}
    deadline = time.monotonic() + hooks.settings.hook_event_timeout_ms / 1000.0
    out, headers = [], {}
    for entry in entries:
        shown, extra = hooks.run_after_read(entry, state, deadline=deadline)
        out.append(shown)
        headers.update(extra)
    return out, headers
