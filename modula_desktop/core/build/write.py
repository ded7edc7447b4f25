"""Step 3, write: files go to a staging folder beside the output; only when every page rendered are they
moved into place with renames. A failed or cancelled build removes its staging folder and leaves the last
good output as it was.

A full build swaps the whole folder (the old one renamed aside, the new one renamed in); an incremental
build renames each changed file over its old copy and deletes what disappeared. The manifest is written
last, so a build interrupted between the renames is finished by the next one.

The manifest is one file, replaced whole (a temporary file and a rename): a line of JSON (the base),
then a line of JSON per incremental build since, with the outputs and entries that build changed (null:
gone). A build keeps the base's text, so it encodes only its own line; when those lines outweigh a
quarter of the base, the base is encoded again, with them folded in."""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .errors import BuildError

log = logging.getLogger(__name__)

MANIFEST = ".modula-build.json"
FORMAT = 2


class ManifestText:
    """The manifest file's text as the last build left it: its base line and the change lines since."""

    def __init__(self, base: str = "", changes: str = ""):
        self.base = base
        self.changes = changes
        self._base_bytes: bytes | None = None

    def with_changes(self, manifest: dict, outputs: dict, entries: dict) -> "ManifestText":
        """The text after one more build, which changed outputs and entries (path or id -> value, None when
        gone) and left manifest (everything, those changes included)."""
        line = json.dumps({"outputs": outputs, "entries": entries}, separators=(",", ":"))
        changes = self.changes + line + "\n"
        if not self.base or len(changes) > len(self.base) // 4:
            return ManifestText(json.dumps(manifest, separators=(",", ":")), "")
        kept = ManifestText(self.base, changes)
        kept._base_bytes = self._base_bytes
        return kept

    def write(self, path: Path):
        if self._base_bytes is None:
            self._base_bytes = self.base.encode("utf-8")
        with open(path, "wb") as f:
            f.write(self._base_bytes)
            f.write(b"\n")
            f.write(self.changes.encode("utf-8"))


def read_manifest(out: Path) -> dict | None:
    found = read_manifest_text(out)
    return found[0] if found else None


def read_manifest_text(out: Path) -> tuple[dict, ManifestText] | None:
    try:
        text = (out / MANIFEST).read_text(encoding="utf-8")
    except OSError:
        return None
    base, _, changes = text.partition("\n")
    try:
        data = json.loads(base)
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("outputs"), dict):
            return None
        data.setdefault("entries", {})
        for line in changes.splitlines():
            change = json.loads(line)
            for part in ("outputs", "entries"):
                held = data[part]
                for key, value in change[part].items():
                    if value is None:
                        held.pop(key, None)
                    else:
                        held[key] = value
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return data, ManifestText(base, changes)


def check_output_folder(out: Path) -> tuple[dict, ManifestText] | None:
    """Refuse to replace a folder that is not a build: --out pointed at ~/Documents must not empty it.
    Returns the manifest of the build there, if any (and its text)."""
    if out.exists() and not out.is_dir():
        raise BuildError(f"The output {out} exists and is not a folder.")
    manifest = read_manifest_text(out) if out.is_dir() else None
    if out.is_dir() and manifest is None and any(out.iterdir()):
        raise BuildError(f"The output folder {out} is not empty and holds no earlier build; choose an empty "
                         f"or new folder.")
    return manifest


class Staging:
    """The folder a build writes to before anything is moved into the output. A full build's is the new
    output folder; an incremental build's holds its files flat (numbered), each renamed to its path in
    the output on commit, so staging costs no folder of its own per file."""

    def __init__(self, out: Path, full: bool):
        self.out = out
        self.full = full
        self._root: Path | None = None
        self.staged: list[tuple[str, str]] = []  # (path in the output, name in the staging folder)
        self._dirs: set[str] = set()
        if full:
            self.root  # noqa: B018 - made now: a full build cannot start without it

    @property
    def root(self) -> Path:
        if self._root is None:
            try:
                self.out.parent.mkdir(parents=True, exist_ok=True)
                self._root = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.building-", dir=self.out.parent))
            except OSError as exc:
                raise BuildError(f"Cannot write beside the output folder {self.out}: {exc.strerror}.") from None
        return self._root

    def write(self, path: str, data: bytes):
        if self.full:
            name = path
            parent = path.rpartition("/")[0]
            if parent and parent not in self._dirs:
                (self.root / parent).mkdir(parents=True, exist_ok=True)
                self._dirs.add(parent)
        else:
            name = str(len(self.staged))
        with open(self.root / name, "wb") as f:
            f.write(data)
        self.staged.append((path, name))

    def commit(self, manifest: dict | ManifestText, removed: list[str]):
        if not isinstance(manifest, ManifestText):
            manifest = ManifestText(json.dumps(manifest, separators=(",", ":")))
        if self.full:
            manifest.write(self.root / MANIFEST)
            aside = None
            if self.out.exists():
                aside = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=self.out.parent))
                os.rename(self.out, aside / "old")
            os.rename(self.root, self.out)
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)
            return
        root = self.root
        for path, name in self.staged:
            try:
                os.replace(root / name, self.out / path)
            except FileNotFoundError:  # a new folder (a new entry's)
                (self.out / path).parent.mkdir(parents=True, exist_ok=True)
                os.replace(root / name, self.out / path)
        for path in removed:
            try:
                (self.out / path).unlink()
            except FileNotFoundError:
                pass
            _prune(self.out, path)
        tmp = root / MANIFEST
        manifest.write(tmp)
        os.replace(tmp, self.out / MANIFEST)
        try:
            os.rmdir(root)  # every file in it was moved out
        except OSError:
            shutil.rmtree(root, ignore_errors=True)
        self._root = None

    def abort(self):
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


def _prune(out: Path, path: str):
    parts = path.split("/")[:-1]
    while parts:
        folder = out.joinpath(*parts)
        try:
            folder.rmdir()  # only when empty
        except OSError:
            return
        parts.pop()
