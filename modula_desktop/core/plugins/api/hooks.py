"""The `hooks` module of the plugin API (SPEC 3.6): hook declarations (hooks.on). The dispatcher that runs
them for content events is ../runtime/dispatch.py."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ApiError

EVENTS = ("before_create", "after_create", "before_update", "after_update", "before_delete", "after_delete",
          "before_publish", "after_publish", "before_unpublish", "after_unpublish", "before_render", "after_build",
          "before_read", "after_read")
# Read hooks run outside any content transaction, on reads (SPEC 3.6): not before-hooks of a change.
READ_EVENTS = frozenset({"before_read", "after_read"})
# The site's tables a hook can fire for, by the names a plugin may use; any other non-empty name is
# accepted as ModulaCMS accepts it (its hooks never fire here, and the plugin's log says so).
HOOK_TABLES = {"content": "content", "content_data": "content", "*": "*"}
SITE_TABLES = frozenset({"content"})
MAX_TABLE_NAME = 128


def hook_table(name: str) -> str:
    """The table a hook registered on name is approved and dispatched for ("content_data" is "content")."""
    return HOOK_TABLES.get(name, name)


def check_table_name(table) -> str | None:
    """Why table cannot name a hook's table, or None."""
    if not isinstance(table, str) or not table:
        return "must be a non-empty string"
    if len(table) > MAX_TABLE_NAME:
        return f"is longer than {MAX_TABLE_NAME} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in table):
        return "contains control characters"
    return None


def validate_hook(event, table, priority, count: int, max_hooks: int):
    """The checked (event, table, priority) of the count-th hooks.on call."""
    if count >= max_hooks:
        raise ApiError(f"hooks.on: at most {max_hooks} hooks per plugin")
    if event not in EVENTS:
        raise ApiError(f"hooks.on: unknown event '{event}'")
    bad = check_table_name(table)
    if bad:
        raise ApiError(f"hooks.on: the table name {bad}")
    if isinstance(priority, bool) or not isinstance(priority, (int, float)) or priority != int(priority) \
            or not 1 <= priority <= 1000:
        raise ApiError("hooks.on: priority must be an integer from 1 to 1000")
    return event, hook_table(table), int(priority)


def never_fires(spec: "HookSpec") -> str | None:
    """The plugin-log warning for a hook on a table this site does not have, or None."""
    if spec.table == "*" or spec.table in SITE_TABLES:
        return None
    return (f"hooks.on(\"{spec.event}\", \"{spec.registered}\"): this site has no table "
            f"'{spec.registered}' (its content is \"content\", alias \"content_data\"), so this hook never fires")


@dataclass(frozen=True)
class HookSpec:
    index: int
    event: str
    table: str
    priority: int
    # the name as given to hooks.on (data._table): "content_data" for a hook registered so
    registered: str = ""

    def __post_init__(self):
        if not self.registered:
            object.__setattr__(self, "registered", self.table)

    @property
    def key(self):
        return (self.event, self.table)

    @property
    def is_before(self) -> bool:
        """A before-hook of a change (runs inside the content transaction); before_read is not one."""
        return self.event.startswith("before_") and self.event not in READ_EVENTS

    @property
    def is_read(self) -> bool:
        return self.event in READ_EVENTS

    @property
    def rank(self) -> tuple:
        """SPEC 3.6 ordering within one plugin: lower priority first, then table-specific before "*"
        (then registration order, which callers add: across plugins, load order comes first)."""
        return (self.priority, self.table == "*")
