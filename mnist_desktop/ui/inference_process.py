"""The inference process: loads a model, answers prediction requests.

Deliberately Qt-free and started with the ``spawn`` method, so the child process imports
only numpy, Pillow, the core and the model's runtime: ONNX Runtime on a CPU when the model
has an ONNX copy (the bundled one does), else torch (see
:func:`~mnist_desktop.service.models.load_predictor`, ``purpose="live"``). The GUI talks to it through
:class:`mnist_desktop.ui.inference.InferenceWorker`.

Why a process and not a thread: importing torch holds the GIL for long stretches (a
measured 340 ms GUI stall with a thread on this 2-core machine), and preprocessing or a
forward pass in a thread competes with the GUI for the GIL. A process costs ~2 ms per
round trip and never stalls the GUI.

Protocol: the typed messages of :mod:`mnist_desktop.ui.inference_messages` over a
``multiprocessing`` pipe (both ends are this program's own code). Each
:class:`~mnist_desktop.ui.inference_messages.LoadModel` gets a ``Loaded`` or ``LoadFailed``,
each ``Predict`` a ``PredictionReady``, ``NothingToPredict`` or ``PredictFailed``,
each ``Explain`` an ``ExplanationReady`` or ``ExplainFailed``;
``Shutdown`` (or the GUI going away) ends the process.
"""

from __future__ import annotations

import time
import traceback

from mnist_desktop.ui.inference_messages import (Explain, ExplainFailed, ExplanationReady, Loaded,
                                                 LoadFailed, LoadModel, ModelInfo, NothingToPredict,
                                                 Predict, PredictFailed, PredictionReady, Reply,
                                                 Request, Shutdown)

# Largest side of the image sent back for display: enough for a sharp canvas on a
# high-DPI screen, small enough to cross the pipe in about a millisecond.
THUMBNAIL_SIDE = 1024


def main(conn) -> None:
    """Process entry point: :func:`serve`, then exit at once.

    Skipping the interpreter's normal shutdown saves about a second with torch loaded;
    nothing here needs flushing.
    """
    import os

    serve(conn)
    os._exit(0)


def serve(conn) -> None:
    """Answer requests on ``conn`` until :class:`Shutdown` or the GUI goes away.

    Parameters
    ----------
    conn
        The child end of a ``multiprocessing.Pipe``.
    """
    server = _Server()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the GUI exited or crashed: nothing left to serve
        if isinstance(msg, Shutdown):
            return
        try:
            reply = server.handle(msg)
        except Exception as e:  # a bug here must not kill the process: report it instead
            reply = _unexpected_reply(msg, e)
        if reply is not None:
            try:
                conn.send(reply)
            except (BrokenPipeError, OSError):
                return


class _Server:
    def __init__(self) -> None:
        self.predictor = None

    def handle(self, msg: Request) -> Reply | None:
        match msg:
            case LoadModel(token=token, path=path, device=device):
                return self.load(token, path, device)
            case Predict(request_id=request_id, kind=kind, payload=payload):
                return self.predict(request_id, kind, payload, msg.number, msg.edits)
            case Explain():
                return self.explain(msg)
        return None  # not a request this version knows: ignored

    def load(self, token: int, path: str, device: str) -> Loaded | LoadFailed:
        t0 = time.perf_counter()
        from mnist_desktop.core.checkpoint import CheckpointError
        from mnist_desktop.service.models import ModelChoice, load_predictor

        try:
            predictor = load_predictor(ModelChoice(path, device, purpose="live")).predictor
        except CheckpointError as e:
            return LoadFailed(token, str(e))
        except Exception as e:  # e.g. an architecture that fails to build on this torch
            return LoadFailed(token, f"{type(e).__name__}: {_one_line(e)}", traceback.format_exc())
        # Warm up: the first forward pass allocates; do it now, not on the first stroke.
        import numpy as np
        predictor.predict_images(np.zeros((1, 28, 28), np.float32))
        self.predictor = predictor
        meta = predictor.meta
        info = ModelInfo(
            path=str(predictor.path),
            name=meta.name or predictor.path.stem,
            arch=meta.arch,
            labels=list(meta.labels),
            device=predictor.device,
            requested_device=device,
            device_message=predictor.device_message,
            backend=predictor.backend,
            load_seconds=time.perf_counter() - t0,
        )
        return Loaded(token, info)

    def predict(self, request_id: int, kind: str, payload, number: bool = False, edits: tuple = ()) -> Reply:
        from mnist_desktop.core.preprocess import EmptyInputError, ImageReadError, load_image

        t0 = time.perf_counter()
        if self.predictor is None:
            return PredictFailed(request_id, "no model is loaded")
        thumbnail = None
        try:
            if kind == "drawing":
                source = payload
            elif kind == "file":
                source = load_image(payload)
                thumbnail = _thumbnail(source)
            elif kind == "pixels":
                from PIL import Image
                source = Image.fromarray(payload, "RGBA")
            else:
                return PredictFailed(request_id, f"unknown request kind {kind!r}")
            t1 = time.perf_counter()
            reading = size = None
            if number:
                reading = read_number_with_edits(self.predictor, source, edits)
                prediction = reading.single
                size = _input_size(source)
            else:
                prediction = self.predictor.predict(source)
        except ImageReadError as e:
            return PredictFailed(request_id, str(e))
        except EmptyInputError as e:
            return NothingToPredict(request_id, str(e), thumbnail)
        except MemoryError:
            return PredictFailed(request_id, "not enough memory for this image")
        t2 = time.perf_counter()
        timings = {"decode_ms": (t1 - t0) * 1e3, "predict_ms": (t2 - t1) * 1e3}
        return PredictionReady(request_id, prediction, thumbnail, timings, reading, size)


    def explain(self, msg: Explain) -> ExplanationReady | ExplainFailed:
        """Occlusion map and nearest examples (about 70 ms with ONNX Runtime on a CPU;
        the first call also reads the bundled training subset, about 0.1 s)."""
        if self.predictor is None:
            return ExplainFailed(msg.request_id, "no model is loaded")
        import numpy as np

        from mnist_desktop.core.data import DataError
        from mnist_desktop.core.saliency import explain

        t0 = time.perf_counter()
        try:
            explanation = explain(self.predictor, np.asarray(msg.image, np.float32), msg.target,
                                  msg.contrast, msg.k)
        except (ValueError, DataError) as e:   # a class the model lacks, a missing subset
            return ExplainFailed(msg.request_id, _one_line(e))
        return ExplanationReady(msg.request_id, explanation, time.perf_counter() - t0)


def read_number_with_edits(predictor, source, edits: tuple = ()):
    """:func:`~mnist_desktop.core.numbers.read_number` of ``source``, with the hand
    corrections ``edits`` (see :class:`~mnist_desktop.ui.inference_messages.Predict`)
    applied to its segmentation; an edit that no longer fits (the drawing changed) is
    skipped."""
    from mnist_desktop.core.numbers import merge_segments, read_segments, segment, split_segment

    seg = segment(source, predictor.options, predictor)
    for edit in edits:
        try:
            if edit[0] == "merge":
                seg = merge_segments(seg, int(edit[1]))
            elif edit[0] == "split" and 0 <= int(edit[1]) < len(seg.segments):
                seg = split_segment(seg, int(edit[1]), float(edit[2]))
        except (IndexError, ValueError, TypeError):
            continue
    return read_segments(predictor, seg)


def _input_size(source) -> tuple[int, int]:
    """The (width, height) of the coordinates a reading's boxes are in."""
    if hasattr(source, "canvas_size"):
        return tuple(source.canvas_size)
    if hasattr(source, "width"):
        return (source.width, source.height)
    return (source.shape[1], source.shape[0])


def _thumbnail(img):
    """A display copy (RGBA uint8 array, at most THUMBNAIL_SIDE pixels a side)."""
    import numpy as np

    small = img.copy()
    if small.mode in ("I", "F") or small.mode.startswith("I;16"):
        # 16-bit and float images: convert("RGBA") clips them (65535 -> 255: blank);
        # scale to 8 bits the way the model's input is scaled.
        from PIL import Image

        from mnist_desktop.core.preprocess import image_to_gray

        gray, _ = image_to_gray(small)
        small = Image.fromarray(np.round(gray * 255).astype(np.uint8), "L")
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    return np.ascontiguousarray(np.asarray(small.convert("RGBA"), dtype=np.uint8))


def _unexpected_reply(msg, e: Exception) -> Reply | None:
    detail = "".join(traceback.format_exception_only(type(e), e)).strip().splitlines()[-1]
    trace = traceback.format_exc()
    match msg:
        case LoadModel(token=token):
            return LoadFailed(token, f"internal error: {detail}", trace)
        case Predict(request_id=request_id):
            return PredictFailed(request_id, f"internal error: {detail}", trace)
        case Explain(request_id=request_id):
            return ExplainFailed(request_id, f"internal error: {detail}", trace)
    return None


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:200]
