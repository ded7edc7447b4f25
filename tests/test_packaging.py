"""The packaged desktop app, built as the README says, used as a user would: the packaged ``modula
serve`` on a fresh default site, a bundled plugin's route approved with the packaged CLI and called, and
the packaged window started offscreen and closed with SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

if not os.environ.get("CI"):  # CI must build the app; elsewhere it needs the [package] extra
    pytest.importorskip("PyInstaller")


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    from modula_desktop.packaging import APP_NAME, build, folder_size

    dist = tmp_path_factory.mktemp("dist")
    exe = build(dist)
    size = folder_size(dist / APP_NAME)
    assert size < 150 * 1024 * 1024, f"the app is {size / 2**20:.0f} MiB (goal: 150)"
    return exe


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.update(XDG_DATA_HOME=str(tmp_path / "data"), HOME=str(tmp_path / "home"), **extra)
    return env


def _server_info(site, timeout=60):
    path = site / ".modula" / "server.json"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            time.sleep(0.1)
    raise AssertionError(f"no {path} after {timeout} s")


def _get(url, token=None, timeout=10):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    end = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def test_packaged_serve_and_cli(packaged, tmp_path):
    env = _env(tmp_path)
    site = tmp_path / "data" / "ModulaDesktop" / "site"  # platformdirs' user data folder
    server = subprocess.Popen([str(packaged), "serve", "--port", "0"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = _server_info(site)
        base = f"http://127.0.0.1:{info['port']}"
        assert _get(base + "/api/v1/health")[0] == 200
        listed = subprocess.run([str(packaged), "plugin", "list", "--json"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert "hello_world" in {p["name"] for p in json.loads(listed.stdout)["plugins"]}
        assert _get(base + "/api/v1/plugins/hello_world/hello")[0] == 404  # not approved yet
        approved = subprocess.run([str(packaged), "plugin", "approve", "hello_world", "--route", "GET /hello",
                                   "--yes"], env=env, capture_output=True, text=True, timeout=60)
        assert approved.returncode == 0, approved.stderr
        status, body = _get(base + "/api/v1/plugins/hello_world/hello")
        assert status == 200 and json.loads(body) == {"message": "Hello, world!"}
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
    assert server.returncode == 0
    assert not (site / ".modula" / "server.json").exists()


def test_packaged_window_starts_offscreen(packaged, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "modula.toml").write_text("[server]\nport = 0\n")
    window = subprocess.Popen([str(packaged), "run", "--site", str(site)],
                              env=_env(tmp_path, QT_QPA_PLATFORM="offscreen"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = _server_info(site)
        assert info["pid"] == window.pid
        assert _get(f"http://127.0.0.1:{info['port']}/api/v1/health")[0] == 200
        time.sleep(2)  # a few seconds of the window's own timers
        assert window.poll() is None, window.stderr.read()
    finally:
        window.send_signal(signal.SIGTERM)
        out, err = window.communicate(timeout=60)
    assert window.returncode == 0, err[-2000:]
    assert not (site / ".modula" / "server.json").exists()
