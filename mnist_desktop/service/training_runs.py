"""Training runs as the app sees them: the history in the user data folder, each run's state
and curves, dataset choices, and how a run is started. Qt-free (the training panel shows
it; tests drive it headless).

Every run is one folder under :func:`mnist_desktop.core.paths.user_runs_dir` written by
the training child (layout in :mod:`training.state`): ``config.json``, ``progress.jsonl``
(every protocol event, appended on resume), ``best.safetensors`` / ``last.safetensors``,
``state.pt`` and, once finished, ``report.json``. This module only *reads* those, plus one
file of its own, ``owner.json`` (the process id of the child the app started), so that a
run whose process died (app closed or crashed, machine rebooted) is told apart from one
still training: it is *interrupted* and, when it saved an epoch, *resumable*.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from mnist_desktop.core.atomic_io import atomic_write_bytes
from training.config import ConfigError, TrainConfig
from training.events import TERMINAL_TYPES
from training.recipes import RECIPES, recipe_config

# --------------------------------------------------------------------------- states

RUNNING = "running"
FINISHED = "finished"
CANCELLED = "cancelled"
FAILED = "failed"
INTERRUPTED = "interrupted"
STARTING = "starting"        # a folder without events yet (the child is loading data)

STATE_TEXT = {RUNNING: "running", FINISHED: "finished", CANCELLED: "cancelled", FAILED: "failed",
              INTERRUPTED: "interrupted", STARTING: "starting"}

OWNER_FILE = "owner.json"
PENDING_DIR = ".pending"     # configs handed to children that have not made their run folder yet


# --------------------------------------------------------------------------- datasets

@dataclass(frozen=True)
class DatasetChoice:
    """One entry of the panel's dataset list."""

    key: str
    label: str
    needs_folder: bool = False   # the user picks a folder (image folder)
    download: bool = False       # torchvision: read from / downloaded into the data root
    hint: str = ""


BUNDLED = "bundled"
IMAGE_FOLDER = "folder"
CORRECTIONS = "corrections"

DATASET_CHOICES: tuple[DatasetChoice, ...] = (
    DatasetChoice(BUNDLED, "MNIST 5k (bundled, offline)",
                  hint="5,000 MNIST training digits shipped with the app"),
    DatasetChoice("mnist", "MNIST (60k, download)", download=True),
    DatasetChoice("fashion-mnist", "Fashion-MNIST (download)", download=True),
    DatasetChoice("kmnist", "KMNIST (download)", download=True),
    DatasetChoice("emnist-digits", "EMNIST digits (download)", download=True),
    DatasetChoice("emnist-letters", "EMNIST letters (download)", download=True),
    DatasetChoice("emnist-balanced", "EMNIST balanced (download)", download=True),
    DatasetChoice(IMAGE_FOLDER, "Image folder (one sub-folder per label)", needs_folder=True,
                  hint="FOLDER/<label>/*.png: any labels, letters too"),
    DatasetChoice(CORRECTIONS, "My corrections + MNIST 5k",
                  hint="your corrected drawings mixed with the bundled digits"),
)


def dataset_choice(key: str) -> DatasetChoice:
    for c in DATASET_CHOICES:
        if c.key == key:
            return c
    raise ConfigError(f"unknown dataset {key!r}")


def bundled_data_dir() -> Path:
    """The bundled MNIST 5k training subset (IDX files)."""
    from mnist_desktop.core.paths import resources_dir
    return resources_dir() / "data" / "mnist-5k"


def default_data_root() -> Path:
    """Where downloaded datasets live (the same folder the training CLI uses)."""
    from mnist_desktop.core.paths import user_data_dir
    return user_data_dir() / "datasets"


def dataset_fields(key: str, folder: str = "", corrections: str = "") -> dict[str, Any]:
    """The :class:`TrainConfig` data fields (``data``, ``extra_data``, ``data_root``,
    ``split``) for a dataset choice.

    Raises
    ------
    ConfigError
        A missing folder for an image folder, or an empty corrections folder.
    """
    choice = dataset_choice(key)
    base = {"data": str(bundled_data_dir()), "extra_data": [], "split": "train-5k", "data_root": "",
            "labels": []}
    if choice.download:
        return {**base, "data": f"torchvision:{key}", "split": "", "data_root": str(default_data_root())}
    if key == IMAGE_FOLDER:
        if not folder:
            raise ConfigError("choose the image folder (one sub-folder per label)")
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise ConfigError(f"image folder not found: {path}")
        labels = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(labels) < 2:
            raise ConfigError(f"{path} needs at least two label sub-folders (it has {len(labels)})")
        return {**base, "data": str(path), "split": ""}
    if key == CORRECTIONS:
        from mnist_desktop.core.corrections import list_corrections
        from mnist_desktop.core.paths import corrections_dir

        path = Path(corrections or corrections_dir())
        try:
            n = len(list_corrections(path))
        except Exception:   # an unreadable folder counts as no corrections
            n = 0
        if n == 0:
            raise ConfigError(f"no corrected drawings yet in {path}: correct a prediction first")
        # The base set's labels (0..9) so that corrections of any subset of digits fit.
        return {**base, "extra_data": [f"corrections:{path}"], "labels": [str(i) for i in range(10)]}
    return base


def dataset_key_of(cfg: TrainConfig) -> str:
    """The dataset choice a config was made from (for showing a run's config again)."""
    if cfg.data.startswith("torchvision:"):
        return cfg.data.split(":", 1)[1]
    if any(s.startswith("corrections:") for s in cfg.extra_data):
        return CORRECTIONS
    try:
        if Path(cfg.data).resolve() == bundled_data_dir().resolve():
            return BUNDLED
    except OSError:
        pass
    return IMAGE_FOLDER


def recipe_names() -> list[str]:
    """The five reference recipes and the flagship, in the CLI's order."""
    return list(RECIPES)


def recipe_summary(name: str) -> str:
    return RECIPES[name].summary


def new_config(recipe: str = "mlp", dataset: str = BUNDLED, folder: str = "") -> TrainConfig:
    """A recipe's config on a dataset, ready for the panel's form."""
    return recipe_config(recipe, **dataset_fields(dataset, folder), output=str(runs_dir()))


# --------------------------------------------------------------------------- reading runs

def runs_dir() -> Path:
    from mnist_desktop.core.paths import user_runs_dir
    return user_runs_dir()


def read_events(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every event of a ``progress.jsonl`` (a line cut short by a crash or a full disk is
    skipped); [] when the file is missing or unreadable."""
    try:
        raw = Path(path).read_bytes()
    except OSError:
        return []
    events = []
    for line in raw.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and isinstance(ev.get("type"), str):
            events.append(ev)
    return events


@dataclass
class Curves:
    """The curves of one run, from its events: per epoch, and per step event."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float | None] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    train_accuracy: list[float | None] = field(default_factory=list)
    val_accuracy: list[float | None] = field(default_factory=list)
    epoch_lr: list[float | None] = field(default_factory=list)
    epoch_images_per_s: list[float | None] = field(default_factory=list)
    epoch_elapsed_s: list[float | None] = field(default_factory=list)
    step: list[int] = field(default_factory=list)
    step_epoch: list[float] = field(default_factory=list)   # fractional epoch of each step event
    step_loss: list[float | None] = field(default_factory=list)
    step_lr: list[float | None] = field(default_factory=list)
    steps_per_epoch: int = 0
    images_per_s: float | None = None      # latest
    eta_s: float | None = None             # latest (None once the run has ended)
    # Bumped whenever the per-epoch / per-step curves change (also when a resume replaces
    # points and the count stays the same), so a view redraws exactly what changed.
    epoch_revision: int = 0
    step_revision: int = 0

    def add(self, ev: dict[str, Any]) -> bool:
        """Take one event; True when a curve changed. A resumed run repeats the steps after
        its last saved state: a repeated epoch or step replaces the earlier point."""
        t = ev.get("type")
        if t == "run_started":
            self.steps_per_epoch = int(ev.get("steps_per_epoch") or 0) or self.steps_per_epoch
            start = int(ev.get("start_step") or 0)
            self._truncate_steps(start)
            self._truncate_epochs(int(ev.get("start_epoch") or 0))
            self.epoch_revision += 1
            self.step_revision += 1
            return True
        if t == "step":
            step = int(ev.get("step") or 0)
            if self.step and step <= self.step[-1]:
                self._truncate_steps(step - 1)
            spe = int(ev.get("steps_per_epoch") or self.steps_per_epoch or 1)
            self.step.append(step)
            self.step_epoch.append(step / max(spe, 1))
            self.step_loss.append(_num(ev.get("loss")))
            self.step_lr.append(_num(ev.get("lr")))
            self.images_per_s = _num(ev.get("images_per_s"))
            self.eta_s = _num(ev.get("eta_s"))
            self.step_revision += 1
            return True
        if t == "epoch_end":
            epoch = int(ev.get("epoch") or 0)
            self._truncate_epochs(epoch - 1)
            self.epoch.append(epoch)
            self.train_loss.append(_num(ev.get("train_loss")))
            self.val_loss.append(_num(ev.get("val_loss")))
            self.train_accuracy.append(_num(ev.get("train_accuracy")))
            self.val_accuracy.append(_num(ev.get("val_accuracy")))
            self.epoch_lr.append(_num(ev.get("lr")))
            self.epoch_images_per_s.append(_num(ev.get("images_per_s")))
            self.epoch_elapsed_s.append(_num(ev.get("elapsed_s")))
            self.images_per_s = _num(ev.get("images_per_s")) or self.images_per_s
            self.eta_s = _num(ev.get("eta_s"))
            self.epoch_revision += 1
            return True
        if t in TERMINAL_TYPES:
            self.eta_s = None
        return False

    def _truncate_steps(self, last_kept: int) -> None:
        n = sum(1 for s in self.step if s <= last_kept)
        for name in ("step", "step_epoch", "step_loss", "step_lr"):
            del getattr(self, name)[n:]

    def _truncate_epochs(self, last_kept: int) -> None:
        n = sum(1 for e in self.epoch if e <= last_kept)
        for name in ("epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy", "epoch_lr",
                     "epoch_images_per_s", "epoch_elapsed_s"):
            del getattr(self, name)[n:]

    def smoothed_step_loss(self, weight: float = 0.9) -> list[float | None]:
        """Exponential moving average of the step losses, bias-corrected (as TensorBoard's
        smoothing), so the first points are not pulled towards zero."""
        out: list[float | None] = []
        avg, norm = 0.0, 0.0
        for v in self.step_loss:
            if v is None:
                out.append(None)
                continue
            avg = weight * avg + (1 - weight) * v
            norm = weight * norm + (1 - weight)
            out.append(avg / norm)
        return out


def curves_from_events(events: Iterable[dict[str, Any]]) -> Curves:
    c = Curves()
    for ev in events:
        c.add(ev)
    return c


@dataclass
class RunRecord:
    """One run folder as the history lists it."""

    path: Path
    state: str
    message: str = ""                 # the reason for failed / interrupted, the end of a cancel
    config: dict[str, Any] = field(default_factory=dict)
    recipe: str = ""
    data: str = ""
    created: float = 0.0              # first event's time (or the folder's mtime)
    epochs: int = 0
    epochs_done: int = 0
    best_epoch: int = 0
    best_val_accuracy: float | None = None
    test_accuracy: float | None = None
    resumable: bool = False
    has_best_model: bool = False

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def best_model(self) -> Path:
        return self.path / "best.safetensors"

    @property
    def state_text(self) -> str:
        text = STATE_TEXT.get(self.state, self.state)
        if self.state in (INTERRUPTED, CANCELLED, FAILED) and self.resumable:
            text += " \u2014 resumable"
        return text

    def summary(self) -> str:
        """One line for the history list."""
        acc = f", best val {100 * self.best_val_accuracy:.2f}%" if self.best_val_accuracy is not None else ""
        return f"{self.name}  [{self.state_text}]  {self.epochs_done}/{self.epochs} epochs{acc}"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (and, where the OS tells, is a training run)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        try:
            import ctypes

            handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # type: ignore[attr-defined]
            if not handle:
                return False
            code = ctypes.c_ulong()
            ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))  # type: ignore[attr-defined]
            ctypes.windll.kernel32.CloseHandle(handle)  # type: ignore[attr-defined]
            return code.value == 259   # STILL_ACTIVE
        except Exception:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():   # a recycled pid of another program is not our run
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            return True
        if not any(a == b"train" or a.endswith(b"training") for a in args):
            return False
        try:   # a zombie (exited, not yet reaped by the app) trains no more
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return False
        except (OSError, IndexError):
            pass
    return True


def read_run(path: str | os.PathLike, live: Iterable[str | os.PathLike] = ()) -> RunRecord:
    """The state of run folder ``path`` from its events, its files and whether its process
    is alive (``owner.json``, or ``path`` in ``live``: runs this app is following)."""
    path = Path(path)
    events = read_events(path / "progress.jsonl")
    config: dict[str, Any] = {}
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    rec = RunRecord(path=path, state=STARTING, config=config if isinstance(config, dict) else {})
    rec.recipe = str(rec.config.get("recipe", ""))
    rec.data = str(rec.config.get("data", ""))
    rec.epochs = int(rec.config.get("epochs") or 0)
    try:
        rec.created = float(events[0]["time"]) if events else path.stat().st_mtime
    except (OSError, KeyError, TypeError, ValueError):
        rec.created = 0.0
    rec.has_best_model = rec.best_model.is_file()
    has_state = (path / "state.pt").is_file()
    # The last session of the run: events after its last run_started.
    last_start = max((i for i, e in enumerate(events) if e["type"] == "run_started"), default=-1)
    terminal = None
    for ev in events:
        if ev["type"] == "epoch_end":
            rec.epochs_done = max(rec.epochs_done, int(ev.get("epoch") or 0))
            if ev.get("best_val_accuracy") is not None:
                rec.best_val_accuracy = _num(ev.get("best_val_accuracy"))
                rec.best_epoch = int(ev.get("best_epoch") or 0)
        elif ev["type"] == "evaluation" and ev.get("split") == "test":
            rec.test_accuracy = _num(ev.get("accuracy"))
        elif ev["type"] == "run_started":
            rec.epochs = int(ev.get("epochs") or rec.epochs)
    for ev in events[max(last_start, 0):]:
        if ev["type"] in TERMINAL_TYPES:
            terminal = ev
    live_set = {_norm(p) for p in live}
    alive = _norm(path) in live_set or _owner_alive(path)
    if terminal is not None:
        rec.state = terminal["type"]
        if rec.state == FINISHED:
            rec.epochs_done = int(terminal.get("epochs_done") or rec.epochs_done)
            rec.message = f"finished ({terminal.get('reason', 'completed')})"
        elif rec.state == CANCELLED:
            rec.resumable = has_state
            rec.message = "cancelled; Resume continues it" if has_state else "cancelled before the first epoch"
        else:
            rec.resumable = bool(terminal.get("resumable")) and has_state
            rec.message = str(terminal.get("message") or "failed")
            hint = terminal.get("hint")
            if hint:
                rec.message += f" ({hint})"
    elif alive:
        rec.state = RUNNING if last_start >= 0 else STARTING
    elif events or has_state:
        rec.state = INTERRUPTED
        rec.resumable = has_state
        where = f"after epoch {rec.epochs_done}" if rec.epochs_done else "before its first epoch ended"
        rec.message = (f"the training process stopped {where} without saying why (app closed or crashed)"
                       + ("; Resume continues from there" if has_state else ""))
    else:
        rec.state = INTERRUPTED
        rec.message = "the run stopped before it wrote anything"
    return rec


def _owner_alive(path: Path) -> bool:
    try:
        owner = json.loads((path / OWNER_FILE).read_text(encoding="utf-8"))
        return process_alive(int(owner.get("pid", 0)))
    except (OSError, ValueError, TypeError, AttributeError):
        return False


def _norm(p: str | os.PathLike) -> str:
    return os.path.normcase(os.path.abspath(os.fspath(p)))


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "config.json").is_file() or (path / "progress.jsonl").is_file())


class RunHistory:
    """The run folders under ``root`` (default: the user data folder's ``runs/``).

    Parameters
    ----------
    root
        The folder whose sub-folders are runs; the panel's runs are started with
        ``--output root``.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else runs_dir()

    def runs(self, live: Iterable[str | os.PathLike] = ()) -> list[RunRecord]:
        """Every run, newest first."""
        live = list(live)
        try:
            folders = [p for p in self.root.iterdir() if not p.name.startswith(".") and is_run_folder(p)]
        except OSError:
            return []
        records = [read_run(p, live) for p in folders]
        return sorted(records, key=lambda r: (r.created, r.name), reverse=True)

    def get(self, name_or_path: str | os.PathLike, live: Iterable[str | os.PathLike] = ()) -> RunRecord:
        path = Path(name_or_path)
        if not path.is_absolute():
            path = self.root / path
        return read_run(path, live)

    def curves(self, run: RunRecord | str | os.PathLike) -> Curves:
        path = run.path if isinstance(run, RunRecord) else Path(run)
        return curves_from_events(read_events(path / "progress.jsonl"))

    def delete(self, run: RunRecord | str | os.PathLike, live: Iterable[str | os.PathLike] = ()) -> None:
        """Delete a run folder (not a running one; only folders inside :attr:`root`).

        Raises
        ------
        ValueError
            The run is running, or the path is not a run folder of this history.
        OSError
            The folder could not be removed (the message names it).
        """
        path = run.path if isinstance(run, RunRecord) else Path(run)
        if not path.is_absolute():
            path = self.root / path
        if _norm(path.parent) != _norm(self.root) or not is_run_folder(path):
            raise ValueError(f"{path} is not a run folder in {self.root}")
        if read_run(path, live).state in (RUNNING, STARTING) and (_owner_alive(path) or
                                                                   _norm(path) in {_norm(p) for p in live}):
            raise ValueError(f"{path.name} is still running: cancel it first")
        shutil.rmtree(path)

    # ------------------------------------------------------------------ starting runs
    def prepare(self, cfg: TrainConfig) -> list[str]:
        """Write ``cfg`` (its output set to :attr:`root`) for a child to read and return the
        ``mnist-desktop train`` arguments that start it: ``--config FILE``.

        The child creates the run folder and writes the config there as ``config.json``;
        the file handed over lives in ``root/.pending`` until :meth:`forget_pending`.
        """
        cfg = cfg.replace(output=str(self.root))
        pending = self.root / PENDING_DIR
        pending.mkdir(parents=True, exist_ok=True)
        path = pending / f"{cfg.name or cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.json"
        atomic_write_bytes(path, cfg.to_json().encode("utf-8"))
        return ["--config", str(path)]

    @staticmethod
    def forget_pending(train_args: Sequence[str]) -> None:
        """Remove the config file :meth:`prepare` wrote (the run folder has its own copy)."""
        args = list(train_args)
        if "--config" in args:
            try:
                Path(args[args.index("--config") + 1]).unlink(missing_ok=True)
            except (OSError, IndexError):
                pass

    @staticmethod
    def resume_args(run: RunRecord | str | os.PathLike) -> list[str]:
        """``mnist-desktop train`` arguments that continue a run exactly where it stopped."""
        path = run.path if isinstance(run, RunRecord) else Path(run)
        return ["--resume", str(path)]

    @staticmethod
    def mark_owner(run_dir: str | os.PathLike, pid: int) -> None:
        """Record which process trains ``run_dir`` (a dead one makes the run interrupted)."""
        try:
            atomic_write_bytes(Path(run_dir) / OWNER_FILE,
                               json.dumps({"pid": int(pid), "since": time.time()}).encode("utf-8"))
        except OSError:
            pass   # a full disk: the run reports it itself


# --------------------------------------------------------------------------- export

CSV_COLUMNS = ("run", "kind", "epoch", "step", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
               "smoothed_loss", "lr", "images_per_s", "elapsed_s")


def curves_csv(runs: Sequence[tuple[str, Curves]]) -> str:
    """The curves of one or more runs as CSV text: one row per epoch (``kind=epoch``) and
    per step event (``kind=step``), with the run's name in the first column."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for name, c in runs:
        for i, e in enumerate(c.epoch):
            w.writerow([name, "epoch", e, "", _cell(c.train_loss[i]), _cell(c.train_accuracy[i]),
                        _cell(c.val_loss[i]), _cell(c.val_accuracy[i]), "", _cell(c.epoch_lr[i]),
                        _cell(c.epoch_images_per_s[i]), _cell(c.epoch_elapsed_s[i])])
        smooth = c.smoothed_step_loss()
        for i, s in enumerate(c.step):
            w.writerow([name, "step", f"{c.step_epoch[i]:.4f}", s, _cell(c.step_loss[i]), "", "", "",
                        _cell(smooth[i]), _cell(c.step_lr[i]), "", ""])
    return out.getvalue()


def write_curves_csv(path: str | os.PathLike, runs: Sequence[tuple[str, Curves]]) -> None:
    atomic_write_bytes(Path(path), curves_csv(runs).encode("utf-8"))


def format_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "--:--"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _cell(v: float | None) -> str:
    return "" if v is None else f"{v:.6g}"


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None
