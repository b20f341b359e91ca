"""Where bundled resources and user data live (source checkout, installed, or frozen)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "mnist-desktop"


def resources_dir() -> Path:
    """The ``resources/`` folder, wherever this program is installed:

    * ``MNIST_DESKTOP_RESOURCES`` when set;
    * frozen (PyInstaller): inside the bundle (``sys._MEIPASS/resources``);
    * a wheel or ``pip install .``: the package data ``mnist_desktop/resources``
      (setup.py maps the top-level folder onto it);
    * a checkout or an editable install: the top-level ``resources/`` beside the package.
    """
    env = os.environ.get("MNIST_DESKTOP_RESOURCES")
    if env:
        return Path(env)
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen) / "resources"
    package = Path(__file__).resolve().parents[1]
    installed = package / "resources"
    if (installed / "models").is_dir():
        return installed
    return package.parent / "resources"


def default_model_path() -> Path:
    return resources_dir() / "models" / "default.safetensors"


def user_data_dir() -> Path:
    """Per-user data (trained models, runs, corrections); ``MNIST_DESKTOP_DATA`` overrides."""
    env = os.environ.get("MNIST_DESKTOP_DATA")
    if env:
        return Path(env)
    from platformdirs import user_data_path

    return user_data_path(APP_NAME, appauthor=False)


def user_cache_dir() -> Path:
    """Rebuildable per-user files (ONNX copies of models); ``MNIST_DESKTOP_CACHE``
    overrides, and ``MNIST_DESKTOP_DATA`` moves it along with the data."""
    env = os.environ.get("MNIST_DESKTOP_CACHE")
    if env:
        return Path(env)
    if os.environ.get("MNIST_DESKTOP_DATA"):
        return user_data_dir() / "cache"
    from platformdirs import user_cache_path

    return user_cache_path(APP_NAME, appauthor=False)


def user_models_dir() -> Path:
    return user_data_dir() / "models"


def user_runs_dir() -> Path:
    return user_data_dir() / "runs"


def corrections_dir() -> Path:
    return user_data_dir() / "corrections"


def batch_journal_dir() -> Path:
    """The batch window's journals of corrections not yet exported."""
    return user_data_dir() / "batch-journal"
