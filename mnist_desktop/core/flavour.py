"""Which flavour of the program this is: the full one (torch: training, models without an
ONNX copy, GPUs) or the lite one (ONNX Runtime only). Asked without importing torch."""

from __future__ import annotations

import importlib.util

LITE_TRAINING_MESSAGE = ("Training needs the full mnist-desktop program; this is the lite build "
                         "(ONNX Runtime only: draw, open, batch-classify).")


def has_torch() -> bool:
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def training_unavailable_reason() -> str | None:
    """None when this program can train; else the sentence to show instead."""
    return None if has_torch() else LITE_TRAINING_MESSAGE
