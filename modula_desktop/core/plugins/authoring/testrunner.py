"""`modula plugin test`: run a plugin's test/*.test.lua in an in-memory site (SPEC 3.9).

Each test_* function runs in the plugin's own VM with a `test` module, inside a savepoint that is
rolled back afterwards, with the VM's globals reset to the post-init snapshot between tests.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from peewee import SqliteDatabase

from ...settings import PluginSettings
from ...storage import PRAGMAS
from ..errors import PluginCallError, PluginLoadError
from ..api.test import MockOutbound, install_test_module
from ..lifecycle.manifest import provisional_name
from ..runtime.vm import PluginVM, VMContext


@dataclass
class TestResult:
    file: str
    name: str
    ok: bool
    error: str | None  # the failures as text (see describe), None when the test passed
    ms: float
    assertions: int = 0
    # as ModulaCMS's harness records them: {"message", "line", "error"} (error: a Lua error, not an assertion)
    failures: list = field(default_factory=list)
    logs: list = field(default_factory=list)  # what the plugin logged during the test

    def to_dict(self):
        # ours, and ModulaCMS's names for the same (test, passed, duration_ms, assertions, failures)
        return {"file": self.file, "name": self.name, "ok": self.ok, "error": self.error, "ms": round(self.ms, 2),
                "test": self.name, "passed": self.ok, "duration_ms": int(self.ms), "assertions": self.assertions,
                "failures": [{"message": f["message"], "line": f.get("line", 0), "error": bool(f.get("error"))}
                             for f in self.failures]}


def describe(failures: list, file: str) -> str:
    """The failures of a test, one a line, as ModulaCMS prints them: FAIL: message (file:line) for an
    assertion, ERROR: message for a Lua error (its text names the line)."""
    lines = []
    for f in failures:
        if f.get("error"):
            lines.append(f"ERROR: {f['message']}")
        else:
            lines.append(f"FAIL: {f['message']} ({f.get('file') or file}:{f.get('line', 0)})")
    return "\n".join(lines)


@dataclass
class TestRun:
    plugin: str
    load_error: str | None = None
    results: list[TestResult] = field(default_factory=list)
    # ModulaCMS's harness refuses a plugin without test/ (exit 2) rather than passing with no tests
    missing_tests: str | None = None
    logs: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(r.ok for r in self.results)

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.results)

    @property
    def exit_code(self) -> int:
        if self.load_error or self.missing_tests:
            return 2
        return 1 if self.failed else 0

    def to_dict(self):
        return {"plugin": self.plugin, "load_error": self.load_error, "missing_tests": self.missing_tests,
                "passed": self.passed,
                "failed": self.failed, "tests": [r.to_dict() for r in self.results]}


def run_plugin_tests(path: Path, settings: PluginSettings | None = None, name_filter: str | None = None,
                     timeout: float | None = None) -> TestRun:
    path = Path(path).resolve()
    settings = settings or PluginSettings()
    run = TestRun(plugin=path.name)
    if not (path / "init.lua").is_file():
        run.load_error = f"{path} is not a plugin folder (no init.lua)"
        return run
    # the plugin is its plugin_info.name (tables, the /api/v1/plugins/<name>/ prefix), not its folder's
    probe = PluginVM(VMContext(provisional_name(path.name), path, settings, log_sink=lambda *a: None))
    try:
        run.plugin = probe.load().name
    except PluginLoadError as exc:
        run.load_error = str(exc)
        return run
    finally:
        probe.close()
    database = SqliteDatabase(":memory:", pragmas={k: v for k, v in PRAGMAS.items() if k != "journal_mode"})
    database.connect()
    try:
        return _run_in(database, path, settings, name_filter, timeout, run)
    finally:
        database.close()


class _TestContent:
    """The core module under `modula plugin test`: the site's tables in the in-memory database and a
    content service over them (no plugin hooks run; each test's savepoint rolls its changes back), with
    the content access the plugin declares approved, as ModulaCMS's harness approves its core_access.
    Built only for a plugin that declares core access: the site's models are bound to the test database
    for the run."""

    def __init__(self, database):
        self.database = database
        self.granted: set[str] = set()
        self.service = None
        self._binding = None

    def start(self, manifest):
        self.granted = set(manifest.core)
        if not self.granted or self.service is not None:
            return
        from ... import storage
        from ...content import ContentService

        models = [m for m in vars(storage).values()
                  if isinstance(m, type) and issubclass(m, storage.BaseModel) and m is not storage.BaseModel]
        self._binding = self.database.bind_ctx(models, bind_refs=False, bind_backrefs=False)
        self._binding.__enter__()
        storage.migrate(self.database)
        self.service = ContentService(self.database)

    def stop(self):
        if self._binding is not None:
            self._binding.__exit__(None, None, None)
            self._binding = None

    def approved(self, plugin: str, access: str) -> bool:
        return access in self.granted


def _run_in(database, path: Path, settings: PluginSettings, name_filter, timeout, run: TestRun) -> TestRun:
    def sink(plugin, level, message, context=None):
        run.logs.append({"level": level, "message": message, "context": context})

    mock = MockOutbound(settings)
    content = _TestContent(database)
    try:
        return _run_with(content, database, path, settings, name_filter, timeout, run, sink, mock)
    finally:
        content.stop()


def _run_with(content, database, path, settings, name_filter, timeout, run, sink, mock) -> TestRun:
    ctx = VMContext(run.plugin, path, settings, database=database, log_sink=sink, outbound=mock,
                    content=lambda: content.service, core_approved=content.approved)
    first = None
    try:
        first = PluginVM(ctx)
        first.load()
        content.start(first.manifest)
        first.call_init()
    except PluginLoadError as exc:
        run.load_error = str(exc)
        return run
    finally:
        if first is not None:
            first.close()
    routes, hooks = first.routes, first.hooks
    first.close()
    seconds = settings.timeout_s if timeout is None else timeout
    test_dir = path / "test"
    if test_dir.is_symlink() or not test_dir.is_dir():
        run.missing_tests = f"no test/ directory found in {path}"
        return run
    files = sorted(test_dir.glob("*.test.lua"))
    if not any(f.is_file() and not f.is_symlink() for f in files):
        run.missing_tests = f"no *.test.lua files found in {test_dir}/"
        return run
    for f in files:
        if f.is_symlink() or not f.is_file():
            continue
        # each file gets a fresh VM (like a pool VM: main chunk only, on_init ran once above)
        try:
            vm = PluginVM(ctx)
            vm.load(expected=first.manifest)  # the manifest the plugin loaded with, as in the app
        except PluginLoadError as exc:
            run.load_error = str(exc)
            return run
        sb = vm.sandbox
        runner = install_test_module(vm, routes, hooks, mock)
        rel = f"test/{f.name}"
        chunk = sb.fn("load_main")(f.read_bytes(), f"={rel}".encode())
        if isinstance(chunk, tuple):
            err = chunk[1].decode("utf-8", "replace") if isinstance(chunk[1], bytes) else str(chunk[1])
            run.results.append(TestResult(rel, "(load)", False, f"syntax error: {err}", 0.0))
            continue
        env = sb.fn("get_global")(b"_G")
        before = set(_global_names(env))
        try:
            vm.ops.reset(settings.max_ops, "test")
            sb.call("run", *vm._budget_args(seconds, rel), b"module", chunk)
        except PluginCallError as exc:
            run.results.append(TestResult(rel, "(load)", False, exc.message, 0.0))
            continue
        names = sorted(n for n in set(_global_names(env)) - before if n.startswith("test_"))
        # globals a test sets are reset before the next one: the snapshot includes the test functions
        vm.snapshot()
        for name in names:
            if name_filter and name_filter not in name:
                continue
            fn = sb.fn("get_global")(name.encode())
            started = time.perf_counter()
            failures, assertions, logged_before = [], 0, len(run.logs)
            try:
                with database.atomic() as savepoint:
                    try:
                        vm.ops.reset(settings.max_ops, "test")
                        mock.clear()
                        # setup, the test, teardown (test.setup/test.teardown or global functions)
                        out = sb.call("run", *vm._budget_args(seconds, name), b"handler", runner, fn)
                        record = sb.from_lua(out[0]) if out else {}
                        assertions = int(record.get("assertions") or 0)
                        failures = list(record.get("failures") or [])
                        if vm.ops.exceeded:
                            failures.append({"message": vm.ops.message, "line": 0, "error": True})
                    except PluginCallError as exc:
                        failures.append({"message": exc.message, "line": 0, "error": True})
                    finally:
                        vm.reset()
                        savepoint.rollback()
            except Exception as exc:  # noqa: BLE001 - a database error ends this test, not the run
                failures.append({"message": f"{type(exc).__name__}: {exc}", "line": 0, "error": True})
            run.results.append(TestResult(rel, name, not failures, describe(failures, rel) if failures else None,
                                          (time.perf_counter() - started) * 1000, assertions, failures,
                                          run.logs[logged_before:]))
            if vm.broken:
                # a VM stopped by a budget is not reused: the file's next test gets a fresh one
                try:
                    vm = PluginVM(ctx)
                    vm.load()
                    sb = vm.sandbox
                    runner = install_test_module(vm, routes, hooks, mock)
                    sb.call("run", *vm._budget_args(seconds, rel), b"module",
                            sb.fn("load_main")(f.read_bytes(), f"={rel}".encode()))
                    vm.snapshot()
                except (PluginLoadError, PluginCallError) as exc:
                    run.load_error = f"the plugin could not be loaded again after {name}: {exc}"
                    return run
    return run


def _global_names(env) -> list[str]:
    return [k.decode("utf-8", "replace") for k in env.keys() if isinstance(k, bytes)]


def format_run(run: TestRun, verbose: bool = False) -> str:
    lines = []
    if run.load_error:
        lines.append(f"{run.plugin}: failed to load: {run.load_error}")
    current = None
    for r in run.results:
        if verbose or not r.ok:
            if r.file != current:
                lines.append(r.file)
                current = r.file
            mark = "PASS" if r.ok else "FAIL"
            lines.append(f"  {mark} {r.name} ({r.ms:.1f} ms)")
            if r.error:
                lines.extend(f"       {text}" for text in r.error.splitlines())
                # a handler's error reaches test.request as HANDLER_ERROR, its text the log: show it here
                lines.extend(f"       log [{e['level']}] {e['message']}" + _context_text(e) for e in r.logs
                             if e["level"] == "error")
    if verbose and run.logs:
        lines.append("log:")
        lines.extend(f"  [{e['level']}] {e['message']}" for e in run.logs[-50:])
    if run.missing_tests:
        lines.append(run.missing_tests)
    elif not run.results and not run.load_error:
        lines.append("no tests found (add test/*.test.lua files with test_* functions)")
    lines.append(f"{run.passed} passed, {run.failed} failed")
    return "\n".join(lines)


def _context_text(entry: dict) -> str:
    context = entry.get("context")
    return f"  {json.dumps(context, ensure_ascii=False, default=str)}" if context else ""
