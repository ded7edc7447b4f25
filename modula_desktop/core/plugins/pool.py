"""A pool of VMs for one plugin version (SPEC 6): checkout with a short wait, give-back resets the
VM's globals, a broken VM is thrown away and its slot refilled on demand."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .vm import PluginVM

log = logging.getLogger(__name__)

OPEN, DRAINING, CLOSED = "open", "draining", "closed"


class PoolClosed(Exception):
    pass


class VMPool:
    def __init__(self, factory: Callable[[], PluginVM], size: int, hook_reserve: int, first: PluginVM | None = None,
                 on_change: Callable[[int], None] | None = None):
        self._factory = factory
        self.size = max(1, size)
        # with a single VM there is nothing to reserve: requests and hooks share it
        self.hook_reserve = hook_reserve if self.size > 1 else 0
        self._cond = threading.Condition()
        self._idle: list[PluginVM] = []
        self._busy = 0
        self._busy_requests = 0
        self._slots = 0  # VMs alive (idle + busy)
        self.state = OPEN
        self._on_change = on_change
        self.replaced = 0
        if first is not None:
            self._idle.append(first)
            self._slots = 1

    def fill(self):
        """Build the remaining VMs now (raises what the factory raises)."""
        while True:
            with self._cond:
                if self._slots >= self.size:
                    break
                self._slots += 1
            try:
                vm = self._factory()
            except BaseException:
                with self._cond:
                    self._slots -= 1
                raise
            with self._cond:
                self._idle.append(vm)
                self._cond.notify()
        self._changed()

    @property
    def available(self) -> int:
        with self._cond:
            return len(self._idle) + (self.size - self._slots)

    def stats(self) -> dict:
        with self._cond:
            return {"state": self.state, "size": self.size, "idle": len(self._idle), "busy": self._busy,
                    "hook_reserve": self.hook_reserve, "replaced": self.replaced}

    def _changed(self):
        if self._on_change:
            try:
                self._on_change(self.available)
            except Exception:  # noqa: BLE001
                log.exception("pool listener failed")

    def checkout(self, timeout: float, for_hook: bool = False) -> PluginVM | None:
        """A VM, or None if none is free within timeout seconds. Raises PoolClosed when draining."""
        deadline = time.monotonic() + timeout
        build = False
        with self._cond:
            while True:
                if self.state != OPEN:
                    raise PoolClosed()
                request_cap = self.size - self.hook_reserve
                allowed = for_hook or self._busy_requests < request_cap
                if allowed and self._idle:
                    vm = self._idle.pop()
                    break
                if allowed and self._slots < self.size:
                    self._slots += 1
                    build = True
                    vm = None
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            self._busy += 1
            if not for_hook:
                self._busy_requests += 1
        if build:
            try:
                vm = self._factory()
                self.replaced += 1
            except BaseException:
                with self._cond:
                    self._slots -= 1
                    self._busy -= 1
                    if not for_hook:
                        self._busy_requests -= 1
                    self._cond.notify_all()
                raise
        vm._for_hook = for_hook
        self._changed()
        return vm

    def give_back(self, vm: PluginVM):
        if not vm.broken:
            vm.reset()
        with self._cond:
            self._busy -= 1
            if not getattr(vm, "_for_hook", False):
                self._busy_requests -= 1
            if vm.broken or self.state != OPEN:
                self._slots -= 1
                vm.close()
            else:
                self._idle.append(vm)
            self._cond.notify_all()
        self._changed()

    def drain(self, timeout: float) -> bool:
        """Stop handing out VMs, wait up to timeout for busy ones to come back, close them all.
        Returns True when every VM came back in time."""
        with self._cond:
            if self.state == CLOSED:
                return True
            self.state = DRAINING
            self._cond.notify_all()
            deadline = time.monotonic() + timeout
            while self._busy > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            clean = self._busy == 0
            idle, self._idle = self._idle, []
            self._slots -= len(idle)
            self.state = CLOSED
        for vm in idle:
            vm.close()
        return clean

    def first_idle(self) -> PluginVM | None:
        with self._cond:
            return self._idle[0] if self._idle else None
