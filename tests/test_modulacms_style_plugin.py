"""Issue 15's acceptance: a ModulaCMS-style plugin (tests/plugins/member_digest: no permissions field,
core_access, request.register, read hooks, tests written against ModulaCMS's harness) runs here unchanged,
both served (a real waitress server, a real loopback quote service, the author's approvals through the admin
API) and under `modula plugin test`."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _outbound_servers import LoopbackServer
from _server_fixtures import running_site

PLUGIN = Path(__file__).resolve().parent / "plugins" / "member_digest"
NAME = "member_digest"


def test_it_passes_its_own_tests_under_modula_plugin_test(tmp_path):
    copy = tmp_path / NAME
    shutil.copytree(PLUGIN, copy)
    done = subprocess.run([sys.executable, "-m", "modula_desktop", "plugin", "test", str(copy)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "6 passed, 0 failed"


@pytest.fixture
def served(tmp_path):
    shutil.copytree(PLUGIN, tmp_path / "plugins" / NAME)
    with LoopbackServer(label="the loopback quotes") as quotes:
        with running_site(tmp_path, {"allow_localhost": True, "rate_limit": 0}, plugins=()) as site:
            yield site, quotes


def approve_everything_but_the_domain(site):
    c = site.client
    info = c.get(f"/api/v1/admin/plugins/{NAME}").json()
    assert info["state"] == "running", info.get("error")
    c.approve_all(NAME)
    for h in info["hooks"]:
        site.service.approvals.approve_hook(NAME, h["event"], h["table"])
    r = c.post("/api/v1/admin/plugins/core/approve",
               json={"core": [{"plugin": NAME, "access": a} for a in ("read", "write")]})
    assert r.status == 200, r.body
    return info


def test_it_runs_served_with_the_authors_approvals(served):
    site, quotes = served
    c = site.client
    info = approve_everything_but_the_domain(site)
    assert [d["domain"] for d in info["domains"]] == ["127.0.0.1"] and not info["domains"][0]["approved"]
    content = site.service.content
    content.create({"title": "Spring notes", "type": "post", "status": "published"})
    content.create({"title": "Unfinished", "type": "post"})

    # core.query with ModulaCMS's column names
    digest = c.get(f"/api/v1/plugins/{NAME}/digest").json()
    assert [p["title"] for p in digest["posts"]] == ["Spring notes"] and digest["count"] == 1

    # request: nothing is sent to a domain the author has not approved
    assert c.post(f"/api/v1/plugins/{NAME}/config",
                  json={"quote_url": f"http://127.0.0.1:{quotes.port}"}).status == 200
    r = c.post(f"/api/v1/plugins/{NAME}/digest")
    assert r.status == 502 and "not approved" in r.json()["error"], r.body
    assert quotes.requests == []
    r = c.post("/api/v1/admin/plugins/domains/approve", json={"domains": [{"plugin": NAME, "domain": "127.0.0.1"}]})
    assert r.status == 200, r.body

    # approved: the quote service is called and core.insert writes a post through the content service
    r = c.post(f"/api/v1/plugins/{NAME}/digest")
    assert r.status == 201, r.body
    made = content.get(r.json()["id"])
    assert made["title"] == "Digest" and "- Spring notes" in made["body"]
    assert "Quote from the loopback quotes" in made["body"]
    assert [q["path"] for q in quotes.requests] == ["/ok"]
    revisions = content.revisions(made["id"])
    assert revisions and revisions[-1]["source"] == f"plugin:{NAME}"

    # read hooks on admin-API reads: a members-only entry needs the header, the internal note is dropped
    gated = content.create({"title": "Roadmap", "slug": "members-roadmap", "status": "published"}, run_hooks=False)
    r = c.get(f"/api/v1/admin/content/{gated['id']}")
    assert r.status == 402 and r.json() == {"error": "members only", "slug": "members-roadmap"}
    r = c.get(f"/api/v1/admin/content/{gated['id']}", headers={"X-Member": "yes"})
    assert r.status == 200 and r.json()["title"] == "Roadmap" and r.headers["x-member"] == "true"
    noted = content.create({"title": "Noted", "fields": {"internal_note": "ask legal"}}, run_hooks=False)
    r = c.get(f"/api/v1/admin/content/{noted['id']}")
    assert r.status == 200 and "fields" not in r.json() and r.headers["x-member"] == "false"
    assert c.get(f"/api/v1/admin/content/{noted['id']}", headers={"X-Member": "yes"}).json()["fields"] == {
        "internal_note": "ask legal"}

    # the plugin's own answers pass as it gave them; a route it does not have answers ModulaCMS's envelope
    r = c.post(f"/api/v1/plugins/{NAME}/config", body=b"not json", headers={"Content-Type": "text/plain"})
    assert r.status == 400 and r.json() == {"error": "quote_url required"}
    r = c.get(f"/api/v1/plugins/{NAME}/nope")
    assert r.status == 404 and r.json()["error"]["code"] == "ROUTE_NOT_FOUND" and r.json()["error"]["request_id"]
