"""The `hooks` module of the plugin API (SPEC 3.6): hook declarations (hooks.on). The dispatcher that runs
them for content events is ../runtime/dispatch.py."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ApiError

EVENTS = ("before_create", "after_create", "before_update", "after_update", "before_delete", "after_delete",
          "before_publish", "after_publish", "before_unpublish", "after_unpublish", "before_render", "after_build")
HOOK_TABLES = {"content": "content", "content_data": "content", "*": "*"}


def validate_hook(event, table, priority, count: int, max_hooks: int):
    """The checked (event, table, priority) of the count-th hooks.on call."""
    if count >= max_hooks:
        raise ApiError(f"hooks.on: at most {max_hooks} hooks per plugin")
    if event not in EVENTS:
        raise ApiError(f"hooks.on: unknown event '{event}'")
    if table not in HOOK_TABLES:
        raise ApiError(f"hooks.on: unknown table '{table}' (use \"content\" or \"*\")")
    if isinstance(priority, bool) or not isinstance(priority, (int, float)) or priority != int(priority) \
            or not 1 <= priority <= 1000:
        raise ApiError("hooks.on: priority must be an integer from 1 to 1000")
    return event, HOOK_TABLES[table], int(priority)


@dataclass(frozen=True)
class HookSpec:
    index: int
    event: str
    table: str
    priority: int

    @property
    def key(self):
        return (self.event, self.table)

    @property
    def is_before(self) -> bool:
        return self.event.startswith("before_")

    @property
    def rank(self) -> tuple:
        """SPEC 3.6 ordering within one plugin: lower priority first, then table-specific before "*"
        (then registration order, which callers add: across plugins, load order comes first)."""
        return (self.priority, self.table == "*")
