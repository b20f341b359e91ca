"""Named training recipes: the five reference recipes and our flagship.

A recipe is a function returning a :class:`~training.config.TrainConfig` with the
recipe's published hyperparameters (optimizer, schedule, epochs, batch size,
initialization, normalization, augmentation, preprocessing). Command-line flags then
override single fields. The initialization of each reference network lives in its
architecture (:mod:`mnist_desktop.core.models`), so a recipe only names the arch.

Torch-free, so the GUI can list recipes cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from training.config import AugmentConfig, ConfigError, TrainConfig


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    build: Callable[[], TrainConfig]


def _mlp() -> TrainConfig:
    # Reference 1: plain multilayer perceptron, SGD with momentum, small batches, no augmentation.
    return TrainConfig(recipe="mlp", arch="mlp", epochs=15, batch_size=32, optimizer="sgd",
                       learning_rate=0.01, momentum=0.9, scheduler="none")


def _cnn_mlp() -> TrainConfig:
    # Reference 2: small CNN + MLP head, normal init (in the arch), Adam, random rotation;
    # it reports precision/recall/F1, which every run's report includes.
    return TrainConfig(recipe="cnn_mlp", arch="cnn_mlp", epochs=10, batch_size=64, optimizer="adam",
                       learning_rate=1e-3, augment=AugmentConfig(rotation=10.0))


def _mnistnet() -> TrainConfig:
    # Reference 3: the PyTorch example network with batch norm, Adam 1e-3, batch 64.
    return TrainConfig(recipe="mnistnet", arch="mnistnet", epochs=10, batch_size=64,
                       optimizer="adam", learning_rate=1e-3)


def _cnn3() -> TrainConfig:
    # Reference 4: SGD + momentum, ReduceLROnPlateau on the validation loss, 60 epochs,
    # dropout 0.4, early stopping on validation.
    return TrainConfig(recipe="cnn3", arch="cnn3", arch_args={"dropout": 0.4}, epochs=60,
                       batch_size=64, optimizer="sgd", learning_rate=0.01, momentum=0.9,
                       scheduler="plateau", scheduler_args={"factor": 0.5, "patience": 3},
                       patience=10)


def _conv3_gap() -> TrainConfig:
    # Reference 5: Gaussian-blur denoising as a preprocessing option (so inference blurs
    # too), rotation 10 deg / translation 10%, normalization to [-1, 1], Adam, batch 32.
    return TrainConfig(recipe="conv3_gap", arch="conv3_gap", epochs=10, batch_size=32,
                       optimizer="adam", learning_rate=1e-3, mean=0.5, std=0.5,
                       preprocess={"blur_sigma": 0.5},
                       augment=AugmentConfig(rotation=10.0, translate=0.1))


def _flagship() -> TrainConfig:
    # Ours: compact CNN, AdamW + OneCycle, label smoothing, heavy augmentation (affine incl.
    # shear + elastic + stroke thickness + European 1s and 7s), 60 epochs. The shipped model
    # is this recipe distilled from wider teachers with outlier exposure and calibration
    # (`python -m training.flagship`). Thickness and European strokes were chosen by 5-fold
    # cross-validation on the 5k training subset (docs/results/MODELS.md), never on the test set.
    return TrainConfig(recipe="flagship", arch="flagship", arch_args={"width": 16}, epochs=60,
                       batch_size=128, optimizer="adamw", learning_rate=3e-3, weight_decay=5e-4,
                       scheduler="onecycle", scheduler_args={"pct_start": 0.3},
                       label_smoothing=0.05,
                       augment=AugmentConfig(rotation=12.0, translate=0.1, scale=0.1, shear=10.0,
                                             elastic_alpha=1.5, elastic_sigma=4.0, elastic_p=0.5,
                                             thickness=0.5, european=0.5))


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("mlp", "MLP 784-128-64-10, SGD lr 0.01 momentum 0.9, batch 32, 15 epochs", _mlp),
    Recipe("cnn_mlp", "2 conv + 3 linear, normal init, Adam 1e-3, rotation 10 deg, 10 epochs", _cnn_mlp),
    Recipe("mnistnet", "conv32-conv64 + BN, dropout, Adam 1e-3, batch 64, 10 epochs", _mnistnet),
    Recipe("cnn3", "CNN 32-64-128, SGD momentum 0.9 + ReduceLROnPlateau, dropout 0.4, 60 epochs", _cnn3),
    Recipe("conv3_gap", "3 conv + GAP, blur denoise, rot 10/shift 10%, [-1,1], Adam, batch 32, 10 epochs",
           _conv3_gap),
    Recipe("flagship", "ours: compact CNN, AdamW 3e-3 OneCycle, label smoothing, affine+elastic+"
                       "European-style augmentation, batch 128, 60 epochs", _flagship),
)}


def recipe_config(name: str, **overrides) -> TrainConfig:
    """The :class:`TrainConfig` of recipe ``name`` with ``overrides`` applied (validated).

    Raises
    ------
    ConfigError
        For an unknown recipe or a bad override.
    """
    try:
        recipe = RECIPES[name]
    except KeyError:
        raise ConfigError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}") from None
    cfg = recipe.build()
    return cfg.replace(**overrides) if overrides else cfg


def recipes_help() -> str:
    """One line per recipe, for ``--help``."""
    w = max(len(n) for n in RECIPES)
    return "\n".join(f"  {r.name:<{w}}  {r.summary}" for r in RECIPES.values())
