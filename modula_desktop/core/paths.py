"""Where the repository's resources and bundled plugins live."""
from pathlib import Path
import sys

def _root() -> Path:
    frozen = getattr(sys, "_MEIPASS", None)  # PyInstaller bundle
    if frozen:
        return Path(frozen)
    return Path(__file__).resolve().parents[2]


ROOT = _root()
RESOURCES = ROOT / "resources"
BUNDLED_PLUGINS = ROOT / "plugins"
LUA_DIR = Path(__file__).resolve().parent / "plugins" / "lua"
