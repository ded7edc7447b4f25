"""A site is a folder: site.db, plugins/, modula.toml and .modula/ (token, server.json, logs)."""
from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

import platformdirs

from .errors import SiteError
from .paths import BUNDLED_PLUGINS
from .settings import Settings, load_settings

APP_NAME = "ModulaDesktop"

WELCOME_BODY = """# Welcome to Modula Desktop

This is your site's first page. Edit it, or create new pages and posts from the list on the left.

Plugins live in the site's `plugins/` folder. Open **Plugins** to review and approve what they may do:
no plugin route or hook runs until you approve it.
"""


def default_site_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "site"


class Site:
    """Paths and secrets of one site folder. Creating it is idempotent."""

    def __init__(self, root: Path):
        self.root = Path(root).expanduser().resolve()

    @property
    def db_path(self) -> Path:
        return self.root / "site.db"

    @property
    def plugins_dir(self) -> Path:
        return self.root / "plugins"

    @property
    def settings_path(self) -> Path:
        return self.root / "modula.toml"

    @property
    def state_dir(self) -> Path:
        return self.root / ".modula"

    @property
    def token_path(self) -> Path:
        return self.state_dir / "token"

    @property
    def server_info_path(self) -> Path:
        return self.state_dir / "server.json"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def exists(self) -> bool:
        return self.root.is_dir() and (self.db_path.exists() or self.plugins_dir.is_dir())

    def ensure(self) -> bool:
        """Create the folder layout and token if missing. Returns True when the site was new."""
        if self.root.exists() and not self.root.is_dir():
            raise SiteError(f"site path {self.root} exists and is not a folder")
        new = not self.db_path.exists()
        try:
            for d in (self.root, self.plugins_dir, self.state_dir, self.logs_dir):
                d.mkdir(parents=True, exist_ok=True)
            if not self.settings_path.exists():
                self.settings_path.write_text(
                    "# Modula Desktop site settings. Every key of SPEC section 6 may be set here.\n"
                    "[plugins]\n# max_vms = 4\n\n[server]\n# port = 8642\n",
                    encoding="utf-8",
                )
            if not self.token_path.exists():
                self._write_private(self.token_path, secrets.token_urlsafe(32) + "\n")
        except OSError as exc:
            raise SiteError(f"cannot create site folder {self.root}: {exc.strerror}") from None
        return new

    @staticmethod
    def _write_private(path: Path, text: str):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, 0o600)

    def settings(self) -> Settings:
        return load_settings(self.settings_path)

    def token(self) -> str:
        try:
            return self.token_path.read_text(encoding="utf-8").strip()
        except OSError:
            raise SiteError(f"no admin token at {self.token_path}") from None

    def seed_bundled_plugins(self):
        """Copy the bundled example plugins into a new site (never over an existing folder)."""
        if not BUNDLED_PLUGINS.is_dir():
            return
        for src in sorted(BUNDLED_PLUGINS.iterdir()):
            dst = self.plugins_dir / src.name
            if src.is_dir() and (src / "init.lua").is_file() and not dst.exists():
                shutil.copytree(src, dst, symlinks=False)

    # --- the running instance -------------------------------------------------------------
    def write_server_info(self, host: str, port: int):
        self._write_private(self.server_info_path, json.dumps({"host": host, "port": port, "pid": os.getpid()}))

    def read_server_info(self) -> dict | None:
        try:
            info = json.loads(self.server_info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(info, dict) or not {"host", "port", "pid"} <= info.keys():
            return None
        try:
            os.kill(int(info["pid"]), 0)
        except (OSError, ValueError):
            return None  # stale file of an instance that died
        return info

    def clear_server_info(self):
        try:
            info = json.loads(self.server_info_path.read_text(encoding="utf-8"))
            if info.get("pid") == os.getpid():
                self.server_info_path.unlink()
        except (OSError, ValueError):
            pass
