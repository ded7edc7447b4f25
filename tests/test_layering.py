"""The core imports neither Qt nor Falcon; the server does not import the GUI (STYLE.md layering)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    from importlinter.cli import lint_imports

    # lint_imports returns 0 when every contract in pyproject.toml is kept
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml")) == 0


def test_core_runs_without_qt_or_falcon():
    code = (
        "import sys, tempfile, pathlib\n"
        "from modula_desktop.core.service import SiteService\n"
        "from modula_desktop.core.site import Site\n"
        "d = pathlib.Path(tempfile.mkdtemp())\n"
        "s = SiteService(Site(d)).start(hot_reload=False)\n"
        "s.close()\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'falcon', 'waitress')]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_the_plugin_package_is_split_by_role():
    """Issue 15, layout: the Lua API modules, the runtime, the lifecycle and the authoring tools each have
    their own package; only the shared errors module sits at the top of core/plugins."""
    plugins = ROOT / "modula_desktop" / "core" / "plugins"
    top = sorted(p.name for p in plugins.glob("*.py"))
    assert top == ["__init__.py", "errors.py"]
    api = {p.stem for p in (plugins / "api").glob("*.py")}
    assert {"db", "http", "hooks", "log", "json", "request", "test"} <= api
    assert {"sandbox", "vm", "pool", "dispatch"} <= {p.stem for p in (plugins / "runtime").glob("*.py")}
    assert {"manager", "reload", "manifest", "approvals", "breaker"} <= \
        {p.stem for p in (plugins / "lifecycle").glob("*.py")}
    assert {"scaffold", "testrunner"} <= {p.stem for p in (plugins / "authoring").glob("*.py")}
