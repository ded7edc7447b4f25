"""One sandboxed Lua 5.4 runtime: the trusted bootstrap, budgets, and value conversion.

No Python object ever reaches plugin code: host callables are kept as upvalues of Lua closures
made by the bootstrap, they never raise into Lua (they return ``ok, ...``), and every value handed
to Lua is converted to a plain Lua value or table first. Values coming back are read with lupa's
raw iteration, so no plugin metamethod runs outside a budget.
"""
from __future__ import annotations

import gc
import logging
import math
import re
import time
from functools import lru_cache

import lupa.lua54 as lupa
from lupa.lua54 import lua_type

from ...paths import LUA_DIR
from ..errors import ApiError, ConversionLimit, PluginCallError, RequestDataError
from .watchdog import WATCHDOG

log = logging.getLogger(__name__)

try:  # the optional C bridge for route calls (setup.py builds it where a C compiler is at hand)
    from . import _luabridge

    _luabridge.bind(lupa.__file__)
except Exception as exc:  # noqa: BLE001 - not built, or not this lupa: routes go through lupa alone
    log.debug("route calls go through lupa alone: %s", exc)
    _luabridge = None
# the registry key under which the bootstrap leaves route_entry for the bridge
ROUTE_ENTRY_KEY = "modula.route_entry"
_entry_warned = False

MAX_DEPTH = 64
MAX_ITEMS = 1_000_000
# What from_lua charges, in bytes, besides a string's length: a string's quotes, a table's brackets,
# an entry's separator (a key's quotes and colon are its string's). Together a lower bound of the
# value's JSON text, so a limit in bytes stops before the copy is larger than the limit.
STRING_COST, TABLE_COST, ENTRY_COST = 2, 2, 1
# The largest share of a VM's memory limit that a client's request data may take in it.
REQUEST_SHARE = 2
# Bytes JSON escapes (ensure_ascii=False): two characters for these, six (\u00XX) for other controls.
_NEEDS_ESCAPE = re.compile(rb'[\x00-\x1f"\\]').search
_SHORT_ESCAPES = b'"\\\b\t\n\f\r'
_LONG_ESCAPES = bytes(c for c in range(32) if c not in b"\b\t\n\f\r")


def json_text_cost(data: bytes) -> int:
    """The length of data's JSON string (quotes and escapes included), for text that is ASCII or valid
    UTF-8 (each invalid byte becomes three)."""
    if not _NEEDS_ESCAPE(data):
        return len(data) + STRING_COST
    short = len(data) - len(data.translate(None, _SHORT_ESCAPES))
    long = len(data) - len(data.translate(None, _LONG_ESCAPES))
    return len(data) + STRING_COST + short + 5 * long
LUA_INT_MIN, LUA_INT_MAX = -(2**63), 2**63 - 1
# Work a C pattern match may do before the pure-Lua (counted) matcher takes over; about 0.1 s.
# Entry points that run plugin code under the budgets (their second argument is the deadline).
ARMED_ENTRIES = frozenset({"run", "run_hook", "call_global"})
# Room left for what lupa pushes when calling in (small scalars; tables are built beforehand).
ARGUMENT_ROOM = 256 * 1024
PATTERN_COST = 20_000_000
LUA_ERRMEM = 4  # lua_pcall's status for a memory error
# Estimated Lua memory of converted values (bytes): a table, each of its entries, a string's header.
TABLE_BYTES, ENTRY_BYTES, STRING_BYTES = 64, 40, 32


@lru_cache(maxsize=None)
def _lua_source(name: str) -> bytes | None:
    path = LUA_DIR / name
    return path.read_bytes() if path.exists() else None


def _deny_attribute(obj, name, *value):
    raise AttributeError("Python objects are not accessible from plugins")


# empty lists marked as arrays per conversion to Lua (to_lua); past it they encode as {}
MAX_ARRAY_MARKS = 1024


class Sandbox:
    """A LuaRuntime with the bootstrap applied. Used by one thread at a time."""

    def __init__(self, memory_limit_mb: int, error_max_bytes: int = 4096):
        self.memory_limit = int(memory_limit_mb) * 1024 * 1024
        self.error_max_bytes = max(64, int(error_max_bytes))
        # the budget error a host call raises when a value it was handed is larger than the memory limit
        self._too_large_trip = (f"memory limit exceeded ({int(memory_limit_mb)} MiB): a value handed to the "
                                f"host is larger than that").encode()
        self.lua = lupa.LuaRuntime(
            encoding=None,
            register_eval=False,
            register_builtins=False,
            unpack_returned_tuples=True,
            attribute_handlers=(_deny_attribute, _deny_attribute),
            max_memory=self.memory_limit,
        )
        limits = self.lua.table_from({
            b"max_string": max(1, self.memory_limit // 2),
            b"pattern_cost": PATTERN_COST,
            b"memory_mb": int(memory_limit_mb),
            b"error_max": self.error_max_bytes,
        })
        # The memory limit is enforced only while plugin code runs (the bootstrap switches it on
        # in arm() and off around every host call; call() switches it off when control returns).
        # lupa allocates outside any protected call when it converts values between Python and
        # Lua: an allocation refused there aborts the process (Lua panic) or longjmps across
        # Python frames with the GIL held (the process deadlocks). Conversions made while the
        # limit is off are bounded by an estimate instead (to_lua with a budget).
        host = self.lua.table_from({b"clock": time.monotonic, b"mem_on": self._limit_on,
                                    b"mem_off": self._limit_off})
        bootstrap = _lua_source("bootstrap.lua")
        self.trusted = self.lua.execute(bootstrap, host, limits, _lua_source("patterns.lua"),
                                        name="=bootstrap", mode="t")
        self._t = {k.decode(): v for k, v in self.trusted.items()}
        self._bind = self._t["bind"]
        self._route_inbox, self._route_results = self._t["route_inbox"], self._t["route_results"]
        self._route_caller = self._t["route_caller"]
        self._limit_off()
        self._state = int(self._t["state_address"]().decode(), 16)
        self.watched = self._watch()
        # without the bridge's watchdog, the Python one (the budget hook is still set from the bootstrap)
        self._watchdog = None if self.watched else WATCHDOG
        if self._watchdog is not None:
            self._watchdog.learn_hook(self._state)
        self._entry = self._route_entry()
        self._arrays = None  # the bootstrap's json.array marks, once build_api made them

    def _json_arrays(self):
        if self._arrays is None:
            self._arrays = self._t["json_arrays"]()
        return self._arrays

    def _watch(self) -> bool:
        """Installs the C bridge's watchdog for this runtime (its deadlines then hold even when one
        instruction is milliseconds of C work); False without the bridge."""
        if _luabridge is None:
            return False
        try:
            _luabridge.watch(self._state)
        except Exception as exc:  # noqa: BLE001
            log.warning("plugin deadlines rely on the count hook alone: %s", exc)
            return False
        self._t["use_watch"]()
        return True

    def _route_entry(self):
        """The C bridge's entry for route calls, or None (not built, or it does not recognise this
        lupa: its checks failed)."""
        if _luabridge is None:
            return None
        try:
            lock = runtime_lock(self.lua)
            address = int(self._t["state_address"]().decode(), 16)
            return _luabridge.Entry(self.lua, lock, address, ROUTE_ENTRY_KEY, self.memory_limit, ARGUMENT_ROOM,
                                    self.memory_used())
        except Exception as exc:  # noqa: BLE001
            global _entry_warned
            if not _entry_warned:  # once: every VM would say the same
                _entry_warned = True
                log.warning("route calls go through lupa alone: %s", exc)
            return None

    _armed = False
    _deadline = float("inf")

    def _limit_on(self):
        self.lua.set_max_memory(self.memory_limit)

    def _limit_off(self):
        self.lua.set_max_memory(0)

    def fn(self, name):
        """A trusted bootstrap entry point."""
        return self._t[name]

    # ---- host callables --------------------------------------------------------------------
    def host_function(self, fn, convert_args=True, name="host function"):
        """Wrap a Python callable so Lua sees a plain Lua function.

        The callable gets Python values (converted from Lua) and returns a Python value, a tuple of
        values, or raises ApiError with a message for the plugin. Other exceptions are logged and
        reach the plugin as a generic message, never as a Python object.
        """
        to_lua, from_lua = self.to_lua, self.from_lua

        def call(*args):
            armed = self._armed
            if armed:
                self._limit_off()  # back on in the bootstrap's bind, once the results are in Lua
            late = armed and time.monotonic() > self._deadline
            try:
                result = answer(*args)
            except ConversionLimit:
                # a value the host would copy past the memory limit: the memory budget's error, as
                # if the plugin had allocated it (the bootstrap's bind trips the budget with it)
                return (self._too_large_trip, False, self._too_large_trip)
            if armed and not late:
                late = time.monotonic() > self._deadline
            return (late,) + result

        def answer(*args):
            try:
                if convert_args:
                    budget = [MAX_ITEMS, self.memory_limit]  # shared by all the arguments
                    args = [from_lua(a, _budget=budget) for a in args]
                result = fn(*args)
                # the memory limit is off during host calls: the results must fit in what is left
                budget = [self._available()]
                if isinstance(result, tuple):
                    return (True,) + tuple(to_lua(r, _budget=budget) for r in result)
                return True, to_lua(result, _budget=budget)
            except ConversionLimit:
                raise
            except ApiError as exc:
                return False, str(exc).encode("utf-8", "replace")
            except lupa.LuaMemoryError:
                return False, b"not enough memory"
            except Exception:  # noqa: BLE001 - a host bug must not become a Lua-visible object
                log.exception("error in %s", name)
                return False, f"internal error in {name}".encode()

        return call

    def raw_host_table(self, mapping: dict):
        """A Lua table of raw host callables, for the bootstrap only (it binds them)."""
        return self.lua.table_from({k.encode(): v for k, v in mapping.items()})

    # ---- conversion --------------------------------------------------------------------------
    def _available(self) -> int:
        """Lua memory the plugin may still use (the limit minus what is in use, garbage included)."""
        return self.memory_limit - self.memory_used()

    def _spend(self, budget, nbytes):
        budget[0] -= nbytes
        if budget[0] >= 0:
            return
        if len(budget) == 1:  # the first shortfall: garbage may be in the way, collect it once
            budget.append(True)
            before = self._available()
            try:
                self.lua.gccollect()
            except Exception:  # noqa: BLE001
                pass
            budget[0] += max(0, self._available() - before)
        if budget[0] < 0:
            raise ApiError("not enough memory")

    def to_lua(self, value, _depth=0, _budget=None, _marks=None):
        """A Lua value for plain Python data. With _budget ([bytes]), the estimated Lua memory of
        the result is charged to it and ApiError("not enough memory") is raised when it runs out.
        Empty lists become tables json.array marked, at most MAX_ARRAY_MARKS per conversion (each mark
        is a host call: a value of a million empty lists must not cost a million)."""
        if value is None or isinstance(value, (bool, float)):
            return value
        if isinstance(value, bytes):
            if _budget is not None:
                self._spend(_budget, STRING_BYTES + len(value))
            return value
        if isinstance(value, int):
            return value if LUA_INT_MIN <= value <= LUA_INT_MAX else float(value)
        if isinstance(value, str):
            try:
                value = value.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800")
                raise ApiError("text is not valid Unicode") from None
            if _budget is not None:
                self._spend(_budget, STRING_BYTES + len(value))
            return value
        if _depth > MAX_DEPTH:
            raise ApiError("value nested too deeply")
        if isinstance(value, (dict, list, tuple)) and _budget is not None:
            self._spend(_budget, TABLE_BYTES + ENTRY_BYTES * len(value))
        if _marks is None:
            _marks = [MAX_ARRAY_MARKS]
        if isinstance(value, dict):
            return self.lua.table_from(self._lua_items(value, _depth + 1, _budget, _marks))
        if isinstance(value, (list, tuple)):
            if not value:
                # a Python list is an array: empty, it stays [] when the plugin encodes it again
                table = self.lua.table_from(())
                if _marks[0] > 0:
                    _marks[0] -= 1
                    arrays = self._json_arrays()
                    if arrays is not None:
                        if _budget is not None:
                            self._spend(_budget, ENTRY_BYTES)
                        arrays[table] = True
                return table
            return self.lua.table_from([self.to_lua(v, _depth + 1, _budget, _marks) for v in value])
        if lupa.lua_type(value) is not None:
            return value
        raise ApiError(f"cannot pass a {type(value).__name__} to Lua")

    def _lua_items(self, value: dict, depth: int, budget, marks) -> dict:
        """to_lua of a dict's keys and values, for table_from. Text and plain scalars, most of what a
        hook's entry holds, are converted here rather than by a call each (a hook's data was 25 calls),
        their bytes charged to the budget in one sum before the table is made."""
        out = {}
        spent = 0
        to_lua = self.to_lua
        try:
            for k, v in value.items():
                kind = type(k)
                if kind is str:
                    k = k.encode("utf-8", "surrogateescape")
                    spent += STRING_BYTES + len(k)
                elif kind is bytes:
                    spent += STRING_BYTES + len(k)
                else:
                    k = to_lua(k, depth, budget, marks)
                kind = type(v)
                if kind is str:
                    v = v.encode("utf-8", "surrogateescape")
                    spent += STRING_BYTES + len(v)
                elif kind is bytes:
                    spent += STRING_BYTES + len(v)
                elif v is not None and kind is not bool and kind is not float:
                    v = to_lua(v, depth, budget, marks)
                out[k] = v
        except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800")
            raise ApiError("text is not valid Unicode") from None
        if budget is not None and spent:
            self._spend(budget, spent)
        return out

    def from_lua(self, value, _depth=0, binary=False, _budget=None, max_bytes=None, json_text=False):
        """Plain Python data from a Lua value: bytes become str (utf-8, invalid bytes replaced),
        sequences 1..n become lists, other tables dicts. Functions, coroutines and cycles are refused.

        At most MAX_ITEMS tables and entries are read in the whole conversion, not per table: a table that
        holds the same subtable twice at every level (or itself many times) would otherwise be
        expanded into exponentially many copies, outside any budget. And at most max_bytes (default: the
        memory limit) of strings and structure, counted as the copy is made (every reference to a
        string is a copy of it): ConversionLimit before the copy grows past it. With json_text, strings
        are counted as JSON writes them (escapes included): the count is then the length of the JSON
        text but for numbers and invalid UTF-8, so encoding what passed stays near max_bytes.
        _budget: [items, bytes] left, shared by the conversions of one call."""
        kind = type(value)
        if kind is bytes:
            if _budget is not None:
                _budget[1] -= len(value)
                if _budget[1] < 0:
                    raise ConversionLimit(self.memory_limit if max_bytes is None else max_bytes)
            elif max_bytes is not None and len(value) > max_bytes:
                raise ConversionLimit(max_bytes)
            return value if binary else value.decode("utf-8", "replace")
        if value is None or kind is bool or kind is int or kind is float:
            return value
        ltype = lua_type(value)
        if ltype != "table":
            raise ApiError(f"cannot use a Lua {ltype} here")
        if _depth >= MAX_DEPTH:
            raise ApiError("table nested too deeply (or it contains itself)")
        if _budget is None:
            _budget = [MAX_ITEMS, self.memory_limit if max_bytes is None else max_bytes]
        left = _budget[0] - 1  # the table itself: a tree of empty tables costs as much as their entries
        room = _budget[1] - TABLE_COST
        out = {}
        sequence = True  # every key an integer so far
        for k, v in value.items():
            left -= 1
            if left < 0:
                raise ApiError("table too large")
            kind = type(k)
            if kind is bytes:
                room -= (json_text_cost(k) if json_text else len(k) + STRING_COST) + ENTRY_COST
                if room < 0:  # before the copy is made
                    raise ConversionLimit(self.memory_limit if max_bytes is None else max_bytes)
                k = k.decode("utf-8", "replace")
                sequence = False
            else:
                room -= ENTRY_COST
                if kind is not int:
                    sequence = False
                    if kind is not float and kind is not bool and lua_type(k) is not None:
                        raise ApiError("table keys must be strings or numbers")
            kind = type(v)
            if kind is bytes:
                room -= json_text_cost(v) if json_text else len(v) + STRING_COST
                if room < 0:
                    raise ConversionLimit(self.memory_limit if max_bytes is None else max_bytes)
                if not binary:
                    v = v.decode("utf-8", "replace")
            elif not (v is None or kind is bool or kind is int or kind is float):
                _budget[0], _budget[1] = left, room
                v = self.from_lua(v, _depth + 1, binary, _budget, max_bytes, json_text)
                left, room = _budget[0], _budget[1]
            else:
                room -= 1  # a number's shortest text
            out[k] = v
        if room < 0:
            raise ConversionLimit(self.memory_limit if max_bytes is None else max_bytes)
        _budget[0], _budget[1] = left, room
        n = len(out)
        if not n:
            if json_text:  # as JSON: {} as in ModulaCMS, unless json.array marked it (or it came from a list)
                arrays = self._json_arrays()
                return [] if arrays is not None and arrays[value] else {}
            return []
        if sequence and min(out) == 1 and max(out) == n:  # distinct integers 1..n: a list
            return [out[i] for i in range(1, n + 1)]
        return out

    def request_to_lua(self, value):
        """A client's request data (a parsed JSON body) as a Lua value, within a share of the memory
        limit: RequestDataError (the client's: 413, or 400 for text that is not Unicode) otherwise."""
        share = self.memory_limit // REQUEST_SHARE
        try:
            return self.to_lua(value, _budget=[share, True])  # True: no collection first (see _spend)
        except ApiError as exc:
            if str(exc) == "not enough memory":
                raise RequestDataError(413, f"it would take more than half of the plugin's memory limit "
                                            f"({share // 2**20} MiB)") from None
            raise RequestDataError(400, str(exc)) from None

    def error_text(self, text) -> str:
        """A Lua error's text, at most error_max_bytes of it (an error() can carry a 16 MiB string, which
        must reach neither a response nor the log whole)."""
        cap = self.error_max_bytes
        if isinstance(text, bytes) and len(text) > cap:
            return _lua_error_text(text[:cap].decode("utf-8", "ignore")) + "… (error message truncated)"
        text = _lua_error_text(text)
        if len(text) > cap:
            return text[:cap] + "… (error message truncated)"
        return text

    def close(self):
        """Let the runtime go now. The sandbox and its LuaRuntime refer to each other (the host callables
        inside Lua are the sandbox's methods), so without this a closed VM, with everything its plugin
        allocated, waited for Python's cycle collector: a route that builds a 16 MB string and is
        stopped by its budget left one such VM behind per request, about a gigabyte under a few clients.
        Dropping every reference the sandbox holds frees the runtime by reference counting, here."""
        self.__dict__.clear()
        release_memory()

    def memory_used(self) -> int:
        try:
            return self.lua.get_memory_used()
        except Exception:  # noqa: BLE001
            return 0

    def call_route(self, *args):
        """The bootstrap's route_entry: through the C bridge when it is there and takes these arguments
        (holding the GIL while the call is short, see bootstrap.lua), else through lupa (route_caller).
        args: max_instructions, deadline, message, index, then the request as a table, or flat:
        method, path, body, client_ip (bytes), json (a Lua value or None), query, params and headers
        (each a flat list of names and values as bytes, or None).
        Returns the packed answer (bytes, see route_caller) or status, has_json, json, body, headers."""
        entry = self._entry
        if entry is not None:
            self._deadline = args[1]
            self._armed = True
            try:
                packed = entry(*args)
            finally:
                self._armed = False
            if type(packed) is tuple:  # the protected call failed
                status, message = packed
                self._failed(status == LUA_ERRMEM, message)
            if packed is not None:
                return packed or self._route_outcome()
        if len(args) > 5:  # the maps as Lua tables, for lupa's path
            table_from = self.lua.table_from
            args = (*args[:9], *(table_from(dict(zip(m[::2], m[1::2]))) if m else None for m in args[9:]))
        self._route_inbox[1] = self.lua.table_from(args)
        packed = self._call_lua(self._route_caller, (), deadline=args[1])
        if packed:
            return packed
        return self._route_outcome()

    def _route_outcome(self):
        r = dict(self._route_results.items())
        return self._outcome((r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)))

    def call(self, entry: str, *args):
        """Call a trusted entry point that returns ``ok, ...``; raise PluginCallError on failure.
        The entry points that run plugin code take max_instructions, deadline, message, ...."""
        result = self._call_lua(self._t[entry], args, deadline=args[1] if entry in ARMED_ENTRIES else None)
        return self._outcome(result if isinstance(result, tuple) else (result,))

    def _call_lua(self, fn, args, deadline=None):
        """fn(*args) with lupa's errors turned into PluginCallError. With a deadline (fn runs plugin code)
        the memory limit is switched on just before the call and off again after it: lupa's own
        conversions outside the protected call must never meet it. Before switching it on we make sure
        the few bytes lupa pushes as arguments fit."""
        if deadline is not None:
            if self.memory_limit - self.memory_used() < ARGUMENT_ROOM:
                self.lua.gccollect()
                if self.memory_limit - self.memory_used() < ARGUMENT_ROOM:
                    raise PluginCallError("memory", f"memory limit exceeded ({self.memory_limit // 2**20} MiB)")
            self._deadline = deadline
            self._armed = True
            self._limit_on()
            if self._watchdog is not None:
                self._watchdog.arm(self._state, deadline)
        try:
            try:
                return fn(*args)
            finally:
                if deadline is not None and self._watchdog is not None:
                    self._watchdog.disarm(self._state)
                self._armed = False
                self._limit_off()  # lupa's own allocations must not hit it
        except lupa.LuaMemoryError:
            self._failed(True, None)
        except lupa.LuaError as exc:  # only the bootstrap itself can raise here
            self._failed(False, exc.args[0] if exc.args else str(exc))

    def _failed(self, memory: bool, error):
        """Raise the PluginCallError for a call into Lua that failed outside run()'s protection."""
        self._t["disarm"]()
        if memory:
            raise PluginCallError("memory", f"memory limit exceeded ({self.memory_limit // 2**20} MiB)") from None
        tripped = self._t["tripped"]()
        if isinstance(tripped, bytes):  # a budget error that escaped run(): still a budget error
            msg = tripped.decode("utf-8", "replace")
            kind = "memory" if msg.startswith("memory") else "timeout" if msg.startswith("time") else "budget"
            raise PluginCallError(kind, msg) from None
        raise PluginCallError("error", self.error_text(error)) from None

    def _outcome(self, result: tuple):
        """An entry point's ``true, ...`` as its results; ``false, kind, message`` raised."""
        if result[0] is True:
            return result[1:]
        kind = result[1].decode() if isinstance(result[1], bytes) else str(result[1])
        raise PluginCallError(kind, self.error_text(result[2]))


_libc_trim = None
_trimmed_at = 0.0
TRIM_INTERVAL_S = 1.0


def release_memory():
    """Give freed heap back to the system (glibc keeps what a closed VM freed in its arenas, one per
    thread, so the server's RSS stayed at its peak). At most once a second: malloc_trim walks the heap."""
    global _libc_trim, _trimmed_at
    now = time.monotonic()
    if now - _trimmed_at < TRIM_INTERVAL_S:
        return
    _trimmed_at = now
    if _libc_trim is None:
        try:
            import ctypes

            _libc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to do
            _libc_trim = False
    if _libc_trim:
        _libc_trim(0)


def runtime_lock(runtime):
    """lupa's lock of a LuaRuntime, which the bridge's entry holds for each call as lupa's own calls do
    (it is not an attribute, but the runtime hands it to the cycle collector)."""
    return next(o for o in gc.get_referents(runtime) if type(o).__name__ == "FastRLock")


def _lua_error_text(text) -> str:
    if text is None:
        return "error in the plugin runtime"
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text).split("\nstack traceback:")[0]
