"""Micro-batching: concurrent requests share one forward pass.

Requests arrive one 28x28 image at a time; a forward pass of 64 images costs little more
than one of a single image, so the :class:`MicroBatcher` collects what arrives while the
previous batch runs (and for at most ``max_wait`` seconds after the first request of an
idle spell), runs them as one batch in a worker thread (ONNX Runtime releases the GIL),
and hands each caller its own row. The model is loaded once, by the caller.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["BatchStats", "MicroBatcher"]

# (N, 28, 28) float32 -> (probs (N, C), uncertain (N,), score (N,))
ForwardFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


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
        Seconds the first request of an idle spell waits for company. Under load no
        request waits for this: whatever queued while the previous batch ran goes next.
    """

    def __init__(self, forward: ForwardFn, max_batch: int = 64, max_wait: float = 0.001):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._forward = forward
        self.max_batch = max_batch
        self.max_wait = max(0.0, float(max_wait))
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="forward")

    async def start(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        # Whoever still waits hears that the server is going away.
        while self._queue is not None and not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(RuntimeError("the server is shutting down"))
        self._pool.shutdown(wait=True)

    async def submit(self, image: np.ndarray) -> tuple[np.ndarray, bool, float]:
        """``(probs, uncertain, score)`` of one ``(28, 28)`` image."""
        if self._task is None:
            await self.start()
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((np.asarray(image, np.float32), fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        while True:
            items = [await queue.get()]
            if queue.empty() and self.max_wait:
                await asyncio.sleep(self.max_wait)
            while len(items) < self.max_batch and not queue.empty():
                items.append(queue.get_nowait())
            items = [(img, fut) for img, fut in items if not fut.cancelled()]
            if not items:
                continue
            batch = np.stack([img for img, _ in items])
            try:
                probs, unc, score = await loop.run_in_executor(self._pool, self._forward, batch)
            except Exception as e:  # a failing forward pass fails its requests, not the server
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.stats.requests += len(items)
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(items))
            for i, (_, fut) in enumerate(items):
                if not fut.done():
                    fut.set_result((probs[i], bool(unc[i]), float(score[i])))
