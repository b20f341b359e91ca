"""ui_bench's scribble measures input waits from when each event was due (an input
thread posts it then), and the app keeps Qt's image work on the GUI thread."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_app_keeps_image_work_on_the_gui_thread(monkeypatch):
    from mnist_desktop.ui.app import keep_image_work_on_gui_thread

    monkeypatch.delenv("QT_NO_GUI_THREADPOOL", raising=False)
    keep_image_work_on_gui_thread()
    assert os.environ["QT_NO_GUI_THREADPOOL"] == "1"
    monkeypatch.setenv("QT_NO_GUI_THREADPOOL", "user")   # a value the user set is kept
    keep_image_work_on_gui_thread()
    assert os.environ["QT_NO_GUI_THREADPOOL"] == "user"


@pytest.mark.slow
def test_scribble_bench_times_every_event_from_when_it_was_due(tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(REPO),
           "MNIST_DESKTOP_DATA": str(tmp_path / "data")}
    out = subprocess.run([sys.executable, "-m", "mnist_desktop.ui_bench", "--only", "scribble", "--seconds", "2"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    sent = int(re.search(r"scribble: (\d+) mouse events", text).group(1))
    stall = re.search(r"longest GUI stall \(an input event waiting, due -> handled by the canvas\): "
                      r"([\d.]+) ms \(p99 ([\d.]+) ms, median ([\d.]+) ms, (\d+) events\)", text)
    assert stall, text
    longest, p99, median, n = float(stall[1]), float(stall[2]), float(stall[3]), int(stall[4])
    assert n == sent == 250            # every event posted by the input thread was handled, once
    assert 0 <= median <= p99 <= longest
    repaint = re.search(r"input to repaint \(due -> the canvas begins repainting the stroke\): max ([\d.]+) ms", text)
    assert repaint and float(repaint[1]) >= median
    assert "input posting lateness" in text
