"""The screenshots script (docs/screenshots/) runs offscreen on its own temp site and writes every image."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtGui import QImage

from modula_desktop.gui.screenshots import SHOTS

pytestmark = pytest.mark.timeout(120)


def mean_lightness(image: QImage) -> float:
    total = n = 0
    for y in range(0, image.height(), 7):
        for x in range(0, image.width(), 7):
            total += image.pixelColor(x, y).lightness()
            n += 1
    return total / n


def test_the_script_writes_every_screenshot(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), QT_QPA_PLATFORM="offscreen",
               HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    out = tmp_path / "shots"
    run = subprocess.run([sys.executable, "-m", "modula_desktop.gui.screenshots", str(out), "--traffic-seconds", "3"],
                         capture_output=True, text=True, env=env, timeout=110)
    assert run.returncode == 0, run.stderr[-2000:]
    images = {name: QImage(str(out / name)) for name in SHOTS}
    for name, image in images.items():
        assert not image.isNull() and image.width() >= 600 and image.height() >= 400, name
    assert mean_lightness(images["main-dark.png"]) < 80 < mean_lightness(images["main-light.png"])
    assert not (tmp_path / "config" / "Modula").exists(), "the user's settings are not touched"
