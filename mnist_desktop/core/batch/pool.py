"""The process pool that decodes chunks: start method, worker count and a pool that
survives a dead worker and shuts down at once.

The workers run functions of :mod:`mnist_desktop.core.batch.decoding` only (its
:func:`~mnist_desktop.core.batch.decoding.worker_init` lowers their priority).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from mnist_desktop.core.batch import decoding


def default_workers() -> int:
    """One decoding process per usable core. Also for the GUI: the workers run at a lower
    priority (:func:`~mnist_desktop.core.batch.decoding.worker_init`), so they take only
    the CPU time the GUI process leaves idle."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, n)


def _pool_context():
    """A start method that never forks a process holding torch/Qt threads.

    ``forkserver`` (Linux, macOS) starts one clean server that has imported only the
    worker side (:mod:`~mnist_desktop.core.batch.decoding`: numpy, Pillow), then forks
    cheap workers from it. Also in a frozen (PyInstaller) build: PyInstaller's
    ``multiprocessing.freeze_support()`` (the entry point's first call) diverts the
    server's ``-c 'from multiprocessing.forkserver import main ...'`` command line, so the
    program starts up once for the server instead of once per spawned worker (which made
    frozen batches ~1.7x the CPU time of installed ones). Elsewhere (Windows) ``spawn``.
    """
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        # Without this the server would import the parent's __main__ (maybe the GUI). ONNX
        # Runtime is imported there once (skipped when missing), not in every worker.
        ctx.set_forkserver_preload([decoding.__name__, "mnist_desktop.core.onnx_predictor", "onnxruntime"])
        return ctx
    return multiprocessing.get_context("spawn")


def prestart_workers(workers: int | None = None) -> None:
    """Start the server that worker processes are forked from now, so that it imports
    numpy, Pillow and ONNX Runtime (~0.3 s) while this process loads its model and lists
    files; a run's workers then start in milliseconds. Returns at once; a no-op with
    ``workers=0`` and where workers are spawned (Windows)."""
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
                                                 initializer=decoding.worker_init)
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
