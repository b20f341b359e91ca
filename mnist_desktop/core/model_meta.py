"""The metadata every model file carries (:class:`ModelMeta`), and its strict validation.

Kept apart from :mod:`~mnist_desktop.core.checkpoint` (which reads and writes model files,
with torch) so that ONNX Runtime predictors and the batch decoding workers, which never
import torch, can use it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

FORMAT = "mnist-desktop-model"
FORMAT_VERSION = 1
META_KEY = "mnist_desktop"


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
    ``-T * logsumexp(logits / T)`` is above ``threshold``). ``temperature`` scales logits
    before the softmax and is fitted for calibration.
    """

    method: str = "max_prob"
    threshold: float = 0.5
    temperature: float = 1.0


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
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, TypeError) as e:
            raise CheckpointError(f"model metadata is not valid JSON ({e})") from None
        return cls.from_dict(d)

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
        _expect(d, "arch", str)
        _expect(d, "arch_args", dict)
        labels = _expect(d, "labels", list)
        if not labels or not all(isinstance(x, str) for x in labels):
            raise CheckpointError("model metadata 'labels' must be a non-empty list of strings")
        if len(set(labels)) != len(labels):
            raise CheckpointError("model metadata 'labels' has duplicates")
        norm = _expect(d, "normalization", dict)
        unc = _expect(d, "uncertainty", dict)
        try:
            normalization = Normalization(mean=float(norm["mean"]), std=float(norm["std"]))
            uncertainty = UncertaintyRule(method=str(unc["method"]),
                                          threshold=float(unc["threshold"]),
                                          temperature=float(unc.get("temperature", 1.0)))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"model metadata has a bad normalization/uncertainty entry ({e})") from None
        if normalization.std <= 0:
            raise CheckpointError("model metadata normalization std must be > 0")
        if uncertainty.method not in ("max_prob", "energy"):
            raise CheckpointError(f"unknown uncertainty method {uncertainty.method!r}")
        if not uncertainty.temperature > 0:
            raise CheckpointError("model metadata uncertainty temperature must be > 0")
        known = {f.name for f in dataclasses.fields(cls)}
        extra = {k: v for k, v in d.items() if k in known and k not in
                 ("arch", "arch_args", "labels", "normalization", "uncertainty")}
        for key in ("preprocess", "training", "metrics", "versions"):
            if key in extra and not isinstance(extra[key], dict):
                raise CheckpointError(f"model metadata {key!r} must be an object")
        return cls(arch=d["arch"], arch_args=d["arch_args"], labels=labels,
                   normalization=normalization, uncertainty=uncertainty, **extra)


def _expect(d: Mapping[str, Any], key: str, typ: type) -> Any:
    if key not in d:
        raise CheckpointError(f"model metadata is missing {key!r}")
    if not isinstance(d[key], typ):
        raise CheckpointError(f"model metadata {key!r} must be {typ.__name__}")
    return d[key]
