"""Themes: Jinja2 templates (autoescape on) in resources/themes/default/, overridden template by template
(and static file by static file) by <site>/themes/<name>/."""
from __future__ import annotations

import hashlib
import traceback
from pathlib import Path

import jinja2

from ..paths import RESOURCES
from .errors import BuildError, ThemeError

DEFAULT_THEME = RESOURCES / "themes" / "default"
TEMPLATES = ("base.html", "index.html", "post.html", "page.html", "tag.html", "archive.html", "404.html")


def available_themes(site_root: Path) -> list[str]:
    """"default" and the theme folders in <site>/themes/ (a <site>/themes/default/ overrides the default
    theme rather than being another one)."""
    folder = Path(site_root) / "themes"
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if folder.is_dir() else []
    return ["default"] + [n for n in names if n != "default"]


class Theme:
    def __init__(self, site_root: Path, name: str, *, default_dir: Path = DEFAULT_THEME):
        self.name = name
        user = Path(site_root) / "themes" / name
        if name != "default" and not user.is_dir():
            raise BuildError(f"The theme '{name}' is not in {user.parent}; set [site] theme in modula.toml "
                             f"to a folder there, or to \"default\".")
        self.dirs = [d for d in (user, default_dir) if d.is_dir()]
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(d)) for d in self.dirs]),
            autoescape=True, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
            auto_reload=False)
        self.static = self._static_files()
        self.assets = {}  # "style.css" -> "assets/style.1a2b3c4d5e.css"
        h = hashlib.blake2b(digest_size=16)
        for rel, src in sorted(self.static.items()):
            data = src.read_bytes()
            short = hashlib.blake2b(data, digest_size=5).hexdigest()
            stem, dot, ext = rel.rpartition(".")
            self.assets[rel] = f"assets/{stem}.{short}.{ext}" if dot else f"assets/{rel}.{short}"
            h.update(rel.encode() + b"\0" + data + b"\0")
        for rel, src in sorted(self._template_files().items()):
            h.update(rel.encode() + b"\0" + src.read_bytes() + b"\0")
        self.fingerprint = h.hexdigest()

    def _files(self, sub: str | None) -> dict[str, Path]:
        found = {}
        for d in reversed(self.dirs):  # the user theme last: it wins
            base = d / sub if sub else d
            if not base.is_dir():
                continue
            for p in base.rglob("*"):
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(base).parts):
                    rel = p.relative_to(base).as_posix()
                    if sub or not rel.startswith("static/"):
                        found[rel] = p
        return found

    def _static_files(self):
        return self._files("static")

    def _template_files(self):
        return self._files(None)

    def render(self, template: str, context: dict, entry: str | None = None) -> str:
        """Render one template; any failure becomes a ThemeError naming the template, line and entry."""
        try:
            return self.env.get_template(template).render(context)
        except jinja2.TemplateSyntaxError as exc:
            raise self._error(exc.name or template, exc.lineno, entry, exc.message or str(exc)) from None
        except jinja2.TemplateNotFound as exc:
            raise ThemeError(f"The theme '{self.name}' has no template {exc.name}"
                             + (f" (needed for '{entry}')." if entry else "."), exc.name, None, entry) from None
        except Exception as exc:  # noqa: BLE001 - any error inside a template is the theme's
            name, line = self._where(exc, template)
            raise self._error(name, line, entry, f"{type(exc).__name__}: {exc}") from None

    def _where(self, exc, fallback: str):
        roots = [str(d) for d in self.dirs]
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            for root in roots:
                if frame.filename.startswith(root):
                    return Path(frame.filename).relative_to(root).as_posix(), frame.lineno
        return fallback, None

    def _error(self, template, line, entry, detail) -> ThemeError:
        where = f"{template}" + (f" line {line}" if line else "")
        what = f" while rendering '{entry}'" if entry else ""
        return ThemeError(f"The theme '{self.name}' failed in {where}{what}: {detail}", template, line, entry)
