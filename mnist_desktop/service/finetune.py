"""Correct and learn: "Fine-tune on my handwriting" as the app sees it. Qt-free.

:func:`plan_finetune` turns the user's corrections folder (format in
:mod:`mnist_desktop.core.corrections`) and the model in use into a training run that the
training panel's machinery starts as a child (``mnist-desktop train --config FILE
--progress-json --control-stdin``, see :mod:`mnist_desktop.service.training_runs`):

* the readable corrections are split, per label and reproducibly (by file name), into a
  **training** part and a **held-out** part (:data:`HOLDOUT` ~20%); both are copied into a
  snapshot folder next to the runs, so editing the corrections later changes no run;
* the run starts from the current model's weights (``init_model``) with its own recipe
  (architecture, preprocessing, normalization, augmentation) and trains a few epochs at a
  low constant learning rate on the bundled MNIST 5k set plus the training corrections,
  oversampled (``extra_repeat``) so that they are about :data:`CORRECTIONS_SHARE` of each
  epoch: the model learns the user's style without forgetting the digits it knew;
* validation is the bundled set's seeded split (the same 500 images the bundled model was
  validated on, never trained on); at the end the run emits a ``comparison`` event with
  the accuracy before and after on that validation data and on the held-out corrections
  (:func:`comparison_of`).

:func:`adopt_model` copies a finished fine-tune's model into the user's models folder so it
is listed in the model box; the previous model stays one click away.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from mnist_desktop.core.corrections import CorrectionSample, copy_corrections, scan_corrections
from training.config import ConfigError, TrainConfig

HOLDOUT = 0.2               # share of each label's corrections kept out of training
CORRECTIONS_SHARE = 0.15    # target share of corrections in an epoch (after oversampling)
MAX_REPEAT = 40
EPOCHS = 3
LEARNING_RATE = 3e-4
SNAPSHOT_DIR = ".finetune-data"


@dataclass
class FinetunePlan:
    """A fine-tune ready to start: its config and what it trains on."""

    config: TrainConfig
    n_train: int                     # corrections trained on (before oversampling)
    n_held_out: int
    repeat: int
    snapshot: Path
    problems: list[str] = field(default_factory=list)   # skipped files, "name: why"

    def summary(self) -> str:
        held = f", {self.n_held_out} held out to measure" if self.n_held_out else ", none held out (too few)"
        return (f"{self.n_train} corrections to learn ({self.repeat}x per epoch){held}; "
                f"{self.config.epochs} epoch{'s' if self.config.epochs != 1 else ''} with the bundled MNIST 5k")


def split_held_out(samples: Iterable[CorrectionSample], fraction: float = HOLDOUT
                   ) -> tuple[list[CorrectionSample], list[CorrectionSample]]:
    """``(train, held_out)``: per label, the ``round(fraction * n)`` samples whose file
    name hashes lowest are held out (labels with one sample are all trained on). The
    same file is always on the same side, whatever else is in the folder."""
    by_label: dict[str, list[CorrectionSample]] = {}
    for s in samples:
        by_label.setdefault(s.label, []).append(s)
    train: list[CorrectionSample] = []
    held: list[CorrectionSample] = []
    for label in sorted(by_label):
        group = sorted(by_label[label], key=lambda s: hashlib.sha256(s.png.name.encode()).hexdigest())
        k = int(math.floor(fraction * len(group) + 0.5)) if len(group) > 1 else 0
        held += group[:k]
        train += group[k:]
    return train, held


def base_config(model_path: str | Path) -> TrainConfig:
    """The recipe the model was trained with (from its metadata), or the recipe of its
    architecture; architecture, labels, normalization and preprocessing from the model."""
    from mnist_desktop.core.checkpoint import read_meta
    from training.recipes import RECIPES, recipe_config

    meta = read_meta(model_path)
    recorded = (meta.training or {}).get("config") if isinstance(meta.training, dict) else None
    cfg = None
    if isinstance(recorded, dict):
        try:
            cfg = TrainConfig.from_dict({**recorded, "teachers": [], "distill_weight": 0.0})
        except ConfigError:
            cfg = None
    if cfg is None:
        name = meta.arch if meta.arch in RECIPES else "flagship"
        cfg = recipe_config(name)
    return cfg.replace(arch=meta.arch, arch_args=dict(meta.arch_args), labels=list(meta.labels),
                       mean=float(meta.normalization.mean), std=float(meta.normalization.std),
                       preprocess=dict(meta.preprocess or {}))


def plan_finetune(model_path: str | Path, corrections: str | Path | None = None,
                  runs: str | Path | None = None, *, epochs: int = EPOCHS,
                  learning_rate: float = LEARNING_RATE, holdout: float = HOLDOUT,
                  **overrides: Any) -> FinetunePlan:
    """Prepare a fine-tune of ``model_path`` on the corrections folder (default: the
    user's) mixed with the bundled MNIST 5k set.

    Raises
    ------
    ConfigError
        No usable corrections, a label the model does not know, a model that cannot be
        fine-tuned (the message says what to do).
    """
    from mnist_desktop.core.checkpoint import CheckpointError
    from mnist_desktop.core.paths import corrections_dir
    from mnist_desktop.service.training_runs import bundled_data_dir, runs_dir

    folder = Path(corrections) if corrections else corrections_dir()
    scan = scan_corrections(folder)
    try:
        cfg = base_config(model_path)
    except CheckpointError as e:
        raise ConfigError(f"cannot fine-tune this model: {e}") from None
    unknown = sorted({s.label for s in scan.samples} - set(cfg.labels))
    samples = [s for s in scan.samples if s.label in cfg.labels]
    problems = list(scan.problems) + [f"folder {u}: not a class of this model (skipped)" for u in unknown]
    if not samples:
        raise ConfigError(f"no corrected drawings to learn from in {folder}: correct a prediction first "
                          f"(the Correct… button under the chart)")
    train, held = split_held_out(samples, holdout)
    root = Path(runs) if runs else runs_dir()
    snap = root / SNAPSHOT_DIR / f"finetune-{time.strftime('%Y%m%d-%H%M%S')}-{len(samples)}"
    n = 0
    while snap.exists():
        n += 1
        snap = snap.with_name(f"{snap.name.rsplit('~', 1)[0]}~{n}")
    try:
        copy_corrections(train, snap / "train")
        if held:
            copy_corrections(held, snap / "held-out")
    except OSError as e:
        shutil.rmtree(snap, ignore_errors=True)
        raise ConfigError(f"cannot copy the corrections for the fine-tune: {e.strerror or e}") from None
    n_base = round(5000 * (1 - cfg.val_fraction))
    repeat = int(min(MAX_REPEAT, max(1, round(CORRECTIONS_SHARE * n_base / max(len(train), 1)))))
    fields: dict[str, Any] = dict(
        data=str(bundled_data_dir()), split="train-5k", data_root="", download=False,
        extra_data=[f"corrections:{snap / 'train'}"], extra_repeat=max(repeat, 2), limit=0,
        init_model=str(model_path), compare_data=f"corrections:{snap / 'held-out'}" if held else "",
        test_data="", epochs=int(epochs), learning_rate=float(learning_rate), scheduler="none",
        scheduler_args={}, patience=0, select_metric="last", val_fold=-1, teachers=[], distill_weight=0.0,
        export=[], name="finetune", output=str(root), device="auto", threads=0,
        outlier_images=min(cfg.outlier_images, 1000))
    fields.update(overrides)
    cfg = cfg.replace(**fields)
    return FinetunePlan(cfg, len(train), len(held), cfg.extra_repeat, snap, problems)


def is_finetune(config: dict[str, Any] | TrainConfig) -> bool:
    d = config.to_dict() if isinstance(config, TrainConfig) else config
    return bool(d.get("init_model"))


@dataclass
class Comparison:
    """Before/after accuracies of a fine-tune (from its ``comparison`` event)."""

    before: dict[str, dict[str, Any]]
    after: dict[str, dict[str, Any]]
    init_model: str = ""

    def rows(self) -> list[tuple[str, int, float | None, float | None]]:
        """``(what, n, accuracy before, accuracy after)``: held-out corrections first."""
        names = {"held_out": "Your held-out drawings", "validation": "MNIST validation"}
        out = []
        for key in ("held_out", "validation"):
            b, a = self.before.get(key), self.after.get(key)
            if b or a:
                out.append((names[key], int((b or a).get("n", 0)), _acc(b), _acc(a)))
        return out

    def text(self) -> str:
        lines = []
        for what, n, b, a in self.rows():
            lines.append(f"{what}: {_pct(b)} -> {_pct(a)} (n={n})")
        return "\n".join(lines)


def comparison_of(events: Iterable[dict[str, Any]]) -> Comparison | None:
    """The last ``comparison`` event of a run's events, or None."""
    found = None
    for ev in events:
        if ev.get("type") == "comparison":
            found = Comparison(dict(ev.get("before") or {}), dict(ev.get("after") or {}),
                               str(ev.get("init_model") or ""))
    return found


def comparison_of_run(run_dir: str | Path) -> Comparison | None:
    from mnist_desktop.service.training_runs import read_events
    return comparison_of(read_events(Path(run_dir) / "progress.jsonl"))


def adopt_model(run_dir: str | Path, models: str | Path | None = None) -> Path:
    """Copy a finished fine-tune's model into the user's models folder (listed in the
    model box) as ``my-handwriting-<time>.safetensors``; returns the copy.

    Raises
    ------
    OSError
        The model is missing or cannot be copied (the message names the file).
    """
    from mnist_desktop.core.atomic_io import atomic_write
    from mnist_desktop.core.paths import user_models_dir

    src = Path(run_dir) / "best.safetensors"   # the last epoch's model (select_metric "last")
    folder = Path(models) if models else user_models_dir()
    stamp = Path(run_dir).name.rsplit("-", 2)
    suffix = "-".join(stamp[-2:]) if len(stamp) == 3 else time.strftime("%Y%m%d-%H%M%S")
    dest = folder / f"my-handwriting-{suffix}.safetensors"
    atomic_write(dest, lambda tmp: shutil.copyfile(src, tmp))
    return dest


def _acc(d: dict[str, Any] | None) -> float | None:
    if not d:
        return None
    v = d.get("accuracy")
    return float(v) if isinstance(v, (int, float)) else None


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"
