"""Issue 17, content at 100k entries: the list's indexes (query plans, not timings) and full-text search.

Real SQLite files through the real content service; the admin API on a real waitress server.
"""
from __future__ import annotations

import itertools
import random
import string

import pytest

from _server_fixtures import running_site
from conftest_content import make_site  # noqa: F401 - a fixture
from modula_desktop.core.content import SORT_KEYS, STATUSES, TYPES
from modula_desktop.core.errors import ValidationError
from modula_desktop.core.search import fts_query

pytestmark = pytest.mark.timeout(120)

FILTERS = [(t, s) for t in (None, *TYPES) for s in (None, *STATUSES)]
WORDS = "garden river coffee winter recipe travel python sqlite mountain lantern".split()


@pytest.fixture
def service(make_site):
    return make_site()


@pytest.fixture
def content(service):
    return service.content


def fill(content, n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    made = []
    for i in range(n):
        title = " ".join(rng.choice(WORDS) for _ in range(2)) + f" {rng.choice(['Ab', 'ab', 'B', 'c'])}{i}"
        made.append(content.create({"title": title, "type": rng.choice(TYPES), "status": rng.choice(STATUSES),
                                    "body": " ".join(rng.choice(WORDS) for _ in range(20))}, run_hooks=False))
    return made


# ---- indexes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("analyzed", [False, True], ids=["fresh", "after ANALYZE"])
def test_every_list_query_walks_an_index_without_a_sort_step(content, service, analyzed):
    fill(content, 60)
    if analyzed:  # statistics must not talk SQLite into a sort either
        service.db.execute_sql("ANALYZE")
    checked = 0
    for (type_, status), sort, descending, after in itertools.product(FILTERS, SORT_KEYS, (True, False),
                                                                      (False, True)):
        plan = content.query_plan(type=type_, status=status, sort=sort, descending=descending, after=after)
        assert "INDEX content_live_" in plan and "TEMP B-TREE" not in plan and "SCAN content" not in plan, (
            type_, status, sort, descending, after, plan)
        if after and sort in ("title", "updated_at"):  # a seek to the mark, not a walk from the group's start
            assert f"{sort}{'<' if descending else '>'}" in plan, (type_, status, sort, descending, plan)
        checked += 1
    assert checked == len(FILTERS) * len(SORT_KEYS) * 4


def test_count_and_the_trash_use_their_indexes(service):
    db = service.db
    for sql in ("SELECT COUNT(*) FROM content WHERE deleted_at IS NULL AND type = 'post'",
                "SELECT COUNT(*) FROM content WHERE deleted_at IS NULL AND status = 'draft'",
                "SELECT COUNT(*) FROM content WHERE deleted_at IS NULL"):
        plan = " ".join(r[-1] for r in db.execute_sql("EXPLAIN QUERY PLAN " + sql))
        assert "COVERING INDEX content_live_" in plan, plan  # no row read: the body would come with it
    plan = " ".join(r[-1] for r in db.execute_sql(
        "EXPLAIN QUERY PLAN SELECT id FROM content WHERE deleted_at IS NOT NULL ORDER BY deleted_at DESC, id DESC"))
    assert "content_trash" in plan and "TEMP B-TREE" not in plan, plan


def test_the_merged_list_is_in_exactly_the_order_asked_for_page_after_page(content):
    made = fill(content, 150)
    content.delete(made[3]["id"])
    live = [content.get(e["id"]) for e in made if e["id"] != made[3]["id"]]
    for (type_, status), sort in itertools.product(FILTERS, SORT_KEYS):
        for descending in (True, False):
            rank = (lambda e: (e["title"].lower(), e["id"])) if sort == "title" else (lambda e: (e[sort], e["id"]))
            want = [e["id"] for e in sorted(live, key=rank, reverse=descending)
                    if type_ in (None, e["type"]) and status in (None, e["status"])]
            got, after = [], None
            while True:
                page = content.list_sorted(type=type_, status=status, sort=sort, descending=descending,
                                           limit=17, after=after)
                if not page:
                    break
                got += [e["id"] for e in page]
                after = page[-1]
            assert got == want, (type_, status, sort, descending)
    newest = sorted(live, key=lambda e: (e["updated_at"], e["id"]), reverse=True)
    assert [e["id"] for e in content.list(limit=40, offset=20)] == [e["id"] for e in newest[20:60]]
    assert content.list(limit=1)[0] == newest[0], "list() gives whole entries (fields decoded)"
    assert content.count() == len(live) and content.count(type="post", status="draft") == sum(
        1 for e in live if (e["type"], e["status"]) == ("post", "draft"))


# ---- full-text search -------------------------------------------------------------------------------
def test_search_ranks_title_matches_first_and_marks_the_words_in_a_safe_snippet(content):
    body_only = content.create({"title": "Notes", "body": "We planted tomatoes by the lantern. " * 3})
    in_title = content.create({"title": "Lantern repairs", "body": "How to fix an old one."})
    content.create({"title": "Unrelated", "body": "Nothing to see."})
    hits = content.search("lantern")
    assert [h["id"] for h in hits] == [in_title["id"], body_only["id"]]
    assert set(hits[0]) == {"id", "type", "title", "slug", "status", "updated_at", "snippet", "rank"}
    assert hits[0]["rank"] < hits[1]["rank"], "bm25: lower is better"
    assert "<mark>lantern</mark>" in hits[1]["snippet"].lower()
    xss = content.create({"title": "Markup", "body": "zebras <script>alert(1)</script> & co"})
    [hit] = content.search("zebras")
    assert hit["id"] == xss["id"]
    assert "<script>" not in hit["snippet"] and "&lt;script&gt;" in hit["snippet"] and "&amp;" in hit["snippet"]


def test_search_words_phrases_exclusions_prefixes_and_accents(content):
    a = content.create({"title": "Crème brûlée", "body": "a custard with burnt sugar"})
    b = content.create({"title": "Sugar free", "body": "custard without sugar, burnt toast"})
    ids = lambda hits: sorted(h["id"] for h in hits)  # noqa: E731
    assert ids(content.search("creme")) == [a["id"]], "accents are folded"
    assert ids(content.search("custard sugar")) == sorted([a["id"], b["id"]])
    assert ids(content.search('"burnt sugar"')) == [a["id"]], "a phrase is the words together"
    assert ids(content.search("custard -toast")) == [a["id"]]
    assert ids(content.search('custard -"burnt sugar"')) == [b["id"]]
    assert ids(content.search("brûl")) == [a["id"]], "the words typed so far match as prefixes"
    assert ids(content.search("brulee OR toast")) == sorted([a["id"], b["id"]])
    assert content.search("-custard") == [], "exclusions alone find nothing (FTS5 cannot say 'all but')"
    assert ids(content.search("sugar", type="page", status="draft")) == sorted([a["id"], b["id"]])
    assert content.search("sugar", status="published") == []


def test_the_index_follows_every_change_trash_restore_and_purge(content, service):
    e = content.create({"title": "Kettle", "body": "boils water"})
    assert [h["id"] for h in content.search("water")] == [e["id"]]
    content.update(e["id"], {"body": "steams milk"})
    assert content.search("water") == [] and [h["id"] for h in content.search("milk")] == [e["id"]]
    content.update(e["id"], {"title": "Teapot"})
    assert content.search("kettle") == [] and content.count(search="teapot") == 1
    content.delete(e["id"])
    assert content.search("milk") == [] and content.list(search="milk") == [] and content.count(search="milk") == 0
    content.restore_from_trash(e["id"])
    assert [h["id"] for h in content.search("milk")] == [e["id"]]
    content.delete(e["id"])
    content.purge(e["id"])
    f = content.create({"title": "Other", "body": "milk again"})
    content.delete(f["id"])
    content.empty_trash()
    assert content.search("milk") == []
    # FTS5's own check of the index against the rows it should hold (only live entries are indexed)
    live = content.create({"title": "Live", "body": "still here"})
    service.db.execute_sql("INSERT INTO content_fts (content_fts, rank) VALUES ('integrity-check', 1)")
    assert [h["id"] for h in content.search("still")] == [live["id"]]


def test_the_list_search_filter_uses_the_index_and_snippets_come_per_entry(content):
    made = fill(content, 40)
    want = sorted((e for e in made if "lantern" in (e["title"] + " " + e["body"]).split()),
                  key=lambda e: (e["updated_at"], e["id"]), reverse=True)
    assert want
    page = content.list_sorted(search="lantern", limit=1000)
    assert [e["id"] for e in page] == [e["id"] for e in want]
    assert all("<mark>lantern</mark>" in content.snippet(e["id"], "lantern") for e in page)
    assert content.snippet(page[0]["id"], "***") == "" and content.snippet("nope", "lantern") == ""
    assert [e["id"] for e in content.list(search="lantern")] == [e["id"] for e in want]
    assert content.count(search="lantern") == len(want)
    assert "content_fts" in content.query_plan(search="lantern")
    first = content.list_sorted(search="lantern", sort="title", descending=False, limit=3)
    rest = content.list_sorted(search="lantern", sort="title", descending=False, limit=1000, after=first[-1])
    by_title = sorted(want, key=lambda e: (e["title"].lower(), e["id"]))
    assert [e["id"] for e in first + rest] == [e["id"] for e in by_title]


# ---- adversarial queries ----------------------------------------------------------------------------
NASTY = ['"', '""', '"""', "'", "''", '"unbalanced', 'un"balanced', "AND", "OR", "NOT", "NEAR", "a AND",
         "OR OR OR", "NOT x", "x NOT", "NEAR(a b, 2)", "NEAR(", "(", ")", "((a)", "a)", "*", "a*", "*a", "^a",
         "title:x", "body:x", "{title body}:x", "-", "--", "- -x", '-""', '-"', "+a", "a + b", ":", "a:b:c",
         "\x00", "a\x00b", "\\", "%", "_", "[a]", "{}", "'); DROP TABLE content; --", "x' OR '1'='1",
         "rank MATCH 'bm25(1)'", "content_fts", "🙂", "ﬁ", "Ⅻ", "\u0301", "a\u200bb", "中文搜索", "x" * 600,
         " ".join(["word"] * 200), "OR " * 50, '"' * 99, "a " * 40 + '"b']


@pytest.mark.parametrize("query", NASTY)
def test_no_search_text_raises_an_error(content, query):
    content.create({"title": "and or not near", "body": "title x body x word a b 中文搜索"})
    for call in (lambda: content.search(query), lambda: content.list(search=query),
                 lambda: content.count(search=query), lambda: content.list_sorted(search=query, sort="title")):
        call()  # must not raise


def test_random_text_never_raises_and_operators_are_only_words(content):
    content.create({"title": "secret plans", "body": "nothing"})
    other = content.create({"title": "cover", "body": "title: secret"})
    rng = random.Random(17)
    alphabet = string.printable + '"""***^^^:::((()))---' + "ÄéßŁ中🙂\u0301"
    for _ in range(400):
        query = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        content.search(query)
        content.count(search=query)
    # an FTS5 column filter would find only the first entry; as text it is the words "title secret"
    assert [h["id"] for h in content.search("title:secret")] == [other["id"]]
    assert content.search("') OR 1=1 --") == [], "no entry has the words 1"
    assert fts_query('x" OR "y') == '("x" AND " OR " AND "y")', "in quotes OR is the word"
    assert fts_query("NEAR(a b)") == '("NEAR(a"* AND "b)"*)'


def test_bad_arguments_are_one_clear_error(content):
    for kwargs in ({"limit": 0}, {"limit": 5000}, {"offset": -1}, {"type": "x"}, {"status": "x"}):
        with pytest.raises(ValidationError):
            content.search("x", **kwargs)


# ---- the admin API ----------------------------------------------------------------------------------
def test_api_search_answers_hits_with_total_and_next(tmp_path):
    with running_site(tmp_path, plugins=()) as r:
        for i in range(5):
            r.client.post("/api/v1/admin/content", json={"title": f"Heron {i}", "body": "a grey heron waits"})
        r.client.post("/api/v1/admin/content", json={"title": "Other", "body": "<b>heron</b>"})
        first = r.client.get("/api/v1/admin/content/search?q=heron&limit=4")
        assert first.status == 200
        data = first.json()
        assert data["total"] == 6 and len(data["items"]) == 4 and data["next"]
        assert data["items"][0]["title"].startswith("Heron") and "<mark>" in data["items"][0]["snippet"]
        rest = r.client.get(data["next"]).json()
        assert len(rest["items"]) == 2 and rest["next"] is None
        assert rest["items"][-1]["title"] == "Other" and "&lt;b&gt;" in rest["items"][-1]["snippet"]
        for q in ('%22', '%22%22%22', 'NEAR(', 'a%20OR', '%27%29%3B'):
            answer = r.client.get(f"/api/v1/admin/content/search?q={q}")
            assert answer.status == 200, (q, answer.body)
        assert r.client.get("/api/v1/admin/content/search").json() == {"items": [], "total": 0, "next": None}
        assert r.client.get("/api/v1/admin/content/search?q=x&limit=0").status == 400
        assert r.client.get("/api/v1/admin/content/search?q=x&limit=zz").status == 400
        assert r.client.get("/api/v1/admin/content/search?q=x", token=False).status == 401
        listed = r.client.get("/api/v1/admin/content?search=heron&limit=10").json()
        assert listed["total"] == 6 and len(listed["items"]) == 6
