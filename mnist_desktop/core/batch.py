"""Batch classification engine, shared by ``mnist-desktop classify`` and the GUI.

:func:`classify_files` is a generator: it decodes and preprocesses files, runs batched
inference and yields :class:`FileResult` objects in the input order, checking a cancel
callback between batches. Broken inputs become results with an ``error``; nothing aborts
the run.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from mnist_desktop.core.preprocess import (EmptyInputError, ImageReadError, PreprocessOptions,
                                           load_image, preprocess)


@dataclass
class FileResult:
    path: str
    labels: Sequence[str]
    probs: np.ndarray | None = None
    uncertain: bool = False
    error: str | None = None
    true_label: str | None = None
    image: np.ndarray | None = None  # the 28x28 input, when requested

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def prediction(self) -> str:
        return "" if self.probs is None else self.labels[int(np.argmax(self.probs))]

    @property
    def confidence(self) -> float:
        return float("nan") if self.probs is None else float(np.max(self.probs))

    def top_k(self, k: int) -> list[tuple[str, float]]:
        if self.probs is None:
            return []
        order = np.argsort(-self.probs, kind="stable")[:k]
        return [(self.labels[i], float(self.probs[i])) for i in order]


def decode_one(path: str, options: PreprocessOptions) -> tuple[np.ndarray | None, str | None]:
    """Load and preprocess one file. Returns ``(image28, None)`` or ``(None, reason)``."""
    try:
        return preprocess(load_image(path), options), None
    except (ImageReadError, EmptyInputError) as e:
        return None, str(e)
    except MemoryError:
        return None, "out of memory decoding image"
    except Exception as e:  # a decoder bug must not abort a batch of 100,000 files
        return None, f"cannot process image ({type(e).__name__}: {str(e)[:120]})"


def classify_files(files: Iterable[str | os.PathLike], predictor, *, batch_size: int = 256,
                   workers: int | None = None, keep_images: bool = False, true_label: Callable[[Path], str | None] | None = None,
                   should_cancel: Callable[[], bool] | None = None) -> Iterator[FileResult]:
    """Classify image files in order, ``batch_size`` at a time.

    Parameters
    ----------
    files
        Paths, e.g. from :func:`mnist_desktop.core.data.iter_image_files`.
    predictor
        A :class:`~mnist_desktop.core.predictor.Predictor`.
    true_label
        Optional function giving a file's known label (e.g. from its folder name).
    workers
        Decoding worker processes (None: one per core; 0: decode in this process).
    should_cancel
        Checked between batches; when it returns True the generator stops.
    """
    options = predictor.options
    labels = predictor.labels
    chunk: list[str] = []

    def run(chunk: list[str]) -> list[FileResult]:
        decoded = [decode_one(p, options) for p in chunk]
        good = [i for i, (img, _) in enumerate(decoded) if img is not None]
        results = [FileResult(str(p), labels, error=err,
                              true_label=true_label(Path(p)) if true_label else None)
                   for p, (_, err) in zip(chunk, decoded)]
        if good:
            images = np.stack([decoded[i][0] for i in good])
            probs, unc, _ = predictor.probabilities(images)
            for j, i in enumerate(good):
                results[i].probs = probs[j]
                results[i].uncertain = bool(unc[j])
                if keep_images:
                    results[i].image = images[j]
        return results

    for f in files:
        chunk.append(str(f))
        if len(chunk) >= batch_size:
            if should_cancel and should_cancel():
                return
            yield from run(chunk)
            chunk = []
    if chunk and not (should_cancel and should_cancel()):
        yield from run(chunk)


# --------------------------------------------------------------------------- export

def csv_header(labels: Sequence[str]) -> list[str]:
    return ["path", "prediction", "confidence", "uncertain", "error"] + [f"p_{lab}" for lab in labels]


def csv_row(r: FileResult) -> list[str]:
    if r.probs is None:
        return [r.path, "", "", "", r.error or ""] + [""] * len(r.labels)
    return ([r.path, r.prediction, f"{r.confidence:.6f}", str(r.uncertain).lower(), ""]
            + [f"{p:.6f}" for p in r.probs])


def result_record(r: FileResult, top_k: int = 3) -> dict:
    rec = {"path": r.path, "prediction": r.prediction or None,
           "confidence": None if r.probs is None else round(r.confidence, 6),
           "uncertain": None if r.probs is None else r.uncertain, "error": r.error,
           "top_k": [{"label": lab, "probability": round(p, 6)} for lab, p in r.top_k(top_k)],
           "probabilities": None if r.probs is None else
           {lab: round(float(p), 6) for lab, p in zip(r.labels, r.probs)}}
    if r.true_label is not None:
        rec["true_label"] = r.true_label
    return rec


def write_results(path: str | os.PathLike, results: Sequence[FileResult], labels: Sequence[str],
                  top_k: int = 3) -> None:
    """Write results as CSV or JSON (by suffix), atomically."""
    from mnist_desktop.core.checkpoint import atomic_write_bytes

    path = Path(path)
    if path.suffix.lower() == ".json":
        data = json.dumps({"labels": list(labels), "results": [result_record(r, top_k) for r in results]},
                          indent=1).encode()
    else:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(csv_header(labels))
        w.writerows(csv_row(r) for r in results)
        data = buf.getvalue().encode("utf-8")
    atomic_write_bytes(path, data)
