"""Carries the service's listener callbacks (called from any thread) onto the GUI thread as Qt signals."""
from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal

log = logging.getLogger(__name__)


class ServiceBridge(QObject):
    """One per window. The core has no way to remove a listener, so each listener checks ``_alive``
    and becomes a no-op once the bridge is closed or its C++ object is gone."""

    content_changed = Signal(str, object)  # event, entry dict
    plugin_changed = Signal(str)  # plugin name
    log_written = Signal(object)  # logbook entry dict

    def __init__(self, service, parent: QObject | None = None):
        super().__init__(parent)
        self._alive = True
        if getattr(service, "content", None) is not None and hasattr(service.content, "add_listener"):
            service.content.add_listener(self._guard(lambda event, entry: self.content_changed.emit(
                str(event), dict(entry) if isinstance(entry, dict) else entry)))
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
