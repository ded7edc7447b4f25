"""The site build as a pipeline of named steps: collect -> render -> write (-> publish, in publish.py).

build_site() is the whole of it; the GUI runs it on a worker thread with a progress callback and a
cancel flag, the CLI on its own thread."""
from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .collect import collect
from .errors import BuildCancelled, BuildError
from .media import MediaSet
from .render import Renderer
from .theme import Theme
from .write import FORMAT, Staging, check_output_folder

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (done, total, what)


@dataclass
class BuildResult:
    out: Path
    full: bool
    outputs: int = 0  # files in the build
    rendered: int = 0  # outputs whose inputs changed (rendered again)
    written: list = field(default_factory=list)  # paths whose bytes changed
    removed: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    seconds: float = 0.0
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
    site_root = Path(site_root)
    out = Path(out).resolve() if out is not None else default_output(site_root)
    old = check_output_folder(out)
    if clean:
        old = None
    full = old is None
    result = BuildResult(out=out, full=full)

    # collect
    # the read hooks (before_read, after_read) only when one is approved: otherwise no work at all
    reads = hooks.read if hooks is not None and hooks.has_read_hooks() else None
    model = collect(db, settings.site.permalink, old.get("entries") if old else None, reads)
    theme = Theme(site_root, settings.site.theme)
    media = MediaSet(site_root, settings.build.image_widths, settings.build.image_quality)
    renderer = Renderer(model, theme, settings.site, settings.build, media, hooks=hooks, plugins_key=plugins_key)
    outputs = renderer.plan()
    _check_unique(outputs)
    result.outputs = len(outputs)
    previous = old["outputs"] if old else {}

    # render and write (to the staging folder)
    staging = Staging(out, full)
    manifest: dict[str, str] = {}
    try:
        todo = []
        base = str(out) + os.sep
        isfile = os.path.isfile
        for o in outputs:
            known = None if full else previous.get(o.path)  # "<input key> <content hash>"
            # a file removed by hand is written again
            if known is not None and known.startswith(o.key) and isfile(base + o.path):
                manifest[o.path] = known
            else:
                todo.append(o)
        total = len(todo)
        for done, o in enumerate(todo):
            if cancel is not None and cancel():
                raise BuildCancelled()
            data = o.produce()
            content = hashlib.blake2b(data, digest_size=16).hexdigest()
            manifest[o.path] = f"{o.key} {content}"
            if full or not previous.get(o.path, "").endswith(content) or not isfile(base + o.path):
                staging.write(o.path, data)
                result.written.append(o.path)
            if progress is not None:
                progress(done + 1, total, o.label)
        result.rendered = total
        if cancel is not None and cancel():
            raise BuildCancelled()
        current = {o.path for o in outputs}
        result.removed = sorted(p for p in previous if p not in current) if not full else []
        if not full and not result.written and not result.removed and manifest == previous \
                and model.cache == old.get("entries"):
            staging.abort()  # nothing changed: the output, its manifest included, stays as it is
        else:
            staging.commit({"format": FORMAT, "outputs": manifest, "entries": model.cache}, result.removed)
    except BaseException:
        staging.abort()
        raise
    if media.missing:
        result.warnings.append("missing media (referenced but not in media/): " + ", ".join(sorted(media.missing)))
    result.seconds = time.perf_counter() - started
    log.info(result.summary())
    return result


def _check_unique(outputs):
    seen = {}
    for o in outputs:
        if o.path in seen:
            raise BuildError(f"Two things would be written at {o.path}: {seen[o.path]} and {o.label}; change "
                             f"one of their slugs.")
        seen[o.path] = o.label
