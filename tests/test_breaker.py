"""The plugin circuit breaker (SPEC 6): opens after N consecutive failures, half-open after the reset
interval with one probe, closed again by a success; enable resets; reload failures count."""
from __future__ import annotations

import time

from modula_desktop.core.plugins.lifecycle.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from test_manager import add, approve, call, svc  # noqa: F401 - svc is a fixture


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def breaker(**kw):
    clock = Clock()
    trips = []
    b = CircuitBreaker(3, 10.0, clock=clock, on_trip=lambda: trips.append(clock.t), **kw)
    return b, clock, trips


# ---- unit ------------------------------------------------------------------------------------

def test_opens_after_consecutive_failures_only():
    b, clock, trips = breaker()
    b.failure()
    b.failure()
    b.success()
    b.failure()
    b.failure()
    assert b.state == CLOSED and b.allow()
    b.failure()
    assert b.state == OPEN and not b.allow() and trips == [100.0]


def test_half_open_lets_one_probe_through_and_a_success_closes():
    b, clock, trips = breaker()
    for _ in range(3):
        b.failure()
    clock.t += 10
    assert b.state == HALF_OPEN
    assert b.allow() is True
    assert b.allow() is False  # one probe at a time
    b.success()
    assert b.state == CLOSED and b.allow() and b.failures == 0


def test_a_failed_probe_reopens_for_another_interval():
    b, clock, trips = breaker()
    for _ in range(3):
        b.failure()
    clock.t += 10
    assert b.allow()
    b.failure()
    assert b.state == OPEN and len(trips) == 2
    clock.t += 5
    assert not b.allow()
    clock.t += 5
    assert b.allow()


def test_a_probe_without_verdict_is_released():
    b, clock, _ = breaker()
    for _ in range(3):
        b.failure()
    clock.t += 10
    assert b.allow()
    b.release()
    assert b.allow()  # the next caller may probe


def test_a_probe_that_never_reports_back_does_not_wedge_the_breaker():
    b, clock, _ = breaker(probe_timeout_s=2.0)
    for _ in range(3):
        b.failure()
    clock.t += 10
    assert b.allow()
    clock.t += 1
    assert not b.allow()
    clock.t += 1.5
    assert b.allow()


def test_reset_closes():
    b, clock, _ = breaker()
    for _ in range(3):
        b.failure()
    b.reset()
    assert b.state == CLOSED and b.allow()


# ---- through the manager, with real Lua ------------------------------------------------------

FLAKY = """
http.handle("GET", "/boom", function() error("kaput") end)
http.handle("GET", "/ok", function() return {json = {ok = true}} end)
http.handle("GET", "/slow", function()
  local stop = os.clock() + 0.4
  while os.clock() < stop do end
  return {json = {ok = true}}
end)
"""


def trip(s, n=5):
    for _ in range(n):
        assert call(s, "fl", "/boom").status == 500


def test_route_errors_open_the_breaker_then_a_probe_closes_it(svc):
    s = svc({"fl": FLAKY}, max_failures=5, reset_interval_s=0.2)
    approve(s, "fl")
    trip(s, 4)
    assert call(s, "fl", "/ok") == {"ok": True}  # a success in between starts the count over
    trip(s, 5)
    refused = call(s, "fl", "/ok")
    assert refused.status == 503 and refused.kind == "breaker"
    assert s.metrics.sample("modula_plugin_circuit_breaker_trips_total", plugin="fl", scope="plugin") == 1
    time.sleep(0.25)
    assert s.plugins.info("fl")["breaker"]["state"] == HALF_OPEN
    assert call(s, "fl", "/ok") == {"ok": True}
    assert s.plugins.info("fl")["breaker"]["state"] == CLOSED


def test_a_failed_half_open_probe_reopens(svc):
    s = svc({"fl": FLAKY}, max_failures=5, reset_interval_s=0.2)
    approve(s, "fl")
    trip(s)
    time.sleep(0.25)
    assert call(s, "fl", "/boom").status == 500  # the probe
    assert call(s, "fl", "/ok").kind == "breaker"
    assert s.metrics.sample("modula_plugin_circuit_breaker_trips_total", plugin="fl", scope="plugin") == 2


def test_a_probe_that_found_no_free_vm_does_not_wedge_the_breaker(svc):
    s = svc({"fl": FLAKY}, max_vms=2, hook_reserve_vms=1, max_failures=5, reset_interval_s=0.2)
    approve(s, "fl")
    trip(s)
    time.sleep(0.25)
    pool = s.plugins.get("fl").current.pool
    held = pool.checkout(0.1)  # someone else holds the only request VM
    busy = call(s, "fl", "/ok")  # allowed through as the probe, but no VM is free
    assert busy.status == 503 and busy.kind == "busy"
    pool.give_back(held)
    assert call(s, "fl", "/ok") == {"ok": True}  # not refused as "probe still in flight"
    assert s.plugins.info("fl")["breaker"]["state"] == CLOSED


def test_enable_resets_and_disable_stops(svc):
    s = svc({"fl": FLAKY}, max_failures=5, reset_interval_s=60)
    approve(s, "fl")
    trip(s)
    assert call(s, "fl", "/ok").kind == "breaker"
    s.plugins.enable("fl")
    assert call(s, "fl", "/ok") == {"ok": True}
    s.plugins.disable("fl")
    stopped = call(s, "fl", "/ok")
    assert stopped.status == 503 and stopped.kind == "unavailable"


def test_failed_reloads_never_shut_off_the_version_still_serving(svc, tmp_path):
    # SPEC 6: on a failed reload the old version keeps serving -- however many bad saves come in
    s = svc({"fl": FLAKY}, max_failures=3, reset_interval_s=60)
    approve(s, "fl")
    add(tmp_path, "fl", FLAKY + "\nfunction on_init() error('no') end\n")
    for _ in range(5):
        assert s.plugins.reload("fl") is False
    assert call(s, "fl", "/ok") == {"ok": True}
    assert s.plugins.get("fl").breaker.state == "closed"
    add(tmp_path, "fl", FLAKY)
    assert s.plugins.reload("fl") is True
    assert call(s, "fl", "/ok") == {"ok": True}


def test_init_failures_of_a_plugin_not_serving_count(svc, tmp_path):
    s = svc({"fl": FLAKY + "\nfunction on_init() error('no') end\n"}, max_failures=3, reset_interval_s=60)
    plugin = s.plugins.get("fl")
    assert plugin.state == "failed"
    for _ in range(2):
        assert s.plugins.reload("fl") is False
    assert plugin.breaker.state == "open"

def test_quiet_only_while_closed_with_no_failure_counted():
    # the hot path skips allow() and success() while quiet: it must never be quiet when either matters
    b, clock, trips = breaker()
    assert b.quiet and b.allow()
    b.failure()
    assert not b.quiet and b.state == CLOSED  # success() has a failure to reset
    b.success()
    assert b.quiet and b.failures == 0
    for _ in range(3):
        b.failure()
    assert not b.quiet and not b.allow()
    clock.t += 10
    assert b.allow() and not b.quiet  # the half-open probe
    b.failure()
    assert not b.quiet and b.state == OPEN
    clock.t += 10
    assert b.allow()
    b.success()
    assert b.quiet and b.state == CLOSED
