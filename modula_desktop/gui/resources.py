"""Icons and the stylesheet from the repository's resources/ folder (or the PyInstaller bundle)."""
from __future__ import annotations

import functools
import logging

from PySide6.QtGui import QIcon

from ..core.paths import RESOURCES

log = logging.getLogger(__name__)


@functools.cache
def icon(name: str) -> QIcon:
    path = RESOURCES / "icons" / f"{name}.svg"
    return QIcon(str(path)) if path.is_file() else QIcon()


def stylesheet() -> str:
    path = RESOURCES / "style.qss"
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        log.warning("no stylesheet at %s", path)
        return ""
