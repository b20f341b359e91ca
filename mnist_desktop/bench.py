"""Latency benchmark: preprocessing + forward for one canvas drawing on one CPU thread.

``mnist-desktop bench`` prints median / p99 for preprocessing alone, the forward pass
alone and both together. Goal: median <= 1 ms, p99 <= 3 ms for the whole.
"""

from __future__ import annotations

import math
import time

import numpy as np


def scribble_drawing(seed: int = 0, canvas: int = 280):
    """A digit-like drawing of a few strokes with pressure, as the canvas would record."""
    from mnist_desktop.core.preprocess import Drawing, Stroke

    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * math.pi, 60)
    # a "6"-like loop plus a tail, ~60 points per stroke like a real mouse stroke
    loop = np.stack([140 + 45 * np.cos(t), 180 + 45 * np.sin(t), 0.5 + 0.2 * np.sin(3 * t)], 1)
    tail = np.stack([np.linspace(100, 150, 40), np.linspace(170, 40, 40), np.full(40, 0.5)], 1)
    strokes = [Stroke((s + np.c_[rng.normal(0, 1, (len(s), 2)), np.zeros(len(s))]).astype(np.float32))
               for s in (loop, tail)]
    return Drawing(strokes, (canvas, canvas))


def scan_image(side: int = 280):
    """A ``side`` x ``side`` 8-bit scan of a dark digit on white paper (a bundled training
    digit, upscaled), as a user opens one from a file."""
    from PIL import Image

    from mnist_desktop.core.data import load_idx_folder
    from mnist_desktop.core.paths import resources_dir

    data = load_idx_folder(resources_dir() / "data" / "mnist-5k", "train-5k")
    return Image.fromarray(255 - data.images[7]).resize((side, side), Image.BILINEAR)


def scan_preprocess_us(iterations: int = 1000) -> list[float]:
    """Seconds per :func:`~mnist_desktop.core.preprocess.preprocess` of :func:`scan_image`."""
    from mnist_desktop.core.preprocess import preprocess

    img = scan_image()
    for _ in range(50):
        preprocess(img)
    ts = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        preprocess(img)
        ts.append(time.perf_counter() - t0)
    return ts


def _stats(ts: list[float]) -> str:
    a = np.array(ts) * 1e3
    return f"median {np.median(a):.3f} ms  p99 {np.percentile(a, 99):.3f} ms  max {a.max():.3f} ms"


def _measure(pred, drawing, iterations: int) -> tuple[list[float], list[float], list[float]]:
    from mnist_desktop.core.preprocess import preprocess

    for _ in range(50):
        pred.predict(drawing)
    pre, fwd, total = [], [], []
    for _ in range(iterations):
        t0 = time.perf_counter()
        img = preprocess(drawing, pred.options)
        t1 = time.perf_counter()
        pred.predict_images(img[None])
        t2 = time.perf_counter()
        pre.append(t1 - t0)
        fwd.append(t2 - t1)
        total.append(t2 - t0)
    return pre, fwd, total


def run_latency_bench(model: str | None = None, iterations: int = 2000) -> int:
    """The canvas's own predictor (:func:`~mnist_desktop.service.models.load_predictor`, ``purpose="live"``:
    ONNX Runtime when the model has a copy) and, for comparison, torch on one thread."""
    import torch

    from mnist_desktop.service.models import ModelChoice, load_predictor
    from mnist_desktop.core.paths import default_model_path
    from mnist_desktop.core.torch_predictor import TorchPredictor

    path = model or default_model_path()
    canvas = load_predictor(ModelChoice(path, "cpu", purpose="live")).predictor
    torch.set_num_threads(1)
    drawing = scribble_drawing()
    print(f"model: {canvas.path.name} ({canvas.meta.arch}), 1 CPU thread, {iterations} iterations")
    runs = [("canvas", canvas)]
    if canvas.backend != "torch":
        runs.append(("torch, for comparison", TorchPredictor.from_file(path, "cpu")))
    for title, pred in runs:
        pre, fwd, total = _measure(pred, drawing, iterations)
        print(f"{title} ({pred.backend}):")
        print(f"  preprocess (strokes -> 28x28): {_stats(pre)}")
        print(f"  forward + softmax:             {_stats(fwd)}")
        print(f"  total canvas -> probabilities: {_stats(total)}  (goal: median <= 1 ms, p99 <= 3 ms)")
    print(f"preprocess (280x280 8-bit scan -> 28x28, one thread): {_stats(scan_preprocess_us(iterations))}"
          "  (goal: median <= 0.3 ms)")
    return 0
