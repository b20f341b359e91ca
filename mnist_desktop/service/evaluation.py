"""Evaluating a model file on labelled data: the figures behind the Evaluation window.

:func:`evaluate` loads a model (:func:`~mnist_desktop.service.models.load_predictor`, a
``batch`` job), reads an :class:`EvalSource` (an IDX folder split, a labelled image folder
with one sub-folder per class, or the validation split of a training run), predicts in
batches with progress and cancellation, and returns an :class:`EvaluationResult`:
accuracy, per-class precision/recall/F1/support, the confusion matrix, and every sample's
(true, predicted, confidence) so that a confusion cell can list its images and the
misclassified ones can be sorted by confidence.

Qt-free: the GUI runs it on a worker thread, tests and scripts call it directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from mnist_desktop.core.checkpoint import CheckpointError, check_model
from mnist_desktop.core.data import DataError, find_idx_splits, labelled_image_folder, load_idx_folder
from mnist_desktop.core.metrics import confusion_matrix, per_class_scores
from mnist_desktop.service.models import ModelChoice, load_predictor

#: ``progress(done, total, text)``
Progress = Callable[[int, int, str], None]

BATCH = 500


class EvaluationError(ValueError):
    """The model or the data cannot be evaluated; the message says which and why, in one line."""


class EvaluationCancelled(Exception):
    """The caller's ``cancelled()`` said stop."""


@dataclass(frozen=True)
class EvalSource:
    """Labelled data to evaluate on.

    ``kind``: ``idx`` (``path`` is an IDX folder, ``split`` one of its splits, e.g.
    ``train-5k`` or ``test``), ``folder`` (``path/<label>/*.png``) or ``run`` (``path`` is a
    training run folder, or a model file whose metadata carries its training config: the
    seeded validation split that run held out).
    """

    kind: Literal["idx", "folder", "run"]
    path: str
    split: str = ""

    def describe(self) -> str:
        if self.kind == "idx":
            return f"{self.path} ({self.split or 'first split'})"
        if self.kind == "run":
            return f"validation split of {Path(self.path).name}"
        return f"{self.path} (image folder)"


@dataclass(frozen=True)
class Sample:
    """One evaluated image: ``index`` into the result's arrays, class labels as text."""

    index: int
    true: str
    predicted: str
    confidence: float


@dataclass
class EvaluationResult:
    """What :func:`evaluate` measured. Arrays are aligned with the evaluated samples;
    ``labels`` are the model's class labels (rows and columns of ``confusion``, rows =
    true class, columns = predicted)."""

    model: str
    data: str
    labels: list[str]
    y_true: np.ndarray           # (N,) int
    y_pred: np.ndarray           # (N,) int
    confidence: np.ndarray       # (N,) probability of the predicted class
    images: np.ndarray           # (N, 28, 28) float32 in [0, 1], the model's input
    paths: list[str] | None = None
    notes: list[str] = field(default_factory=list)        # backend fallbacks, skipped files
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, why) not evaluated
    confusion: np.ndarray = field(init=False)
    precision: np.ndarray = field(init=False)
    recall: np.ndarray = field(init=False)
    f1: np.ndarray = field(init=False)
    support: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.confusion = confusion_matrix(self.y_true, self.y_pred, len(self.labels))
        s = per_class_scores(self.confusion)
        self.precision, self.recall, self.f1 = s["precision"], s["recall"], s["f1"]
        self.support = s["support"]

    @property
    def n(self) -> int:
        return int(len(self.y_true))

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.y_true == self.y_pred)) if self.n else 0.0

    @property
    def macro_f1(self) -> float:
        present = self.support > 0
        return float(self.f1[present].mean()) if present.any() else 0.0

    def sample(self, i: int) -> Sample:
        return Sample(int(i), self.labels[self.y_true[i]], self.labels[self.y_pred[i]], float(self.confidence[i]))

    def _by_confidence(self, idx: np.ndarray) -> list[Sample]:
        order = idx[np.argsort(-self.confidence[idx], kind="stable")]
        return [self.sample(i) for i in order]

    def cell(self, true: int, predicted: int) -> list[Sample]:
        """The samples of confusion cell (``true``, ``predicted``), most confident first."""
        return self._by_confidence(np.flatnonzero((self.y_true == true) & (self.y_pred == predicted)))

    def misclassified(self) -> list[Sample]:
        """Every wrong answer, most confident first (the worst mistakes lead)."""
        return self._by_confidence(np.flatnonzero(self.y_true != self.y_pred))

    def summary(self) -> str:
        wrong = int(np.sum(self.y_true != self.y_pred))
        text = (f"accuracy {100 * self.accuracy:.2f}% on {self.n} images ({wrong} wrong), "
                f"macro F1 {self.macro_f1:.4f}")
        if self.failed:
            text += f"; {len(self.failed)} file(s) could not be read"
        return text


def _check(cancelled: Callable[[], bool] | None) -> None:
    if cancelled is not None and cancelled():
        raise EvaluationCancelled()


def idx_splits(folder: str | os.PathLike) -> list[str]:
    """The split names of an IDX folder (empty when it holds none)."""
    try:
        return sorted(find_idx_splits(folder))
    except DataError:
        return []


def _training_meta(path: str | os.PathLike) -> dict:
    p = Path(path)
    model = p / "best.safetensors" if p.is_dir() else p
    try:
        return check_model(model).training or {}
    except CheckpointError:
        return {}


def run_training_config(path: str | os.PathLike) -> dict | None:
    """The training config of a run folder (its ``best.safetensors``) or of a model file
    trained by this program; None when there is none."""
    cfg = _training_meta(path).get("config")
    return cfg if isinstance(cfg, dict) and cfg.get("data") else None


def validation_rebuildable(path: str | os.PathLike) -> bool:
    """Whether the training data named by ``path``'s config is here (a folder that exists,
    or a ``scheme:`` spec such as ``torchvision:MNIST`` the loader resolves itself)."""
    cfg = run_training_config(path)
    if cfg is None:
        return False
    data = str(cfg["data"])
    return (":" in data and not Path(data).is_absolute() and len(data.split(":")[0]) > 1) or Path(data).exists()


def _run_validation(path: str, labels: list[str], progress: Progress | None):
    """The validation split the run held out, exactly as :mod:`training.engine` drew it."""
    cfg_dict = run_training_config(path)
    if cfg_dict is None:
        raise EvaluationError(f"{Path(path).name}: no training config, so no validation split to rebuild")
    from training import data as D
    from training.config import ConfigError, TrainConfig

    try:
        cfg = TrainConfig.from_dict(cfg_dict)
        full, _, val_idx = D.run_loader(D.load_training_data(cfg),
                                        lambda ev: progress and progress(0, 0, getattr(ev, "message", "")))
    except (ConfigError, DataError, OSError) as e:
        raise EvaluationError(f"cannot rebuild the validation split of {Path(path).name}: {e}") from None
    if len(val_idx) == 0:
        raise EvaluationError(f"{Path(path).name} held out no validation data (val_fraction 0)")
    val = full.subset(val_idx)
    n_val = _training_meta(path).get("n_val")
    note = "" if n_val in (None, len(val_idx)) else \
        f"; the run held out {n_val} images, the data found now gives {len(val_idx)}: it has changed"
    names = list(val.label_names)
    if names != labels:
        idx = {lab: i for i, lab in enumerate(labels)}
        missing = sorted({n for n in names if n not in idx})
        if missing:
            raise EvaluationError(f"the run's classes {', '.join(missing[:10])} are not among the model's labels")
        remap = np.array([idx[n] for n in names])
        y = remap[val.labels]
    else:
        y = val.labels
    return val.unit_float(), np.asarray(y, np.int64), val.paths, \
        f"validation split of {Path(path).name} (data {cfg_dict.get('data')}, {len(val_idx)} images held out " \
        f"of training{note})"


def _predict_arrays(predictor, images: np.ndarray, progress: Progress | None, cancelled) -> np.ndarray:
    probs = []
    n = len(images)
    for i in range(0, n, BATCH):
        _check(cancelled)
        p, _, _ = predictor.probabilities(images[i:i + BATCH])
        probs.append(p)
        if progress:
            progress(min(n, i + BATCH), n, "classifying")
    return np.concatenate(probs) if probs else np.zeros((0, len(predictor.labels)), np.float32)


def evaluate(model: str | os.PathLike | None, source: EvalSource, *, device: str = "auto",
             progress: Progress | None = None, cancelled: Callable[[], bool] | None = None,
             limit: int = 0) -> EvaluationResult:
    """Evaluate ``model`` (None: the bundled one) on ``source``.

    Parameters
    ----------
    progress
        Called as ``progress(done, total, text)`` between batches (``total`` 0 while
        loading).
    cancelled
        Polled between batches and files; when it returns True :class:`EvaluationCancelled`
        is raised.
    limit
        Evaluate only the first ``limit`` images (0: all).

    Raises
    ------
    EvaluationError
        The model file or the data is unusable (one line saying which and why).
    EvaluationCancelled
    """
    choice = ModelChoice(model=model, device=device, purpose="batch")
    if progress:
        progress(0, 0, "loading the model")
    try:
        loaded = load_predictor(choice)
    except CheckpointError as e:
        raise EvaluationError(f"Cannot use model {choice.model_path().name}: {e}") from None
    predictor = loaded.predictor
    labels = list(predictor.labels)
    notes = list(loaded.notes)
    failed: list[tuple[str, str]] = []
    _check(cancelled)
    if progress:
        progress(0, 0, f"reading {source.describe()}")
    try:
        if source.kind == "idx":
            splits = idx_splits(source.path)
            split = source.split or (splits[0] if splits else "")
            data = load_idx_folder(source.path, split)
            if len(data.labels) and int(data.labels.max()) >= len(labels):
                raise EvaluationError(f"labels in {data.labels_path.name} exceed the model's {len(labels)} classes")
            n = min(len(data.labels), limit) if limit else len(data.labels)
            images = data.images[:n].astype(np.float32) / 255.0
            y, paths = data.labels[:n], None
            description = f"{source.path} ({split}, {n} images)"
            probs = _predict_arrays(predictor, images, progress, cancelled)
        elif source.kind == "run":
            images, y, paths, description = _run_validation(source.path, labels, progress)
            if limit:
                images, y = images[:limit], y[:limit]
                paths = paths[:limit] if paths is not None else None
            probs = _predict_arrays(predictor, images, progress, cancelled)
        elif source.kind == "folder":
            images, y, paths, probs, failed = _folder(predictor, source.path, labels, limit, progress, cancelled)
            description = f"{source.path} (image folder, {len(y)} images)"
        else:
            raise EvaluationError(f"unknown data kind {source.kind!r}")
    except DataError as e:
        raise EvaluationError(str(e)) from None
    if len(y) == 0:
        raise EvaluationError(f"{source.describe()}: no image could be evaluated")
    pred = probs.argmax(axis=1)
    conf = probs[np.arange(len(pred)), pred]
    if failed:
        notes.append(f"{len(failed)} file(s) skipped (unreadable or nothing to classify)")
    return EvaluationResult(str(predictor.path), description, labels, np.asarray(y, np.int64), pred,
                            conf.astype(np.float32), np.asarray(images, np.float32), paths, notes, failed)


def _folder(predictor, root: str, labels: list[str], limit: int, progress, cancelled):
    from mnist_desktop.core.batch import classify_files

    files, file_labels = labelled_image_folder(root)
    idx = {lab: i for i, lab in enumerate(labels)}
    unknown = sorted({lab for lab in file_labels if lab not in idx})
    if unknown:
        raise EvaluationError(f"{root}: folder names not among the model's labels: {', '.join(unknown[:10])}"
                              f" (expected sub-folders named {', '.join(labels)})")
    if limit:
        files, file_labels = files[:limit], file_labels[:limit]
    n = len(files)
    images, y, paths, probs, failed = [], [], [], [], []
    stop = (lambda: bool(cancelled())) if cancelled is not None else None
    for k, (r, lab) in enumerate(zip(classify_files(files, predictor, workers=0, keep_images=True,
                                                    should_cancel=stop), file_labels)):
        if r.ok and r.probs is not None and r.image is not None:
            images.append(r.image)
            y.append(idx[lab])
            paths.append(str(r.path))
            probs.append(r.probs)
        else:
            failed.append((str(r.path), r.error or "not classified"))
        if progress and (k % 50 == 0 or k + 1 == n):
            progress(k + 1, n, "classifying files")
    _check(cancelled)
    if not images:
        return np.zeros((0, 28, 28), np.float32), np.zeros(0, np.int64), [], np.zeros((0, len(labels))), failed
    return np.stack(images), np.array(y, np.int64), paths, np.stack(probs), failed
