"""define_table changes SQLite cannot apply to an existing table (issue 17): a NOT NULL or default change to an
existing column, and a NOT NULL column without a default, are errors in the plugin's state (plugin info, the
CLI's `plugin info`, the window's plugin health), never only a log line. The data stays as it was."""
from __future__ import annotations

import pytest

from helpers import write_plugin
from modula_desktop.cli.online import format_info
from modula_desktop.core.plugins.lifecycle.manager import FAILED, RUNNING
from modula_desktop.core.service import SiteService
from modula_desktop.core.settings import Settings
from modula_desktop.core.site import Site
from modula_desktop.gui import plugin_health

PERMS = 'permissions = {"db"}'


def table(columns: str) -> str:
    return f'function on_init()\n  db.define_table("notes", {{columns = {{{columns}}}}})\nend\n'


@pytest.fixture
def site(tmp_path):
    write_plugin(tmp_path, "notes", table('{name = "text", type = "text"}, {name = "n", type = "integer"}'),
                 info_extra=PERMS)
    service = SiteService(Site(tmp_path), Settings()).start(hot_reload=False)
    yield tmp_path, service
    service.close()


def reload_with(service, root, columns):
    write_plugin(root, "notes", table(columns), version="1.0.1", info_extra=PERMS)
    try:
        service.plugins.reload("notes")
    except Exception:  # a failed reload is reported in the plugin's state, which is what is checked
        pass
    return service.plugins.info("notes")


def test_a_clean_load_has_no_table_errors(site):
    _, service = site
    info = service.plugins.info("notes")
    assert info["state"] == RUNNING and info["schema_errors"] == []
    assert "table definition errors" not in format_info(info)


@pytest.mark.parametrize("columns, said", [
    ('{name = "text", type = "text"}, {name = "n", type = "integer", not_null = true, default = 0}',
     "column 'n' of 'notes' is declared NOT NULL, default 0 but the existing table has it nullable, no default"),
    ('{name = "text", type = "text", default = "x"}, {name = "n", type = "integer"}',
     "column 'text' of 'notes' is declared nullable, default 'x' but the existing table has it nullable, "
     "no default"),
])
def test_a_constraint_change_on_an_existing_column_is_an_error_in_the_state(site, columns, said):
    root, service = site
    service.db.execute_sql('INSERT INTO "plugin_notes__notes" (id, text, created_at, updated_at) '
                                 "VALUES ('a', 'kept', '', '')")
    info = reload_with(service, root, columns)
    assert info["state"] == RUNNING  # the plugin runs on; SQLite keeps the old constraint
    assert len(info["schema_errors"]) == 1 and said in info["schema_errors"][0], info["schema_errors"]
    assert "the old constraint stays" in info["schema_errors"][0]
    cli = format_info(info)
    assert "table definition errors (1):" in cli and said in cli
    h = plugin_health.health(info)
    assert h.level == plugin_health.WARNING and "1 table definition error" in h.short
    assert "do not match its define_table" in h.text
    # nothing was changed in the database
    assert service.db.execute_sql('SELECT text, n FROM "plugin_notes__notes"').fetchall() == [("kept", None)]
    # declaring the table as it is clears the error
    info = reload_with(service, root, '{name = "text", type = "text"}, {name = "n", type = "integer"}')
    assert info["state"] == RUNNING and info["schema_errors"] == []


def test_a_not_null_column_without_a_default_fails_the_load_and_says_how_to_fix_it(site):
    root, service = site
    info = reload_with(service, root, '{name = "text", type = "text"}, {name = "n", type = "integer"}, '
                                      '{name = "must", type = "text", not_null = true}')
    assert any("cannot add NOT NULL column 'must'" in p and "give it a default" in p
               for p in info["schema_errors"]), info
    assert "table definition errors (1):" in format_info(info)
    # the previous version keeps serving (blue-green), and the table is unchanged
    cols = [r[1] for r in service.db.execute_sql('PRAGMA table_info("plugin_notes__notes")').fetchall()]
    assert "must" not in cols


def test_a_first_load_that_fails_on_the_table_shows_it(tmp_path):
    write_plugin(tmp_path, "notes", table('{name = "text", type = "text"}'), info_extra=PERMS)
    service = SiteService(Site(tmp_path), Settings()).start(hot_reload=False)
    service.close()
    write_plugin(tmp_path, "notes", table('{name = "text", type = "text"}, {name = "must", type = "text", '
                                          'not_null = true}'), info_extra=PERMS)
    service = SiteService(Site(tmp_path), Settings()).start(hot_reload=False)
    try:
        info = service.plugins.info("notes")
        assert info["state"] == FAILED
        assert "cannot add NOT NULL column 'must'" in info["error"]
        assert info["schema_errors"] and "give it a default" in info["schema_errors"][0]
        assert plugin_health.health(info).level == plugin_health.FAILED
    finally:
        service.close()
