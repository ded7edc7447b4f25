"""Writing [site] into modula.toml (the settings dialog's core): the rest of the file is kept, bad values
change nothing, and what is written is what the next start reads."""
from __future__ import annotations

import pytest

from modula_desktop.core.build import available_themes, build_site
from modula_desktop.core.errors import SettingsError
from modula_desktop.core.settings import SiteSettings, load_settings, save_site_settings, site_problems

from build_helpers import add_posts, open_site

ORIGINAL = """# My site's settings: keep this comment
[plugins]
max_vms = 2  # two are plenty

[site]
# the name shown in the header
title = "Old title"
posts_per_page = 5

[publish.host]
type = "folder"
path = "/srv/www"
"""


def test_changes_are_written_and_everything_else_is_kept(tmp_path):
    f = tmp_path / "modula.toml"
    f.write_text(ORIGINAL)
    site = save_site_settings(f, {"title": "Field Notes", "posts_per_page": 5, "base_url": "https://notes.example/",
                                  "language": "en"})
    assert (site.title, site.base_url, site.posts_per_page) == ("Field Notes", "https://notes.example/", 5)
    text = f.read_text()
    assert "# My site's settings: keep this comment" in text and "max_vms = 2  # two are plenty" in text
    assert "# the name shown in the header\ntitle = \"Field Notes\"" in text
    assert '[publish.host]\ntype = "folder"\npath = "/srv/www"' in text
    assert 'base_url = "https://notes.example/"' in text
    assert "language" not in text  # a default the file did not name stays out
    again = load_settings(f)
    assert again.site == site and again.plugins.max_vms == 2 and again.publish["host"].path == "/srv/www"
    assert [p.name for p in tmp_path.iterdir()] == ["modula.toml"]  # no temporary file left


def test_a_file_without_a_site_section_gets_one(tmp_path):
    f = tmp_path / "modula.toml"
    f.write_text("[plugins]\n# max_vms = 4\n\n[server]\n# port = 8642\n")
    save_site_settings(f, {"title": "Notes", "permalink": "/<year>/<slug>/"})
    text = f.read_text()
    assert text.startswith("[plugins]\n# max_vms = 4\n\n[server]\n# port = 8642\n")
    assert '[site]\ntitle = "Notes"\npermalink = "/<year>/<slug>/"\n' in text
    assert load_settings(f).site.permalink == "/<year>/<slug>/"


def test_a_missing_file_is_created(tmp_path):
    f = tmp_path / "modula.toml"
    save_site_settings(f, {"author": "Ada"})
    assert load_settings(f).site.author == "Ada"


@pytest.mark.parametrize("values, message", [
    ({"base_url": "ftp://example.com/"}, "base_url must start with http:// or https://"),
    ({"base_url": "https://"}, "base_url must name a host"),
    ({"base_url": "example.com"}, "base_url must start with"),
    ({"posts_per_page": 0}, "posts_per_page must be at least 1 and at most 100"),
    ({"posts_per_page": 101}, "posts_per_page must be at least 1 and at most 100"),
    ({"posts_per_page": "ten"}, "posts_per_page must be an integer"),
    ({"permalink": "/<id>/"}, "permalink must"),
    ({"permalink": "/<slug> x/"}, "permalink must"),
    ({"language": "english please"}, "language must be a language tag"),
    ({"title": "  "}, "title must not be empty"),
    ({"theme": "../elsewhere"}, "theme must be a folder name"),
    ({"colour": "red"}, "unknown key [site] colour"),
])
def test_bad_values_change_nothing(tmp_path, values, message):
    f = tmp_path / "modula.toml"
    f.write_text(ORIGINAL)
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        save_site_settings(f, values)
    assert f.read_text() == ORIGINAL


def test_a_broken_file_is_not_overwritten(tmp_path):
    f = tmp_path / "modula.toml"
    f.write_text("[site\ntitle = 'x'\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        save_site_settings(f, {"title": "New"})
    assert f.read_text() == "[site\ntitle = 'x'\n"


def test_site_problems_names_each_bad_field():
    problems = site_problems(SiteSettings(title="", base_url="mailto:x", posts_per_page=500, language="e"))
    assert set(problems) == {"title", "base_url", "posts_per_page", "language"}
    assert site_problems(SiteSettings()) == {}
    assert site_problems(SiteSettings(language="pt-BR", base_url="http://localhost:8000/blog/")) == {}


def test_the_service_builds_with_the_saved_settings(tmp_path):
    svc = open_site(tmp_path / "site")
    try:
        add_posts(svc, 2)
        svc.save_site_settings({"title": "Saved Title", "permalink": "/<year>/<slug>/"})
        assert svc.settings.site.title == "Saved Title" and svc.settings.plugins.hot_reload is False
        out = build_site(svc).out
        assert "<title>Saved Title</title>" in (out / "index.html").read_text()
        assert list(out.glob("*/post-1/index.html"))
        assert load_settings(svc.site.settings_path).site.title == "Saved Title"
    finally:
        svc.close()


def test_available_themes(tmp_path):
    assert available_themes(tmp_path) == ["default"]
    for name in ("mine", "default", ".hidden", "autumn"):
        (tmp_path / "themes" / name).mkdir(parents=True)
    (tmp_path / "themes" / "notes.txt").write_text("not a theme")
    assert available_themes(tmp_path) == ["default", "autumn", "mine"]
