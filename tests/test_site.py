import os
import stat

from modula_desktop.core.site import Site
from modula_desktop.core.storage import SCHEMA_VERSION, current_version, open_database


def test_new_site_layout_and_private_token(tmp_path):
    site = Site(tmp_path / "s")
    assert site.ensure() is True
    for p in (site.plugins_dir, site.state_dir, site.logs_dir):
        assert p.is_dir()
    assert site.settings_path.is_file()
    mode = stat.S_IMODE(os.stat(site.token_path).st_mode)
    assert mode == 0o600
    token = site.token()
    assert len(token) >= 32
    site.ensure()
    assert site.token() == token  # idempotent: the token is not rotated


def test_tokens_differ_between_sites(tmp_path):
    a, b = Site(tmp_path / "a"), Site(tmp_path / "b")
    a.ensure(), b.ensure()
    assert a.token() != b.token()


def test_server_info_roundtrip_and_stale_pid(tmp_path):
    site = Site(tmp_path)
    site.ensure()
    site.write_server_info("127.0.0.1", 1234)
    info = site.read_server_info()
    assert info == {"host": "127.0.0.1", "port": 1234, "pid": os.getpid()}
    site.server_info_path.write_text('{"host": "127.0.0.1", "port": 1, "pid": 999999999}')
    assert site.read_server_info() is None  # a dead instance's file is ignored
    site.write_server_info("127.0.0.1", 1234)
    site.clear_server_info()
    assert not site.server_info_path.exists()


def test_storage_wal_foreign_keys_and_migrations(tmp_path):
    db = open_database(tmp_path / "site.db")
    assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] > 0
    assert current_version(db) == SCHEMA_VERSION
    db.close()
    db = open_database(tmp_path / "site.db")  # reopening runs nothing twice
    rows = db.execute_sql("SELECT COUNT(*) FROM schema_version").fetchone()[0]
    assert rows == SCHEMA_VERSION
    db.close()


def test_default_site_is_seeded(tmp_path, monkeypatch):
    from modula_desktop.core import site as site_mod
    from modula_desktop.core.service import SiteService

    monkeypatch.setattr(site_mod, "default_site_dir", lambda: tmp_path / "default")
    svc = SiteService.open(None)
    try:
        assert (tmp_path / "default" / "plugins" / "hello_world" / "init.lua").is_file()
        if svc.content is not None:
            assert svc.content.get_by_slug("welcome")["title"] == "Welcome"
    finally:
        svc.close()


def test_unusable_site_db_is_one_clear_error(tmp_path):
    import pytest

    from modula_desktop.core.errors import SiteError

    (tmp_path / "site.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(SiteError, match="cannot be opened as a site database"):
        open_database(tmp_path / "site.db")
