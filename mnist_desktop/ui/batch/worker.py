"""Running the Qt-free generators of the core (classification, export, sorting) on a
QThread, with results delivered only through signals on the GUI thread."""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Generator, Iterable

from PySide6.QtCore import QObject, QThread, Signal, Slot

#: A task is a function taking a ``should_cancel`` callable and returning a generator;
#: every value it yields is delivered by :attr:`TaskRunner.progress`, its return value
#: by :attr:`TaskRunner.finished`.
Task = Callable[[Callable[[], bool]], Generator[Any, None, Any]]


class _Worker(QObject):
    progress = Signal(object)
    done = Signal(object, bool)     # result, cancelled
    failed = Signal(str)

    def __init__(self, task: Task, cancel: threading.Event):
        super().__init__()
        self._task = task
        self._cancel = cancel

    @Slot()
    def run(self) -> None:
        gen = self._task(self._cancel.is_set)
        result = None
        try:
            while True:
                try:
                    item = next(gen)
                except StopIteration as stop:
                    result = stop.value
                    break
                self.progress.emit(item)
                # On cancel the generator is not closed from here: it sees should_cancel,
                # stops at its next step and returns what it has (e.g. the undo log of a
                # half-done sort), which ``finished`` then delivers.
        except Exception as e:  # report, never crash the app from a worker thread
            self.failed.emit(f"{type(e).__name__}: {e}".splitlines()[0])
            return
        self.done.emit(result, self._cancel.is_set())


class TaskRunner(QObject):
    """Runs one :data:`Task` on its own QThread.

    ``cancel()`` may be called from the GUI thread at any time: the task's generator sees
    it through ``should_cancel``, stops at its next step and returns normally.
    ``stop()`` cancels and joins the thread (use it on close).
    """

    progress = Signal(object)        # each value the generator yields
    finished = Signal(object, bool)  # (return value, cancelled)
    failed = Signal(str)             # one-line reason; the task ended with an exception

    def __init__(self, task: Task, parent: QObject | None = None):
        super().__init__(parent)
        self._cancel = threading.Event()
        self._thread = QThread()
        self._worker = _Worker(task, self._cancel)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        self._worker.progress.connect(self.progress)
        self._worker.done.connect(self._on_done)
        self._worker.failed.connect(self._on_failed)
        self._running = False

    def start(self) -> None:
        self._running = True
        self._thread.start()

    def is_running(self) -> bool:
        return self._running

    def cancel(self) -> None:
        self._cancel.set()

    def stop(self, timeout_ms: int = 10000) -> bool:
        """Cancel and wait for the thread to end. Returns False on timeout."""
        self._cancel.set()
        self._thread.quit()
        return self._thread.wait(timeout_ms)

    def _join(self) -> None:
        self._running = False
        self._thread.quit()
        self._thread.wait(30000)  # run() has returned: the thread ends at once

    @Slot(object, bool)
    def _on_done(self, result, cancelled: bool) -> None:
        self._join()
        self.finished.emit(result, cancelled)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self._join()
        self.failed.emit(message)


# --------------------------------------------------------------------------- the classification task

class ClassifyEvent:
    """Values yielded by :func:`classify_task` (delivered through ``progress``)."""

    MODEL = "model"        # payload: the Predictor
    LISTED = "listed"      # payload: (total files, [(path, reason), ...] listing errors)
    RESULTS = "results"    # payload: (BatchProgress, [FileResult, ...] since the last event)
    NOTE = "note"          # payload: a one-line note about the run that changes no answer

    def __init__(self, kind: str, payload: Any):
        self.kind = kind
        self.payload = payload


def classify_task(paths: Iterable[str], model, device: str = "auto", recursive: bool = True,
                  workers: int | None = None, batch_size: int | None = None,
                  interval: float = 0.1) -> Task:
    """Build the task that lists ``paths``, loads the model if needed and classifies.

    ``model`` is a Predictor, or a model file path (None: the bundled model), loaded on
    the worker thread so the window never waits for ``import torch``. Results are
    coalesced into at most one event per ``interval`` seconds: 200,000 files make a few
    hundred signals, not 200,000.
    """
    paths = [os.fsdecode(p) for p in paths]

    def task(should_cancel):
        from mnist_desktop.core.batch import (DEFAULT_BATCH_SIZE, FileResult, classify_with_progress,
                                              collect_files, prestart_workers)

        prestart_workers(workers)   # boots while the model loads and the files are listed
        predictor = model
        if predictor is None or isinstance(predictor, (str, bytes, os.PathLike)):
            from mnist_desktop.core.onnx_predictor import batch_predictor
            from mnist_desktop.core.paths import default_model_path

            predictor, note = batch_predictor(predictor or default_model_path(), device)
            if note and not predictor.device_message:
                predictor.device_message = note   # the window shows it in its status bar
        yield ClassifyEvent(ClassifyEvent.MODEL, predictor)
        labels = predictor.labels
        errors: list[tuple[str, str]] = []
        files = collect_files(paths, recursive=recursive, errors=errors, should_cancel=should_cancel)
        yield ClassifyEvent(ClassifyEvent.LISTED, (len(files), errors))
        pending = [FileResult(p, labels, error=reason) for p, reason in errors]
        last = time.monotonic()
        prog = None
        notes: list[str] = []
        for prog in classify_with_progress(files, predictor, workers=workers,
                                           batch_size=batch_size or DEFAULT_BATCH_SIZE,
                                           folder_labels=labels,
                                           should_cancel=should_cancel, on_note=notes.append):
            while notes:
                yield ClassifyEvent(ClassifyEvent.NOTE, notes.pop(0))
            pending.extend(prog.results)
            now = time.monotonic()
            if now - last >= interval:
                yield ClassifyEvent(ClassifyEvent.RESULTS, (prog, pending))
                pending, last = [], now
        if pending or prog is None:
            yield ClassifyEvent(ClassifyEvent.RESULTS, (prog, pending))
        return len(files)

    return task
