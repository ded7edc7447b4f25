"""Content hooks end to end: real Lua plugins in a real site, through the one ContentService."""
from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest_content import MARK, add_plugin, approve_all, fired, hook_runs, make_site, rows, table_count  # noqa: F401
from modula_desktop.core.errors import HookAbort, ValidationError
from modula_desktop.core.plugins.runtime.dispatch import HookDispatcher, strip_location
from modula_desktop.core.plugins.runtime.vm import EVENTS

REPO = Path(__file__).resolve().parents[1]

RECORDER = "\n".join(
    f'hooks.on("{e}", "content", function(d) print("{MARK}" .. d._event) end)' for e in EVENTS)


def settle(service):
    assert service.content.wait_for_hooks(10)


def delta(service, plugin, before):
    """Events fired since `before` entries were seen, as a Counter."""
    settle(service)
    return Counter(fired(service, plugin)[before:])


# ---- which events fire ----------------------------------------------------------------------------
def test_each_event_fires_exactly_once_per_operation(make_site):
    service = make_site({"rec": RECORDER})
    c = service.content

    def op(fn, *expected):
        n = len(fired(service, "rec"))
        fn()
        assert delta(service, "rec", n) == Counter(expected)

    e = c.create({"title": "t"})
    assert delta(service, "rec", 0) == Counter(["before_create", "after_create"])
    op(lambda: c.update(e["id"], {"body": "b"}), "before_update", "after_update")
    op(lambda: c.publish(e["id"]), "before_publish", "after_publish")
    op(lambda: c.publish(e["id"]))  # already published: nothing happens, nothing fires
    op(lambda: c.update(e["id"], {"body": "c"}), "before_update", "after_update")
    op(lambda: c.unpublish(e["id"]), "before_unpublish", "after_unpublish")
    op(lambda: c.unpublish(e["id"]))
    op(lambda: c.restore(e["id"], 1), "before_update", "after_update")
    op(lambda: c.delete(e["id"]), "before_delete", "after_delete")


def test_status_changes_outside_publish_fire_the_publish_events_too(make_site):
    service = make_site({"rec": RECORDER})
    c = service.content

    def op(fn, *expected):
        n = len(fired(service, "rec"))
        result = fn()
        assert delta(service, "rec", n) == Counter(expected)
        return result

    e = op(lambda: c.create({"title": "t", "status": "published"}),
           "before_create", "before_publish", "after_create", "after_publish")
    op(lambda: c.update(e["id"], {"status": "draft"}),
       "before_update", "before_unpublish", "after_update", "after_unpublish")
    op(lambda: c.update(e["id"], {"status": "published", "title": "u"}),
       "before_update", "before_publish", "after_update", "after_publish")
    # the before-hooks run in operation order: the primary event first
    assert fired(service, "rec")[-4:-2] == ["before_update", "before_publish"]


def test_hooks_get_the_entry_fields_with_table_and_event(make_site):
    service = make_site({"seer": """
        local keys = {"id", "type", "title", "slug", "body", "status", "created_at", "updated_at"}
        hooks.on("before_update", "*", function(d)
          local parts = {d._table, d._event, tostring(d.published_at), json.encode(d.fields)}
          for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. tostring(d[k]) end
          print("fired:" .. table.concat(parts, "|"))
        end)
    """})
    e = service.content.create({"title": "T", "body": "B", "type": "post", "fields": {"n": 1}})
    e2 = service.content.update(e["id"], {"title": "T2"})
    line = fired(service, "seer")[0].split("|")
    assert line[:4] == ["content", "before_update", "nil", '{"n":1}']
    for k in ("id", "type", "title", "slug", "body", "status", "created_at", "updated_at"):
        assert f"{k}={e2[k]}" in line


def test_content_data_is_an_alias_of_content(make_site):
    service = make_site({"alias": """
        hooks.on("before_create", "content_data", function(d) return {title = d.title .. " (" .. d._table .. ")"} end)
    """}, approve=False)
    assert [(h["event"], h["table"]) for h in service.plugins.info("alias")["hooks"]] == [("before_create", "content")]
    service.approvals.approve_hook("alias", "before_create", "content")
    # data._table is the name the hook was registered with, as in ModulaCMS
    assert service.content.create({"title": "x"})["title"] == "x (content_data)"


# ---- approvals and order --------------------------------------------------------------------------
def test_unapproved_hooks_never_run(make_site):
    service = make_site({"filt": """
        hooks.on("before_create", "content", function(d) return {title = d.title .. "A"} end)
        hooks.on("before_create", "*", function(d) return {title = d.title .. "B"} end)
        hooks.on("after_create", "content", function(d) print("fired:after") end)
    """}, approve=False)
    c = service.content
    assert c.create({"title": "x"})["title"] == "x"
    service.approvals.approve_hook("filt", "before_create", "*")
    assert c.create({"title": "x"})["title"] == "xB"
    service.approvals.approve_hook("filt", "before_create", "content")
    assert c.create({"title": "x"})["title"] == "xAB"
    service.approvals.revoke_hook("filt", "before_create", "*")
    assert c.create({"title": "x"})["title"] == "xA"
    settle(service)
    assert fired(service, "filt") == []


def test_order_is_priority_then_table_specific_then_registration(make_site):
    tag = 'function(d) return {title = d.title .. ",%s"} end'
    service = make_site({
        "alpha": f"""
            hooks.on("before_create", "*", {tag % "a-star"})
            hooks.on("before_create", "content", {tag % "a-content"})
            hooks.on("before_create", "content", {tag % "a-late"}, {{priority = 900}})
            hooks.on("before_create", "content", {tag % "a-early"}, {{priority = 5}})
        """,
        "beta": f"""
            hooks.on("before_create", "*", {tag % "b-star-early"}, {{priority = 1}})
            hooks.on("before_create", "content", {tag % "b-content"})
            hooks.on("before_create", "*", {tag % "b-star"})
        """,
    })
    title = service.content.create({"title": "x"})["title"]
    assert title.split(",") == ["x", "b-star-early", "a-early", "a-content", "b-content", "a-star", "b-star",
                                "a-late"]


# ---- aborts -------------------------------------------------------------------------------------
GUARD = """
    local function guard(d)
      if d.title == "no" then error("titles may not be 'no'") end
    end
    for _, e in ipairs({"before_create", "before_update", "before_delete", "before_publish", "before_unpublish"}) do
      hooks.on(e, "content", guard)
    end
"""


def test_abort_shows_the_message_and_writes_nothing(make_site):
    service = make_site({"guard": GUARD})
    c = service.content
    with pytest.raises(HookAbort) as err:
        c.create({"title": "no"})
    assert str(err.value) == "titles may not be 'no'"
    assert (err.value.plugin, err.value.event) == ("guard", "before_create")
    assert rows(service) == (0, 0)
    # the plugin's log keeps where it came from
    assert any("init.lua:" in e["message"] and "titles may not" in e["message"]
               for e in service.logbook.entries("guard"))
    assert hook_runs(service, "guard", "before_create", "abort") == 1

    e = c.create({"title": "yes"})
    with pytest.raises(HookAbort):
        c.update(e["id"], {"title": "no"})
    assert c.get(e["id"]) == e and rows(service) == (1, 1)

    # an entry whose stored title is "no" (hooks bypassed) cannot be published, unpublished or deleted
    n = c.create({"title": "no"}, run_hooks=False)
    before = rows(service)
    for fn in (c.publish, c.delete):
        with pytest.raises(HookAbort):
            fn(n["id"])
    assert c.get(n["id"]) == n and rows(service) == before
    p = c.update(n["id"], {"status": "published"}, run_hooks=False)
    with pytest.raises(HookAbort):
        c.unpublish(n["id"])
    assert c.get(n["id"]) == p


def test_a_later_hook_abort_undoes_earlier_filters(make_site):
    service = make_site({
        "afilter": 'hooks.on("before_create", "content", function(d) return {title = "no"} end, {priority = 1})',
        "guard": GUARD,
    })
    with pytest.raises(HookAbort, match="may not be 'no'"):
        service.content.create({"title": "fine"})
    assert rows(service) == (0, 0)


def test_abort_message_without_location_and_odd_errors(make_site):
    service = make_site({"odd": """
        hooks.on("before_create", "content", function(d)
          if d.title == "zero" then error("plain", 0) end
          if d.title == "table" then error({code = 1}) end
          if d.title == "bug" then local x = nil; return x.y end
        end)
    """})
    c = service.content
    with pytest.raises(HookAbort) as err:
        c.create({"title": "zero"})
    assert str(err.value) == "plain"
    with pytest.raises(HookAbort) as err:
        c.create({"title": "table"})
    assert "table value" in str(err.value)
    with pytest.raises(HookAbort) as err:
        c.create({"title": "bug"})
    assert str(err.value).startswith("attempt to index")
    assert rows(service) == (0, 0)


def test_strip_location():
    assert strip_location("init.lua:12: no") == "no"
    assert strip_location("lib/util.lua:3: init.lua:4: nested") == "nested"
    assert strip_location('[string "x"]:1: s') == "s"
    assert strip_location("a: b") == "a: b"


# ---- filters ------------------------------------------------------------------------------------
def test_filter_changes_are_applied_and_kept_in_the_revision(make_site):
    service = make_site({"filt": """
        hooks.on("before_create", "content", function(d)
          local f = {}
          for k, v in pairs(d.fields) do f[k] = v end
          f.words = 2
          return {title = string.upper(d.title), body = d.body .. "!", fields = f, type = "post",
                  id = "hijack", created_at = "1999", color = "red"}
        end)
    """})
    e = service.content.create({"title": "hello there", "body": "b", "fields": {"keep": True}})
    assert (e["title"], e["body"], e["type"], e["fields"]) == ("HELLO THERE", "b!", "post", {"keep": True, "words": 2})
    assert e["id"] != "hijack" and e["created_at"] != "1999"
    assert e["slug"] == "hello-there", "a generated slug follows the filtered title"
    assert service.content.get(e["id"]) == e
    rev = service.content.revisions(e["id"])[0]
    assert (rev["title"], rev["fields"]) == ("HELLO THERE", {"keep": True, "words": 2})
    assert any("unknown field 'color'" in x["message"] for x in service.logbook.entries("filt"))


def test_filters_are_validated_again(make_site):
    service = make_site({"bad": """
        hooks.on("before_create", "content", function(d)
          if d.title == "slug" then return {slug = "Not A Slug"} end
          if d.title == "status" then return {status = "live"} end
          if d.title == "fields" then return {fields = "x"} end
        end)
    """})
    for title in ("slug", "status", "fields"):
        with pytest.raises(HookAbort) as err:
            service.content.create({"title": title})
        assert "made the entry invalid" in str(err.value) and err.value.plugin == "bad"
    assert rows(service) == (0, 0)
    assert hook_runs(service, "bad", "before_create", "error") == 3


def test_a_filter_can_publish_and_publish_hooks_cannot_change_status(make_site):
    service = make_site({
        "auto": """
            hooks.on("before_create", "content", function(d)
              if d.title == "ship" then return {status = "published"} end
            end)
            hooks.on("before_publish", "content", function(d) return {status = "draft", body = "checked"} end)
            hooks.on("after_publish", "content", function(d) print("fired:" .. d.status) end)
        """,
    })
    e = service.content.create({"title": "ship"})
    assert (e["status"], e["body"]) == ("published", "checked") and e["published_at"]
    settle(service)
    assert fired(service, "auto") == ["published"]
    assert any("may not change 'status'" in x["message"] for x in service.logbook.entries("auto"))


def test_a_hook_may_return_the_whole_data_table(make_site):
    service = make_site({"whole": """
        hooks.on("before_publish", "*", function(d) d.body = d.body .. " (checked)"; return d end)
    """})
    e = service.content.create({"title": "t", "body": "b"})
    p = service.content.publish(e["id"])
    assert (p["body"], p["status"], p["id"]) == ("b (checked)", "published", e["id"])
    assert not [x for x in service.logbook.entries("whole") if x["level"] == "warn"]


def test_delete_hooks_cannot_filter(make_site):
    service = make_site({"f": 'hooks.on("before_delete", "content", function(d) return {title = "kept"} end)'})
    e = service.content.create({"title": "t"})
    assert service.content.delete(e["id"])["title"] == "t"
    assert service.content.get_trashed(e["id"])["title"] == "t"  # moved to the Trash unchanged


# ---- db inside hooks ----------------------------------------------------------------------------
NOTES = """
    function on_init()
      db.define_table("seen", {columns = {{name = "title", type = "text"}}})
    end
    hooks.on("before_create", "content", function(d) db.insert("seen", {title = d.title}) end)
    hooks.on("before_update", "content", function(d)
      db.insert("seen", {title = d.title})
      return {fields = {seen = db.count("seen", {})}}
    end)
"""


def test_before_hook_db_writes_commit_or_roll_back_with_the_change(make_site):
    service = make_site({"notes": NOTES, "guard": GUARD})
    c = service.content
    e = c.create({"title": "yes"})
    assert table_count(service, "plugin_notes__seen") == 1
    with pytest.raises(HookAbort):
        c.create({"title": "no"})  # notes wrote, then guard aborted: both undone
    assert table_count(service, "plugin_notes__seen") == 1
    with pytest.raises(HookAbort):
        c.update(e["id"], {"title": "no"})
    assert table_count(service, "plugin_notes__seen") == 1
    u = c.update(e["id"], {"title": "again"})
    assert u["fields"] == {"seen": 2}, "the hook reads its own write inside the transaction"
    assert table_count(service, "plugin_notes__seen") == 2


def test_a_validation_error_after_hooks_rolls_back_their_writes(make_site):
    service = make_site({"notes": NOTES})
    c = service.content
    c.create({"title": "a", "slug": "taken"})
    with pytest.raises(ValidationError):
        c.create({"title": "b", "slug": "taken"})  # refused before the hooks ran
    e = c.create({"title": "c"})
    with pytest.raises(ValidationError):
        c.update(e["id"], {"slug": "taken"})
    assert table_count(service, "plugin_notes__seen") == 2


def test_db_operation_budget_aborts_the_change(make_site):
    service = make_site({"greedy": """
        function on_init() db.define_table("t", {columns = {{name = "n", type = "integer"}}}) end
        hooks.on("before_create", "content", function(d)
          for i = 1, 101 do db.insert("t", {n = i}) end
        end)
    """})
    with pytest.raises(HookAbort) as err:
        service.content.create({"title": "x"})
    assert "operation budget exceeded (100 db operations per hook invocation)" in str(err.value)
    assert "greedy" in str(err.value)
    assert rows(service) == (0, 0) and table_count(service, "plugin_greedy__t") == 0
    assert service.metrics.sample("modula_plugin_budget_exhaustions_total", plugin="greedy", kind="ops") == 1


# ---- after-hooks --------------------------------------------------------------------------------
def test_after_hooks_run_off_the_callers_thread_with_db_access(make_site):
    service = make_site({"trail": """
        function on_init() db.define_table("audit", {columns = {{name = "event", type = "text"}}}) end
        hooks.on("before_create", "content", function(d) print("fired:before") end)
        hooks.on("after_create", "content", function(d)
          db.insert("audit", {event = d._event})
          print("fired:after")
        end)
    """})
    threads = {}
    service.logbook.add_listener(
        lambda entry: threads.setdefault(entry["message"], threading.current_thread().name))
    service.content.create({"title": "x"})
    settle(service)
    assert threads["fired:before"] == threading.current_thread().name
    assert threads["fired:after"].startswith("modula-after-hook")
    assert table_count(service, "plugin_trail__audit") == 1


def test_after_hook_errors_are_logged_and_the_save_stands(make_site):
    service = make_site({"boom": """
        hooks.on("after_create", "content", function(d) error("boom") end)
        hooks.on("after_create", "content", function(d) print("fired:next") end, {priority = 200})
    """})
    e = service.content.create({"title": "x"})
    settle(service)
    assert service.content.get(e["id"]) == e
    errors = [x for x in service.logbook.entries("boom") if x["level"] == "error"]
    assert errors and "boom" in errors[0]["message"] and "after_create" in errors[0]["message"]
    assert hook_runs(service, "boom", "after_create", "error") == 1
    assert fired(service, "boom") == ["next"], "one failing after-hook does not stop the others"


def test_after_hooks_run_at_most_workers_at_once(make_site):
    service = make_site({"slow": """
        hooks.on("after_create", "content", function(d)
          local t = os.clock() + 0.2
          while os.clock() < t do end
        end)
    """}, settings={"after_hook_workers": 2, "max_vms": 4})
    started = time.monotonic()
    for i in range(4):
        service.content.create({"title": str(i)})
    assert time.monotonic() - started < 0.4, "saves do not wait for their after-hooks (0.8 s in all)"
    settle(service)
    assert hook_runs(service, "slow", "after_create", "ok") == 4
    pool = service.content.hooks._executor
    assert pool is not None and pool._max_workers == 2


def test_close_waits_briefly_for_pending_after_hooks(make_site):
    service = make_site({"late": """
        hooks.on("after_create", "content", function(d)
          local t = os.clock() + 0.2
          while os.clock() < t do end
          print("fired:done")
        end)
    """})
    service.content.create({"title": "x"})
    service.content.close()
    assert fired(service, "late") == ["done"]
    # after close, saves still work; their after-hooks are not run any more
    service.content.create({"title": "y"})
    assert fired(service, "late") == ["done"]


# ---- budgets ------------------------------------------------------------------------------------
LOOP_SETTINGS = {"hook_timeout_ms": 200, "hook_event_timeout_ms": 300, "max_instructions": 10**12}


def test_a_before_hook_timeout_aborts_the_change(make_site):
    service = make_site({"spin": 'hooks.on("before_create", "content", function(d) while true do end end)'},
                        settings=LOOP_SETTINGS)
    started = time.monotonic()
    with pytest.raises(HookAbort) as err:
        service.content.create({"title": "x"})
    assert time.monotonic() - started < 1.0
    assert "time budget exceeded" in str(err.value) and "spin" in str(err.value)
    assert rows(service) == (0, 0)
    assert hook_runs(service, "spin", "before_create", "timeout") == 1
    # the plugin is still usable: the broken VM was replaced
    service.approvals.revoke_hook("spin", "before_create", "content")
    service.content.create({"title": "x"})


def test_the_whole_before_chain_shares_one_time_budget(make_site):
    service = make_site({
        "first": """
            hooks.on("before_create", "content", function(d)
              local t = os.clock() + 0.2
              while os.clock() < t do end
            end, {priority = 1})
        """,
        "second": 'hooks.on("before_create", "content", function(d) while true do end end, {priority = 2})',
    }, settings={"hook_timeout_ms": 1000, "hook_event_timeout_ms": 300, "max_instructions": 10**12})
    started = time.monotonic()
    with pytest.raises(HookAbort) as err:
        service.content.create({"title": "x"})
    elapsed = time.monotonic() - started
    # 0.2 s + 1 s without a chain budget; about 0.3 s with it (the second hook gets what is left; on a
    # loaded machine the first may already overrun the chain's 0.3 s and be the one stopped)
    assert elapsed < 0.8, f"the chain ran {elapsed:.2f} s"
    assert err.value.plugin in ("first", "second") and "time budget exceeded" in str(err.value)
    assert rows(service) == (0, 0)


def test_an_after_hook_timeout_is_logged(make_site):
    service = make_site({"spin": 'hooks.on("after_create", "content", function(d) while true do end end)'},
                        settings={"after_hook_timeout_ms": 100, "max_instructions": 10**12})
    e = service.content.create({"title": "x"})
    settle(service)
    assert service.content.get(e["id"]) == e
    assert hook_runs(service, "spin", "after_create", "timeout") == 1


# ---- breaker ------------------------------------------------------------------------------------
def test_the_hook_breaker_trips_on_the_tenth_consecutive_abort(make_site):
    service = make_site({"picky": """
        hooks.on("before_create", "content", function(d)
          if d.title == "bad" then error("refused") end
        end)
    """})
    c = service.content

    def refuse(n):
        for _ in range(n):
            with pytest.raises(HookAbort, match="refused"):
                c.create({"title": "bad"})

    key = ("before_create", "content")
    breaker = service.plugins.get("picky").hook_breaker
    refuse(9)
    c.create({"title": "good"})  # a success resets the count
    refuse(9)
    assert not breaker.is_disabled(key)
    refuse(1)  # the tenth in a row
    assert breaker.is_disabled(key)
    assert service.metrics.sample("modula_plugin_circuit_breaker_trips_total", plugin="picky", scope="hook") == 1
    assert any("disabled" in e["message"] for e in service.logbook.entries("picky") if e["level"] == "error")
    assert service.plugins.info("picky")["hooks"][0]["disabled"] is True
    assert c.create({"title": "bad"})["title"] == "bad", "a disabled hook no longer runs"
    service.plugins.reload("picky")
    refuse(1)


# ---- approvals and versions ---------------------------------------------------------------------
def test_a_version_bump_revokes_hook_approvals(make_site, tmp_path):
    body = 'hooks.on("before_create", "content", function(d) return {title = d.title .. "!"} end)'
    service = make_site({"bump": body})
    assert service.content.create({"title": "a"})["title"] == "a!"
    add_plugin(tmp_path, "bump", body, version="2.0.0")
    assert service.plugins.reload("bump")
    assert service.plugins.info("bump")["version"] == "2.0.0"
    assert service.content.create({"title": "b"})["title"] == "b"
    approve_all(service, "bump")
    assert service.content.create({"title": "c"})["title"] == "c!"


def test_run_hooks_false_skips_every_hook(make_site):
    service = make_site({"rec": RECORDER, "guard": GUARD})
    e = service.content.create({"title": "no"}, run_hooks=False)
    service.content.publish(e["id"], run_hooks=False)
    service.content.delete(e["id"], run_hooks=False)
    settle(service)
    assert fired(service, "rec") == []


# ---- the bundled example ------------------------------------------------------------------------
def test_the_bundled_hooks_plugin(make_site, tmp_path):
    shutil.copytree(REPO / "plugins" / "hooks_plugin", tmp_path / "plugins" / "hooks_plugin")
    service = make_site()
    c = service.content
    e = c.create({"title": "", "body": "word " * 450, "fields": {"mood": "calm"}})
    assert e["fields"] == {"mood": "calm", "reading_time": 3}
    with pytest.raises(HookAbort) as err:
        c.publish(e["id"])
    assert str(err.value) == "An entry needs a title before it can be published."
    with pytest.raises(HookAbort):
        c.update(e["id"], {"status": "published"})
    c.update(e["id"], {"title": "Now titled", "body": "short"})
    assert c.get(e["id"])["fields"]["reading_time"] == 1
    c.publish(e["id"])
    settle(service)
    audit = service.db.execute_sql("SELECT event FROM plugin_hooks_plugin__audit WHERE content_id = ?",
                                   (e["id"],)).fetchall()
    assert Counter(r[0] for r in audit) == Counter(["after_create", "after_update", "after_publish"])


def test_concurrent_saves_with_hooks(make_site, tmp_path):
    shutil.copytree(REPO / "plugins" / "hooks_plugin", tmp_path / "plugins" / "hooks_plugin")
    service = make_site()
    errors = []

    def work(i):
        try:
            for j in range(10):
                e = service.content.create({"title": f"t{i}-{j}", "body": "a b c"})
                service.content.publish(e["id"])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    settle(service)
    assert service.content.count(status="published") == 40
    assert table_count(service, "plugin_hooks_plugin__audit") == 80


# ---- trace switch -------------------------------------------------------------------------------
def test_trace_switch_logs_every_hook_call(make_site, monkeypatch, capsys):
    monkeypatch.setenv("MODULA_TRACE_HOOKS", "1")
    body = 'hooks.on("before_create", "*", function(d) return {body = "x"} end, {priority = 7})'
    service = make_site({"traced": body})
    assert service.content.hooks.trace
    e = service.content.create({"title": "x"})
    err = capsys.readouterr().err
    assert f"traced before_create:* priority=7 entry={e['id']} -> ok" in err and "changes=['body']" in err
    monkeypatch.delenv("MODULA_TRACE_HOOKS")
    assert not HookDispatcher(None).trace
