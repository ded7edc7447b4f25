"""The site build as a pipeline of named steps: collect -> render -> write (-> publish, in publish.py).

build_site() is the whole of it; the GUI runs it on a worker thread with a progress callback and a
cancel flag, the CLI on its own thread."""
from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import state as warm
from .collect import collect, prune_journal
from .errors import BuildCancelled, BuildError
from .media import MediaSet
from .render import Renderer
from .theme import Theme
from .write import FORMAT, ManifestText, Staging, check_output_folder

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (done, total, what)


@dataclass
class BuildResult:
    out: Path
    full: bool
    outputs: int = 0  # files in the build
    planned: int = 0  # outputs whose key was worked out (all in a cold build, what an edit reaches in a warm one)
    rendered: int = 0  # outputs whose inputs changed (rendered again)
    written: list = field(default_factory=list)  # paths whose bytes changed
    removed: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)  # seconds per step: collect, plan, compare, render, write
    hooks: object = None  # the build's RenderHooks, whose after_build hooks may still be running

    def wait_for_plugins(self, timeout: float | None = None) -> bool:
        """Wait for the after_build hooks (the CLI does before it exits). True when they finished."""
        return self.hooks.wait(timeout) if self.hooks is not None else True

    def summary(self) -> str:
        return (f"built {self.outputs} files in {self.out} ({self.seconds:.2f} s): {len(self.written)} written, "
                f"{len(self.removed)} removed, {self.outputs - len(self.written)} unchanged")


def default_output(site_root: Path) -> Path:
    return Path(site_root) / "build"


def build_site(service, out: Path | None = None, *, clean: bool = False, progress: Progress | None = None,
               cancel: Callable[[], bool] | None = None, plugins: bool = True) -> BuildResult:
    """Build the service's site into out (default <site>/build/). Incremental unless clean; atomic: any
    error or a cancel leaves out as it was. The running, approved plugins' before_render and after_build
    hooks take part unless plugins is False. Raises BuildError (ThemeError, BuildCancelled)."""
    hooks = None
    if plugins and service.plugins is not None:
        from .hooks import RenderHooks

        hooks = RenderHooks(service)
    result = build(service.db, service.site.root, service.settings, out, clean=clean, progress=progress,
                   cancel=cancel, hooks=hooks, plugins_key=hooks.fingerprint() if hooks else "")
    if hooks is not None:
        result.warnings += hooks.warnings
        result.hooks = hooks
        hooks.after_build(result.written, result.removed, str(result.out))
    return result


def build(db, site_root: Path, settings, out: Path | None = None, *, clean: bool = False,
          progress: Progress | None = None, cancel: Callable[[], bool] | None = None, hooks=None,
          plugins_key: str = "") -> BuildResult:
    started = time.perf_counter()
    clock = _Clock()
    site_root = Path(site_root)
    out = Path(out).resolve() if out is not None else default_output(site_root)
    database = str(getattr(db, "database", ""))
    state = warm.take(out, database)  # the last build's, in this process (state.py)
    if clean:
        state = None  # and its memory freed for this one
    # a warm build trusts the manifest it wrote and its record of the files there
    found = (state.manifest, state.text) if state is not None else check_output_folder(out)
    old, text = found if found and not clean else (None, ManifestText())
    full = old is None
    result = BuildResult(out=out, full=full)
    permalink = settings.site.permalink
    # the read hooks (before_read, after_read) only when one is approved: otherwise no work at all. They
    # may change what an entry shows, so a build with them reads every entry and reuses nothing
    reads = hooks.read if hooks is not None and hooks.has_read_hooks() else None
    if reads is not None:
        state = None
    previous = old["outputs"] if old else {}

    with _collector_paused():  # planning allocates some 100,000 small objects that no cycle holds
        # collect
        last = state.model if state is not None and state.permalink == permalink else None
        model = collect(db, permalink, old.get("entries") if old else None, last, reads=reads)
        theme = Theme(site_root, settings.site.theme)
        if state is not None and state.theme.fingerprint == theme.fingerprint and state.theme.dirs == theme.dirs:
            theme = state.theme  # its templates are compiled
        media = MediaSet(site_root, settings.build.image_widths, settings.build.image_quality)
        renderer = Renderer(model, theme, settings.site, settings.build, media, hooks=hooks,
                            plugins_key=plugins_key, memo=state.memo if state is not None else None)
        clock.lap("collect")
        # a warm build plans only what the changed entries reach; the rest of the manifest stays
        delta = renderer.plan_changes(renderer.last_plan) if state is not None and not full else None
        if delta is not None:
            outputs, replaced = delta
            current = _by_path(outputs)
            if any(p in previous and p not in replaced for p in current):
                delta = None  # an edited entry's new path is another output's: the full plan names both
        if delta is None:
            outputs = renderer.plan()
            current = _by_path(outputs)
            replaced = previous.keys()
        result.planned = len(outputs)
        clock.lap("plan")

        # what changed: outputs whose key did (a file removed by hand too, in a cold build: see state.py)
        manifest: dict[str, str] = {}
        if delta is not None:
            manifest = dict(previous)
            for p in replaced:
                manifest.pop(p, None)
        todo = []
        if full:
            todo = outputs
        else:
            base = str(out) + os.sep
            isfile = os.path.isfile
            trusted = state is not None
            for o in outputs:
                was = previous.get(o.path)  # "<input key> <content hash>"
                if was is not None and was.startswith(o.key) and (trusted or isfile(base + o.path)):
                    manifest[o.path] = was
                else:
                    todo.append(o)
        clock.lap("compare")

    # render and write (to the staging folder)
    staging = Staging(out, full)
    try:
        total = len(todo)
        base = str(out) + os.sep
        for done, o in enumerate(todo):
            if cancel is not None and cancel():
                raise BuildCancelled()
            data = o.produce()
            content = hashlib.blake2b(data, digest_size=16).hexdigest()
            manifest[o.path] = f"{o.key} {content}"
            if full or not previous.get(o.path, "").endswith(content) or not os.path.isfile(base + o.path):
                staging.write(o.path, data)
                result.written.append(o.path)
            if progress is not None:
                progress(done + 1, total, o.label)
        result.rendered = total
        if cancel is not None and cancel():
            raise BuildCancelled()
        clock.lap("render")
        result.removed = sorted(p for p in replaced if p not in current and p in previous) if not full else []
        result.outputs = len(manifest)
        kept = {"format": FORMAT, "outputs": manifest, "entries": model.cache}
        if full:
            text = ManifestText(json.dumps(kept, separators=(",", ":")))
            staging.commit(text, [])
        else:
            # the manifest's change line: what this build planned, and the entries it read again
            outputs_changed = {p: manifest.get(p) for p in (current if delta is not None else manifest)
                               if previous.get(p) != manifest.get(p)}
            outputs_changed.update((p, None) for p in result.removed)
            old_entries = old.get("entries", {})
            added = sum(1 for e in model.fresh if e.id not in old_entries)
            gone = [id for id in old_entries if id not in model.cache] \
                if len(old_entries) + added != len(model.cache) else []
            entries_changed = {e.id: model.cache[e.id] for e in model.fresh
                               if old_entries.get(e.id) != model.cache[e.id]}
            entries_changed.update((id, None) for id in gone)
            if not result.written and not result.removed and not outputs_changed and not entries_changed:
                staging.abort()  # nothing changed: the output, its manifest included, stays as it is
            else:
                text = text.with_changes(kept, outputs_changed, entries_changed)
                staging.commit(text, result.removed)
        clock.lap("write")
    except BaseException:
        staging.abort()
        raise
    prune_journal(db, model.journal)
    for e in model.entries:  # kept for the next build: without the bodies, and the database
        e._body = e._loader = None
    if reads is None:  # entries the read hooks filtered must never be reused as the stored ones
        warm.keep(out, warm.WarmState(warm.signature(out), database, permalink, kept, text, model,
                                      renderer.finish(), theme))
    if media.missing:
        result.warnings.append("missing media (referenced but not in media/): " + ", ".join(sorted(media.missing)))
    result.seconds = time.perf_counter() - started
    result.timings = clock.laps
    log.info(result.summary())
    return result


class _Clock:
    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str):
        now = time.perf_counter()
        self.laps[name] = now - self._last
        self._last = now


@contextmanager
def _collector_paused():
    """Python's cycle collector walks every object of the process (10,000 entries and their keys among
    them) each time enough new ones were made: paused while the plan is made, it would cost a one-entry
    rebuild of a 10,000-entry site half its time. Nothing made meanwhile is held in a cycle."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _by_path(outputs) -> dict:
    current = {o.path: o for o in outputs}
    if len(current) != len(outputs):
        _check_unique(outputs)
    return current


def _check_unique(outputs):
    seen = {}
    for o in outputs:
        if o.path in seen:
            raise BuildError(f"Two things would be written at {o.path}: {seen[o.path]} and {o.label}; change "
                             f"one of their slugs.")
        seen[o.path] = o.label
