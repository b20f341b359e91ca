"""Knowledge distillation (teachers) and the shared validation split of a teacher set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mnist_desktop.core.checkpoint import ModelMeta, save_model
from mnist_desktop.core.models import build_model
from training.config import ConfigError
from training.data import validation_split
from training.engine import StepFunction, make_optimizer, train
from training.recipes import recipe_config


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _teacher(tmp_path, seed=0):
    torch.manual_seed(seed)
    path = tmp_path / f"teacher{seed}.safetensors"
    save_model(path, build_model("mlp"), ModelMeta(arch="mlp"))
    return str(path)


def test_distillation_loss_pulls_towards_the_teachers(tmp_path):
    t1, t2 = _teacher(tmp_path, 1), _teacher(tmp_path, 2)
    cfg = recipe_config("mlp").replace(teachers=[t1, t2], distill_weight=1.0, distill_temperature=2.0)
    torch.manual_seed(0)
    model = build_model("mlp")
    step = StepFunction(cfg, model, make_optimizer(cfg, model.parameters()))
    assert len(step.teachers) == 2 and not any(p.requires_grad for p in step.teachers[0].parameters())
    images = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (64,))
    losses = [float(step(images, labels)[0]) for _ in range(30)]
    # pure distillation: the KL to the teachers' mean falls as the student learns it
    assert losses[-1] < 0.5 * losses[0]


def test_distillation_config_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="teacher"):
        recipe_config("mlp").replace(distill_weight=0.5)
    with pytest.raises(ConfigError, match="distill_weight"):
        recipe_config("mlp").replace(teachers=["x.safetensors"], distill_weight=1.5)


def test_missing_teacher_fails_with_one_line(mnist_dir, tmp_path):
    cfg = recipe_config("mlp", data=str(mnist_dir), limit=200, epochs=1, output=str(tmp_path / "runs"),
                        teachers=[str(tmp_path / "nope.safetensors")], distill_weight=0.5)
    last = list(train(cfg))[-1]
    assert last.type == "failed" and "teacher" in last.message and "\n" not in last.message


def test_val_seed_keeps_the_split_while_the_seed_changes():
    labels = np.repeat(np.arange(10), 50)
    cfg_a = recipe_config("mlp", seed=1, val_seed=0)
    cfg_b = recipe_config("mlp", seed=2, val_seed=0)
    assert cfg_a.split_seed == cfg_b.split_seed == 0
    assert recipe_config("mlp", seed=3).split_seed == 3
    a = validation_split(labels, 0.1, cfg_a.split_seed)[1]
    b = validation_split(labels, 0.1, cfg_b.split_seed)[1]
    assert np.array_equal(a, b)
