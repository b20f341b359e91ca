"""The flagship command and averaging flagship models into one network (models.fold_ensemble,
training.ensemble, training.flagship)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mnist_desktop.core.checkpoint import ModelMeta, load_model, save_model
from mnist_desktop.core.models import Flagship, build_model, fold_ensemble, fuse_for_inference
from training.config import TrainConfig
from training.ensemble import EnsembleError, fold_files, main


def _trained_like(seed: int, width: int = 4) -> Flagship:
    """A flagship network with random weights and random batch-norm statistics (fresh ones
    are 0/1 everywhere, which would hide a member's statistics landing in the wrong place)."""
    torch.manual_seed(seed)
    model = Flagship(width=width)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_folded_network_is_the_mean_of_its_members():
    members = [_trained_like(s) for s in range(3)]
    folded = fold_ensemble(members)
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        expected = torch.stack([m(x) for m in members]).mean(0)
        got = folded(x)
        fused = fuse_for_inference(fold_ensemble(members))(x)
    assert folded.features[3].groups == 3          # members never see each other's channels
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused, expected, atol=1e-4, rtol=1e-4)
    # Not a trivial average: the members disagree, and the folded net follows all of them.
    assert (members[0](x) - members[1](x)).abs().max() > 0.1


def test_fold_refuses_what_it_cannot_average():
    with pytest.raises(ValueError):
        fold_ensemble([])
    with pytest.raises(ValueError):
        fold_ensemble([_trained_like(0, width=4), _trained_like(1, width=8)])
    with pytest.raises(ValueError):
        fold_ensemble([_trained_like(0), build_model("mlp")])


def _member(path, seed: int, **config) -> str:
    cfg = TrainConfig(arch="flagship", arch_args={"width": 4}, data="../shared/data/mnist", seed=seed,
                      val_seed=0, **config).to_dict()
    meta = ModelMeta(arch="flagship", arch_args={"width": 4}, name=f"member{seed}",
                     training={"config": cfg}, metrics={"test_accuracy": 0.99})
    save_model(path, _trained_like(seed), meta)
    return str(path)


def test_fold_files_keeps_the_members_and_their_split(tmp_path):
    paths = [_member(tmp_path / f"m{i}.safetensors", seed=i) for i in range(2)]
    model, meta = fold_files(paths)
    out = save_model(tmp_path / "ens.safetensors", model, meta)
    loaded = load_model(out)
    assert loaded.meta.arch == "flagship_ensemble"
    assert loaded.meta.arch_args == {"width": 4, "members": 2}
    assert loaded.meta.training["config"]["val_seed"] == 0      # calibration reads the split here
    recorded = loaded.meta.training["ensemble"]["members"]
    assert [m["file"] for m in recorded] == ["m0.safetensors", "m1.safetensors"]
    assert all(len(m["sha256"]) == 64 for m in recorded)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        expected = torch.stack([load_model(p).model.eval()(x) for p in paths]).mean(0)
        torch.testing.assert_close(loaded.model.eval()(x), expected, atol=1e-5, rtol=1e-5)


def test_fold_files_refuses_members_with_another_validation_split(tmp_path):
    a = _member(tmp_path / "a.safetensors", seed=0)
    b = _member(tmp_path / "b.safetensors", seed=1, val_fraction=0.2)
    with pytest.raises(EnsembleError, match="validation split"):
        fold_files([a, b])
    with pytest.raises(EnsembleError, match="at least two"):
        fold_files([a])
    other = tmp_path / "mlp.safetensors"
    save_model(other, build_model("mlp"), ModelMeta(arch="mlp"))
    with pytest.raises(EnsembleError, match="only flagship"):
        fold_files([a, str(other)])
    bare = tmp_path / "bare.safetensors"
    save_model(bare, _trained_like(3), ModelMeta(arch="flagship", arch_args={"width": 4}))
    with pytest.raises(EnsembleError, match="validation split is unknown"):
        fold_files([a, str(bare)])


def test_cli_says_why_in_one_line(tmp_path, capsys):
    a = _member(tmp_path / "a.safetensors", seed=0)
    assert main([a, str(tmp_path / "missing.safetensors"), "--output", str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert not (tmp_path / "o.safetensors").exists()


def test_folded_model_exports_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    from mnist_desktop.core.export import export_onnx
    from mnist_desktop.core.onnx_predictor import OnnxPredictor

    paths = [_member(tmp_path / f"m{i}.safetensors", seed=i) for i in range(2)]
    model, meta = fold_files(paths)
    out = save_model(tmp_path / "ens.safetensors", model, meta)
    onnx_path = export_onnx(load_model(out), out.with_suffix(".onnx"))   # checks parity itself
    images = np.random.default_rng(0).random((3, 28, 28), dtype=np.float32)
    logits = OnnxPredictor(onnx_path, 1, source=out).logits(images)
    assert logits.shape == (3, 10)


def test_ensemble_card_gives_every_command():
    from training.flagship import _ensemble_commands

    members = [{"config": {"teachers": ["t"] * 4}, "command": "python -m training.flagship --teachers 4 "
                "--teacher-runs /x/t1 /x/t2 --runs /x --output /x/c.safetensors"},
               {"config": {"teachers": ["t"] * 6}, "command": None}]
    lines = _ensemble_commands("python -m training.ensemble /x/c.safetensors /x/d.safetensors --output o", members)
    text = "\n".join(lines)
    assert "python -m training.flagship --data ../shared/data/mnist --test-data ../shared/data/mnist " \
           "--teachers 4 --output runs/member1.safetensors" in text
    assert "member 2: its command was not recorded" in text
    assert "python -m training.ensemble runs/member1.safetensors runs/member2.safetensors" in text


@pytest.mark.slow
def test_flagship_train_only_trains_teachers_and_a_student_of_the_asked_width(mnist_dir, tmp_path, capsys):
    """The flagship command end to end up to the trained student (one tiny epoch each)."""
    import json

    from training import flagship

    out = tmp_path / "model.safetensors"
    assert flagship.main(["--data", str(mnist_dir), "--runs", str(tmp_path / "runs"), "--output", str(out),
                          "--teachers", "1", "--teacher-width", "4", "--student-width", "6", "--epochs", "1",
                          "--student-epochs", "1", "--oe-images", "64", "--threads", "1", "--train-only"]) == 0
    assert not out.exists()                     # --train-only: no calibration, no card
    runs = sorted((tmp_path / "runs").iterdir())
    assert [r.name.split("-2")[0] for r in runs] == ["flagship-student", "flagship-teacher1"]
    student = json.loads((runs[0] / "report.json").read_text())["config"]
    teacher = json.loads((runs[1] / "report.json").read_text())["config"]
    assert student["arch_args"] == {"width": 6} and teacher["arch_args"] == {"width": 4}
    assert student["teachers"] == [str(runs[1] / "best.safetensors")]
    assert student["outlier_images"] == 64 and student["val_seed"] == 0
    assert "--train-only" in capsys.readouterr().err


def test_flagship_reuses_a_finished_student_without_its_teachers(tmp_path):
    """A finished student run is all the later stages need, even where its teachers are gone."""
    import argparse

    from training import flagship

    run = tmp_path / "student"
    run.mkdir()
    (run / "best.safetensors").write_bytes(b"x")
    (run / "report.json").write_text("{}")
    args = argparse.Namespace(student_run=str(run), teachers=4, teacher_runs=[str(tmp_path / "gone")])
    assert flagship.train_digits(args) == run


def test_card_names_the_teachers_seeds_from_the_split_not_the_students_seed():
    from training.flagship import _recipe_words

    words = _recipe_words({"arch": "flagship", "seed": 1, "val_seed": 0, "teachers": ["/gone/a", "/gone/b"],
                           "select_metric": "val_loss"})
    assert "seed 1;" in words and "(seeds 0..1, same validation split)" in words


def test_card_says_which_runs_were_reused_and_drops_them_from_scratch():
    from training.flagship import _flagship_commands

    cfg = {"teachers": ["t"] * 4, "arch_args": {"width": 24}}
    text = "\n".join(_flagship_commands("python -m training.flagship --teachers 4 --student-width 24 "
                                        "--student-run docs/run --output o.safetensors", cfg))
    assert "As run (`--student-run` reused earlier runs" in text and "--teacher-runs" not in text
    assert "    python -m training.flagship --data ../shared/data/mnist --test-data ../shared/data/mnist " \
           "--teachers 4 --student-width 24\n" in text
    plain = "\n".join(_flagship_commands("python -m training.flagship --teachers 4 --output o", cfg))
    assert plain.startswith("As run:\n")
    # the width the student had, also where the command took the default (defaults change)
    assert "../shared/data/mnist --teachers 4 --student-width 24\n" in plain


@pytest.mark.slow
def test_documented_full_mnist_command_runs_on_a_torchvision_root(mnist_dir, mnist_train5k, tmp_path, no_network):
    """docs/results/MODELS.md's 60k command (``--data torchvision:mnist --data-root DIR``) end to end on
    a pre-filled torchvision root (this machine cannot download): training, calibration on the
    recorded split of that data, the ONNX copy and a card whose from-scratch command keeps
    the torchvision data."""
    import json

    from safetensors import safe_open

    from conftest import prefill_torchvision_mnist
    from training import flagship

    imgs, labs = mnist_train5k.images, mnist_train5k.labels
    prefill_torchvision_mnist(tmp_path / "root", imgs[:1000], labs[:1000], imgs[:10], labs[:10])
    out = tmp_path / "my-flagship.safetensors"
    assert flagship.main(["--data", "torchvision:mnist", "--data-root", str(tmp_path / "root"),
                          "--test-data", str(mnist_dir), "--device", "cpu", "--runs", str(tmp_path / "runs"),
                          "--output", str(out), "--teachers", "1", "--teacher-width", "4", "--student-width", "4",
                          "--epochs", "1", "--student-epochs", "1", "--oe-images", "64", "--threads", "1",
                          "--n-digits", "100", "--n-nondigits", "100", "--n-calibration", "100"]) == 0
    with safe_open(str(out), "pt") as f:
        meta = json.loads(f.metadata()["mnist_desktop"])
    text = json.dumps(meta)
    assert "torchvision:mnist" in text and str(tmp_path / "root") in text
    report = json.loads(out.with_suffix(".robustness.json").read_text())
    assert "torchvision:mnist" in report["calibration"]["validation"]["split"]   # 10% of the 1,000, not train-5k
    assert report["written_by"].startswith("python -m training.robustness --model ")  # names its command
    assert out.with_suffix(".onnx").exists()
    card = out.with_suffix(".md").read_text()
    assert "python -m training.flagship --data torchvision:mnist --test-data ../shared/data/mnist --teachers 1" in card
    assert "--data-root" not in card.split("From scratch")[1]
