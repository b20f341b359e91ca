"""What the batch engine gives back per file: :class:`FileResult`, and
:func:`display_path` for showing and exporting any path as valid Unicode."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class FileResult:
    """The outcome for one input file.

    ``probs`` is aligned with ``labels``; it is None when the file could not be used, and
    then ``error`` says why in one line. ``corrected_label`` is a label set by hand (GUI).
    ``number``/``number_confidence`` are set when the run also read numbers.
    """

    path: str
    labels: Sequence[str]
    probs: np.ndarray | None = None
    uncertain: bool = False
    error: str | None = None
    true_label: str | None = None
    image: np.ndarray | None = None  # the 28x28 input, when requested
    corrected_label: str | None = None
    number: str | None = None        # the number reading (``--number``); "" when none read
    number_confidence: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def prediction(self) -> str:
        return "" if self.probs is None else self.labels[int(np.argmax(self.probs))]

    @property
    def confidence(self) -> float:
        return float("nan") if self.probs is None else float(np.max(self.probs))

    @property
    def final_label(self) -> str:
        """The corrected label when there is one, else the prediction ('' on error)."""
        return self.corrected_label or self.prediction

    def top_k(self, k: int) -> list[tuple[str, float]]:
        if self.probs is None:
            return []
        order = np.argsort(-self.probs, kind="stable")[:k]
        return [(self.labels[i], float(self.probs[i])) for i in order]


def display_path(path: str | bytes | os.PathLike) -> str:
    """A path as text that is always valid Unicode.

    File names that are not valid UTF-8 reach Python as strings with lone surrogates
    (``surrogateescape``); those cannot be written to a UTF-8 CSV or shown by Qt. Their
    undecodable bytes are shown as ``\\xNN`` escapes instead; other names are unchanged.
    """
    text = os.fsdecode(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
