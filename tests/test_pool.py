"""The VM pool (SPEC 6): checkout wait, give-back reset, broken VMs replaced, draining."""
from __future__ import annotations

import threading
import time

import pytest

from modula_desktop.core.plugins.errors import PluginLoadError
from modula_desktop.core.plugins.runtime.pool import PoolClosed, VMPool
from test_manager import approve, call, svc, wait_until  # noqa: F401 - svc is a fixture


class FakeVM:
    def __init__(self):
        self.broken = False
        self.closed = False
        self.resets = 0
        self.clean = False  # like a VM whose route call restored its globals

    def reset(self):
        self.resets += 1

    def close(self):
        self.closed = True


def pool(size=3, reserve=1, factory=FakeVM, **kw):
    p = VMPool(factory, size, reserve, **kw)
    p.fill()
    return p


# ---- unit ------------------------------------------------------------------------------------

def test_checkout_waits_at_most_the_timeout_and_keeps_the_hook_reserve():
    p = pool(size=2, reserve=1)
    vm = p.checkout(0.1)
    started = time.monotonic()
    assert p.checkout(0.1) is None  # the second VM is the hooks' reserve
    assert 0.09 <= time.monotonic() - started < 0.5
    hook_vm = p.checkout(0.1, for_hook=True)
    assert hook_vm is not None and hook_vm is not vm


def test_give_back_resets_and_a_waiting_checkout_gets_the_vm():
    p = pool(size=2, reserve=1)
    vm = p.checkout(0.1)
    got = {}
    t = threading.Thread(target=lambda: got.update(vm=p.checkout(2.0)))
    t.start()
    time.sleep(0.05)
    p.give_back(vm)
    t.join()
    assert got["vm"] is vm and vm.resets == 1


def test_a_clean_vm_is_not_reset_again_and_still_goes_back_idle():
    p = pool(size=2, reserve=1)
    vm = p.checkout(0.1)
    vm.clean = True
    p.give_back(vm)
    assert vm.resets == 0 and p.stats()["idle"] == 2 and p.stats()["busy"] == 0
    assert p.checkout(0.1) is vm  # the most recently used VM goes out first
    p.give_back(vm)
    assert vm.resets == 1
    p.give_back(vm)  # a second give-back is refused without touching the pool's counts
    assert p.stats()["idle"] == 2 and vm.resets == 1


def test_a_broken_vm_is_discarded_and_its_slot_rebuilt_on_demand():
    p = pool(size=1, reserve=0)
    vm = p.checkout(0.1)
    vm.broken = True
    p.give_back(vm)
    assert vm.closed and p.stats()["discarded"] == 1 and p.available == 1
    fresh = p.checkout(0.1)
    assert fresh is not vm and p.stats()["replaced"] == 1


def test_a_failing_rebuild_gives_the_slot_back():
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("lua state could not be created")
        return FakeVM()

    p = pool(size=1, reserve=0, factory=flaky)
    vm = p.checkout(0.1)
    vm.broken = True
    p.give_back(vm)
    with pytest.raises(PluginLoadError):
        p.checkout(0.1)
    stats = p.stats()
    assert stats["busy"] == 0 and stats["building"] == 0 and p.available == 1
    assert p.checkout(0.1) is not None  # the next rebuild works


def test_drain_waits_for_busy_vms_then_closes_everything():
    p = pool(size=2, reserve=0)
    busy, idle = p.checkout(0.1), p.checkout(0.1)
    p.give_back(idle)
    result = {}
    t = threading.Thread(target=lambda: result.update(clean=p.drain(5.0)))
    t.start()
    wait_until(lambda: p.state == "draining")
    with pytest.raises(PoolClosed):
        p.checkout(0.1)
    assert idle.closed is False
    p.give_back(busy)
    t.join()
    assert result["clean"] is True and p.state == "closed" and busy.closed and idle.closed


def test_drain_timeout_closes_a_late_vm_when_it_comes_back():
    p = pool(size=1, reserve=0)
    vm = p.checkout(0.1)
    assert p.drain(0.05) is False and p.state == "closed" and not vm.closed
    p.give_back(vm)
    assert vm.closed and vm.resets == 0


def test_a_waiting_checkout_is_told_when_the_pool_starts_draining():
    p = pool(size=1, reserve=0)
    vm = p.checkout(0.1)
    err = {}

    def waiter():
        try:
            p.checkout(5.0)
        except PoolClosed:
            err["closed"] = time.monotonic()

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.05)
    started = time.monotonic()
    threading.Thread(target=p.drain, args=(5.0,)).start()
    t.join(2.0)
    assert err["closed"] - started < 1.0
    p.give_back(vm)


def test_giving_back_twice_is_ignored():
    p = pool(size=1, reserve=0)
    vm = p.checkout(0.1)
    p.give_back(vm)
    p.give_back(vm)
    assert p.stats()["idle"] == 1 and p.stats()["busy"] == 0


def test_a_draining_pool_has_nothing_available():
    p = pool(size=2, reserve=0)
    vm = p.checkout(0.1)
    threading.Thread(target=p.drain, args=(5.0,)).start()
    wait_until(lambda: p.state != "open")
    assert p.available == 0
    p.give_back(vm)


# ---- with real Lua ---------------------------------------------------------------------------

POOLED = """
http.handle("GET", "/slow", function(req)
  local stop = os.clock() + (tonumber(req.query.s) or 0.5)
  while os.clock() < stop do end
  return {json = {ok = true}}
end)
http.handle("GET", "/hog", function()
  local t = {}
  for i = 1, 1e7 do t[i] = string.rep("x", 64) .. i end
  return {json = {n = #t}}
end)
http.handle("GET", "/spin", function() while true do end end)
http.handle("GET", "/leak", function()
  counter = (counter or 0) + 1
  tostring = nil
  return {json = {counter = counter}}
end)
http.handle("GET", "/upper", function() return {json = {up = string.upper(tostring("a"))}} end)
"""


def test_pool_exhaustion_answers_503_after_the_checkout_wait(svc):
    s = svc({"pl": POOLED}, max_vms=2, hook_reserve_vms=1, checkout_wait_ms=100)
    approve(s, "pl")
    t = threading.Thread(target=call, args=(s, "pl", "/slow"), kwargs={"query": {"s": "0.6"}})
    t.start()
    wait_until(lambda: s.plugins.get("pl").current.pool.stats()["busy"] == 1)
    started = time.monotonic()
    failure = call(s, "pl", "/upper")
    waited = time.monotonic() - started
    t.join()
    assert failure.status == 503 and failure.kind == "busy"
    assert 0.09 <= waited < 0.5
    assert call(s, "pl", "/upper") == {"up": "A"}


def test_a_vm_that_ran_out_of_memory_is_replaced(svc):
    s = svc({"pl": POOLED}, max_vms=1, memory_limit_mb=8)
    approve(s, "pl")
    failure = call(s, "pl", "/hog")
    assert failure.status == 500 and failure.kind == "memory" and "memory" in failure.detail
    assert failure.code == "HANDLER_ERROR" and failure.message == "internal plugin error"
    stats = s.plugins.get("pl").current.pool.stats()
    assert stats["discarded"] == 1
    assert call(s, "pl", "/upper") == {"up": "A"}
    assert s.plugins.get("pl").current.pool.stats()["replaced"] == 1


def test_a_vm_that_hit_its_deadline_is_replaced(svc):
    s = svc({"pl": POOLED}, max_vms=1, timeout_s=0.2)
    approve(s, "pl")
    failure = call(s, "pl", "/spin")
    assert failure.status == 504 and failure.kind == "timeout"
    assert call(s, "pl", "/upper") == {"up": "A"}
    assert s.plugins.get("pl").current.pool.stats()["replaced"] == 1


def test_globals_leaked_by_one_request_are_not_seen_by_the_next(svc):
    s = svc({"pl": POOLED}, max_vms=1)
    approve(s, "pl")
    assert call(s, "pl", "/leak") == {"counter": 1}
    assert call(s, "pl", "/leak") == {"counter": 1}
    assert call(s, "pl", "/upper") == {"up": "A"}  # a replaced builtin is restored too


def test_take_idle_never_waits_builds_or_touches_the_hook_reserve():
    p = pool(size=3, reserve=1)
    first, second = p.take_idle(), p.take_idle()
    assert first is not None and second is not None and first is not second
    assert p.take_idle() is None  # the last VM is the hooks' reserve
    assert p.checkout(0.05, for_hook=True) is not None
    p.give_back(first)
    assert p.take_idle() is first
    empty = VMPool(FakeVM, 2, 0)  # nothing built yet: take_idle does not build, checkout does
    assert empty.take_idle() is None and empty.checkout(0.05) is not None
    threading.Thread(target=p.drain, args=(0.2,)).start()
    wait_until(lambda: p.state != "open")
    assert p.take_idle() is None


def test_only_a_route_call_that_just_ended_leaves_a_vm_clean(tmp_path):
    # the give-back skips its reset for a clean VM: a hook or a reset after the route call must not
    # inherit the route call's verdict
    from test_sandbox_adversarial import call_json, handler, make_vm, request
    vm = make_vm(tmp_path, handler("return {json = {n = normal_global}}")
                 + 'hooks.on("before_create", "content", function(e) normal_global = 7 end)\n')
    index = next(r.index for r in vm.routes if r.path == "/x")
    vm.call_route(index, request("/x"))
    assert vm.clean
    vm.reset()
    assert not vm.clean
    vm.call_route(index, request("/x"))
    vm.call_hook(vm.hooks[0].index, {"title": "t"}, timeout=1.0)
    assert not vm.clean  # the hook changed a global: the give-back must reset
    vm.reset()
    assert call_json(vm, "/x") == {"n": 42}
