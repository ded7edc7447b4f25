import pytest

from modula_desktop.core.errors import SettingsError
from modula_desktop.core.settings import Settings, load_settings


def test_defaults_match_the_spec():
    s = Settings()
    p = s.plugins
    assert (p.max_vms, p.hook_reserve_vms, p.timeout_s, p.hook_timeout_ms, p.hook_event_timeout_ms) == (4, 1, 5.0, 2000, 5000)
    assert (p.max_ops, p.hook_max_ops, p.memory_limit_mb, p.rate_limit, p.rate_burst) == (1000, 100, 32, 100.0, 100)
    assert (p.max_request_body, p.max_response_body) == (1024 * 1024, 5 * 1024 * 1024)
    assert (p.max_failures, p.reset_interval_s, p.hook_max_consecutive_aborts) == (5, 60.0, 10)
    assert (p.hot_reload, p.poll_interval_s, p.debounce_s, p.cooldown_s, p.drain_timeout_s) == (True, 2.0, 1.0, 10.0, 10.0)
    assert (s.server.host, s.server.port) == ("127.0.0.1", 8642)


def test_missing_file_gives_defaults(tmp_path):
    assert load_settings(tmp_path / "modula.toml") == Settings()


def test_overrides_are_read(tmp_path):
    f = tmp_path / "modula.toml"
    f.write_text("[plugins]\nmax_vms = 2\ntimeout_s = 1\nhot_reload = false\n[server]\nport = 9000\n")
    s = load_settings(f)
    assert s.plugins.max_vms == 2 and s.plugins.timeout_s == 1.0 and s.plugins.hot_reload is False
    assert s.server.port == 9000
    assert s.plugins.max_ops == 1000  # untouched keys keep defaults


@pytest.mark.parametrize("text, fragment", [
    ("[plugins]\nmax_vmz = 2\n", "unknown key [plugins] max_vmz"),
    ("[plugins]\nmax_vms = 'four'\n", "[plugins] max_vms must be an integer"),
    ("[plugins]\nhot_reload = 1\n", "[plugins] hot_reload must be true or false"),
    ("[plugins]\ntimeout_s = -1\n", "[plugins] timeout_s must not be negative"),
    ("[server]\nport = 70000\n", "[server] port must be between"),
    ("[nope]\nx = 1\n", "unknown section [nope]"),
    ("[plugins\n", "not valid TOML"),
    ("[plugins]\nmax_vms = 0\n", "max_vms must be at least 1"),
])
def test_bad_values_name_the_key(tmp_path, text, fragment):
    f = tmp_path / "modula.toml"
    f.write_text(text)
    with pytest.raises(SettingsError) as e:
        load_settings(f)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)
