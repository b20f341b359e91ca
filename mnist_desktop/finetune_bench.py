"""Correct and learn, measured: a fine-tune on 30 corrected drawings of a style the bundled
model gets wrong, with the figures before and after. Prints figures; not a test.

The style: a 1 drawn as an arrow (a symmetric hat on top of the stem), which the bundled
model mostly reads as a 7. 40 such drawings come from the training package's stroke
generator (seeded jitter, pose, pen and mouse/tablet sampling); they are saved as
corrections with their strokes, exactly as the app saves them, and the app's own
fine-tune (:func:`mnist_desktop.service.finetune.plan_finetune`, 25% held out: 30 to learn,
10 to measure) runs in-process. Accuracy on MNIST validation (the bundled model's 500
validation images) and, when ``--mnist DIR`` holds it, the MNIST test set (measured only)
shows what was forgotten.

    python -m mnist_desktop.finetune_bench [--mnist ../shared/data/mnist] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

STYLE = "1 drawn as an arrow (a hat on top of the stem)"


def arrow_one(rng: np.random.Generator):
    """Unit-box strokes of the style (the generator's template format)."""
    w = float(rng.uniform(0.45, 0.7))
    h = float(rng.uniform(0.2, 0.35))
    return [[(0.0, h), (w / 2, 0.0), (w, h)], [(w / 2, 0.0), (w / 2 + float(rng.uniform(-0.04, 0.04)), 1.0)]]


def drawings(n: int, seed: int = 0):
    from training.synth import _draw_strokes, _finish

    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, 0x1A, i])
        drawing, _, _ = _finish(_draw_strokes(arrow_one(rng), rng), rng)
        out.append(drawing)
    return out


def predictions(model_path: str, images: np.ndarray) -> np.ndarray:
    import torch

    from mnist_desktop.core.checkpoint import load_model
    from training.evaluate import predict_logits

    m = load_model(model_path)
    n = m.meta.normalization
    return predict_logits(m.model, torch.from_numpy(images), n.mean, n.std).argmax(1).numpy()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mnist_desktop.finetune_bench", description=__doc__.splitlines()[0])
    p.add_argument("--mnist", default="", help="IDX folder with the MNIST test set (measured only)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="finetune-bench-"))
    os.environ["MNIST_DESKTOP_DATA"] = str(tmp)

    from mnist_desktop.core.corrections import save_correction
    from mnist_desktop.core.paths import corrections_dir, default_model_path
    from mnist_desktop.core.preprocess import PreprocessOptions, preprocess
    from mnist_desktop.service.finetune import comparison_of, plan_finetune
    from training.engine import train

    model = str(default_model_path())
    draws = drawings(40, a.seed)
    for d in draws:
        img = preprocess(d, PreprocessOptions(blur_sigma=0.0))
        save_correction(corrections_dir(), "1", img, strokes=[s.points.tolist() for s in d.strokes],
                        canvas_size=d.canvas_size, model="default.safetensors")
    plan = plan_finetune(model, holdout=0.25, epochs=a.epochs)
    print(f"style: {STYLE}; {plan.summary()}")
    t0 = time.perf_counter()
    events = []
    for ev in train(plan.config):
        d = ev.to_dict()
        events.append(d)
        if d["type"] == "failed":
            print("failed:", d["message"])
            return 1
    elapsed = time.perf_counter() - t0
    cmp = comparison_of(events)
    fin = next(e for e in events if e["type"] == "finished")
    print(f"fine-tune: {elapsed:.0f} s wall, {fin['epochs_done']} epochs")
    for what, n, b, after in cmp.rows():
        print(f"  {what:24s} n={n:5d}  before {100 * b:6.2f}%  after {100 * after:6.2f}%")
    if a.mnist:
        from training.data import load_source, run_loader

        test = run_loader(load_source(a.mnist, train=False, split="test"))
        x = test.images.astype(np.float32) / 255 if test.images.dtype == np.uint8 else test.images
        y = test.labels
        pb, pa = predictions(model, x), predictions(fin["best_model"], x)
        print(f"  {'MNIST test (measured)':24s} n={len(test):5d}  before {100 * (pb == y).mean():6.2f}%  "
              f"after {100 * (pa == y).mean():6.2f}%")
        for c in (1, 7):   # the style's digit, and the one it was mistaken for
            k = y == c
            print(f"  {f'MNIST test, the {c}s':24s} n={int(k.sum()):5d}  before {100 * (pb[k] == c).mean():6.2f}%  "
                  f"after {100 * (pa[k] == c).mean():6.2f}%")
    print(f"run folder: {fin['run_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
