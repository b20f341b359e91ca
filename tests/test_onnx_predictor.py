"""Batch inference through ONNX Runtime: same answers as torch, no torch import,
never stale weights."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from mnist_desktop.core import onnx_predictor as op
from mnist_desktop.core.checkpoint import ModelMeta, save_model
from mnist_desktop.core.onnx_predictor import file_sha256
from mnist_desktop.core.models import build_model
from mnist_desktop.core.torch_predictor import TorchPredictor
from mnist_desktop.service.models import ModelChoice, load_predictor


def batch_predictor(path, device="auto", **kw):
    """The service's batch choice, as ``(predictor, notes joined)``."""
    loaded = load_predictor(ModelChoice(path, device, purpose="batch", **kw))
    return loaded.predictor, "; ".join(loaded.notes)


def canvas_predictor(path, device="auto"):
    """The service's live (canvas) choice."""
    return load_predictor(ModelChoice(path, device, purpose="live")).predictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_shipped_onnx_copy_is_fresh(default_model):
    sibling = default_model.with_suffix(".onnx")
    assert sibling.is_file(), "resources/models/default.onnx is missing: mnist-desktop export --format onnx"
    assert op._recorded_source(sibling) == file_sha256(default_model), \
        "default.onnx was exported from another default.safetensors: export it again"


def test_onnx_predictor_matches_torch(default_model, mnist_test):
    pred, note = batch_predictor(default_model, "cpu")
    assert isinstance(pred, op.OnnxPredictor) and note == ""
    ref = TorchPredictor.from_file(default_model, "cpu")
    images = mnist_test.images[:300].astype(np.float32) / 255
    p1, u1, s1 = pred.probabilities(images)
    p2, u2, s2 = ref.probabilities(images)
    assert np.abs(p1 - p2).max() < 1e-5 and np.array_equal(u1, u2)
    assert pred.labels == ref.labels and pred.options == ref.options
    pred.set_threads(2)
    assert np.abs(pred.probabilities(images)[0] - p1).max() < 1e-6


def _tiny_model(path, seed):
    torch.manual_seed(seed)
    save_model(path, build_model("mlp"), ModelMeta(arch="mlp"))
    return path


@pytest.mark.slow
def test_stale_copy_is_never_used(tmp_path):
    model = _tiny_model(tmp_path / "m.safetensors", 0)
    cache = tmp_path / "cache"
    first = op.onnx_for(model, cache)                     # exported in a child process
    assert first.parent == cache and op._recorded_source(first) == file_sha256(model)
    assert op.onnx_for(model, cache) == first             # reused
    _tiny_model(model, 1)                                 # the model file changes
    second = op.onnx_for(model, cache)
    assert second != first and op._recorded_source(second) == file_sha256(model)
    x = np.random.default_rng(0).random((4, 28, 28), dtype=np.float32)
    onnx_p = op.OnnxPredictor(second, source=model).probabilities(x)[0]
    torch_p = TorchPredictor.from_file(model, "cpu").probabilities(x)[0]
    assert np.abs(onnx_p - torch_p).max() < 1e-5


def test_falls_back_to_torch_with_a_note(default_model, monkeypatch):
    def unavailable(*a, **k):
        raise op.OnnxUnavailable("onnxruntime is not installed")
    monkeypatch.setattr(op, "onnx_for", unavailable)
    pred, note = batch_predictor(default_model, "cpu")
    assert isinstance(pred, TorchPredictor) and "onnxruntime is not installed" in note


@pytest.mark.parametrize("make", [batch_predictor, canvas_predictor])
def test_bad_model_file_fails_with_one_line(tmp_path, make):
    from mnist_desktop.core.checkpoint import CheckpointError

    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError) as e:
        make(bad, "cpu")
    assert "\n" not in str(e.value)


def test_classify_never_imports_torch(mnist_test, tmp_path):
    from PIL import Image

    for i in range(30):
        Image.fromarray(mnist_test.images[i]).save(tmp_path / f"{i}.png")
    code = ("import sys; from mnist_desktop.cli import main; "
            f"rc = main(['classify', {str(tmp_path)!r}, '-q', '-o', {str(tmp_path / 'out.csv')!r}, "
            "'--device', 'cpu']); print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["0", "False"], out.stderr
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 31


def _exact_int8_session(path):
    """ONNX Runtime with its exact uint8 x uint8 int8 kernels on x86-64 CPUs without VNNI."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.mark.slow
def test_int8_copy_is_cached_keyed_and_close(default_model, mnist_test, tmp_path):
    model = tmp_path / "m.safetensors"
    model.write_bytes(default_model.read_bytes())
    cache = tmp_path / "cache"
    int8 = op.onnx_for(model, cache, precision="int8")
    assert int8.name.endswith(op.INT8_SUFFIX) and op._recorded_source(int8) == file_sha256(model)
    assert op.onnx_for(model, cache, precision="int8") == int8
    images = mnist_test.images[:500].astype(np.float32) / 255
    q = op.OnnxPredictor(int8, source=model)
    ref = op.OnnxPredictor(op.onnx_for(model, cache), source=model)
    assert q.meta.to_json() == ref.meta.to_json()
    pq, pr = q.probabilities(images)[0], ref.probabilities(images)[0]
    # ONNX Runtime's int8 kernels differ between CPUs: without VNNI, pairs of uint8 x int8
    # products are added into int16 with saturation; with VNNI (and on ARM) into int32.
    # The copy's 7-bit weights keep every pair below 2**15 (quantize_onnx), so whatever
    # kernel runs here gives exactly what ONNX Runtime's exact uint8 x uint8 kernels give
    # (session.x64quantprecision; a no-op on CPUs with VNNI and off x86-64). 8-bit weights
    # fail this on a CPU without VNNI (by 0.51 on an AMD EPYC with AVX2).
    exact = op.OnnxPredictor(int8, source=model)
    exact._session = _exact_int8_session(int8)
    assert np.abs(exact.probabilities(images)[0] - pq).max() < 1e-6
    # The integers being the same on every CPU, so are the answers (the float steps around
    # them move probabilities by ~1e-6), and these bounds need no room for other kernels.
    # Measured on an AMD EPYC (AVX2, no VNNI): max |dp| 0.051 here, 0 of these 500 answers
    # changed (0.11 and 6 of the 10,000). An answer can change only where fp32's top two
    # are within 2 * max |dp|: 2 of these 500 are within 0.2.
    changed = (pq.argmax(1) != pr.argmax(1)).sum()
    assert np.abs(pq - pr).max() < 0.1 and changed <= 2
    with pytest.raises(ValueError, match="precision"):
        op.onnx_for(model, cache, precision="int4")


def test_unloadable_copy_falls_back_to_torch(default_model, tmp_path, monkeypatch):
    model = tmp_path / "m.safetensors"
    model.write_bytes(default_model.read_bytes())
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    monkeypatch.setattr(op, "onnx_for", lambda *a, **k: broken)
    pred, note = batch_predictor(model, "cpu")
    assert isinstance(pred, TorchPredictor) and "ONNX Runtime failed" in note and "\n" not in note


def test_canvas_runs_the_shipped_model_through_onnx_runtime_without_torch():
    """The drawing canvas's process answers with ONNX Runtime and never imports torch
    (its ~1.2 s import was most of the time to the first prediction)."""
    code = ("import sys; from mnist_desktop.service.models import ModelChoice, load_predictor; "
            "from mnist_desktop.core.preprocess import Drawing; "
            "p = load_predictor(ModelChoice(sys.argv[1], 'cpu', purpose='live')).predictor; "
            "r = p.predict(Drawing.from_lists([[(100, 50), (180, 50), (120, 250)]])); "
            "print(type(p).__name__, p.backend, r.label, 'torch' in sys.modules)")
    from mnist_desktop.core.paths import default_model_path

    out = subprocess.run([sys.executable, "-c", code, str(default_model_path())], capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.split() == ["OnnxPredictor", "onnxruntime", "7", "False"], out.stderr


def test_canvas_predictions_match_torch(default_model, mnist_test):
    from mnist_desktop.core.preprocess import Drawing

    canvas = canvas_predictor(default_model, "cpu")
    ref = TorchPredictor.from_file(default_model, "cpu")
    assert isinstance(canvas, op.OnnxPredictor)
    drawing = Drawing.from_lists([[(60, 40), (200, 40), (110, 260)], [(80, 150), (180, 150)]])
    a, b = canvas.predict(drawing), ref.predict(drawing)
    assert a.label == b.label and np.abs(a.probs - b.probs).max() < 1e-5
    assert np.array_equal(a.image, b.image)
    for x, y in zip(canvas.predict_images(mnist_test.images[:50] / 255.0), ref.predict_images(mnist_test.images[:50] / 255.0)):
        assert x.label == y.label and abs(x.confidence - y.confidence) < 1e-5 and x.uncertain == y.uncertain


@pytest.mark.slow
def test_canvas_never_waits_for_an_export(tmp_path, monkeypatch):
    """A model without an ONNX copy runs through torch at once; no export is started
    (batch classification makes the copy, which the canvas then uses)."""
    model = _tiny_model(tmp_path / "m.safetensors", 0)
    monkeypatch.setattr(op, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(op.subprocess, "run", lambda *a, **k: pytest.fail("the canvas started an export"))
    pred = canvas_predictor(model, "auto")
    assert isinstance(pred, TorchPredictor) and pred.backend == "torch"
    assert not (tmp_path / "cache").exists()
    monkeypatch.undo()
    monkeypatch.setattr(op, "cache_dir", lambda: tmp_path / "cache")
    op.onnx_for(model)                                  # what batch classification does
    assert isinstance(canvas_predictor(model, "auto"), op.OnnxPredictor)
    assert isinstance(canvas_predictor(model, "cuda"), TorchPredictor)   # a GPU request: torch


def test_canvas_says_so_when_onnx_runtime_fails(default_model, monkeypatch):
    """A copy that exists but cannot run falls back to torch with a note, not silently."""
    def broken(*a, **k):
        raise RuntimeError("bad graph")
    monkeypatch.setattr(op, "OnnxPredictor", broken)
    pred = canvas_predictor(default_model, "cpu")
    assert isinstance(pred, TorchPredictor) and "ONNX Runtime could not run" in pred.device_message
