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

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The metadata schema lives in model_meta (torch-free, imported by worker processes);
# checkpoint re-exports it for the many callers that read and write model files.
from mnist_desktop.core.model_meta import (FORMAT, FORMAT_VERSION, META_KEY, CheckpointError,  # noqa: F401
                                           ModelMeta, Normalization, UncertaintyRule)
from mnist_desktop.core.atomic_io import atomic_write, atomic_write_bytes  # noqa: F401


def library_versions() -> dict[str, str]:
    import numpy
    import torch

    from mnist_desktop import __version__

    return {"mnist_desktop": __version__, "torch": torch.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


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
