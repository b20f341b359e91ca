"""Why did the model say that? Occlusion saliency maps and nearest training examples.

Qt-free and torch-free: everything works with any :class:`~mnist_desktop.core.predictor.Predictor`
(torch or ONNX Runtime), because occlusion needs forward passes only. The whole map is one
batch of occluded copies of the 28x28 input (169 copies with 4x4 patches at stride 2),
about as cheap as classifying 169 images.

Sign convention: a positive value means that pixel's ink pushes the prediction *toward*
``target`` (hiding it lowers the target's score); negative means it argues against. With
``contrast`` the score is the logit margin ``target - contrast``, so the map answers "why
``target`` and not ``contrast``?".
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Occlusion patch side and stride in model pixels: 13 x 13 = 169 occluded inputs.
PATCH = 4
STRIDE = 2


@dataclass(frozen=True)
class Explanation:
    """A saliency map and the training examples that look most like the input.

    ``saliency`` is ``(28, 28)`` float32 in score units (positive: pushes toward
    ``target``); ``neighbours`` are the closest examples of ``target``'s class.
    """

    target: int
    contrast: int | None
    saliency: np.ndarray
    neighbours: list["Neighbour"]


@dataclass(frozen=True)
class Neighbour:
    """One training example: its position in the bundled subset, label, pixels (28x28
    uint8, ink = 255) and similarity to the input (cosine of blurred pixels, 1 = same)."""

    index: int
    label: int
    image: np.ndarray
    similarity: float


def _score(logits: np.ndarray, target: int, contrast: int | None) -> np.ndarray:
    """Per row: the target's log-probability, or its logit margin over ``contrast``.

    The log-probability (not the probability) so that a confident answer (p = 0.9999)
    still shows which ink it rests on instead of saturating at 1.
    """
    z = logits.astype(np.float64)
    if contrast is not None:
        return z[:, target] - z[:, contrast]
    zmax = z.max(axis=1, keepdims=True)
    log_sum = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
    return z[:, target] - log_sum


def occlusion_batch(x28: np.ndarray, baseline: float | np.ndarray | None = None,
                    patch: int = PATCH, stride: int = STRIDE) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The occluded copies of ``x28``: ``(N, 28, 28)`` and each copy's patch corner ``(y, x)``."""
    x = np.asarray(x28, dtype=np.float32)
    h, w = x.shape
    base = np.zeros_like(x) if baseline is None else np.broadcast_to(
        np.asarray(baseline, dtype=np.float32), x.shape)
    ys = list(range(0, h - patch + 1, stride))
    xs = list(range(0, w - patch + 1, stride))
    if ys[-1] != h - patch:
        ys.append(h - patch)
    if xs[-1] != w - patch:
        xs.append(w - patch)
    corners = [(y, x0) for y in ys for x0 in xs]
    batch = np.repeat(x[None], len(corners), axis=0)
    for i, (y, x0) in enumerate(corners):
        batch[i, y:y + patch, x0:x0 + patch] = base[y:y + patch, x0:x0 + patch]
    return batch, corners


def occlusion_map(predictor, x28: np.ndarray, target: int, baseline: float | np.ndarray | None = None,
                  contrast: int | None = None, patch: int = PATCH, stride: int = STRIDE) -> np.ndarray:
    """Occlusion saliency of a 28x28 model input for class ``target``.

    Each ``patch`` x ``patch`` square (every ``stride`` pixels) is replaced by ``baseline``
    (default 0: no ink) and the drop in the score is spread over the pixels it covered;
    a pixel's value is the mean drop of the patches covering it.

    Parameters
    ----------
    predictor
        Any predictor with ``logits(images)`` for ``(N, 28, 28)`` [0, 1] images.
    x28
        The model input, ``(28, 28)`` in [0, 1] (``Prediction.image``).
    target
        The class index explained.
    baseline
        What hides a patch: a number or a 28x28 array (default 0, blank paper).
    contrast
        Another class index: the map then shows evidence for ``target`` minus evidence
        for ``contrast`` (logit margin) — "why not ``contrast``?".

    Returns
    -------
    numpy.ndarray
        ``(28, 28)`` float32; positive pushes toward ``target``.
    """
    x = np.asarray(x28, dtype=np.float32)
    if x.shape != (28, 28):
        raise ValueError(f"expected a 28x28 image, got {x.shape}")
    n_classes = len(predictor.labels)
    for name, c in (("target", target), ("contrast", contrast)):
        if c is not None and not 0 <= int(c) < n_classes:
            raise ValueError(f"{name} class {c} is not one of the model's {n_classes} classes")
    if contrast is not None and int(contrast) == int(target):
        contrast = None
    batch, corners = occlusion_batch(x, baseline, patch, stride)
    logits = predictor.logits(np.concatenate([x[None], batch]))
    scores = _score(np.asarray(logits), int(target), None if contrast is None else int(contrast))
    drops = scores[0] - scores[1:]
    total = np.zeros(x.shape, np.float64)
    count = np.zeros(x.shape, np.float64)
    for d, (y, x0) in zip(drops, corners):
        total[y:y + patch, x0:x0 + patch] += d
        count[y:y + patch, x0:x0 + patch] += 1
    return (total / np.maximum(count, 1)).astype(np.float32)


# --------------------------------------------------------------------------- neighbours

class _NeighbourIndex:
    """The bundled training subset, blurred and unit-normalised, grouped by label."""

    def __init__(self, folder: Path):
        from mnist_desktop.core.data import load_idx_folder

        split = load_idx_folder(folder, "train-5k")
        self.images = split.images                      # (N, 28, 28) uint8
        self.labels = split.labels
        self.vectors = _unit_vectors(split.images.astype(np.float32) / 255.0)


def _blur121(images: np.ndarray) -> np.ndarray:
    """A separable [1, 2, 1] / 4 blur (zero padding) of ``(N, H, W)`` images: a stroke
    shifted by a pixel should still count as close. Slices, not windows: the 5k subset
    blurs in milliseconds."""
    p = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    rows = p[:, :, :-2] + 2 * p[:, :, 1:-1] + p[:, :, 2:]
    return (rows[:, :-2] + 2 * rows[:, 1:-1] + rows[:, 2:]) / 16.0


def _unit_vectors(images: np.ndarray) -> np.ndarray:
    v = _blur121(np.asarray(images, np.float32)).reshape(len(images), -1)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-6)


_index_lock = threading.Lock()
_indexes: dict[str, _NeighbourIndex] = {}


def bundled_subset_dir() -> Path:
    """The bundled MNIST 5k training subset (IDX files)."""
    from mnist_desktop.core.paths import resources_dir
    return resources_dir() / "data" / "mnist-5k"


def neighbour_index(folder: str | os.PathLike | None = None) -> _NeighbourIndex:
    """The (cached) index over ``folder`` (default: the bundled subset); built once per
    process, ~0.1 s (read in the inference process right after a model loads)."""
    key = str(Path(folder) if folder is not None else bundled_subset_dir())
    with _index_lock:
        index = _indexes.get(key)
        if index is None:
            index = _indexes[key] = _NeighbourIndex(Path(key))
        return index


def nearest_examples(image28: np.ndarray, label: int | None, k: int = 6,
                     folder: str | os.PathLike | None = None) -> list[Neighbour]:
    """The ``k`` training examples of class ``label`` (any class for None) most similar to
    ``image28`` (a [0, 1] model input), closest first.

    Similarity is the cosine between slightly blurred pixel images: the model input and
    MNIST share one format (ink 1 on 0, digit centred by mass in a 20x20 box), so pixels
    compare directly, with any backend.
    """
    index = neighbour_index(folder)
    query = _unit_vectors(np.asarray(image28, dtype=np.float32)[None])[0]
    rows = np.arange(len(index.labels)) if label is None else np.flatnonzero(index.labels == int(label))
    if len(rows) == 0 or k <= 0:
        return []
    sims = index.vectors[rows] @ query
    order = np.argsort(-sims, kind="stable")[:k]
    return [Neighbour(int(rows[i]), int(index.labels[rows[i]]), index.images[rows[i]].copy(), float(sims[i]))
            for i in order]


def explain(predictor, x28: np.ndarray, target: int, contrast: int | None = None, k: int = 6,
            folder: str | os.PathLike | None = None) -> Explanation:
    """The saliency map for ``target`` (against ``contrast``) and the ``k`` nearest training
    examples of ``target``'s class.

    Neighbours are looked up only when the model's labels are the digits 0-9 (the
    bundled subset's classes); for other models the list is empty.
    """
    saliency = occlusion_map(predictor, x28, target, contrast=contrast)
    neighbours: list[Neighbour] = []
    labels = list(predictor.labels)
    if labels == [str(i) for i in range(10)] and k > 0:
        neighbours = nearest_examples(x28, target, k, folder)
    return Explanation(int(target), None if contrast is None else int(contrast), saliency, neighbours)
