"""Issue 13 item 12: half-open and slow connections cannot fill the server. A real waitress server on
loopback, real sockets that connect and send nothing or part of a request line."""
from __future__ import annotations

import socket
import time
from contextlib import ExitStack

from _server_fixtures import running_site, wait_for

HELLO = "/api/v1/plugins/http_test_plugin/hello"


def _half_open(port: int, n: int, stack: ExitStack, payload: bytes) -> list[socket.socket]:
    socks = []
    for i in range(n):
        s = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
        if payload and i % 2:  # half of them send a partial request line, the rest nothing at all
            s.sendall(payload)
        socks.append(s)
    return socks


def _timed_health(r) -> tuple[int, float]:
    started = time.monotonic()
    status = r.client.get("/api/v1/health", token=False, timeout=30).status
    return status, time.monotonic() - started


def _closed_by_server(s: socket.socket) -> bool:
    s.settimeout(0.05)
    try:
        return s.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:
        return True


def test_120_half_open_connections_do_not_block_health_or_plugins(tmp_path):
    with running_site(tmp_path, plugins=("http_test_plugin", "inspect")) as r, ExitStack() as stack:
        r.client.approve_all("http_test_plugin")
        _half_open(r.port, 130, stack, b"GET /api/v1/hea")
        time.sleep(0.3)  # the server's loop has accepted them (or stopped accepting)
        status, seconds = _timed_health(r)
        assert status == 200
        assert seconds < 1.0, f"/api/v1/health took {seconds:.2f} s behind 130 half-open connections"
        assert r.client.get(HELLO).status == 200  # another plugin keeps serving


def test_more_half_open_connections_than_the_limit_make_room_for_new_ones(tmp_path):
    # at the connection limit the longest idle connections are closed, so a new client is served at
    # once instead of after channel_timeout
    with running_site(tmp_path, plugins=("http_test_plugin",), connection_limit=30) as r, ExitStack() as stack:
        r.client.approve_all("http_test_plugin")
        _half_open(r.port, 90, stack, b"GET /api/v1/plugins/http_test_pl")
        time.sleep(0.3)
        for _ in range(3):
            status, seconds = _timed_health(r)
            assert status == 200
            assert seconds < 1.0, f"/api/v1/health took {seconds:.2f} s behind 90 half-open connections"
        assert r.client.get(HELLO).status == 200


def test_idle_and_slow_connections_are_dropped_so_a_full_server_recovers(tmp_path):
    # a small limit so the attack fills it; idle sockets go after channel_timeout, a request line that
    # trickles in byte by byte goes after request_timeout, both checked every cleanup_interval
    server = {"connection_limit": 20, "channel_timeout": 1, "cleanup_interval": 1, "request_timeout": 2}
    with running_site(tmp_path, plugins=("http_test_plugin",), **server) as r, ExitStack() as stack:
        r.client.approve_all("http_test_plugin")
        idle = _half_open(r.port, 10, stack, b"")
        slow = _half_open(r.port, 10, stack, b"G")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(_closed_by_server(s) for s in slow):
            for s in slow:  # one byte each 0.2 s: always active, never a whole request line
                try:
                    s.sendall(b"E")
                except OSError:
                    pass
            time.sleep(0.2)
        assert all(_closed_by_server(s) for s in slow), "request lines trickling in stayed open"
        assert wait_for(lambda: all(_closed_by_server(s) for s in idle), 10), "idle connections stayed open"
        status, seconds = _timed_health(r)
        assert status == 200 and seconds < 1.0
        assert r.client.get(HELLO).status == 200


def test_connection_settings_are_checked(tmp_path):
    import pytest

    from modula_desktop.core.errors import SettingsError
    from modula_desktop.core.settings import Settings

    with pytest.raises(SettingsError, match=r"\[server\] connection_limit"):
        Settings().replace(server={"connection_limit": 5000})
    with pytest.raises(SettingsError, match=r"\[server\] cleanup_interval"):
        Settings().replace(server={"cleanup_interval": 0})
