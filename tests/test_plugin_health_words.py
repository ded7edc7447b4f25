"""Plugin health in plain words, from the manager's info() of real plugins (gui/plugin_health.py)."""
from __future__ import annotations

import datetime as dt

import pytest

from helpers import write_plugin
from modula_desktop.gui.plugin_health import FAILED, OK, PENDING, STOPPED, WARNING, health, plain_error
from test_gui_support import approve_all_hooks, start_service

pytestmark = pytest.mark.timeout(60)

REFUSER = """
hooks.on("before_update", "content", function(entry) error("the spell checker is offline") end)
"""


def test_log_lines_in_plain_words():
    assert plain_error("after_create hook failed (timeout): time budget exceeded (no VM free within 5 s)") == \
        "its after-create hook ran out of time: time budget exceeded (no VM free within 5 s)"
    assert plain_error("before_update hook failed (error): init.lua:3: init.lua:3: boom") == \
        "its before-update hook failed: boom"
    assert plain_error("GET /items: init.lua:9: nil value") == "its route GET /items failed: nil value"
    assert plain_error("failed to load: something") == "failed to load: something"


def test_states_in_plain_words(tmp_path):
    write_plugin(tmp_path, "refuser", REFUSER, info_extra='permissions = {"hooks", "hooks:before"}')
    write_plugin(tmp_path, "broken", "this is not lua(")
    write_plugin(tmp_path, "asker", 'http.handle("GET", "/a", function(r) return {json = {}} end)')
    svc = start_service(tmp_path, {"hook_max_consecutive_aborts": 2})
    try:
        h = health(svc.plugins.info("broken", log_limit=500))
        assert h.level == FAILED and h.short == "failed to load" and h.text.startswith("Failed to load: ")
        h = health(svc.plugins.info("asker", log_limit=500))
        assert h.level == PENDING and h.pending == ["route GET /a"] and "Waiting for your approval" in h.text
        svc.approvals.approve_route("asker", "GET", "/a")
        h = health(svc.plugins.info("asker", log_limit=500))
        assert (h.level, h.short, h.text) == (OK, "running", "Running.")
        svc.plugins.disable("asker")
        assert health(svc.plugins.info("asker")).level == STOPPED

        approve_all_hooks(svc, "refuser")
        e = svc.content.create({"type": "page", "title": "x"})
        for _ in range(2):
            with pytest.raises(Exception):
                svc.content.update(e["id"], {"body": "y"})
        info = svc.plugins.info("refuser", log_limit=500)
        h = health(info)
        assert h.level == WARNING and h.short == "hook turned off"
        assert h.text.startswith("Hook before_update turned off after failing again and again — last error: ")
        assert "circuit" not in h.text and "breaker" not in h.text
        # errors older than the window do not mark a plugin
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
        info["hook_breaker"] = {"disabled": []}
        assert health(info, window_s=600, now=later).level == OK
    finally:
        svc.close()
