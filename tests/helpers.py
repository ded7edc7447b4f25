"""Small helpers shared by tests: write plugins into a site folder."""
from __future__ import annotations

import textwrap
from pathlib import Path


def write_plugin(site_root: Path, name: str, body: str, version: str = "1.0.0", info_extra: str = "",
                 folder: str | None = None) -> Path:
    """plugins/<folder or name>/init.lua with a plugin_info header and body."""
    d = Path(site_root) / "plugins" / (folder or name)
    d.mkdir(parents=True, exist_ok=True)
    header = (f'plugin_info = {{name = "{name}", version = "{version}", description = "test plugin", '
              f'author = "t", license = "MIT"{", " + info_extra if info_extra else ""}}}\n')
    (d / "init.lua").write_text(header + textwrap.dedent(body), encoding="utf-8")
    return d


def route_error(r) -> dict:
    """A plugin route's error answer, checked to be ModulaCMS's envelope with the X-Request-Id header:
    returns {"code", "message", "request_id"}."""
    body = r.json()
    assert list(body) == ["error"], body
    err = body["error"]
    assert set(err) == {"code", "message", "request_id"}, err
    headers = {k.lower(): v for k, v in r.headers.items()}
    assert err["request_id"] and headers.get("x-request-id") == err["request_id"]
    return err


def logged(logbook, plugin: str, request_id: str) -> str:
    """The message of the plugin's log entry made under request_id (there is exactly one)."""
    found = [e["message"] for e in logbook.entries(plugin, 500)
             if isinstance(e.get("context"), dict) and e["context"].get("request_id") == request_id]
    assert len(found) == 1, (request_id, logbook.entries(plugin, 20))
    return found[0]
