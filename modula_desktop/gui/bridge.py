"""Carries the service's listener callbacks (called from any thread) onto the GUI thread as Qt signals."""
from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal

log = logging.getLogger(__name__)


class ServiceBridge(QObject):
    """One per window. Plugin and logbook listeners cannot be removed, so each listener checks ``_alive``
    and becomes a no-op once the bridge is closed or its C++ object is gone."""

    content_changed = Signal(str, object)  # event, entry dict
    plugin_changed = Signal(str)  # plugin name
    log_written = Signal(object)  # logbook entry dict

    def __init__(self, service, parent: QObject | None = None):
        super().__init__(parent)
        self._alive = True
        self._content = getattr(service, "content", None)
        self._content_listener = self._guard(lambda event, entry: self.content_changed.emit(
            str(event), dict(entry) if isinstance(entry, dict) else entry))
        if self._content is not None:
            self._content.add_listener(self._content_listener)
        service.plugins.add_listener(self._guard(lambda name: self.plugin_changed.emit(str(name))))
        service.logbook.add_listener(self._guard(lambda entry: self.log_written.emit(dict(entry))))

    def _guard(self, emit):
        def listener(*args):
            if not self._alive:
                return
            try:
                emit(*args)
            except RuntimeError:  # the Qt object was deleted under us (window closed)
                self._alive = False
        return listener

    def close(self, *_):
        self._alive = False
        remove = getattr(self._content, "remove_listener", None)
        if remove is not None:
            remove(self._content_listener)
