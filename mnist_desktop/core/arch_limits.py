"""What each architecture of the zoo accepts, checked before anything is built.

A model file names its architecture and arguments (``arch``, ``arch_args``); a hostile or
broken one can ask for a width of 10^9 or -5, an MLP layer of 10^7 units or an ensemble of
10^6 members, which would try to allocate terabytes or fail deep inside torch. Every
argument is checked here against its type and range, and the network's parameter count is
computed from the arguments (no tensor is made) and held to :data:`MAX_PARAMETERS`.

Torch-free, so that metadata validation (:class:`~mnist_desktop.core.model_meta.ModelMeta`),
which the ONNX Runtime path and the batch workers run, refuses such a file before any
export or allocation. :func:`mnist_desktop.core.models.build_model` checks the same
limits, and the test suite checks the counts against the built networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

#: The largest network a model file may describe (parameters, all layers).
MAX_PARAMETERS = 50_000_000
MAX_CLASSES = 1000


@dataclass(frozen=True)
class Arg:
    """One keyword argument: its kind (``int``, ``float`` or ``ints``, a list of ints) and
    inclusive range (``ints``: of each element; ``max_len``: of the list)."""

    kind: str
    lo: float
    hi: float
    default: Any
    max_len: int = 0
    hi_open: bool = False   # the upper bound is excluded (a dropout probability < 1)


_DROPOUT = lambda default: Arg("float", 0.0, 1.0, default, hi_open=True)  # noqa: E731


def _mlp(nc: int, hidden) -> int:
    widths = [28 * 28, *hidden, nc]
    return sum(a * b + b for a, b in zip(widths, widths[1:]))


def _conv3_gap(nc: int, width: int) -> int:
    w = width
    return (9 * w + w) + (w * 2 * w * 9 + 2 * w) + (2 * w * 4 * w * 9 + 4 * w) + 4 * w * nc + nc


def _flagship(nc: int, width: int, members: int = 1) -> int:
    w, k = width, members
    convs = 9 * (1 * k * w + w * k * w + w * 2 * k * w + 2 * w * 2 * k * w + 2 * w * 4 * k * w + 4 * w * 4 * k * w)
    batch_norms = 2 * (k * w + k * w + 2 * k * w + 2 * k * w + 4 * k * w + 4 * k * w)
    return convs + batch_norms + 8 * k * w * nc + nc


@dataclass(frozen=True)
class ArchLimits:
    args: dict[str, Arg]
    parameters: Callable[..., int]   # (num_classes, **args) -> parameter count


LIMITS: dict[str, ArchLimits] = {
    "mlp": ArchLimits({"hidden": Arg("ints", 1, 65_536, (128, 64), max_len=8)},
                      lambda nc, hidden: _mlp(nc, hidden)),
    "cnn_mlp": ArchLimits({"dropout": _DROPOUT(0.25)},
                          lambda nc, dropout: 208 + 3216 + 200_960 + 32_896 + 128 * nc + nc),
    "mnistnet": ArchLimits({}, lambda nc: 320 + 64 + 18_496 + 128 + 1_179_776 + 128 * nc + nc),
    "cnn3": ArchLimits({"dropout": _DROPOUT(0.4)},
                       lambda nc, dropout: 288 + 64 + 18_432 + 128 + 73_728 + 256 + 147_584 + 128 * nc + nc),
    "conv3_gap": ArchLimits({"width": Arg("int", 1, 4096, 32)}, lambda nc, width: _conv3_gap(nc, width)),
    "flagship": ArchLimits({"width": Arg("int", 1, 4096, 16), "dropout": _DROPOUT(0.1)},
                           lambda nc, width, dropout: _flagship(nc, width)),
    "flagship_ensemble": ArchLimits({"width": Arg("int", 1, 4096, 16), "members": Arg("int", 1, 64, 2),
                                     "dropout": _DROPOUT(0.1)},
                                    lambda nc, width, members, dropout: _flagship(nc, width, members)),
}


def check_arch_args(arch: str, arch_args: dict[str, Any], num_classes: int) -> int:
    """Check ``arch``'s arguments and return the parameter count of the network.

    Raises
    ------
    ValueError
        Unknown architecture or argument, wrong type, out of range, or a network over
        :data:`MAX_PARAMETERS` (one line, naming the argument).
    """
    limits = LIMITS.get(arch)
    if limits is None:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(LIMITS))}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"number of classes must be 1..{MAX_CLASSES}")
    if not isinstance(arch_args, dict):
        raise ValueError("architecture arguments must be an object")
    unknown = sorted(set(arch_args) - set(limits.args))
    if unknown:
        allowed = ", ".join(sorted(limits.args)) or "none"
        raise ValueError(f"unknown argument {str(unknown[0])[:40]!r} for {arch} (accepted: {allowed})")
    values = {name: _checked(arch, name, spec, arch_args.get(name, spec.default))
              for name, spec in limits.args.items()}
    count = limits.parameters(num_classes, **values)
    if count > MAX_PARAMETERS:
        raise ValueError(f"{arch} with {_describe(arch_args)} has {count:,} parameters, "
                         f"over the limit of {MAX_PARAMETERS:,}")
    return count


def _checked(arch: str, name: str, spec: Arg, value: Any) -> Any:
    where = f"{arch} argument {name!r}"
    if spec.kind == "ints":
        if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= spec.max_len:
            raise ValueError(f"{where} must be a list of 1..{spec.max_len} integers")
        return tuple(_number(where, spec, v, integer=True) for v in value)
    return _number(where, spec, value, integer=spec.kind == "int")


def _number(where: str, spec: Arg, value: Any, integer: bool) -> Any:
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise ValueError(f"{where} must be {'an integer' if integer else 'a number'}, not {type(value).__name__}")
    if (isinstance(value, float) and not math.isfinite(value)) or not spec.lo <= value <= spec.hi \
            or (spec.hi_open and value >= spec.hi):
        upper = f"< {spec.hi:g}" if spec.hi_open else f"<= {spec.hi:g}"
        raise ValueError(f"{where} is {_shown(value)}; it must be >= {spec.lo:g} and {upper}")
    return value


def _shown(value: int | float) -> str:
    text = repr(value)
    if len(text) <= 16:
        return text
    return f"{value:.3g}" if isinstance(value, float) else f"about 10^{len(str(abs(value))) - 1}"


def _describe(arch_args: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v}" for k, v in arch_args.items()) or "default arguments"
    return text if len(text) <= 80 else text[:77] + "..."
