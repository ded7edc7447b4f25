"""How deep the current content write sits in a chain of writes plugins made from their hooks (SPEC 3.10).

A hook that writes content (``core.insert/update/delete``) fires hooks again, which may write again. The
depth travels with the work: it grows on the thread while a core write runs (a before-hook's nested write
runs on its caller's thread), and the after-hooks a write queues carry it to their worker thread, so a
chain that bounces between after-hooks is bounded as surely as one that recurses in before-hooks."""
from __future__ import annotations

import threading
from contextlib import contextmanager

_state = threading.local()


def depth() -> int:
    """Plugin content writes in progress (or causing the work in progress) on this thread."""
    return getattr(_state, "depth", 0)


@contextmanager
def at_depth(n: int):
    """Run the block as work caused at depth n (an after-hook task restoring its cause's depth)."""
    old = depth()
    _state.depth = n
    try:
        yield
    finally:
        _state.depth = old
