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
