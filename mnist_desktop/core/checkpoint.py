"""Self-describing, safe model files.

A model file is a `safetensors <https://github.com/huggingface/safetensors>`_ file: the
tensors of the network's ``state_dict`` plus one metadata entry, ``mnist_desktop``, holding
the JSON of :class:`ModelMeta` (architecture and arguments, class labels, normalization,
preprocessing options, uncertainty rule, training config, metrics, data fingerprint,
library versions). Loading such a file never executes code.

Files written by ``torch.save`` (``.pt``/``.pth``) are accepted only through
``torch.load(weights_only=True)`` and only with the same schema
(``{"mnist_desktop": <json str>, "state_dict": {name: tensor}}``); a crafted pickle is
refused with a one-line :class:`CheckpointError`, and never run.

Nothing a file says is trusted before it is checked (:mod:`~mnist_desktop.core.model_file`):
only regular files of bounded size are opened, headers and metadata are bounded in size
and depth, architecture arguments in type, range and parameter count
(:mod:`~mnist_desktop.core.arch_limits`), and every weight must be floating point and
finite.

Saving is atomic: the file is written to a temporary name in the same folder, flushed to
disk and renamed over the target, so a crash mid-save never corrupts the previous file.
"""

from __future__ import annotations

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
from mnist_desktop.core.model_file import COUNTER_SUFFIX, check_regular_file, file_format, read_safetensors


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
    """Read only the metadata of a model file (cheap: no tensors are loaded), validated."""
    meta, _ = _read(Path(path), with_tensors=False)
    return meta


def check_model(path: str | os.PathLike) -> ModelMeta:
    """Check a whole model file without building its network: the file itself, the
    metadata (architecture arguments, numbers, preprocessing options) and every tensor
    (floating point and finite). Torch-free for safetensors files.

    Raises
    ------
    CheckpointError
        One line saying why the file is refused.
    """
    path = Path(path)
    if file_format(path) == "safetensors":
        return read_safetensors(path, check_values=True).meta
    meta, state = _read_torch(path, with_tensors=True)
    _check_state(path, state)
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
    _check_state(path, state)
    try:
        model = build_model(meta.arch, num_classes=meta.num_classes, **meta.arch_args)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path.name}: cannot build architecture {meta.arch!r}: {_one_line(e)}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path.name}: weights do not match architecture {meta.arch!r} ({first})") from None
    model.eval()
    return LoadedModel(model=model, meta=meta, path=path)


def _read(path: Path, with_tensors: bool):
    if file_format(path) == "torch":
        return _read_torch(path, with_tensors)
    return _read_safetensors(path, with_tensors)


def _check_state(path: Path, state: dict) -> None:
    """Every weight floating point and finite (batch norm's step counters may be integers)."""
    import torch

    for name, t in state.items():
        shown = repr(name[:60])
        if t.is_floating_point():
            if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
                raise CheckpointError(f"{path.name}: refused: tensor {shown} is {t.dtype}; a model's weights "
                                      "must be float32, float16 or bfloat16")
            if not bool(torch.isfinite(t).all()):
                raise CheckpointError(f"{path.name}: refused: tensor {shown} holds NaN or infinite values")
        elif not (name.endswith(COUNTER_SUFFIX) and t.dim() == 0 and t.dtype in (torch.int64, torch.int32)):
            raise CheckpointError(f"{path.name}: refused: tensor {shown} is {t.dtype}; a model's weights "
                                  "must be float32, float16 or bfloat16")


def _read_safetensors(path: Path, with_tensors: bool):
    # The header, tensor table and metadata are checked without torch first; safetensors
    # then reads the tensors the table describes.
    meta = read_safetensors(path).meta
    if not with_tensors:
        return meta, None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for malformed files
        raise CheckpointError(f"{path.name}: not a valid model file ({_one_line(e)})") from None
    return meta, state


def _read_torch(path: Path, with_tensors: bool):
    import pickle
    import warnings

    import torch

    check_regular_file(path)
    try:
        with warnings.catch_warnings():   # e.g. "Detected pickle protocol 4": the refusal says it all
            warnings.simplefilter("ignore")
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's message advises weights_only=False, which would run the file's code.
        raise CheckpointError(f"{path.name}: refused: a pickle with code or objects outside plain tensors "
                              "(not run)") from None
    except Exception as e:  # a truncated zip, not a pickle at all, ...
        reason = _one_line(e)
        if "weights_only" in reason or "pickle" in reason.lower():
            reason = type(e).__name__
        raise CheckpointError(f"{path.name}: refused: not a readable torch file ({reason}; not run)") from None
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
