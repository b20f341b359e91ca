"""Loading a model for a job: the one place that chooses backend, precision and device.

Two kinds of job need a model:

* ``batch`` (``classify``, the batch window, evaluation, the HTTP API): on a CPU the
  network runs in ONNX Runtime through an ONNX copy of the model file (exported once in a
  child process when there is none yet, so the process never imports torch); ``int8``
  runs its quantized copy; ``bf16`` runs torch in bfloat16 where the CPU computes it
  natively. On a GPU, or when no copy can be had, it runs in torch.
* ``live`` (the drawing canvas): one image at a time on one thread; ONNX Runtime when a
  copy already exists (it never waits for an export), else torch on one thread.

Every fallback is explained by one line in :attr:`LoadedPredictor.notes`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from mnist_desktop.core.checkpoint import CheckpointError, ModelMeta, check_model
from mnist_desktop.core.predictor import Predictor

PRECISIONS = ("fp32", "int8", "bf16")
PURPOSES = ("batch", "live")

__all__ = ["PRECISIONS", "PURPOSES", "ModelChoice", "LoadedPredictor", "load_predictor", "CheckpointError"]


@dataclass(frozen=True)
class ModelChoice:
    """What a job asks for.

    Parameters
    ----------
    model
        Model file; None for the bundled model.
    device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (anything else: the CPU, with a note).
    precision
        ``fp32`` (exact), ``int8`` (quantized ONNX copy, CPU) or ``bf16`` (torch, CPUs
        with native bfloat16). Only ``batch`` jobs use anything but fp32.
    purpose
        ``batch`` or ``live`` (see the module doc).
    threads
        Intra-op threads of the forward pass.
    """

    model: str | os.PathLike | None = None
    device: str = "auto"
    precision: str = "fp32"
    purpose: Literal["batch", "live"] = "batch"
    threads: int = 1

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
        if self.purpose not in PURPOSES:
            raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}")

    def model_path(self) -> Path:
        from mnist_desktop.core.paths import default_model_path

        return Path(self.model) if self.model else default_model_path()


@dataclass
class LoadedPredictor:
    """A predictor and what it really runs: ``precision`` is what the forward pass
    computes in (``fp32``, ``int8`` or ``bf16``); ``notes`` say, one line each, where
    that or the device differs from the request."""

    predictor: Predictor
    precision: str = "fp32"
    notes: list[str] = field(default_factory=list)

    @property
    def backend(self) -> str:
        return self.predictor.backend

    def describe(self) -> str:
        """E.g. ``'default.safetensors on cpu (onnxruntime, fp32)'``."""
        p = self.predictor
        return f"{p.path.name} on {p.device} ({p.backend}, {self.precision})"


def load_predictor(choice: ModelChoice, status: Callable[[str], None] | None = None) -> LoadedPredictor:
    """Load ``choice.model`` for a job (see the module doc).

    ``status`` hears about one-time work that takes seconds (exporting or quantizing an
    ONNX copy).

    Raises
    ------
    CheckpointError
        The model file is missing, corrupt, hostile or not a model (one line).
    """
    path = choice.model_path()
    # A missing, corrupt or hostile file fails here, with one line, before any backend
    # is chosen or any copy exported (torch-free for safetensors files).
    meta = check_model(path)
    if choice.purpose == "live":
        loaded = _live(path, meta, choice.device)
    elif choice.precision == "bf16":
        loaded = _torch_bf16(path, choice.device)
    else:
        loaded = _batch(path, meta, choice.device, choice.precision, choice.threads, status)
    msg = loaded.predictor.device_message
    if msg and msg not in loaded.notes:
        loaded.notes.insert(0, msg)
    return loaded


# --------------------------------------------------------------------------- the choices

def _cuda_present() -> bool:
    """Whether an NVIDIA driver is visible, checked without importing torch."""
    import ctypes.util

    return Path("/proc/driver/nvidia/version").exists() or ctypes.util.find_library("nvcuda") is not None \
        or ctypes.util.find_library("cuda") is not None


def onnx_wanted(device: str) -> bool:
    """Whether ``device`` means the CPU here (``auto`` without an NVIDIA driver)."""
    device = (device or "auto").lower()
    return device == "cpu" or (device == "auto" and not _cuda_present())


LITE_MODEL_MESSAGE = ("{name} has no ONNX copy, and this lite build (ONNX Runtime only) cannot run it "
                      "without one; use the full mnist-desktop program, or a model with its .onnx copy beside it")


def _torch(path: Path, device: str) -> Predictor:
    from mnist_desktop.core.flavour import has_torch

    if not has_torch():   # the lite flavour: one clear line (exit 3), not a traceback
        raise CheckpointError(LITE_MODEL_MESSAGE.format(name=path.name))
    from mnist_desktop.core.torch_predictor import TorchPredictor

    return TorchPredictor.from_file(path, device)


def _batch(path: Path, meta: ModelMeta, device: str, precision: str, threads: int, status) -> LoadedPredictor:
    from mnist_desktop.core.onnx_predictor import OnnxPredictor, OnnxUnavailable, onnx_for

    if onnx_wanted(device):
        try:
            copy = onnx_for(path, precision=precision, status=status)
            return LoadedPredictor(OnnxPredictor(copy, threads, source=path, meta=meta), precision)
        except (OnnxUnavailable, CheckpointError) as e:
            reason = str(e)
        except Exception as e:  # an ONNX Runtime that cannot load the copy on this machine
            reason = f"ONNX Runtime failed ({type(e).__name__}: {str(e)[:120]})"
        note = f"{reason}; classifying with torch" + (" in fp32" if precision == "int8" else "")
    elif precision == "int8":
        note = "int8 runs only through ONNX Runtime on the CPU; classifying with torch in fp32"
    else:
        note = ""
    return LoadedPredictor(_torch(path, device), "fp32", [note] if note else [])


def _torch_bf16(path: Path, device: str) -> LoadedPredictor:
    from mnist_desktop.core.batch import inference_precision

    predictor = _torch(path, device)
    precision, note = inference_precision(predictor, "bf16")
    return LoadedPredictor(predictor, precision, [note] if note else [])


def _live(path: Path, meta: ModelMeta, device: str) -> LoadedPredictor:
    from mnist_desktop.core.onnx_predictor import OnnxPredictor, OnnxUnavailable, onnx_for

    notes = []
    if onnx_wanted(device):
        try:
            return LoadedPredictor(OnnxPredictor(onnx_for(path, make=False), 1, source=path, meta=meta))
        except OnnxUnavailable:  # no copy yet: torch, as for any model without one
            pass
        except Exception as e:  # a copy this ONNX Runtime cannot run: torch, and say so
            notes.append(f"ONNX Runtime could not run the model's ONNX copy ({type(e).__name__}); using torch")
    predictor = _torch(path, device)   # raises the lite build's line without torch
    import torch

    # One thread: on a busy 2-core machine, 2-thread inference stalls under contention.
    torch.set_num_threads(1)
    if notes and not predictor.device_message:
        predictor.device_message = notes[0]   # shown by the window like a device fallback
    return LoadedPredictor(predictor, "fp32", notes)
