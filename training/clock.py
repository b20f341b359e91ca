"""Timing of a training session for images/s and ETA (not part of the resumable state)."""

from __future__ import annotations

import time


class Clock:
    """Session timing: training and validation time, and what happened since the last
    :class:`~training.events.Step` event.

    Parameters
    ----------
    elapsed_before
        Seconds the run spent before this session (when resuming).
    """

    def __init__(self, elapsed_before: float):
        self.start = time.monotonic()
        self.elapsed_before = elapsed_before
        self.train_time = 0.0
        self.train_steps = 0
        self.train_images = 0
        self.val_time = 0.0
        self.val_count = 0
        self.last_event = self.start
        self.images_since_event = 0
        self.loss_since_event = 0.0
        self.steps_since_event = 0
        self.epoch_start = 0.0

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.start

    def add_step(self, seconds: float, images: int) -> None:
        if not self.epoch_start:
            self.epoch_start = time.monotonic() - seconds
        self.train_time += seconds
        self.train_steps += 1
        self.train_images += images
        self.images_since_event += images
        self.steps_since_event += 1

    def event_sent(self, now: float) -> None:
        self.last_event = now
        self.images_since_event = self.steps_since_event = 0
        self.loss_since_event = 0.0

    def add_validation(self, seconds: float) -> None:
        self.val_time += seconds
        self.val_count += 1

    def epoch_time(self) -> float:
        """Wall time since this epoch's first step (this session), and restart the count."""
        now = time.monotonic()
        t = now - (self.epoch_start or now)
        self.epoch_start = 0.0
        return t

    def eta(self, steps_left: int, epochs_left: int) -> float | None:
        """Seconds left: remaining steps at this session's step time, plus remaining epoch
        ends (validation, checkpoints, state) at their measured average cost."""
        if not self.train_steps:
            return None
        per_step = self.train_time / self.train_steps
        per_epoch_end = self.val_time / self.val_count if self.val_count else 0.0
        return steps_left * per_step + epochs_left * per_epoch_end
