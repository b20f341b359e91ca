"""How a run ends when it cannot go on: :class:`TrainingError` and the one-line
:class:`~training.events.Failed` event every exception becomes.

:func:`training.run.train` never raises for bad data, NaN loss or out-of-memory: it ends its
stream with the event :func:`failed_event` makes, and keeps a traceback only for the
unexpected (``error.log`` in the run folder).
"""

from __future__ import annotations

import errno
import re
import traceback
from pathlib import Path

from mnist_desktop.core.data import DataError
from training.config import ConfigError
from training.events import Failed


class TrainingError(Exception):
    """Stops a run with a :class:`Failed` event of ``kind`` and a one-line ``message``."""

    def __init__(self, kind: str, message: str, hint: str = ""):
        super().__init__(message)
        self.kind, self.message, self.hint = kind, message, hint


class RunCancelled(Exception):
    """Raised internally when ``should_cancel`` returns True outside the step loop."""


def failed_event(e: Exception, run_dir: Path | None, resumable: bool, device: str | None,
                 batch_size: int) -> Failed:
    """The :class:`Failed` event that ends a run stopped by ``e``.

    Parameters
    ----------
    e
        The exception, still being handled (its traceback goes to ``error.log`` when it is
        none of the known kinds).
    run_dir
        The run folder, or None when none was made yet.
    resumable
        Whether the folder holds a ``state.pt`` to resume from.
    device, batch_size
        For the out-of-memory message and hint.
    """
    dir_str = str(run_dir) if run_dir is not None else None
    full = disk_full_error(e)
    if full is not None and not isinstance(e, TrainingError):
        return _disk_full_failure(full, run_dir, resumable)
    if isinstance(e, TrainingError):
        return Failed(kind=e.kind, message=e.message, hint=e.hint, run_dir=dir_str, resumable=resumable)
    if isinstance(e, (DataError, ConfigError)):
        kind = "data" if isinstance(e, DataError) else "config"
        return Failed(kind=kind, message=str(e), run_dir=dir_str, resumable=resumable)
    return _unexpected_failure(e, run_dir, resumable, device, batch_size)


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "os error 28)", "os error 122)")


def disk_full_error(e: BaseException) -> BaseException | None:
    """The error in ``e``'s chain (itself, its cause or context) that says the disk is full
    (ENOSPC, or a quota), or None. Libraries that wrap the OSError (safetensors, torch's
    zip writer, :class:`~mnist_desktop.core.checkpoint.CheckpointError`) keep only its text."""
    chain: list[BaseException] = []
    while e is not None and all(e is not c for c in chain):
        chain.append(e)
        e = e.__cause__ or e.__context__
    for c in chain:        # the OSError itself first: it names the file
        if isinstance(c, OSError) and c.errno in _FULL_ERRNOS:
            return c
    return next((c for c in chain if any(t in str(c) for t in _FULL_TEXTS)), None)


def _disk_full_failure(e: BaseException, run_dir: Path | None, resumable: bool) -> Failed:
    name = Path(e.filename).name if isinstance(e, OSError) and e.filename else ""
    name = re.sub(r"^\.(.+)\.[^.]+\.tmp$", r"\1", name)   # atomic writes go through .NAME.xxxx.tmp
    where = f" in {run_dir}" if run_dir is not None else ""
    what = f"cannot write {name}{where}" if name else f"cannot write the run files{where}"
    if resumable:
        hint = f"free some space, then continue with --resume {run_dir} (the last saved epoch is intact)"
    else:
        hint = "free some space and start the run again"
    reason = e.strerror if isinstance(e, OSError) and e.strerror else "No space left on device"
    return Failed(kind="io", message=f"disk full: {what} ({reason})", hint=hint,
                  run_dir=str(run_dir) if run_dir is not None else None, resumable=resumable)


def _unexpected_failure(e: Exception, run_dir: Path | None, resumable: bool, device: str | None,
                        batch_size: int) -> Failed:
    import torch

    dir_str = str(run_dir) if run_dir is not None else None
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in first.lower() or isinstance(e, MemoryError):
        bs = batch_size
        return Failed(kind="out_of_memory", message=f"out of memory on {device or 'the device'} "
                      f"(batch size {bs})", hint=f"try a smaller --batch-size (e.g. {max(1, bs // 2)}) "
                      "or --device cpu", run_dir=dir_str, resumable=resumable)
    from mnist_desktop.core.checkpoint import CheckpointError

    if isinstance(e, (OSError, CheckpointError)):
        reason = e.strerror if isinstance(e, OSError) and e.strerror else first
        return Failed(kind="io", message=f"cannot write run files: {reason}",
                      hint="check free disk space and permissions of the output folder",
                      run_dir=dir_str, resumable=resumable)
    hint = ""
    if run_dir is not None:
        try:
            (run_dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
            hint = f"details in {run_dir / 'error.log'}"
        except OSError:
            pass
    return Failed(kind="internal", message=f"{type(e).__name__}: {first}", hint=hint,
                  run_dir=dir_str, resumable=resumable)
