"""Batch inference through ONNX Runtime, without torch in the process.

Classifying a folder on a CPU needs only the network's forward pass. ONNX Runtime runs it
about 1.6x faster than eager PyTorch for this small CNN on one core, and a process that
never imports torch stays a few hundred MB smaller (the CUDA build of torch alone maps
~530 MB). So batch classification on the CPU (the ``classify`` command, the batch window,
the benchmark) uses an ONNX copy of the model, verified against the original when it was
exported (max |dp| < 1e-5), and falls back to torch when that is not possible.

Which ONNX copy runs: an ONNX graph is close to code (a ``Loop`` can spin for ever), so a
copy is never trusted on its own word (the source digest it records, which anyone can
write). Only two kinds run:

* a copy shipped with the app: ``<model>.onnx`` beside the model file when
  ``resources/models/trusted-onnx.json`` lists that pair of SHA-256 digests (the bundled
  model's copy);
* a copy this app exported into its cache folder, named by the model file's SHA-256 and
  recorded, with its own SHA-256, in a record file written after it (``<copy>.json``).
  One process exports at a time (a lock file), in a child process (``mnist-desktop
  export``), so this process still never imports torch; the copy is renamed into place
  whole.

Any other ``.onnx`` beside a model is ignored (a one-line note when the app exports its
own). Labels, normalization, preprocessing and the uncertainty rule always come from the
model file itself, never from the ONNX copy's metadata; an edited or retrained model file
has another digest, so it never runs with stale weights.

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

import contextlib
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from mnist_desktop.core.model_file import file_format, open_regular, read_safetensors
from mnist_desktop.core.model_meta import CheckpointError, ModelMeta, loads_bounded
from mnist_desktop.core.predictor import PredictMixin
from mnist_desktop.core.preprocess import PreprocessOptions, normalize


#: The ``metadata_props`` key of an ONNX copy naming the SHA-256 of the model file it came from.
SOURCE_KEY = "mnist_desktop.source_sha256"
#: The list of ONNX copies shipped with the app, in ``resources/models``.
TRUSTED_COPIES = "trusted-onnx.json"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a regular file (a FIFO or device is refused, not read)."""
    h = hashlib.sha256()
    with open_regular(path, max_bytes=None) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class OnnxUnavailable(RuntimeError):
    """No usable ONNX copy (onnxruntime missing, export failed); the message is one line."""


def _recorded_source(onnx_path: Path) -> str | None:
    """The source digest an ONNX file records (None if ONNX Runtime cannot load the file).
    Only for copies this app just made: it opens the graph."""
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


def export_command(model: Path, output: Path, fmt: str = "onnx", from_onnx: Path | None = None) -> list[str]:
    """``mnist-desktop export`` as a child process (the frozen app is its own CLI);
    ``from_onnx``: the fp32 copy an int8 copy is quantized from (already checked here)."""
    args = ["export", "--model", str(model), "--format", fmt, "-o", str(output)]
    if from_onnx is not None:
        args += ["--from-onnx", str(from_onnx)]
    from mnist_desktop.core.app_command import app_command

    return app_command(*args)


PRECISIONS = ("fp32", "int8")
#: The int8 copy's name carries its recipe (``w7``: 7-bit weights, which no CPU's int8
#: kernels saturate), so a copy cached by an older recipe (8-bit weights, whose answers
#: differ between CPUs with and without VNNI) is never reused.
INT8_SUFFIX = ".int8w7.onnx"


def onnx_for(model_path: str | os.PathLike, cache: Path | None = None, timeout: float = 300,
             precision: str = "fp32", status=None, make: bool = True) -> Path:
    """A trusted ONNX copy of ``model_path`` (see the module doc); with ``make=False``
    only an existing one (no export, which takes seconds).

    Raises
    ------
    OnnxUnavailable
        When onnxruntime is missing, the model is not a safetensors file, the export
        fails, or (``make=False``) there is no copy yet (one line).
    CheckpointError
        The model file cannot be read (missing, not a regular file).
    """
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise OnnxUnavailable("onnxruntime is not installed") from None
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
    model_path = Path(model_path)
    if file_format(model_path) != "safetensors":
        raise OnnxUnavailable(f"{model_path.name} is a torch file; ONNX copies are made of safetensors models")
    digest = file_sha256(model_path)
    suffix = INT8_SUFFIX if precision == "int8" else ".onnx"
    sibling = model_path.with_suffix(suffix)
    if _shipped_copy(sibling, digest):
        return sibling
    target = (cache or cache_dir()) / f"{digest}{suffix}"
    if _cached_copy(target, digest):
        return target
    if not make:
        raise OnnxUnavailable(f"no ONNX copy of {model_path.name} yet")
    from mnist_desktop.core.flavour import has_torch

    if not has_torch():   # the lite program: exporting needs torch
        raise OnnxUnavailable(f"{model_path.name} has no ONNX copy and this program has no torch to make one")
    # The fp32 copy an int8 copy is made from, handed to the child so it is not exported twice.
    fp32 = onnx_for(model_path, cache, timeout, status=status) if precision == "int8" else None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _export_lock(target, timeout):
            if not _cached_copy(target, digest):   # not made by another process meanwhile
                _export(model_path, sibling, target, digest, precision, timeout, status, fp32)
    except OSError as e:
        raise OnnxUnavailable(f"could not make an ONNX copy ({type(e).__name__}: {e})") from None
    return target


def _export(model_path: Path, sibling: Path, target: Path, digest: str, precision: str, timeout: float,
            status, fp32: Path | None = None) -> None:
    """Export into a private file, check it, rename it onto ``target``, then record it."""
    what = "an int8 copy" if precision == "int8" else "an ONNX copy"
    if status:
        if sibling.exists():
            status(f"ignoring {sibling.name} beside the model: the app did not make it and does not "
                   "ship it (not used)")
        verb = "making an int8 copy" if precision == "int8" else "exporting an ONNX copy"
        status(f"{verb} of {model_path.name} (once; cached in {target.parent})")
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial.onnx")
    try:
        done = subprocess.run(export_command(model_path, partial, "onnx-int8" if precision == "int8" else "onnx",
                                             fp32),
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0 or _recorded_source(partial) != digest:
            last = (done.stderr or done.stdout or "").strip().splitlines()
            raise OnnxUnavailable(f"could not make {what}: {last[-1] if last else f'exit {done.returncode}'}")
        record = {"model_sha256": digest, "onnx_sha256": file_sha256(partial), "precision": precision}
        os.replace(partial, target)
    except subprocess.SubprocessError as e:
        raise OnnxUnavailable(f"could not make {what} ({type(e).__name__}: {e})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    from mnist_desktop.core.atomic_io import atomic_write_bytes

    atomic_write_bytes(_record_path(target), json.dumps(record).encode())


def _record_path(copy: Path) -> Path:
    return copy.with_name(copy.name + ".json")


def _cached_copy(target: Path, digest: str) -> bool:
    """Whether ``target`` is a copy this app exported from the model with ``digest``: its
    record names both digests and the file still has the recorded one."""
    try:
        with open_regular(_record_path(target), max_bytes=4096) as f:
            record = loads_bounded(f.read(), 4096, "ONNX cache record")
        return isinstance(record, dict) and record.get("model_sha256") == digest \
            and record.get("onnx_sha256") == file_sha256(target)
    except (CheckpointError, OSError):
        return False


def trusted_copies() -> list[dict]:
    """The entries of ``resources/models/trusted-onnx.json``: the ONNX copies shipped with
    the app, each with ``model_sha256`` and ``onnx_sha256``."""
    from mnist_desktop.core.paths import resources_dir

    try:
        with open_regular(resources_dir() / "models" / TRUSTED_COPIES, max_bytes=1 << 20) as f:
            listed = loads_bounded(f.read(), 1 << 20, TRUSTED_COPIES)
    except (CheckpointError, OSError):
        return []
    copies = listed.get("copies") if isinstance(listed, dict) else None
    return [c for c in copies if isinstance(c, dict)] if isinstance(copies, list) else []


def _shipped_copy(sibling: Path, digest: str) -> bool:
    """Whether ``sibling`` is a copy of the model with ``digest`` that the app ships."""
    wanted = {c.get("onnx_sha256") for c in trusted_copies() if c.get("model_sha256") == digest}
    if not wanted:
        return False   # the sibling is not even read
    try:
        return file_sha256(sibling) in wanted
    except (CheckpointError, OSError):
        return False


@contextlib.contextmanager
def _export_lock(target: Path, timeout: float):
    """Hold ``<target>.lock`` (``fcntl.flock`` / ``msvcrt.locking``) so that one process
    at a time exports a copy; the others wait, then find it made."""
    fd = os.open(target.with_name(target.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while not _try_lock(fd):
            if time.monotonic() > deadline:
                raise OnnxUnavailable(f"another process has been making {target.name} for over {timeout:.0f} s")
            time.sleep(0.05)
        try:
            yield
        finally:
            _unlock(fd)
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    if os.name == "nt":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _unlock(fd: int) -> None:
    if os.name == "nt":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


class OnnxPredictor(PredictMixin):
    """:class:`~mnist_desktop.core.predictor.Predictor`'s interface (``labels``,
    ``options``, ``meta``, ``probabilities``, ``predict``), run by ONNX Runtime on the CPU."""

    device = "cpu"
    device_message = None
    backend = "onnxruntime"

    def __init__(self, onnx_path: str | os.PathLike, threads: int = 1, source: str | os.PathLike | None = None,
                 meta: ModelMeta | None = None):
        """Run the ONNX graph ``onnx_path`` of the model file ``source``.

        Labels, normalization, preprocessing and the uncertainty rule come from ``meta``
        or, without it, from the (safetensors) model file ``source``; never from the ONNX
        file, whose word is not trusted (which copy may run is :func:`onnx_for`'s call).
        """
        import onnxruntime as ort

        if meta is None:
            if source is None:
                raise CheckpointError(f"{Path(onnx_path).name}: the model file it was made from is needed")
            meta = read_safetensors(source).meta
        self._ort = ort
        self.path = Path(source or onnx_path)
        self.onnx_path = Path(onnx_path)
        self.meta = meta
        self.options = PreprocessOptions.from_dict(meta.preprocess)
        self._mean, self._std = meta.normalization.mean, meta.normalization.std
        self._threads = 0
        self._session = None
        self.set_threads(threads)
        width = self._session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != meta.num_classes:
            raise CheckpointError(f"{self.onnx_path.name}: gives {width} scores; the model has "
                                  f"{meta.num_classes} labels")

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
