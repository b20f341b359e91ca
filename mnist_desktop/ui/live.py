"""Live prediction: turns "the input is now X" into predictions the widgets can show.

:class:`LivePrediction` sits between the canvas and the :class:`InferenceWorker`. Each new
input is submitted at once (the worker's mailbox keeps only the newest); each answer is
shown only if it is the newest so far and still belongs to what is on screen. A blank
canvas shows no prediction, and nothing older than the blanking can reappear.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, Signal

from mnist_desktop.ui.images import ImageSource
from mnist_desktop.ui.inference import InferenceResult, InferenceWorker


def _is_drawing(source) -> bool:
    return source is not None and not isinstance(source, ImageSource)


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
    """

    predictionChanged = Signal(object)
    stateChanged = Signal(str, str)
    imageUpdated = Signal(object)
    message = Signal(str, str)
    settled = Signal(object)

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

    # ------------------------------------------------------------------ input
    def set_input(self, source, input_time: float | None = None) -> None:
        """Classify ``source``: a core ``Drawing``, an :class:`ImageSource`, or None."""
        if source is not None and _is_drawing(source) and source.is_empty():
            source = None
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
        request_id = self._worker.submit(kind, payload)
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
            self._show(result.prediction, "ready")
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

    # ------------------------------------------------------------------ output
    def _show(self, prediction, state: str, detail: str = "") -> None:
        self._prediction = prediction
        if prediction is None:
            self.shown_input_time = None
        self.predictionChanged.emit(prediction)
        self._set_state(state, detail)

    def _set_state(self, state: str, detail: str = "") -> None:
        if (state, detail) == (self._state, self._detail):
            return
        self._state, self._detail = state, detail
        self.stateChanged.emit(state, detail)
