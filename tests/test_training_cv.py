"""k-fold validation splits, ``python -m training.cv``, European-handwriting augmentation
and outlier exposure during training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mnist_desktop.core.models import build_model
from training.augment import augment_batch, european_strokes
from training.config import AugmentConfig, ConfigError
from training.data import validation_split
from training.engine import StepFunction, make_optimizer, train
from training.recipes import recipe_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_folds_are_stratified_disjoint_and_cover_every_sample():
    labels = np.repeat(np.arange(10), 53)
    vals = []
    for k in range(5):
        tr, va = validation_split(labels, 0.2, seed=3, fold=k)
        assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(labels)
        counts = np.bincount(labels[va], minlength=10)
        assert counts.min() >= 10 and counts.max() <= 11   # 53 per class in 5 folds
        vals.append(va)
    allv = np.concatenate(vals)
    assert len(allv) == len(labels) and len(np.unique(allv)) == len(labels)
    # same seed, same folds; another seed, other folds
    assert np.array_equal(validation_split(labels, 0.2, 3, 1)[1], vals[1])
    assert not np.array_equal(validation_split(labels, 0.2, 4, 1)[1], vals[1])


def test_val_fold_is_validated():
    with pytest.raises(ConfigError, match="val_fold"):
        recipe_config("mlp", val_fraction=0.2, val_fold=5)
    assert recipe_config("mlp", val_fraction=0.2, val_fold=4).val_fold == 4


def _digits(mnist_train5k, digit, n=16):
    idx = np.flatnonzero(mnist_train5k.labels == digit)[:n]
    return torch.from_numpy(mnist_train5k.images[idx]).float().div(255).unsqueeze(1)


def test_european_strokes_add_ink_only_to_ones_and_sevens(mnist_train5k):
    ones, sevens, threes = (_digits(mnist_train5k, d) for d in (1, 7, 3))
    x = torch.cat([ones, sevens, threes])
    labels = torch.tensor([1] * 16 + [7] * 16 + [3] * 16)
    out = european_strokes(x, labels, 1, 7, 1.0, torch.Generator().manual_seed(0))
    assert torch.all(out >= x) and out.max() <= 1          # strokes are added, never erased
    added = (out - x).sum((1, 2, 3))
    assert torch.all(added[:32] > 3)                       # every 1 got a flag, every 7 a bar
    assert torch.equal(out[32:], x[32:])                   # other digits untouched
    # the flag of a 1 starts at its top and goes down to the left
    one, new = x[0, 0], (out - x)[0, 0]
    top = int(torch.nonzero(one > 0.3)[:, 0].min())
    cols = torch.nonzero(new > 0.3)
    assert cols[:, 0].min() <= top + 2 and cols[:, 1].float().mean() < torch.nonzero(one > 0.3)[:, 1].float().mean()
    # p = 0, or no such classes: nothing changes
    assert torch.equal(european_strokes(x, labels, 1, 7, 0.0, torch.Generator().manual_seed(0)), x)
    assert torch.equal(european_strokes(x, labels, -1, -1, 1.0, torch.Generator().manual_seed(0)), x)


def test_european_augmentation_is_seeded_and_label_aware(mnist_train5k):
    x = _digits(mnist_train5k, 1)
    labels = torch.ones(len(x), dtype=torch.long)
    cfg = AugmentConfig(european=0.5)
    a = augment_batch(x, cfg, torch.Generator().manual_seed(5), labels, (1, 7))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(5), labels, (1, 7))
    assert torch.equal(a, b)
    changed = int(((a - x).abs().sum((1, 2, 3)) > 0).sum())
    assert 2 <= changed <= 14                              # about half of them
    assert torch.equal(augment_batch(x, cfg, torch.Generator().manual_seed(5)), x)  # no labels: off
    with pytest.raises(ConfigError, match="european"):
        recipe_config("mlp").replace(augment={"european": 1.5})


def test_outlier_exposure_pushes_non_digits_towards_uniform(mnist_train5k):
    images = torch.from_numpy(mnist_train5k.images[:64])
    labels = torch.from_numpy(mnist_train5k.labels[:64]).long()
    outliers = torch.rand(64, 1, 28, 28) * (torch.rand(64, 1, 28, 28) > 0.8)

    def trained(with_outliers: bool):
        torch.manual_seed(0)
        cfg = recipe_config("mlp", outlier_weight=1.0)
        model = build_model("mlp")
        step = StepFunction(cfg, model, make_optimizer(cfg, model.parameters()))
        if with_outliers:
            step.outliers = outliers
        for _ in range(80):
            loss, correct = step(images, labels)
        model.eval()
        with torch.no_grad():
            p = torch.softmax(model((outliers - cfg.mean) / cfg.std), 1)
        return float(p.max(1).values.mean()), int(correct)

    plain, _ = trained(False)
    exposed, correct = trained(True)
    assert exposed < 0.3 and exposed < plain - 0.2         # close to 1/10 on the outliers
    assert correct >= 48                                   # while it still fits the digits


def test_run_with_outlier_exposure_and_folds(mnist_dir, tmp_path):
    cfg = recipe_config("flagship", data=str(mnist_dir), limit=300, epochs=1, output=str(tmp_path),
                        outlier_images=20, val_fraction=0.2, val_fold=2, eval_batch_size=500,
                        arch_args={"width": 4}, augment={"european": 0.5})
    events = list(train(cfg))
    assert events[-1].type == "finished", events[-1]
    assert any(e.type == "status" and "outlier exposure" in e.message for e in events)
    report = json.loads(open(events[-1].report).read())
    assert 50 <= report["validation"]["n"] <= 70           # one fifth of 300
    assert report["config"]["outlier_images"] == 20 and report["config"]["val_fold"] == 2


@pytest.mark.slow
def test_cross_validation_command(mnist_dir, tmp_path, capsys):
    from training import cv

    rc = cv.main(["--folds", "2", "--jobs", "2", "--output", str(tmp_path), "--summary-dir", str(tmp_path),
                  "--name", "t", "--",
                  "--recipe", "mlp", "--data", str(mnist_dir), "--limit", "200", "--epochs", "1",
                  "--threads", "1"])
    assert rc == 0
    summary = json.loads((tmp_path / "t.cv.json").read_text())
    assert summary["n"] == 200 and len(summary["folds"]) == 2     # every sample validated once
    assert 0 <= summary["oof_accuracy"] <= 1
    assert summary["written_by"].startswith("python -m training.cv --folds 2 ")   # names its command
    assert "out-of-fold accuracy" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cv.main(["--name", "x", "--", "--test-data", "y"])
