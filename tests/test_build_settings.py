"""[site], [build] and [publish.<name>] in modula.toml (SPEC 9): defaults, overrides, one clear error each."""
import pytest

from modula_desktop.core.errors import SettingsError
from modula_desktop.core.settings import PublishTarget, Settings, load_settings


def test_site_defaults():
    s = Settings().site
    assert (s.theme, s.posts_per_page, s.permalink, s.language) == ("default", 10, "/<slug>/", "en")
    assert Settings().build.continue_on_plugin_error is False
    assert Settings().publish == {}


def test_site_build_and_publish_are_read(tmp_path):
    f = tmp_path / "modula.toml"
    f.write_text('[site]\ntitle = "Notes"\nbase_url = "https://notes.example/"\nposts_per_page = 3\n'
                 'permalink = "/<year>/<month>/<slug>/"\n'
                 '[build]\ncontinue_on_plugin_error = true\nimage_widths = [320, 640]\n'
                 '[publish.host]\ntype = "folder"\npath = "/srv/www"\n'
                 '[publish.pages]\ntype = "git"\nremote = "/tmp/x.git"\nbranch = "pages"\n')
    s = load_settings(f)
    assert (s.site.title, s.site.posts_per_page, s.site.permalink) == ("Notes", 3, "/<year>/<month>/<slug>/")
    assert s.build.continue_on_plugin_error is True and s.build.image_widths == (320, 640)
    assert s.publish["host"] == PublishTarget(name="host", type="folder", path="/srv/www")
    assert (s.publish["pages"].type, s.publish["pages"].remote, s.publish["pages"].branch) == \
        ("git", "/tmp/x.git", "pages")


@pytest.mark.parametrize("text, fragment", [
    ("[site]\ntitel = 'x'\n", "unknown key [site] titel"),
    ("[site]\nposts_per_page = 'ten'\n", "[site] posts_per_page must be an integer"),
    ("[site]\nposts_per_page = 0\n", "[site] posts_per_page must be at least 1"),
    ("[site]\ntitle = 3\n", "[site] title must be a string"),
    ("[site]\npermalink = '/<id>/'\n", "[site] permalink must"),
    ("[site]\npermalink = 'slug/'\n", "[site] permalink must"),
    ("[site]\npermalink = '/<slug>/../'\n", "[site] permalink must"),
    ("[site]\nbase_url = 'example.com'\n", "[site] base_url must start with"),
    ("[site]\ntheme = '../x'\n", "[site] theme must be a folder name"),
    ("[build]\ncontinue_on_plugin_error = 'yes'\n", "[build] continue_on_plugin_error must be true or false"),
    ("[build]\nimage_widths = [0]\n", "[build] image_widths must be a list of positive integers"),
    ("[build]\nspeed = 1\n", "unknown key [build] speed"),
    ("[publish.x]\ntype = 'ftp'\npath = 'a'\n", "[publish.x] type must be"),
    ("[publish.x]\ntype = 'folder'\n", "[publish.x] needs a path"),
    ("[publish.x]\ntype = 'git'\n", "[publish.x] needs a remote"),
    ("[publish.x]\ntype = 'folder'\npath = 'a'\nhost = 'h'\n", "unknown key [publish.x] host"),
    ("[publish.x]\ntype = 'folder'\npath = 'a'\nname = 'h'\n", "unknown key [publish.x] name"),
    ("[publish]\nx = 1\n", "[publish.x] must be a table"),
])
def test_bad_values_are_one_clear_error(tmp_path, text, fragment):
    f = tmp_path / "modula.toml"
    f.write_text(text)
    with pytest.raises(SettingsError) as info:
        load_settings(f)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
