"""Errors of the plugin runtime."""
from ..errors import ModulaError


class ApiError(Exception):
    """Raised by a host function: the message reaches the plugin as a plain Lua error string."""


class DataError(ApiError):
    """A db.* call the data refused (a constraint, a table or column that does not exist): returned to
    the plugin as nil, err as ModulaCMS does, where argument errors and budgets raise."""


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


class ConversionLimit(ApiError):
    """A value out of Lua is larger than the bytes its conversion may take (Sandbox.from_lua)."""

    def __init__(self, limit: int):
        super().__init__(f"value larger than {limit} bytes")
        self.limit = limit


class RequestDataError(ApiError):
    """A client's request data cannot be handed to the plugin's VM: the client's fault, answered with
    status, never counted against the plugin."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
