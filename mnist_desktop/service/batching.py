"""Micro-batching: concurrent requests share one forward pass.

Requests arrive one image at a time. The :class:`MicroBatcher` collects what arrives
while the previous batch runs, prepares the whole batch at once (``prepare``: for the
API, the preprocessing of every small image in one vectorized pass, several times
cheaper per image than one by one), runs it as one forward pass in a worker thread
(ONNX Runtime releases the GIL, so the event loop keeps parsing requests on the other
core) and hands each caller its own row. An idle server never waits for company unless
``max_wait`` asks it to: whatever is queued goes at once. The model is loaded once, by
the caller.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["BatchStats", "MicroBatcher", "stack_images"]

# (N, 28, 28) float32 -> (probs (N, C), uncertain (N,), score (N,))
ForwardFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
# submitted items -> ((M, 28, 28) float32, per item: its row in that stack, or the exception
# its caller gets)
PrepareFn = Callable[[Sequence[Any]], tuple[np.ndarray, list["int | BaseException"]]]


def stack_images(items: Sequence[Any]) -> tuple[np.ndarray, list[int]]:
    """The default ``prepare``: every item is already a ``(28, 28)`` image."""
    return np.stack([np.asarray(img, np.float32) for img in items]), list(range(len(items)))


@dataclass
class BatchStats:
    """What the batcher has done so far (served at ``GET /model``)."""

    requests: int = 0
    batches: int = 0
    largest_batch: int = 0

    @property
    def mean_batch(self) -> float:
        return self.requests / self.batches if self.batches else 0.0


class MicroBatcher:
    """Collect single images from concurrent coroutines into batched forward passes.

    Parameters
    ----------
    forward
        The batched model call, ``(N, 28, 28) -> (probs, uncertain, score)``; thread-safe
        for one caller at a time (only one batch runs at a time).
    max_batch
        Largest batch handed to ``forward``.
    max_wait
        Seconds the first request of an idle spell waits for company (default 0: none;
        a fixed wait only adds latency at low load, and under load whatever queued while
        the previous batch ran goes next anyway).
    prepare
        Turns the submitted items into the batch, in the worker thread (default
        :func:`stack_images`: items are ``(28, 28)`` images). An item it cannot prepare
        fails its own caller only.
    workers
        Batches in flight at once, each in its own thread (``forward`` must be safe to
        call from several threads, as an ONNX Runtime session is). With two, one batch
        is prepared (numpy, mostly holding the GIL) while the other's forward pass runs
        (GIL released): on two cores neither the event loop nor the model waits for the
        other.
    """

    def __init__(self, forward: ForwardFn, max_batch: int = 64, max_wait: float = 0.0,
                 prepare: PrepareFn | None = None, workers: int = 2):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._forward = forward
        self._prepare = prepare or stack_images
        self.max_batch = max_batch
        self.max_wait = max(0.0, float(max_wait))
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self._running: set[asyncio.Task] = set()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start batching (again, after :meth:`stop`: an app's lifespan may run more than once)."""
        if self._task is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="forward")
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        for t in [task, *self._running] if task is not None else list(self._running):
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                pass
        # Whoever still waits hears that the server is going away.
        while self._queue is not None and not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(RuntimeError("the server is shutting down"))
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    async def submit(self, item: Any) -> tuple[np.ndarray, bool, float]:
        """``(probs, uncertain, score)`` of one item (with the default ``prepare``, a
        ``(28, 28)`` image); raises what ``prepare`` or the forward pass raised for it."""
        if self._task is None:
            await self.start()
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, fut))
        return await fut

    def _prepare_and_forward(self, items: list):
        images, rows = self._prepare(items)
        if len(images):
            return rows, self._forward(images)
        return rows, None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        free = asyncio.Semaphore(self.workers)
        while True:
            items = [await queue.get()]
            await free.acquire()   # while every worker is busy, the queue grows into the next batch
            if queue.empty() and self.max_wait:
                await asyncio.sleep(self.max_wait)
            while len(items) < self.max_batch and not queue.empty():
                items.append(queue.get_nowait())
            items = [(item, fut) for item, fut in items if not fut.cancelled()]
            if not items:
                free.release()
                continue
            task = loop.create_task(self._batch(loop, items))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            task.add_done_callback(lambda _t: free.release())

    async def _batch(self, loop, items: list) -> None:
        try:
            rows, out = await loop.run_in_executor(self._pool, self._prepare_and_forward,
                                                   [item for item, _ in items])
        except Exception as e:  # a failing forward pass fails its requests, not the server
            for _, fut in items:
                if not fut.done():
                    fut.set_exception(e)
            return
        except asyncio.CancelledError:
            for _, fut in items:
                if not fut.done():
                    fut.set_exception(RuntimeError("the server is shutting down"))
            raise
        done = [row for row in rows if not isinstance(row, BaseException)]
        if done:
            self.stats.requests += len(done)
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(done))
        for row, (_, fut) in zip(rows, items):
            if fut.done():
                continue
            if isinstance(row, BaseException):
                fut.set_exception(row)
            else:
                probs, unc, score = out
                fut.set_result((probs[row], bool(unc[row]), float(score[row])))
