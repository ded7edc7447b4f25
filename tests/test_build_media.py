"""The media store: content-hashed names, duplicates stored once, bad files refused, unused media found."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from build_helpers import open_site
from modula_desktop.core.build import add_media, build_site, list_media, remove_unused_media, unused_media
from modula_desktop.core.errors import ValidationError


def _image(fmt="PNG", color="red", size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def service(tmp_path):
    svc = open_site(tmp_path / "site")
    yield svc
    svc.close()


def test_the_same_image_is_stored_once(service, tmp_path):
    root = service.site.root
    ref = add_media(root, _image(), alt="A [red] box")
    assert ref.startswith("![A red box](/media/") and ref.endswith(".png)")
    file = tmp_path / "again.png"
    file.write_bytes(_image())
    assert add_media(root, file, alt="A red box") == ref
    assert len(list_media(root)) == 1
    jpeg = add_media(root, _image("JPEG"))
    assert jpeg.endswith(".jpg)") and len(list_media(root)) == 2


@pytest.mark.parametrize("data", [b"not an image", b"", b"%PDF-1.4 fake"])
def test_a_file_that_is_not_an_image_is_refused(service, data):
    with pytest.raises(ValidationError, match="not an image"):
        add_media(service.site.root, data)
    assert list_media(service.site.root) == []


def test_unused_media_are_listed_and_removed(service):
    root = service.site.root
    used = add_media(root, _image(color="blue"))
    in_draft = add_media(root, _image(color="green"))
    in_revision = add_media(root, _image(color="yellow"))
    orphan = add_media(root, _image(color="black"))
    service.content.create({"type": "post", "title": "A", "status": "published", "body": used}, run_hooks=False)
    service.content.create({"type": "post", "title": "B", "body": in_draft}, run_hooks=False)
    e = service.content.create({"type": "post", "title": "C", "body": in_revision}, run_hooks=False)
    service.content.update(e["id"], {"body": "no image now"}, run_hooks=False)
    name = orphan.split("/media/")[1].rstrip(")")
    assert unused_media(root, service.db) == [name]
    assert remove_unused_media(root, service.db) == [name]
    assert len(list_media(root)) == 3 and unused_media(root, service.db) == []


def test_only_published_media_are_built_and_gifs_stay_whole(service):
    root = service.site.root
    big = add_media(root, _image(size=(2000, 1000)))
    gif = add_media(root, _image("GIF", size=(1000, 500)))
    draft_only = add_media(root, _image(color="pink"))
    service.content.create({"type": "post", "title": "P", "slug": "p", "status": "published",
                            "body": f"{big}\n\n{gif}\n\n![gone](/media/0123456789abcdef.png)"}, run_hooks=False)
    service.content.create({"type": "post", "title": "D", "body": draft_only}, run_hooks=False)
    result = build_site(service)
    files = sorted(p.name for p in (result.out / "media").iterdir())
    stem = big.split("/media/")[1].split(".")[0]
    assert f"{stem}-480.png" in files and f"{stem}-960.png" in files and f"{stem}-1600.png" in files
    assert len(files) == 5  # big + 3 variants + the gif
    assert draft_only.split("/media/")[1].rstrip(")") not in files
    assert any("0123456789abcdef.png" in w for w in result.warnings)
    page = (result.out / "p/index.html").read_text()
    assert f'srcset="../media/{stem}-480.png 480w' in page
