"""Self-describing, safe model files.

A model file is a `safetensors <https://github.com/huggingface/safetensors>`_ file: the
tensors of the network's ``state_dict`` plus one metadata entry, ``mnist_desktop``, holding
the JSON of :class:`ModelMeta` (architecture and arguments, class labels, normalization,
preprocessing options, uncertainty rule, training config, metrics, data fingerprint,
library versions). Loading such a file never executes code.

Files written by ``torch.save`` (``.pt``/``.pth``) are accepted only through
``torch.load(weights_only=True)`` and only with the same schema
(``{"mnist_desktop": <json str>, "state_dict": {name: tensor}}``); a crafted pickle is
refused with a one-line :class:`CheckpointError`.

Saving is atomic: the file is written to a temporary name in the same folder, flushed to
disk and renamed over the target, so a crash mid-save never corrupts the previous file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

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


def library_versions() -> dict[str, str]:
    import numpy
    import torch

    from mnist_desktop import __version__

    return {"mnist_desktop": __version__, "torch": torch.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


# --------------------------------------------------------------------------- atomic I/O

def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then atomically rename ``tmp_path`` onto ``path``.

    The temporary file lives in the target folder (same filesystem, so the rename is
    atomic) and is removed when ``write`` fails, e.g. on a full disk.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
    return atomic_write(path, write)


# --------------------------------------------------------------------------- save / load

def save_model(path: str | os.PathLike, model, meta: ModelMeta) -> Path:
    """Save ``model``'s weights with ``meta`` to a safetensors file, atomically."""
    from safetensors.torch import save_file

    if not meta.versions:
        meta.versions = library_versions()
    if not meta.created:
        import datetime
        meta.created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    try:
        return atomic_write(path, lambda tmp: save_file(state, tmp, metadata={META_KEY: meta.to_json()}))
    except OSError as e:
        raise CheckpointError(f"could not save model to {path}: {e.strerror or e}") from None


@dataclass
class LoadedModel:
    model: Any  # torch.nn.Module in eval mode, on CPU
    meta: ModelMeta
    path: Path


def read_meta(path: str | os.PathLike) -> ModelMeta:
    """Read only the metadata of a model file (cheap: no tensors are loaded)."""
    meta, _ = _read(Path(path), with_tensors=False)
    return meta


def load_model(path: str | os.PathLike) -> LoadedModel:
    """Load and validate a model file; build its network on CPU in eval mode.

    Raises
    ------
    CheckpointError
        One-line message for a missing, corrupt, hostile or incompatible file.
    """
    from mnist_desktop.core.models import build_model

    path = Path(path)
    meta, state = _read(path, with_tensors=True)
    try:
        model = build_model(meta.arch, num_classes=meta.num_classes, **meta.arch_args)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path.name}: cannot build architecture {meta.arch!r}: {e}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path.name}: weights do not match architecture {meta.arch!r} ({first})") from None
    model.eval()
    return LoadedModel(model=model, meta=meta, path=path)


def _read(path: Path, with_tensors: bool):
    if not path.exists():
        raise CheckpointError(f"model file not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"not a file: {path}")
    with open(path, "rb") as f:
        head = f.read(8)
    # A safetensors file starts with a little-endian u64 header length followed by '{'.
    if path.suffix in (".pt", ".pth") or head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") \
            or head[:2] == b"PK":
        return _read_torch(path, with_tensors)
    return _read_safetensors(path, with_tensors)


def _safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header, read without torch (format: u64
    little-endian header length, then that many bytes of JSON)."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("file too short")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100_000_000):
            raise ValueError(f"header length {n} out of range")
        header = json.loads(f.read(n))
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def _read_safetensors(path: Path, with_tensors: bool):
    if not with_tensors:
        # Metadata only (the model list, batch inference through ONNX Runtime): no torch.
        try:
            raw_meta = _safetensors_metadata(path).get(META_KEY)
        except Exception as e:
            raise CheckpointError(f"{path.name}: not a valid model file ({_one_line(e)})") from None
        if not isinstance(raw_meta, str):
            raise CheckpointError(f"{path.name}: safetensors file without mnist-desktop metadata")
        try:
            return ModelMeta.from_json(raw_meta), None
        except CheckpointError as e:
            raise CheckpointError(f"{path.name}: {e}" if not str(e).startswith(path.name) else str(e)) from None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw_meta = (f.metadata() or {}).get(META_KEY)
            if raw_meta is None:
                raise CheckpointError(f"{path.name}: safetensors file without mnist-desktop metadata")
            meta = ModelMeta.from_json(raw_meta)
            state = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else None
    except CheckpointError as e:
        raise CheckpointError(f"{path.name}: {e}" if not str(e).startswith(path.name) else str(e)) from None
    except Exception as e:  # safetensors raises several types for malformed files
        raise CheckpointError(f"{path.name}: not a valid model file ({_one_line(e)})") from None
    return meta, state


def _read_torch(path: Path, with_tensors: bool):
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for hostile pickles, others for corrupt files
        raise CheckpointError(
            f"{path.name}: refused: not a safe mnist-desktop model file ({_one_line(e)})") from None
    if not isinstance(obj, dict) or set(obj) != {META_KEY, "state_dict"} \
            or not isinstance(obj[META_KEY], str) or not isinstance(obj["state_dict"], dict) \
            or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj["state_dict"].items()):
        raise CheckpointError(f"{path.name}: refused: torch file does not follow the mnist-desktop schema")
    try:
        meta = ModelMeta.from_json(obj[META_KEY])
    except CheckpointError as e:
        raise CheckpointError(f"{path.name}: {e}") from None
    return meta, (obj["state_dict"] if with_tensors else None)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    msg = text[0] if text else type(e).__name__
    return msg[:200]
