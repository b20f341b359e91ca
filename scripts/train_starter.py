"""Train the starter model shipped in resources/ until the flagship lands.

Trains the ``flagship`` architecture on the 5k MNIST training subset (10% held out for
validation, checkpoint picked on validation accuracy), with random affine augmentation,
then measures the official 10k test set once and writes
``resources/models/default.safetensors`` with its metrics.

    python scripts/train_starter.py --data ../shared/data/mnist --epochs 30
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
import torch.nn.functional as F

from mnist_desktop.core.checkpoint import ModelMeta, Normalization, UncertaintyRule, save_model
from mnist_desktop.core.data import fingerprint_arrays, load_idx_folder
from mnist_desktop.core.metrics import classification_report
from mnist_desktop.core.models import build_model
from mnist_desktop.core.paths import default_model_path
from mnist_desktop.core.preprocess import PreprocessOptions

MEAN, STD = 0.1307, 0.3081


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    ang = (torch.rand(n, generator=gen) - 0.5) * 2 * np.deg2rad(12)
    scale = 1 + (torch.rand(n, generator=gen) - 0.5) * 0.2
    shift = (torch.rand(n, 2, generator=gen) - 0.5) * 0.2
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/mnist")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default=str(default_model_path()))
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    train = load_idx_folder(args.data, "train-5k")
    test = load_idx_folder(args.data, "test")
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(train.labels))
    val_idx, tr_idx = order[:500], order[500:]
    x = torch.from_numpy(train.images.astype(np.float32) / 255.0)[:, None]
    y = torch.from_numpy(train.labels)
    xtr, ytr, xva, yva = x[tr_idx], y[tr_idx], x[val_idx], y[val_idx]

    model = build_model("flagship", num_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    steps = args.epochs * ((len(xtr) + 127) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    best, best_state = -1.0, None
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), 128):
            idx = perm[i:i + 128]
            xb = (augment(xtr[idx], gen) - MEAN) / STD
            loss = F.cross_entropy(model(xb), ytr[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model((xva - MEAN) / STD).argmax(1) == yva).float().mean().item()
        if acc >= best:
            best, best_state = acc, copy.deepcopy(model.state_dict())
        print(f"epoch {epoch + 1}: val acc {acc:.4f} ({time.time() - t0:.0f}s)")
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        xt = torch.from_numpy(test.images.astype(np.float32) / 255.0)[:, None]
        probs = torch.softmax(model((xt - MEAN) / STD), 1).numpy()
    rep = classification_report(test.labels, probs, [str(i) for i in range(10)])
    print(f"test accuracy {rep['accuracy']:.4f}, ECE {rep['ece']:.4f}")
    meta = ModelMeta(
        arch="flagship", arch_args={"width": 16}, name="starter",
        description="Starter model: flagship architecture trained on the 5k MNIST subset.",
        normalization=Normalization(MEAN, STD), preprocess=PreprocessOptions().to_dict(),
        uncertainty=UncertaintyRule("max_prob", 0.5, 1.0),
        training={"script": "scripts/train_starter.py", "epochs": args.epochs, "seed": args.seed,
                  "data": "train-5k (4500 train / 500 validation)", "optimizer": "AdamW 3e-3 OneCycle"},
        metrics={"test_accuracy": rep["accuracy"], "test_ece": rep["ece"], "val_accuracy": best,
                 "test_data": "MNIST t10k (10,000 images)"},
        data_fingerprint=fingerprint_arrays(train.images, train.labels),
    )
    save_model(args.output, model, meta)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
