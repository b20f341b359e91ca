"""Predictors: a loaded model on a device, turning inputs into probabilities.

:class:`Predictor` is the typed interface every consumer uses (the GUI's inference
process, ``mnist-desktop classify``/``evaluate``, the batch engine, the service layer);
:class:`~mnist_desktop.core.torch_predictor.TorchPredictor` runs the network in torch
(CPU or CUDA) and
:class:`~mnist_desktop.core.onnx_predictor.OnnxPredictor` in ONNX Runtime (CPU). Which
one a caller gets is decided in one place, :func:`mnist_desktop.service.models.load_predictor`.
All inputs go through :func:`mnist_desktop.core.preprocess.preprocess`.

This module never imports torch: ONNX Runtime predictors and the batch decoding workers
use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Protocol, Sequence, runtime_checkable

import numpy as np

from mnist_desktop.core.model_meta import ModelMeta
from mnist_desktop.core.preprocess import Input, PreprocessOptions, preprocess

DEVICES = ("auto", "cpu", "cuda")

#: :attr:`Prediction.reason` values.
NOT_A_DIGIT = "not_a_digit"
UNSURE = "unsure"


@dataclass
class Prediction:
    """One input's result. ``probs`` is aligned with ``labels``."""

    labels: Sequence[str]
    probs: np.ndarray
    uncertain: bool
    score: float  # the value the uncertainty rule compared (max prob or energy)
    image: np.ndarray | None = None  # the 28x28 [0, 1] image the model saw
    #: Why ``uncertain``: :data:`NOT_A_DIGIT`, :data:`UNSURE` (a near-tie between the top
    #: two classes) or "" when not flagged.
    reason: str = ""

    @property
    def reason_text(self) -> str:
        """What the flag means, for a person: ``"not a digit"``, ``"unsure: 1 or 7"``, or
        ``""`` when the answer is not flagged."""
        if not self.uncertain:
            return ""
        if self.reason == UNSURE:
            (a, _), (b, _) = self.top_k(2)
            return f"unsure: {a} or {b}"
        return "not a digit"

    @property
    def index(self) -> int:
        return int(np.argmax(self.probs))

    @property
    def label(self) -> str:
        return self.labels[self.index]

    @property
    def confidence(self) -> float:
        return float(self.probs[self.index])

    def top_k(self, k: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(-self.probs, kind="stable")[:k]
        return [(self.labels[i], float(self.probs[i])) for i in order]

    def as_dict(self) -> dict[str, float]:
        return {lab: float(p) for lab, p in zip(self.labels, self.probs)}


Backend = Literal["torch", "onnxruntime"]


@runtime_checkable
class Predictor(Protocol):
    """What every predictor offers, whatever runs its forward pass.

    ``path`` is the model file (the source of labels, normalization, preprocessing and
    the uncertainty rule); ``device`` is where the forward pass runs and
    ``device_message`` a one-line note when that is not what was asked for.
    """

    backend: ClassVar[str]
    meta: ModelMeta
    options: PreprocessOptions
    path: Path
    device: str
    device_message: str | None

    @property
    def labels(self) -> list[str]: ...

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Raw logits for ``(N, 28, 28)`` [0, 1] images."""

    def probabilities(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(probs, uncertain, score)`` for ``(N, 28, 28)`` [0, 1] images."""

    def predict_images(self, images: np.ndarray, keep_images: bool = False) -> list[Prediction]: ...

    def predict(self, source: Input) -> Prediction: ...


class PredictMixin:
    """Everything above the forward pass, on top of a class's ``logits``, ``meta`` and
    ``options``: shared by the torch :class:`Predictor` and the ONNX Runtime
    :class:`~mnist_desktop.core.onnx_predictor.OnnxPredictor`."""

    @property
    def labels(self) -> list[str]:
        return self.meta.labels

    def probabilities(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(probs, uncertain, score)`` for ``(N, 28, 28)`` images."""
        return apply_uncertainty(self.logits(images), self.meta)

    def predict_images(self, images: np.ndarray, keep_images: bool = False) -> list[Prediction]:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 2:
            images = images[None]
        probs, unc, score = self.probabilities(images)
        reasons = uncertainty_reasons(probs, score, self.meta)
        return [Prediction(self.labels, probs[i], bool(unc[i]), float(score[i]),
                           images[i] if keep_images else None, reasons[i]) for i in range(len(images))]

    def predict(self, source: Input) -> Prediction:
        """Preprocess one input (strokes, PIL image, array) and predict it.

        Raises :class:`~mnist_desktop.core.preprocess.EmptyInputError` when there is
        nothing to classify.
        """
        image = preprocess(source, self.options)
        return self.predict_images(image[None], keep_images=True)[0]


def _not_a_digit(score: np.ndarray, rule) -> np.ndarray:
    return score > rule.threshold if rule.method == "energy" else score < rule.threshold


def near_ties(probs: np.ndarray, tie_margin: float) -> np.ndarray:
    """Where the top two probabilities of ``probs`` (``(N, C)``) are closer than
    ``tie_margin`` (none when it is 0)."""
    probs = np.asarray(probs)
    if tie_margin <= 0 or probs.shape[-1] < 2:
        return np.zeros(probs.shape[:-1], bool)
    top2 = np.partition(probs, -2, axis=-1)[..., -2:]
    return (top2[..., 1] - top2[..., 0]) < tie_margin


def uncertainty_reasons(probs: np.ndarray, score: np.ndarray, meta: ModelMeta) -> list[str]:
    """Per input, why :func:`apply_uncertainty` flags it: :data:`NOT_A_DIGIT` (the
    checkpoint's energy / max-probability rule; it wins when both hold), :data:`UNSURE`
    (a near-tie) or ""."""
    rule = meta.uncertainty
    nad = _not_a_digit(np.asarray(score), rule)
    tie = near_ties(probs, rule.tie_margin)
    return [NOT_A_DIGIT if a else UNSURE if t else "" for a, t in zip(nad.tolist(), tie.tolist())]


def apply_uncertainty(logits: np.ndarray, meta: ModelMeta) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Temperature-scaled softmax and the checkpoint's uncertainty rule: flagged when
    "not a digit" (energy / max probability) or, with a ``tie_margin``, when the top two
    classes nearly tie."""
    rule = meta.uncertainty
    z = logits.astype(np.float64) / rule.temperature
    zmax = z.max(axis=1, keepdims=True)
    ez = np.exp(z - zmax)
    sums = ez.sum(axis=1, keepdims=True)
    probs = (ez / sums).astype(np.float32)
    if rule.method == "energy":
        score = -rule.temperature * (zmax[:, 0] + np.log(sums[:, 0]))
    else:
        score = probs.max(axis=1).astype(np.float64)
    uncertain = _not_a_digit(score, rule) | near_ties(probs, rule.tie_margin)
    return probs, uncertain, score
