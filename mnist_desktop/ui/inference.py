"""The one inference worker: a child process fed through a single-slot mailbox.

:class:`InferenceWorker` lives on the GUI thread and never blocks it. It starts the
inference process (:mod:`mnist_desktop.ui.inference_process`), which imports torch, loads
the model and answers requests. At most one prediction request is in flight; a newer
request replaces the queued one (``requestDropped`` reports the replaced id), so work never
piles up however fast the canvas emits. Results come back on a reader thread and reach the
GUI thread only through queued signals. Results older than :meth:`cancel_pending` or a model
change are dropped as stale.

Explanations (:meth:`InferenceWorker.explain`: saliency map and nearest training examples)
have their own single-slot mailbox and always yield to predictions: one is sent only while
no prediction is queued or in flight, so explaining never slows live inference down.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal
from PySide6.QtGui import QImage

from mnist_desktop.ui.inference_messages import (Explain, ExplainFailed, ExplanationReady, InputKind,
                                                 Loaded, LoadFailed, LoadModel, ModelInfo,
                                                 NothingToPredict, Predict, PredictFailed,
                                                 PredictionReady, Shutdown)

__all__ = ["ExplanationResult", "InferenceResult", "InferenceWorker", "ModelInfo", "rgba_to_qimage"]

log = logging.getLogger(__name__)

# How many unexpected child exits within CRASH_WINDOW_S are tolerated before giving up.
MAX_CRASHES = 3
CRASH_WINDOW_S = 60.0


@dataclass
class InferenceResult:
    """The answer to one request.

    ``status`` is ``"ok"`` (``prediction`` set), ``"empty"`` (nothing to classify) or
    ``"error"`` (``message`` says why, e.g. an unreadable file). ``thumbnail`` is the decoded
    image for file requests (for display), else None.
    """

    request_id: int
    status: str
    prediction: Any = None  # mnist_desktop.core.predictor.Prediction
    message: str = ""
    thumbnail: QImage | None = None
    timings: dict = field(default_factory=dict)
    reading: Any = None                 # number mode: a core Recognition
    input_size: tuple | None = None     # number mode: what the reading's boxes refer to


@dataclass
class ExplanationResult:
    """The answer to one :meth:`InferenceWorker.explain` request.

    ``status`` is ``"ok"`` (``explanation`` set: a core
    :class:`~mnist_desktop.core.saliency.Explanation`) or ``"error"`` (``message``).
    """

    request_id: int
    status: str
    explanation: Any = None
    message: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class _ChildExited:
    """Reader -> GUI thread: the pipe reached EOF (the process exited or crashed)."""


@dataclass(frozen=True)
class _BadReply:
    """Reader -> GUI thread: a reply could not be unpickled."""

    detail: str


class _Reader(QThread):
    """Blocks on the pipe so the GUI thread never does; converts thumbnails to QImage here."""

    received = Signal(object)   # (generation, a reply, _ChildExited or _BadReply)

    def __init__(self, conn, generation: int):
        super().__init__()
        self._conn = conn
        self._generation = generation
        self.setObjectName("inferenceReader")

    def run(self) -> None:
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError, ValueError):
                self.received.emit((self._generation, _ChildExited()))
                return
            except Exception as e:  # an unpicklable reply: report, keep reading
                self.received.emit((self._generation, _BadReply(str(e))))
                continue
            if isinstance(msg, (PredictionReady, NothingToPredict)) and msg.thumbnail is not None:
                msg = dataclasses.replace(msg, thumbnail=rgba_to_qimage(msg.thumbnail))
            self.received.emit((self._generation, msg))


def rgba_to_qimage(arr) -> QImage:
    """An ``(H, W, 4)`` uint8 RGBA array to a QImage that owns its pixels."""
    h, w = arr.shape[:2]
    return QImage(arr.data, w, h, arr.strides[0], QImage.Format.Format_RGBA8888).copy()


class InferenceWorker(QObject):
    """Runs predictions off the GUI process; see the module docstring.

    Signals
    -------
    modelLoading(str, str)
        A model load started: path, requested device.
    modelLoaded(ModelInfo)
        The model is ready (``device_message`` explains a CPU fallback).
    modelFailed(str, str)
        Loading failed: path, one-line reason. The previous model, if any, stays active.
    resultReady(InferenceResult)
        A current (not stale) request was answered.
    requestDropped(int)
        A request was superseded before it ran, or its result was stale.
    processRestarted(str)
        The inference process died and was restarted (or given up on); a message.
    explanationReady(ExplanationResult)
        A current :meth:`explain` request was answered.
    """

    modelLoading = Signal(str, str)
    modelLoaded = Signal(object)
    modelFailed = Signal(str, str)
    resultReady = Signal(object)
    requestDropped = Signal(int)
    processRestarted = Signal(str)
    explanationReady = Signal(object)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.setObjectName("inferenceWorker")
        self._ids = itertools.count(1)
        self._tokens = itertools.count(1)
        self._generation = 0
        self._process = None
        self._conn = None
        self._reader: _Reader | None = None
        self._stopping = False
        self._crashes: deque[float] = deque()
        self._wanted: LoadModel | None = None  # the latest load
        self._ready = False
        self._info: ModelInfo | None = None
        self._pending: Predict | None = None
        self._in_flight: int | None = None
        self._floor = 0  # results with a smaller id are stale
        self._explain_ids = itertools.count(1)
        self._explain_pending: Explain | None = None
        self._explain_in_flight: int | None = None
        self._explain_floor = 0

    # ------------------------------------------------------------------ state
    @property
    def is_running(self) -> bool:
        return self._process is not None

    @property
    def is_ready(self) -> bool:
        """True when a model is loaded and requests are being answered."""
        return self._ready

    @property
    def model_info(self) -> ModelInfo | None:
        return self._info

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the inference process (a ``spawn`` child; returns in ~10 ms)."""
        if self._process is not None:
            return
        import multiprocessing

        from mnist_desktop.ui.inference_process import main

        ctx = multiprocessing.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe()
        process = ctx.Process(target=main, args=(child_conn,), name="mnist-desktop-inference",
                              daemon=True)
        process.start()
        # Only the child may hold its end, so the reader sees EOF when the child exits.
        child_conn.close()
        self._generation += 1
        self._process, self._conn = process, parent_conn
        self._reader = _Reader(parent_conn, self._generation)
        self._reader.received.connect(self._on_message)
        self._reader.start()
        if self._wanted is not None:
            self._send(self._wanted)

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the process and join the reader thread. Safe to call twice.

        A process still importing torch or loading a model cannot read the stop request;
        it is given a fraction of ``timeout`` and then terminated, so closing the app
        never hangs on a load.
        """
        self._stopping = True
        self._pending = None
        self._shutdown_process(timeout if self._ready else min(timeout, 0.3))

    def _shutdown_process(self, timeout: float) -> int | None:
        """Stop and join the process; returns its exit code (None if there was none)."""
        process, conn, reader = self._process, self._conn, self._reader
        self._process = self._conn = self._reader = None
        self._in_flight = None
        self._explain_in_flight = None
        if process is None:
            return None
        try:
            conn.send(Shutdown())
        except (OSError, ValueError):
            pass
        process.join(timeout)
        if process.is_alive():
            process.terminate()
            process.join(1.0)
        if process.is_alive():
            process.kill()
            process.join(1.0)
        if reader is not None:
            reader.wait(3000)  # the child is gone, so the pipe is at EOF: returns at once
        conn.close()
        exitcode = process.exitcode
        process.close()
        return exitcode

    # ------------------------------------------------------------------ requests
    def load_model(self, path: str, device: str = "auto") -> None:
        """Load ``path`` on ``device``; predictions wait until it is ready."""
        self._wanted = LoadModel(next(self._tokens), str(path), device)
        self._ready = False
        # Whatever is in flight was computed with the old model.
        self._floor = self._peek_next_id()
        self.cancel_explanations()
        self.modelLoading.emit(str(path), device)
        if self._process is not None:
            self._send(self._wanted)

    def submit(self, kind: InputKind, payload: Any, number: bool = False, edits: tuple = ()) -> int:
        """Queue a prediction; returns its request id.

        Parameters
        ----------
        kind
            ``"drawing"`` (a core ``Drawing``), ``"file"`` (a path) or ``"pixels"``
            (an RGBA uint8 array).
        payload
            The input itself.
        number, edits
            Read the input as a number, with hand corrections of its segmentation
            (:class:`~mnist_desktop.ui.inference_messages.Predict`).
        """
        request_id = next(self._ids)
        if self._pending is not None:
            self.requestDropped.emit(self._pending.request_id)
        self._pending = Predict(request_id, kind, payload, number, tuple(edits))
        self._pump()
        return request_id

    def cancel_pending(self) -> None:
        """Drop the queued request and mark anything in flight as stale."""
        if self._pending is not None:
            self.requestDropped.emit(self._pending.request_id)
            self._pending = None
        self._floor = self._peek_next_id()

    def explain(self, image, target: int, contrast: int | None = None, k: int = 6) -> int:
        """Queue an explanation of a prediction; returns its id.

        Parameters
        ----------
        image
            The 28x28 model input (``Prediction.image``).
        target
            The class index explained (usually the predicted one).
        contrast
            Another class index for "why not ``contrast``?", or None.
        k
            How many nearest training examples of ``target``'s class to return.
        """
        import numpy as np

        request_id = next(self._explain_ids)
        self._explain_pending = Explain(request_id, np.asarray(image, np.float32), int(target),
                                        None if contrast is None else int(contrast), int(k))
        self._pump()
        return request_id

    def cancel_explanations(self) -> None:
        """Drop the queued explanation and mark the one in flight as stale."""
        self._explain_pending = None
        value = next(self._explain_ids)
        self._explain_ids = itertools.count(value)
        self._explain_floor = value

    def _peek_next_id(self) -> int:
        # itertools.count cannot peek: take one and keep the counter continuing after it.
        value = next(self._ids)
        self._ids = itertools.count(value)
        return value

    def _pump(self) -> None:
        if self._in_flight is not None or not self._ready or self._process is None:
            return
        if self._pending is not None:
            request, self._pending = self._pending, None
            self._in_flight = request.request_id
            self._send(request)
        elif self._explain_pending is not None and self._explain_in_flight is None:
            # Predictions first: an explanation goes out only when none is waiting.
            request, self._explain_pending = self._explain_pending, None
            self._explain_in_flight = request.request_id
            self._send(request)

    def _send(self, msg: LoadModel | Predict | Explain) -> None:
        try:
            self._conn.send(msg)
        except (OSError, ValueError):
            pass  # the process is gone; the reader's EOF triggers the restart

    # ------------------------------------------------------------------ replies
    def _on_message(self, item) -> None:
        generation, msg = item
        if generation != self._generation:
            return  # from a process that was already replaced
        match msg:
            case Loaded():
                self._on_loaded(msg)
            case LoadFailed():
                self._on_load_failed(msg)
            case PredictionReady():
                self._on_answer(msg.request_id, InferenceResult(
                    msg.request_id, "ok", msg.prediction, thumbnail=msg.thumbnail, timings=msg.timings,
                    reading=msg.reading, input_size=msg.input_size))
            case NothingToPredict():
                self._on_answer(msg.request_id, InferenceResult(
                    msg.request_id, "empty", message=msg.message, thumbnail=msg.thumbnail))
            case PredictFailed():
                if msg.traceback:
                    log.error("inference process failed on request %d: %s\n%s",
                              msg.request_id, msg.message, msg.traceback.rstrip())
                self._on_answer(msg.request_id, InferenceResult(msg.request_id, "error", message=msg.message))
            case ExplanationReady():
                self._on_explained(msg.request_id, ExplanationResult(
                    msg.request_id, "ok", msg.explanation, seconds=msg.seconds))
            case ExplainFailed():
                if msg.traceback:
                    log.error("explaining failed (request %d): %s\n%s", msg.request_id, msg.message,
                              msg.traceback.rstrip())
                self._on_explained(msg.request_id, ExplanationResult(msg.request_id, "error",
                                                                     message=msg.message))
            case _ChildExited():
                self._on_process_exit()
            case _BadReply(detail=detail):
                log.error("bad reply from the inference process: %s", detail)
                if self._in_flight is None and self._explain_in_flight is not None:
                    self._on_explained(self._explain_in_flight, ExplanationResult(
                        self._explain_in_flight, "error", message=f"bad reply ({detail})"))
                    return
                in_flight, self._in_flight = self._in_flight, None
                if in_flight is not None:
                    self.resultReady.emit(InferenceResult(
                        in_flight, "error", message=f"bad reply from the inference process ({detail})"))
                self._pump()
            case _:
                log.warning("unknown message from the inference process: %r", type(msg).__name__)

    def _on_loaded(self, msg: Loaded) -> None:
        if self._wanted and msg.token == self._wanted.token:
            self._info = msg.info
            self._ready = True
            self.modelLoaded.emit(self._info)
            self._pump()

    def _on_load_failed(self, msg: LoadFailed) -> None:
        if not (self._wanted and msg.token == self._wanted.token):
            return  # an older load: a newer one is on its way
        failed_path = self._wanted.path
        if msg.traceback:   # a bug rather than a bad file: keep the details
            log.error("loading model %s failed: %s\n%s", failed_path, msg.message, msg.traceback.rstrip())
        # The child keeps its previous predictor, if it had one; a restart after a crash
        # must then reload that one, not the file that failed.
        self._ready = self._info is not None
        if self._info is not None:
            self._wanted = LoadModel(msg.token, self._info.path, self._info.requested_device)
        else:
            self._wanted = None
        self.modelFailed.emit(failed_path, msg.message)
        self._pump()

    def _on_answer(self, request_id: int, result: InferenceResult) -> None:
        if self._in_flight == request_id:
            self._in_flight = None
        if request_id < self._floor:
            self.requestDropped.emit(request_id)
        else:
            self.resultReady.emit(result)
        self._pump()

    def _on_explained(self, request_id: int, result: ExplanationResult) -> None:
        if self._explain_in_flight == request_id:
            self._explain_in_flight = None
        if request_id >= self._explain_floor:
            self.explanationReady.emit(result)
        self._pump()

    def _on_process_exit(self) -> None:
        if self._stopping or self._process is None:
            return
        in_flight, explaining = self._in_flight, self._explain_in_flight
        exitcode = self._shutdown_process(0.5)
        if explaining is not None and explaining >= self._explain_floor:
            self.explanationReady.emit(ExplanationResult(
                explaining, "error", message="the inference process stopped while explaining"))
        now = time.monotonic()
        self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > CRASH_WINDOW_S:
            self._crashes.popleft()
        log.error("the inference process stopped unexpectedly (exit code %s)", exitcode)
        if in_flight is not None:
            # Not retried: the input may be what crashed the process.
            self.resultReady.emit(InferenceResult(in_flight, "error",
                                                  message="the inference process stopped while handling this input"))
        self._ready = False
        self._info = None
        if len(self._crashes) > MAX_CRASHES:
            log.error("the inference process stopped %d times within %.0f s: not restarted",
                      len(self._crashes), CRASH_WINDOW_S)
            self.processRestarted.emit("The inference process keeps stopping; predictions are off. "
                                       "Restart the app to try again.")
            return
        self.processRestarted.emit("The inference process stopped unexpectedly and was restarted.")
        self.start()
