"""One line per figure that `python -m bench` collects into its table: ``RESULT<TAB>{json}``.

A benchmark prints its own readable lines as well; this is only the part the runner reads. Every figure
has its baseline measured in the same run (or a goal when there is nothing to compare with)."""
from __future__ import annotations

import json
import sys

PREFIX = "RESULT\t"


def result(figure: str, value: float, unit: str, *, baseline: float | None = None, baseline_label: str = "",
           goal: str = "", better: str = "lower"):
    """Report one figure. ratio = value / baseline when there is a baseline."""
    row = {"figure": figure, "value": value, "unit": unit, "baseline": baseline,
           "baseline_label": baseline_label, "goal": goal, "better": better}
    if baseline:
        row["ratio"] = value / baseline
    print(PREFIX + json.dumps(row), flush=True)
    sys.stdout.flush()
