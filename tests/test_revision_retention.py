"""Issue 17: revision retention ([content] in modula.toml), compressed revision bodies, and the migration
that brings a site made before them along. Real SQLite files, the real content service."""
from __future__ import annotations

import datetime as dt
import sqlite3
import zlib

import pytest

from modula_desktop.core.build.media import unused_media
from modula_desktop.core.errors import SettingsError
from modula_desktop.core.retention import stamp
from modula_desktop.core.service import SiteService
from modula_desktop.core.settings import Settings, load_settings
from modula_desktop.core.site import Site
from modula_desktop.core.storage import SCHEMA_VERSION

pytestmark = pytest.mark.timeout(120)

NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.timezone.utc)
BODY = "A paragraph that repeats, as bodies do. " * 40


def open_site(path, **content) -> SiteService:
    settings = Settings().replace(plugins={"hot_reload": False}, content=content)
    return SiteService(Site(path), settings)


def age(service, entry_id: str, times: list[dt.datetime]):
    """Give the entry's revisions (oldest first) these creation times, as if saved then."""
    rows = service.db.execute_sql("SELECT rowid FROM content_revision WHERE content_id = ? ORDER BY number",
                                  (entry_id,)).fetchall()
    assert len(rows) == len(times)
    for (rowid,), moment in zip(rows, times):
        service.db.execute_sql("UPDATE content_revision SET created_at = ? WHERE rowid = ?", (stamp(moment), rowid))


def numbers(service, entry_id: str) -> list[int]:
    return [r[0] for r in service.db.execute_sql(
        "SELECT number FROM content_revision WHERE content_id = ? ORDER BY number", (entry_id,))]


def saved_many(service, times: list[dt.datetime]) -> dict:
    e = service.content.create({"title": "Kept", "body": BODY})
    for i in range(len(times) - 1):
        service.content.update(e["id"], {"body": f"{BODY} {i}"})
    age(service, e["id"], times)
    return e


# the history of one entry: 3 saves a day on days 1-3 ago, 2 a day 10-12 days ago, 3 in each of two months
# about 200 days ago, and one a year ago; oldest first
HISTORY = sorted(
    [NOW - dt.timedelta(days=d, hours=h) for d in (1, 2, 3) for h in (1, 2, 3)]
    + [NOW - dt.timedelta(days=d, hours=h) for d in (10, 11, 12) for h in (1, 5)]
    + [dt.datetime(2025, 11, d, tzinfo=dt.timezone.utc) for d in (3, 14, 25)]
    + [dt.datetime(2025, 12, d, tzinfo=dt.timezone.utc) for d in (2, 20, 30)]
    + [dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)])


def expected_kept(history, monthly=True):
    """The default policy worked out by hand for HISTORY: numbers kept."""
    kept = []
    for n, moment in enumerate(history, start=1):
        days = (NOW - moment).days
        later = history[n:]
        if days < 7:
            kept.append(n)
        elif days < 90:
            if not any(m.date() == moment.date() for m in later):
                kept.append(n)
        elif monthly and not any((m.year, m.month) == (moment.year, moment.month) and (NOW - m).days >= 90
                                 for m in later):
            kept.append(n)
    return kept


def test_the_maintenance_pass_keeps_all_recent_then_daily_then_monthly(tmp_path):
    svc = open_site(tmp_path)
    try:
        e = saved_many(svc, HISTORY)
        quiet = svc.content.create({"title": "Saved once", "body": BODY})
        age(svc, quiet["id"], [dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)])
        want = expected_kept(HISTORY)
        # 9 recent + 3 days of 2 -> 3 + one of each of the 3 months
        assert len(want) == 9 + 3 + 3
        removed = svc.content.prune_revisions(now=NOW)
        assert removed == len(HISTORY) - len(want)
        assert numbers(svc, e["id"]) == want
        assert numbers(svc, quiet["id"]) == [1], "an entry's newest revision is always kept"
        assert svc.content.prune_revisions(now=NOW) == 0, "a second pass finds nothing"
        restored = svc.content.restore(e["id"], want[0])
        assert restored["body"] == BODY, "what is kept restores"
    finally:
        svc.close()


def test_without_monthly_only_the_newest_old_revision_survives(tmp_path):
    svc = open_site(tmp_path, revisions_monthly=False)
    try:
        e = saved_many(svc, HISTORY[:7])  # the old ones only: a year ago and the two months
        svc.content.prune_revisions(now=NOW)
        assert numbers(svc, e["id"]) == [7], "nothing older than 90 days but the entry's newest"
    finally:
        svc.close()


def test_a_save_thins_its_own_entry_at_once(tmp_path):
    svc = open_site(tmp_path)
    try:
        e = svc.content.create({"title": "Busy", "body": BODY})
        for i in range(5):
            svc.content.update(e["id"], {"body": f"{BODY} {i}"})
        day = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=20)
        age(svc, e["id"], [day + dt.timedelta(minutes=m) for m in range(6)])  # six saves of one day, 20 days ago
        svc.content.update(e["id"], {"body": "today"})
        assert numbers(svc, e["id"]) == [6, 7], "the last of that day, and today's"
    finally:
        svc.close()


def test_retention_off_keeps_every_revision_and_bad_settings_are_one_error(tmp_path):
    svc = open_site(tmp_path, revision_retention=False)
    try:
        e = saved_many(svc, HISTORY)
        assert svc.content.prune_revisions(now=NOW) == 0
        svc.content.update(e["id"], {"body": "again"})
        assert len(numbers(svc, e["id"])) == len(HISTORY) + 1
    finally:
        svc.close()
    (tmp_path / "modula.toml").write_text("[content]\nrevisions_all_days = 30\nrevisions_daily_days = 10\n")
    with pytest.raises(SettingsError, match=r"\[content\] revisions_daily_days"):
        load_settings(tmp_path / "modula.toml")
    (tmp_path / "modula.toml").write_text("[content]\nrevisions_keep = 3\n")
    with pytest.raises(SettingsError, match=r"unknown key \[content\] revisions_keep"):
        load_settings(tmp_path / "modula.toml")
    (tmp_path / "modula.toml").write_text("[content]\nrevisions_all_days = 2\nrevisions_monthly = false\n")
    s = load_settings(tmp_path / "modula.toml").content
    assert (s.revisions_all_days, s.revisions_daily_days, s.revisions_monthly) == (2, 90, False)


def test_the_site_thins_old_revisions_when_it_starts(tmp_path):
    svc = open_site(tmp_path)
    e = saved_many(svc, [dt.datetime(2024, 3, d, tzinfo=dt.timezone.utc) for d in (1, 2, 3)])
    svc.close()
    svc = open_site(tmp_path).start(hot_reload=False)
    try:
        svc._retention.join(30)
        assert numbers(svc, e["id"]) == [3]
    finally:
        svc.close()


# ---- compressed bodies ------------------------------------------------------------------------------
def test_revision_bodies_are_stored_compressed_and_read_back_exactly(tmp_path):
    svc = open_site(tmp_path)
    try:
        text = BODY + "ünïcödé ✓ 中文\n" * 20
        e = svc.content.create({"title": "Packed", "body": text})
        svc.content.update(e["id"], {"body": "short"})
        kinds = svc.db.execute_sql("SELECT typeof(body), length(body) FROM content_revision WHERE content_id = ? "
                                   "ORDER BY number", (e["id"],)).fetchall()
        assert kinds[0][0] == "blob" and kinds[0][1] < len(text.encode()) / 4
        assert kinds[1] == ("text", 5), "a short body stays text"
        assert [r["body"] for r in svc.content.revisions(e["id"])] == ["short", text]
        assert svc.content.get(e["id"])["body"] == "short", "the entry itself is not compressed"
        assert svc.content.restore(e["id"], 1)["body"] == text
    finally:
        svc.close()


def test_media_named_only_by_a_compressed_revision_is_still_in_use(tmp_path):
    svc = open_site(tmp_path)
    try:
        media = tmp_path / "media"
        media.mkdir(exist_ok=True)
        (media / "cat-0123456789ab.png").write_bytes(b"png")
        e = svc.content.create({"title": "Cat", "body": BODY + "![cat](/media/cat-0123456789ab.png)"})
        svc.content.update(e["id"], {"body": "no picture now"})
        assert unused_media(tmp_path, svc.db) == []
    finally:
        svc.close()


# ---- a site made before these migrations ------------------------------------------------------------
def make_old_site(path):
    """A site.db as the version before issue 17 wrote it: its indexes, no search index, revision bodies as
    text, schema version 5. Made with today's code, then taken back."""
    svc = open_site(path, revision_retention=False)
    made = {
        "page": svc.content.create({"title": "Garden notes", "body": BODY + " tomatoes"}),
        "post": svc.content.create({"title": "Winter river", "type": "post", "status": "published", "body": "ice"}),
        "gone": svc.content.create({"title": "Binned lantern", "body": "lantern in the trash"}),
    }
    svc.content.update(made["page"]["id"], {"body": BODY + " courgettes"})
    svc.content.delete(made["gone"]["id"])
    bodies = {r[0]: r[1] for r in svc.db.execute_sql("SELECT rowid, body FROM content_revision")}
    svc.close()
    db = sqlite3.connect(path / "site.db")
    db.executescript("""
        DROP TRIGGER content_fts_insert; DROP TRIGGER content_fts_update; DROP TRIGGER content_fts_delete;
        DROP TABLE content_fts; DROP INDEX revision_content_created; DROP INDEX content_trash;
        DROP INDEX content_live_updated; DROP INDEX content_live_title; DROP INDEX content_live_kind;
        CREATE INDEX content_deleted_at ON content (deleted_at);
        CREATE INDEX revision_content_id ON content_revision (content_id);
        CREATE INDEX content_list_updated ON content (updated_at, id);
        CREATE INDEX content_list_title ON content (title COLLATE NOCASE, id);
        CREATE INDEX content_list_type ON content (type, id);
        CREATE INDEX content_list_status ON content (status, id);
        DELETE FROM schema_version WHERE version > 5;
    """)
    for rowid, body in bodies.items():
        text = zlib.decompress(body).decode() if isinstance(body, bytes) else body
        db.execute("UPDATE content_revision SET body = ? WHERE rowid = ?", (text, rowid))
    db.commit()
    assert db.execute("SELECT COUNT(*) FROM content_revision WHERE typeof(body) = 'blob'").fetchone()[0] == 0
    db.close()
    return made


def test_a_site_made_before_the_migration_comes_along(tmp_path):
    made = make_old_site(tmp_path)
    svc = open_site(tmp_path)
    try:
        db = svc.db
        assert db.execute_sql("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
        names = {r[0] for r in db.execute_sql("SELECT name FROM sqlite_master WHERE type IN ('index', 'table')")}
        assert {"content_fts", "content_live_updated", "content_trash", "revision_content_created"} <= names
        assert not any(n.startswith("content_list_") for n in names) and "content_deleted_at" not in names
        assert "revision_content_id" not in names, "the foreign key's index, redundant with (content_id, number)"
        # existing revisions compressed (the short ones stay text), and read as before
        kinds = dict(db.execute_sql("SELECT typeof(body), COUNT(*) FROM content_revision GROUP BY 1").fetchall())
        assert kinds["blob"] == 2 and kinds["text"] == 2
        revs = svc.content.revisions(made["page"]["id"])
        assert [r["body"] for r in revs] == [BODY + " courgettes", BODY + " tomatoes"]
        # existing entries are searchable; the one in the Trash is not, until it comes back
        assert [h["id"] for h in svc.content.search("tomatoes")] == []
        assert [h["id"] for h in svc.content.search("courgettes")] == [made["page"]["id"]]
        assert [h["id"] for h in svc.content.search("winter")] == [made["post"]["id"]]
        assert svc.content.search("lantern") == []
        svc.content.restore_from_trash(made["gone"]["id"])
        assert [h["id"] for h in svc.content.search("lantern")] == [made["gone"]["id"]]
        plan = svc.content.query_plan()
        assert "content_live_updated" in plan and "TEMP B-TREE" not in plan
        # new saves add compressed revisions beside the old text ones
        svc.content.update(made["post"]["id"], {"body": BODY})
        assert svc.content.revisions(made["post"]["id"])[0]["body"] == BODY
    finally:
        svc.close()


def test_a_mixed_file_reads_text_and_compressed_revisions_alike(tmp_path):
    svc = open_site(tmp_path)
    try:
        e = svc.content.create({"title": "Mixed", "body": BODY})
        svc.content.update(e["id"], {"body": BODY + "!"})
        # a row as an older version wrote it, beside today's
        svc.db.execute_sql("UPDATE content_revision SET body = ? WHERE content_id = ? AND number = 1", (BODY, e["id"]))
        assert [r["body"] for r in svc.content.revisions(e["id"])] == [BODY + "!", BODY]
    finally:
        svc.close()


def test_a_pass_that_finds_nothing_to_remove_never_takes_the_write_lock(tmp_path):
    svc = open_site(tmp_path)
    try:
        e = saved_many(svc, [dt.datetime(2024, m, 1, tzinfo=dt.timezone.utc) for m in (1, 2, 3)])  # one a month
        other = sqlite3.connect(tmp_path / "site.db", timeout=0.1)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock for as long as the pass runs
        try:
            assert svc.content.prune_revisions(now=NOW) == 0
        finally:
            other.rollback()
            other.close()
        assert numbers(svc, e["id"]) == [1, 2, 3]
    finally:
        svc.close()
