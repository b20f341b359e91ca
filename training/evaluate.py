"""Evaluation of a trained model: logits in batches, the full report, and its plots.

The report is :func:`mnist_desktop.core.metrics.classification_report` (accuracy,
per-class precision/recall/F1, confusion matrix, expected calibration error) computed on
the model's calibrated probabilities (:func:`mnist_desktop.core.predictor.apply_uncertainty`,
i.e. exactly what the app shows), plus the misclassified examples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mnist_desktop.core.checkpoint import ModelMeta
from mnist_desktop.core.metrics import classification_report
from mnist_desktop.core.predictor import apply_uncertainty


def to_model_input(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """``(N, 28, 28)`` uint8 (0..255) or float [0, 1] images -> normalized ``(N, 1, 28, 28)``."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    return ((x - mean) / std).unsqueeze(1)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, mean: float, std: float,
                   batch_size: int = 1000) -> torch.Tensor:
    """Logits ``(N, K)`` (float32, on the images' device) of a model in eval mode."""
    was_training = model.training
    model.eval()
    out = [model(to_model_input(images[i:i + batch_size], mean, std)).float()
           for i in range(0, len(images), batch_size)]
    model.train(was_training)
    if not out:
        return torch.zeros(0, 0)
    return torch.cat(out)


def evaluation_report(logits: np.ndarray, labels: np.ndarray, meta: ModelMeta, *, data: str = "",
                      paths: Sequence[str] | None = None, max_misclassified: int = 1000) -> dict[str, Any]:
    """Classification report of calibrated probabilities plus the misclassified examples.

    ``misclassified`` lists ``{"index", "true", "predicted", "confidence"}`` (and ``"path"``
    for file data), most confident mistakes first, at most ``max_misclassified``;
    ``misclassified_count`` is the total.
    """
    probs, uncertain, _ = apply_uncertainty(np.asarray(logits), meta)
    labels = np.asarray(labels, np.int64)
    report = classification_report(labels, probs, meta.labels, uncertain=uncertain)
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != labels)
    conf = probs[wrong, pred[wrong]]
    order = wrong[np.argsort(-conf, kind="stable")]
    items = []
    for i in order[:max_misclassified]:
        item = {"index": int(i), "true": meta.labels[labels[i]], "predicted": meta.labels[pred[i]],
                "confidence": round(float(probs[i, pred[i]]), 6)}
        if paths is not None:
            item["path"] = paths[i]
        items.append(item)
    report["data"] = data
    report["temperature"] = meta.uncertainty.temperature
    report["misclassified_count"] = int(len(wrong))
    report["misclassified"] = items
    return report


def report_plots(report: dict[str, Any], images: np.ndarray, out_dir: Path, prefix: str) -> list[str]:
    """Confusion matrix and most-confident-mistakes PNGs for one report; returns their paths."""
    from training.plots import plot_confusion, plot_examples

    cm_path = out_dir / f"{prefix}_confusion.png"
    plot_confusion(report["confusion_matrix"], report["labels"], cm_path,
                   title=f"confusion matrix ({prefix}, n={report['n']}, "
                         f"accuracy {100 * report['accuracy']:.2f}%)")
    worst = report["misclassified"][:60]
    ex_path = out_dir / f"{prefix}_misclassified.png"
    imgs = images[[m["index"] for m in worst]] if worst else np.zeros((0, 28, 28), np.float32)
    if imgs.dtype == np.uint8:
        imgs = imgs.astype(np.float32) / 255.0
    plot_examples(imgs, [f"{m['true']}->{m['predicted']} {100 * m['confidence']:.0f}%" for m in worst], ex_path)
    return [str(cm_path), str(ex_path)]
