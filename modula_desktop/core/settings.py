"""One settings object holding every number of SPEC sections 3.3 and 6, overridable from modula.toml."""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SettingsError


@dataclass(frozen=True)
class PluginSettings:
    max_vms: int = 4
    hook_reserve_vms: int = 1
    timeout_s: float = 5.0
    hook_timeout_ms: int = 2000
    hook_event_timeout_ms: int = 5000
    after_hook_timeout_ms: int = 5000
    max_ops: int = 1000
    hook_max_ops: int = 100
    max_instructions: int = 50_000_000
    memory_limit_mb: int = 32
    rate_limit: float = 100.0
    rate_burst: int = 100
    max_request_body: int = 1024 * 1024
    max_response_body: int = 5 * 1024 * 1024
    max_failures: int = 5
    reset_interval_s: float = 60.0
    hook_max_consecutive_aborts: int = 10
    hot_reload: bool = True
    poll_interval_s: float = 2.0
    debounce_s: float = 1.0
    cooldown_s: float = 10.0
    drain_timeout_s: float = 10.0
    # outbound HTTP (the request module, SPEC 3.11); allow_localhost lifts only the loopback rule
    allow_localhost: bool = False
    request_timeout_s: float = 10.0
    request_max_response: int = 1024 * 1024
    request_max_body: int = 1024 * 1024
    request_rate_per_min: float = 60.0
    request_rate_burst: int = 8
    request_max_redirects: int = 5
    request_concurrency: int = 8
    request_max_domains: int = 50
    request_deadline_margin_ms: int = 50
    # Not in the SPEC table but numbers all the same; kept here so none is a scattered literal.
    checkout_wait_ms: int = 100
    max_routes: int = 50
    max_hooks: int = 50
    after_hook_workers: int = 10
    slow_reload_s: float = 10.0
    max_slow_reloads: int = 3
    max_checksum_files: int = 100
    max_checksum_bytes: int = 10 * 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8642
    threads: int = 8


@dataclass(frozen=True)
class Settings:
    plugins: PluginSettings = field(default_factory=PluginSettings)
    server: ServerSettings = field(default_factory=ServerSettings)

    def replace(self, **sections) -> "Settings":
        """Return a copy with keys of sections changed, e.g. replace(plugins={"max_vms": 2})."""
        return Settings(**{
            name: _apply(getattr(self, name), values, name) if name in sections else getattr(self, name)
            for name, values in [(f.name, sections.get(f.name, {})) for f in dataclasses.fields(self)]
        })


def _check_type(section: str, key: str, default, value):
    where = f"modula.toml: [{section}] {key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SettingsError(f"{where} must be true or false, not {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{where} must be an integer, not {value!r}")
        if value < 0:
            raise SettingsError(f"{where} must not be negative")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"{where} must be a number, not {value!r}")
        if value < 0:
            raise SettingsError(f"{where} must not be negative")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise SettingsError(f"{where} must be a string, not {value!r}")
        return value
    raise SettingsError(f"{where} cannot be set")  # pragma: no cover


def _apply(obj, values: dict, section: str):
    known = {f.name: f for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in values.items():
        if key not in known:
            raise SettingsError(f"modula.toml: unknown key [{section}] {key}")
        changes[key] = _check_type(section, key, getattr(obj, key), value)
    new = dataclasses.replace(obj, **changes)
    if section == "plugins":
        if new.max_vms < 1:
            raise SettingsError("modula.toml: [plugins] max_vms must be at least 1")
        if new.hook_reserve_vms >= new.max_vms and new.max_vms > 1:
            raise SettingsError("modula.toml: [plugins] hook_reserve_vms must be smaller than max_vms")
    if section == "server" and not (0 <= new.port <= 65535):
        raise SettingsError("modula.toml: [server] port must be between 0 and 65535")
    return new


def load_settings(path: Path | None) -> Settings:
    """Read modula.toml (missing file: defaults). Any bad key or value raises SettingsError naming it."""
    if path is None or not path.exists():
        return Settings()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"modula.toml is not valid TOML: {exc}") from None
    settings = Settings()
    sections = {f.name for f in dataclasses.fields(settings)}
    for name, values in data.items():
        if name not in sections:
            raise SettingsError(f"modula.toml: unknown section [{name}]")
        if not isinstance(values, dict):
            raise SettingsError(f"modula.toml: [{name}] must be a table")
    return settings.replace(**data)
