"""service.training_runs: run history, states (incl. interrupted - resumable), curves, CSV,
datasets. Torch-free except where a test loads a dataset through training.data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_desktop.service import training_runs as tr
from training.config import ConfigError, TrainConfig


def _ev(type_, **fields):
    return {"v": 1, "type": type_, "time": fields.pop("time", 1000.0), **fields}


def write_run(root: Path, name: str, events: list[dict], *, state: bool = False, best: bool = False,
              config: dict | None = None) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config or {"recipe": "mlp", "epochs": 3, "data": "x"}))
    (run / "progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    if state:
        (run / "state.pt").write_bytes(b"state")
    if best:
        (run / "best.safetensors").write_bytes(b"model")
    return run


def started(**kw):
    return _ev("run_started", epochs=3, steps_per_epoch=10, total_steps=30, **kw)


def epoch(e, acc=0.9, **kw):
    return _ev("epoch_end", epoch=e, epochs=3, step=10 * e, train_loss=1.0 / e, train_accuracy=acc - 0.05,
               val_loss=1.2 / e, val_accuracy=acc, lr=0.01, best_epoch=e, best_val_accuracy=acc,
               images_per_s=500.0, elapsed_s=2.0 * e, eta_s=2.0 * (3 - e), **kw)


def step(s, loss=1.0):
    return _ev("step", epoch=s // 10 + 1, step=s, steps_per_epoch=10, loss=loss, lr=0.01, images_per_s=400.0,
               eta_s=5.0)


def test_states_from_events(tmp_path):
    h = tr.RunHistory(tmp_path)
    write_run(tmp_path, "done", [started(time=1), epoch(1), epoch(2), epoch(3, acc=0.95),
                                 _ev("finished", epochs_done=3, reason="completed")], best=True)
    write_run(tmp_path, "cancelled", [started(time=2), epoch(1), _ev("cancelled", resumable=True)],
              state=True, best=True)
    write_run(tmp_path, "nan", [started(time=3), _ev("failed", kind="nan_loss", message="loss became NaN",
                                                      hint="lower the learning rate")])
    write_run(tmp_path, "crashed", [started(time=4), epoch(1), step(12)], state=True, best=True)
    write_run(tmp_path, "early", [started(time=5), step(3)])
    (tmp_path / ".pending").mkdir()
    (tmp_path / "not-a-run").mkdir()

    runs = {r.name: r for r in h.runs()}
    assert set(runs) == {"done", "cancelled", "nan", "crashed", "early"}
    assert [r.name for r in h.runs()][0] == "early"   # newest first
    assert runs["done"].state == tr.FINISHED and runs["done"].epochs_done == 3
    assert runs["done"].best_val_accuracy == pytest.approx(0.95) and runs["done"].has_best_model
    assert runs["cancelled"].state == tr.CANCELLED and runs["cancelled"].resumable
    assert runs["nan"].state == tr.FAILED and "NaN" in runs["nan"].message and "learning rate" in runs["nan"].message
    crashed = runs["crashed"]
    assert crashed.state == tr.INTERRUPTED and crashed.resumable
    assert crashed.state_text == "interrupted \u2014 resumable" and "after epoch 1" in crashed.message
    assert runs["early"].state == tr.INTERRUPTED and not runs["early"].resumable


def test_live_process_means_running_and_a_dead_owner_means_interrupted(tmp_path):
    run = write_run(tmp_path, "r", [started(), epoch(1)], state=True)
    assert tr.read_run(run, live=[run]).state == tr.RUNNING
    # A real child that trains no more: its pid is recorded, then it exits.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    tr.RunHistory.mark_owner(run, child.pid)
    assert tr.read_run(run).state == tr.INTERRUPTED
    # A live process that is not a training run (a recycled pid) does not count either.
    tr.RunHistory.mark_owner(run, os.getpid())
    if Path(f"/proc/{os.getpid()}/cmdline").exists():
        assert tr.read_run(run).state == tr.INTERRUPTED


def test_resumed_run_uses_its_last_session_and_replaces_repeated_points(tmp_path):
    events = [started(), step(5, 2.0), step(10, 1.5), epoch(1), step(15, 1.4), step(18, 1.3),
              _ev("cancelled", resumable=True),
              # the resume starts again from the end of epoch 1 (state at the epoch end)
              started(resumed=True, start_epoch=1, start_step=10), step(15, 1.35), step(20, 1.2), epoch(2),
              step(25, 1.0), step(30, 0.9), epoch(3), _ev("finished", epochs_done=3)]
    run = write_run(tmp_path, "r", events, state=True, best=True)
    rec = tr.read_run(run)
    assert rec.state == tr.FINISHED and not rec.resumable
    c = tr.RunHistory(tmp_path).curves(rec)
    assert c.epoch == [1, 2, 3]
    assert c.step == [5, 10, 15, 20, 25, 30]
    assert c.step_loss[2] == 1.35                    # the resumed session's value
    assert c.step_epoch[-1] == pytest.approx(3.0)
    smooth = c.smoothed_step_loss()
    assert smooth[0] == pytest.approx(2.0)           # bias-corrected: starts at the first value
    assert min(c.step_loss) <= smooth[-1] <= max(c.step_loss)
    assert c.eta_s is None                           # ended


def test_truncated_last_line_is_skipped(tmp_path):
    run = write_run(tmp_path, "r", [started(), epoch(1)], state=True)
    with open(run / "progress.jsonl", "a") as f:
        f.write('{"v":1,"type":"epoch_end","epo')    # the disk filled up mid-line
    rec = tr.read_run(run)
    assert rec.epochs_done == 1 and rec.state == tr.INTERRUPTED


def test_csv_export_of_several_runs(tmp_path):
    a = tr.curves_from_events([started(), step(5, 2.0), epoch(1)])
    b = tr.curves_from_events([started(), epoch(1, acc=0.8), epoch(2, acc=0.85)])
    path = tmp_path / "curves.csv"
    tr.write_curves_csv(path, [("a", a), ("b", b)])
    rows = [line.split(",") for line in path.read_text().splitlines()]
    assert tuple(rows[0]) == tr.CSV_COLUMNS
    kinds = [(r[0], r[1]) for r in rows[1:]]
    assert kinds == [("a", "epoch"), ("a", "step"), ("b", "epoch"), ("b", "epoch")]
    assert float(rows[-1][rows[0].index("val_accuracy")]) == pytest.approx(0.85)


def test_delete_asks_for_a_run_folder_of_the_history_and_not_a_running_one(tmp_path):
    h = tr.RunHistory(tmp_path / "runs")
    run = write_run(h.root, "r", [started(), epoch(1)], state=True)
    other = write_run(tmp_path, "elsewhere", [started()])
    with pytest.raises(ValueError, match="not a run folder"):
        h.delete(other)
    with pytest.raises(ValueError, match="still running"):
        h.delete(run, live=[run])
    h.delete(run)
    assert not run.exists() and other.exists() and h.runs() == []


def test_prepare_writes_a_config_the_cli_reads(tmp_path):
    h = tr.RunHistory(tmp_path / "runs")
    cfg = tr.new_config("mlp").replace(epochs=2, learning_rate=0.05)
    args = h.prepare(cfg)
    assert args[0] == "--config"
    from training.cli import build_parser, config_from_args
    parsed = config_from_args(build_parser().parse_args(args))
    assert parsed.epochs == 2 and parsed.learning_rate == 0.05 and Path(parsed.output) == h.root
    assert Path(parsed.data) == tr.bundled_data_dir() and parsed.split == "train-5k"
    h.forget_pending(args)
    assert not Path(args[1]).exists()
    assert h.runs() == []     # the pending folder is no run


def test_every_recipe_on_the_bundled_data():
    assert tr.recipe_names() == ["mlp", "cnn_mlp", "mnistnet", "cnn3", "conv3_gap", "flagship"]
    for name in tr.recipe_names():
        cfg = tr.new_config(name)
        assert cfg.recipe == name and tr.dataset_key_of(cfg) == tr.BUNDLED


def test_dataset_choices(tmp_path):
    assert tr.dataset_fields("fashion-mnist")["data"] == "torchvision:fashion-mnist"
    with pytest.raises(ConfigError, match="choose the image folder"):
        tr.dataset_fields(tr.IMAGE_FOLDER)
    (tmp_path / "letters" / "a").mkdir(parents=True)
    with pytest.raises(ConfigError, match="at least two"):
        tr.dataset_fields(tr.IMAGE_FOLDER, str(tmp_path / "letters"))
    (tmp_path / "letters" / "b").mkdir()
    f = tr.dataset_fields(tr.IMAGE_FOLDER, str(tmp_path / "letters"))
    assert f["data"] == str(tmp_path / "letters")
    with pytest.raises(ConfigError, match="no corrected drawings"):
        tr.dataset_fields(tr.CORRECTIONS)
    from mnist_desktop.core.corrections import save_correction
    from mnist_desktop.core.paths import corrections_dir
    save_correction(corrections_dir(), "7", np.zeros((28, 28), np.float32))
    f = tr.dataset_fields(tr.CORRECTIONS)
    assert f["extra_data"] == [f"corrections:{corrections_dir()}"] and f["labels"] == [str(i) for i in range(10)]
    cfg = TrainConfig(**{**tr.new_config("mlp").to_dict(), "augment": {}}).replace(**f)
    assert tr.dataset_key_of(cfg) == tr.CORRECTIONS


@pytest.mark.slow
def test_letters_and_corrections_load_through_training_data(tmp_path):
    from PIL import Image

    from mnist_desktop.core.corrections import save_correction
    from mnist_desktop.core.paths import corrections_dir
    from training.data import load_training_data, run_loader

    for label in "xo":
        (tmp_path / "letters" / label).mkdir(parents=True)
        for i in range(4):
            img = np.zeros((40, 40), np.uint8)
            img[8:32, 18 + i:22 + i] = 255 if label == "x" else 0
            img[18:22, 8:32] = 255
            Image.fromarray(img).save(tmp_path / "letters" / label / f"{i}.png")
    cfg = tr.new_config("mlp", tr.IMAGE_FOLDER, str(tmp_path / "letters")).replace(val_fraction=0.25)
    full, train_idx, val_idx = run_loader(load_training_data(cfg))
    assert full.label_names == ["o", "x"] and len(full) == 8 and len(val_idx) == 2

    three = np.zeros((28, 28), np.float32)
    three[6:22, 10:18] = 1.0
    save_correction(corrections_dir(), "3", three)
    cfg = tr.new_config("mlp", tr.CORRECTIONS)
    full, _, _ = run_loader(load_training_data(cfg))
    assert len(full) == 5001 and full.label_names == [str(i) for i in range(10)]


@pytest.mark.slow
def test_torchvision_choice_reads_a_prefilled_root_and_fails_in_one_line_offline(tmp_path, monkeypatch,
                                                                                  no_network):
    from conftest import prefill_torchvision_mnist

    from mnist_desktop.core.data import DataError
    from training.data import load_source, run_loader

    monkeypatch.setenv("MNIST_DESKTOP_DATA", str(tmp_path))
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (20, 28, 28), dtype=np.uint8)
    labels = (np.arange(20) % 10).astype(np.uint8)
    prefill_torchvision_mnist(tr.default_data_root(), imgs, labels, imgs[:10], labels[:10])
    f = tr.dataset_fields("mnist")
    data = run_loader(load_source(f["data"], train=True, data_root=f["data_root"]))
    assert len(data) == 20 and data.label_names == [str(i) for i in range(10)]

    statuses = []
    with pytest.raises(DataError) as e:
        run_loader(load_source("torchvision:kmnist", train=True, data_root=f["data_root"]), statuses.append)
    assert "\n" not in str(e.value) and "offline" in str(e.value)
    assert statuses and statuses[0].stage == "download"
