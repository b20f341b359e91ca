"""The run folder and the resumable state of a run.

Run folder (``<output>/<name>-<YYYYmmdd-HHMMSS>/``)::

    config.json        the TrainConfig of the run
    progress.jsonl     every event, one JSON line each (appended on resume)
    last.safetensors   model after the latest epoch   } mnist-desktop model files with full
    best.safetensors   best model on validation data  } ModelMeta (core.checkpoint)
    state.pt           optimizer/scheduler/RNG/epoch/early-stopping state for --resume
    report.json        final evaluation (+ report.txt, curves.png, *_confusion.png,
                       *_misclassified.png), exports (best.torchscript.pt, best.onnx)

All files are written atomically. ``state.pt`` is written at every epoch end and when a
run is cancelled (then mid-epoch, including the epoch's shuffle order), and read back with
``torch.load(weights_only=True)``; resuming restores model, optimizer, scheduler, every
random generator and the loss accumulators, so a resumed run produces the same losses and
weights as an uninterrupted one (on CPU, same seed, same thread count).
"""

from __future__ import annotations

import errno
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_desktop.core.data import DataError
from training.clock import Clock
from training.config import ConfigError, TrainConfig
from training.failures import TrainingError

if TYPE_CHECKING:
    from training.session import Session

STATE_FORMAT = "mnist-desktop-train-state"
STATE_VERSION = 1


@dataclass
class Progress:
    """Bookkeeping that survives a resume (stored as JSON in state.pt)."""

    epoch: int = 0              # completed epochs
    step_in_epoch: int = 0      # steps done in the epoch in progress (mid-epoch state)
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_accuracy: float | None = None
    best_val_loss: float | None = None
    bad_epochs: int = 0
    elapsed_s: float = 0.0
    stop_reason: str = ""       # "", "completed", "early_stopping"


def new_run_dir(cfg: TrainConfig) -> Path:
    """A fresh, empty run folder ``<output>/<name>-<YYYYmmdd-HHMMSS>[-N]``."""
    base = Path(cfg.output).expanduser()
    stem = f"{cfg.name or cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    for i in range(1000):
        path = base / (stem if i == 0 else f"{stem}-{i + 1}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
        except OSError as e:
            full = "disk full: " if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
            raise TrainingError("io", f"{full}cannot create run folder {path}: {e.strerror or e}") from None
    raise TrainingError("io", f"cannot create a run folder under {base}")


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` atomically as JSON, non-finite numbers as null."""
    from mnist_desktop.core.checkpoint import atomic_write_bytes
    from training.events import _finite

    atomic_write_bytes(path, json.dumps(_finite(obj), indent=1, allow_nan=False).encode("utf-8"))


def read_config(run_dir: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` stored in a run folder."""
    path = Path(run_dir) / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot resume: no readable config.json in {run_dir} ({e.strerror or e})") from None
    return TrainConfig.from_json(text)


def save_state(s: Session) -> None:
    """Write the session's resumable state to ``state.pt`` in its run folder."""
    import dataclasses

    import torch

    from mnist_desktop.core.checkpoint import atomic_write

    s.prog.elapsed_s = s.clock.elapsed()
    meta = {"progress": dataclasses.asdict(s.prog), "seen": s.seen, "fingerprint": s.fingerprint,
            "n_train": s.n_train}
    state = {
        "format": STATE_FORMAT, "version": STATE_VERSION,
        "meta": json.dumps(meta),
        "model": {k: v.detach().cpu() for k, v in s.model.state_dict().items()},
        "ema": {k: v.detach().cpu() for k, v in s.ema.state_dict().items()} if s.ema is not None else None,
        "optimizer": s.optimizer.state_dict(),
        "scheduler": s.scheduler.state_dict() if s.scheduler is not None else {},
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state() if s.gen_aug.device.type == "cuda" else None,
        "gen_shuffle": s.gen_shuffle.get_state(),
        "gen_aug": s.gen_aug.get_state(),
        "gen_aug_device": s.gen_aug.device.type,
        "perm": s.perm,
        "loss_sum": s.loss_sum.detach().cpu().clone(),
        "correct": s.correct.detach().cpu().clone(),
    }
    # Atomic (temporary file, fsync, rename): a failed save leaves the last good state.pt.
    atomic_write(s.dir / "state.pt", lambda tmp: torch_save(state, tmp))


class _KeepsWriteErrors:
    """A binary file for ``torch.save`` that remembers the OSError of a failed write."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` that reports a failed write as the OSError it was.

    torch's zip writer swallows the error of a failed write (a full disk) and raises a
    RuntimeError such as ``[enforce fail at inline_container.cc:672] . unexpected pos``.
    """
    import torch

    with open(path, "wb") as f:
        out = _KeepsWriteErrors(f)
        try:
            torch.save(obj, out)
        except RuntimeError as e:
            text = str(e)
            if out.error is not None:
                raise OSError(out.error.errno, out.error.strerror, str(path)) from e
            if "No space left" in text or ("inline_container" in text or "PytorchStreamWriter" in text) \
                    and _nearly_full(Path(path).parent):
                raise OSError(errno.ENOSPC, "No space left on device", str(path)) from e
            if "inline_container" in text or "PytorchStreamWriter" in text:
                raise OSError(errno.EIO, f"could not write the file ({text.strip().splitlines()[0][:120]})",
                              str(path)) from e
            raise


def _nearly_full(folder: Path) -> bool:
    import shutil

    try:
        return shutil.disk_usage(folder).free < (1 << 20)
    except OSError:
        return False


def load_state(run_dir: Path) -> dict[str, Any]:
    """The state :func:`save_state` wrote to ``run_dir``, its metadata parsed.

    Raises
    ------
    ConfigError
        When the file is missing, damaged, of another format or of a newer version.
    """
    import torch

    path = run_dir / "state.pt"
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # refuses pickled code; corrupt files raise various types
        raise ConfigError(f"cannot resume: {path} is not a readable training state "
                          f"({(str(e).strip().splitlines() or [type(e).__name__])[0][:120]})") from None
    if not isinstance(st, dict) or st.get("format") != STATE_FORMAT:
        raise ConfigError(f"cannot resume: {path} is not an mnist-desktop training state")
    if st.get("version", 0) > STATE_VERSION:
        raise ConfigError(f"cannot resume: {path} was written by a newer version")
    try:
        st["meta"] = json.loads(st["meta"])
        st["meta"]["progress"]
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"cannot resume: {path} has damaged metadata") from None
    return st


def restore_state(s: Session, st: dict[str, Any]) -> list[str]:
    """Continue session ``s`` from the state ``st`` (of :func:`load_state`); returns warnings
    for the user.

    Raises
    ------
    DataError
        When the run's training data is not the data the state was saved with.
    ConfigError
        When the state lacks the weight average the config asks for.
    """
    import torch

    meta = st["meta"]
    if meta.get("fingerprint") != s.fingerprint or meta.get("n_train") != s.n_train:
        raise DataError(f"cannot resume: the training data differs from the data {s.dir.name} started with")
    s.model.load_state_dict(st["model"])
    if s.ema is not None:
        if st.get("ema") is None:
            raise ConfigError(f"cannot resume: {s.dir.name} was saved without the weight average "
                              "(ema_decay) this config asks for")
        s.ema.load_state_dict(st["ema"])
    s.optimizer.load_state_dict(st["optimizer"])
    if s.scheduler is not None and st["scheduler"]:
        s.scheduler.load_state_dict(st["scheduler"])
    s.prog = Progress(**meta["progress"])
    s.clock = Clock(s.prog.elapsed_s)
    torch.set_rng_state(st["rng_cpu"])
    s.gen_shuffle.set_state(st["gen_shuffle"])
    warnings = []
    if st["gen_aug_device"] == torch.device(s.device).type:
        s.gen_aug.set_state(st["gen_aug"])
    else:
        warnings.append(f"resuming on {s.device} after {st['gen_aug_device']}: augmentation "
                        "continues with a fresh random stream")
    if s.cuda and st.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(st["rng_cuda"])
    if st["perm"] is not None:  # cancelled mid-epoch
        s.perm = st["perm"]
        s.loss_sum = st["loss_sum"].to(s.device)
        s.correct = st["correct"].to(s.device)
        s.seen = int(meta["seen"])
    return warnings
