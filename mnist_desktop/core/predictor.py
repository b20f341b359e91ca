"""Predictors: a loaded model on a device, turning inputs into probabilities.

:class:`Predictor` is the typed interface every consumer uses (the GUI's inference
process, ``mnist-desktop classify``/``evaluate``, the batch engine, the service layer);
:class:`TorchPredictor` runs the network in torch (CPU or CUDA) and
:class:`~mnist_desktop.core.onnx_predictor.OnnxPredictor` in ONNX Runtime (CPU). Which
one a caller gets is decided in one place, :func:`mnist_desktop.service.models.load_predictor`.
All inputs go through :func:`mnist_desktop.core.preprocess.preprocess`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Protocol, Sequence, runtime_checkable

import numpy as np

from mnist_desktop.core.checkpoint import LoadedModel, ModelMeta, load_model
from mnist_desktop.core.preprocess import Input, PreprocessOptions, normalize, preprocess

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class Prediction:
    """One input's result. ``probs`` is aligned with ``labels``."""

    labels: Sequence[str]
    probs: np.ndarray
    uncertain: bool
    score: float  # the value the uncertainty rule compared (max prob or energy)
    image: np.ndarray | None = None  # the 28x28 [0, 1] image the model saw

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


def resolve_device(requested: str = "auto") -> tuple[str, str | None]:
    """Map ``auto``/``cpu``/``cuda`` (or ``cuda:N``) to a usable torch device.

    Returns ``(device, message)``; ``message`` explains a fallback to CPU, else None.
    """
    import torch

    requested = (requested or "auto").lower()
    if requested == "cpu":
        return "cpu", None
    if requested not in ("auto",) and not requested.startswith("cuda"):
        return "cpu", f"unknown device {requested!r}; using CPU"
    try:
        available = torch.cuda.is_available()
    except Exception as e:  # broken driver installs raise here
        available = False
        reason = f"CUDA failed to initialize ({e})"
    else:
        reason = "CUDA is not available on this machine"
    if not available:
        return "cpu", (None if requested == "auto" else f"{reason}; using CPU")
    dev = "cuda" if requested == "auto" else requested
    try:
        torch.zeros(1, device=dev)
    except Exception as e:
        return "cpu", f"CUDA device {dev} failed ({str(e).splitlines()[0]}); using CPU"
    return dev, None


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
        return [Prediction(self.labels, probs[i], bool(unc[i]), float(score[i]),
                           images[i] if keep_images else None) for i in range(len(images))]

    def predict(self, source: Input) -> Prediction:
        """Preprocess one input (strokes, PIL image, array) and predict it.

        Raises :class:`~mnist_desktop.core.preprocess.EmptyInputError` when there is
        nothing to classify.
        """
        image = preprocess(source, self.options)
        return self.predict_images(image[None], keep_images=True)[0]


class TorchPredictor(PredictMixin):
    """A model ready to predict, run by torch.

    Parameters
    ----------
    loaded
        From :func:`mnist_desktop.core.checkpoint.load_model`.
    device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; falls back to CPU with
        :attr:`device_message` set when CUDA is absent or fails.
    """

    backend = "torch"

    def __init__(self, loaded: LoadedModel, device: str = "auto"):
        import torch

        self._torch = torch
        self.meta: ModelMeta = loaded.meta
        self.path: Path = loaded.path
        self.device, self.device_message = resolve_device(device)
        self.model = loaded.model
        try:
            self.model.to(self.device)
        except Exception as e:
            self.device_message = f"could not move the model to {self.device} ({str(e).splitlines()[0]}); using CPU"
            self.device = "cpu"
            self.model.to("cpu")
        self.model.eval()
        if self.device == "cpu":
            from mnist_desktop.core.models import fuse_for_inference
            fuse_for_inference(self.model)
            # oneDNN convolutions run ~15% faster channels-last (a no-op for 1-channel input).
            self.model.to(memory_format=torch.channels_last)
        self.options = PreprocessOptions.from_dict(self.meta.preprocess)
        self._mean = self.meta.normalization.mean
        self._std = self.meta.normalization.std

    @classmethod
    def from_file(cls, path: str | os.PathLike, device: str = "auto") -> "TorchPredictor":
        return cls(load_model(path), device)

    # ------------------------------------------------------------------ core math
    def logits(self, images: np.ndarray) -> np.ndarray:
        """Raw logits for ``(N, 28, 28)`` [0, 1] images."""
        torch = self._torch
        x = normalize(images, self._mean, self._std)[:, None]
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
            return self.model(t).float().cpu().numpy()


def apply_uncertainty(logits: np.ndarray, meta: ModelMeta) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Temperature-scaled softmax and the checkpoint's uncertainty rule."""
    rule = meta.uncertainty
    z = logits.astype(np.float64) / rule.temperature
    zmax = z.max(axis=1, keepdims=True)
    ez = np.exp(z - zmax)
    sums = ez.sum(axis=1, keepdims=True)
    probs = (ez / sums).astype(np.float32)
    if rule.method == "energy":
        score = -rule.temperature * (zmax[:, 0] + np.log(sums[:, 0]))
        uncertain = score > rule.threshold
    else:
        score = probs.max(axis=1).astype(np.float64)
        uncertain = score < rule.threshold
    return probs, uncertain, score
