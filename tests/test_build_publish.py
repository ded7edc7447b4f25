"""modula publish: a folder target and a git target (a real bare repository), each sent only what changed
since the last publish to it; and the build/publish/media commands' output and exit codes."""
from __future__ import annotations

import io
import subprocess

import pytest
from PIL import Image

from build_helpers import add_posts, open_site
from modula_desktop.cli.main import main
from modula_desktop.core.build import build_site
from modula_desktop.core.build.errors import PublishError
from modula_desktop.core.build.publish import publish
from modula_desktop.core.settings import PublishTarget


@pytest.fixture
def service(tmp_path):
    svc = open_site(tmp_path / "site")
    yield svc
    svc.close()


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and ".git" not in p.relative_to(folder).parts)


def test_folder_target_sends_changes_and_deletes_what_went(service, tmp_path):
    posts = add_posts(service, 5)
    out = build_site(service).out
    dest = tmp_path / "www"
    dest.mkdir()
    (dest / "CNAME").write_text("notes.example")  # not ours: never deleted
    target = PublishTarget(name="www", type="folder", path=str(dest))
    first = publish(service.site.root, out, target)
    assert set(_files(dest)) == set(_files(out)) - {".modula-build.json"} | {"CNAME"}
    assert len(first.sent) == len(_files(out)) - 1 and first.deleted == []

    service.content.update(posts[1]["id"], {"body": "Edited."}, run_hooks=False)
    service.content.delete(posts[4]["id"], run_hooks=False)
    result = build_site(service)
    second = publish(service.site.root, out, target)
    assert set(second.sent) == set(result.written)
    assert "post-1/index.html" in second.sent and second.deleted == result.removed
    assert "post-4/index.html" in second.deleted
    assert not (dest / "post-4").exists() and (dest / "CNAME").exists()
    assert "Edited." in (dest / "post-1/index.html").read_text()
    assert publish(service.site.root, out, target).sent == []
    assert "nothing changed" in publish(service.site.root, out, target).summary()


def test_publish_without_a_build_is_one_clear_error(service, tmp_path):
    with pytest.raises(PublishError, match="run 'modula build' first"):
        publish(service.site.root, tmp_path / "nobuild", PublishTarget(name="x", type="folder", path="x"))


def _git(*args, cwd=None):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def test_git_target_commits_and_pushes_only_what_changed(service, tmp_path):
    remote = tmp_path / "pages.git"
    _git("init", "-q", "--bare", str(remote))
    posts = add_posts(service, 4)
    out = build_site(service).out
    target = PublishTarget(name="pages", type="git", remote=str(remote), branch="gh-pages")
    first = publish(service.site.root, out, target)
    tree = _git("--git-dir", str(remote), "ls-tree", "-r", "--name-only", "gh-pages").split()
    assert set(tree) == set(_files(out)) - {".modula-build.json"} | {".nojekyll"}
    assert "post-3/index.html" in first.sent and "gh-pages" in first.detail

    service.content.update(posts[2]["id"], {"body": "Changed words."}, run_hooks=False)
    service.content.delete(posts[0]["id"], run_hooks=False)
    result = build_site(service)
    second = publish(service.site.root, out, target)
    assert set(second.sent) == set(result.written) and second.deleted == result.removed
    assert "post-0/index.html" in second.deleted
    log = _git("--git-dir", str(remote), "log", "--format=%s", "gh-pages").splitlines()
    assert len(log) == 2
    shown = _git("--git-dir", str(remote), "show", "--name-only", "--format=", "gh-pages").split()
    assert set(shown) == set(second.sent) | set(second.deleted)
    assert "Changed words." in _git("--git-dir", str(remote), "show", "gh-pages:post-2/index.html")

    third = publish(service.site.root, out, target)
    assert third.sent == [] and third.deleted == []
    assert len(_git("--git-dir", str(remote), "log", "--format=%s", "gh-pages").splitlines()) == 2


def test_git_target_from_a_new_working_copy_mirrors_the_branch(service, tmp_path):
    """A second machine (no local repository yet) fetches the branch, and removes what the build lacks."""
    remote = tmp_path / "pages.git"
    _git("init", "-q", "--bare", str(remote))
    posts = add_posts(service, 5)
    out = build_site(service).out
    publish(service.site.root, out, PublishTarget(name="a", type="git", remote=str(remote)))
    service.content.delete(posts[1]["id"], run_hooks=False)
    build_site(service)
    second = publish(service.site.root, out, PublishTarget(name="b", type="git", remote=str(remote)))
    assert "post-1/index.html" in second.deleted and "post-1/index.html" not in second.sent
    assert "post-4/index.html" not in second.sent  # the branch already had it as it is
    assert "post-1/index.html" not in _git("--git-dir", str(remote), "ls-tree", "-r", "--name-only", "gh-pages")


def test_git_push_failure_is_one_clear_error(service, tmp_path):
    add_posts(service, 1)
    out = build_site(service).out
    with pytest.raises(PublishError, match="^git "):
        publish(service.site.root, out, PublishTarget(name="bad", type="git", remote=str(tmp_path / "nope.git")))


# ---- the commands ----------------------------------------------------------------------------------
def test_build_and_publish_commands(service, tmp_path, capsys):
    add_posts(service, 3)
    root = service.site.root
    dest = tmp_path / "www"
    (root / "modula.toml").write_text(f'[publish.www]\ntype = "folder"\npath = "{dest}"\n')
    assert main(["build", "--site", str(root)]) == 0
    assert "built" in capsys.readouterr().out
    assert main(["publish", "--site", str(root), "--target", "www"]) == 0
    out = capsys.readouterr().out
    assert "www: sent" in out and "+ index.html" in out
    assert (dest / "post-1/index.html").is_file()
    assert main(["publish", "--site", str(root), "--target", "nope"]) == 1
    assert "no publish target 'nope'" in capsys.readouterr().err
    assert main(["build", "--site", str(root), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err


def test_build_command_reports_a_broken_theme_in_one_line(service, capsys):
    add_posts(service, 1)
    root = service.site.root
    (root / "themes" / "default").mkdir(parents=True)
    (root / "themes" / "default" / "index.html").write_text("{% if %}")
    assert main(["build", "--site", str(root)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("modula: The theme 'default' failed in index.html line 1") and err.count("\n") == 1
    assert not (root / "build").exists()


def test_build_command_on_a_folder_without_a_site(tmp_path, capsys):
    assert main(["build", "--site", str(tmp_path / "none")]) == 1
    assert "there is no site" in capsys.readouterr().err


def test_media_commands(service, tmp_path, capsys):
    image = tmp_path / "photo.png"
    buf = io.BytesIO()
    Image.new("RGB", (10, 10), "red").save(buf, "PNG")
    image.write_bytes(buf.getvalue())
    root = service.site.root
    assert main(["media", "add", "--site", str(root), str(image)]) == 0
    ref = capsys.readouterr().out.strip()
    assert ref.startswith("![photo](/media/")
    assert main(["media", "unused", "--site", str(root)]) == 0
    assert "unused media/" in capsys.readouterr().out
    assert main(["media", "unused", "--site", str(root), "--remove"]) == 0
    assert "removed media/" in capsys.readouterr().out
    assert not any((root / "media").iterdir())
