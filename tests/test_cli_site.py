"""Which site a command works on: --site after the command, --site before it, the site folder the shell
is in, else the user's default site; and what `approve` says when there is nothing left to approve."""
from __future__ import annotations

import subprocess
import sys

import pytest

from _server_fixtures import make_site
from modula_desktop.cli.main import _resolve_site, build_parser, find_site_around
from test_cli_online import ENV, Served, modula


def resolved(*argv):
    args = build_parser().parse_args(list(map(str, argv)))
    _resolve_site(args)
    return args


def test_site_before_the_command(tmp_path):
    assert resolved("--site", tmp_path, "plugin", "list").site == tmp_path
    assert resolved("--site", tmp_path, "serve").site == tmp_path
    args = resolved("--site", tmp_path)  # `modula --site DIR` opens the window on DIR
    assert args.command is None and args.site == tmp_path
    assert resolved("--site", tmp_path / "a", "plugin", "list", "--site", tmp_path / "b").site == tmp_path / "b"


def test_the_site_folder_around_the_working_folder(tmp_path, monkeypatch):
    site = tmp_path / "mysite"
    make_site(site, plugins=()).ensure()
    (site / "plugins").mkdir(exist_ok=True)
    inner = site / "plugins"
    assert find_site_around(inner) == site.resolve()
    assert find_site_around(tmp_path) is None
    monkeypatch.chdir(inner)
    assert resolved("plugin", "info", "x").site == site.resolve()
    assert resolved("plugin", "validate", str(inner)).path == inner  # a plugin path, no site


def test_an_online_command_inside_a_site_folder_finds_that_site(tmp_path):
    site = tmp_path / "quiet"
    make_site(site, plugins=()).ensure()
    r = subprocess.run([sys.executable, "-m", "modula_desktop", "plugin", "info", "x"], env=ENV, cwd=site,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"no running instance for site {site.resolve()}" in r.stderr


def test_modula_site_dir_before_a_command_is_accepted(tmp_path):
    missing = tmp_path / "nowhere"
    r = modula("--site", missing, "plugin", "list")
    assert r.returncode != 0 and "invalid choice" not in r.stderr
    assert f"site folder {missing}" in r.stderr and "does not exist" in r.stderr


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    site = tmp_path_factory.mktemp("served") / "site"
    make_site(site, plugins=("hooks_plugin",))
    s = Served(site)
    yield s
    s.stop()


def test_nothing_to_approve_says_what_is_waiting(served):
    r = modula("plugin", "approve", "hooks_plugin", "--all-routes", "--yes", "--site", served.site)
    assert r.returncode == 0, r.stderr
    assert "nothing to approve" in r.stdout
    assert "hooks_plugin declares 0 routes and" in r.stdout and "waiting for approval: hook " in r.stdout
    r = modula("plugin", "approve", "hooks_plugin", "--all-hooks", "--yes", "--site", served.site)
    assert r.returncode == 0 and "approved 0 routes and" in r.stdout
    r = modula("plugin", "approve", "hooks_plugin", "--all-hooks", "--yes", "--site", served.site)
    assert "all of them are approved" in r.stdout
