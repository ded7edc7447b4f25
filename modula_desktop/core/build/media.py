"""Media: images in <site>/media/ under content-hashed names (the same image is stored once), the width
variants the build writes for them, and the list of media no entry uses any more."""
from __future__ import annotations

import hashlib
import html
import io
import os
import re
import tempfile
from pathlib import Path

from ..errors import ValidationError
from ..storage import expand_body
from .collect import MEDIA_REF

FORMATS = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "WEBP": "webp"}
NAME_RE = re.compile(r"^([0-9a-f]{16,64})\.(png|jpe?g|gif|webp)$")
HASH_CHARS = 16
COLUMN_PX = 704  # the default theme's 44rem text column
MAX_PIXELS = 50_000_000  # a decompression bomb stops here, not in the build
MAX_BYTES = 100 * 1024 * 1024  # a file this big (a video dropped by mistake) is not read at all


def media_dir(site_root: Path) -> Path:
    return Path(site_root) / "media"


def _image_format(data: bytes) -> tuple[str, tuple[int, int]]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, size = im.format, im.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise ValidationError("The file is not an image Modula can use (PNG, JPEG, GIF or WebP).") from None
    if fmt not in FORMATS:
        raise ValidationError(f"{fmt} images are not supported; use PNG, JPEG, GIF or WebP.")
    if size[0] * size[1] > MAX_PIXELS:
        raise ValidationError(f"The image is {size[0]}x{size[1]} pixels, more than Modula accepts.")
    return FORMATS[fmt], size


def add_media(site_root: Path, source: bytes | str | Path, alt: str = "") -> str:
    """Store an image (bytes or a file path) in the site's media folder and return the Markdown that
    shows it. The name is the content's hash: the same image added twice is stored once."""
    if not isinstance(source, bytes):
        path = Path(source)
        if path.is_dir():
            raise ValidationError(f"{path.name} is a folder, not an image.")
        if path.stat().st_size > MAX_BYTES:
            raise ValidationError(f"{path.name} is larger than {MAX_BYTES // (1024 * 1024)} MB; Modula does not "
                                  f"take images that big.")
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    ext, _ = _image_format(data)
    name = f"{hashlib.sha256(data).hexdigest()[:HASH_CHARS]}.{ext}"
    folder = media_dir(site_root)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    if not target.exists():
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".adding-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    label = alt.replace("[", "").replace("]", "").strip()
    return f"![{label}](/media/{name})"


def list_media(site_root: Path) -> list[str]:
    folder = media_dir(site_root)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and NAME_RE.match(p.name))


def used_media(db) -> set[str]:
    """Media named by any entry, draft or published, or by any revision (a restore may bring it back)."""
    used = set()
    for (body,) in db.execute_sql("SELECT body FROM content WHERE instr(body, '/media/') > 0"):
        used.update(MEDIA_REF.findall(body or ""))
    # revision bodies are mostly zlib (storage.compress_body): those are read whole
    for (body,) in db.execute_sql("SELECT body FROM content_revision WHERE typeof(body) = 'blob' "
                                  "OR instr(body, '/media/') > 0"):
        used.update(MEDIA_REF.findall(expand_body(body)))
    return used


def unused_media(site_root: Path, db) -> list[str]:
    used = used_media(db)
    return [name for name in list_media(site_root) if name not in used]


def remove_unused_media(site_root: Path, db, names=None) -> list[str]:
    """Delete the unused media (only those of names, when given) and return what was deleted. Use is
    checked again here: an image an entry started using since it was listed stays."""
    removed = []
    unused = unused_media(site_root, db)
    for name in unused if names is None else [n for n in unused if n in set(names)]:
        try:
            (media_dir(site_root) / name).unlink()
            removed.append(name)
        except FileNotFoundError:
            pass
    return removed


# ---- the build's side ------------------------------------------------------------------------
class MediaSet:
    """The media a build uses: sizes read once, variant names, and the <img> tags pointing at them."""

    def __init__(self, site_root: Path, widths: tuple, quality: int):
        self.folder = media_dir(site_root)
        self.widths = tuple(sorted(set(widths)))
        self.quality = quality
        self._sizes: dict[str, tuple[int, int] | None] = {}
        self.missing: set[str] = set()

    def size(self, name: str):
        if name not in self._sizes:
            from PIL import Image

            try:
                with Image.open(self.folder / name) as im:
                    self._sizes[name] = im.size
            except (OSError, ValueError):
                self._sizes[name] = None
                self.missing.add(name)
        return self._sizes[name]

    def variants(self, name: str) -> list[tuple[int, str]]:
        """(width, output path) of each smaller copy the build writes, narrowest first; GIFs stay whole
        (a resize would drop their animation)."""
        size = self.size(name)
        if size is None or name.endswith(".gif"):
            return []
        stem, ext = name.rsplit(".", 1)
        return [(w, f"media/{stem}-{w}.{ext}") for w in self.widths if w < size[0]]

    def write_variant(self, name: str, width: int) -> bytes:
        from PIL import Image

        with Image.open(self.folder / name) as im:
            height = max(1, round(im.size[1] * width / im.size[0]))
            small = im.resize((width, height), Image.LANCZOS)
            out = io.BytesIO()
            fmt = im.format
            if fmt == "JPEG" and small.mode not in ("RGB", "L"):
                small = small.convert("RGB")
            small.save(out, format=fmt, quality=self.quality, optimize=True)
            return out.getvalue()

    def img_tag(self, name: str, alt: str, title: str, prefix: str) -> str:
        size = self.size(name)
        src = f"{prefix}media/{name}"
        attrs = [f'src="{src}"', f'alt="{alt}"']
        if title:
            attrs.append(f'title="{title}"')
        if size is not None:
            variants = self.variants(name)
            if variants:
                srcset = ", ".join(f"{prefix}{path} {w}w" for w, path in variants) + f", {src} {size[0]}w"
                attrs.append(f'srcset="{srcset}"')
                # the theme's column is at most COLUMN_PX wide: a browser need not fetch more
                shown = min(size[0], COLUMN_PX)
                attrs.append(f'sizes="(max-width: {shown}px) 100vw, {shown}px"')
            attrs.append(f'width="{size[0]}" height="{size[1]}"')
        attrs.append('loading="lazy" decoding="async"')
        return "<img " + " ".join(attrs) + ">"


_IMG = re.compile(r'<img src="/media/([0-9a-f]{16,64}\.(?:png|jpe?g|gif|webp))" alt="([^"]*)"(?: title="([^"]*)")? />')
_ROOT_LINK = re.compile(r'(href|src)="/(?!/)')


def localize(body_html: str, prefix: str, media: MediaSet | None) -> str:
    """Point the site-absolute links of rendered Markdown ("/other-post/", "/media/x.png") at the build's
    own files relative to the page (prefix: "../" per folder level, or the base URL for feeds); media
    images get their srcset, size and lazy loading."""
    if "/media/" in body_html and media is not None:
        body_html = _IMG.sub(lambda m: media.img_tag(m.group(1), m.group(2), m.group(3) or "", prefix), body_html)
    if '="/' in body_html:
        body_html = _ROOT_LINK.sub(lambda m: f'{m.group(1)}="{prefix or "./"}', body_html)
    return body_html


def escape(text: str) -> str:
    return html.escape(text, quote=True)
