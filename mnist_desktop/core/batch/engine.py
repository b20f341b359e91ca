"""The chunk engine: :func:`classify_chunks` and :func:`classify_files`.

Files are cut into chunks sized so that one takes a worker about ``CHUNK_SECONDS``,
decoded (and, with ONNX Runtime, classified) in the pool of
:mod:`~mnist_desktop.core.batch.pool`, and come back in input order; a chunk that kills
its worker is decoded again alone, then file by file, so only the culprit fails.
"""

from __future__ import annotations

import collections
import functools
import itertools
import os
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from mnist_desktop.core.batch.decoding import decode_and_classify, decode_chunk, read_numbers, timed
from mnist_desktop.core.batch.inference import _Inference
from mnist_desktop.core.batch.pool import _DecodePool, default_workers
from mnist_desktop.core.batch.results import FileResult
from mnist_desktop.core.onnx_predictor import OnnxPredictor
from mnist_desktop.core.preprocess import SIZE, PreprocessOptions

DEFAULT_BATCH_SIZE = 128


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
                    numbers: bool = False,
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
    if workers and decode_fn is decode_chunk and isinstance(predictor, OnnxPredictor):
        # ONNX Runtime runs in the decoding workers (see decode_and_classify).
        decode_fn = functools.partial(decode_and_classify, onnx_path=str(predictor.onnx_path),
                                      source=str(predictor.path), keep_images=keep_images,
                                      numbers=numbers)
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
              probs: np.ndarray | None = None, unc: Any = None,
              read: list[tuple[str, float]] | None = None) -> list[FileResult]:
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
        if numbers:
            if read is None:   # not read in the worker (torch, no workers, a fallback)
                read = read_numbers(paths, errors, predictor)
            for r, (text, conf) in zip((r for r in results if r.error is None), read):
                r.number, r.number_confidence = text, conf
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
            pending.append((paths, pool.submit(timed, decode_fn, paths, options)))

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
                    pending.append((p, pool.submit(timed, decode_fn, p, options)))
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
        read = ([n for part in decoded for n in part[4]],) if all(len(part) > 4 for part in decoded) else ()
        return (images, errors, np.concatenate([part[2] for part in decoded]),
                np.concatenate([part[3] for part in decoded]), *read)
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
                   on_note: Callable[[str], None] | None = None, numbers: bool = False) -> Iterator[FileResult]:
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
    numbers
        Also read every image as a number (:func:`~mnist_desktop.core.numbers.read_number`):
        sets ``number`` and ``number_confidence`` on each result that has ``probs``. The
        reading runs where the model runs (the ONNX workers, else this process).

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
                                 precision=precision, on_note=on_note, numbers=numbers):
        yield from chunk
