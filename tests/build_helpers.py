"""Shared by the site build tests: a real site (SQLite file, SiteService) with posts and pages, and
helpers that read a built folder."""
from __future__ import annotations

import os
import re
from pathlib import Path

from modula_desktop.core.service import SiteService
from modula_desktop.core.settings import Settings
from modula_desktop.core.site import Site

HREF = re.compile(r'(?:href|src)="([^"]*)"')
SRCSET = re.compile(r'srcset="([^"]*)"')


def open_site(root: Path, **sections) -> SiteService:
    settings = Settings().replace(plugins={"hot_reload": False}, **sections)
    return SiteService(Site(root), settings)


def add_posts(service, n: int, *, drafts_every: int = 0, tags=("alpha", "beta", "gamma")) -> list[dict]:
    """n posts (every drafts_every-th a draft), each with two tags and a first paragraph."""
    made = []
    for i in range(n):
        status = "draft" if drafts_every and i % drafts_every == 0 else "published"
        made.append(service.content.create({
            "type": "post", "title": f"Post number {i}", "slug": f"post-{i}", "status": status,
            "body": f"Opening paragraph of post {i}, with *emphasis*.\n\n## Section\n\nMore of post {i}.\n",
            "fields": {"tags": [tags[i % len(tags)], f"group {i % 7}"]}}, run_hooks=False))
    return made


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """path -> (bytes, mtime_ns) of every file, the manifest included."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            p = Path(dirpath) / name
            out[p.relative_to(folder).as_posix()] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out


def html_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.html"))


def internal_links(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    links = HREF.findall(text)
    for srcset in SRCSET.findall(text):
        links += [part.strip().split(" ")[0] for part in srcset.split(",")]
    return [link for link in links if not re.match(r"^[a-z]+:|^//|^#", link)]


def resolve(build: Path, page: Path, link: str) -> Path:
    link = link.split("#")[0].split("?")[0]
    base = build if link.startswith("/") else page.parent
    target = (base / link.lstrip("/")).resolve()
    return target / "index.html" if link.endswith("/") or target.is_dir() else target


def leftovers(build: Path) -> list[str]:
    """Staging or aside folders a build left next to its output."""
    return [p.name for p in build.parent.iterdir() if p.name.startswith(f".{build.name}.")]
