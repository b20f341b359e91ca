"""Live prediction: turns "the input is now X" into predictions the widgets can show.

:class:`LivePrediction` sits between the canvas and the :class:`InferenceWorker`. Each new
input is submitted at once (the worker's mailbox keeps only the newest); each answer is
shown only if it is the newest so far and still belongs to what is on screen. A blank
canvas shows no prediction, and nothing older than the blanking can reappear.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from PySide6.QtCore import QObject, Signal

from mnist_desktop.ui.images import ImageSource
from mnist_desktop.ui.inference import InferenceResult, InferenceWorker


def _is_drawing(source) -> bool:
    return source is not None and not isinstance(source, ImageSource)


@dataclass(frozen=True)
class NumberView:
    """A number reading as shown: the core ``Recognition``, the digit whose
    probabilities are shown, the ``(width, height)`` its boxes refer to (canvas document
    units or image pixels) and whether hand corrections shaped it."""

    reading: object
    selected: int
    input_size: tuple | None
    edited: bool = False

    @property
    def prediction(self):
        return self.reading.digits[self.selected].prediction


class LivePrediction(QObject):
    """The current input and its prediction.

    Parameters
    ----------
    worker
        The inference worker to send requests to (not owned).

    Signals
    -------
    predictionChanged(object)
        A core ``Prediction`` for the current input, or None.
    stateChanged(str, str)
        ``blank``, ``loading``, ``waiting``, ``ready``, ``empty``, ``error`` or
        ``nomodel``, with a detail text.
    imageUpdated(object)
        An :class:`ImageSource` got its display image or its error.
    message(str, str)
        ``(level, text)`` for the user: ``info``, ``warning`` or ``error``.
    settled(object)
        The answer for the latest input arrived (a ``Prediction`` or None): nothing newer
        is outstanding, so what is shown matches what is on the canvas.
    readingChanged(object)
        Number mode: a :class:`NumberView` (the reading, its selected digit, the size its
        boxes refer to), or None. Emitted before ``predictionChanged``, which then carries
        the selected digit's prediction.

    Number mode (:meth:`set_number_mode`) reads the input as a number in the inference
    process; :meth:`select_digit` picks the digit whose probabilities are shown and
    :meth:`edit_segments` corrects the segmentation by hand (the corrections hold until
    the input changes).
    """

    predictionChanged = Signal(object)
    stateChanged = Signal(str, str)
    imageUpdated = Signal(object)
    message = Signal(str, str)
    settled = Signal(object)
    readingChanged = Signal(object)

    def __init__(self, worker: InferenceWorker, parent: QObject | None = None):
        super().__init__(parent)
        self.setObjectName("livePrediction")
        self._worker = worker
        self._source = None
        self._input_time = 0.0
        self._requests: dict[int, tuple[object, float]] = {}
        self._shown_id = 0
        self._prediction = None
        self._state = "blank"
        self._detail = ""
        self.shown_input_time: float | None = None  # input time of the prediction on screen
        self._number_mode = False
        self._edits: tuple = ()
        self._view: NumberView | None = None
        self._connections = [
            (worker.resultReady, self._on_result),
            (worker.modelLoading, self._on_model_loading),
            (worker.modelLoaded, self._on_model_loaded),
            (worker.modelFailed, self._on_model_failed),
        ]
        for signal, slot in self._connections:
            signal.connect(slot)

    def detach(self) -> None:
        """Stop listening to the worker (it may outlive this controller)."""
        for signal, slot in self._connections:
            try:
                signal.disconnect(slot)
            except (RuntimeError, TypeError):
                pass
        self._connections = []
        self._requests.clear()

    @property
    def prediction(self):
        return self._prediction

    @property
    def state(self) -> str:
        return self._state

    @property
    def source(self):
        return self._source

    @property
    def number_mode(self) -> bool:
        return self._number_mode

    @property
    def number_view(self) -> "NumberView | None":
        """The number reading on screen (number mode), or None."""
        return self._view

    def set_number_mode(self, on: bool) -> None:
        """Read inputs as numbers (True) or as one digit (False); re-reads the input."""
        if bool(on) == self._number_mode:
            return
        self._number_mode = bool(on)
        self._edits = ()
        self.refresh()

    def select_digit(self, index: int) -> None:
        """Show the probabilities of digit ``index`` of the number on screen."""
        view = self._view
        if view is None or not 0 <= index < len(view.reading.digits) or index == view.selected:
            return
        self._view = NumberView(view.reading, index, view.input_size, view.edited)
        self.readingChanged.emit(self._view)
        self.predictionChanged.emit(self._view.prediction)

    def edit_segments(self, edit: tuple) -> None:
        """Correct the segmentation by hand: ``("merge", i)`` joins digits ``i`` and
        ``i + 1``; ``("split", i, x)`` cuts digit ``i`` at x (input coordinates); ``("reset",)``
        drops the corrections. Read again at once."""
        if not self._number_mode or self._source is None:
            return
        self._edits = () if edit[0] == "reset" else self._edits + (tuple(edit),)
        self.refresh()

    # ------------------------------------------------------------------ input
    def set_input(self, source, input_time: float | None = None) -> None:
        """Classify ``source``: a core ``Drawing``, an :class:`ImageSource`, or None."""
        if source is not None and _is_drawing(source) and source.is_empty():
            source = None
        self._edits = ()   # hand corrections belong to the input they were made on
        previous = self._source
        self._source = source
        self._input_time = input_time if input_time is not None else time.perf_counter()
        # A new stroke snapshot continues the same drawing; anything else makes every
        # outstanding answer stale.
        if not (_is_drawing(source) and _is_drawing(previous)):
            self._requests.clear()
            self._worker.cancel_pending()
        if source is None:
            self._show(None, "blank")
            return
        self._submit()

    def refresh(self) -> None:
        """Classify the current input again (e.g. after a model change)."""
        self._requests.clear()
        self._worker.cancel_pending()
        if self._source is None:
            self._show(None, "blank")
        else:
            self._submit()

    def _submit(self) -> None:
        source = self._source
        kind, payload = source.request if isinstance(source, ImageSource) else ("drawing", source)
        request_id = self._worker.submit(kind, payload, self._number_mode, self._edits)
        self._requests[request_id] = (source, self._input_time)
        if self._prediction is None or isinstance(source, ImageSource):
            if not self._worker.is_ready:
                self._set_state("loading" if self._worker.is_running else "nomodel")
            elif isinstance(source, ImageSource):
                self._show(None, "waiting", source.name)

    # ------------------------------------------------------------------ answers
    def _on_result(self, result: InferenceResult) -> None:
        entry = self._requests.pop(result.request_id, None)
        if entry is None or result.request_id <= self._shown_id:
            return  # not ours, or older than what is on screen
        for rid in [r for r in self._requests if r < result.request_id]:
            del self._requests[rid]
        source, input_time = entry
        if isinstance(source, ImageSource):
            self._update_image(source, result)
        self._shown_id = result.request_id
        if result.status == "ok":
            self.shown_input_time = input_time
            prediction = result.prediction
            if result.reading is not None and self._number_mode:
                self._view = self._next_view(result.reading, result.input_size, isinstance(source, ImageSource))
                self.readingChanged.emit(self._view)
                prediction = self._view.prediction
            elif self._view is not None:
                self._view = None
                self.readingChanged.emit(None)
            self._show(prediction, "ready")
        elif result.status == "empty":
            detail = "No ink found in this image" if isinstance(source, ImageSource) else ""
            self._show(None, "empty", detail)
        else:
            self._show(None, "error", result.message)
        if not self._requests:
            self.settled.emit(self._prediction)

    @property
    def is_settled(self) -> bool:
        """True when no request for the current input is outstanding."""
        return not self._requests

    def _update_image(self, source: ImageSource, result: InferenceResult) -> None:
        changed = False
        if result.thumbnail is not None and source.display is None:
            source.display = result.thumbnail
            changed = True
        if result.status == "error" and source.error is None:
            source.error = result.message
            changed = True
            self.message.emit("error", f"Cannot open {source.name}: {result.message}")
        if changed:
            self.imageUpdated.emit(source)

    # ------------------------------------------------------------------ model
    def _on_model_loading(self, path: str, device: str) -> None:
        self._requests.clear()
        if self._prediction is None and self._source is not None:
            self._set_state("loading")

    def _on_model_loaded(self, info) -> None:
        self.refresh()

    def _on_model_failed(self, path: str, message: str) -> None:
        if self._worker.is_ready:
            self.refresh()  # the previous model is still active
        elif self._prediction is None:
            self._set_state("nomodel", message)

    def _next_view(self, reading, input_size, image: bool) -> "NumberView":
        """The view of a new reading: the same digit stays selected while the number of
        digits holds; otherwise the newest digit of a drawing (the one just written), or
        the first of an image."""
        old = self._view
        n = len(reading.digits)
        if old is not None and len(old.reading.digits) == n:
            selected = old.selected
        else:
            selected = 0 if image else n - 1
        return NumberView(reading, selected, input_size, bool(self._edits))

    # ------------------------------------------------------------------ output
    def _show(self, prediction, state: str, detail: str = "") -> None:
        self._prediction = prediction
        if prediction is None:
            self.shown_input_time = None
            if self._view is not None:
                self._view = None
                self.readingChanged.emit(None)
        self.predictionChanged.emit(prediction)
        self._set_state(state, detail)

    def _set_state(self, state: str, detail: str = "") -> None:
        if (state, detail) == (self._state, self._detail):
            return
        self._state, self._detail = state, detail
        self.stateChanged.emit(state, detail)
