"""``python -m bench``: every benchmark of this folder, one table at the end.

    python -m bench [--only NAME ...] [--full] [-v]

Each benchmark runs as its own process with short settings (``--full``: each one's defaults) and
reports its figures through ``bench/_report.py``; the table shows each figure, its value, the baseline
measured in the same run (or the goal), and their ratio. A benchmark that cannot run here (valgrind not
installed, say) is listed with its reason. Prints, never asserts."""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench._report import PREFIX

ROOT = Path(__file__).resolve().parents[1]

# name -> (script, arguments for a quick run). Soak scripts (soak_*.py) are not benchmarks: not here.
BENCHES = {
    "http": ("bench_http.py", ["--rounds", "5", "--seconds", "1.5"]),
    "instructions": ("bench_instructions.py", ["--requests", "500"]),
    "hooks": ("bench_hooks.py", ["--rounds", "5", "--saves", "30"]),
    "reload": ("bench_reload.py", ["--runs", "3"]),
    "containment": ("bench_containment.py", []),
    "content": ("bench_content.py", ["--quick"]),
    "build": ("bench_build.py", []),
    "window": ("bench_window.py", []),
    "screens": ("bench_screens.py", ["--keys", "60"]),
}


def run(name: str, full: bool, verbose: bool, timeout: float) -> tuple[list[dict], str | None]:
    script, quick = BENCHES[name]
    path = ROOT / "bench" / script
    if not path.exists():
        return [], "not in this checkout"
    env = dict(os.environ, PYTHONPATH=str(ROOT), QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"))
    cmd = [sys.executable, str(path), *([] if full else quick)]
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [], f"did not finish within {timeout:.0f} s"
    rows = []
    for line in done.stdout.splitlines():
        if line.startswith(PREFIX):
            rows.append(json.loads(line[len(PREFIX):]))
        elif verbose:
            print(f"  [{name}] {line}")
    if done.returncode != 0 and not rows:
        last = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["(no output)"])[-1]
        return [], f"exit {done.returncode}: {last[:120]}"
    return rows, None


def fmt(value, unit):
    if value is None:
        return ""
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}".strip()
    return f"{value:.3g} {unit}".strip()


def table(results: dict) -> str:
    lines = ["| benchmark | figure | value | baseline (same run) or goal | ratio |", "|---|---|---|---|---|"]
    for name, (rows, problem) in results.items():
        if problem:
            lines.append(f"| {name} | — | not run: {problem} | | |")
            continue
        if not rows:
            lines.append(f"| {name} | — | ran, reported no figures | | |")
        for r in rows:
            base = (f"{fmt(r['baseline'], r['unit'])} ({r['baseline_label']})" if r.get("baseline") is not None
                    else (f"goal {r['goal']}" if r.get("goal") else ""))
            if r.get("baseline") is not None and r.get("goal"):
                base += f"; goal {r['goal']}"
            ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else ""
            lines.append(f"| {name} | {r['figure']} | {fmt(r['value'], r['unit'])} | {base} | {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHES), help="run only these")
    ap.add_argument("--full", action="store_true", help="each benchmark with its own (longer) defaults")
    ap.add_argument("-v", "--verbose", action="store_true", help="show each benchmark's own output")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per benchmark (default 900)")
    args = ap.parse_args(argv)
    names = args.only or list(BENCHES)
    started = time.monotonic()
    results = {}
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = run(name, args.full, args.verbose, args.timeout)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"
    print(f"\n{when} on {machine} ({time.monotonic() - started:.0f} s{'' if args.full else ', quick settings'})\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
