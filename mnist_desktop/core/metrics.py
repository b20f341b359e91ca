"""Classification metrics: accuracy, per-class precision/recall/F1, confusion matrix,
expected calibration error. numpy only."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[t, p]`` counts samples of true class t predicted as p."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes ** 2).reshape(
        num_classes, num_classes)


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    actual = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual}


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (top-1 confidence vs accuracy)."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    n = len(conf)
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.sum() / n * abs(conf[m].mean() - correct[m].mean())
    return float(ece)


def classification_report(y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str],
                          uncertain: np.ndarray | None = None) -> dict[str, Any]:
    """Everything ``evaluate`` reports, as a JSON-ready dict."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = probs.argmax(axis=1)
    k = len(labels)
    cm = confusion_matrix(y_true, y_pred, k)
    scores = per_class_scores(cm)
    report: dict[str, Any] = {
        "n": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else 0.0,
        "macro_f1": float(scores["f1"].mean()),
        "ece": expected_calibration_error(probs, y_true) if len(y_true) else 0.0,
        "labels": list(labels),
        "per_class": {
            lab: {"precision": float(scores["precision"][i]), "recall": float(scores["recall"][i]),
                  "f1": float(scores["f1"][i]), "support": int(scores["support"][i])}
            for i, lab in enumerate(labels)
        },
        "confusion_matrix": cm.tolist(),
    }
    if uncertain is not None:
        report["uncertain_rate"] = float(np.mean(uncertain)) if len(uncertain) else 0.0
    return report


def format_report(report: dict[str, Any]) -> str:
    """Human-readable text of :func:`classification_report`."""
    labels = report["labels"]
    lines = [f"samples: {report['n']}",
             f"accuracy: {100 * report['accuracy']:.2f}%",
             f"macro F1: {report['macro_f1']:.4f}",
             f"expected calibration error: {100 * report['ece']:.2f}%"]
    if "uncertain_rate" in report:
        lines.append(f"flagged uncertain: {100 * report['uncertain_rate']:.2f}%")
    lines.append("")
    w = max(5, max(len(s) for s in labels))
    lines.append(f"{'class':>{w}}  precision  recall     f1  support")
    for lab in labels:
        s = report["per_class"][lab]
        lines.append(f"{lab:>{w}}  {s['precision']:9.4f}  {s['recall']:6.4f} {s['f1']:6.4f}  {s['support']:7d}")
    lines.append("")
    lines.append(format_confusion(report["confusion_matrix"], labels))
    return "\n".join(lines)


def format_confusion(cm: list[list[int]], labels: Sequence[str]) -> str:
    cm = np.asarray(cm)
    w = max(4, len(str(cm.max() if cm.size else 0)) + 1, max(len(s) for s in labels) + 1)
    head = "true\\pred".rjust(w + 4) + "".join(lab.rjust(w) for lab in labels)
    rows = [head] + [labels[i].rjust(w + 4) + "".join(str(v).rjust(w) for v in cm[i]) for i in range(len(labels))]
    return "confusion matrix (rows: true, columns: predicted)\n" + "\n".join(rows)
