"""Step 4, publish: send the last build to a configured target, only what changed since the last publish
to that target. A folder target gets the changed files copied and the files an earlier publish put there
(and the build no longer has) deleted; other files in the folder are left alone. A git target commits the
build to a branch of a local repository (made under .modula/publish/<name>/ unless repo says where) and
pushes that branch to the remote."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PublishError
from .write import MANIFEST, read_manifest


@dataclass
class PublishResult:
    target: str
    sent: list = field(default_factory=list)  # added or changed paths
    deleted: list = field(default_factory=list)
    detail: str = ""

    def summary(self) -> str:
        if not self.sent and not self.deleted:
            return f"{self.target}: nothing changed since the last publish" + (f" ({self.detail})" if self.detail else "")
        return (f"{self.target}: sent {len(self.sent)} file(s), deleted {len(self.deleted)}"
                + (f" ({self.detail})" if self.detail else ""))


def _record_path(site_root: Path, name: str) -> Path:
    return Path(site_root) / ".modula" / "publish" / f"{name}.json"


def _read_record(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_record(path: Path, files: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(files, separators=(",", ":"), sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _changes(build: dict, last: dict) -> tuple[list, list]:
    sent = sorted(p for p, h in build.items() if last.get(p) != h)
    deleted = sorted(p for p in last if p not in build)
    return sent, deleted


def publish(site_root: Path, build_dir: Path, target, *, progress=None) -> PublishResult:
    """Publish build_dir (a finished build) to target (a PublishTarget). Raises PublishError."""
    manifest = read_manifest(Path(build_dir))
    if manifest is None:
        raise PublishError(f"There is no build in {build_dir} to publish; run 'modula build' first.")
    files = {p: v.partition(" ")[2] for p, v in manifest["outputs"].items()}
    record = _record_path(site_root, target.name)
    if target.type == "folder":
        result = _publish_folder(Path(build_dir), files, _read_record(record), target, site_root, progress)
    else:
        result = _publish_git(Path(build_dir), files, _read_record(record), target, site_root, progress)
    _write_record(record, files)
    return result


def _copy(src_root: Path, dst_root: Path, paths, progress=None):
    made = set()
    for i, p in enumerate(paths):
        dst = dst_root / p
        parent = dst.parent
        if parent not in made:
            parent.mkdir(parents=True, exist_ok=True)
            made.add(parent)
        tmp = parent / f".{dst.name}.publishing"
        shutil.copyfile(src_root / p, tmp)
        os.replace(tmp, dst)
        if progress is not None:
            progress(i + 1, len(paths), p)


def _delete(root: Path, paths):
    for p in paths:
        try:
            (root / p).unlink()
        except FileNotFoundError:
            continue
        parts = p.split("/")[:-1]
        while parts:
            try:
                root.joinpath(*parts).rmdir()
            except OSError:
                break
            parts.pop()


def _publish_folder(build_dir, files, last, target, site_root, progress) -> PublishResult:
    dest = Path(target.path).expanduser()
    if not dest.is_absolute():
        dest = Path(site_root) / dest
    dest = dest.resolve()
    if dest == build_dir.resolve() or build_dir.resolve() in dest.parents:
        raise PublishError(f"[publish.{target.name}] path {dest} is inside the build folder itself.")
    if dest.exists() and not dest.is_dir():
        raise PublishError(f"[publish.{target.name}] path {dest} exists and is not a folder.")
    sent, deleted = _changes(files, last)
    # a file removed or changed by hand at the target is sent again
    sent = sorted(set(sent) | {p for p in files if p not in sent and not (dest / p).is_file()})
    try:
        dest.mkdir(parents=True, exist_ok=True)
        _copy(build_dir, dest, sent, progress)
        _delete(dest, deleted)
    except OSError as exc:
        raise PublishError(f"Publishing to {dest} failed: {exc.strerror or exc}.") from None
    return PublishResult(target.name, sent, deleted, str(dest))


# ---- git -----------------------------------------------------------------------------------------
def _git(repo: Path, *args, check=True) -> subprocess.CompletedProcess:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    try:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env,
                              timeout=600)
    except FileNotFoundError:
        raise PublishError("git is not installed; a git publish target needs it.") from None
    except subprocess.TimeoutExpired:
        raise PublishError(f"git {_command(args)} took longer than 10 minutes and was stopped.") from None
    if check and proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise PublishError(f"git {_command(args)} failed: {last[-1] if last else 'exit ' + str(proc.returncode)}")
    return proc


def _command(args) -> str:
    return next((a for a in args if not a.startswith("-") and "=" not in a), "")


def _publish_git(build_dir, files, last, target, site_root, progress) -> PublishResult:
    repo = Path(target.repo).expanduser() if target.repo else Path(site_root) / ".modula" / "publish" / target.name
    if not repo.is_absolute():
        repo = Path(site_root) / repo
    remote = target.remote
    if not ("://" in remote or remote.startswith("git@")) and not Path(remote).is_absolute():
        remote = str((Path(site_root) / remote).resolve())
    branch = target.branch
    fresh = not (repo / ".git").exists()
    if fresh:
        repo.mkdir(parents=True, exist_ok=True)
        _git(repo, "init", "-q")
        last = {}  # a new working copy: compare against what the remote branch holds
        if _git(repo, "fetch", "-q", "--depth", "1", remote, branch, check=False).returncode == 0:
            _git(repo, "checkout", "-q", "-B", branch, "FETCH_HEAD")
        else:
            _git(repo, "checkout", "-q", "--orphan", branch)
    if fresh:
        # mirror: whatever the branch held that the build does not have goes
        present = {p.relative_to(repo).as_posix() for p in repo.rglob("*")
                   if p.is_file() and ".git" not in p.relative_to(repo).parts}
        _delete(repo, sorted(present - set(files)))
        sent = sorted(files)
    else:
        sent, _ = _changes(files, last)
        sent = sorted(set(sent) | {p for p in files if p not in sent and not (repo / p).is_file()})
        _delete(repo, sorted(p for p in last if p not in files))
    _copy(build_dir, repo, sent, progress)
    (repo / ".nojekyll").touch()  # GitHub Pages: serve the files as they are
    _git(repo, "add", "-A")
    status = _git(repo, "diff", "--cached", "--name-status", "--no-renames").stdout.splitlines()
    changed = [line.split("\t", 1)[1] for line in status if not line.startswith("D")]
    gone = [line.split("\t", 1)[1] for line in status if line.startswith("D")]
    author = ["-c", "user.name=Modula Desktop", "-c", "user.email=modula@localhost"]
    if changed or gone:
        _git(repo, *author, "commit", "-q", "-m", target.message)
    _git(repo, "push", "-q", remote, f"HEAD:refs/heads/{branch}")
    head = _git(repo, "rev-parse", "--short", "HEAD").stdout.strip()
    return PublishResult(target.name, sorted(p for p in changed if p != ".nojekyll"), sorted(gone),
                         f"{branch} at {head} pushed to {target.remote}")
