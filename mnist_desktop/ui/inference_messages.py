"""The messages the GUI and the inference process exchange over their pipe.

Small frozen dataclasses, pickled by ``multiprocessing`` and dispatched by type
(``match``) at both ends. Deliberately free of Qt and torch: the inference process
imports this module before anything heavy, and payloads are plain Python and numpy
objects (a core ``Drawing``, a path, RGBA ``uint8`` arrays, a core ``Prediction``).

GUI -> inference process
    :class:`LoadModel`, :class:`Predict`, :class:`Explain`, :class:`Shutdown`.
inference process -> GUI
    :class:`Loaded` or :class:`LoadFailed` answer a :class:`LoadModel` (same ``token``);
    :class:`PredictionReady`, :class:`NothingToPredict` or :class:`PredictFailed` answer
    a :class:`Predict` (same ``request_id``); :class:`ExplanationReady` or
    :class:`ExplainFailed` answer an :class:`Explain` (same ``request_id``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

#: What a :class:`Predict` carries: a core ``Drawing``, a file path (decoded in the
#: inference process) or an RGBA ``uint8`` array of shape ``(H, W, 4)``.
InputKind = Literal["drawing", "file", "pixels"]


@dataclass
class ModelInfo:
    """What the loaded model is and where it runs."""

    path: str
    name: str
    arch: str
    labels: list[str]
    device: str
    requested_device: str
    device_message: str | None = None
    load_seconds: float = 0.0
    backend: str = "torch"          # or "onnxruntime"


# --------------------------------------------------------------------------- requests

@dataclass(frozen=True)
class LoadModel:
    """Load ``path`` on ``device`` (``auto``, ``cpu`` or ``cuda``); ``token`` names the
    load so the GUI can tell an answer to an older load apart."""

    token: int
    path: str
    device: str


@dataclass(frozen=True)
class Predict:
    """Classify one input with the loaded model.

    ``number``: read the input as a number (segmented into digits, see
    :mod:`mnist_desktop.core.numbers`); ``edits`` are hand corrections of the segmentation
    applied in order: ``("merge", i)`` joins segments ``i`` and ``i + 1``, ``("split", i,
    x)`` cuts segment ``i`` at input x-coordinate ``x``.
    """

    request_id: int
    kind: InputKind
    payload: Any
    number: bool = False
    edits: tuple = ()


@dataclass(frozen=True)
class Explain:
    """Explain a prediction: the occlusion saliency map of the 28x28 model input ``image``
    for class index ``target`` (against ``contrast``, another class index, or None) and the
    ``k`` nearest training examples of ``target``'s class
    (:func:`mnist_desktop.core.saliency.explain`)."""

    request_id: int
    image: Any                       # (28, 28) float32 in [0, 1]: Prediction.image
    target: int
    contrast: int | None = None
    k: int = 6


@dataclass(frozen=True)
class Shutdown:
    """Stop serving and exit."""


Request = Union[LoadModel, Predict, Explain, Shutdown]


# --------------------------------------------------------------------------- replies

@dataclass(frozen=True)
class Loaded:
    """The model of load ``token`` is ready."""

    token: int
    info: ModelInfo


@dataclass(frozen=True)
class LoadFailed:
    """Load ``token`` failed; the previous model, if any, stays loaded.

    ``message`` is one line for the user; ``traceback`` is set for unexpected errors
    (a bug rather than a bad file) so the GUI can log it.
    """

    token: int
    message: str
    traceback: str | None = None


@dataclass(frozen=True)
class PredictionReady:
    """The prediction for ``request_id``.

    ``thumbnail`` is a display copy of a file input (an RGBA ``uint8`` array; the GUI's
    reader thread turns it into a ``QImage``), else None.
    """

    request_id: int
    prediction: Any                  # mnist_desktop.core.predictor.Prediction
    thumbnail: Any = None
    timings: dict = field(default_factory=dict)
    reading: Any = None              # number mode: a core Recognition (digits with boxes)
    input_size: tuple | None = None  # number mode: (width, height) the boxes refer to


@dataclass(frozen=True)
class NothingToPredict:
    """The input of ``request_id`` holds no ink (``message`` says so)."""

    request_id: int
    message: str
    thumbnail: Any = None


@dataclass(frozen=True)
class PredictFailed:
    """``request_id`` could not be answered: ``message`` says why in one line (e.g. an
    unreadable file); ``traceback`` is set for unexpected errors."""

    request_id: int
    message: str
    traceback: str | None = None


@dataclass(frozen=True)
class ExplanationReady:
    """The answer to :class:`Explain` ``request_id``: a core ``Explanation``."""

    request_id: int
    explanation: Any                 # mnist_desktop.core.saliency.Explanation
    seconds: float = 0.0


@dataclass(frozen=True)
class ExplainFailed:
    """:class:`Explain` ``request_id`` could not be answered (``message`` says why)."""

    request_id: int
    message: str
    traceback: str | None = None


Reply = Union[Loaded, LoadFailed, PredictionReady, NothingToPredict, PredictFailed,
              ExplanationReady, ExplainFailed]
