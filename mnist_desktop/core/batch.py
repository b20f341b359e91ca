"""Batch classification engine, shared by ``mnist-desktop classify`` and the GUI.

Pipeline
--------
1. **Listing** - :func:`collect_files` turns files and folders into a compact list of
   ``str`` paths (deterministic order, symlink loops and unreadable folders reported).
2. **Decoding** - files are cut into chunks of up to ``batch_size`` (fewer when files are
   slow to decode, so that a chunk takes ~``CHUNK_SECONDS``); each chunk is decoded and
   preprocessed by :func:`decode_chunk` in a pool of worker processes. The worker side
   imports numpy and Pillow only (never torch), returns one stacked float32
   ``(n, 28, 28)`` array per chunk (cheap to pickle) and a reason for every file it could
   not use. At most ``max_in_flight`` chunks are queued, so memory stays flat however
   many files there are.
3. **Inference** - with ONNX Runtime (the CPU default) each worker runs the model on the
   chunk it decoded (:func:`decode_and_classify`), so decoding and inference share every
   core; with torch the parent runs the model on each chunk as one batch while the workers
   decode the next ones. Either way :class:`FileResult` objects come **in input order**.

Every broken input becomes a result with an ``error`` (one line, fit for a user); nothing
aborts the run, not even a decoder crashing its worker process. The generators check a
``should_cancel`` callback between chunks (and while waiting for one); on cancel or when
the consumer stops iterating, the pool is shut down at once and the results already
yielded stay valid.

:func:`classify_with_progress` wraps the engine with counts, images/s and ETA for the CLI
and the GUI; :class:`ResultStore` keeps 200,000 results in a few tens of MB; the export
functions write CSV/JSON with the columns documented in :func:`csv_header`.
"""

from __future__ import annotations

import collections
import csv
import errno
import functools
import io
import itertools
import json
import math
import multiprocessing
import os
import stat
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from mnist_desktop.core.preprocess import (SIZE, EmptyInputError, ImageReadError, PreprocessOptions,
                                           fits_small_batch, image_to_gray, load_image, preprocess,
                                           preprocess_small_batch)


DEFAULT_BATCH_SIZE = 128
PRECISIONS = ("fp32", "bf16")


# --------------------------------------------------------------------------- results

@dataclass
class FileResult:
    """The outcome for one input file.

    ``probs`` is aligned with ``labels``; it is None when the file could not be used, and
    then ``error`` says why in one line. ``corrected_label`` is a label set by hand (GUI).
    """

    path: str
    labels: Sequence[str]
    probs: np.ndarray | None = None
    uncertain: bool = False
    error: str | None = None
    true_label: str | None = None
    image: np.ndarray | None = None  # the 28x28 input, when requested
    corrected_label: str | None = None

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


# --------------------------------------------------------------------------- listing

def collect_files(paths: Iterable[str | bytes | os.PathLike], recursive: bool = True,
                  errors: list[tuple[str, str]] | None = None,
                  should_cancel: Callable[[], bool] | None = None) -> list[str]:
    """List the image files under ``paths`` as plain strings, in a deterministic order.

    Parameters
    ----------
    paths
        Files and folders; ``bytes`` paths are decoded with the file-system encoding
        (``surrogateescape``), so names that are not valid UTF-8 still work.
    recursive
        Descend into sub-folders.
    errors
        Receives ``(path, reason)`` for missing paths, unreadable folders and symlink loops.
    should_cancel
        Checked every 1,000 files; the listing so far is returned when it says True.

    Returns
    -------
    list of str
        About 100 bytes per file (a ``str`` each, no ``Path`` objects), so 200,000 files
        cost some 20 MB.
    """
    from mnist_desktop.core.data import iter_image_paths

    out: list[str] = []
    for n, p in enumerate(iter_image_paths([os.fsdecode(p) for p in paths], recursive=recursive,
                                           errors=errors)):
        out.append(p)
        if should_cancel is not None and n % 1000 == 999 and should_cancel():
            break
    return out


# --------------------------------------------------------------------------- decoding (worker side)

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
        done = _guarded(lambda: preprocess_small_batch(np.stack([loaded[i][0] for i in idx]), options))
        for k, i in enumerate(idx):
            if done[1] is not None:
                loaded[i] = (None, done[1])
            elif isinstance(done[0][k], EmptyInputError):
                loaded[i] = (None, str(done[0][k]))
            else:
                loaded[i] = (_Done(done[0][k]), None)
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


def decode_and_classify(paths: Sequence[str], options: PreprocessOptions, onnx_path: str, source: str,
                        keep_images: bool = True) -> tuple:
    """:func:`decode_chunk`, then the ONNX Runtime model on the chunk, in the worker:
    ``(images, errors, probs, uncertain)``. Each worker loads the model once (one thread)
    and keeps it; the parent then only collects results, so decoding and inference use
    every core instead of inference waiting on one. Without ``keep_images`` the 28x28
    inputs stay here (``images`` is empty: 3 KB per file less to pickle and pipe). When
    nothing decoded it returns ``(images, errors)``; when the model cannot run here,
    ``(images, errors, None, reason)``: the parent's model answers (and says so)."""
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
    return (images if keep_images else images[:0]), errors, probs, unc


def _worker_init() -> None:
    # Decoding is single-threaded work per process; keep numpy's BLAS from spawning
    # threads that would fight the parent's inference for the same cores.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def default_workers() -> int:
    """One decoding process per usable core."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, n)


def _pool_context():
    """A start method that never forks a process holding torch/Qt threads.

    ``forkserver`` (Linux, macOS) starts one clean server that has imported only this
    module (numpy, Pillow), then forks cheap workers from it; elsewhere, and in a frozen
    (PyInstaller) build, ``spawn`` - which needs the frozen entry point to call
    ``multiprocessing.freeze_support()`` before anything else.
    """
    methods = multiprocessing.get_all_start_methods()
    # PyInstaller documents spawn (with freeze_support) for frozen apps; keep to it there.
    if "forkserver" in methods and not getattr(sys, "frozen", False):
        ctx = multiprocessing.get_context("forkserver")
        # Without this the server would import the parent's __main__ (maybe the GUI). ONNX
        # Runtime is imported there once (skipped when missing), not in every worker.
        ctx.set_forkserver_preload([__name__, "mnist_desktop.core.onnx_predictor", "onnxruntime"])
        return ctx
    return multiprocessing.get_context("spawn")


def prestart_workers(workers: int | None = None) -> None:
    """Start the server that worker processes are forked from now, so that it imports
    numpy, Pillow and ONNX Runtime (~0.3 s) while this process loads its model and lists
    files; a run's workers then start in milliseconds. Returns at once; a no-op with
    ``workers=0`` and where workers are spawned (frozen app, Windows)."""
    if workers == 0:
        return
    ctx = _pool_context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


class _DecodePool:
    """A process pool that can be rebuilt after a worker dies and shut down at once."""

    def __init__(self, workers: int):
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None

    def submit(self, fn, *args) -> Future:
        """Queue ``fn(*args)``. When the pool broke meanwhile (a worker died), the
        returned future fails with BrokenProcessPool, like the ones already queued, so
        the caller handles every loss in one place."""
        if self._executor is None:
            self._executor = ProcessPoolExecutor(self.workers, mp_context=_pool_context(),
                                                 initializer=_worker_init)
        try:
            return self._executor.submit(fn, *args)
        except BrokenProcessPool as e:
            failed: Future = Future()
            failed.set_exception(e)
            return failed

    def restart(self) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Drop queued chunks and stop the workers without waiting for running chunks."""
        ex, self._executor = self._executor, None
        if ex is None:
            return
        procs = list((getattr(ex, "_processes", None) or {}).values())
        ex.shutdown(wait=False, cancel_futures=True)
        # A worker may be inside one slow file (a 60-megapixel scan); cancelling must not
        # wait for it. Give workers a moment to exit by themselves, then terminate them;
        # either way they are joined, so no process outlives the run.
        deadline = time.monotonic() + 0.5
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(2.0)
        manager = getattr(ex, "_executor_manager_thread", None)
        if manager is not None:
            manager.join(2.0)  # it notices the dead workers and exits; don't leave it behind


# --------------------------------------------------------------------------- inference (parent side)

def inference_precision(predictor, requested: str) -> tuple[str, str]:
    """The precision the engine will really use for ``requested`` with ``predictor``, and
    a one-line note when that is not what was asked for (bf16 needs a torch model on a
    CPU that computes bfloat16 natively)."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
    if requested == "fp32":
        return "fp32", ""
    if getattr(predictor, "model", None) is None or getattr(predictor, "device", None) != "cpu":
        return "fp32", "bf16 runs only with the torch backend on the CPU; classifying in fp32"
    import torch

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "fp32", "this CPU has no native bfloat16; classifying in fp32"
    return "bf16", ""


class _Inference:
    """Batched inference on the parent's side.

    On CPU a private channels-last copy of the network is used: the same fp32 weights
    and math (logits agree to ~1e-6), about 1.5x the throughput of the default layout
    for small convolutions. The torch thread count is set for the run and restored.
    Anything that is not a CPU :class:`~mnist_desktop.core.predictor.Predictor` goes
    through ``predictor.probabilities``.

    ``precision="bf16"`` runs that copy in bfloat16 where the CPU computes it natively
    (AVX512-BF16 / AMX); elsewhere it stays fp32 and says so in :attr:`note`. Its speed-up
    and the answers it changes depend on the CPU's bf16 kernels; the README gives the
    figures with the CPU they were measured on.
    """

    def __init__(self, predictor, threads: int | None, precision: str = "fp32"):
        self.predictor = predictor
        self.precision, self.note = inference_precision(predictor, precision)
        self._model = None
        self._saved_threads = None
        model = getattr(predictor, "model", None)
        meta = getattr(predictor, "meta", None)
        if threads and hasattr(predictor, "set_threads"):   # OnnxPredictor
            predictor.set_threads(threads)
        if model is None or meta is None or getattr(predictor, "device", None) != "cpu":
            return
        import copy

        import torch

        self._torch = torch
        self._model = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
        if self.precision == "bf16":
            self._model = self._model.to(torch.bfloat16)
        self._mean, self._std = meta.normalization.mean, meta.normalization.std
        self._meta = meta
        if threads:
            self._saved_threads = torch.get_num_threads()
            torch.set_num_threads(threads)

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._model is None:
            probs, unc, _ = self.predictor.probabilities(images)
            return probs, unc
        from mnist_desktop.core.predictor import apply_uncertainty
        from mnist_desktop.core.preprocess import normalize

        torch = self._torch
        x = torch.from_numpy(normalize(images, self._mean, self._std)[:, None])
        if self.precision == "bf16":
            x = x.to(torch.bfloat16)
        with torch.inference_mode():
            logits = self._model(x.contiguous(memory_format=torch.channels_last)).float().numpy()
        probs, unc, _ = apply_uncertainty(logits, self._meta)
        return probs, unc

    def close(self) -> None:
        if self._saved_threads is not None:
            self._torch.set_num_threads(self._saved_threads)
            self._saved_threads = None


# --------------------------------------------------------------------------- the engine

# A chunk should keep a worker busy about this long: files that decode slowly (photos,
# large scans) go in smaller chunks, so progress and cancel stay responsive and the last
# chunks of a run do not leave cores idle; fast files fill whole batches.
CHUNK_SECONDS = 0.25
FIRST_CHUNK = 16   # before any chunk has been timed


class _ChunkSizer:
    """Files per chunk: ``batch_size`` for fast files, fewer for slow ones, from the
    workers' own time per file (a running average)."""

    def __init__(self, batch_size: int):
        self.max = batch_size
        self.size = min(batch_size, FIRST_CHUNK)
        self.per_file: float | None = None

    def observe(self, n: int, seconds: float) -> None:
        per = seconds / max(1, n)
        self.per_file = per if self.per_file is None else 0.5 * (self.per_file + per)
        self.size = max(1, min(self.max, int(CHUNK_SECONDS / max(self.per_file, 1e-9))))


def _timed(fn, paths: Sequence[str], options: PreprocessOptions) -> tuple[float, Any]:
    """``(seconds, fn(paths, options))``, run in a worker: its own time for the chunk,
    without the time the chunk waited in the queue."""
    t0 = time.perf_counter()
    out = fn(paths, options)
    return time.perf_counter() - t0, out


def _chunks(it: Iterator[str], size: Callable[[], int]) -> Iterator[list[str]]:
    """Lists of paths from ``it``, each as long as ``size()`` says when it is cut."""
    while True:
        chunk = list(itertools.islice(it, size()))
        if not chunk:
            return
        yield chunk


def classify_chunks(files: Iterable[str | bytes | os.PathLike], predictor, *,
                    batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None,
                    keep_images: bool = False,
                    true_label: Callable[[Path], str | None] | None = None,
                    folder_labels: Sequence[str] | None = None,
                    should_cancel: Callable[[], bool] | None = None,
                    max_in_flight: int | None = None, inference_threads: int | None = None,
                    precision: str = "fp32",
                    decode_fn: Callable[[Sequence[str], PreprocessOptions],
                                        tuple[np.ndarray, list[str | None]]] = decode_chunk,
                    on_note: Callable[[str], None] | None = None,
                    ) -> Iterator[list[FileResult]]:
    """Classify files chunk by chunk; yields one list of :class:`FileResult` per chunk,
    in input order. See :func:`classify_files` for the parameters.

    ``decode_fn`` maps ``(paths, options)`` to ``(images, errors)`` like
    :func:`decode_chunk` (the default); it must be a picklable top-level function.
    """
    workers = default_workers() if workers is None else max(0, int(workers))
    batch_size = max(1, int(batch_size))
    cancelled = should_cancel or (lambda: False)
    if inference_threads is None and workers:
        # Decoding processes and inference threads share the cores; more threads than
        # cores makes torch's OpenMP threads spin against the decoders.
        inference_threads = max(1, default_workers() - workers)
    it = (os.fsdecode(f) for f in files)
    infer = _Inference(predictor, inference_threads, precision)
    if workers and decode_fn is decode_chunk and getattr(predictor, "onnx_path", None) is not None:
        # ONNX Runtime runs in the decoding workers (see decode_and_classify).
        decode_fn = functools.partial(decode_and_classify, onnx_path=str(predictor.onnx_path),
                                      source=str(predictor.path), keep_images=keep_images)
    options = predictor.options
    labels = list(predictor.labels)

    known = frozenset(folder_labels or ())

    def label_of(p: str) -> str | None:
        if true_label is not None:
            return true_label(Path(p))
        if known:
            # string ops, not Path(): parsing a Path costs more than the inference per file
            name = os.path.basename(os.path.dirname(p))
            return name if name in known else None
        return None

    noted: set[str] = set()

    def note(text: str) -> None:
        if text not in noted:
            noted.add(text)
            if on_note is not None:
                on_note(text)

    def build(paths: list[str], images: np.ndarray, errors: list[str | None],
              probs: np.ndarray | None = None, unc: Any = None) -> list[FileResult]:
        results = [FileResult(p, labels, error=err, true_label=label_of(p))
                   for p, err in zip(paths, errors)]
        if probs is None and isinstance(unc, str):
            # what it means first: a status bar cuts a long line at its end
            note("The worker processes could not run ONNX Runtime; this process runs the "
                 f"model instead: same answers, slower ({unc})")
        if probs is not None or len(images):
            if probs is None:
                probs, unc = infer(images)
            good = (r for r in results if r.error is None)
            for j, r in enumerate(good):
                r.probs = probs[j]
                r.uncertain = bool(unc[j])
                if keep_images:
                    r.image = images[j]
        return results

    try:
        if workers == 0:
            for paths in _chunks(it, lambda: batch_size):
                if cancelled():
                    return
                yield build(paths, *decode_fn(paths, options))
            return
        yield from _classify_in_pool(it, options, build, workers, batch_size,
                                     max_in_flight or 2 * workers + 1, cancelled, decode_fn)
    finally:
        infer.close()


def _classify_in_pool(it, options, build, workers, batch_size, max_in_flight, cancelled, decode_fn):
    pool = _DecodePool(workers)
    pending: collections.deque[tuple[list[str], Future]] = collections.deque()
    sizer = _ChunkSizer(batch_size)
    source = _chunks(it, lambda: sizer.size)

    def fill() -> None:
        while len(pending) < max_in_flight:
            paths = next(source, None)
            if paths is None:
                return
            pending.append((paths, pool.submit(_timed, decode_fn, paths, options)))

    try:
        fill()
        while pending:
            paths, fut = pending[0]
            # Wait in short slices so that a cancel request is seen within ~50 ms even
            # while a chunk of large scans is still decoding.
            while not fut.done():
                if cancelled():
                    return
                wait([fut], timeout=0.05, return_when=FIRST_COMPLETED)
            if cancelled():
                return
            pending.popleft()
            try:
                seconds, decoded = fut.result()
                sizer.observe(len(paths), seconds)
            except BrokenProcessPool:
                # A worker died (a decoder crash or the OOM killer). Every queued chunk is
                # lost with it: rebuild the pool, find the culprit file by decoding this
                # chunk alone, and queue the others again.
                pool.restart()
                decoded = _decode_isolated(paths, options, pool, decode_fn)
                requeue = [p for p, _ in pending]
                pending.clear()
                for p in requeue:
                    pending.append((p, pool.submit(_timed, decode_fn, p, options)))
            except Exception as e:  # e.g. a result that cannot be pickled: lose this chunk only
                reason = f"cannot decode ({type(e).__name__}: {str(e)[:120]})"
                decoded = (np.empty((0, SIZE, SIZE), np.float32), [reason] * len(paths))
            fill()
            yield build(paths, *decoded)
    finally:
        pool.shutdown()


def _decode_isolated(paths, options, pool: _DecodePool, decode_fn):
    """Decode ``paths`` with nothing else in the pool; when the chunk kills its worker,
    decode file by file and blame the files that do."""
    try:
        return pool.submit(decode_fn, paths, options).result()
    except BrokenProcessPool:
        pool.restart()
    parts: list[tuple] = []
    for p in paths:
        try:
            parts.append(pool.submit(decode_fn, [p], options).result())
        except BrokenProcessPool:
            pool.restart()
            parts.append((np.empty((0, SIZE, SIZE), np.float32), ["the decoder crashed on this file"]))
    errors = [e for part in parts for e in part[1]]
    images = np.concatenate([part[0] for part in parts])
    decoded = [part for part in parts if None in part[1]]   # files that gave an image
    if decoded and all(len(part) > 2 and part[2] is not None for part in decoded):
        # Classified in the workers: their answers, in order (crashed files have none).
        return (images, errors, np.concatenate([part[2] for part in decoded]),
                np.concatenate([part[3] for part in decoded]))
    # The parent's model answers; a worker's reason for not answering goes up as the note.
    reasons = [part[3] for part in decoded if len(part) > 3 and part[2] is None]
    why = (None, reasons[0]) if reasons else ()
    if len(images) < sum(part[1].count(None) for part in decoded):
        # Some parts kept their images in the worker, others need the parent's model.
        # Decode those files here (their errors follow, should one have changed meanwhile).
        idx = [i for i, e in enumerate(errors) if e is None]
        images, again = decode_chunk([paths[i] for i in idx], options)
        for i, e in zip(idx, again):
            errors[i] = e
    return (images, errors, *why)


def classify_files(files: Iterable[str | bytes | os.PathLike], predictor, *,
                   batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None,
                   keep_images: bool = False,
                   true_label: Callable[[Path], str | None] | None = None,
                   folder_labels: Sequence[str] | None = None,
                   should_cancel: Callable[[], bool] | None = None,
                   max_in_flight: int | None = None,
                   inference_threads: int | None = None, precision: str = "fp32",
                   on_note: Callable[[str], None] | None = None) -> Iterator[FileResult]:
    """Classify image files; yields one :class:`FileResult` per file, in input order.

    Parameters
    ----------
    files
        Paths (``str``, ``bytes`` or path objects), e.g. from :func:`collect_files`.
        Consumed lazily, so a generator of any length works.
    predictor
        A :class:`~mnist_desktop.core.predictor.Predictor` (anything with ``options``,
        ``labels`` and ``probabilities(images)``).
    batch_size
        Files per decoding chunk and per inference batch, at most: with workers, files
        that decode slowly (photos, scans) go in smaller chunks (``CHUNK_SECONDS``).
    workers
        Decoding worker processes (None: one per core; 0: decode in this process).
    keep_images
        Attach the 28x28 model input to each result (costs 3 KB per result).
    true_label
        Optional function giving a file's known label (e.g. from its folder name).
    folder_labels
        Labels that a file's parent folder name may be (e.g. ``predictor.labels``): the
        fast way to mark inputs labelled by sub-folder (``true_label`` wins if both).
    should_cancel
        Checked between chunks and while waiting for one; when it returns True the
        generator stops and the decoding processes are shut down.
    max_in_flight
        Chunks queued for decoding at once (default ``2 * workers + 1``): bounds memory.
    inference_threads
        Torch threads for the run (default: cores not used by decoding workers).
    precision
        ``fp32`` (default, exactly the single-image answers) or ``bf16`` (CPU with native
        bfloat16: faster, probabilities within a few hundredths).
    on_note
        Called (at most once per distinct message) with a one-line note about how the
        run goes that changes no answer, e.g. that the worker processes could not run
        ONNX Runtime and this process runs the model instead (slower).

    Yields
    ------
    FileResult
        With ``probs`` or an ``error`` (corrupt, truncated, empty, not an image, too
        large, unreadable, nothing to classify, decoder crash...).
    """
    for chunk in classify_chunks(files, predictor, batch_size=batch_size, workers=workers,
                                 keep_images=keep_images, true_label=true_label,
                                 folder_labels=folder_labels, should_cancel=should_cancel,
                                 max_in_flight=max_in_flight, inference_threads=inference_threads,
                                 precision=precision, on_note=on_note):
        yield from chunk


# --------------------------------------------------------------------------- progress

@dataclass
class BatchProgress:
    """One progress report: counts so far and the results of the latest chunk."""

    done: int
    total: int | None
    failed: int
    elapsed: float
    rate: float                     # images per second over the last few seconds
    results: list[FileResult] = field(default_factory=list)

    @property
    def eta(self) -> float | None:
        """Seconds left, or None when the total or the rate is unknown."""
        if self.total is None or self.rate <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.rate)

    @property
    def fraction(self) -> float | None:
        return None if not self.total else min(1.0, self.done / self.total)

    def describe(self) -> str:
        """E.g. ``'12,800 / 200,000 files  5,432 img/s  ETA 0:36  3 failed'``."""
        count = f"{self.done:,}" + (f" / {self.total:,}" if self.total is not None else "")
        text = f"{count} files  {self.rate:,.0f} img/s"
        if self.eta is not None:
            text += f"  ETA {format_duration(self.eta)}"
        if self.failed:
            text += f"  {self.failed:,} failed"
        return text


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` or ``m:ss``."""
    s = int(math.ceil(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressMeter:
    """Turns result chunks into :class:`BatchProgress` reports.

    The rate is measured over a sliding window of ``window`` seconds so the ETA follows
    the current speed (process start-up and the OS file cache skew the first seconds).
    """

    def __init__(self, total: int | None = None, window: float = 3.0,
                 clock: Callable[[], float] = time.perf_counter):
        self.total = total
        self.window = window
        self._clock = clock
        self._t0 = clock()
        self._points: collections.deque[tuple[float, int]] = collections.deque([(self._t0, 0)])
        self.done = 0
        self.failed = 0

    def update(self, results: list[FileResult]) -> BatchProgress:
        now = self._clock()
        self.done += len(results)
        self.failed += sum(1 for r in results if r.error is not None)
        self._points.append((now, self.done))
        while len(self._points) > 2 and now - self._points[1][0] >= self.window:
            self._points.popleft()
        t_old, n_old = self._points[0]
        rate = (self.done - n_old) / (now - t_old) if now > t_old else 0.0
        return BatchProgress(self.done, self.total, self.failed, now - self._t0, rate, results)


def classify_with_progress(files: Iterable[str | bytes | os.PathLike], predictor, *,
                           total: int | None = None, **kwargs: Any) -> Iterator[BatchProgress]:
    """:func:`classify_chunks` with progress: yields one :class:`BatchProgress` per chunk.

    ``total`` defaults to ``len(files)`` when ``files`` has a length. Other keyword
    arguments are those of :func:`classify_files`. The same generator serves the CLI
    (a progress line on stderr), the GUI worker thread and tests.
    """
    if total is None and hasattr(files, "__len__"):
        total = len(files)  # type: ignore[arg-type]
    meter = ProgressMeter(total)
    for chunk in classify_chunks(files, predictor, **kwargs):
        yield meter.update(chunk)


# --------------------------------------------------------------------------- compact storage

class ResultStore:
    """All results of a run in compact columns (about 60 bytes plus the path per file).

    Keeps 200,000 results in some 30 MB, where as many :class:`FileResult` objects would
    take several hundred. Rows are addressed by their input order; :meth:`result` builds
    a :class:`FileResult` on demand. Corrections (labels set by hand) live here too and
    are used by export and by sorting into folders.
    """

    def __init__(self, labels: Sequence[str]):
        self.labels = list(labels)
        self._index = {lab: i for i, lab in enumerate(self.labels)}
        self._paths: list[str] = []
        self._errors: dict[int, str] = {}
        self._n = 0
        self._alloc(1024)

    def _alloc(self, cap: int) -> None:
        k = len(self.labels)
        old = self._n

        def grow(a, shape, dtype, fill):
            b = np.full(shape, fill, dtype)
            if a is not None:
                b[:old] = a[:old]
            return b

        self.probs = grow(getattr(self, "probs", None), (cap, k), np.float32, np.nan)
        self.uncertain = grow(getattr(self, "uncertain", None), (cap,), bool, False)
        self.predicted = grow(getattr(self, "predicted", None), (cap,), np.int32, -1)
        self.confidence = grow(getattr(self, "confidence", None), (cap,), np.float32, np.nan)
        self.true_index = grow(getattr(self, "true_index", None), (cap,), np.int32, -1)
        self.corrected = grow(getattr(self, "corrected", None), (cap,), np.int32, -1)
        self._cap = cap

    # The public arrays above are views of capacity; readers use these trimmed views.
    def column(self, name: str) -> np.ndarray:
        """``probs``, ``uncertain``, ``predicted``, ``confidence``, ``true_index`` or
        ``corrected`` trimmed to the rows stored (-1 means none for index columns)."""
        return getattr(self, name)[:self._n]

    def __len__(self) -> int:
        return self._n

    def extend(self, results: Iterable[FileResult]) -> range:
        """Append results; returns the range of the new rows."""
        results = list(results)
        start, n = self._n, len(results)
        if start + n > self._cap:
            self._alloc(max(2 * self._cap, start + n))
        ok_rows, ok_probs = [], []
        for j, r in enumerate(results):
            self._paths.append(r.path)
            if r.probs is not None:
                ok_rows.append(start + j)
                ok_probs.append(r.probs)
                self.uncertain[start + j] = r.uncertain
            else:
                self._errors[start + j] = r.error or "no result"
            if r.true_label is not None:
                self.true_index[start + j] = self._index.get(r.true_label, -1)
            if r.corrected_label is not None:
                self.corrected[start + j] = self._index.get(r.corrected_label, -1)
        if ok_rows:
            # one vectorized write per chunk instead of per-row numpy calls
            probs = np.stack(ok_probs)
            self.probs[ok_rows] = probs
            self.predicted[ok_rows] = probs.argmax(axis=1)
            self.confidence[ok_rows] = probs.max(axis=1)
        self._n += n
        return range(start, self._n)

    def path(self, i: int) -> str:
        return self._paths[i]

    def set_path(self, i: int, path: str) -> None:
        """Record that row ``i``'s file now lives at ``path`` (after a move)."""
        self._paths[i] = path

    def relocate(self, moved: dict[str, str]) -> int:
        """Apply ``{old path: new path}`` to every row; returns how many changed."""
        n = 0
        for i, p in enumerate(self._paths):
            new = moved.get(p)
            if new is not None:
                self._paths[i] = new
                n += 1
        return n

    def error(self, i: int) -> str | None:
        return self._errors.get(i)

    def ok(self, i: int) -> bool:
        return i not in self._errors

    @property
    def failed(self) -> int:
        return len(self._errors)

    def label_of(self, index: int) -> str | None:
        return None if index < 0 else self.labels[index]

    def prediction(self, i: int) -> str:
        return self.label_of(int(self.predicted[i])) or ""

    def true_label(self, i: int) -> str | None:
        return self.label_of(int(self.true_index[i]))

    def corrected_label(self, i: int) -> str | None:
        return self.label_of(int(self.corrected[i]))

    def final_label(self, i: int) -> str:
        """Corrected label, else prediction ('' for a file that failed)."""
        return self.corrected_label(i) or self.prediction(i)

    def set_corrected(self, i: int, label: str | None) -> None:
        """Set (or clear with None / the predicted label) a hand correction."""
        if label is not None and label not in self._index:
            raise ValueError(f"unknown label {label!r}")
        if label is None or label == self.prediction(i):
            self.corrected[i] = -1
        else:
            self.corrected[i] = self._index[label]

    @property
    def has_corrections(self) -> bool:
        return bool((self.column("corrected") >= 0).any())

    @property
    def has_true_labels(self) -> bool:
        return bool((self.column("true_index") >= 0).any())

    def result(self, i: int) -> FileResult:
        ok = self.ok(i)
        return FileResult(self._paths[i], self.labels, probs=self.probs[i].copy() if ok else None,
                          uncertain=bool(self.uncertain[i]), error=self._errors.get(i),
                          true_label=self.true_label(i), corrected_label=self.corrected_label(i))

    def __iter__(self) -> Iterator[FileResult]:
        return (self.result(i) for i in range(self._n))

    def labelled_rows(self) -> np.ndarray:
        """Rows with a known true label and a prediction."""
        return np.flatnonzero((self.column("true_index") >= 0) & (self.column("predicted") >= 0))

    def report(self) -> dict[str, Any] | None:
        """:func:`~mnist_desktop.core.metrics.classification_report` over the labelled
        rows (true label from the folder name vs prediction), or None when none."""
        from mnist_desktop.core.metrics import classification_report

        rows = self.labelled_rows()
        if not len(rows):
            return None
        return classification_report(self.true_index[rows], self.probs[rows], self.labels,
                                     uncertain=self.uncertain[rows])

    def cell_rows(self, true_index: int, predicted_index: int) -> np.ndarray:
        """Rows in one confusion-matrix cell (true class, predicted class)."""
        return np.flatnonzero((self.column("true_index") == true_index)
                              & (self.column("predicted") == predicted_index))


# --------------------------------------------------------------------------- export

def csv_header(labels: Sequence[str], corrected: bool = False) -> list[str]:
    """CSV columns: ``path, prediction, confidence, uncertain, error``, one ``p_<label>``
    per class, then ``corrected_label`` when any label was corrected by hand."""
    cols = ["path", "prediction", "confidence", "uncertain", "error"] + [f"p_{lab}" for lab in labels]
    return cols + ["corrected_label"] if corrected else cols


def csv_row(r: FileResult, corrected: bool = False) -> list[str]:
    """One CSV row matching :func:`csv_header`."""
    if r.probs is None:
        row = [display_path(r.path), "", "", "", r.error or ""] + [""] * len(r.labels)
    else:
        row = ([display_path(r.path), r.prediction, f"{r.confidence:.6f}", str(r.uncertain).lower(), ""]
               + [f"{p:.6f}" for p in r.probs])
    return row + [r.corrected_label or ""] if corrected else row


def result_record(r: FileResult, top_k: int = 3) -> dict:
    """One JSON record: the CSV fields plus ``top_k``, ``true_label`` (when known from
    the folder name) and ``corrected_label`` (when set by hand)."""
    rec = {"path": display_path(r.path), "prediction": r.prediction or None,
           "confidence": None if r.probs is None else round(r.confidence, 6),
           "uncertain": None if r.probs is None else r.uncertain, "error": r.error,
           "top_k": [{"label": lab, "probability": round(p, 6)} for lab, p in r.top_k(top_k)],
           "probabilities": None if r.probs is None else
           {lab: round(float(p), 6) for lab, p in zip(r.labels, r.probs)}}
    if r.true_label is not None:
        rec["true_label"] = r.true_label
    if r.corrected_label is not None:
        rec["corrected_label"] = r.corrected_label
    return rec


def write_results(path: str | os.PathLike, results: Iterable[FileResult], labels: Sequence[str],
                  top_k: int = 3, corrected: bool | None = None) -> None:
    """Write results as CSV or JSON (by suffix), atomically and streaming.

    Parameters
    ----------
    results
        :class:`FileResult` objects or a :class:`ResultStore`; rows are written one by
        one, so 200,000 results never exist as one big string.
    corrected
        Add the ``corrected_label`` column. None: when any result has a correction
        (``results`` must then be a sequence or a :class:`ResultStore`).
    """
    from mnist_desktop.core.checkpoint import atomic_write

    if corrected is None:
        if isinstance(results, ResultStore):
            corrected = results.has_corrections
        elif isinstance(results, Sequence):
            corrected = any(r.corrected_label is not None for r in results)
        else:
            corrected = False
    as_json = Path(path).suffix.lower() == ".json"

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            if as_json:
                f.write('{"labels": ' + json.dumps(list(labels)) + ', "results": [')
                for n, r in enumerate(results):
                    f.write(("\n " if n == 0 else ",\n ") + json.dumps(result_record(r, top_k)))
                f.write("\n]}\n")
            else:
                w = csv.writer(f)
                w.writerow(csv_header(labels, corrected))
                w.writerows(csv_row(r, corrected) for r in results)

    atomic_write(path, write)
