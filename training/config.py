"""The one typed configuration of a training run.

:class:`TrainConfig` holds every setting of a run (recipe, architecture, data, optimizer,
schedule, augmentation, preprocessing, normalization, seed, device, validation, early
stopping, output). Recipes (:mod:`training.recipes`) are named presets producing a
``TrainConfig``; the command line parses its flags into overrides of one; the run folder
keeps it as ``config.json`` and every model file stores it in ``ModelMeta.training``.

Torch-free on purpose: the GUI's training panel binds to this dataclass before it has
imported torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "onecycle", "plateau", "cosine", "step")
SELECT_METRICS = ("val_accuracy", "val_loss", "last")
EXPORT_FORMATS = ("torchscript", "onnx")


class ConfigError(ValueError):
    """A configuration value is invalid. The message is one line."""


@dataclass
class AugmentConfig:
    """Batched random augmentation applied on the training device (see :mod:`training.augment`).

    Every amplitude is the maximum of a uniform range; 0 switches that transform off.
    """

    rotation: float = 0.0          # degrees, +-
    translate: float = 0.0         # fraction of the image size, +- in x and y
    scale: float = 0.0             # relative zoom, 1 +- scale
    shear: float = 0.0             # degrees, +-
    elastic_alpha: float = 0.0     # typical (RMS) displacement of the elastic field, in pixels
    elastic_sigma: float = 4.0     # smoothing of the elastic field, in pixels
    elastic_p: float = 0.5         # fraction of samples that get an elastic distortion
    thickness: float = 0.0         # stroke thickness change: 1 = up to one 3x3 dilation/erosion
    european: float = 0.0          # share of 1s given a flag (and foot) and of 7s given a crossbar

    @property
    def enabled(self) -> bool:
        return any(v > 0 for v in (self.rotation, self.translate, self.scale, self.shear,
                                   self.elastic_alpha * self.elastic_p, self.thickness, self.european))


@dataclass
class TrainConfig:
    """Every setting of a training run. Build one with :func:`training.recipes.recipe_config`.

    ``data``, ``extra_data`` and ``test_data`` are data specifications: an IDX folder, a
    labelled image folder, ``corrections:[DIR]`` or ``torchvision:NAME`` (see
    :mod:`training.data`).
    """

    recipe: str = "custom"
    arch: str = "flagship"
    arch_args: dict[str, Any] = field(default_factory=dict)
    # data
    data: str = ""
    extra_data: list[str] = field(default_factory=list)
    data_root: str = ""            # where torchvision datasets live / are downloaded
    split: str = ""                # IDX training split; "" = auto (train, then train-5k)
    download: bool = True
    test_data: str = ""
    test_split: str = "test"
    limit: int = 0                 # use a seeded subset of this many samples of `data` (0 = all)
    labels: list[str] = field(default_factory=list)  # class names; [] = from the data
    # fine-tuning: start from this model file's weights (its arch and labels must match)
    init_model: str = ""
    extra_repeat: int = 1          # > 1: each extra_data sample appears this many times per epoch
                                   # and extra data stays out of the validation split
    compare_data: str = ""         # with init_model: held-out data measured before and after
    # optimization
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str = "none"
    scheduler_args: dict[str, Any] = field(default_factory=dict)
    label_smoothing: float = 0.0
    # knowledge distillation: soft targets from the mean prediction of these model files
    teachers: list[str] = field(default_factory=list)
    distill_weight: float = 0.0        # loss = (1 - w) * CE(labels) + w * T^2 * KL(teachers || model)
    distill_temperature: float = 2.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # outlier exposure: generated non-digits (train seeds of training.synth) trained
    # towards the uniform distribution, as many per step as digits
    outlier_images: int = 0
    outlier_weight: float = 0.5
    # input
    mean: float = 0.1307
    std: float = 0.3081
    preprocess: dict[str, Any] = field(default_factory=dict)  # PreprocessOptions overrides
    # run control
    seed: int = 0
    device: str = "auto"
    threads: int = 0               # torch CPU threads; 0 = torch's default
    val_fraction: float = 0.1
    val_seed: int = -1             # seed of the validation split; -1 = ``seed`` (teachers of one
                                   # student share a split while differing in seed)
    val_fold: int = -1             # >= 0: validate on this fold of round(1 / val_fraction)
                                   # stratified folds (k-fold cross-validation); -1 = random split
    patience: int = 0              # early stopping after this many epochs without a new best; 0 = off
    select_metric: str = "val_accuracy"   # "last": the final model, no selection on validation data
    ema_decay: float = 0.0         # > 0: keep an exponential moving average of the weights and
                                   # batch-norm statistics (per step); it is what is validated and saved
    uncertainty_threshold: float = 0.5
    eval_batch_size: int = 1000
    output: str = "runs"
    name: str = ""
    export: list[str] = field(default_factory=list)
    step_event_interval: float = 0.25  # seconds between Step events (0 = every step)

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Any) -> "TrainConfig":
        """Build and validate a config from a dict (e.g. ``config.json``); unknown keys are
        an error so that a typo never silently falls back to a default."""
        if not isinstance(d, dict):
            raise ConfigError("training config must be a JSON object")
        d = dict(d)
        aug = d.pop("augment", {}) or {}
        if not isinstance(aug, dict):
            raise ConfigError("config 'augment' must be an object")
        _check_keys(aug, AugmentConfig, "augment")
        _check_keys(d, cls, "config")
        try:
            augment = AugmentConfig(**{k: float(v) for k, v in aug.items()})
        except (TypeError, ValueError) as e:
            raise ConfigError(f"bad augmentation value ({e})") from None
        cfg = cls(**d, augment=augment)
        cfg.validate()
        return cfg

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ConfigError(f"training config is not valid JSON ({e})") from None

    def replace(self, **changes: Any) -> "TrainConfig":
        """A validated copy with ``changes``; ``augment`` may be given as a dict of its fields."""
        d = self.to_dict()
        aug = changes.pop("augment", None)
        if isinstance(aug, AugmentConfig):
            aug = dataclasses.asdict(aug)
        if aug:
            d["augment"] = {**d["augment"], **aug}
        d.update(changes)
        return TrainConfig.from_dict(d)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`ConfigError` (one line) for any unusable value."""
        ints = {"epochs": 1, "batch_size": 1, "eval_batch_size": 1, "limit": 0, "patience": 0,
                "threads": 0, "seed": 0, "val_seed": -1, "val_fold": -1,
                "outlier_images": 0, "extra_repeat": 1}
        for name, lo in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"{name} must be an integer >= {lo} (got {v!r})")
        positives = ("learning_rate", "std")
        for name in positives:
            v = getattr(self, name)
            if not _finite(v) or v <= 0:
                raise ConfigError(f"{name} must be a number > 0 (got {v!r})")
        for name in ("momentum", "weight_decay", "label_smoothing", "mean", "step_event_interval",
                     "outlier_weight"):
            v = getattr(self, name)
            if not _finite(v) or (name != "mean" and v < 0):
                raise ConfigError(f"{name} must be a finite number >= 0 (got {v!r})")
        if not isinstance(self.teachers, list) or not all(isinstance(t, str) and t for t in self.teachers):
            raise ConfigError("teachers must be a list of model file paths")
        if not _finite(self.distill_weight) or not 0 <= self.distill_weight <= 1:
            raise ConfigError(f"distill_weight must be between 0 and 1 (got {self.distill_weight!r})")
        if not _finite(self.distill_temperature) or self.distill_temperature <= 0:
            raise ConfigError(f"distill_temperature must be > 0 (got {self.distill_temperature!r})")
        if self.distill_weight > 0 and not self.teachers:
            raise ConfigError("distill_weight > 0 needs at least one --teacher model file")
        if self.label_smoothing >= 1:
            raise ConfigError("label_smoothing must be < 1")
        if not 0 <= self.val_fraction <= 0.5:
            raise ConfigError(f"val_fraction must be between 0 and 0.5 (got {self.val_fraction!r})")
        if self.val_fold >= 0 and (self.val_fraction <= 0 or self.val_fold >= round(1 / self.val_fraction)):
            raise ConfigError(f"val_fold must be below the number of folds, round(1 / val_fraction) "
                              f"(got fold {self.val_fold} with val_fraction {self.val_fraction})")
        if not 0 < self.uncertainty_threshold < 1:
            raise ConfigError("uncertainty_threshold must be between 0 and 1")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"unknown scheduler {self.scheduler!r}; choose from {', '.join(SCHEDULERS)}")
        if not _finite(self.ema_decay) or not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be >= 0 and < 1, 0 = off (got {self.ema_decay!r})")
        if self.select_metric not in SELECT_METRICS:
            raise ConfigError(f"select_metric must be one of {', '.join(SELECT_METRICS)}")
        bad = [f for f in self.export if f not in EXPORT_FORMATS]
        if bad:
            raise ConfigError(f"unknown export format {bad[0]!r}; choose from {', '.join(EXPORT_FORMATS)}")
        if not isinstance(self.arch_args, dict) or not isinstance(self.scheduler_args, dict) \
                or not isinstance(self.preprocess, dict):
            raise ConfigError("arch_args, scheduler_args and preprocess must be objects")
        if not isinstance(self.extra_data, list) or not all(isinstance(s, str) for s in self.extra_data):
            raise ConfigError("extra_data must be a list of data specifications")
        if not isinstance(self.init_model, str) or not isinstance(self.compare_data, str):
            raise ConfigError("init_model and compare_data must be strings")
        if self.compare_data and not self.init_model:
            raise ConfigError("compare_data needs init_model (it compares the model before and after)")
        if not isinstance(self.labels, list) or not all(isinstance(s, str) and s for s in self.labels) \
                or len(set(self.labels)) != len(self.labels):
            raise ConfigError("labels must be a list of distinct, non-empty names")
        if "num_classes" in self.arch_args:
            raise ConfigError("arch_args must not set num_classes (it comes from the data labels)")
        from mnist_desktop.core.preprocess import PreprocessOptions
        unknown = set(self.preprocess) - set(PreprocessOptions.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown preprocessing option(s): {', '.join(sorted(unknown))}")
        for field_name in ("name", "recipe"):   # the run folder is <output>/<name or recipe>-<time>
            value = getattr(self, field_name)
            problem = run_name_problem(value) if value or not isinstance(value, str) else ""
            if problem:
                raise ConfigError(f"{field_name} {value!r} {problem}: a run name is one folder name")
        a = self.augment
        for name in ("rotation", "translate", "scale", "shear", "elastic_alpha", "elastic_sigma",
                     "elastic_p", "thickness", "european"):
            v = getattr(a, name)
            if not _finite(v) or v < 0:
                raise ConfigError(f"augment.{name} must be a finite number >= 0 (got {v!r})")
        if a.elastic_alpha > 0 and a.elastic_sigma <= 0:
            raise ConfigError("augment.elastic_sigma must be > 0 when elastic_alpha is set")
        if a.translate > 0.5 or a.scale >= 1 or a.elastic_p > 1 or a.thickness > 1 or a.european > 1 \
                or a.rotation > 180 or a.shear >= 80:
            raise ConfigError("augmentation amplitude out of range (translate <= 0.5, scale < 1, "
                              "elastic_p <= 1, thickness <= 1, european <= 1, rotation <= 180, shear < 80)")

    @property
    def split_seed(self) -> int:
        """The seed of the validation split."""
        return recorded_split_seed({"seed": self.seed, "val_seed": self.val_seed})

    def preprocess_options(self):
        """The :class:`~mnist_desktop.core.preprocess.PreprocessOptions` of this run."""
        from mnist_desktop.core.preprocess import PreprocessOptions
        return PreprocessOptions.from_dict(self.preprocess)


def run_name_problem(name: Any) -> str:
    """Why ``name`` cannot start a run folder's name (``<output>/<name>-<time>``), or "".

    It must stay one folder inside ``--output``: no path separators (``/``, ``\\``, a drive's
    ``:``), no ``..``, no NUL or control characters, not empty, not over 200 bytes.
    """
    if not isinstance(name, str):
        return "is not text"
    if not name.strip():
        return "is empty"
    if "\0" in name:
        return "contains a NUL character"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains a control character"
    if any(c in name for c in "/\\:") or os.path.isabs(name):
        return "contains a path separator"
    if ".." in name:
        return "contains '..'"
    if len(name.encode("utf-8", "surrogateescape")) > 200:
        return "is longer than 200 bytes"
    return ""


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_keys(d: dict, cls: type, what: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown {what} key(s): {', '.join(unknown)}")


def recorded_split_seed(cfg: dict[str, Any]) -> int:
    """:attr:`TrainConfig.split_seed` of a recorded config (``config.json``, a model's
    ``meta.training``): ``val_seed`` when set (>= 0), else ``seed``."""
    val_seed = int(cfg.get("val_seed", -1))
    return int(cfg.get("seed", 0)) if val_seed < 0 else val_seed
