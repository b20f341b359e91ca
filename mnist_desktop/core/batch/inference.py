"""Inference on the parent's side of a batch run (the torch backend, and the fallback
when the workers cannot run ONNX Runtime); torch is imported only when used."""

from __future__ import annotations

import numpy as np

from mnist_desktop.core.onnx_predictor import OnnxPredictor
from mnist_desktop.core.predictor import Predictor

PRECISIONS = ("fp32", "bf16")


def _torch_on_cpu(predictor: Predictor) -> bool:
    return predictor.backend == "torch" and predictor.device == "cpu"


def inference_precision(predictor: Predictor, requested: str) -> tuple[str, str]:
    """The precision the engine will really use for ``requested`` with ``predictor``, and
    a one-line note when that is not what was asked for (bf16 needs a torch model on a
    CPU that computes bfloat16 natively)."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
    if requested == "fp32":
        return "fp32", ""
    if not _torch_on_cpu(predictor):
        return "fp32", "bf16 runs only with the torch backend on the CPU; classifying in fp32"
    import torch

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "fp32", "this CPU has no native bfloat16; classifying in fp32"
    return "bf16", ""


class _Inference:
    """Batched inference on the parent's side.

    On CPU a private channels-last copy of the network is used: the same fp32 weights
    and math (logits agree to ~1e-6), about 1.5x the throughput of the default layout
    for small convolutions. The torch thread count is set for the run and restored.
    Anything that is not a CPU :class:`~mnist_desktop.core.torch_predictor.TorchPredictor` goes
    through ``predictor.probabilities``.

    ``precision="bf16"`` runs that copy in bfloat16 where the CPU computes it natively
    (AVX512-BF16 / AMX); elsewhere it stays fp32 and says so in :attr:`note`. Its speed-up
    and the answers it changes depend on the CPU's bf16 kernels; the README gives the
    figures with the CPU they were measured on.
    """

    def __init__(self, predictor: Predictor, threads: int | None, precision: str = "fp32"):
        self.predictor = predictor
        self.precision, self.note = inference_precision(predictor, precision)
        self._model = None
        self._saved_threads = None
        if threads and isinstance(predictor, OnnxPredictor):
            predictor.set_threads(threads)
        if not _torch_on_cpu(predictor):
            return
        model, meta = predictor.model, predictor.meta
        import copy

        import torch

        self._torch = torch
        self._model = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
        if self.precision == "bf16":
            self._model = self._model.to(torch.bfloat16)
        self._mean, self._std = meta.normalization.mean, meta.normalization.std
        self._meta = meta
        if threads:
            self._saved_threads = torch.get_num_threads()
            torch.set_num_threads(threads)

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._model is None:
            probs, unc, _ = self.predictor.probabilities(images)
            return probs, unc
        from mnist_desktop.core.predictor import apply_uncertainty
        from mnist_desktop.core.preprocess import normalize

        torch = self._torch
        x = torch.from_numpy(normalize(images, self._mean, self._std)[:, None])
        if self.precision == "bf16":
            x = x.to(torch.bfloat16)
        with torch.inference_mode():
            logits = self._model(x.contiguous(memory_format=torch.channels_last)).float().numpy()
        probs, unc, _ = apply_uncertainty(logits, self._meta)
        return probs, unc

    def close(self) -> None:
        if self._saved_threads is not None:
            self._torch.set_num_threads(self._saved_threads)
            self._saved_threads = None
