"""Running the Qt-free generators of the core (classification, export, sorting) on a
QThread, with results delivered only through signals on the GUI thread."""

from __future__ import annotations

import os
import threading
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

def classify_task(paths: Iterable[str], model, device: str = "auto", recursive: bool = True,
                  workers: int | None = None, batch_size: int | None = None,
                  interval: float = 0.1, numbers: bool = False) -> Task:
    """The service's classify job (:func:`mnist_desktop.service.classify.classify_job`)
    as a :data:`Task`: it yields the job's typed events (``ModelReady``, ``Listed``,
    ``Note``, ``Results``).

    ``model`` is a :class:`~mnist_desktop.service.models.LoadedPredictor`, or a model
    file path (None: the bundled model), loaded on the worker thread so the window never
    waits for ``import torch``. ``numbers`` also reads every image as a number (in the
    batch engine's worker processes). Results are coalesced into at most one event per
    ``interval`` seconds: 200,000 files make a few hundred signals, not 200,000.
    """
    paths = [os.fsdecode(p) for p in paths]

    def task(should_cancel):
        from mnist_desktop.service.classify import ClassifyOptions, classify_job
        from mnist_desktop.service.models import LoadedPredictor

        loaded = model if isinstance(model, LoadedPredictor) else None
        source = None if loaded is not None else model
        options = ClassifyOptions(model=source, device=device, recursive=recursive, workers=workers,
                                  coalesce=interval, numbers=numbers,
                                  **({"batch_size": batch_size} if batch_size else {}))
        summary = yield from classify_job(paths, options, loaded=loaded, should_cancel=should_cancel)
        return summary.listed

    return task
