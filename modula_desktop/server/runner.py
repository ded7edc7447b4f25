"""Serving the app with waitress on the loopback interface: in a background thread for the GUI and
tests (``start_background``), or in the foreground for ``modula serve`` (``serve_forever``)."""
from __future__ import annotations

import errno
import functools
import logging
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import create_server

from .app import create_app
from .auth import TokenAuth
from .preview import preview_path

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
LOOPBACK_NAMES = ("127.0.0.1", "localhost")
STOP_POLL_S = 0.05


class PortInUse(Exception):
    pass


class _Channel(HTTPChannel):
    """waitress's connection, without its busy loop.

    A worker thread writes a response under the channel's outbuf lock and, since waitress sends as
    soon as one byte is buffered, sends it itself. waitress's writable() says yes as soon as a byte is
    buffered, so while the worker holds the lock the main loop's select() returns at once, handle_write
    finds the lock taken and does nothing, and the loop spins, fighting the worker for the GIL. With 2
    worker threads and 2 connections that was 100-180 loop iterations per request and about 350
    requests per second instead of about 3,900 (docs/PERFORMANCE.md).
    Here a buffer whose lock is held is not the loop's business: the worker sends it, and pulls the
    loop's trigger when its task ends (any byte it could not send is then flushed by the loop)."""

    # the request still arriving when _maintenance last looked, and since when (request_timeout)
    arriving = None
    arriving_since = 0.0

    def writable(self):
        if self.will_close or self.close_when_flushed:
            return True
        if not self.total_outbufs_len:
            return False
        lock = self.outbuf_lock
        if not lock.acquire(False):
            return False
        lock.release()
        return True


def _maintenance(server, request_timeout: int, now: float):
    """waitress's cleanup (every cleanup_interval s), plus what it lacks: a connection that keeps
    sending a byte now and then is never idle, so one whose current request has not fully arrived
    within request_timeout seconds is closed too (slowloris). Connections with requests being served
    are left alone: their handlers have deadlines of their own."""
    idle_cutoff = now - server.adj.channel_timeout
    for channel in list(server.active_channels.values()):
        if channel.requests:
            continue
        if channel.last_activity < idle_cutoff:
            channel.will_close = True
            continue
        partial = channel.request
        if partial is None:
            continue
        if channel.arriving is not partial:
            channel.arriving, channel.arriving_since = partial, now
        elif now - channel.arriving_since > request_timeout:
            channel.will_close = True


def _readable(server, readable) -> bool:
    """waitress stops accepting at connection_limit until connections go. Under a flood of idle
    sockets that is up to channel_timeout for everyone, so at the limit the connections idle longest
    (nothing being served, nothing left to send) are closed to make room, a tenth of the limit at a
    time, and accepting goes on."""
    if len(server._map) >= server.adj.connection_limit:
        idle = [ch for ch in server.active_channels.values()
                if not ch.requests and not ch.total_outbufs_len and not ch.will_close]
        idle.sort(key=lambda ch: ch.last_activity)
        for channel in idle[:max(1, server.adj.connection_limit // 10)]:
            channel.will_close = True
    return readable()


# waitress warns "Task queue depth is N" whenever every worker thread is busy: routine when a browser
# opens several connections at once, and noise on the terminal of `modula serve`
logging.getLogger("waitress.queue").setLevel(logging.ERROR)


class _ConnectionLimitNotes(logging.Filter):
    """waitress logs each time the open connections reach or leave the limit; at the limit _readable
    makes room at once, so under a flood of sockets that would be a line per loop. One a minute."""

    EVERY_S = 60.0

    def __init__(self):
        super().__init__()
        self._last = float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("total open connections"):
            return True
        now = time.monotonic()
        if now - self._last < self.EVERY_S:
            return False
        self._last = now
        return True


logging.getLogger("waitress").addFilter(_ConnectionLimitNotes())


def check_host(host: str | None) -> str:
    """The address to bind. The server is for this machine only (SPEC 5): anything but the loopback
    name or address is refused."""
    if host is None or host.strip().lower() in LOOPBACK_NAMES:
        return LOOPBACK
    raise ValueError(f"refusing to listen on {host!r}: the server binds to 127.0.0.1 (or localhost) only")


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # lets a restarted server take its port back from connections in TIME_WAIT
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # waitress sets this only on sockets it binds itself; accepted connections inherit it. Without
        # it Nagle's algorithm holds back small responses written in pieces (a third of the throughput)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise PortInUse(f"port {port} on {host} is already in use (choose another with --port, "
                            "or --port 0 for a free one)") from None
        raise
    return sock


class ServerHandle:
    """A running server. ``stop()`` stops accepting, lets requests in flight finish, then closes."""

    def __init__(self, service, host: str = LOOPBACK, port: int = 0, *, announce: bool = False):
        self.service = service
        self.host = check_host(host)
        self._announce = announce
        sock = _bind(self.host, port)
        self.port = sock.getsockname()[1]
        token = service.site.token()
        self._auth = TokenAuth(token)
        self.app = create_app(service, port=self.port, token=token)
        settings = service.settings
        limit = settings.plugins.max_request_body
        cfg = settings.server
        self._server = create_server(
            self.app, sockets=[sock], threads=max(1, cfg.threads),
            ident="modula",
            max_request_header_size=cfg.max_request_header_size,
            connection_limit=cfg.connection_limit, channel_timeout=cfg.channel_timeout,
            cleanup_interval=cfg.cleanup_interval, recv_bytes=cfg.recv_bytes, inbuf_overflow=cfg.inbuf_overflow,
            # bodies somewhat over our limit still reach the app for a JSON 413; far over it waitress
            # itself refuses them without buffering
            max_request_body_size=max(2 * limit, limit + 1024 * 1024),
            # poll() measured at a third of select()'s throughput here with 8 keep-alive connections;
            # a desktop server never nears select()'s descriptor limit
            expose_tracebacks=False,
        )
        self._server.channel_class = _Channel
        self._server.maintenance = functools.partial(_maintenance, self._server, cfg.request_timeout)
        self._server.readable = functools.partial(_readable, self._server, self._server.readable)
        self.loops = 0  # main-loop iterations: one or two per request when nothing spins
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"modula-http-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def preview_url(self, slug: str) -> str:
        """The browser address of an entry's preview; carries the slug's preview key, so drafts open."""
        return self.url + preview_path(slug, self._auth.preview_key(slug))

    def start(self) -> "ServerHandle":
        self._thread.start()
        if self._announce:
            self.service.site.write_server_info(self.host, self.port)
        return self

    def _run(self):
        server = self._server
        smap = server._map
        try:
            while not self._stop.is_set():
                wasyncore.loop(timeout=server.adj.asyncore_loop_timeout, map=smap, use_poll=False, count=1)
                self.loops += 1
            self._drain(server, smap)
        except Exception:  # noqa: BLE001 - the loop thread must always end cleanly
            log.exception("HTTP server loop failed")
        finally:
            try:
                server.task_dispatcher.shutdown(timeout=1)
                wasyncore.close_all(smap)
            except Exception:  # noqa: BLE001
                log.exception("closing the HTTP server failed")
            self._stopped.set()

    def _drain(self, server, smap):
        # stop accepting; the requests already received are answered (and flushed) before we close
        wasyncore.dispatcher.close(server)
        deadline = time.monotonic() + self.service.settings.plugins.drain_timeout_s
        dispatcher = server.task_dispatcher
        while time.monotonic() < deadline:
            busy = dispatcher.active_count or dispatcher.queue or any(
                ch.requests or ch.total_outbufs_len for ch in list(server.active_channels.values()))
            if not busy:
                break
            wasyncore.loop(timeout=STOP_POLL_S, map=smap, use_poll=False, count=1)

    def stop(self, timeout: float | None = None):
        if not self._stop.is_set():
            self._stop.set()
            try:
                self._server.pull_trigger()
            except Exception:  # noqa: BLE001 - already closed
                pass
        if self._thread.is_alive():
            self._thread.join(timeout)
        elif self._thread.ident is None:
            # never started: the listening socket is ours to close
            try:
                self._server.close()
            except Exception:  # noqa: BLE001
                pass
        if self._announce:
            self.service.site.clear_server_info()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def start_background(service, host: str = LOOPBACK, port: int = 0, *, announce: bool = False) -> ServerHandle:
    """Serve service's site in a daemon thread. port 0 picks a free port (see ``handle.port``).
    announce: write .modula/server.json while running, so the online CLI commands find this instance
    (the desktop window does; tests usually do not). Raises PortInUse or ValueError (bad host)."""
    return ServerHandle(service, host, port, announce=announce).start()


def serve_forever(site_path: Path | None, host: str | None = None, port: int | None = None) -> int:
    """``modula serve``: run until SIGINT/SIGTERM. Returns the exit code."""
    from ..core.service import SiteService

    service = SiteService.open(site_path)
    try:
        try:
            bind_host = check_host(host if host is not None else service.settings.server.host)
        except ValueError as exc:
            print(f"modula: {exc}", file=sys.stderr)
            return 2
        running = service.site.read_server_info()
        if running is not None:
            print(f"modula: site {service.site.root} is already served at "
                  f"http://{running['host']}:{running['port']} (pid {running['pid']})", file=sys.stderr)
            return 1
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            try:
                handle = ServerHandle(service, bind_host, service.settings.server.port if port is None else port,
                                      announce=True)
            except PortInUse as exc:
                print(f"modula: {exc}", file=sys.stderr)
                return 1
            # listening (and server.json written) first; the plugins load behind the server, their
            # routes answering 503 "loading" until they run: a slow plugin never holds start-up hostage
            handle.start()
            try:
                service.start(background=True)
            except BaseException:
                handle.stop()
                raise
            print(f"Serving {service.site.root} at {handle.url}", flush=True)
            try:
                while not stop.wait(0.5):
                    if handle.wait(0):
                        print("modula: the HTTP server stopped unexpectedly", file=sys.stderr)
                        return 1
            finally:
                handle.stop()
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
        return 0
    finally:
        service.close()
