"""The classify job: files and folders in, typed events out.

One generator serves ``mnist-desktop classify``, the batch window (on a worker thread)
and, later, the HTTP API::

    job = classify_job(paths, ClassifyOptions(precision="int8"))
    for event in job:
        match event:
            case ModelReady(loaded): ...    # the model, before any file is read
            case Listed(total, errors): ... # how many files; rows for unlistable inputs
            case Note(text): ...            # a one-line note that changes no answer
            case Results(progress, rows): ...

The generator's return value is a :class:`ClassifySummary`. It checks ``should_cancel``
between chunks and then returns normally with what it has; Ctrl-C (KeyboardInterrupt)
shuts the worker processes down and propagates.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Generator, Iterable

from mnist_desktop.core.batch import (DEFAULT_BATCH_SIZE, BatchProgress, FileResult, classify_with_progress,
                                      collect_files, prestart_workers)
from mnist_desktop.service.models import LoadedPredictor, ModelChoice, load_predictor


@dataclass(frozen=True)
class ClassifyOptions:
    """Everything a classify job can be asked (the CLI's flags, the batch window's
    settings).

    ``workers``: decoding processes (None: one per core; 0: in this process).
    ``batch_size``: files per chunk and inference batch, at most. ``coalesce``: results
    are delivered at most once per this many seconds (0: every chunk), so 200,000 files
    make a few hundred events for a GUI, not thousands. ``numbers``: also read every
    image as a number (results get ``number`` and ``number_confidence``).
    """

    model: str | os.PathLike | None = None
    device: str = "auto"
    precision: str = "fp32"
    recursive: bool = True
    workers: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    coalesce: float = 0.0
    numbers: bool = False          # also read each image as a number (``--number``)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch size must be >= 1")
        if self.workers is not None and self.workers < 0:
            raise ValueError("workers must be >= 0")

    def model_choice(self) -> ModelChoice:
        return ModelChoice(self.model, self.device, self.precision, "batch")


@dataclass(frozen=True)
class ModelReady:
    loaded: LoadedPredictor


@dataclass(frozen=True)
class Listed:
    total: int                    # files that will be classified
    errors: list[FileResult]      # one error row per input that could not be listed


@dataclass(frozen=True)
class Note:
    text: str


@dataclass(frozen=True)
class Results:
    progress: BatchProgress | None
    rows: list[FileResult]


ClassifyEvent = ModelReady | Listed | Note | Results


@dataclass
class ClassifySummary:
    """How a job ended: ``done`` files have a row (``failed`` of them an error row)."""

    listed: int = 0
    done: int = 0
    failed: int = 0
    elapsed: float = 0.0
    cancelled: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


def classify_job(paths: Iterable[str | bytes | os.PathLike], options: ClassifyOptions = ClassifyOptions(), *,
                 loaded: LoadedPredictor | None = None, should_cancel: Callable[[], bool] | None = None,
                 status: Callable[[str], None] | None = None) -> Generator[ClassifyEvent, None, ClassifySummary]:
    """List ``paths``, load the model (unless ``loaded`` is given) and classify.

    ``status`` hears about one-time exports while the model loads (they take seconds).

    Raises
    ------
    mnist_desktop.core.checkpoint.CheckpointError
        The model cannot be loaded (before any file is read).
    """
    paths = [os.fsdecode(p) for p in paths]
    cancelled = should_cancel or (lambda: False)
    prestart_workers(options.workers)   # boots while the model loads and the files are listed
    if loaded is None:
        loaded = load_predictor(options.model_choice(), status=status)
    yield ModelReady(loaded)
    summary = ClassifySummary(notes=list(loaded.notes))
    predictor = loaded.predictor
    labels = predictor.labels
    errors: list[tuple[str, str]] = []
    files = collect_files(paths, recursive=options.recursive, errors=errors, should_cancel=cancelled)
    error_rows = [FileResult(p, labels, error=reason) for p, reason in errors]
    summary.listed = len(files) + len(error_rows)
    summary.done, summary.failed = len(error_rows), len(error_rows)
    yield Listed(len(files), error_rows)
    notes: list[str] = []
    pending: list[FileResult] = []
    last = time.monotonic()
    prog = None
    # bf16 runs in the engine's own torch copy; fp32/int8 are what the predictor runs.
    engine_precision = "bf16" if loaded.precision == "bf16" else "fp32"
    for prog in classify_with_progress(files, predictor, workers=options.workers,
                                       batch_size=options.batch_size, folder_labels=labels,
                                       precision=engine_precision, should_cancel=cancelled,
                                       on_note=notes.append, numbers=options.numbers):
        while notes:
            summary.notes.append(notes[0])
            yield Note(notes.pop(0))
        summary.done += len(prog.results)
        pending.extend(prog.results)
        now = time.monotonic()
        if now - last >= options.coalesce:
            yield Results(prog, pending)
            pending, last = [], now
    if pending or prog is None:
        yield Results(prog, pending)
    if prog is not None:
        summary.failed = len(error_rows) + prog.failed
        summary.elapsed = prog.elapsed
    summary.cancelled = cancelled() and summary.done < summary.listed
    return summary
