"""Can a window be opened here? Checked before Qt is imported: without a display Qt's xcb plugin aborts
the process with a message about plugins that tells a user nothing."""
from __future__ import annotations

import ctypes.util
import os
import sys


def display_problem(environ=None, platform: str | None = None, find_library=ctypes.util.find_library) -> str | None:
    """One sentence saying what is missing to show the window, or None when nothing is."""
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if env.get("QT_QPA_PLATFORM") or not platform.startswith("linux"):
        return None  # the user chose a platform plugin (offscreen, wayland, vnc…), or not X11 at all
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        return ("no display to open the window on (DISPLAY is not set): run it in a desktop session, "
                "use `modula serve` for the site without a window, or set QT_QPA_PLATFORM=offscreen")
    if not env.get("WAYLAND_DISPLAY") and find_library("xcb-cursor") is None:
        return ("Qt needs the X11 library libxcb-cursor to open a window: install it "
                "(Debian/Ubuntu: apt install libxcb-cursor0), or use `modula serve` for the site without a window")
    return None
