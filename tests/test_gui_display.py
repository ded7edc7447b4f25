"""`modula run` where no window can be shown: one line saying what is missing, exit 2 (Qt's xcb plugin
would abort the process with a message about plugins instead)."""
import os
import subprocess
import sys

from modula_desktop.gui.display import display_problem


def test_without_a_display_modula_run_says_so_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    done = subprocess.run([sys.executable, "-m", "modula_desktop", "run", "--site", str(tmp_path / "s")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no display" in lines[0] and "modula serve" in lines[0], done.stderr
    assert not (tmp_path / "s").exists()  # nothing was created for a window that never opened


def test_a_missing_xcb_cursor_library_is_named():
    problem = display_problem({"DISPLAY": ":0"}, "linux", find_library=lambda name: None)
    assert "libxcb-cursor" in problem and "libxcb-cursor0" in problem


def test_a_chosen_platform_or_a_working_display_is_no_problem():
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux", find_library=lambda n: None) is None
    assert display_problem({"DISPLAY": ":0"}, "linux", find_library=lambda n: "libxcb-cursor.so.0") is None
    assert display_problem({"WAYLAND_DISPLAY": "wayland-0"}, "linux", find_library=lambda n: None) is None
    assert display_problem({}, "darwin") is None
