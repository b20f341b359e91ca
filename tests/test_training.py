"""The training package end to end: recipes, a real short run, resume equivalence, the
JSON-lines protocol of ``python -m training``, and clean failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_desktop.core.checkpoint import load_model, read_meta
from mnist_desktop.core.torch_predictor import TorchPredictor
from training import cli
from training.config import AugmentConfig, ConfigError, TrainConfig
from training.engine import StepFunction, train
from training.events import PROTOCOL_VERSION, parse_event
from training.recipes import RECIPES, recipe_config

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def quick(recipe: str, mnist_dir, tmp_path, **kw) -> TrainConfig:
    base = dict(data=str(mnist_dir), limit=400, epochs=1, output=str(tmp_path / "runs"),
                step_event_interval=0.0, eval_batch_size=500)
    base.update(kw)
    return recipe_config(recipe, **base)


def run(cfg=None, **kw):
    return list(train(cfg, **kw))


# --------------------------------------------------------------------------- config & recipes

def test_recipes_are_valid_and_listed_in_help(capsys):
    assert set(RECIPES) == {"mlp", "cnn_mlp", "mnistnet", "cnn3", "conv3_gap", "flagship"}
    for name in RECIPES:
        cfg = recipe_config(name)
        assert TrainConfig.from_json(cfg.to_json()) == cfg
    flag = recipe_config("flagship")
    assert (flag.optimizer, flag.scheduler, flag.batch_size, flag.arch_args) == ("adamw", "onecycle", 128, {"width": 16})
    assert flag.augment.elastic_alpha > 0 and flag.label_smoothing == 0.05
    gap = recipe_config("conv3_gap")
    assert (gap.mean, gap.std, gap.preprocess["blur_sigma"] > 0) == (0.5, 0.5, True)
    assert recipe_config("cnn3").scheduler == "plateau"
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for name in RECIPES:
        assert name in out


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="unknown config key"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="learning_rate"):
        recipe_config("mlp", learning_rate=-1.0)
    with pytest.raises(ConfigError, match="unknown recipe"):
        recipe_config("resnet")
    with pytest.raises(ConfigError, match="augment"):
        recipe_config("mlp", augment={"rotation": -5})


def test_cli_flags_override_the_recipe():
    args = cli.build_parser().parse_args([
        "--recipe", "flagship", "--data", "x", "--epochs", "3", "--lr", "0.01", "--arch-arg", "dropout=0.2",
        "--rotation", "5", "--blur-sigma", "0.6", "--export", "onnx,torchscript", "--extra-data", "corrections:"])
    cfg = cli.config_from_args(args)
    assert (cfg.epochs, cfg.learning_rate, cfg.augment.rotation) == (3, 0.01, 5.0)
    assert cfg.arch_args == {"width": 16, "dropout": 0.2}  # merged with the recipe's
    assert cfg.preprocess == {"blur_sigma": 0.6} and cfg.export == ["onnx", "torchscript"]
    assert cfg.augment.elastic_alpha == recipe_config("flagship").augment.elastic_alpha
    no_aug = cli.config_from_args(cli.build_parser().parse_args(["--data", "x", "--no-augment"]))
    assert not no_aug.augment.enabled
    # another scheduler or architecture starts from its own defaults, not the recipe's arguments
    other = cli.config_from_args(cli.build_parser().parse_args(
        ["--data", "x", "--scheduler", "plateau", "--arch", "mlp"]))
    assert (other.scheduler_args, other.arch_args) == ({}, {})


def test_resume_refuses_other_settings(capsys, tmp_path):
    assert cli.main(["--resume", str(tmp_path), "--epochs", "5"]) == cli.EXIT_USAGE
    assert "own settings" in capsys.readouterr().err


# --------------------------------------------------------------------------- augmentation

def test_augmentation_is_seeded_and_batched(mnist_train5k):
    from training.augment import augment_batch

    x = torch.from_numpy(mnist_train5k.images[::50].astype(np.float32) / 255).unsqueeze(1)
    cfg = recipe_config("flagship").augment
    a = augment_batch(x, cfg, torch.Generator().manual_seed(5))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(5))
    c = augment_batch(x, cfg, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1.0 + 1e-6
    # every sample changed, and each differently (per-sample parameters)
    assert bool(((a - x).abs().amax(dim=(1, 2, 3)) > 0.05).all())
    # digits stay digits: the ink mass survives roughly
    ratio = a.sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))
    assert 0.5 < float(ratio.median()) < 1.6
    assert torch.equal(augment_batch(x, AugmentConfig(), torch.Generator()), x)


def test_thickness_dilates_and_erodes():
    from training.augment import change_thickness

    x = torch.zeros(2, 1, 9, 9)
    x[:, :, 4, 2:7] = 1.0  # a 1-pixel horizontal stroke
    y = change_thickness(x, torch.tensor([1.0, -1.0]))
    assert float(y[0].sum()) == pytest.approx(3 * 7)  # 3x3 dilation: 3 rows of 7
    assert float(y[1].sum()) == 0.0                   # a 1-pixel stroke erodes away


# --------------------------------------------------------------------------- real training

@pytest.mark.slow
def test_short_real_run_learns_and_writes_a_complete_run_folder(mnist_dir, mnist_test, tmp_path):
    """MLP on the 5k MNIST training subset (4,500 train / 500 validation), measured once on
    the official test set at the end."""
    cfg = recipe_config("mlp", data=str(mnist_dir), test_data=str(mnist_dir), epochs=5,
                        output=str(tmp_path / "runs"), export=["torchscript", "onnx"])
    events = run(cfg)
    fin = events[-1]
    assert fin.type == "finished", events[-1]
    assert fin.metrics["test_accuracy"] > 0.90 and fin.metrics["val_accuracy"] > 0.90
    run_dir = Path(fin.run_dir)
    for name in ("config.json", "progress.jsonl", "last.safetensors", "best.safetensors", "state.pt",
                 "report.json", "report.txt", "curves.png", "test_confusion.png", "test_misclassified.png",
                 "best.torchscript.pt", "best.onnx"):
        assert (run_dir / name).is_file(), name
    assert TrainConfig.from_json((run_dir / "config.json").read_text()) == cfg
    logged = [json.loads(line)["type"] for line in (run_dir / "progress.jsonl").read_text().splitlines()]
    assert logged == [e.type for e in events]

    report = json.loads((run_dir / "report.json").read_text())
    test = report["test"]
    assert test["n"] == 10000 and test["accuracy"] == fin.metrics["test_accuracy"]
    assert set(test["per_class"]["3"]) == {"precision", "recall", "f1", "support"}
    assert np.asarray(test["confusion_matrix"]).sum() == 10000
    assert 0 <= test["ece"] < 0.1 and test["misclassified_count"] == round(10000 * (1 - test["accuracy"]))
    wrong = test["misclassified"][0]
    assert set(wrong) == {"index", "true", "predicted", "confidence"} and wrong["true"] != wrong["predicted"]
    assert len(report["history"]) == 5 and report["exports"]["onnx"].endswith("best.onnx")

    meta = read_meta(run_dir / "best.safetensors")
    assert meta.arch == "mlp" and meta.labels == [str(i) for i in range(10)]
    assert meta.training["config"] == cfg.to_dict() and meta.data_fingerprint.startswith("sha256:")
    assert meta.metrics["test_accuracy"] == test["accuracy"] and meta.metrics["val_accuracy"] > 0.9
    assert meta.uncertainty.temperature != 1.0  # fitted on validation data
    # The model file is a working app model.
    pred = TorchPredictor.from_file(run_dir / "best.safetensors", "cpu")
    got = [p.index for p in pred.predict_images(mnist_test.images[:200].astype(np.float32) / 255)]
    assert np.mean(np.array(got) == mnist_test.labels[:200]) > 0.85


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_trains_a_few_steps(recipe, mnist_dir, tmp_path):
    cfg = quick(recipe, mnist_dir, tmp_path, batch_size=32)
    events = run(cfg)
    assert events[-1].type == "finished", events[-1]
    steps = [e for e in events if e.type == "step"]
    started = next(e for e in events if e.type == "run_started")
    assert len(steps) == started.steps_per_epoch == 12  # 360 training images in batches of 32
    assert all(np.isfinite(e.loss) for e in steps)
    loaded = load_model(events[-1].best_model)
    assert loaded.meta.arch == cfg.arch and loaded.meta.normalization.mean == cfg.mean
    assert loaded.meta.preprocess["blur_sigma"] == cfg.preprocess_options().blur_sigma
    with torch.no_grad():
        assert loaded.model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.slow
def test_progress_events_are_complete(mnist_dir, tmp_path):
    events = run(quick("cnn_mlp", mnist_dir, tmp_path, epochs=2, test_data=str(mnist_dir), limit=300))
    types = [e.type for e in events]
    started = events[types.index("run_started")]
    assert started.total_steps == 2 * started.steps_per_epoch and started.n_train + started.n_val == 300
    assert started.n_test == 10000 and started.run_dir and started.labels == [str(i) for i in range(10)]
    ends = [e for e in events if e.type == "epoch_end"]
    assert [e.epoch for e in ends] == [1, 2] and ends[-1].eta_s == 0.0
    assert all(e.val_loss is not None and e.images_per_s > 0 and e.lr > 0 for e in ends)
    steps = [e for e in events if e.type == "step"]
    assert steps[-1].step == started.total_steps and all(e.eta_s is not None for e in steps)
    assert types[-3:] == ["status", "evaluation", "finished"]
    for e in events:
        back = parse_event(e.to_json())
        assert back is not None and back.type == e.type


def test_corrections_add_to_the_training_data(mnist_dir, mnist_train5k, tmp_path):
    from mnist_desktop.core.corrections import save_correction

    folder = tmp_path / "corrections"
    for i in range(0, 5000, 250):  # 20 drawings, two of each digit
        save_correction(folder, str(mnist_train5k.labels[i]), mnist_train5k.images[i].astype(np.float32) / 255)
    events = run(quick("mlp", mnist_dir, tmp_path, extra_data=[f"corrections:{folder}"]))
    started = next(e for e in events if e.type == "run_started")
    assert events[-1].type == "finished" and started.n_train + started.n_val == 400 + 20
    assert started.data.endswith(f"corrections:{folder}")


# --------------------------------------------------------------------------- resume

def _losses(events):
    return ([e.loss for e in events if e.type == "step"],
            [(e.train_loss, e.train_accuracy, e.val_loss, e.val_accuracy, e.temperature)
             for e in events if e.type == "epoch_end"])


@pytest.mark.slow
@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resume_after_cancel_continues_exactly(mnist_dir, tmp_path, ema_decay):
    """Cancel in the middle of epoch 2, resume: the same step losses, epoch metrics and final
    weights as a run that was never interrupted (flagship: augmentation, dropout, batch
    norm, OneCycle all draw on saved state; with ema_decay the weight average too)."""
    cfg = quick("flagship", mnist_dir, tmp_path, limit=500, epochs=2, batch_size=64, ema_decay=ema_decay)
    full = run(cfg)
    assert full[-1].type == "finished"

    polls = {"n": 0}

    def cancel_after_11_steps():
        polls["n"] += 1
        return polls["n"] > 11

    first = run(cfg.replace(output=str(tmp_path / "interrupted")), should_cancel=cancel_after_11_steps)
    assert first[-1].type == "cancelled" and first[-1].resumable and first[-1].epoch == 2
    second = run(resume=first[-1].run_dir)
    assert second[-1].type == "finished"
    assert next(e for e in second if e.type == "run_started").resumed

    steps_a, epochs_a = _losses(full)
    steps_b, epochs_b = _losses(first + second)
    assert steps_a == steps_b and epochs_a == epochs_b
    wa = load_model(full[-1].last_model).model.state_dict()
    wb = load_model(second[-1].last_model).model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_weight_average_is_what_is_validated_and_saved(mnist_dir, tmp_path):
    """``ema_decay`` does not change training (same seed, same steps); the files hold the
    moving average (state.pt keeps both), and ``select_metric="last"`` makes the final
    model the best one whatever validation says."""
    cfg = quick("flagship", mnist_dir, tmp_path, limit=400, epochs=3, batch_size=64)
    plain = run(cfg)
    avg = run(cfg.replace(output=str(tmp_path / "ema"), ema_decay=0.7, select_metric="last"))
    assert _losses(plain)[0] == _losses(avg)[0]  # identical training steps
    raw = load_model(plain[-1].last_model).model.state_dict()
    st = torch.load(Path(avg[-1].run_dir) / "state.pt", weights_only=True)
    assert all(torch.equal(raw[k], st["model"][k]) for k in raw)
    saved = load_model(avg[-1].last_model).model.state_dict()
    ema = {k.removeprefix("module."): v for k, v in st["ema"].items() if k.startswith("module.")}
    assert all(torch.equal(saved[k], ema[k]) for k in saved)
    assert not all(torch.equal(saved[k], raw[k]) for k in saved if saved[k].is_floating_point())
    ends = [e for e in avg if e.type == "epoch_end"]
    assert all(e.is_best for e in ends) and avg[-1].best_epoch == 3
    assert load_model(avg[-1].best_model).model.state_dict().keys() == saved.keys()
    with pytest.raises(ConfigError, match="ema_decay"):
        cfg.replace(ema_decay=1.0).validate()


@pytest.mark.slow
def test_resume_after_a_kill_restarts_the_unfinished_epoch(mnist_dir, tmp_path):
    """A run killed mid-epoch (no chance to save) resumes from its last epoch-end state."""
    cfg = quick("cnn3", mnist_dir, tmp_path, limit=300, epochs=2, batch_size=64)
    full = run(cfg)
    gen = train(cfg.replace(output=str(tmp_path / "killed")))
    seen = []
    for ev in gen:
        seen.append(ev)
        if ev.type == "step" and ev.epoch == 2:
            break
    gen.close()  # like a kill: nothing more is saved
    run_dir = next(e for e in seen if e.type == "run_started").run_dir
    resumed = run(resume=run_dir)
    assert resumed[-1].type == "finished"
    assert _losses(full)[1] == _losses([e for e in seen if e.type == "epoch_end"] + resumed)[1]


# --------------------------------------------------------------------------- failures

def test_nan_loss_stops_with_a_clear_message(mnist_dir, tmp_path):
    events = run(quick("mlp", mnist_dir, tmp_path, learning_rate=1e12))
    fail = events[-1]
    assert fail.type == "failed" and fail.kind == "nan_loss"
    assert "NaN" in fail.message and "\n" not in fail.message and "--learning-rate" in fail.hint


def test_out_of_memory_is_reported_with_a_hint(mnist_dir, tmp_path, monkeypatch):
    def oom(self, images, labels):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    monkeypatch.setattr(StepFunction, "__call__", oom)
    fail = run(quick("mlp", mnist_dir, tmp_path))[-1]
    assert fail.type == "failed" and fail.kind == "out_of_memory"
    assert "--batch-size" in fail.hint and "Traceback" not in fail.message


def test_bad_data_fails_in_one_event(tmp_path):
    (tmp_path / "empty").mkdir()
    events = run(recipe_config("mlp", data=str(tmp_path / "empty"), output=str(tmp_path / "runs")))
    assert [e.type for e in events][-1] == "failed"
    assert events[-1].kind == "data" and "no labelled images" in events[-1].message
    assert not (tmp_path / "runs").exists()  # nothing half-made


def test_cancel_while_loading_data(mnist_dir, tmp_path):
    events = run(quick("mlp", mnist_dir, tmp_path), should_cancel=lambda: True)
    assert events[-1].type == "cancelled" and not events[-1].resumable


# --------------------------------------------------------------------------- the CLI process

def _cli(*args, timeout=240):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "training", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _protocol_lines(text: str) -> list[dict]:
    objs = [json.loads(line) for line in text.splitlines()]  # every stdout line is one JSON object
    assert all(o["v"] == PROTOCOL_VERSION and isinstance(o["type"], str) for o in objs)
    return objs


@pytest.mark.slow
def test_cli_json_lines_cancel_on_stdin_and_resume(mnist_dir, tmp_path):
    """What the GUI's training panel does: start ``python -m training --progress-json
    --control-stdin``, read events, send ``cancel``, later ``--resume`` the run folder."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "training", "--recipe", "flagship", "--data", str(mnist_dir), "--limit", "600",
            "--epochs", "2", "--threads", "1", "--output", str(tmp_path), "--progress-json",
            "--step-event-interval", "0", "--control-stdin"]
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=err, text=True)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if json.loads(line)["type"] == "step":
                proc.stdin.write("cancel\n")
                proc.stdin.flush()
                break
        out, _ = proc.communicate(timeout=240)
    first = _protocol_lines("".join(lines) + out)
    assert proc.returncode == cli.EXIT_CANCELLED, (tmp_path / "stderr.txt").read_text()
    assert first[-1]["type"] == "cancelled" and first[-1]["resumable"]
    started = next(o for o in first if o["type"] == "run_started")
    assert {"run_dir", "epochs", "total_steps", "steps_per_epoch", "n_train", "n_val", "labels", "config"} <= set(started)
    step = next(o for o in first if o["type"] == "step")
    assert {"epoch", "epochs", "step", "total_steps", "loss", "lr", "images_per_s", "eta_s"} <= set(step)

    proc = _cli("--resume", first[-1]["run_dir"], "--progress-json", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    second = _protocol_lines(proc.stdout)
    types = [o["type"] for o in second]
    assert types.count("run_started") == 1 and second[types.index("run_started")]["resumed"]
    assert types[-3:] == ["status", "evaluation", "finished"] and types.count("epoch_end") >= 1
    steps = [o["step"] for o in first + second if o["type"] == "step"]
    assert steps == list(range(1, started["total_steps"] + 1))  # nothing lost, nothing repeated
    fin = second[-1]
    assert Path(fin["best_model"]).is_file() and Path(fin["report"]).is_file()
    assert fin["metrics"]["val_accuracy"] is not None and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cli_bad_data_exits_2_with_one_line(tmp_path):
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "x.png").write_bytes(b"not a png")
    proc = _cli("--recipe", "mlp", "--data", str(tmp_path), "--progress-json", "--output", str(tmp_path / "r"))
    assert proc.returncode == 2
    last = json.loads(proc.stdout.splitlines()[-1])
    assert last["type"] == "failed" and last["kind"] == "data" and "x.png" in last["message"]
    err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert err[0].startswith("training: error:") and "x.png" in err[0] and "Traceback" not in proc.stderr


def test_model_card_from_scratch_command_keeps_the_recipe_and_drops_local_runs():
    """The card's from-scratch command trains the same recipe: every option that changes
    the model stays, reused runs and local paths go, the shared data is named."""
    from training.flagship import from_scratch

    ran = ("python -m training.flagship --teachers 6 --teacher-runs /r/t1 /r/t2 --student-run=/r/s "
           "--runs /r --threads 2 --student-select last --student-ema 0.998 --output /r/m.safetensors "
           "--data /my/data")
    assert from_scratch(ran) == ("python -m training.flagship --data ../shared/data/mnist --test-data "
                                 "../shared/data/mnist --teachers 6 --student-select last --student-ema 0.998")


def test_flagship_student_options_reach_the_student_only(monkeypatch, tmp_path):
    """--student-epochs / --student-select / --student-ema / --student-width / --student-seed configure the student run, not the teachers,
    and combine with --epochs (the student's value wins)."""
    import argparse

    import training.engine
    from training import flagship
    from training.events import Finished

    configs = {}

    def fake_train(cfg=None, resume=None):
        configs[cfg.name] = cfg
        yield Finished(run_dir=str(tmp_path / cfg.name))

    monkeypatch.setattr(training.engine, "train", fake_train)
    args = argparse.Namespace(teacher_runs=None, teachers=1, seed=0, teacher_width=32, distill_weight=0.7,
                              student_run=None, oe_images=10, oe_weight=0.5, student_select="last",
                              student_ema=0.998, student_epochs=150, epochs=7, data="x", runs=str(tmp_path),
                              threads=1, student_width=24, student_seed=3, data_root="/r", device="cpu")
    flagship.train_digits(args)
    teacher, student = configs["flagship-teacher1"], configs["flagship-student"]
    assert (teacher.epochs, teacher.select_metric, teacher.arch_args, teacher.ema_decay) == \
        (7, "val_accuracy", {"width": 32}, 0.0)
    assert (student.epochs, student.select_metric, student.outlier_images, student.ema_decay, student.arch_args) == \
        (150, "last", 10, 0.998, {"width": 24})
    assert (student.seed, student.val_seed, teacher.seed, teacher.val_seed) == (3, 0, 0, 0)   # one split
    assert (teacher.data_root, teacher.device, student.data_root, student.device) == ("/r", "cpu", "/r", "cpu")
    assert student.teachers == [str(tmp_path / "flagship-teacher1" / "best.safetensors")]
