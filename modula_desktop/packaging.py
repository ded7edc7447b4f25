"""``python -m modula_desktop.packaging [--dist DIR]``: the one-folder desktop app, built with
PyInstaller from ``build_app.spec`` at the top of the repository. The result is ``DIR/ModulaDesktop/``
with the ``modula`` executable inside (the window, ``serve`` and every CLI command)."""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "build_app.spec"
APP_NAME = "ModulaDesktop"


def build(dist: Path, work: Path | None = None, quiet: bool = True) -> Path:
    """Build the app into dist; returns the path of the ``modula`` executable."""
    if not SPEC.is_file():
        raise SystemExit(f"modula: {SPEC} not found: the app is built from a checkout of the repository")
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        raise SystemExit('modula: PyInstaller is not installed: pip install -e ".[package]"') from None
    with tempfile.TemporaryDirectory(prefix="modula-build-") as tmp:
        cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--distpath", str(dist),
               "--workpath", str(work or Path(tmp) / "work"), str(SPEC)]
        if quiet:
            cmd[3:3] = ["--log-level", "ERROR"]
        done = subprocess.run(cmd, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"modula: PyInstaller failed (exit {done.returncode})")
    exe = dist / APP_NAME / ("modula.exe" if sys.platform == "win32" else "modula")
    if not exe.is_file():
        raise SystemExit(f"modula: the build finished but {exe} is missing")
    return exe


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modula_desktop.packaging", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dist", type=Path, default=REPO / "dist", help="output folder (default: dist/)")
    parser.add_argument("--verbose", action="store_true", help="show PyInstaller's full log")
    args = parser.parse_args(argv)
    target = args.dist / APP_NAME
    if target.exists():
        shutil.rmtree(target)
    exe = build(args.dist, quiet=not args.verbose)
    print(f"built {exe} ({folder_size(target) / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
