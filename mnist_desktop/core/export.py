"""Exports of a loaded model: TorchScript, ONNX (each verified against the original) and
the int8 quantization of an ONNX copy.

Every ONNX copy carries the model's metadata and the SHA-256 of the model file it was made
from (:data:`SOURCE_KEY`), which :mod:`mnist_desktop.core.onnx_predictor` checks before it
runs a copy. This module imports :mod:`~mnist_desktop.core.checkpoint`, never the other
way round.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from mnist_desktop.core.checkpoint import META_KEY, CheckpointError, LoadedModel, ModelMeta, atomic_write, \
    atomic_write_bytes
from mnist_desktop.core.onnx_predictor import SOURCE_KEY, file_sha256  # noqa: F401 (re-exported)
from mnist_desktop.core.preprocess import normalize

def export_torchscript(loaded: LoadedModel, path: str | os.PathLike, atol: float = 1e-5) -> Path:
    """Export to TorchScript (metadata embedded as an extra file) and verify parity."""
    import torch

    example = torch.zeros(2, 1, 28, 28)
    with torch.no_grad():
        traced = torch.jit.trace(loaded.model, example)
    extra = {"mnist_desktop.json": loaded.meta.to_json()}
    try:
        atomic_write(path, lambda tmp: torch.jit.save(traced, tmp, _extra_files=extra))
    except OSError as e:
        raise CheckpointError(f"could not write {path}: {e.strerror or e}") from None
    reloaded = torch.jit.load(str(path), map_location="cpu")
    _check_parity(loaded, lambda x: reloaded(x).detach().numpy(), atol, "TorchScript")
    return Path(path)


def export_onnx(loaded: LoadedModel, path: str | os.PathLike, atol: float = 1e-5) -> Path:
    """Export to ONNX (dynamic batch, metadata in ``metadata_props``) and verify parity
    with onnxruntime."""
    import io

    import onnx
    import torch

    buf = io.BytesIO()
    example = torch.zeros(1, 1, 28, 28)
    torch.onnx.export(loaded.model, (example,), buf, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, loaded.meta.to_json()
    if loaded.path is not None and Path(loaded.path).is_file():
        # Which model file this copy was made from (mnist_desktop.core.onnx_predictor).
        entry = proto.metadata_props.add()
        entry.key, entry.value = SOURCE_KEY, file_sha256(loaded.path)
    try:
        atomic_write_bytes(path, proto.SerializeToString())
    except OSError as e:
        raise CheckpointError(f"could not write {path}: {e.strerror or e}") from None
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _check_parity(loaded, lambda x: sess.run(None, {"image": x.numpy()})[0], atol, "ONNX")
    return Path(path)


def _check_parity(loaded: LoadedModel, run: Callable, atol: float, what: str) -> None:
    import numpy as np
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 28, 28, generator=gen)
    x = (x - loaded.meta.normalization.mean) / loaded.meta.normalization.std
    with torch.no_grad():
        ref = torch.softmax(loaded.model(x), dim=1).numpy()
    got = run(x)
    got = np.exp(got - got.max(axis=1, keepdims=True))
    got /= got.sum(axis=1, keepdims=True)
    err = float(np.abs(ref - got).max())
    if not err <= atol:
        raise CheckpointError(f"{what} export differs from the original model (max |dp| = {err:.2e})")


def quantize_onnx(fp32: Path, target: Path, calibration: np.ndarray) -> Path:
    """Static int8 quantization of an fp32 ONNX copy, its activations calibrated on
    ``calibration`` (``(N, 28, 28)`` preprocessed [0, 1] images); the metadata (model
    description, source digest) is carried over.

    The calibration images come from the caller: ``mnist-desktop export --format
    onnx-int8`` passes generated digits from :mod:`training.synth`, so the app's core never
    generates training data.

    Weights are quantized to 7 bits (``reduce_range``) so that the copy gives the same
    answers on every CPU. ONNX Runtime's uint8 x int8 kernels on x86-64 CPUs without VNNI
    (AVX2, AVX-512 without VNNI) add pairs of products into int16 with saturation
    (``vpmaddubsw``), while VNNI CPUs (``vpdpbusd``) and ARM add them into int32. With 8-bit
    weights a pair reaches 2 * 255 * 127 = 64,770 and clips: on an AMD EPYC (AVX2, no
    VNNI) the bundled model's int8 copy then changed 49 of the 10,000 MNIST test answers
    against 5 with exact arithmetic. With 7-bit weights a pair stays within 2 * 255 * 64
    = 32,640 < 2**15 and every kernel computes the same integers: the same EPYC gives bit
    for bit what ONNX Runtime's exact uint8 x uint8 kernels give
    (``session.x64quantprecision``, which would cost the whole int8 speed-up there), and 6
    of the 10,000 answers change, on any CPU.
    """

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    props = {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}
    meta = ModelMeta.from_json(props[META_KEY])
    x = normalize(np.asarray(calibration, np.float32), meta.normalization.mean, meta.normalization.std)[:, None]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter([{"image": np.ascontiguousarray(x[i:i + 100])} for i in range(0, len(x), 100)])

        def get_next(self):
            return next(self._batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32), str(pre))
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        reduce_range=True)   # 7-bit weights: no int16 saturation on any CPU (above)
        model = onnx.load(str(out))
    del model.metadata_props[:]
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, model.SerializeToString())
    return target
