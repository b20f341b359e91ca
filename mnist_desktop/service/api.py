"""The local prediction API (``mnist-desktop serve``): an HTTP front on the same model,
preprocessing and uncertainty rule as the app.

``POST /predict`` takes an image file (any format the app opens: the body with an
``image/*`` or ``application/octet-stream`` content type), raw 8-bit grayscale pixels
(``application/x-gray8`` with ``width`` and ``height`` query parameters), or JSON with a
base64 image or pen strokes; it answers with the probability of every class label, the
prediction, ``uncertain`` and, with ``?number=true``, the reading of the whole number.
``GET /health`` and ``GET /model`` say whether it runs and what it runs.

Every input goes through :func:`mnist_desktop.core.preprocess.preprocess` (the one
preprocessing path); images are opened with the app's safe loader (only raster formats,
never an interpreter; decompression bombs refused). Bodies are counted while they
arrive: an oversized one is refused (413) before it is read in full. Concurrent requests
share forward passes through :class:`~mnist_desktop.service.batching.MicroBatcher`; a
small image (an MNIST-style 28x28 digit) is decoded on the event loop (libspng for a
plain grayscale PNG, as batch classification does) and preprocessed with the rest of its
batch in one vectorized pass (:func:`~mnist_desktop.core.preprocess.preprocess_small_batch`,
the same result bit for bit as ``preprocess`` one by one), in the forward-pass thread.

This module imports FastAPI, which only ``serve`` needs: nothing on the path to the
app's window imports it.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import json
import math
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mnist_desktop.core.batch.decoding import _gray_png
from mnist_desktop.core.predictor import Prediction, Predictor
from mnist_desktop.core.preprocess import (Drawing, EmptyInputError, ImageReadError, PreprocessOptions,
                                           fits_small_batch, image_to_gray, load_image, open_image, preprocess,
                                           preprocess_small_batch)
from mnist_desktop.service.batching import MicroBatcher

__all__ = ["ApiLimits", "ApiError", "create_app", "is_loopback"]

IMAGE_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/gif", "image/tiff", "image/webp",
               "image/x-portable-anymap", "image/x-icon", "image/x-tga")
RAW_TYPE = "application/x-gray8"


@dataclass(frozen=True)
class ApiLimits:
    """What one request may carry."""

    max_body_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 25_000_000
    max_strokes: int = 500
    max_points: int = 100_000
    max_canvas_side: int = 10_000
    max_top_k: int = 100


class ApiError(Exception):
    """A request the API refuses: ``status`` (4xx) and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------- the schema

class StrokesRequest(BaseModel):
    """Pen strokes: each a list of ``[x, y]`` or ``[x, y, pressure]`` points in canvas pixels."""

    model_config = ConfigDict(extra="forbid")
    strokes: list[list[list[float]]] = Field(..., description="strokes, each a list of [x, y] or [x, y, pressure]")
    canvas_size: tuple[int, int] = Field((280, 280), description="canvas width and height the strokes were drawn on")


class ImageRequest(BaseModel):
    """An image file (PNG, JPEG, ...) as base64."""

    model_config = ConfigDict(extra="forbid")
    image: str = Field(..., description="the image file's bytes, base64-encoded")


class DigitOut(BaseModel):
    prediction: str = Field(..., description="the most probable class label")
    confidence: float = Field(..., description="its probability")
    probabilities: dict[str, float] = Field(..., description="the probability of every class label")
    top: list[tuple[str, float]] = Field(..., description="the top-k labels with their probabilities")
    uncertain: bool = Field(..., description="flagged by the model's uncertainty rule (may not be a digit)")
    score: float = Field(..., description="the value the uncertainty rule compared")
    box: list[float] | None = Field(None, description="x0, y0, x1, y1 of the digit in the input (number readings)")


class NumberOut(BaseModel):
    text: str = Field(..., description="the digits, left to right ('' when nothing was read)")
    confidence: float = Field(..., description="the probability that every digit is right")
    uncertain: bool
    digits: list[DigitOut]


class PredictResponse(DigitOut):
    labels: list[str] = Field(..., description="the model's class labels, in order")
    number: NumberOut | None = Field(None, description="the whole-number reading (with ?number=true)")


class ErrorBody(BaseModel):
    status: int
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class ModelResponse(BaseModel):
    name: str
    file: str
    labels: list[str]
    backend: str
    device: str
    precision: str
    notes: list[str]
    metrics: dict[str, Any]
    batching: dict[str, float]
    limits: dict[str, int]


_ERRORS = {
    400: {"model": ErrorResponse, "description": "The body is not an image, or holds nothing to classify"},
    413: {"model": ErrorResponse, "description": "The body or the image is too large"},
    415: {"model": ErrorResponse, "description": "Unsupported content type"},
    422: {"model": ErrorResponse, "description": "Malformed JSON, strokes or parameters"},
}

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            **{t: {"schema": {"type": "string", "format": "binary"}} for t in ("image/png", "image/jpeg",
                                                                                 "application/octet-stream")},
            RAW_TYPE: {"schema": {"type": "string", "format": "binary",
                                  "description": "width*height bytes of 8-bit grayscale, row by row"}},
            "application/json": {"schema": {"oneOf": [{"$ref": "#/components/schemas/ImageRequest"},
                                                      {"$ref": "#/components/schemas/StrokesRequest"}]}},
        },
    }
}


# --------------------------------------------------------------------------- decoding

async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit``
    (from Content-Length, else while it streams in)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise ApiError(400, "invalid Content-Length header") from None
        if n > limit:
            raise ApiError(413, f"the body is {n} bytes; at most {limit} are accepted")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ApiError(413, f"the body is over {limit} bytes, the most accepted")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_image(data: bytes, limits: ApiLimits):
    """A PIL image from an image file's bytes, with the app's safe loader."""
    if not data:
        raise ApiError(400, "the body is empty: send an image file")
    try:
        with open_image(io.BytesIO(data)) as im:
            w, h = im.size
    except Exception:
        w = h = 0   # the loader below names what is wrong
    if w * h > limits.max_pixels:
        raise ApiError(413, f"the image is {w}x{h} pixels; at most {limits.max_pixels} pixels are accepted")
    try:
        return load_image(io.BytesIO(data))
    except ImageReadError as e:
        status = 413 if "too large" in str(e) else 400
        raise ApiError(status, f"cannot read the image: {e}") from None


def decode_raw(data: bytes, width: int | None, height: int | None, limits: ApiLimits) -> np.ndarray:
    if width is None or height is None:
        raise ApiError(422, f"{RAW_TYPE} needs the width and height query parameters")
    if width * height > limits.max_pixels:
        raise ApiError(413, f"{width}x{height} pixels; at most {limits.max_pixels} are accepted")
    if len(data) != width * height:
        raise ApiError(400, f"{RAW_TYPE}: {width}x{height} needs {width * height} bytes, the body has {len(data)}")
    return np.frombuffer(data, np.uint8).reshape(height, width)


def decode_json(data: bytes, limits: ApiLimits):
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(422, f"the body is not valid JSON ({str(e)[:80]})") from None
    if not isinstance(obj, dict):
        raise ApiError(422, "the JSON body must be an object with 'image' (base64) or 'strokes'")
    try:
        if "image" in obj:
            req = ImageRequest.model_validate(obj)
            try:
                raw = base64.b64decode(req.image, validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(422, "'image' is not valid base64") from None
            return decode_image(raw, limits)
        if "strokes" in obj:
            return strokes_drawing(StrokesRequest.model_validate(obj), limits)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise ApiError(422, f"{where}: {first.get('msg', 'invalid')}") from None
    raise ApiError(422, "the JSON body must have 'image' (base64) or 'strokes'")


def strokes_drawing(req: StrokesRequest, limits: ApiLimits) -> Drawing:
    w, h = req.canvas_size
    if not (1 <= w <= limits.max_canvas_side and 1 <= h <= limits.max_canvas_side):
        raise ApiError(422, f"canvas_size must be between 1 and {limits.max_canvas_side} on each side")
    if len(req.strokes) > limits.max_strokes:
        raise ApiError(413, f"{len(req.strokes)} strokes; at most {limits.max_strokes} are accepted")
    points = sum(len(s) for s in req.strokes)
    if points > limits.max_points:
        raise ApiError(413, f"{points} points; at most {limits.max_points} are accepted")
    strokes = []
    for i, s in enumerate(req.strokes):
        if any(len(p) not in (2, 3) for p in s):
            raise ApiError(422, f"strokes.{i}: every point is [x, y] or [x, y, pressure]")
        if any(not math.isfinite(v) for p in s for v in p):
            raise ApiError(422, f"strokes.{i}: coordinates must be finite numbers")
        if s:
            pts = np.array([p if len(p) == 3 else (*p, 0.5) for p in s], np.float32)
            pts[:, 2] = np.clip(pts[:, 2], 0.0, 1.0)
            strokes.append(pts)
    return Drawing.from_lists(strokes, (w, h))


# --------------------------------------------------------------------------- batches

@dataclass(frozen=True)
class SmallGray:
    """A small image's gray pixels (float32 in [0, 1], ``fits_small_batch``, no alpha ink),
    preprocessed with the rest of its batch."""

    gray: np.ndarray


# Below this many same-sized small images a batch preprocesses them one by one: the
# vectorized pass has a fixed cost (~0.33 ms for one 28x28 image against ~0.17 ms for
# ``preprocess``; ~0.06 ms per image at 8, ~0.04 ms at 32).
SMALL_BATCH_MIN = 3


def small_png_gray(data: bytes, limits: ApiLimits) -> np.ndarray | None:
    """The uint8 pixels of a small plain 8-bit grayscale PNG (libspng), or None when the
    general loader should read the body (any other file, or anything unusual about it)."""
    if len(data) < 33 or not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        return None
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not fits_small_batch(h, w) or w * h > limits.max_pixels:
        return None
    return _gray_png(data)


def small_gray(source) -> SmallGray | None:
    """``source`` (a PIL image or a uint8 array) as :class:`SmallGray` when it is small
    enough for the batched preprocessing, else None (preprocessed on its own)."""
    if isinstance(source, np.ndarray):
        if source.dtype == np.uint8 and source.ndim == 2 and fits_small_batch(*source.shape):
            return SmallGray(source.astype(np.float32) / 255.0)
        return None
    if isinstance(source, Drawing) or not fits_small_batch(source.height, source.width):
        return None
    gray, alpha_ink = image_to_gray(source)
    return None if alpha_ink else SmallGray(gray)


def preprocess_error(e: Exception) -> ApiError:
    """The 400 that a preprocessing failure gets."""
    if isinstance(e, EmptyInputError):
        return ApiError(400, str(e))
    return ApiError(400, f"cannot classify this input: {e}")


def prepare_batch(items, opts: PreprocessOptions) -> tuple[np.ndarray, list]:
    """The batcher's ``prepare``: 28x28 images as they are; :class:`SmallGray` ones grouped
    by size and preprocessed together; a failure (nothing to classify, ...) is the
    :class:`ApiError` of its own request only."""
    rows: list = [None] * len(items)
    images: list[np.ndarray] = []
    groups: dict[tuple[int, int], list[int]] = {}
    for i, item in enumerate(items):
        if isinstance(item, SmallGray):
            groups.setdefault(item.gray.shape, []).append(i)
        else:
            rows[i] = len(images)
            images.append(item)
    for idx in groups.values():
        grays = [items[i].gray for i in idx]
        if len(idx) >= SMALL_BATCH_MIN:
            results = preprocess_small_batch(np.stack(grays), opts)
        else:
            results = []
            for g in grays:
                try:
                    results.append(preprocess(g, opts))
                except (ImageReadError, TypeError, ValueError) as e:
                    results.append(e)
        for i, r in zip(idx, results):
            if isinstance(r, Exception):
                rows[i] = preprocess_error(r)
            else:
                rows[i] = len(images)
                images.append(r)
    batch = np.stack(images).astype(np.float32, copy=False) if images else np.empty((0, 28, 28), np.float32)
    return batch, rows


# --------------------------------------------------------------------------- answers

def _digit(labels: list[str], probs: np.ndarray, uncertain: bool, score: float, top_k: int,
           box=None) -> dict:
    pred = Prediction(labels, np.asarray(probs, np.float64), uncertain, score)
    return {"prediction": pred.label, "confidence": pred.confidence, "probabilities": pred.as_dict(),
            "top": pred.top_k(top_k), "uncertain": pred.uncertain, "score": pred.score,
            "box": None if box is None else [float(box.x0), float(box.y0), float(box.x1), float(box.y1)]}


def _number(predictor: Predictor, source, top_k: int) -> dict:
    from mnist_desktop.core.numbers import read_number

    reading = read_number(predictor, source)
    digits = [_digit(predictor.labels, d.prediction.probs, d.prediction.uncertain, d.prediction.score, top_k, d.box)
              for d in reading.digits]
    return {"text": reading.text, "confidence": float(reading.confidence),
            "uncertain": any(d["uncertain"] for d in digits), "digits": digits}


def answer_bytes(labels: list[str], probs: np.ndarray, uncertain: bool, score: float, top_k: int,
                 tail: bytes) -> bytes:
    """The JSON answer for one digit (the fields of :func:`_digit`, in its order, then
    ``tail``: the rest of the object, serialized once per server)."""
    p = probs.tolist()   # float32 -> float, exactly as float(np.float64(value))
    i = int(np.argmax(probs))
    order = np.argsort(-probs, kind="stable")[:top_k].tolist()
    head = {"prediction": labels[i], "confidence": p[i], "probabilities": dict(zip(labels, p)),
            "top": [(labels[j], p[j]) for j in order], "uncertain": uncertain, "score": score, "box": None}
    return json.dumps(head, separators=(",", ":")).encode()[:-1] + tail


def create_app(loaded, limits: ApiLimits | None = None, max_batch: int = 64, max_wait: float = 0.0,
               batch_workers: int = 2) -> FastAPI:
    """The API around an already loaded model.

    Parameters
    ----------
    loaded
        A :class:`~mnist_desktop.service.models.LoadedPredictor` (its predictor is used by
        every request; the model is never loaded again).
    limits
        What one request may carry (:class:`ApiLimits`).
    max_batch, max_wait, batch_workers
        The micro-batcher's largest batch, longest wait for company (seconds; 0: none)
        and batches in flight at once (see :class:`MicroBatcher`).
    """
    limits = limits or ApiLimits()
    predictor: Predictor = loaded.predictor
    labels = list(predictor.labels)
    opts = predictor.options
    batcher = MicroBatcher(predictor.probabilities, max_batch=max_batch, max_wait=max_wait,
                           prepare=lambda items: prepare_batch(items, opts), workers=batch_workers)
    # Every single-digit answer ends the same way.
    tail = b"," + json.dumps({"labels": labels, "number": None}, separators=(",", ":")).encode()[1:]

    @asynccontextmanager
    async def lifespan(_app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="mnist-desktop prediction API", version=_version(), lifespan=lifespan,
                  description="Handwritten digit recognition on this machine: the model, preprocessing "
                              "and uncertainty rule of the mnist-desktop app.")
    app.state.batcher = batcher
    app.state.loaded = loaded

    @app.exception_handler(ApiError)
    async def _api_error(_request, exc: ApiError):
        return JSONResponse({"error": {"status": exc.status, "message": exc.message}}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or "request"
        msg = f"{where}: {first.get('msg', 'invalid')}"
        return JSONResponse({"error": {"status": 422, "message": msg}}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request, exc: StarletteHTTPException):
        return JSONResponse({"error": {"status": exc.status_code, "message": str(exc.detail)}},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.get("/health", summary="Whether the server runs")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/model", response_model=ModelResponse, summary="The model being served")
    async def model() -> dict:
        meta = predictor.meta
        s = batcher.stats
        return {"name": meta.name or predictor.path.stem, "file": predictor.path.name, "labels": labels,
                "backend": predictor.backend, "device": predictor.device, "precision": loaded.precision,
                "notes": list(loaded.notes), "metrics": _jsonable(meta.metrics),
                "batching": {"requests": s.requests, "batches": s.batches, "mean_batch": s.mean_batch,
                             "largest_batch": s.largest_batch},
                "limits": {"max_body_bytes": limits.max_body_bytes, "max_pixels": limits.max_pixels,
                           "max_strokes": limits.max_strokes, "max_points": limits.max_points}}

    @app.post("/predict", response_model=PredictResponse, responses=_ERRORS, openapi_extra=_BODY_DOC,
              summary="Classify an image, raw pixels or pen strokes")
    async def predict(request: Request,
                      number: bool = Query(False, description="also read the input as a whole number"),
                      top_k: int = Query(3, ge=1, le=limits.max_top_k, description="labels in 'top'"),
                      width: int | None = Query(None, ge=1, le=100_000, description=f"{RAW_TYPE}: pixels per row"),
                      height: int | None = Query(None, ge=1, le=100_000, description=f"{RAW_TYPE}: rows")) -> dict:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not ctype:
            raise ApiError(415, "no Content-Type: send image/png (or another image type), "
                                f"{RAW_TYPE} or application/json")
        if not (ctype.startswith("image/") or ctype in ("application/octet-stream", RAW_TYPE, "application/json")):
            raise ApiError(415, f"unsupported Content-Type {ctype!r}: send an image, {RAW_TYPE} or application/json")
        data = await read_body(request, limits.max_body_bytes)
        small = len(data) <= 64 * 1024   # decoded on the event loop; larger bodies on a thread
        source, image = (_prepare_sync(ctype, data, width, height, number) if small
                         else await run_in_threadpool(_prepare_sync, ctype, data, width, height, number))
        probs, unc, score = await batcher.submit(image)
        # Built by hand and returned as is: the response model documents it (and the tests
        # check it against the schema); validating every answer again would cost a third of
        # the request's time.
        if not number:
            return Response(answer_bytes(labels, probs, unc, score, top_k, tail), media_type="application/json")
        out = _digit(labels, probs, unc, score, top_k)
        out["labels"] = labels
        out["number"] = await run_in_threadpool(_number_or_error, source, top_k)
        return Response(json.dumps(out, separators=(",", ":")).encode(), media_type="application/json")

    def _prepare_sync(ctype, data, width, height, number=False):
        """``(source, item)``: the decoded input and what goes to the batcher (a 28x28
        image, or a :class:`SmallGray` preprocessed with its batch)."""
        if ctype == "application/json":
            source = decode_json(data, limits)
        elif ctype == RAW_TYPE:
            source = decode_raw(data, width, height, limits)
        else:
            # (a number reading takes the PIL image, as the app's own reading does)
            pixels = None if number else small_png_gray(data, limits)
            source = pixels if pixels is not None else decode_image(data, limits)
        try:
            item = small_gray(source)
            return source, item if item is not None else preprocess(source, opts)
        except (ImageReadError, TypeError, ValueError) as e:
            raise preprocess_error(e) from None

    def _number_or_error(source, top_k):
        try:
            return _number(predictor, source, top_k)
        except EmptyInputError:
            return {"text": "", "confidence": 0.0, "uncertain": False, "digits": []}

    return app


def _jsonable(d: dict) -> dict:
    try:
        json.dumps(d)
        return d
    except (TypeError, ValueError):
        return {k: str(v) for k, v in d.items()}


def _version() -> str:
    from mnist_desktop import __version__

    return __version__
