"""The server's main loop waits instead of spinning while worker threads send their responses
(runner._Channel), and what a worker could not send is still flushed by the loop. Real waitress server,
real keep-alive connections."""
from __future__ import annotations

import http.client
import socket
import threading
import time

from _server_fixtures import running_site

HELLO = "/api/v1/plugins/http_test_plugin/hello"


def _keep_alive(port: int, token: str, path: str, n: int, statuses: list):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for _ in range(n):
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
            r = conn.getresponse()
            r.read()
            statuses.append(r.status)
    finally:
        conn.close()


def _loops_per_request(r, path: str, connections: int = 2, n: int = 150) -> float:
    statuses: list = []
    threads = [threading.Thread(target=_keep_alive, args=(r.port, r.client.token, path, n, statuses))
               for _ in range(connections)]
    before = r.handle.loops
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    loops = r.handle.loops - before
    assert statuses == [200] * (connections * n)
    return loops / len(statuses)


def test_the_main_loop_does_not_spin_while_workers_send(tmp_path):
    # as many connections as worker threads: every worker is busy most of the time, which is when
    # waitress's own channel made the loop spin (over 100 iterations per request measured here)
    with running_site(tmp_path, {"rate_limit": 0.0}, plugins=("http_test_plugin",), threads=2) as r:
        r.client.approve_all("http_test_plugin")
        for path in ("/api/v1/health", HELLO):
            per_request = _loops_per_request(r, path)
            # one iteration reads the request, one (often the same) sees the worker's trigger
            assert per_request < 4, f"{path}: {per_request:.1f} main-loop iterations per request"


def test_a_response_too_big_for_the_socket_buffer_still_arrives_whole(tmp_path):
    # the worker sends what the socket takes and leaves the rest in the buffer; the loop flushes it as
    # the client reads
    size = 5_000_000  # over the 4 MiB a socket send buffer grows to by default
    with running_site(tmp_path, plugins=("faulty",), threads=2) as r:
        r.client.approve_all("faulty")
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # the client's window stays small
        s.settimeout(30)
        s.connect(("127.0.0.1", r.port))
        with s:
            s.sendall(f"GET /api/v1/plugins/faulty/big?n={size} HTTP/1.1\r\nHost: 127.0.0.1:{r.port}\r\n"
                      f"Authorization: Bearer {r.client.token}\r\n\r\n".encode())
            time.sleep(0.5)  # the worker fills the socket and finishes its task
            pending = sum(ch.total_outbufs_len for ch in list(r.handle._server.active_channels.values()))
            assert pending > 0, "the response fit in the socket buffers: nothing left for the loop"
            data = bytearray()
            head_end = -1
            while head_end < 0 or len(data) < head_end + 4 + size:
                chunk = s.recv(65536)
                assert chunk, "the server closed the connection early"
                data += chunk
                if head_end < 0:
                    head_end = data.find(b"\r\n\r\n")
            head = bytes(data[:head_end])
            assert head.startswith(b"HTTP/1.1 200")
            assert f"content-length: {size}".encode() in head.lower()
            assert bytes(data[head_end + 4:]) == b"x" * size
        # the connection's worker is free again: the server still answers
        assert r.client.get("/api/v1/health").status == 200
