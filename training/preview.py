"""A preview of what the network sees: one batch of training samples as the run's
augmentation presents them (``mnist-desktop train --config FILE --preview-augment PNG``).

The GUI's training panel runs it as a child process, so torch never loads in the GUI
process; the images pass through the run's own :func:`training.augment.augment_batch`
with the run's augmentation settings (and the European strokes for its labels).
"""

from __future__ import annotations

import os

import numpy as np

from training.config import TrainConfig


def augmented_samples(cfg: TrainConfig, n: int = 40, seed: int | None = None):
    """``(images, captions)``: ``n`` seeded training samples of ``cfg`` after its
    augmentation, [0, 1] floats ``(n, 28, 28)`` with their labels as captions."""
    import torch

    from training.augment import augment_batch
    from training.data import load_training_data, run_loader

    full, train_idx, _ = run_loader(load_training_data(cfg))
    rng = np.random.default_rng(cfg.seed if seed is None else seed)
    pick = rng.choice(train_idx, size=min(n, len(train_idx)), replace=False)
    data = full.subset(pick)
    x = torch.from_numpy(np.ascontiguousarray(data.unit_float())).unsqueeze(1)
    labels = torch.from_numpy(data.labels)
    if cfg.augment.enabled:
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        names = data.label_names
        style = tuple(names.index(c) if c in names else -1 for c in ("1", "7"))
        x = augment_batch(x, cfg.augment, gen, labels, style)
    images = x.squeeze(1).clamp(0, 1).numpy()
    return images, [data.label_names[i] for i in data.labels]


def write_preview(cfg: TrainConfig, path: str | os.PathLike, n: int = 40, columns: int = 10) -> None:
    """Write :func:`augmented_samples` as a captioned PNG grid."""
    from training.plots import plot_examples

    images, captions = augmented_samples(cfg, n)
    plot_examples(images, captions, path, columns=columns, scale=2)
