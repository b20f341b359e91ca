"""The smoke lane (``pytest -m smoke``, with ``test_cli.py``'s classify test): one tiny real
training run end to end through the training command, and the GUI starting as the app does.
In the style of pytorch/examples' ``mnist/main.py --dry-run``: seconds, not minutes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_ui_helpers import LOAD_TIMEOUT_MS, RESULT_TIMEOUT_MS, draw_digit
from test_ui_helpers import make_window, settings_store, user_data  # noqa: F401  (fixtures)

pytestmark = pytest.mark.smoke


def test_training_cli_trains_a_tiny_model_end_to_end(mnist_dir, tmp_path, capsys, one_torch_thread):
    """The training command (``python -m training``'s ``main``, in this process: torch is
    imported once) on 200 real images, one epoch: JSON-lines progress, a finished run
    folder, and a model file that loads and answers. ``test_training.py`` runs the command
    as a child process."""
    import torch

    from mnist_desktop.core.checkpoint import load_model
    from training import cli

    rc = cli.main(["--recipe", "mlp", "--data", str(mnist_dir), "--limit", "200", "--epochs", "1",
                   "--threads", "1", "--output", str(tmp_path), "--progress-json"])
    out = capsys.readouterr()
    assert rc == cli.EXIT_OK, out.err
    events = [json.loads(line) for line in out.out.splitlines()]
    types = [e["type"] for e in events]
    assert "run_started" in types and "step" in types and types[-1] == "finished"
    fin = events[-1]
    assert fin["metrics"]["val_accuracy"] is not None and Path(fin["report"]).is_file()
    loaded = load_model(fin["best_model"])
    assert loaded.meta.arch == "mlp" and loaded.meta.labels == [str(i) for i in range(10)]
    with torch.no_grad():
        assert loaded.model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.gui
def test_gui_starts_draws_and_predicts(make_window, qtbot):
    """The main window with its own inference process, as the app starts: it shows, takes
    a drawn 7 and shows the prediction."""
    w = make_window()
    if not w.worker.is_ready:
        with qtbot.waitSignal(w.worker.modelLoaded, timeout=LOAD_TIMEOUT_MS):
            pass
    assert w.isVisible()
    with qtbot.waitSignal(w.live.settled, timeout=RESULT_TIMEOUT_MS) as blocker:
        draw_digit(w.canvas, "7")
    assert blocker.args[0].label == "7" and w.display.label.text() == "7"
    assert w.chart.highlighted_label == "7" and w.preview.image is not None
