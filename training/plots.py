"""Report plots drawn with matplotlib's Agg backend (no display, no pyplot state).

* :func:`plot_curves`: training/validation loss and accuracy per epoch.
* :func:`plot_confusion`: the confusion matrix as a heat map with counts.
* :func:`plot_examples`: a grid of 28x28 images with captions (misclassified examples).

Each function builds its own :class:`matplotlib.figure.Figure` on a
``FigureCanvasAgg`` and writes the PNG atomically, so it is safe from any thread and never
touches a GUI toolkit.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np

from mnist_desktop.core.checkpoint import atomic_write

TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#d62728"
DPI = 100


def _figure(width_px: int, height_px: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def _series(ax, epochs, values, label, color, percent=False) -> bool:
    pts = [(e, v) for e, v in zip(epochs, values) if v is not None and math.isfinite(v)]
    if not pts:
        return False
    x, y = zip(*pts)
    y = [100 * v for v in y] if percent else list(y)
    ax.plot(x, y, marker="o", markersize=3.5, linewidth=1.8, color=color, label=label)
    return True


def plot_curves(history: Sequence[dict], path: str | os.PathLike) -> None:
    """Loss and accuracy per epoch (train and validation) side by side, as a PNG."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(1000, 380)
    epochs = [int(h["epoch"]) for h in history]
    for i, (title, key, percent) in enumerate((("loss", "loss", False), ("accuracy", "accuracy", True))):
        ax = fig.add_subplot(1, 2, i + 1)
        drawn = _series(ax, epochs, [h.get(f"train_{key}") for h in history], "train", TRAIN_COLOR, percent)
        drawn |= _series(ax, epochs, [h.get(f"val_{key}") for h in history], "validation", VAL_COLOR, percent)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{title} (%)" if percent else title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if drawn:
            ax.legend(loc="best", fontsize=9)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    _save(fig, path)


def plot_confusion(cm: Sequence[Sequence[int]], labels: Sequence[str], path: str | os.PathLike,
                   title: str = "confusion matrix") -> None:
    """Heat map of ``cm[true][pred]``: rows normalized for colour, raw counts as text; the
    diagonal in green, errors in red (stretched, as they are rare)."""
    cm = np.asarray(cm, dtype=np.int64)
    k = len(labels)
    side = int(max(360, min(900, 60 + 40 * k)))
    fig = _figure(side + 80, side)
    ax = fig.add_subplot(1, 1, 1)
    frac = cm / cm.sum(axis=1, keepdims=True).clip(min=1) if k else np.zeros((0, 0))
    rgb = np.ones((k, k, 3))
    for i in range(k):
        for j in range(k):
            f = float(frac[i, j])
            if i == j:
                rgb[i, j] = (1 - 0.78 * f, 1 - 0.35 * f, 1 - 0.78 * f)
            else:
                g = min(1.0, 4 * f)
                rgb[i, j] = (1, 1 - 0.78 * g, 1 - 0.78 * g)
    ax.imshow(rgb, interpolation="nearest")
    font = max(5, min(10, 220 // max(k, 1)))
    if k <= 40:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=font)
    ticks = range(k)
    ax.set_xticks(ticks, [str(s)[:4] for s in labels], fontsize=font)
    ax.set_yticks(ticks, [str(s)[:8] for s in labels], fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    ax.tick_params(length=0)
    fig.tight_layout()
    _save(fig, path)


def plot_examples(images: np.ndarray, captions: Sequence[str], path: str | os.PathLike,
                  columns: int = 10, scale: int = 3) -> None:
    """A grid of [0, 1] 28x28 images (ink white on black) with one caption each."""
    n = len(images)
    cols = max(1, min(columns, n))
    rows = max(1, math.ceil(n / cols))
    tile_w, tile_h = 28 * scale + 8, 28 * scale + 22
    fig = _figure(cols * tile_w, rows * tile_h)
    if n == 0:
        fig.text(0.5, 0.5, "none", ha="center", va="center")
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(np.clip(images[i], 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(captions[i][:16], fontsize=8, pad=2)
        ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 20 / max(tile_h * rows, 1), wspace=0.1,
                        hspace=0.35)
    _save(fig, path)
