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

Modules
-------
``results``    :class:`FileResult`, :func:`display_path`
``listing``    :func:`collect_files`
``decoding``   the worker side (imported by worker processes: never torch or Qt)
``pool``       the process pool, :func:`default_workers`, :func:`prestart_workers`
``inference``  the parent's model (torch, bf16), :func:`inference_precision`
``engine``     chunking, :func:`classify_chunks`, :func:`classify_files`
``progress``   :class:`BatchProgress`, :class:`ProgressMeter`, :func:`classify_with_progress`
``store``      :class:`ResultStore`
``output``     CSV/JSON columns and :func:`write_results`
``journal``    :class:`CorrectionJournal`: hand corrections kept on disk until exported
"""

from mnist_desktop.core.batch.decoding import decode_and_classify, decode_chunk, decode_one
from mnist_desktop.core.batch.engine import (CHUNK_SECONDS, DEFAULT_BATCH_SIZE, FIRST_CHUNK, classify_chunks,
                                             classify_files)
from mnist_desktop.core.batch.inference import PRECISIONS, inference_precision
from mnist_desktop.core.batch.listing import collect_files
from mnist_desktop.core.batch.journal import CorrectionJournal, pending_journals
from mnist_desktop.core.batch.output import csv_header, csv_row, csv_text, result_record, write_results
from mnist_desktop.core.batch.pool import default_workers, prestart_workers
from mnist_desktop.core.batch.progress import BatchProgress, ProgressMeter, classify_with_progress, format_duration
from mnist_desktop.core.batch.results import FileResult, display_path
from mnist_desktop.core.batch.store import ResultStore

__all__ = [
    "BatchProgress", "CHUNK_SECONDS", "CorrectionJournal", "DEFAULT_BATCH_SIZE", "FIRST_CHUNK", "FileResult",
    "PRECISIONS", "ProgressMeter", "ResultStore", "classify_chunks", "classify_files", "classify_with_progress",
    "collect_files", "csv_header", "csv_row", "csv_text", "decode_and_classify", "decode_chunk", "decode_one",
    "default_workers", "display_path", "format_duration", "inference_precision", "pending_journals",
    "prestart_workers", "result_record", "write_results",
]
