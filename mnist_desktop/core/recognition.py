"""What reading an input gives: one or more digits, each with its box and prediction.

Today every input is read as one digit; multi-digit reading (numbers on the canvas and in
images) will fill :attr:`Recognition.digits` with several readings, left to right, without
a change to the consumers that use this type (the live canvas, ``classify``, the HTTP API).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from mnist_desktop.core.predictor import Prediction, Predictor
from mnist_desktop.core.preprocess import Drawing, Input


@dataclass(frozen=True)
class Box:
    """A box in the input's own pixel coordinates (canvas pixels for a drawing):
    ``x0 <= x < x1``, ``y0 <= y < y1``."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def to_dict(self) -> dict[str, float]:
        return {"x0": float(self.x0), "y0": float(self.y0), "x1": float(self.x1), "y1": float(self.y1)}


@dataclass(frozen=True)
class DigitReading:
    """One digit: where it is and what the model says about it."""

    box: Box
    prediction: Prediction

    def to_dict(self) -> dict:
        """JSON-ready: box, prediction, confidence, uncertain and probabilities per label."""
        p = self.prediction
        return {"box": self.box.to_dict(), "prediction": p.label, "confidence": p.confidence,
                "uncertain": bool(p.uncertain), "probabilities": p.as_dict()}


@dataclass(frozen=True)
class Recognition:
    """The reading of one input: its digits, left to right."""

    digits: Sequence[DigitReading]

    @property
    def text(self) -> str:
        """The labels of the digits in reading order (``"2026"``); ``""`` when none."""
        return "".join(d.prediction.label for d in self.digits)

    @property
    def confidence(self) -> float:
        """The probability that every digit is right (the product of their confidences);
        0 when nothing was read."""
        if not self.digits:
            return 0.0
        return float(np.prod([d.prediction.confidence for d in self.digits]))

    @property
    def uncertain(self) -> bool:
        """True when any digit is flagged by the model's uncertainty rule."""
        return any(d.prediction.uncertain for d in self.digits)

    def to_dict(self) -> dict:
        """JSON-ready: ``text``, ``confidence``, ``uncertain`` and the ``digits``."""
        return {"text": self.text, "confidence": self.confidence, "uncertain": self.uncertain,
                "digits": [d.to_dict() for d in self.digits]}

    @property
    def single(self) -> Prediction:
        """The prediction of a one-digit reading (the first digit of a longer one)."""
        if not self.digits:
            raise ValueError("nothing was read")
        return self.digits[0].prediction


def input_box(source: Input) -> Box:
    """The part of ``source`` a one-digit reading covers: the strokes' bounding box for a
    drawing, the whole frame for an image or array."""
    if isinstance(source, Drawing):
        pts = [s.points[:, :2] for s in source.strokes if len(s.points)]
        if pts:
            xy = np.concatenate(pts)
            (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
            return Box(float(x0), float(y0), float(x1) + 1, float(y1) + 1)
        w, h = source.canvas_size
        return Box(0, 0, float(w), float(h))
    if isinstance(source, Image.Image):
        return Box(0, 0, float(source.width), float(source.height))
    arr = np.asarray(source)
    return Box(0, 0, float(arr.shape[1]), float(arr.shape[0])) if arr.ndim >= 2 else Box(0, 0, 0, 0)


def recognize(predictor: Predictor, source: Input) -> Recognition:
    """Read ``source`` (strokes, PIL image, array) through the one preprocessing path.

    Raises :class:`~mnist_desktop.core.preprocess.EmptyInputError` when there is nothing
    to classify.
    """
    prediction = predictor.predict(source)
    return Recognition([DigitReading(input_box(source), prediction)])
