"""A pool of VMs for one plugin version (SPEC 6): checkout with a short wait, give-back resets the
VM's globals, a broken VM is thrown away and its slot refilled on demand.

States: open (hands out VMs) → draining (hands out none, waits for busy ones) → closed (every VM
closed; a VM still busy when the drain gave up is closed when it comes back).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..errors import PluginLoadError
from .vm import PluginVM

log = logging.getLogger(__name__)

OPEN, DRAINING, CLOSED = "open", "draining", "closed"


class PoolClosed(Exception):
    """The pool is draining or closed: the caller should use the plugin's current generation."""


class VMPool:
    def __init__(self, factory: Callable[[], PluginVM], size: int, hook_reserve: int, first: PluginVM | None = None):
        self._factory = factory
        self.size = max(1, size)
        # with a single VM there is nothing to reserve: requests and hooks share it
        self.hook_reserve = min(hook_reserve, self.size - 1) if self.size > 1 else 0
        self._lock = threading.Lock()  # taken directly on the hot paths: cheaper than the Condition
        self._cond = threading.Condition(self._lock)
        self._waiting = 0  # threads in self._cond.wait
        self._idle: list[PluginVM] = []
        self._busy: dict[int, bool] = {}  # id(vm) -> checked out for a hook
        self._building = 0  # slots being (re)built by a checkout, counted in _slots
        self._busy_requests = 0
        self._slots = 0  # VMs alive or being built (idle + busy + building)
        self.state = OPEN
        self.replaced = 0   # VMs rebuilt after one was thrown away
        self.discarded = 0  # broken VMs thrown away
        if first is not None:
            self._idle.append(first)
            self._slots = 1

    def fill(self):
        """Build the remaining VMs now (raises what the factory raises)."""
        while True:
            with self._cond:
                if self._slots >= self.size or self.state != OPEN:
                    break
                self._slots += 1
            try:
                vm = self._factory()
            except BaseException:
                with self._cond:
                    self._slots -= 1
                    self._cond.notify_all()
                raise
            with self._cond:
                self._idle.append(vm)
                self._cond.notify_all()

    @property
    def available(self) -> int:
        """VMs a request or hook could get now without waiting: idle ones plus empty slots."""
        with self._cond:
            return self._available()

    def _available(self) -> int:
        if self.state != OPEN:
            return 0
        return len(self._idle) + (self.size - self._slots)

    def stats(self) -> dict:
        with self._cond:
            return {"state": self.state, "size": self.size, "idle": len(self._idle), "busy": len(self._busy),
                    "building": self._building, "hook_reserve": self.hook_reserve,
                    "available": self._available(), "replaced": self.replaced, "discarded": self.discarded}

    def take_idle(self, for_hook: bool = False) -> PluginVM | None:
        """An idle VM, if one is there right now (never waits, never builds, never raises)."""
        with self._lock:
            if self.state == OPEN and self._idle and (for_hook or self._busy_requests < self.size - self.hook_reserve):
                vm = self._idle.pop()
                if not for_hook:
                    self._busy_requests += 1
                self._busy[id(vm)] = for_hook
                return vm
        return None

    def checkout(self, timeout: float, for_hook: bool = False) -> PluginVM | None:
        """A VM, or None if none is free within timeout seconds. Raises PoolClosed when draining or
        closed, PluginLoadError when an empty slot had to be rebuilt and that failed."""
        vm = self.take_idle(for_hook)  # the common case, with one lock round
        if vm is not None:
            return vm
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
                    self._building += 1
                    build = True
                    vm = None
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._waiting += 1
                try:
                    self._cond.wait(left)
                finally:
                    self._waiting -= 1
            if not for_hook:
                self._busy_requests += 1
            if not build:
                self._busy[id(vm)] = for_hook
        if build:
            vm = self._rebuild(for_hook)
        return vm

    def _rebuild(self, for_hook: bool) -> PluginVM:
        try:
            vm = self._factory()
        except BaseException as exc:
            with self._cond:
                self._slots -= 1
                self._building -= 1
                if not for_hook:
                    self._busy_requests -= 1
                self._cond.notify_all()
            if isinstance(exc, PluginLoadError):
                raise
            if not isinstance(exc, Exception):
                raise
            log.exception("could not rebuild a plugin VM")
            raise PluginLoadError(f"could not start a VM: {exc}") from None
        with self._cond:
            self._building -= 1
            self.replaced += 1
            self._busy[id(vm)] = for_hook
            # drain() may have run while we built: it waits for _building too, so the VM is counted
        return vm

    def give_back(self, vm: PluginVM):
        """Return a VM: globals reset to the post-init snapshot, or thrown away when broken."""
        if vm.clean and not vm.broken:  # a route call restored them itself (PluginVM.clean)
            vm.clean = False
        else:
            with self._lock:
                known, open_ = id(vm) in self._busy, self.state == OPEN
            if known and open_ and not vm.broken:
                vm.reset()  # outside the lock: Lua work; the VM is still ours alone
        with self._lock:
            for_hook = self._busy.pop(id(vm), None)
            if for_hook is None:
                log.error("a VM was given back twice or to the wrong pool; ignored")
                return
            if not for_hook:
                self._busy_requests -= 1
            if vm.broken or self.state != OPEN:
                if vm.broken and self.state == OPEN:
                    self.discarded += 1
                self._slots -= 1
                vm.close()
            else:
                self._idle.append(vm)
            if self._waiting:  # checkouts or a drain waiting for a VM to come back
                self._cond.notify_all()

    def drain(self, timeout: float) -> bool:
        """Stop handing out VMs, wait up to timeout for busy ones to come back, close them all.
        Returns True when every VM came back in time."""
        with self._cond:
            if self.state == CLOSED:
                return True
            self.state = DRAINING
            self._cond.notify_all()  # waiting checkouts raise PoolClosed and go to the new generation
            deadline = time.monotonic() + timeout
            while self._busy or self._building:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._waiting += 1
                try:
                    self._cond.wait(left)
                finally:
                    self._waiting -= 1
            clean = not self._busy and not self._building
            idle, self._idle = self._idle, []
            self._slots -= len(idle)
            self.state = CLOSED
        for vm in idle:
            vm.close()
        if not clean:
            log.warning("pool drained with VMs still busy after %.1f s; they close when they come back", timeout)
        return clean

    def first_idle(self) -> PluginVM | None:
        with self._cond:
            return self._idle[0] if self._idle else None
