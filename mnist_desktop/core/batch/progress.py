"""Progress of a batch run: :class:`BatchProgress` reports (counts, images/s, ETA) and
:func:`classify_with_progress`, the generator the CLI, the GUI and tests consume."""

from __future__ import annotations

import collections
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from mnist_desktop.core.batch.engine import classify_chunks
from mnist_desktop.core.batch.results import FileResult


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
