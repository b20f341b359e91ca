"""The metadata every model file carries (:class:`ModelMeta`), and its strict validation.

Kept apart from :mod:`~mnist_desktop.core.checkpoint` (which reads and writes model files,
with torch) so that ONNX Runtime predictors and the batch decoding workers, which never
import torch, can use it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

FORMAT = "mnist-desktop-model"
FORMAT_VERSION = 1
META_KEY = "mnist_desktop"

#: Bounds on the metadata JSON, checked before it is parsed or used.
MAX_META_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
MAX_LABEL_CHARS = 100


class CheckpointError(Exception):
    """A model file could not be read, validated or written. The message is one line."""


@dataclass
class Normalization:
    """Input normalization applied after preprocessing: ``(x - mean) / std`` with x in [0, 1]."""

    mean: float = 0.1307
    std: float = 0.3081


@dataclass
class UncertaintyRule:
    """How a prediction is flagged ``uncertain`` ("not a digit / not sure").

    ``method`` is ``"max_prob"`` (uncertain when the top probability is below
    ``threshold``) or ``"energy"`` (uncertain when the free energy
    ``-T * logsumexp(logits / T)`` is above ``threshold``): "not a digit".
    ``temperature`` scales logits before the softmax and is fitted for calibration.
    ``tie_margin`` (0: off) also flags near-ties, "unsure between two digits": the top
    two calibrated probabilities closer than this (fitted on validation digits,
    :func:`training.ties.fit_tie_margin`). Older apps ignore it.
    """

    method: str = "max_prob"
    threshold: float = 0.5
    temperature: float = 1.0
    tie_margin: float = 0.0


@dataclass
class ModelMeta:
    arch: str
    arch_args: dict[str, Any] = field(default_factory=dict)
    labels: list[str] = field(default_factory=lambda: [str(i) for i in range(10)])
    normalization: Normalization = field(default_factory=Normalization)
    preprocess: dict[str, Any] = field(default_factory=dict)
    uncertainty: UncertaintyRule = field(default_factory=UncertaintyRule)
    name: str = ""
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d = {"format": FORMAT, "format_version": FORMAT_VERSION, **d}
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelMeta":
        return cls.from_dict(loads_bounded(text, MAX_META_BYTES, "model metadata"))

    @classmethod
    def from_dict(cls, d: Any) -> "ModelMeta":
        """Validate ``d`` strictly and build the metadata."""
        if not isinstance(d, dict):
            raise CheckpointError("model metadata must be a JSON object")
        if d.get("format") != FORMAT:
            raise CheckpointError(f"not an mnist-desktop model (format={d.get('format')!r})")
        version = d.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CheckpointError(
                f"model format version {version!r} is newer than this app supports "
                f"({FORMAT_VERSION}); update mnist-desktop")
        from mnist_desktop.core.arch_limits import MAX_CLASSES, check_arch_args

        arch = _expect(d, "arch", str)
        arch_args = _expect(d, "arch_args", dict)
        labels = _expect(d, "labels", list)
        if not labels or not all(isinstance(x, str) and 0 < len(x) <= MAX_LABEL_CHARS for x in labels):
            raise CheckpointError("model metadata 'labels' must be a non-empty list of strings "
                                  f"of 1..{MAX_LABEL_CHARS} characters")
        if len(labels) > MAX_CLASSES:
            raise CheckpointError(f"model metadata has {len(labels)} labels; at most {MAX_CLASSES} are supported")
        if len(set(labels)) != len(labels):
            raise CheckpointError("model metadata 'labels' has duplicates")
        try:
            check_arch_args(arch, arch_args, len(labels))
        except ValueError as e:
            raise CheckpointError(f"model metadata: {e}") from None
        norm = _expect(d, "normalization", dict)
        unc = _expect(d, "uncertainty", dict)
        method = unc.get("method")
        if method not in ("max_prob", "energy"):
            raise CheckpointError(f"unknown uncertainty method {str(method)[:40]!r}")
        normalization = Normalization(mean=_finite(norm, "mean", "normalization"),
                                      std=_finite(norm, "std", "normalization", positive=True))
        uncertainty = UncertaintyRule(method=method, threshold=_finite(unc, "threshold", "uncertainty"),
                                      temperature=_finite(unc, "temperature", "uncertainty", positive=True,
                                                          default=1.0),
                                      tie_margin=_finite(unc, "tie_margin", "uncertainty", default=0.0))
        if not 0.0 <= uncertainty.tie_margin <= 1.0:
            raise CheckpointError("model metadata uncertainty 'tie_margin' must be in [0, 1]")
        known = {f.name for f in dataclasses.fields(cls)}
        extra = {k: v for k, v in d.items() if k in known and k not in
                 ("arch", "arch_args", "labels", "normalization", "uncertainty")}
        for key in ("preprocess", "training", "metrics", "versions"):
            if key in extra and not isinstance(extra[key], dict):
                raise CheckpointError(f"model metadata {key!r} must be an object")
        for key in ("name", "description", "data_fingerprint", "created"):
            if key in extra and not isinstance(extra[key], str):
                raise CheckpointError(f"model metadata {key!r} must be a string")
        _check_preprocess(extra.get("preprocess", {}))
        return cls(arch=arch, arch_args=arch_args, labels=labels,
                   normalization=normalization, uncertainty=uncertainty, **extra)


def loads_bounded(text: str | bytes, max_bytes: int, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads(text)`` for untrusted text: at most ``max_bytes`` long and
    ``max_depth`` levels of arrays/objects deep (``json.loads`` itself recurses, so a
    100,000-deep document would raise RecursionError).

    Raises
    ------
    CheckpointError
        One line naming ``what``.
    """
    if not isinstance(text, (str, bytes, bytearray)):
        raise CheckpointError(f"{what} is not text")
    if len(text) > max_bytes:
        raise CheckpointError(f"{what} is {len(text):,} bytes; at most {max_bytes:,} are accepted")
    try:
        value = json.loads(text)
    except RecursionError:
        raise CheckpointError(f"{what} is nested more than {max_depth} levels deep") from None
    except (ValueError, UnicodeDecodeError) as e:   # JSONDecodeError, too many digits
        raise CheckpointError(f"{what} is not valid JSON ({str(e).splitlines()[0][:120]})") from None
    if _depth_over(value, max_depth):
        raise CheckpointError(f"{what} is nested more than {max_depth} levels deep")
    return value


def _depth_over(value: Any, max_depth: int) -> bool:
    """Whether ``value`` nests more than ``max_depth`` levels (iteratively: no recursion)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth > max_depth:
                return True
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
    return False


def _finite(d: Mapping[str, Any], key: str, where: str, positive: bool = False, default: Any = None) -> float:
    value = d.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointError(f"model metadata {where} {key!r} must be a number")
    try:
        value = float(value)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise CheckpointError(f"model metadata {where} {key!r} must be finite (got {value})")
    if positive and not value > 0:
        raise CheckpointError(f"model metadata {where} {key!r} must be > 0 (got {value:g})")
    return value


def _check_preprocess(options: dict[str, Any]) -> None:
    from mnist_desktop.core.preprocess import PreprocessOptions

    try:
        PreprocessOptions.from_dict(options)
    except ValueError as e:
        raise CheckpointError(f"model metadata preprocess: {e}") from None


def _expect(d: Mapping[str, Any], key: str, typ: type) -> Any:
    if key not in d:
        raise CheckpointError(f"model metadata is missing {key!r}")
    if not isinstance(d[key], typ):
        raise CheckpointError(f"model metadata {key!r} must be {typ.__name__}")
    return d[key]
