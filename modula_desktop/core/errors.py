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
