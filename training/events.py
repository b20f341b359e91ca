"""Progress events of a training run, and their JSON-lines protocol.

:func:`training.engine.train` yields these events; the CLI shows them as a progress bar or,
with ``--progress-json``, prints each as one JSON object per line on stdout (flushed), so
another process (the GUI's training panel) can follow a run. Every run folder also keeps
them all in ``progress.jsonl``.

Protocol (version :data:`PROTOCOL_VERSION`)
-------------------------------------------
Each line is a JSON object with ``"v"`` (protocol version), ``"type"``, ``"time"`` (Unix
seconds) and the fields of one event class below. Non-finite numbers are written as
``null``. A reader should ignore unknown types and unknown fields (later versions only
add). A run's stream is::

    status*  run_started  (status | step | epoch_end | log)*  evaluation?  comparison?  exported*
        finished | cancelled | failed

``comparison`` comes only from a fine-tune (``init_model``): accuracy of the model before
and after on the validation data and on the held-out ``compare_data``.

``failed`` may also come before ``run_started`` (bad data or config); ``run_dir`` is then
null. ``cancelled`` means the run saved its state and ``python -m training --resume RUN_DIR``
continues it exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

PROTOCOL_VERSION = 1


@dataclass
class Event:
    type: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        d = {"v": PROTOCOL_VERSION, "type": self.type, "time": round(time.time(), 3)}
        d.update(_finite(dataclasses.asdict(self)))
        return d

    def to_json(self) -> str:
        """One line of JSON (no NaN/Infinity: such values become null)."""
        return json.dumps(self.to_dict(), allow_nan=False, separators=(",", ":"))


@dataclass
class Status(Event):
    """Preparation work before or after training: loading data, downloading, evaluating."""

    type: ClassVar[str] = "status"
    stage: str = ""          # "data", "download", "evaluate", "export"
    message: str = ""
    done: int | None = None
    total: int | None = None


@dataclass
class Log(Event):
    """A message for the user (device fallback, missing validation split, ...)."""

    type: ClassVar[str] = "log"
    level: str = "info"      # "info" or "warning"
    message: str = ""


@dataclass
class RunStarted(Event):
    type: ClassVar[str] = "run_started"
    run_dir: str = ""
    recipe: str = ""
    arch: str = ""
    num_parameters: int = 0
    device: str = "cpu"
    resumed: bool = False
    start_epoch: int = 0     # epochs already completed (resume)
    start_step: int = 0      # global steps already completed (resume)
    epochs: int = 0
    steps_per_epoch: int = 0
    total_steps: int = 0
    batch_size: int = 0
    n_train: int = 0
    n_val: int = 0
    n_test: int = 0
    labels: list[str] = field(default_factory=list)
    data: str = ""
    test_data: str = ""
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class Step(Event):
    """Training progress within an epoch (rate-limited by ``step_event_interval``)."""

    type: ClassVar[str] = "step"
    epoch: int = 0           # 1-based epoch in progress
    epochs: int = 0
    step: int = 0            # global step count after this step
    total_steps: int = 0
    epoch_step: int = 0      # steps done in this epoch
    steps_per_epoch: int = 0
    loss: float = 0.0        # mean training loss since the previous Step event
    lr: float = 0.0
    images_per_s: float = 0.0
    elapsed_s: float = 0.0
    eta_s: float | None = None


@dataclass
class EpochEnd(Event):
    type: ClassVar[str] = "epoch_end"
    epoch: int = 0           # 1-based
    epochs: int = 0
    step: int = 0
    total_steps: int = 0
    train_loss: float = 0.0
    train_accuracy: float = 0.0
    val_loss: float | None = None
    val_accuracy: float | None = None
    lr: float = 0.0
    temperature: float = 1.0
    is_best: bool = False
    best_epoch: int = 0
    best_val_accuracy: float | None = None
    epoch_time_s: float = 0.0
    images_per_s: float = 0.0
    elapsed_s: float = 0.0
    eta_s: float | None = None
    last_model: str = ""
    best_model: str = ""


@dataclass
class Evaluation(Event):
    """The final report on the test data (or on validation data when none was given)."""

    type: ClassVar[str] = "evaluation"
    split: str = "test"      # "test" or "validation"
    data: str = ""
    n: int = 0
    accuracy: float = 0.0
    macro_f1: float = 0.0
    ece: float = 0.0
    misclassified: int = 0
    report: str = ""         # path of report.json
    plots: list[str] = field(default_factory=list)


@dataclass
class Comparison(Event):
    """A fine-tune's before/after figures. ``before`` and ``after`` map a data name
    (``"validation"``, ``"held_out"``) to ``{"n", "accuracy", "correct"}``."""

    type: ClassVar[str] = "comparison"
    init_model: str = ""
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)   # data name -> description


@dataclass
class Exported(Event):
    type: ClassVar[str] = "exported"
    format: str = ""
    path: str | None = None
    error: str | None = None


@dataclass
class Finished(Event):
    type: ClassVar[str] = "finished"
    run_dir: str = ""
    reason: str = "completed"  # "completed" or "early_stopping"
    epochs_done: int = 0
    best_epoch: int = 0
    best_model: str = ""
    last_model: str = ""
    report: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    exports: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0


@dataclass
class Cancelled(Event):
    type: ClassVar[str] = "cancelled"
    run_dir: str | None = None
    epoch: int = 0           # 1-based epoch that was in progress
    step: int = 0
    resumable: bool = False
    message: str = ""


@dataclass
class Failed(Event):
    type: ClassVar[str] = "failed"
    kind: str = "internal"   # config, data, download, nan_loss, out_of_memory, io, internal
    message: str = ""        # one line
    hint: str = ""
    run_dir: str | None = None
    resumable: bool = False


EVENT_TYPES: dict[str, type[Event]] = {c.type: c for c in (
    Status, Log, RunStarted, Step, EpochEnd, Evaluation, Comparison, Exported, Finished, Cancelled, Failed)}
TERMINAL_TYPES = ("finished", "cancelled", "failed")


def parse_event(line: str) -> Event | None:
    """Parse one protocol line back into its event; None for blank lines, unknown types or
    a newer protocol version (a reader must not guess at those)."""
    line = line.strip()
    if not line:
        return None
    try:
        d = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(d, dict) or not isinstance(d.get("v"), int) or d["v"] > PROTOCOL_VERSION:
        return None
    cls = EVENT_TYPES.get(d.get("type"))
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
