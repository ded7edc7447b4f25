"""Deadlines for plugin calls without the C bridge (with it, _luabridge.c's watchdog does this).

The budget hook reads the clock every TICK instructions, and one instruction can be milliseconds of C
work: a call can overrun its deadline by that much times TICK. This thread waits for the earliest
deadline of the calls in progress and, for a call past it, sets a count hook of 1 on the call's main
Lua state with lua_sethook (the one Lua call meant to be made from another thread), through ctypes on
lupa's own module: the budget hook then runs at the next instruction, reads the clock and trips. It
runs because calls without the bridge go through lupa, which releases the GIL while Lua runs.
A call is armed only while it runs (Sandbox._call_lua), so its state is alive whenever it is poked.
"""
from __future__ import annotations

import ctypes
import logging
import threading
import time

import lupa.lua54 as lupa

log = logging.getLogger(__name__)

LUA_MASKCOUNT = 1 << 3
REPOKE_S = 0.05  # a poke that landed on a thread the call has left is repeated this often


class Watchdog:
    def __init__(self, library_path: str):
        lib = ctypes.CDLL(library_path)
        self._sethook = lib.lua_sethook
        self._sethook.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int)
        self._sethook.restype = None
        self._gethook = lib.lua_gethook
        self._gethook.argtypes = (ctypes.c_void_p,)
        self._gethook.restype = ctypes.c_void_p
        self._hookf = None  # ldblib's hook dispatcher, the same for every state
        self._armed: dict[int, list] = {}  # state address -> [deadline, poked at]
        self._cond = threading.Condition()
        self._wake_at = float("inf")
        self._thread = None

    def learn_hook(self, state: int):
        """Called with the budget hook set on state: which C hook debug.sethook installs."""
        if self._hookf is None:
            self._hookf = self._gethook(state) or None

    def arm(self, state: int, deadline: float):
        if self._hookf is None:
            return
        with self._cond:
            self._armed[state] = [deadline, 0.0]
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="plugin-watchdog", daemon=True)
                self._thread.start()
            if deadline < self._wake_at:
                self._cond.notify()

    def disarm(self, state: int):
        if self._hookf is None:
            return
        with self._cond:
            self._armed.pop(state, None)

    def _run(self):
        with self._cond:
            while True:
                now = time.monotonic()
                wake = float("inf")
                for state, entry in self._armed.items():
                    deadline, poked = entry
                    if now >= deadline:
                        if now - poked >= REPOKE_S:
                            self._sethook(state, self._hookf, LUA_MASKCOUNT, 1)
                            entry[1] = now
                        wake = min(wake, now + REPOKE_S)
                    else:
                        wake = min(wake, deadline)
                self._wake_at = wake
                self._cond.wait(None if wake == float("inf") else max(0.001, wake - now))


def _make() -> Watchdog | None:
    try:
        return Watchdog(lupa.__file__)
    except (OSError, AttributeError) as exc:  # lupa's module does not export the Lua API
        log.warning("plugin deadlines without the C bridge rely on the count hook alone: %s", exc)
        return None


WATCHDOG = _make()
