"""Hot reload (SPEC 6): watch the plugins folder and reload a plugin blue-green when its Lua files change.

Change detection is a SHA-256 over each plugin's ``.lua`` files (relative names and contents; symlinks
and anything that is not a regular file are ignored), bounded per pass by ``max_checksum_files`` and
``max_checksum_bytes``. Two sources tell us where to look:

- watchdog events on the plugins folder (recursive), batched by watchdog's own ``EventDebouncer``;
- a polling pass every ``poll_interval_s`` over every plugin, which also catches what events miss
  (network drives, folders created before the observer saw them).

A change is acted on once its files have been still for ``debounce_s`` (an editor's save may be several
writes). After a reload that failed or was slower than ``slow_reload_s`` the plugin waits ``cooldown_s``
before the next one (a broken save or an expensive ``on_init`` is not retried in a loop); after a good,
fast one the next save is served as soon as it is still. Manual reloads through the manager count too,
since the manager stamps ``plugin.last_reload_at``. After ``max_slow_reloads`` consecutive reloads slower
than ``slow_reload_s`` the plugin is no longer watched; a fast reload (a manual one) resets the count
and watching resumes by itself.

The same file read gives the generation its sources (``read_sources``): a generation serves exactly the
files that were hashed, so a VM rebuilt later never picks up newer code from disk.
"""
from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PluginLoadError

log = logging.getLogger(__name__)

# The files a VM may read: init.lua and lib/<module>.lua (require reads nothing deeper).
_SERVED_DIRS = ("", "lib", "screens", "interfaces")


@dataclass
class Sources:
    """One read of a plugin folder's ``.lua`` files.

    digest: SHA-256 over the sorted relative names and contents, or None when the folder was over the
    limits (problem says why). files: the served files (init.lua and lib/*.lua) by relative name; empty
    when over the limits, and the VM then reads from disk as usual.
    """

    digest: str | None
    files: dict[str, bytes] = field(default_factory=dict)
    count: int = 0
    size: int = 0
    problem: str | None = None

    @property
    def complete(self) -> bool:
        return self.digest is not None


def _read_regular(path: str, limit: int) -> bytes | None:
    """The bytes of a regular file (not a symlink, FIFO or device), or None. At most limit + 1 bytes."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def list_lua_files(root: Path, max_files: int) -> tuple[list[tuple[str, int, int]], str | None]:
    """(relative name, size, mtime_ns) of every regular .lua file below root, symlinks not followed;
    and a problem when there are more than max_files."""
    found: list[tuple[str, int, int]] = []
    stack = [("", str(root))]
    while stack:
        rel_dir, abs_dir = stack.pop()
        try:
            entries = list(os.scandir(abs_dir))
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_symlink():
                    continue
                rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
                if e.is_dir(follow_symlinks=False):
                    stack.append((rel, e.path))
                elif e.name.endswith(".lua") and e.is_file(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    found.append((rel, st.st_size, st.st_mtime_ns))
                    if len(found) > max_files:
                        return found, f"more than {max_files} .lua files"
            except OSError:
                continue
    return found, None


def read_sources(root: Path, max_files: int, max_bytes: int,
                 listing: list[tuple[str, int, int]] | None = None) -> Sources:
    """Hash (and keep the served part of) a plugin folder's .lua files. Never raises.
    listing: what list_lua_files just returned for root, to avoid walking it twice."""
    if listing is None:
        files, problem = list_lua_files(root, max_files)
        if problem:
            return Sources(None, count=len(files), problem=problem)
    else:
        files = listing
    total = sum(size for _, size, _ in files)
    if total > max_bytes:
        return Sources(None, count=len(files), size=total, problem=f"more than {max_bytes} bytes of .lua files")
    h = hashlib.sha256()
    served: dict[str, bytes] = {}
    total = 0
    for rel, _, _ in sorted(files):
        data = _read_regular(str(root / rel), max_bytes - total)
        if data is None:
            continue  # vanished or replaced by something that is not a file since we listed it
        total += len(data)
        if total > max_bytes:
            return Sources(None, count=len(files), size=total, problem=f"more than {max_bytes} bytes of .lua files")
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        h.update(hashlib.sha256(data).digest())
        if rel.rpartition("/")[0] in _SERVED_DIRS:
            served[rel] = data
    return Sources(h.hexdigest(), served, count=len(files), size=total)


def is_plugin_folder(path: Path) -> bool:
    """A real directory (no symlink) with a regular init.lua, named like a plugin could be."""
    if path.name.startswith(".") or path.is_symlink() or not path.is_dir():
        return False
    init = path / "init.lua"
    return init.is_file() and not init.is_symlink()


class HotReloader:
    """Watches ``manager.plugins_dir`` and reloads, adds and removes plugins as their folders change.

    ``start()`` starts the watchdog observer (when ``use_events``), its debouncer and one worker thread
    that does every check and reload, so reloads never overlap; ``stop()`` stops them all.
    """

    def __init__(self, manager, plugin_settings, *, use_events: bool = True):
        self.manager = manager
        self.settings = plugin_settings
        self.use_events = use_events
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._touched: dict[str, float] = {}     # plugin folder -> time of its latest file event
        self._dirty: set[str] = set()            # folders with events not looked at yet
        self._seen: dict[str, tuple[str, float]] = {}  # folder -> (new digest, since when it is so)
        self._checked_at: dict[str, float] = {}
        self._missing: dict[str, float] = {}     # folder gone since
        self._pending: dict[str, float] = {}     # folder -> when to look again
        self._over_limit: dict[str, str] = {}    # folder -> problem already logged
        self._hashed: dict[str, tuple[tuple, str]] = {}  # folder -> (stat signature, digest) of the last hash
        self._unwatched: set[str] = set()        # slow plugins already logged as no longer watched
        self._observer = None
        self._debouncer = None
        self._thread: threading.Thread | None = None
        self.watching_events = False

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "HotReloader":
        if self._thread is not None:
            return self
        if self.use_events:
            self._start_observer()
        self._thread = threading.Thread(target=self._run, name="modula-hot-reload", daemon=True)
        self._thread.start()
        return self

    def _start_observer(self):
        from watchdog.observers import Observer
        from watchdog.utils.event_debouncer import EventDebouncer

        plugins_dir = Path(self.manager.plugins_dir)
        self._debouncer = EventDebouncer(self.settings.debounce_s, self._on_batch)
        observer = Observer()
        try:
            observer.schedule(_event_handler(self), str(plugins_dir), recursive=True, event_filter=_changing_events())
            observer.start()
        except (OSError, ValueError) as exc:  # folder missing, inotify watch limit, ...
            log.warning("hot reload: cannot watch %s (%s); polling every %g s only", plugins_dir, exc,
                        self.settings.poll_interval_s)
            self._debouncer = None
            return
        self._debouncer.start()
        self._observer = observer
        self.watching_events = True

    def stop(self):
        self._stopping.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
            self._observer = None
        if self._debouncer is not None:
            self._debouncer.stop()
            self._debouncer.join()
            self._debouncer = None
        self._wake.set()
        if self._thread is not None:
            self._thread.join()  # a reload in progress is bounded by the plugin budgets
            self._thread = None

    # ---- events ------------------------------------------------------------------------------
    def _folder_of(self, path) -> str | None:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        try:
            rel = Path(path).relative_to(self.manager.plugins_dir)
        except ValueError:
            return None
        if not rel.parts or rel.parts[0].startswith("."):
            return None
        return rel.parts[0]

    def _on_event(self, event):
        """Straight from the observer thread: remember when each plugin folder last changed."""
        now = time.monotonic()
        names = {self._folder_of(event.src_path), self._folder_of(getattr(event, "dest_path", "") or "")}
        names.discard(None)
        if not names:
            return
        with self._lock:
            for name in names:
                self._touched[name] = now
                self._dirty.add(name)
        if self._debouncer is not None:
            self._debouncer.handle_event(event)

    def _on_batch(self, events):
        """The debouncer's callback: a burst of events is over (or has lasted debounce_s): look."""
        self._wake.set()

    # ---- the worker --------------------------------------------------------------------------
    def _run(self):
        next_poll = time.monotonic()
        while not self._stopping.is_set():
            now = time.monotonic()
            with self._lock:
                names = set(self._dirty)
                self._dirty.clear()
            names |= {n for n, due in self._pending.items() if due <= now}
            if now >= next_poll:
                names |= self._all_folders()
                next_poll = now + max(0.05, self.settings.poll_interval_s)
            for name in sorted(names):
                if self._stopping.is_set():
                    return
                try:
                    self._check(name)
                except Exception:  # noqa: BLE001 - the watcher must outlive any one plugin
                    log.exception("hot reload: checking plugin folder %r failed", name)
            due = min([next_poll, *self._pending.values()])
            self._wake.wait(max(0.01, due - time.monotonic()))
            self._wake.clear()

    def _all_folders(self) -> set[str]:
        # folders, not plugin names: a plugin is known by its plugin_info.name, whatever its folder is
        names = set(self.manager.folders())
        try:
            names |= {p.name for p in Path(self.manager.plugins_dir).iterdir() if not p.name.startswith(".")}
        except OSError:
            pass
        return names

    def _check(self, name: str):
        """Look at one plugin folder now: add, reload, remove, or schedule another look."""
        from .manager import STOPPED

        s = self.settings
        now = time.monotonic()
        last_checked = self._checked_at.get(name, float("-inf"))
        self._checked_at[name] = now
        self._pending.pop(name, None)
        root = Path(self.manager.plugins_dir) / name
        plugin = self.manager.plugin_for_folder(name)  # name: the folder (its plugin_info.name may differ)

        if not is_plugin_folder(root):
            self._seen.pop(name, None)
            if plugin is None or (root.is_dir() and not root.is_symlink()):
                # no plugin here; or the folder is still there and init.lua is missing for a moment
                # (some editors delete and rewrite): the checksum below tells a reload to try
                self._missing.pop(name, None)
                if plugin is None:
                    return
            else:
                since = self._missing.setdefault(name, self._event_time(name, last_checked, now))
                if now - since < s.debounce_s:
                    self._pending[name] = since + s.debounce_s
                    return
                self._missing.pop(name, None)
                self._forget(name)
                log.info("hot reload: plugin folder %s was removed", name)
                self.manager.remove(plugin.name)
                return
        self._missing.pop(name, None)

        if plugin is not None and plugin.state == STOPPED:
            return  # disabled: enable reloads it from its current files
        if plugin is not None and plugin.slow_reloads >= s.max_slow_reloads:
            if name not in self._unwatched:
                self._unwatched.add(name)
                self._say(name, "warn", f"hot reload stopped watching this plugin: its last {plugin.slow_reloads} "
                                        f"reloads each took longer than {s.slow_reload_s:g} s. Reload it by hand; "
                                        "a fast reload turns watching back on.")
            return
        if name in self._unwatched:
            self._unwatched.discard(name)
            self._say(name, "info", "hot reload is watching this plugin again")

        digest, problem = self._digest(name, root, evented=self._touched.get(name, float("-inf")) > last_checked)
        if digest is None:
            if self._over_limit.get(name) != problem:
                self._over_limit[name] = problem
                self._say(name, "warn", f"hot reload skipped this plugin: {problem} (limits: "
                                        f"{s.max_checksum_files} files, {s.max_checksum_bytes} bytes per pass)")
            return
        if self._over_limit.pop(name, None):
            self._say(name, "info", "hot reload is checking this plugin again (back within the limits)")

        loaded = plugin.source_digest if plugin is not None else None
        if digest == loaded:
            self._seen.pop(name, None)
            return
        prev = self._seen.get(name)
        if prev is None or prev[0] != digest:
            prev = (digest, self._event_time(name, last_checked, now))
            self._seen[name] = prev
        stable_since = max(prev[1], self._touched.get(name, float("-inf")))
        due = stable_since + s.debounce_s
        if plugin is not None and plugin.last_reload_at is not None and (
                not plugin.last_reload_ok or (plugin.last_reload_seconds or 0) > s.slow_reload_s):
            due = max(due, plugin.last_reload_at + s.cooldown_s)
        if now < due:
            self._pending[name] = due
            return
        self._seen.pop(name, None)
        try:
            if plugin is None:
                log.info("hot reload: new plugin folder %s", name)
                self.manager.add(name)
            else:
                self._say(name, "info", "files changed on disk: reloading")
                self.manager.reload(plugin.name)
        except PluginLoadError as exc:  # disabled or removed meanwhile: nothing to reload
            log.info("hot reload: %s not reloaded: %s", name, exc)
            return
        plugin = self.manager.plugin_for_folder(name)
        if plugin is not None and plugin.slow_reloads >= s.max_slow_reloads:
            self._check_later(name)

    def _digest(self, name: str, root: Path, evented: bool) -> tuple[str | None, str | None]:
        """(digest, None) or (None, problem). A polling pass with no file event since the last look
        only hashes when a name, size or mtime changed: stat calls instead of reading every file."""
        s = self.settings
        listing, problem = list_lua_files(root, s.max_checksum_files)
        if problem:
            return None, problem
        signature = tuple(sorted(listing))
        cached = self._hashed.get(name)
        if cached is not None and cached[0] == signature and not evented:
            return cached[1], None
        sources = read_sources(root, s.max_checksum_files, s.max_checksum_bytes, listing=listing)
        if sources.digest is None:
            self._hashed.pop(name, None)
            return None, sources.problem
        self._hashed[name] = (signature, sources.digest)
        return sources.digest, None

    def _event_time(self, name: str, last_checked: float, now: float) -> float:
        """When the change we just noticed happened: the latest file event if one came since we last
        looked (watchdog knows), else now (the polling pass only knows it happened by now)."""
        t = self._touched.get(name)
        return t if t is not None and t > last_checked else now

    def _check_later(self, name: str):
        self._pending[name] = time.monotonic()

    def _forget(self, name: str):
        for d in (self._seen, self._pending, self._over_limit, self._checked_at, self._hashed):
            d.pop(name, None)
        self._unwatched.discard(name)
        with self._lock:
            self._touched.pop(name, None)

    def _say(self, folder: str, level: str, message: str):
        plugin = self.manager.plugin_for_folder(folder)
        self.manager.logbook.write(plugin.name if plugin is not None else folder, level, message)


def _event_handler(reloader: HotReloader):
    from watchdog.events import FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event):
            reloader._on_event(event)

    return Handler()


def _changing_events() -> list:
    """The watchdog event classes that can change a file: reads (opened, closed without writing),
    including our own checksum pass, must not look like edits."""
    from watchdog import events as ev

    return [ev.FileCreatedEvent, ev.FileModifiedEvent, ev.FileDeletedEvent, ev.FileMovedEvent, ev.FileClosedEvent,
            ev.DirCreatedEvent, ev.DirDeletedEvent, ev.DirMovedEvent]
