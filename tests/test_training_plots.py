"""training.plots: the report PNGs are drawn with matplotlib (Agg), readable and non-blank."""

from __future__ import annotations

import numpy as np
from PIL import Image

from training import plots


def _ink(path):
    img = np.asarray(Image.open(path).convert("L"), np.float32)
    return img.shape, float((img < 128).mean())


def test_report_plots_are_matplotlib_pngs(tmp_path):
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": None if e == 2 else 1.1 / e,
                "train_accuracy": 0.8 + 0.01 * e, "val_accuracy": 0.79 + 0.01 * e} for e in range(1, 6)]
    plots.plot_curves(history, tmp_path / "curves.png")
    cm = np.diag([50, 40, 30]) + 1
    plots.plot_confusion(cm, ["a", "b", "c"], tmp_path / "cm.png")
    plots.plot_examples(np.random.default_rng(0).random((12, 28, 28)), [f"{i}" for i in range(12)],
                        tmp_path / "ex.png", columns=5)
    plots.plot_examples(np.zeros((0, 28, 28)), [], tmp_path / "none.png")
    shape, ink = _ink(tmp_path / "curves.png")
    assert shape == (380, 1000) and 0.005 < ink < 0.3
    assert 0.005 < _ink(tmp_path / "cm.png")[1] < 0.5
    shape, ink = _ink(tmp_path / "ex.png")
    assert shape[1] == 5 * (28 * 3 + 8) and ink > 0.1
    assert b"matplotlib" in (tmp_path / "curves.png").read_bytes()[:400]   # the Software tag
    assert not list(tmp_path.glob(".*.tmp"))
