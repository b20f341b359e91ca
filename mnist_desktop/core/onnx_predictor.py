"""Batch inference through ONNX Runtime, without torch in the process.

Classifying a folder on a CPU needs only the network's forward pass. ONNX Runtime runs it
about 1.6x faster than eager PyTorch for this small CNN on one core, and a process that
never imports torch stays a few hundred MB smaller (the CUDA build of torch alone maps
~530 MB). So batch classification on the CPU (the ``classify`` command, the batch window,
the benchmark) uses an ONNX copy of the model, verified against the original when it was
exported (max |dp| < 1e-5), and falls back to torch when that is not possible.

Where the ONNX copy comes from:

* ``<model>.onnx`` beside the model file, when its recorded source digest matches the
  model file (the bundled model ships one);
* otherwise a cached copy in the user cache folder, keyed by the model file's SHA-256,
  exported on first use by ``mnist-desktop export`` in a child process, so this process
  still never imports torch.

Every copy records the SHA-256 of the model file it came from, so an edited or retrained
model file never runs with stale weights.

``precision="int8"`` (opt-in) runs a statically quantized copy (ONNX Runtime QDQ, weights
per channel, activations calibrated on 1,000 generated stroke-drawn digits from the
``calibration`` seeds of :mod:`training.synth`), made from the fp32 copy on first use by
``mnist-desktop export --format onnx-int8`` in a child process and cached the same way.
Its 7-bit weights make its answers the same on every CPU, VNNI or not
(:func:`~mnist_desktop.core.export.quantize_onnx`); its speed-up depends on the CPU's
int8 kernels: ``python -m mnist_desktop.batch_bench`` measures it, and the README gives
the figures with the CPU they were measured on.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from mnist_desktop.core.model_meta import META_KEY, CheckpointError, ModelMeta
from mnist_desktop.core.predictor import PredictMixin
from mnist_desktop.core.preprocess import PreprocessOptions, normalize


#: The ``metadata_props`` key of an ONNX copy naming the SHA-256 of the model file it came from.
SOURCE_KEY = "mnist_desktop.source_sha256"


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class OnnxUnavailable(RuntimeError):
    """No usable ONNX copy (onnxruntime missing, export failed); the message is one line."""


def _recorded_source(onnx_path: Path) -> str | None:
    """The source digest an ONNX file records (None if ONNX Runtime cannot load the file)."""
    try:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        return sess.get_modelmeta().custom_metadata_map.get(SOURCE_KEY)
    except Exception:
        return None


def cache_dir() -> Path:
    from mnist_desktop.core.paths import user_cache_dir

    return Path(user_cache_dir()) / "onnx"


def export_command(model: Path, output: Path, fmt: str = "onnx") -> list[str]:
    """``mnist-desktop export`` as a child process (the frozen app is its own CLI)."""
    args = ["export", "--model", str(model), "--format", fmt, "-o", str(output)]
    if getattr(sys, "frozen", False):
        return [sys.executable, *args]
    return [sys.executable, "-m", "mnist_desktop", *args]


PRECISIONS = ("fp32", "int8")


def onnx_for(model_path: str | os.PathLike, cache: Path | None = None, timeout: float = 300,
             precision: str = "fp32", status=None, make: bool = True) -> Path:
    """An ONNX copy of ``model_path`` that records its current digest (see module doc);
    with ``make=False`` only an existing one (no export, which takes seconds).

    Raises
    ------
    OnnxUnavailable
        When onnxruntime is missing, the export fails, or (``make=False``) there is no
        copy yet (one line).
    """
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise OnnxUnavailable("onnxruntime is not installed") from None
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
    model_path = Path(model_path)
    digest = file_sha256(model_path)
    suffix = ".int8.onnx" if precision == "int8" else ".onnx"
    found, target = _existing_copy(model_path, suffix, digest, cache)
    if found:
        return target
    if not make:
        raise OnnxUnavailable(f"no ONNX copy of {model_path.name} yet")
    if precision == "int8":
        onnx_for(model_path, cache, timeout, status=status)   # the fp32 copy it is made from
        if status:
            status(f"making an int8 copy of {model_path.name} (once; cached in {target.parent})")
        what = "an int8 copy"
    else:
        if status:
            status(f"exporting an ONNX copy of {model_path.name} (once; cached in {target.parent})")
        what = "an ONNX copy"
    fmt = "onnx-int8" if precision == "int8" else "onnx"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(export_command(model_path, target, fmt), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as e:
        raise OnnxUnavailable(f"could not make {what} ({type(e).__name__}: {e})") from None
    if done.returncode != 0 or _recorded_source(target) != digest:
        last = (done.stderr or done.stdout or "").strip().splitlines()
        raise OnnxUnavailable(f"could not make {what}: {last[-1] if last else f'exit {done.returncode}'}")
    return target


def _existing_copy(model_path: Path, suffix: str, digest: str, cache: Path | None) -> tuple[bool, Path]:
    """``(True, path)`` of a fresh copy beside the model or in the cache, else ``(False,
    where to make one)``: the cache path (the model's folder may be read-only)."""
    sibling = model_path.with_suffix(suffix)
    if sibling.is_file() and _recorded_source(sibling) == digest:
        return True, sibling
    target = (cache or cache_dir()) / f"{digest}{suffix}"
    return target.is_file() and _recorded_source(target) == digest, target


class OnnxPredictor(PredictMixin):
    """:class:`~mnist_desktop.core.predictor.Predictor`'s interface (``labels``,
    ``options``, ``meta``, ``probabilities``, ``predict``), run by ONNX Runtime on the CPU."""

    device = "cpu"
    device_message = None
    backend = "onnxruntime"

    def __init__(self, onnx_path: str | os.PathLike, threads: int = 1, source: str | os.PathLike | None = None):
        import onnxruntime as ort

        self._ort = ort
        self.path = Path(source or onnx_path)
        self.onnx_path = Path(onnx_path)
        self._threads = 0
        self._session = None
        self.set_threads(threads)
        raw = self._session.get_modelmeta().custom_metadata_map.get(META_KEY)
        if not raw:
            raise CheckpointError(f"{self.onnx_path.name}: no mnist-desktop metadata in the ONNX file")
        self.meta = ModelMeta.from_json(raw)
        self.options = PreprocessOptions.from_dict(self.meta.preprocess)
        self._mean, self._std = self.meta.normalization.mean, self.meta.normalization.std

    def set_threads(self, threads: int) -> None:
        """Intra-op threads for the forward pass (rebuilds the session if they change)."""
        threads = max(1, int(threads or 1))
        if threads == self._threads and self._session is not None:
            return
        so = self._ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = self._ort.InferenceSession(str(self.onnx_path), so, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._threads = threads

    def logits(self, images: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(normalize(images, self._mean, self._std)[:, None])
        return self._session.run(None, {self._input: x})[0]
