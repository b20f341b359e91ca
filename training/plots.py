"""Plots a person can look at, drawn with Pillow (no plotting library needed).

* :func:`plot_curves`: training/validation loss and accuracy per epoch.
* :func:`plot_confusion`: the confusion matrix as a heat map with counts.
* :func:`plot_examples`: a grid of 28x28 images with captions (misclassified examples).
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mnist_desktop.core.checkpoint import atomic_write

TRAIN_COLOR = (31, 119, 180)
VAL_COLOR = (214, 39, 40)
GRID_COLOR = (225, 225, 225)
TEXT_COLOR = (30, 30, 30)


def _font(size: int = 13):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _save(img: Image.Image, path: str | os.PathLike) -> None:
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not hi > lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], title: str,
           series: Sequence[tuple[str, Sequence[float | None], tuple[int, int, int]]],
           epochs: Sequence[int], percent: bool = False) -> None:
    font = _font(13)
    x0, y0, x1, y1 = box
    left, bottom, top, right = x0 + 58, y1 - 36, y0 + 28, x1 - 12
    draw.text((x0 + 8, y0 + 4), title, fill=TEXT_COLOR, font=_font(15))
    values = [v for _, vs, _ in series for v in vs if v is not None and math.isfinite(v)]
    if not values or not epochs:
        draw.text((left, (top + bottom) // 2), "no data", fill=TEXT_COLOR, font=font)
        return
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 0.05
    lo, hi = lo - pad, hi + pad
    e0, e1 = min(epochs), max(epochs)
    espan = max(e1 - e0, 1)

    def px(e: float, v: float) -> tuple[float, float]:
        return (left + (e - e0) / espan * (right - left), bottom - (v - lo) / (hi - lo) * (bottom - top))

    for t in _nice_ticks(lo, hi):
        y = px(e0, t)[1]
        draw.line([(left, y), (right, y)], fill=GRID_COLOR)
        label = f"{100 * t:.1f}%" if percent else f"{t:.3g}"
        draw.text((x0 + 4, y - 7), label, fill=TEXT_COLOR, font=font)
    for t in _nice_ticks(e0, e1, min(8, espan)):
        if float(t).is_integer():
            x = px(t, lo)[0]
            draw.line([(x, bottom), (x, bottom + 4)], fill=TEXT_COLOR)
            draw.text((x - 4, bottom + 6), str(int(t)), fill=TEXT_COLOR, font=font)
    draw.rectangle([left, top, right, bottom], outline=TEXT_COLOR)
    draw.text(((left + right) // 2 - 18, bottom + 20), "epoch", fill=TEXT_COLOR, font=font)
    lx = right - 150
    for i, (name, vs, color) in enumerate(series):
        pts = [px(e, v) for e, v in zip(epochs, vs) if v is not None and math.isfinite(v)]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=2)
        for x, y in pts:
            draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=color)
        if pts:
            ly = top + 8 + 16 * i
            draw.line([(lx, ly + 7), (lx + 18, ly + 7)], fill=color, width=3)
            draw.text((lx + 24, ly), name, fill=TEXT_COLOR, font=font)


def plot_curves(history: Sequence[dict], path: str | os.PathLike) -> None:
    """Loss and accuracy per epoch (train and validation) side by side, as a PNG."""
    img = Image.new("RGB", (1000, 380), "white")
    draw = ImageDraw.Draw(img)
    epochs = [int(h["epoch"]) for h in history]

    def col(key):
        return [h.get(key) for h in history]

    _panel(draw, (0, 0, 500, 380), "loss", [("train", col("train_loss"), TRAIN_COLOR),
                                            ("validation", col("val_loss"), VAL_COLOR)], epochs)
    _panel(draw, (500, 0, 1000, 380), "accuracy", [("train", col("train_accuracy"), TRAIN_COLOR),
                                                   ("validation", col("val_accuracy"), VAL_COLOR)],
           epochs, percent=True)
    _save(img, path)


def plot_confusion(cm: Sequence[Sequence[int]], labels: Sequence[str], path: str | os.PathLike,
                   title: str = "confusion matrix") -> None:
    """Heat map of ``cm[true][pred]``, rows normalized for colour, raw counts as text."""
    cm = np.asarray(cm, dtype=np.int64)
    k = len(labels)
    cell = max(14, min(48, 640 // max(k, 1)))
    font = _font(max(8, min(13, cell // 3)))
    margin_l, margin_t = 70, 60
    w, h = margin_l + k * cell + 20, margin_t + k * cell + 40
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    draw.text((8, 6), title, fill=TEXT_COLOR, font=_font(15))
    draw.text((margin_l, 26), "predicted ->", fill=TEXT_COLOR, font=_font(12))
    draw.text((4, margin_t - 16), "true", fill=TEXT_COLOR, font=_font(12))
    rows = cm.sum(axis=1, keepdims=True).clip(min=1)
    frac = cm / rows
    for i in range(k):
        draw.text((8, margin_t + i * cell + cell // 2 - 7), str(labels[i])[:8], fill=TEXT_COLOR, font=font)
        draw.text((margin_l + i * cell + 2, margin_t - 16), str(labels[i])[:4], fill=TEXT_COLOR, font=font)
        for j in range(k):
            f = float(frac[i, j])
            if i == j:
                color = (int(255 - 200 * f), int(255 - 90 * f), int(255 - 200 * f))  # green diagonal
            else:
                g = min(1.0, f * 4)  # errors are rare: stretch so they stand out
                color = (255, int(255 - 200 * g), int(255 - 200 * g))
            x, y = margin_l + j * cell, margin_t + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=color, outline=(240, 240, 240))
            if cm[i, j] and cell >= 18:
                text = str(int(cm[i, j]))
                tw = draw.textlength(text, font=font)
                draw.text((x + (cell - tw) / 2, y + cell / 2 - 7), text, fill=TEXT_COLOR, font=font)
    _save(img, path)


def plot_examples(images: np.ndarray, captions: Sequence[str], path: str | os.PathLike,
                  columns: int = 10, scale: int = 3) -> None:
    """A grid of [0, 1] 28x28 images (ink white on black) with one caption each."""
    n = len(images)
    font = _font(11)
    tile_w, tile_h = 28 * scale + 8, 28 * scale + 22
    cols = max(1, min(columns, n))
    rows = max(1, math.ceil(n / cols))
    img = Image.new("RGB", (cols * tile_w, rows * tile_h), "white")
    draw = ImageDraw.Draw(img)
    for i in range(n):
        r, c = divmod(i, cols)
        x, y = c * tile_w + 4, r * tile_h + 2
        tile = Image.fromarray((np.clip(images[i], 0, 1) * 255).astype(np.uint8), mode="L")
        img.paste(tile.resize((28 * scale, 28 * scale), Image.NEAREST).convert("RGB"), (x, y))
        draw.text((x, y + 28 * scale + 2), captions[i][:16], fill=TEXT_COLOR, font=font)
    if n == 0:
        draw.text((4, 4), "none", fill=TEXT_COLOR, font=font)
    _save(img, path)
