"""The worker side of batch classification: decoding and preprocessing chunks of files.

Everything a worker process runs lives here: the pool's initializer
(:func:`worker_init`), :func:`decode_chunk` (with the one-call read of small files and
the libspng fast path for plain grayscale PNGs), :func:`decode_and_classify` (decoding
plus ONNX Runtime in the worker) and :func:`timed`. Worker processes import this module
by its qualified name (the fork server preloads it), so it and everything it imports
must stay free of torch and Qt: numpy, Pillow, optionally pyspng and ONNX Runtime.
"""

from __future__ import annotations

import collections
import errno
import io
import os
import stat
import time
from typing import Any, Sequence

import numpy as np

from mnist_desktop.core.preprocess import (SIZE, EmptyInputError, ImageReadError, PreprocessOptions,
                                           fits_small_batch, image_to_gray, load_image, preprocess,
                                           preprocess_small_batch)
from mnist_desktop.core.priority import lower_priority

# Added to a worker's nice value: the GUI process (canvas, live prediction) keeps its
# core while a batch run uses every other cycle.
WORKER_NICENESS = 10


def decode_one(path: str, options: PreprocessOptions) -> tuple[np.ndarray | None, str | None]:
    """Load and preprocess one file. Returns ``(image28, None)`` or ``(None, reason)``."""
    err = _stat(path)[0]
    return (None, err) if err else _guarded(lambda: preprocess(load_image(path), options))


def _stat(path: str) -> tuple[str | None, int]:
    """``(reason, 0)`` when ``path`` cannot be decoded, else ``(None, size in bytes)``."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loop", 0
        if e.errno in (errno.EACCES, errno.EPERM):
            return "permission denied", 0
        if e.errno == errno.ENOENT:
            return ("file not found" if not os.path.islink(path) else "broken symlink"), 0
        return f"cannot read file ({e.strerror or e})", 0
    if not stat.S_ISREG(st.st_mode):
        # A FIFO or device named *.png would block or stream forever in open().
        return ("is a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"), 0
    return None, st.st_size


# Files up to this size are read with one system call and decoded from memory: Pillow
# reads a PNG in many small chunks, which costs more than decoding a 28x28 image.
WHOLE_READ_BYTES = 256 * 1024


def _guarded(fn) -> tuple[Any, str | None]:
    """``(fn(), None)``, or ``(None, reason)`` for any failure: one broken file never
    aborts a batch of 100,000."""
    try:
        return fn(), None
    except (ImageReadError, EmptyInputError) as e:
        return None, str(e)
    except MemoryError:
        return None, "out of memory decoding image"
    except RecursionError:
        return None, "cannot process image (RecursionError)"
    except Exception as e:  # a decoder bug must not abort a batch of 100,000 files
        return None, f"cannot process image ({type(e).__name__}: {str(e)[:120]})"


# O_NONBLOCK: should the regular file have become a FIFO since it was stat'ed, the read
# returns at once instead of waiting for a writer.
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _read_small(path: str, size: int) -> bytes | None:
    """The ``size`` bytes of a small file in one system call (a third of what a Python
    file object costs per file), or None when it cannot be read in one piece (then
    :func:`load_image` reads it and gives the one-line reason for any failure)."""
    try:
        fd = os.open(path, _READ_FLAGS)
        try:
            data = os.read(fd, size + 1)
        finally:
            os.close(fd)
    except OSError:
        return None
    return data if len(data) == size else None   # changed since stat: read it normally


def _small_gray(path: str, options: PreprocessOptions) -> tuple[Any, str | None]:
    """Checks as :func:`decode_one`, then ``(gray, None)`` for a small image without alpha
    ink (for :func:`preprocess_small_batch`), ``(28x28 result, None)`` for any other image,
    or ``(None, reason)``."""
    def load():
        source: Any = path
        if 0 < size <= WHOLE_READ_BYTES:
            data = _read_small(path, size)
            if data is not None:
                gray = _gray_png(data)
                if gray is not None:
                    if fits_small_batch(*gray.shape):
                        return gray.astype(np.float32) / 255.0
                    return _Done(preprocess(gray, options))   # as Pillow's mode-L image
                source = io.BytesIO(data)
        img = load_image(source)
        if fits_small_batch(img.height, img.width):
            gray, alpha_ink = image_to_gray(img)
            if not alpha_ink:
                return gray
        return _Done(preprocess(img, options))
    err, size = _stat(path)
    return (None, err) if err else _guarded(load)


try:
    import pyspng as _spng
except ImportError:  # optional: Pillow decodes everything without it
    _spng = None

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that change nothing in how Pillow reads an 8-bit gray PNG as mode L. Any other
# (tRNS: alpha ink; eXIf or a text chunk with EXIF: orientation; unknown ones) -> Pillow.
_PLAIN_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND", b"gAMA", b"cHRM", b"sRGB", b"iCCP",
                           b"pHYs", b"sBIT", b"tIME", b"bKGD"})
# Larger images go to Pillow, whose limits refuse decompression bombs.
GRAY_PNG_MAX_PIXELS = 4_000_000


def _gray_png(data: bytes) -> np.ndarray | None:
    """The pixels (uint8, ``(h, w)``) of a plain 8-bit grayscale PNG, decoded by libspng
    (``pyspng``), or None when Pillow should take it (any other file, or anything unusual
    about it).

    Pillow spends 30-60 us per small PNG, mostly in Python (opening, chunk parsing, EXIF
    lookup), against ~6 us for libspng: about half the decoding cost of an MNIST-style
    folder; a 280x280 scan takes ~15% less time to decode and preprocess. Only what reads
    identically either way takes this path: grayscale, 8 bits, not interlaced, at most
    ``GRAY_PNG_MAX_PIXELS``, and no chunk outside ``_PLAIN_CHUNKS`` (so no transparency
    and no EXIF orientation), all checked before anything is decoded. Decoding errors go
    back to Pillow, whose message the user sees.
    """
    if _spng is None or not data.startswith(_PNG_SIGNATURE) or len(data) < 33 or data[12:16] != b"IHDR":
        return None
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth, color, interlace = data[24], data[25], data[28]
    if not (color == 0 and depth == 8 and interlace == 0 and 0 < w and 0 < h
            and w * h <= GRAY_PNG_MAX_PIXELS):
        return None
    pos = 8
    while pos + 8 <= len(data):   # chunk types only (a handful per file)
        length, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        if kind not in _PLAIN_CHUNKS:
            return None
        if kind == b"IEND":
            break
        pos += 12 + length
    try:
        arr = _spng.load(data)
    except Exception:  # corrupt or truncated: Pillow reports it
        return None
    if arr.dtype != np.uint8 or arr.shape != (h, w):
        return None
    return arr


def _alone(gray: np.ndarray, options: PreprocessOptions) -> np.ndarray | Exception:
    """:func:`preprocess` of one small gray image (what :func:`preprocess_small_batch`
    gives for it), or the exception that stands for its failure."""
    result, err = _guarded(lambda: preprocess(gray, options))
    return ImageReadError(err) if err is not None else result


class _Done:
    """An image already preprocessed on its own (wraps the 28x28 result)."""
    __slots__ = ("image",)

    def __init__(self, image: np.ndarray):
        self.image = image


def decode_chunk(paths: Sequence[str], options: PreprocessOptions) -> tuple[np.ndarray, list[str | None]]:
    """Decode and preprocess a chunk of files through the one preprocessing path.

    Runs in worker processes, so it must stay importable without torch or Qt.

    Returns
    -------
    images : ndarray, float32, shape (n_ok, 28, 28)
        The preprocessed images of the files that worked, in order, stacked so that
        one chunk pickles as a single buffer.
    errors : list of (str or None)
        One entry per input path: None when it worked, else the reason.
    """
    loaded = [_small_gray(p, options) for p in paths]
    # Small images of one size (a folder of MNIST-style PNGs) share their preprocessing
    # statistics: one vectorized pass, identical results (preprocess_small_batch).
    groups: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
    for i, (value, err) in enumerate(loaded):
        if err is None and not isinstance(value, _Done):
            groups[value.shape].append(i)
    for idx in groups.values():
        try:
            done = preprocess_small_batch(np.stack([loaded[i][0] for i in idx]), options)
        except Exception:  # one file must not fail its group: each goes on its own
            done = [_alone(loaded[i][0], options) for i in idx]
        for k, i in enumerate(idx):
            if isinstance(done[k], Exception):
                loaded[i] = (None, str(done[k]))
            else:
                loaded[i] = (_Done(done[k]), None)
    images = np.empty((len(paths), SIZE, SIZE), np.float32)
    errors: list[str | None] = []
    n = 0
    for value, err in loaded:
        errors.append(err)
        if err is None:
            images[n] = value.image
            n += 1
    return images[:n], errors


_WORKER_MODELS: dict[str, Any] = {}


def read_numbers(paths: Sequence[str], errors: Sequence[str | None], predictor) -> list[tuple[str, float]]:
    """The number reading (:func:`~mnist_desktop.core.numbers.read_number`) of every file
    whose ``errors`` entry is None, in order: ``(digits, confidence)``; ``("", 0.0)`` when
    nothing could be read. Runs in the worker that decoded the chunk (ONNX Runtime) or in
    the parent (torch, ``--workers 0``)."""
    from mnist_desktop.core.numbers import read_number

    out: list[tuple[str, float]] = []
    for path, err in zip(paths, errors):
        if err is not None:
            continue
        def read():
            reading = read_number(predictor, load_image(path))
            return reading.text, reading.confidence
        value, _ = _guarded(read)
        out.append(value if value is not None else ("", 0.0))
    return out


def decode_and_classify(paths: Sequence[str], options: PreprocessOptions, onnx_path: str, source: str,
                        keep_images: bool = True, numbers: bool = False) -> tuple:
    """:func:`decode_chunk`, then the ONNX Runtime model on the chunk, in the worker:
    ``(images, errors, probs, uncertain)``. Each worker loads the model once (one thread)
    and keeps it; the parent then only collects results, so decoding and inference use
    every core instead of inference waiting on one. Without ``keep_images`` the 28x28
    inputs stay here (``images`` is empty: 3 KB per file less to pickle and pipe). When
    nothing decoded it returns ``(images, errors)``; when the model cannot run here,
    ``(images, errors, None, reason)``: the parent's model answers (and says so). With
    ``numbers`` a fifth item holds :func:`read_numbers` of the files that decoded."""
    images, errors = decode_chunk(paths, options)
    if not len(images):
        return images, errors
    try:
        model = _WORKER_MODELS.get(onnx_path)
        if model is None:
            from mnist_desktop.core.onnx_predictor import OnnxPredictor

            model = _WORKER_MODELS[onnx_path] = OnnxPredictor(onnx_path, 1, source=source)
        probs, unc, _ = model.probabilities(images)
    except Exception as e:  # e.g. the cached copy was deleted mid-run: the parent's model answers
        return images, errors, None, f"{type(e).__name__}: {str(e).strip()[:160]}"
    if numbers:
        return (images if keep_images else images[:0]), errors, probs, unc, read_numbers(paths, errors, model)
    return (images if keep_images else images[:0]), errors, probs, unc


def timed(fn, paths: Sequence[str], options: PreprocessOptions) -> tuple[float, Any]:
    """``(seconds, fn(paths, options))``, run in a worker: its own time for the chunk,
    without the time the chunk waited in the queue."""
    t0 = time.perf_counter()
    out = fn(paths, options)
    return time.perf_counter() - t0, out


def worker_init() -> None:
    """Initializer of every decoding worker process: below the GUI's priority, one
    thread for numpy."""
    lower_priority(WORKER_NICENESS)
    # Decoding is single-threaded work per process; keep numpy's BLAS from spawning
    # threads that would fight the parent's inference for the same cores.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
