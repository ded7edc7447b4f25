"""ContentService: CRUD, slugs, validation, revisions and restore, listeners (no plugins involved)."""
from __future__ import annotations

import threading

import pytest
from ulid import ULID

from conftest_content import make_site, rows  # noqa: F401 - make_site is a fixture
from modula_desktop.core.content import FIELDS, slugify
from modula_desktop.core.errors import NotFound, ValidationError
from modula_desktop.core.service import SiteService
from modula_desktop.core.site import Site
from modula_desktop.core.storage import Content, Revision


@pytest.fixture
def service(make_site):
    return make_site()


@pytest.fixture
def content(service):
    return service.content


# ---- create and read ---------------------------------------------------------------------------
def test_create_returns_the_entry_with_exactly_its_fields(content):
    e = content.create({"title": "Hello", "body": "# Hi", "type": "post", "fields": {"mood": "calm"}})
    assert tuple(e) == FIELDS
    assert e["type"] == "post" and e["title"] == "Hello" and e["body"] == "# Hi"
    assert e["status"] == "draft" and e["published_at"] is None
    assert e["fields"] == {"mood": "calm"}
    assert e["created_at"] == e["updated_at"] and e["created_at"].endswith("Z")
    ULID.from_str(e["id"])
    assert content.get(e["id"]) == e
    assert content.get_by_slug("hello") == e


def test_create_defaults(content):
    e = content.create({})
    assert (e["type"], e["title"], e["slug"], e["body"], e["status"], e["fields"]) == \
        ("page", "", "untitled", "", "draft", {})


def test_read_only_fields_in_input_are_ignored(content):
    e = content.create({"title": "T", "id": "mine", "created_at": "2000-01-01T00:00:00.000Z",
                        "published_at": "2000-01-01T00:00:00.000Z"})
    assert e["id"] != "mine" and e["created_at"] != "2000-01-01T00:00:00.000Z" and e["published_at"] is None
    again = content.update(e["id"], dict(e, title="T2", id="other"))
    assert again["id"] == e["id"] and again["title"] == "T2"


def test_create_published_sets_published_at(content):
    e = content.create({"title": "Now", "status": "published"})
    assert e["status"] == "published" and e["published_at"]


def test_missing_entries_raise_not_found(content):
    for call in (lambda: content.get("nope"), lambda: content.get_by_slug("nope"),
                 lambda: content.update("nope", {"title": "x"}), lambda: content.delete("nope"),
                 lambda: content.publish("nope"), lambda: content.unpublish("nope"),
                 lambda: content.revisions("nope"), lambda: content.restore("nope", 1)):
        with pytest.raises(NotFound):
            call()


# ---- slugs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("title, slug", [
    ("Hello, World!", "hello-world"),
    ("Crème brûlée: 2 ways", "creme-brulee-2-ways"),
    ("  --Already--slugged--  ", "already-slugged"),
    ("日本語", "untitled"),
    ("", "untitled"),
])
def test_slugify(title, slug):
    assert slugify(title) == slug


def test_long_titles_give_bounded_slugs():
    slug = slugify("word " * 100)
    assert len(slug) <= 80 and not slug.endswith("-")


def test_generated_slugs_are_unique(content):
    slugs = [content.create({"title": "Same Title"})["slug"] for _ in range(3)]
    assert slugs == ["same-title", "same-title-2", "same-title-3"]
    content.delete(content.get_by_slug("same-title-2")["id"])
    assert content.create({"title": "Same Title"})["slug"] == "same-title-2"
    # a different title that merely starts like the others is not a clash
    assert content.create({"title": "Same"})["slug"] == "same"


def test_an_explicit_slug_is_kept_and_validated(content):
    e = content.create({"title": "Anything", "slug": "custom-slug"})
    assert e["slug"] == "custom-slug"
    with pytest.raises(ValidationError, match="already used"):
        content.create({"title": "Other", "slug": "custom-slug"})
    for bad in ("My Page", "a--b", "-a", "a-", "ü", "a/b", "x" * 101):
        with pytest.raises(ValidationError, match="slug"):
            content.create({"title": "x", "slug": bad})


def test_slug_on_update(content):
    e = content.create({"title": "First"})
    e = content.update(e["id"], {"title": "Renamed"})
    assert e["slug"] == "first", "a new title keeps the URL"
    e = content.update(e["id"], {"slug": ""})
    assert e["slug"] == "renamed", "an emptied slug is made from the title again"
    other = content.create({"title": "Other"})
    with pytest.raises(ValidationError, match="already used"):
        content.update(other["id"], {"slug": "renamed"})
    # an entry keeps its own slug when saved again
    assert content.update(e["id"], {"slug": "renamed", "body": "b"})["slug"] == "renamed"


def test_concurrent_creates_get_distinct_slugs(content):
    errors, made = [], []

    def work():
        try:
            for _ in range(5):
                made.append(content.create({"title": "Race"})["slug"])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(made)) == 20


# ---- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("data, words", [
    ({"type": "article"}, "type"),
    ({"status": "live"}, "status"),
    ({"title": "x" * 501}, "title"),
    ({"title": 12}, "title must be text"),
    ({"body": ["no"]}, "body must be text"),
    ({"fields": [1, 2]}, "custom fields"),
    ({"fields": "x"}, "custom fields"),
    ({"fields": {"x": {1, 2}}}, "JSON"),
    ({"author": "me"}, "Unknown field 'author'"),
])
def test_validation_errors_are_one_clear_sentence(content, data, words):
    with pytest.raises(ValidationError) as err:
        content.create(dict({"title": "ok"}, **data) if "title" not in data else data)
    assert words in str(err.value)
    assert "\n" not in str(err.value)
    assert Content.select().count() == 0


def test_input_must_be_an_object(content):
    with pytest.raises(ValidationError):
        content.create(["title"])


def test_a_failed_update_changes_nothing(content):
    e = content.create({"title": "Keep"})
    with pytest.raises(ValidationError):
        content.update(e["id"], {"title": "New", "status": "bogus"})
    assert content.get(e["id"]) == e
    assert len(content.revisions(e["id"])) == 1


# ---- list ---------------------------------------------------------------------------------------
def test_list_filters_search_and_pages(content):
    a = content.create({"title": "Alpha page", "type": "page", "body": "100% cotton"})
    b = content.create({"title": "Beta post", "type": "post", "status": "published"})
    c = content.create({"title": "Gamma post", "type": "post", "body": "mentions ALPHA"})
    ids = lambda items: [i["id"] for i in items]  # noqa: E731
    assert ids(content.list()) == [c["id"], b["id"], a["id"]], "most recently updated first"
    assert ids(content.list(type="post")) == [c["id"], b["id"]]
    assert ids(content.list(status="published")) == [b["id"]]
    assert ids(content.list(type="post", status="draft")) == [c["id"]]
    assert ids(content.list(search="alpha")) == [c["id"], a["id"]]
    assert ids(content.list(search="100%")) == [a["id"]], "% is punctuation, not a wildcard"
    assert ids(content.list(search="%")) == [] and ids(content.list(search="_")) == [], "no word: no match"
    assert ids(content.list(search="cott")) == [a["id"]], "the words typed so far match as prefixes"
    assert ids(content.list(limit=1, offset=1)) == [b["id"]]
    assert content.count() == 3 and content.count(type="post") == 2 and content.count(search="gamma") == 1
    content.update(a["id"], {"body": "edited"})
    assert ids(content.list())[0] == a["id"]


@pytest.mark.parametrize("kwargs", [{"type": "x"}, {"status": "x"}, {"limit": 0}, {"limit": 100000},
                                    {"offset": -1}, {"limit": "5"}])
def test_list_rejects_bad_arguments(content, kwargs):
    with pytest.raises(ValidationError):
        content.list(**kwargs)


# ---- publish ------------------------------------------------------------------------------------
def test_publish_and_unpublish(content):
    e = content.create({"title": "P"})
    p = content.publish(e["id"])
    assert p["status"] == "published" and p["published_at"] == p["updated_at"] >= e["updated_at"]
    assert content.publish(e["id"]) == p, "publishing a published entry changes nothing"
    assert len(content.revisions(e["id"])) == 2
    u = content.unpublish(e["id"])
    assert u["status"] == "draft" and u["published_at"] is None
    assert content.unpublish(e["id"]) == u
    assert len(content.revisions(e["id"])) == 3


def test_saving_a_published_entry_keeps_its_publication_date(content):
    p = content.create({"title": "P", "status": "published"})
    assert content.update(p["id"], {"body": "more"})["published_at"] == p["published_at"]


# ---- revisions ----------------------------------------------------------------------------------
def test_every_save_keeps_a_revision(content):
    e = content.create({"title": "v1", "body": "one"})
    content.update(e["id"], {"title": "v2", "body": "two", "fields": {"k": 1}})
    content.publish(e["id"])
    revs = content.revisions(e["id"])
    assert [r["number"] for r in revs] == [3, 2, 1]
    assert (revs[2]["title"], revs[2]["body"], revs[2]["status"]) == ("v1", "one", "draft")
    assert (revs[1]["title"], revs[1]["fields"]) == ("v2", {"k": 1})
    assert revs[0]["status"] == "published"
    assert set(revs[0]) == {"number", "type", "title", "slug", "body", "status", "fields", "created_at",
                            "source", "changed_by"}


def test_restore_brings_back_a_revision_as_a_new_one(content):
    e = content.create({"title": "v1", "body": "one", "slug": "first"})
    content.update(e["id"], {"title": "v2", "body": "two", "slug": "second", "type": "post"})
    content.publish(e["id"])
    r = content.restore(e["id"], 1)
    assert (r["title"], r["body"], r["slug"], r["type"]) == ("v1", "one", "first", "page")
    assert r["status"] == "published", "a restore keeps the current status"
    assert [x["number"] for x in content.revisions(e["id"])] == [4, 3, 2, 1]
    with pytest.raises(NotFound):
        content.restore(e["id"], 99)


def test_restore_refuses_a_slug_taken_since(content):
    e = content.create({"title": "x", "slug": "taken"})
    content.update(e["id"], {"slug": "moved"})
    content.create({"title": "y", "slug": "taken"})
    with pytest.raises(ValidationError, match="already used"):
        content.restore(e["id"], 1)


def test_delete_removes_the_entry_and_its_revisions(service, content):
    # delete moves to the Trash (tests/test_trash_revisions.py); emptying it removes the rows
    e = content.create({"title": "gone"})
    content.update(e["id"], {"body": "x"})
    keep = content.create({"title": "kept"})
    deleted = content.delete(e["id"])
    assert deleted["id"] == e["id"] and deleted["body"] == "x"
    with pytest.raises(NotFound):
        content.get(e["id"])
    assert content.purge(e["id"])["id"] == e["id"]
    assert rows(service) == (1, 1)
    assert Revision.select().where(Revision.content == keep["id"]).count() == 1


# ---- listeners ----------------------------------------------------------------------------------
def test_listeners_hear_committed_changes(service, content):
    heard = []

    def listener(event, entry):
        # another thread (its own connection) sees the change: the listener runs after commit
        seen = []
        t = threading.Thread(target=lambda: seen.append(Content.get_or_none(
            (Content.id == entry["id"]) & Content.deleted_at.is_null())))  # a deleted entry is in the Trash
        t.start()
        t.join()
        heard.append((event, entry["title"], seen[0] is not None))

    content.add_listener(listener)
    content.add_listener(lambda *_: 1 / 0)  # a broken listener changes nothing
    e = content.create({"title": "a"})
    content.update(e["id"], {"title": "b"})
    content.publish(e["id"])
    content.unpublish(e["id"])
    with pytest.raises(ValidationError):
        content.update(e["id"], {"type": "bad"})
    content.delete(e["id"])
    assert heard == [("create", "a", True), ("update", "b", True), ("publish", "b", True),
                     ("unpublish", "b", True), ("delete", "b", False)]
    content.remove_listener(listener)
    content.create({"title": "c"})
    assert len(heard) == 5


def test_a_new_default_site_gets_a_published_welcome_page(tmp_path):
    service = SiteService(Site(tmp_path / "site"), seed=True)
    try:
        page = service.content.get_by_slug("welcome")
        assert page["status"] == "published" and page["published_at"] and page["title"] == "Welcome"
        assert len(service.content.revisions(page["id"])) == 1
    finally:
        service.close()
