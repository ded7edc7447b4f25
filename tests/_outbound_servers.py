"""Real HTTP(S) servers on loopback for the outbound client's tests (http.server in a thread).

Each server records what reached it, so a test can prove that a refused request sent nothing.
Paths: /ok (JSON), /text, /big?n=BYTES (Content-Length), /chunked?n=BYTES (no length), /slow?ms=,
/trickle?n=&ms= (a byte every ms), /redirect?to=URL[&code=], /loop (redirects to itself),
/barrier (waits until `barrier` parties arrived), /echo (the request as JSON).
"""
from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Recorder:
    def __init__(self):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.barrier: threading.Barrier | None = None

    def add(self, entry):
        with self.lock:
            self.requests.append(entry)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self, status, body: bytes, ctype="text/plain", extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(body)
            except OSError:  # the client gave up (a timeout test)
                pass

    def _handle(self):
        rec: Recorder = self.server.recorder
        parts = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(parts.query))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        rec.add({"method": self.command, "path": parts.path, "query": q, "headers": dict(self.headers),
                 "body": body, "server": self.server.label})
        p = parts.path
        if p == "/ok":
            self._answer(200, json.dumps({"ok": True, "server": self.server.label}).encode(), "application/json")
        elif p == "/v1/today":
            self._answer(200, json.dumps({"sky": "clear"}).encode(), "application/json")
        elif p == "/text":
            self._answer(200, b"plain text", "text/plain", {"X-Test": "yes"})
        elif p == "/big":
            self._answer(200, b"x" * int(q.get("n", "0")))
        elif p == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            left = int(q.get("n", "0"))
            try:
                while left > 0:
                    n = min(left, 65536)
                    self.wfile.write(b"%x\r\n" % n + b"y" * n + b"\r\n")
                    left -= n
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
        elif p == "/slow":
            time.sleep(int(q.get("ms", "1000")) / 1000)
            self._answer(200, b"finally")
        elif p == "/trickle":
            n, ms = int(q.get("n", "30")), int(q.get("ms", "100"))
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            try:
                for _ in range(n):
                    self.wfile.write(b"z")
                    self.wfile.flush()
                    time.sleep(ms / 1000)
            except OSError:
                pass
        elif p == "/redirect":
            self._answer(int(q.get("code", "302")), b"", extra={"Location": q["to"]})
        elif p == "/loop":
            self._answer(302, b"", extra={"Location": "/loop"})
        elif p == "/barrier":
            try:
                rec.barrier.wait(timeout=10)
                self._answer(200, json.dumps({"i": q.get("i")}).encode(), "application/json")
            except threading.BrokenBarrierError:
                self._answer(500, b"not concurrent")
        elif p == "/echo":
            self._answer(200, json.dumps({"method": self.command, "headers": dict(self.headers),
                                          "body": body.decode("utf-8", "replace")}).encode(), "application/json")
        else:
            self._answer(404, b"nope")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class LoopbackServer:
    """A real HTTP server on address (port 0: any free one). Use as a context manager."""

    def __init__(self, address="127.0.0.1", port=0, label=None, tls: tuple | None = None):
        cls = _Server6 if ":" in address else _Server
        self.httpd = cls((address, port), _Handler)
        self.httpd.recorder = self.recorder = Recorder()
        self.httpd.label = label or address
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.address = address
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def requests(self):
        return self.recorder.requests

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def make_cert(directory, name: str):
    """A self-signed certificate for name (openssl), as (certfile, keyfile)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}"], check=True, capture_output=True)
    return str(cert), str(key)
