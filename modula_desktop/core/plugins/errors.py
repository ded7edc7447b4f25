"""Errors of the plugin runtime."""
from ..errors import ModulaError


class ApiError(Exception):
    """Raised by a host function: the message reaches the plugin as a plain Lua error string."""


class PluginLoadError(ModulaError):
    """A plugin could not be loaded: bad manifest, syntax error, failing init, broken dependency."""


class PluginCallError(ModulaError):
    """A call into plugin code failed. kind: error, budget, timeout, memory, ops."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def is_budget(self) -> bool:
        return self.kind in ("budget", "timeout", "memory", "ops")
