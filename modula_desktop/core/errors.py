"""Errors a user can cause. Each carries one clear sentence."""


class ModulaError(Exception):
    """Base class: the message is meant for the user as it is."""


class SettingsError(ModulaError):
    pass


class SiteError(ModulaError):
    pass


class NotFound(ModulaError):
    pass


class ValidationError(ModulaError):
    pass


class HookAbort(ModulaError):
    """A before-hook refused a content change; the message is the hook's."""

    def __init__(self, message, plugin=None, event=None):
        super().__init__(message)
        self.plugin = plugin
        self.event = event


class ReadRefused(ModulaError):
    """A read hook (before_read, or an after_read that failed) refused a read of content (SPEC 3.6).

    status: the HTTP status to answer (a plugin's own 4xx, 403 for error(), 503 for a hook that was
    stopped); body: the JSON the plugin gave, or None; headers: the plugin's response headers."""

    def __init__(self, message, plugin=None, status: int = 403, body=None, headers=None):
        super().__init__(message)
        self.plugin = plugin
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
