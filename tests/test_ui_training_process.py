"""The training child process as the GUI runs it: events arrive, cancel is immediate, a
dying child is reported through a signal, never raised."""

from __future__ import annotations

import sys

import pytest

from mnist_desktop.core.paths import resources_dir

pytestmark = pytest.mark.gui

BUNDLED = resources_dir() / "data" / "mnist-5k"


def _collect(proc):
    seen = {"events": [], "failed": [], "finished": []}
    proc.event.connect(seen["events"].append)
    proc.failed.connect(seen["failed"].append)
    proc.finished.connect(seen["finished"].append)
    return seen


@pytest.mark.slow
def test_tiny_real_run_streams_events(qtbot, tmp_path):
    from mnist_desktop.ui.training.process import TrainingProcess

    proc = TrainingProcess()
    seen = _collect(proc)
    proc.start(["--recipe", "mlp", "--data", str(BUNDLED), "--limit", "400", "--epochs", "1",
                "--output", str(tmp_path), "--step-event-interval", "0"], threads=1)
    qtbot.waitUntil(lambda: bool(seen["finished"]), timeout=120_000)
    types = [e["type"] for e in seen["events"]]
    assert "run_started" in types and "epoch_end" in types and types[-1] == "finished", types
    assert seen["failed"] == [] and seen["finished"] == [0]


@pytest.mark.slow
def test_cancel_is_immediate_and_resumable(qtbot, tmp_path):
    from mnist_desktop.ui.training.process import TrainingProcess

    proc = TrainingProcess()
    seen = _collect(proc)
    proc.start(["--recipe", "mlp", "--data", str(BUNDLED), "--epochs", "50", "--output", str(tmp_path),
                "--step-event-interval", "0"], threads=1)
    qtbot.waitUntil(lambda: any(e["type"] == "step" for e in seen["events"]), timeout=120_000)
    proc.cancel()
    qtbot.waitUntil(lambda: bool(seen["finished"]), timeout=10_000)
    assert seen["events"][-1]["type"] == "cancelled"
    assert seen["failed"] == []
    started = next(e for e in seen["events"] if e["type"] == "run_started")
    assert started["run_dir"]


def test_a_child_that_dies_is_reported_not_raised(qtbot):
    from mnist_desktop.ui.training.process import TrainingProcess

    def dying(*args):
        return [sys.executable, "-c", "import sys; print('{\"v\":1,\"type\":\"status\"}', flush=True); "
                "sys.stderr.write('Traceback: boom\\n'); sys.exit(7)"]

    proc = TrainingProcess(command=dying)
    seen = _collect(proc)
    proc.start(["--recipe", "mlp"])
    qtbot.waitUntil(lambda: bool(seen["finished"]), timeout=20_000)
    assert [e["type"] for e in seen["events"]] == ["status"]
    assert len(seen["failed"]) == 1 and "code 7" in seen["failed"][0] and "boom" in seen["failed"][0]
    assert seen["finished"] == [7]


def test_a_missing_program_is_reported(qtbot, tmp_path):
    from mnist_desktop.ui.training.process import TrainingProcess

    proc = TrainingProcess(command=lambda *a: [str(tmp_path / "no-such-program")])
    seen = _collect(proc)
    proc.start([])
    qtbot.waitUntil(lambda: bool(seen["finished"]), timeout=10_000)
    assert seen["failed"] and "could not start" in seen["failed"][0]
