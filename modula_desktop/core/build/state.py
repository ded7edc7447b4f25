"""What a successful build leaves in memory for the next build of the same output in the same process.

The window builds the same site again and again; reading the manifest back, working out every entry's
digests, hashing every output's key and compiling the theme's templates each time is most of a
one-entry rebuild. A build takes the state of the last one (so a failing build leaves none behind) and
uses it only while the manifest in the output folder is the very file that build wrote: another process
that built there, a --clean build or a removed output folder all make the next build start cold.

A warm build trusts its state about the files in the output folder: a file deleted there by hand comes
back with the next build of another process (the command line) or a --clean build, not with the next
build of the window. Checking 13,000 files costs more than the rest of a one-entry rebuild."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .write import MANIFEST

_LIMIT = 2  # outputs remembered per process (the window builds one); about 40 MB for 10,000 entries


@dataclass
class WarmState:
    signature: tuple  # (device, inode, mtime_ns, size) of the manifest file the build left
    database: str  # the site database it read
    permalink: str  # the entries' paths were worked out for it
    manifest: dict  # the manifest it wrote (or found unchanged)
    text: object  # write.ManifestText: that manifest's text, so the next build encodes only its changes
    model: object  # collect.SiteModel: its entries, each with the row it was read from
    memo: object  # render.Memo
    theme: object  # theme.Theme, its templates compiled


_states: dict[str, WarmState] = {}
_lock = threading.Lock()


def signature(out: Path) -> tuple | None:
    try:
        st = os.stat(out / MANIFEST)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def take(out: Path, database: str) -> WarmState | None:
    """The state the last successful build of out in this process left, if the output is still as that
    build left it. Taken, not copied: the build that takes it puts a new one back only if it succeeds."""
    with _lock:
        state = _states.pop(str(out), None)
    if state is None or state.database != database or signature(out) != state.signature:
        return None
    return state


def keep(out: Path, state: WarmState):
    with _lock:
        _states.pop(str(out), None)
        _states[str(out)] = state
        while len(_states) > _LIMIT:
            _states.pop(next(iter(_states)))


def forget(out: Path | None = None):
    """Drop what this process remembers of out (of every output without one): its next build is cold,
    as in a new process."""
    with _lock:
        if out is None:
            _states.clear()
        else:
            _states.pop(str(Path(out).resolve()), None)
