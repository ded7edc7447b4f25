"""A plugin's health in plain words, for the plugin list, the details and the main window's status bar.

"stopped after 5 errors in a row — last error: …" rather than "circuit breaker open"; errors of the
last minutes (an after-hook that found no VM free, a failing route) mark the plugin even while it runs;
what waits for the author's approval is named. No Qt here: it reads the manager's ``info()`` dict.
"""
from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field

from ..core.plugins.runtime.dispatch import strip_location

OK, PENDING, WARNING, FAILED, STOPPED = "ok", "pending", "warning", "failed", "stopped"
_HOOK_FAILED = re.compile(r"^(\w+) hook failed \((\w+)\): (.*)$", re.S)
_HOOK_ABORTED = re.compile(r"^(\w+) hook aborted the change: (.*)$", re.S)
_ROUTE_FAILED = re.compile(r"^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) (/\S*): (.*)$", re.S)
_LOADED = re.compile(r"^(re)?loaded version ")
_OUTCOME_WORDS = {"timeout": "ran out of time", "error": "failed"}


@dataclass
class Health:
    level: str  # ok | pending | warning | failed | stopped
    short: str  # a few words for the list's State column
    text: str  # one or two sentences for the details and the status bar's tooltip
    recent_errors: int = 0
    last_error: str = ""
    pending: list[str] = field(default_factory=list)  # "route GET /ping", "hook before_update"

    @property
    def marked(self) -> bool:
        """Worth the author's attention: failing, stopped by errors, or erring lately."""
        return self.level in (WARNING, FAILED)


def plain_error(message: str) -> str:
    """A log line of the hook runner, as an author would say it."""
    message = (message or "").strip()
    m = _HOOK_FAILED.match(message)
    if m:
        event, outcome, why = m.groups()
        return f"its {event.replace('_', '-')} hook {_OUTCOME_WORDS.get(outcome, 'failed')}: {strip_location(why)}"
    m = _HOOK_ABORTED.match(message)
    if m:
        event, why = m.groups()
        return f"its {event.replace('_', '-')} hook refused: {strip_location(why)}"
    m = _ROUTE_FAILED.match(message)
    if m:
        method, path, why = m.groups()
        return f"its route {method} {path} failed: {strip_location(why)}"
    return strip_location(message)


def _end(text: str) -> str:
    """text as a sentence: one full stop, not two."""
    text = text.rstrip()
    return text if text[-1:] in ".!?…" else text + "."


def _parse(stamp: str | None) -> _dt.datetime | None:
    try:
        return _dt.datetime.strptime(stamp or "", "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        return None


def recent_errors(info: dict, window_s: float, now: _dt.datetime | None = None) -> list[dict]:
    now = now or _dt.datetime.now(_dt.timezone.utc)
    out = []
    logs = info.get("logs") or []
    # a successful (re)load starts afresh: the errors before it were about the code it replaced
    fresh = max((i for i, e in enumerate(logs) if e.get("level") == "info"
                 and _LOADED.match(e.get("message") or "")), default=-1)
    logged = [e for e in logs[fresh + 1:] if e.get("level") == "error"]
    for e in logged if logs else info.get("last_errors") or []:
        t = _parse(e.get("time"))
        if t is not None and (now - t).total_seconds() <= window_s:
            out.append(e)
    return out


def _minutes(seconds: float) -> str:
    m = max(1, round(seconds / 60))
    return f"{m} minute{'s' if m != 1 else ''}"


def health(info: dict, window_s: float = 600.0, now: _dt.datetime | None = None) -> Health:
    state = info.get("state") or ""
    errors = [e for e in info.get("logs") or [] if e.get("level") == "error"] or info.get("last_errors") or []
    last = plain_error(errors[-1].get("message", "")) if errors else ""
    recent = recent_errors(info, window_s, now)
    pending = [f"route {r['method']} {r['path']}" for r in info.get("routes") or [] if not r.get("approved")]
    pending += [f"hook {h['event']}" for h in info.get("hooks") or [] if not h.get("approved")]
    pending += [f"domain {d['domain']}" for d in info.get("domains") or [] if not d.get("approved")]
    pending += [f"core:{c['access']}" for c in info.get("core") or [] if not c.get("approved")]
    pending += [f"{kind} {d['name']}" for kind, key in (("screen", "screens"), ("interface", "interfaces"))
                for d in info.get(key) or [] if not d.get("approved")]
    waiting = (f" Waiting for your approval: {', '.join(pending)}." if pending else "")
    breaker = info.get("breaker") or {}
    disabled = (info.get("hook_breaker") or {}).get("disabled") or []

    def make(level, short, text):
        return Health(level, short, text, len(recent), last, pending)

    if state == "failed":
        why = plain_error(info.get("error") or "") or last or "see the log"
        return make(FAILED, "failed to load", f"Failed to load: {why}")
    if state == "stopped":
        return make(STOPPED, "stopped", "Disabled: its routes and hooks do not run. Enable it to start it.")
    if state in ("loading", "discovered"):
        return make(OK, "starting", "Starting…")
    if breaker.get("state") in ("open", "half_open"):
        n = breaker.get("max_failures") or breaker.get("consecutive_failures") or 0
        retry = breaker.get("retry_in_s") or 0
        again = f" It tries again in {retry:.0f} s." if retry >= 1 else " It tries again with the next request."
        return make(FAILED, f"stopped after {n} errors in a row",
                    f"Stopped after {n} errors in a row — last error: {_end(last or 'see the log')}{again}{waiting}")
    if disabled:
        hooks = ", ".join(d.split(":")[0] for d in disabled)
        # the reason the hook kept failing, not the line that says it was turned off
        problems = [e for e in info.get("logs") or [] if _HOOK_FAILED.match(e.get("message") or "")
                    or _HOOK_ABORTED.match(e.get("message") or "")]
        last = plain_error(problems[-1]["message"]) if problems else last
        return make(WARNING, "hook turned off",
                    f"{'Hook' if len(disabled) == 1 else 'Hooks'} {hooks} turned off after failing again and "
                    f"again — last error: {_end(last or 'see the log')} Reload or enable the plugin to turn "
                    f"{'it' if len(disabled) == 1 else 'them'} on again.{waiting}")
    schema = info.get("schema_errors") or []
    if schema:
        n = len(schema)
        return make(WARNING, f"{n} table definition error{'s' if n != 1 else ''}",
                    f"Its tables do not match its define_table: {_end(plain_error(schema[0]))}"
                    f"{f' (and {n - 1} more)' if n > 1 else ''}{waiting}")
    if recent:
        n = len(recent)
        return make(WARNING, f"{n} recent error{'s' if n != 1 else ''}",
                    f"{n} error{'s' if n != 1 else ''} in the last {_minutes(window_s)} — last error: "
                    f"{_end(plain_error(recent[-1].get('message', '')))}{waiting}")
    if pending:
        n = len(pending)
        return make(PENDING, f"running, {n} to approve", waiting.strip())
    return make(OK, "running", "Running.")


def status_summary(service, log_limit: int = 500) -> tuple[str, str, bool]:
    """The main window's status bar: (text, tooltip, marked). Names the plugin in trouble and why."""
    window = getattr(getattr(getattr(service, "settings", None), "plugins", None), "recent_error_window_s", 600.0)
    states: dict[str, int] = {}
    troubled: list[tuple[str, Health]] = []
    for name in service.plugins.names():
        try:
            info = service.plugins.info(name, log_limit=log_limit)
        except Exception:  # noqa: BLE001 - removed meanwhile
            continue
        states[info["state"]] = states.get(info["state"], 0) + 1
        h = health(info, window)
        if h.marked:
            troubled.append((name, h))
    if not states:
        return "Plugins: none", "This site has no plugins yet.", False
    text = "Plugins: " + " · ".join(f"{n} {s}" for s, n in sorted(states.items()))
    if not troubled:
        return text, "", False
    name, h = troubled[0]
    more = f" (+{len(troubled) - 1} more)" if len(troubled) > 1 else ""
    text += f" — ⚠ {name}: {h.short}{more}"
    tip = "\n".join(f"{n}: {x.text}" for n, x in troubled)
    return text, tip, True
