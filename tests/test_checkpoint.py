"""Self-describing, safe, atomic model files; exports; the model zoo; the predictor."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from mnist_desktop.core.checkpoint import (CheckpointError, ModelMeta, UncertaintyRule, load_model, read_meta,
                                           save_model)
from mnist_desktop.core.export import export_onnx, export_torchscript
from mnist_desktop.core.models import available_architectures, build_model, fuse_for_inference
from mnist_desktop.core.torch_predictor import TorchPredictor, resolve_device

REFERENCE = ["mlp", "cnn_mlp", "mnistnet", "cnn3", "conv3_gap", "flagship"]


@pytest.mark.parametrize("name", REFERENCE)
def test_zoo_builds_every_architecture_for_any_number_of_classes(name):
    for k in (10, 26, 47):
        model = build_model(name, num_classes=k).eval()
        with torch.no_grad():
            assert model(torch.zeros(3, 1, 28, 28)).shape == (3, k)
    assert set(REFERENCE) <= set(available_architectures())


def test_unknown_architecture_lists_known_names():
    with pytest.raises(KeyError, match="flagship"):
        build_model("resnet9000")


def test_conv_bn_fusion_keeps_outputs():
    torch.manual_seed(0)
    model = build_model("flagship").train()
    with torch.no_grad():  # give batch norm non-trivial statistics
        for _ in range(3):
            model(torch.randn(16, 1, 28, 28))
    model.eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        ref = model(x)
        fused = fuse_for_inference(model)(x)
    assert torch.allclose(ref, fused, atol=1e-4)


def _meta(**kw) -> ModelMeta:
    return ModelMeta(arch="mlp", labels=[chr(ord("A") + i) for i in range(26)], **kw)


def test_round_trip_with_non_digit_labels(tmp_path):
    model = build_model("mlp", num_classes=26)
    meta = _meta(uncertainty=UncertaintyRule("energy", -3.0, 1.5), metrics={"test_accuracy": 0.9},
                 training={"epochs": 3})
    path = save_model(tmp_path / "letters.safetensors", model, meta)
    loaded = load_model(path)
    assert loaded.meta.labels[0] == "A" and loaded.meta.num_classes == 26
    assert loaded.meta.uncertainty.method == "energy" and loaded.meta.uncertainty.temperature == 1.5
    assert loaded.meta.metrics == {"test_accuracy": 0.9}
    assert "torch" in loaded.meta.versions and loaded.meta.created
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k])
    assert read_meta(path).labels == loaded.meta.labels
    assert oct(os.stat(path).st_mode & 0o777) != oct(0o600)


def test_crafted_pickle_is_refused_with_one_line(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for name in ("evil.pt", "evil.safetensors", "evil.pth"):
        p = tmp_path / name
        with open(p, "wb") as f:
            pickle.dump({"state_dict": Evil()}, f)
        with pytest.raises(CheckpointError) as e:
            load_model(p)
        assert "\n" not in str(e.value) and name in str(e.value)
    # torch.save's zip format with a hostile object inside
    p = tmp_path / "evil_zip.pt"
    torch.save({"mnist_desktop": "{}", "state_dict": Evil()}, p)
    with pytest.raises(CheckpointError, match="refused"):
        load_model(p)
    assert not marker.exists()


def test_safe_torch_file_with_schema_is_accepted(tmp_path):
    model = build_model("mlp")
    meta = ModelMeta(arch="mlp")
    p = tmp_path / "ok.pt"
    torch.save({"mnist_desktop": meta.to_json(), "state_dict": model.state_dict()}, p)
    assert load_model(p).meta.arch == "mlp"


@pytest.mark.parametrize("content,match", [
    (b"", "not a valid model file"),
    (b"garbage" * 10, "not a valid model file"),
    (b"\xff" * 8 + b"{}", "not a valid model file"),
])
def test_corrupt_files_give_one_line_errors(tmp_path, content, match):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as e:
        load_model(p)
    assert "\n" not in str(e.value)


def test_missing_file_and_bad_metadata(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    from safetensors.torch import save_file

    model = build_model("mlp")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    p = tmp_path / "plain.safetensors"
    save_file(state, p)
    with pytest.raises(CheckpointError, match="without mnist-desktop metadata"):
        load_model(p)
    bad = json.loads(ModelMeta(arch="mlp").to_json())
    bad["labels"] = ["1", "1"]
    save_file(state, p, metadata={"mnist_desktop": json.dumps(bad)})
    with pytest.raises(CheckpointError, match="duplicates"):
        load_model(p)
    bad = json.loads(ModelMeta(arch="cnn3").to_json())
    save_file(state, p, metadata={"mnist_desktop": json.dumps(bad)})
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(p)


def test_atomic_save_never_corrupts_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    save_model(path, build_model("mlp"), ModelMeta(arch="mlp", name="first"))
    before = path.read_bytes()

    import safetensors.torch as st

    def crash(state, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half-written")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(st, "save_file", crash)
    with pytest.raises(CheckpointError, match="No space left"):
        save_model(path, build_model("mlp"), ModelMeta(arch="mlp", name="second"))
    assert path.read_bytes() == before
    assert read_meta(path).name == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp litter


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exports_match_the_original(tmp_path, fmt):
    torch.manual_seed(0)
    model = build_model("cnn_mlp")
    path = save_model(tmp_path / "m.safetensors", model, ModelMeta(arch="cnn_mlp"))
    loaded = load_model(path)
    out = tmp_path / ("m.pt" if fmt == "torchscript" else "m.onnx")
    (export_torchscript if fmt == "torchscript" else export_onnx)(loaded, out)
    assert out.stat().st_size > 1000
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        ref = torch.softmax(loaded.model(x), 1).numpy()
    if fmt == "torchscript":
        files = {"mnist_desktop.json": ""}
        got = torch.jit.load(str(out), _extra_files=files)(x)
        assert json.loads(files["mnist_desktop.json"])["arch"] == "cnn_mlp"
        got = torch.softmax(got, 1).detach().numpy()
    else:
        import onnxruntime as ort
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = torch.softmax(torch.from_numpy(sess.run(None, {"image": x.numpy()})[0]), 1).numpy()
    assert np.abs(ref - got).max() < 1e-5


def test_device_resolution_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == ("cpu", None)
    dev, msg = resolve_device("cuda")
    assert dev == "cpu" and "CUDA is not available" in msg

    def broken():
        raise RuntimeError("driver too old")

    monkeypatch.setattr(torch.cuda, "is_available", broken)
    dev, msg = resolve_device("cuda")
    assert dev == "cpu" and "driver too old" in msg


def test_predictor_topk_and_uncertainty(default_model, mnist_test):
    pred = TorchPredictor.from_file(default_model, "cpu")
    images = mnist_test.images[:64].astype(np.float32) / 255
    results = pred.predict_images(images)
    assert len(results) == 64
    acc = np.mean([r.label == str(y) for r, y in zip(results, mnist_test.labels[:64])])
    assert acc > 0.95
    r = results[0]
    top = r.top_k(3)
    assert len(top) == 3 and top[0][0] == r.label and top[0][1] >= top[1][1] >= top[2][1]
    assert abs(sum(r.as_dict().values()) - 1) < 1e-4
    # the uncertain flag follows the checkpoint's rule
    assert r.uncertain == (r.confidence < pred.meta.uncertainty.threshold)
