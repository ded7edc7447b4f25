"""Fixtures and helpers for the content and hook tests: a real site in tmp_path with real Lua plugins.

Import what you need (``from conftest_content import make_site, ...``); pytest does not load this file
on its own.
"""
from __future__ import annotations

import pytest

from helpers import write_plugin
from modula_desktop.core.service import SiteService
from modula_desktop.core.settings import Settings
from modula_desktop.core.site import Site
from modula_desktop.core.storage import Content, Revision

PERMISSIONS = 'permissions = {"db", "hooks", "hooks:before"}'
MARK = "fired:"  # prefix of the lines recording plugins print


def add_plugin(root, name: str, body: str, version: str = "1.0.0"):
    return write_plugin(root, name, body, version=version, info_extra=PERMISSIONS)


def approve_all(service: SiteService, *names: str):
    """Approve every hook the named plugins (default: all) registered."""
    for name in names or service.plugins.names():
        for h in service.plugins.info(name)["hooks"]:
            service.approvals.approve_hook(name, h["event"], h["table"])


def fired(service: SiteService, plugin: str) -> list[str]:
    """What the plugin printed with the MARK prefix, in order, without the prefix."""
    return [e["message"][len(MARK):] for e in service.logbook.entries(plugin, 500) if e["message"].startswith(MARK)]


def rows(service: SiteService) -> tuple[int, int]:
    return Content.select().count(), Revision.select().count()


def table_count(service: SiteService, sql_table: str) -> int:
    return service.db.execute_sql(f"SELECT COUNT(*) FROM {sql_table}").fetchone()[0]


def hook_runs(service: SiteService, plugin: str, event: str, outcome: str) -> float:
    return service.metrics.sample("modula_plugin_hook_runs_total", plugin=plugin, event=event, outcome=outcome)


@pytest.fixture
def make_site(tmp_path):
    """make_site({name: lua_body}, settings={...plugins keys}, approve=True) -> a started SiteService."""
    made = []

    def make(plugins: dict | None = None, settings: dict | None = None, approve: bool = True) -> SiteService:
        for name, body in (plugins or {}).items():
            add_plugin(tmp_path, name, body)
        s = Settings().replace(plugins=dict({"hot_reload": False}, **(settings or {})))
        service = SiteService(Site(tmp_path), s).start(hot_reload=False)
        made.append(service)
        for name in service.plugins.names():
            assert service.plugins.get(name).state == "running", service.plugins.get(name).error
        if approve:
            approve_all(service)
        return service

    yield make
    for service in made:
        service.close()
