"""Revision retention ([content] in modula.toml): which of an entry's revisions are kept.

Every revision younger than ``revisions_all_days``; then the last of each UTC day up to
``revisions_daily_days``; then the last of each month (none with ``revisions_monthly = false``). An
entry's newest revision is always kept. Applied to the entry saved, in the save's transaction (one
indexed query when there is nothing to thin), and to every entry by ``ContentService.prune_revisions``,
which the site runs in the background when it starts (entries nobody saves age too).
"""
from __future__ import annotations

import datetime as _dt

from .settings import ContentSettings


def stamp(moment: _dt.datetime) -> str:
    """The storage's timestamp format (utc_now's), so that cut-offs compare with created_at as text."""
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def cutoffs(settings: ContentSettings, now: _dt.datetime | None = None) -> tuple[str, str]:
    """(keep everything from, keep dailies from) as timestamps."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return (stamp(now - _dt.timedelta(days=settings.revisions_all_days)),
            stamp(now - _dt.timedelta(days=settings.revisions_daily_days)))


def to_prune(old: list[tuple[int, str]], daily_from: str, monthly: bool, keep_last: bool) -> list[int]:
    """The rowids to delete among one entry's revisions older than the keep-everything cut-off, given
    as (rowid, created_at) oldest first. keep_last: the last of them is the entry's newest revision."""
    kept: dict[str, int] = {}  # bucket -> the last rowid seen in it
    doomed = []
    for rowid, created in old:
        if created >= daily_from:
            bucket = created[:10]  # the day
        elif monthly:
            bucket = created[:7]  # the month
        else:
            doomed.append(rowid)
            continue
        if bucket in kept:
            doomed.append(kept[bucket])
        kept[bucket] = rowid
    if keep_last and old and doomed and doomed[-1] == old[-1][0]:
        doomed.pop()
    return doomed
