"""Synthetic mouse drawings: stroke-drawn digits and non-digits, and their renderer.

Used to measure how the model copes with what users really draw (fat or thin pens, small
or large, off-centre, rotated, slanted, either polarity) and to build the "not a digit"
sets on which the uncertainty threshold is calibrated and evaluated. Qt-free and
torch-free.

How a sample is made
--------------------
1. A hand-designed **template** (:data:`DIGIT_STYLES`, :data:`LETTERS`, shapes...) gives
   strokes as control points in a unit box (x right, y down, height 1). Corner points
   keep sharp turns (the top of a 7); the rest are smooth.
2. Control points are **jittered**, strokes may be reordered, reversed or split by a pen
   lift, then each stroke is **smoothed** (centripetal Catmull-Rom) into a dense curve.
3. The drawing gets a random **aspect**, **slant** (shear), **rotation**, **size** and
   **position** (often off-centre) on a **canvas** of 280-600 px.
4. The curve is **sampled like a mouse**: uneven spacing, hand tremor, integer pixel
   positions (a tablet keeps sub-pixel positions and varies the **pressure**).
5. Each sample has a **pen width** (2-22% of the drawing height). The stroke path of
   :func:`~mnist_desktop.core.preprocess.preprocess` ignores it (it normalizes the width);
   :meth:`SynthSample.render` uses it to draw the canvas as an image, dark-on-light or
   light-on-dark, optionally with blur, noise and JPEG artifacts, for the image path.

Seeds: one seed per purpose, one stream per sample
--------------------------------------------------
Sample ``i`` of a set is drawn from its own generator, seeded with
``(stream, PURPOSE_SEED_BASE[purpose] + seed, i)``: a set's first ``k`` samples do not
depend on its size, and sets for different purposes never share a generator state.

================  ==========================  ==============================================
purpose           seeds (``base + seed``)     use
================  ==========================  ==============================================
``train``         1,000,000 - 1,999,999       outlier-exposure / augmentation training data
``calibration``   2,000,000 - 2,999,999       fitting the uncertainty threshold
``evaluation``    3,000,000 - 3,999,999       measuring only (reports, tests)
================  ==========================  ==============================================

``seed`` must lie in ``[0, 1_000_000)``. Digits and non-digits use different streams, so
they never share a generator state either. On top of disjoint seeds, the ``train``
purpose never draws the non-digit kinds listed in :data:`HELD_OUT_FROM_TRAINING`, so the
evaluation also measures non-digits a model has never seen.

Non-digits
----------
Kinds (:data:`NONDIGIT_KINDS`): ``letter`` (strokes of :data:`LETTERS`), ``scribble``,
``shape``, ``blob`` (dots, dashes, filled blobs), ``noise`` (image only) and ``multi``
(several symbols side by side). Letters that look like digits are excluded on purpose
(:data:`EXCLUDED_LOOKALIKES`): a model is right to read them as digits. A plain circle or
ellipse is never drawn as a shape (it is a 0).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mnist_desktop.core.preprocess import (Drawing, EmptyInputError, PreprocessOptions, Stroke,
                                           _pressure_factor, preprocess)

# --------------------------------------------------------------------------- seeds

PURPOSE_SEED_BASE = {"train": 1_000_000, "calibration": 2_000_000, "evaluation": 3_000_000}
SEEDS_PER_PURPOSE = 1_000_000
_DIGIT_STREAM = 11
_NONDIGIT_STREAM = 12
_RENDER_STREAM = 13


def _base_seed(purpose: str, seed: int) -> int:
    if purpose not in PURPOSE_SEED_BASE:
        raise ValueError(f"unknown purpose {purpose!r}; one of {', '.join(PURPOSE_SEED_BASE)}")
    if not 0 <= int(seed) < SEEDS_PER_PURPOSE:
        raise ValueError(f"seed must be in [0, {SEEDS_PER_PURPOSE}), got {seed}")
    return PURPOSE_SEED_BASE[purpose] + int(seed)


def sample_rng(stream: int, purpose: str, seed: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of a set (see the module docstring)."""
    return np.random.default_rng([stream, _base_seed(purpose, seed), int(index)])


# --------------------------------------------------------------------------- templates
# A template is a list of strokes; a stroke is a list of control points (x, y) or
# (x, y, C) where C marks a corner. Coordinates: x right, y down, height 1.

C = True


def arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float,
        step: float = 30.0) -> list[tuple[float, float]]:
    """Control points along an elliptic arc from angle ``a0`` to ``a1`` (degrees; y is
    down, so increasing angles turn clockwise on screen)."""
    n = max(2, int(math.ceil(abs(a1 - a0) / step)) + 1)
    a = np.deg2rad(np.linspace(a0, a1, n))
    return [(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in a]


def _figure_eight(top: float, w_top: float, w_bottom: float, ccw: bool) -> list[tuple[float, float]]:
    # One stroke from the top, crossing itself at height `top`: x = c + w sin(2t) with
    # y running 0 -> 1 -> 0; the sign of the sine decides the drawing direction.
    pts = []
    for t in np.linspace(0, 2 * math.pi, 17):
        s = math.sin(2 * t) * (-1 if ccw else 1)
        y = 0.5 - 0.5 * math.cos(t)
        w = w_top if y < top else w_bottom
        pts.append((0.32 + w * s, y))
    return pts


def _digit_styles() -> dict[int, dict[str, Callable[[np.random.Generator], list]]]:
    # Each style is a function of the sample's generator so templates can vary their
    # proportions (loop sizes, where a 0 starts) beyond the per-point jitter.
    u = lambda r, lo, hi: float(r.uniform(lo, hi))  # noqa: E731
    return {
        0: {
            "oval": lambda r: [arc(0.3, 0.5, u(r, 0.24, 0.32), 0.5, a := u(r, -120, -60), a - u(r, 350, 385))],
            "narrow": lambda r: [arc(0.3, 0.5, u(r, 0.14, 0.22), 0.5, a := u(r, -120, -60), a - u(r, 350, 380))],
            "round": lambda r: [arc(0.4, 0.5, u(r, 0.36, 0.44), 0.5, a := u(r, -110, -40), a - u(r, 345, 375))],
        },
        1: {
            "stroke": lambda r: [[(0.3, 0.0), (0.3 + u(r, -0.04, 0.04), 0.5), (0.3, 1.0)]],
            "flag": lambda r: [[(0.06, u(r, 0.18, 0.35)), (0.32, 0.0, C), (0.32, 1.0)]],
            "flag_base": lambda r: [[(0.08, u(r, 0.18, 0.32)), (0.32, 0.0, C), (0.32, 1.0)],
                                    [(0.08, 1.0), (0.58, 1.0)]],
        },
        2: {
            "plain": lambda r: [[(0.04, 0.25), (0.14, 0.06), (0.32, 0.0), (0.5, 0.07), (0.57, 0.25),
                                 (0.48, 0.46), (0.26, 0.72), (0.03, 1.0, C), (u(r, 0.5, 0.66), 0.99)]],
            "loop": lambda r: [[(0.04, 0.25), (0.14, 0.06), (0.32, 0.0), (0.5, 0.07), (0.57, 0.25),
                                (0.48, 0.46), (0.28, 0.7), (0.12, 0.88), (0.05, 0.97), (0.0, 0.9),
                                (0.08, 0.83), (0.18, 0.92), (0.3, 1.0), (u(r, 0.5, 0.66), 0.98)]],
            "curly": lambda r: [[(0.06, 0.18), (0.25, 0.0), (0.45, 0.03), (0.56, 0.2), (0.52, 0.42),
                                 (0.36, 0.62), (0.12, 0.85), (0.04, 1.0, C), (0.25, 0.93), (0.45, 0.97),
                                 (u(r, 0.55, 0.68), 0.94)]],
        },
        3: {
            "round": lambda r: [[(0.04, 0.13), (0.22, 0.0), (0.44, 0.03), (0.55, 0.18), (0.46, 0.37),
                                 (0.22, 0.47), (0.47, 0.54), (0.58, 0.72), (0.5, 0.9), (0.28, 1.0),
                                 (0.04, u(r, 0.85, 0.95))]],
            "pointed": lambda r: [[(0.05, 0.12), (0.25, 0.0), (0.47, 0.05), (0.54, 0.2), (0.42, 0.38),
                                   (0.2, 0.48, C), (0.46, 0.55), (0.58, 0.73), (0.48, 0.92),
                                   (0.26, 1.0), (0.03, u(r, 0.82, 0.94))]],
            "flat_top": lambda r: [[(0.04, 0.0), (0.56, 0.0, C), (0.24, u(r, 0.36, 0.44), C), (0.46, 0.47),
                                    (0.58, 0.68), (0.5, 0.9), (0.27, 1.0), (0.04, 0.9)]],
        },
        4: {
            "closed": lambda r: [[(0.46, 0.0), (0.02, u(r, 0.6, 0.7), C), (0.66, u(r, 0.6, 0.7))],
                                 [(0.48, 0.0), (0.48, 1.0)]],
            "open": lambda r: [[(0.08, 0.0), (0.04, u(r, 0.52, 0.66), C), (0.66, u(r, 0.52, 0.66))],
                               [(0.52, u(r, -0.02, 0.2)), (0.52, 1.0)]],
            "open_one_stroke": lambda r: [[(0.08, 0.0), (0.04, (y := u(r, 0.52, 0.62)), C),
                                           (0.5, y, C), (0.52, u(r, -0.02, 0.12), C), (0.52, 1.0)]],
        },
        5: {
            "two_strokes": lambda r: [[(0.14, 0.0), (0.1, u(r, 0.4, 0.5), C), (0.3, 0.39), (0.5, 0.45),
                                       (0.6, 0.65), (0.52, 0.88), (0.3, 1.0), (0.03, 0.92)],
                                      [(0.14, 0.0), (u(r, 0.52, 0.66), 0.0)]],
            "one_stroke": lambda r: [[(u(r, 0.52, 0.66), 0.0), (0.15, 0.0, C), (0.1, u(r, 0.4, 0.5), C),
                                      (0.3, 0.39), (0.5, 0.45), (0.6, 0.65), (0.52, 0.88), (0.3, 1.0),
                                      (0.03, 0.92)]],
            "round_belly": lambda r: [[(0.16, 0.0), (0.12, 0.38, C), (0.35, 0.36), (0.58, 0.48),
                                       (0.64, 0.7), (0.5, 0.93), (0.25, 1.0), (0.02, 0.86)],
                                      [(0.16, 0.0), (u(r, 0.55, 0.7), 0.02)]],
        },
        6: {
            "loop": lambda r: [[(0.52, 0.02), (0.3, 0.15), (0.14, 0.4), (0.08, 0.7), (0.2, 0.95),
                                (0.38, 1.0), (0.55, 0.88), (0.56, 0.68), (0.4, u(r, 0.5, 0.6)),
                                (0.2, 0.6), (0.1, 0.72)]],
            "straight": lambda r: [[(0.5, 0.0), (0.3, 0.3), (0.12, 0.62), (0.15, 0.9), (0.33, 1.0),
                                    (0.53, 0.9), (0.55, 0.72), (0.38, u(r, 0.56, 0.64)), (0.18, 0.65),
                                    (0.12, 0.75)]],
            "small_loop": lambda r: [[(0.55, 0.0), (0.32, 0.12), (0.15, 0.38), (0.08, 0.68), (0.18, 0.94),
                                      (0.34, 1.0), (0.5, 0.92), (0.52, 0.78), (0.38, 0.68),
                                      (0.18, 0.72), (0.1, 0.8)]],
        },
        7: {
            "plain": lambda r: [[(0.03, 0.0), (0.6, 0.0, C), (0.4, 0.45), (u(r, 0.18, 0.3), 1.0)]],
            "crossbar": lambda r: [[(0.03, 0.0), (0.6, 0.0, C), (0.4, 0.45), (u(r, 0.18, 0.3), 1.0)],
                                   [(0.2, u(r, 0.45, 0.55)), (0.6, u(r, 0.45, 0.55))]],
            "serif": lambda r: [[(0.03, u(r, 0.1, 0.2)), (0.04, 0.0, C), (0.6, 0.0, C), (0.42, 0.45),
                                 (u(r, 0.25, 0.32), 1.0)]],
            "curved": lambda r: [[(0.03, 0.02), (0.6, 0.0, C), (0.46, 0.3), (0.33, 0.62), (0.28, 1.0)]],
        },
        8: {
            "one_stroke": lambda r: [_figure_eight(u(r, 0.42, 0.52), u(r, 0.2, 0.26), u(r, 0.24, 0.32),
                                                   bool(r.integers(2)))],
            "stacked": lambda r: [arc(0.3, 0.24, u(r, 0.16, 0.22), 0.24, a := u(r, -100, -60), a - 365),
                                  arc(0.3, 0.73, u(r, 0.22, 0.3), 0.27, b := u(r, -100, -60), b - 365)],
        },
        9: {
            "straight": lambda r: [[*arc(0.32, 0.23, u(r, 0.22, 0.28), 0.23, a := u(r, -20, 10), a - 360),
                                    (0.58, 0.28, C), (u(r, 0.5, 0.6), 1.0)]],
            "curved": lambda r: [[*arc(0.32, 0.23, u(r, 0.22, 0.28), 0.23, a := u(r, -20, 10), a - 360),
                                  (0.58, 0.3, C), (0.56, 0.62), (0.46, 0.88), (0.26, 1.0), (0.1, 0.94)]],
            "two_strokes": lambda r: [arc(0.3, 0.23, u(r, 0.22, 0.28), 0.23, a := u(r, -60, 0), a - 370),
                                      [(0.56, u(r, 0.05, 0.2)), (0.55, 1.0)]],
        },
    }


DIGIT_STYLES = _digit_styles()

# Letters that no reader would take for a digit. Coordinates as for digits.
LETTERS: dict[str, list] = {
    "A": [[(0.0, 1.0), (0.35, 0.0, C), (0.7, 1.0)], [(0.15, 0.6), (0.55, 0.6)]],
    "E": [[(0.6, 0.0), (0.05, 0.0, C), (0.05, 1.0, C), (0.6, 1.0)], [(0.05, 0.5), (0.48, 0.5)]],
    "F": [[(0.6, 0.0), (0.05, 0.0, C), (0.05, 1.0)], [(0.05, 0.48), (0.45, 0.48)]],
    "H": [[(0.05, 0.0), (0.05, 1.0)], [(0.62, 0.0), (0.62, 1.0)], [(0.05, 0.5), (0.62, 0.5)]],
    "K": [[(0.05, 0.0), (0.05, 1.0)], [(0.6, 0.0), (0.07, 0.55, C), (0.62, 1.0)]],
    "M": [[(0.0, 1.0), (0.05, 0.0, C), (0.38, 0.62, C), (0.72, 0.0, C), (0.76, 1.0)]],
    "N": [[(0.05, 1.0), (0.05, 0.0, C), (0.6, 1.0, C), (0.6, 0.0)]],
    "R": [[(0.05, 1.0), (0.05, 0.0, C), (0.38, 0.0), (0.56, 0.12), (0.56, 0.36), (0.38, 0.5),
           (0.06, 0.5, C), (0.62, 1.0)]],
    "T": [[(0.0, 0.0), (0.7, 0.0)], [(0.35, 0.0), (0.35, 1.0)]],
    "V": [[(0.0, 0.0), (0.32, 1.0, C), (0.64, 0.0)]],
    "W": [[(0.0, 0.0), (0.18, 1.0, C), (0.38, 0.35, C), (0.58, 1.0, C), (0.78, 0.0)]],
    "X": [[(0.0, 0.0), (0.62, 1.0)], [(0.62, 0.0), (0.0, 1.0)]],
    "Y": [[(0.0, 0.0), (0.32, 0.5, C), (0.64, 0.0)], [(0.32, 0.5), (0.32, 1.0)]],
    "k": [[(0.05, 0.0), (0.05, 1.0)], [(0.46, 0.42), (0.08, 0.72, C), (0.5, 1.0)]],
    "m": [[(0.0, 1.0), (0.0, 0.42, C), (0.1, 0.4), (0.22, 0.42), (0.3, 0.55), (0.3, 1.0, C),
           (0.3, 0.55), (0.4, 0.42), (0.52, 0.42), (0.6, 0.55), (0.6, 1.0)]],
    "w": [[(0.0, 0.4), (0.15, 1.0, C), (0.3, 0.55, C), (0.45, 1.0, C), (0.6, 0.4)]],
    "x": [[(0.0, 0.4), (0.5, 1.0)], [(0.5, 0.4), (0.0, 1.0)]],
    "h": [[(0.05, 0.0), (0.05, 1.0)], [(0.05, 0.62), (0.2, 0.45), (0.4, 0.46), (0.5, 0.62), (0.5, 1.0)]],
}

# Why these are never drawn as non-digits: each is a fair reading of a digit.
EXCLUDED_LOOKALIKES: dict[str, str] = {
    "O": "0", "o": "0", "D": "0", "Q": "0", "C": "0 or 6 (open)", "U": "0 or 4 (open)",
    "l": "1", "I": "1", "i": "1", "j": "1", "J": "1 or 7", "L": "1 or 4", "|": "1",
    "Z": "2", "z": "2", "S": "5", "s": "5", "B": "8", "g": "9", "q": "9", "P": "9 (mirrored)",
    "b": "6", "G": "6", "e": "6 or 0", "a": "9 or 0", "y": "4 or 9", "t": "4 or 7",
}


def _shapes() -> dict[str, Callable[[np.random.Generator], list]]:
    u = lambda r, lo, hi: float(r.uniform(lo, hi))  # noqa: E731

    def star(r):
        n = int(r.choice([5, 5, 6, 7]))
        step = 2 if n == 5 else 3 if n == 7 else 1
        if n == 6:  # a six-pointed star is two triangles
            t1 = [(0.5 + 0.5 * math.sin(a), 0.5 - 0.5 * math.cos(a)) for a in np.linspace(0, 2 * math.pi, 4)]
            t2 = [(0.5 - x + 0.5, 1 - y) for x, y in t1]
            return [[(x, y, C) for x, y in t1], [(x, y, C) for x, y in t2]]
        idx = [(k * step) % n for k in range(n + 1)]
        return [[(0.5 + 0.5 * math.sin(2 * math.pi * k / n), 0.5 - 0.5 * math.cos(2 * math.pi * k / n), C)
                 for k in idx]]

    def polygon(pts):
        return [[(x, y, C) for x, y in pts + pts[:1]]]

    def grid(r):
        nx, ny = int(r.integers(2, 5)), int(r.integers(2, 5))
        return ([[(x, 0.0), (x, 1.0)] for x in np.linspace(0, 1, nx)]
                + [[(0.0, y), (1.0, y)] for y in np.linspace(0, 1, ny)])

    def hash_sign(r):
        s = u(r, 0.0, 0.2)
        return [[(0.35 + s, 0.0), (0.25, 1.0)], [(0.75 + s, 0.0), (0.65, 1.0)],
                [(0.0, 0.33), (1.0, 0.33)], [(0.0, 0.67), (1.0, 0.67)]]

    def arrow(r):
        head = u(r, 0.2, 0.35)
        return [[(0.0, 0.5), (1.0, 0.5)], [(1.0 - head, 0.5 - head), (1.0, 0.5, C), (1.0 - head, 0.5 + head)]]

    def heart(r):
        return [[(0.5, 0.25), *arc(0.27, 0.25, 0.23, 0.22, -30, -200)[1:], (0.5, 1.0, C),
                 *arc(0.73, 0.25, 0.23, 0.22, 20, -150)[1:], (0.5, 0.25)]]

    def spiral(r):
        turns = u(r, 1.8, 3.2)
        t = np.linspace(0, turns * 2 * math.pi, int(turns * 10))
        rad = 0.05 + 0.45 * t / t[-1]
        return [[(0.5 + a * math.cos(b), 0.5 + a * math.sin(b)) for a, b in zip(rad, t)]]

    def plus(r):
        return [[(0.5, 0.0), (0.5, 1.0)], [(0.0, 0.5), (1.0, 0.5)]]

    def check(r):
        return [[(0.0, 0.55), (0.3, 1.0, C), (1.0, 0.0)]]

    def wave(r):
        k = u(r, 1.5, 3.0)
        return [[(x, 0.5 + 0.25 * math.sin(2 * math.pi * k * x)) for x in np.linspace(0, 1, 24)]]

    def smiley(r):
        # Face with eyes and mouth: the contents make it more than a 0.
        return [arc(0.5, 0.5, 0.5, 0.5, -90, 275), [(0.33, 0.35)], [(0.67, 0.35)],
                arc(0.5, 0.55, 0.25, 0.2, 20, 160)]

    return {
        "star": star,
        "triangle": lambda r: polygon([(0.5, 0.0), (1.0, u(r, 0.8, 1.0)), (0.0, 1.0)]),
        "square": lambda r: polygon([(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]),
        "diamond": lambda r: polygon([(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)]),
        "arrow": arrow,
        "heart": heart,
        "spiral": spiral,
        "grid": grid,
        "hash": hash_sign,
        "plus": plus,
        "check": check,
        "wave": wave,
        "smiley": smiley,
    }


SHAPES = _shapes()

NONDIGIT_KINDS = ("letter", "scribble", "shape", "blob", "noise", "multi")
_KIND_WEIGHTS = np.array([0.30, 0.15, 0.25, 0.10, 0.10, 0.10])
SCRIBBLES = ("random_walk", "zigzag", "loops", "tangle")
BLOBS = ("dot", "dots", "dash", "blob")
NOISES = ("speckle", "clouds", "lines", "uniform")
MULTIS = ("two_digits", "digit_letter", "word", "digit_row")

# Sub-kinds never drawn for training (outlier exposure), so that evaluation also covers
# non-digits a model has not seen.
HELD_OUT_FROM_TRAINING: dict[str, frozenset[str]] = {
    "letter": frozenset({"K", "W", "h"}),
    "shape": frozenset({"heart", "spiral", "smiley"}),
    "scribble": frozenset({"loops"}),
    "blob": frozenset(),
    "noise": frozenset({"lines"}),
    "multi": frozenset({"word"}),
}


# --------------------------------------------------------------------------- geometry

def _catmull_rom(ctrl: np.ndarray, per_segment: int = 12) -> np.ndarray:
    """Centripetal Catmull-Rom curve through ``ctrl`` (k x 2): smooth, passes through every
    control point and never overshoots into loops, as a hand's path would."""
    if len(ctrl) < 3:
        t = np.linspace(0, 1, per_segment + 1)[:, None]
        return ctrl[0] + t * (ctrl[-1] - ctrl[0]) if len(ctrl) == 2 else ctrl.copy()
    p = np.vstack([2 * ctrl[0] - ctrl[1], ctrl, 2 * ctrl[-1] - ctrl[-2]])
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        t0 = 0.0
        t1 = t0 + max(np.linalg.norm(p1 - p0) ** 0.5, 1e-4)
        t2 = t1 + max(np.linalg.norm(p2 - p1) ** 0.5, 1e-4)
        t3 = t2 + max(np.linalg.norm(p3 - p2) ** 0.5, 1e-4)
        t = np.linspace(t1, t2, per_segment, endpoint=False)[:, None]
        a1 = (t1 - t) / (t1 - t0) * p0 + (t - t0) / (t1 - t0) * p1
        a2 = (t2 - t) / (t2 - t1) * p1 + (t - t1) / (t2 - t1) * p2
        a3 = (t3 - t) / (t3 - t2) * p2 + (t - t2) / (t3 - t2) * p3
        b1 = (t2 - t) / (t2 - t0) * a1 + (t - t0) / (t2 - t0) * a2
        b2 = (t3 - t) / (t3 - t1) * a2 + (t - t1) / (t3 - t1) * a3
        out.append((t2 - t) / (t2 - t1) * b1 + (t - t1) / (t2 - t1) * b2)
    out.append(ctrl[-1:])
    return np.vstack(out)


def _smooth_stroke(stroke: Sequence[tuple], jitter: float, rng: np.random.Generator) -> np.ndarray:
    """Jitter a template stroke's control points and smooth it, piece by piece between
    corners, into a dense curve (m x 2)."""
    pts = np.array([p[:2] for p in stroke], np.float64)
    corner = np.array([len(p) > 2 and bool(p[2]) for p in stroke])
    pts = pts + rng.normal(0.0, jitter, pts.shape)
    if len(pts) == 1:
        return pts
    cuts = [0, *np.flatnonzero(corner[1:-1]) + 1, len(pts) - 1]
    pieces = [_catmull_rom(pts[a:b + 1]) for a, b in zip(cuts, cuts[1:])]
    return np.vstack([pieces[0], *[q[1:] for q in pieces[1:]]])


def _vary_strokes(strokes: list[np.ndarray], rng: np.random.Generator, split_p: float = 0.1) -> list[np.ndarray]:
    """Random stroke order and direction, and now and then a pen lift inside a stroke."""
    out = []
    for s in strokes:
        if rng.random() < 0.25:
            s = s[::-1]
        if len(s) > 20 and rng.random() < split_p:
            k = int(rng.integers(len(s) // 4, 3 * len(s) // 4))
            gap = int(rng.integers(-1, 2))  # a tiny overlap, a clean join, or a small gap
            out += [s[:k + 1], s[max(0, k + gap):]]
        else:
            out.append(s)
    if len(out) > 1 and rng.random() < 0.5:
        out = [out[i] for i in rng.permutation(len(out))]
    return out


@dataclass
class Pose:
    """Where and how a template lands on the canvas (angles in degrees)."""

    canvas: tuple[int, int]
    height_frac: float   # drawing height / canvas height, before rotation
    aspect: float        # horizontal stretch
    slant: float         # shear; positive leans the top to the right
    rotation: float      # positive turns clockwise on screen
    centering: str       # "centre" or "anywhere"


def random_canvas(rng: np.random.Generator) -> tuple[int, int]:
    """A realistic drawing canvas, 280-600 px, square half of the time."""
    w = int(rng.integers(28, 61)) * 10
    h = w if rng.random() < 0.5 else int(rng.integers(28, 61)) * 10
    return w, h


def random_pose(rng: np.random.Generator) -> Pose:
    return Pose(
        canvas=random_canvas(rng),
        height_frac=float(rng.uniform(0.15, 0.92)),
        aspect=float(np.exp(rng.uniform(np.log(0.7), np.log(1.4)))),
        # Right-handed writing leans right; some people write upright or lean left.
        slant=float(np.clip(rng.normal(8.0, 10.0), -20.0, 35.0)),
        rotation=float(np.clip(rng.normal(0.0, 8.0), -25.0, 25.0)),
        centering="centre" if rng.random() < 0.5 else "anywhere",
    )


def _place(curves: list[np.ndarray], pose: Pose, margin: float, rng: np.random.Generator
           ) -> tuple[list[np.ndarray], dict[str, float]]:
    """Map unit-box curves onto the canvas with the pose; return curves in pixels and the
    placement figures (actual size fraction and offset from the canvas centre)."""
    allp = np.vstack(curves)
    centre = (allp.min(0) + allp.max(0)) / 2
    sh = math.tan(math.radians(pose.slant))
    rot = math.radians(pose.rotation)
    cos, sin = math.cos(rot), math.sin(rot)
    m = np.array([[cos, -sin], [sin, cos]]) @ np.array([[pose.aspect, -sh], [0.0, 1.0]])
    cw, ch = pose.canvas
    scale = pose.height_frac * ch
    moved = [(c - centre) @ m.T * scale for c in curves]
    allp = np.vstack(moved)
    lo, hi = allp.min(0), allp.max(0)
    size = hi - lo
    room = np.array([cw, ch], np.float64) - 2 * margin
    shrink = min(1.0, *(room / np.maximum(size, 1e-6)))
    if shrink < 1.0:  # the pose does not fit: make it as large as the canvas allows
        moved = [c * shrink for c in moved]
        lo, hi, size = lo * shrink, hi * shrink, size * shrink
    free = np.maximum(room - size, 0.0)
    if pose.centering == "centre":
        pos = free / 2 + rng.normal(0.0, 0.04, 2) * np.array([cw, ch])
    else:
        pos = rng.uniform(0.0, 1.0, 2) * free
    pos = np.clip(pos, 0.0, free) + margin
    shift = pos - lo
    moved = [c + shift for c in moved]
    mid = (lo + hi) / 2 + shift
    offset = float(np.max(np.abs(mid - np.array([cw, ch]) / 2) / np.array([cw, ch])))
    return moved, {"height_px": float(size[1]), "width_px": float(size[0]),
                   "size_frac": float(max(size[0] / cw, size[1] / ch)), "offset": offset}


def _mouse_sample(curve: np.ndarray, step: float, tremor: float, integer: bool,
                  rng: np.random.Generator) -> np.ndarray:
    """Resample a dense curve (pixels) the way a mouse reports it: uneven spacing (the
    hand speeds up and slows down), a little tremor and, for a mouse, whole pixels."""
    if len(curve) == 1:
        pts = curve.copy()
    else:
        seg = np.linalg.norm(np.diff(curve, axis=0), axis=1)
        arc_len = np.concatenate([[0.0], np.cumsum(seg)])
        total = arc_len[-1]
        n = max(2, int(total / step) + 1)
        gaps = rng.uniform(0.5, 1.5, n - 1)
        at = np.concatenate([[0.0], np.cumsum(gaps)])
        at = at / at[-1] * total
        pts = np.column_stack([np.interp(at, arc_len, curve[:, 0]), np.interp(at, arc_len, curve[:, 1])])
        pts[1:-1] += rng.normal(0.0, tremor, pts[1:-1].shape)
    if integer:
        pts = np.round(pts)
        keep = np.concatenate([[True], np.any(np.diff(pts, axis=0) != 0, axis=1)])
        pts = pts[keep]
    return pts


def _pressure(n: int, tablet: bool, rng: np.random.Generator) -> np.ndarray:
    if not tablet:
        return np.full(n, 0.5)
    # A pen lands, presses and lifts: a ramp at both ends and slow variation between.
    t = np.linspace(0, 1, n)
    base = rng.uniform(0.35, 0.85)
    wobble = 0.12 * np.sin(2 * math.pi * (rng.uniform(0.5, 2.0) * t + rng.random()))
    ramp = np.minimum(1.0, np.minimum(t, 1 - t) * rng.uniform(4, 12) + 0.3)
    return np.clip(base * ramp + wobble, 0.05, 1.0)


# --------------------------------------------------------------------------- samples

def _render_seed(rng: np.random.Generator) -> tuple[int, int]:
    # Drawn last from the sample's generator: rendering (levels, artifacts, the path of a
    # "mixed" set) is as reproducible as the strokes and independent of render order.
    return tuple(int(x) for x in rng.integers(0, 2 ** 62, 2))


@dataclass
class SynthSample:
    """One generated drawing (or, for image-only non-digits, one image).

    Attributes
    ----------
    drawing
        The strokes on their canvas; None for image-only samples (``noise``).
    label
        The digit, or -1 for a non-digit.
    kind
        ``"digit"`` or one of :data:`NONDIGIT_KINDS`.
    name
        The template: ``"7/crossbar"``, ``"A"``, ``"star"``, ``"speckle"``...
    pen_width
        Pen width in canvas pixels used by :meth:`render`.
    params
        The random factors (canvas, size, pen, slant, rotation, offset...), JSON-ready.
    image_maker
        Draws an image-only sample from a generator and a polarity.
    render_seed
        Seeds rendering (ink and background levels, random artifacts, the path a
        ``"mixed"`` set sends it through); drawn from the sample's own generator.
    """

    drawing: Drawing | None
    label: int
    kind: str
    name: str
    pen_width: float
    params: dict[str, Any] = field(default_factory=dict)
    image_maker: Callable[[np.random.Generator, str], Image.Image] | None = field(default=None, repr=False)
    render_seed: tuple[int, ...] = (0, 0)

    def _render_rng(self, polarity: str) -> np.random.Generator:
        if polarity not in POLARITIES:
            raise ValueError(f"polarity must be one of {POLARITIES}")
        return np.random.default_rng([_RENDER_STREAM, *self.render_seed, POLARITIES.index(polarity)])

    def random_artifacts(self, polarity: str) -> "Artifacts | None":
        """The artifacts :meth:`render` applies with ``artifacts="random"``."""
        return random_artifacts(self._render_rng(polarity))

    def render(self, polarity: str = "dark_on_light", artifacts: "Artifacts | str | None" = "random") -> Image.Image:
        """The canvas as an 8-bit grayscale image.

        Parameters
        ----------
        polarity
            ``"dark_on_light"`` or ``"light_on_dark"``.
        artifacts
            ``"random"`` (drawn from the sample's own seed: half clean, half with some
            blur/noise/JPEG), None for a clean image, or an :class:`Artifacts`.
        """
        rng = self._render_rng(polarity)
        drawn = random_artifacts(rng)  # drawn first, so random_artifacts(polarity) matches
        if artifacts == "random":
            artifacts = drawn
        if self.drawing is None:
            if self.image_maker is None:
                raise ValueError("sample has neither strokes nor an image")
            img = self.image_maker(np.random.default_rng([_NONDIGIT_STREAM, *self.render_seed]), polarity)
        else:
            img = render_drawing(self.drawing, self.pen_width, polarity, rng=rng)
        return apply_artifacts(img, artifacts, rng) if artifacts is not None else img


POLARITIES = ("dark_on_light", "light_on_dark")


def _draw_strokes(template: list, rng: np.random.Generator, jitter: float | None = None,
                  split_p: float = 0.1) -> list[np.ndarray]:
    jitter = float(rng.uniform(0.008, 0.03)) if jitter is None else jitter
    curves = [_smooth_stroke(s, jitter, rng) for s in template]
    return _vary_strokes(curves, rng, split_p)


def _finish(curves: list[np.ndarray], rng: np.random.Generator, pose: Pose | None = None,
            pen_frac: float | None = None) -> tuple[Drawing, float, dict[str, Any]]:
    """Pose unit-box curves on a canvas, sample them like a mouse or a tablet, and pick
    the pen width."""
    pose = pose or random_pose(rng)
    pen_frac = float(np.exp(rng.uniform(np.log(0.02), np.log(0.22)))) if pen_frac is None else pen_frac
    pen_est = max(1.5, pen_frac * pose.height_frac * pose.canvas[1])
    placed, where = _place(curves, pose, margin=pen_est / 2 + 2, rng=rng)
    ref = max(where["height_px"], 0.5 * where["width_px"])
    if ref < 1.0:  # a single dot has no extent: size its pen from the pose instead
        ref = pose.height_frac * pose.canvas[1]
    pen = max(1.5, pen_frac * ref)
    tablet = bool(rng.random() < 0.25)
    step = float(rng.uniform(1.5, 9.0))
    tremor = float(rng.uniform(0.0, 0.7))
    strokes = []
    for c in placed:
        pts = _mouse_sample(c, step, tremor, integer=not tablet, rng=rng)
        strokes.append(Stroke(np.column_stack([pts, _pressure(len(pts), tablet, rng)]).astype(np.float32)))
    params = {"canvas": list(pose.canvas), "size_frac": where["size_frac"],
              "height_frac": where["height_px"] / pose.canvas[1], "offset": where["offset"],
              "aspect": pose.aspect, "slant": pose.slant, "rotation": pose.rotation,
              "pen_width": pen, "pen_frac": pen / ref,
              "device": "tablet" if tablet else "mouse", "strokes": len(strokes)}
    return Drawing(strokes, canvas_size=pose.canvas), pen, params


def generate_digit(rng: np.random.Generator, label: int | None = None, style: str | None = None) -> SynthSample:
    """One stroke-drawn digit (``label`` and ``style`` random when not given)."""
    label = int(rng.integers(10)) if label is None else int(label)
    styles = DIGIT_STYLES[label]
    style = str(rng.choice(sorted(styles))) if style is None else style
    curves = _draw_strokes(styles[style](rng), rng)
    drawing, pen, params = _finish(curves, rng)
    return SynthSample(drawing, label, "digit", f"{label}/{style}", pen, params, render_seed=_render_seed(rng))


def digit_samples(n: int, purpose: str = "evaluation", seed: int = 0, start: int = 0) -> Iterator[SynthSample]:
    """Samples ``start .. start + n - 1`` of the digit set ``(purpose, seed)``; labels are
    balanced (sample ``i`` is digit ``i % 10``)."""
    for i in range(start, start + n):
        rng = sample_rng(_DIGIT_STREAM, purpose, seed, i)
        yield generate_digit(rng, label=i % 10)


# --------------------------------------------------------------------------- non-digits

def _scribble(name: str, rng: np.random.Generator) -> list[np.ndarray]:
    if name == "random_walk":
        n = int(rng.integers(8, 30))
        v = np.cumsum(rng.normal(0, 1, (n, 2)), axis=0)  # a smoothed Brownian path
        return [_catmull_rom(v / max(np.ptp(v, axis=0).max(), 1e-6))]
    if name == "zigzag":
        k = int(rng.integers(4, 10))
        ys = np.linspace(0, 1, k)
        xs = np.where(np.arange(k) % 2 == 0, 0.0, 1.0) + rng.normal(0, 0.05, k)
        return [np.column_stack([xs, ys + rng.normal(0, 0.03, k)])]
    if name == "loops":
        turns = rng.uniform(3, 7)
        t = np.linspace(0, 2 * math.pi * turns, int(turns * 14))
        r = rng.uniform(0.15, 0.3)
        return [np.column_stack([t / t[-1] + r * np.cos(t), 0.5 + r * np.sin(t)])]
    if name == "tangle":
        out = []
        for _ in range(int(rng.integers(2, 5))):
            out.append(_catmull_rom(rng.uniform(0, 1, (int(rng.integers(4, 9)), 2))))
        return out
    raise ValueError(name)


def _blob_curves(name: str, rng: np.random.Generator) -> list[np.ndarray]:
    if name == "dot":
        return [np.zeros((1, 2))]
    if name == "dots":
        return [rng.uniform(0, 1, (1, 2)) for _ in range(int(rng.integers(2, 7)))]
    if name == "dash":
        return [np.array([[0.0, 0.5], [1.0, 0.5 + rng.normal(0, 0.05)]])]
    if name == "blob":
        # A small region filled by scribbling over it, as people colour in.
        k = int(rng.integers(6, 14))
        t = np.linspace(0, 1, k * 8)
        x = t * 0.8 + 0.1 * np.sin(t * k * math.pi * 2)
        y = 0.5 + 0.45 * np.sin(t * k * math.pi) * rng.uniform(0.6, 1.0)
        return [np.column_stack([x, y])]
    raise ValueError(name)


def _multi_template(name: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Several symbols side by side in one drawing."""
    if name == "two_digits":
        parts = [("digit", int(rng.integers(10))) for _ in range(2)]
    elif name == "digit_row":
        parts = [("digit", int(rng.integers(10))) for _ in range(3)]
    elif name == "digit_letter":
        parts = [("digit", int(rng.integers(10))), ("letter", str(rng.choice(sorted(LETTERS))))]
        if rng.random() < 0.5:
            parts.reverse()
    elif name == "word":
        parts = [("letter", str(rng.choice(sorted(LETTERS)))) for _ in range(int(rng.integers(2, 5)))]
    else:
        raise ValueError(name)
    curves, x = [], 0.0
    for what, key in parts:
        if what == "digit":
            styles = DIGIT_STYLES[key]
            tpl = styles[str(rng.choice(sorted(styles)))](rng)
        else:
            tpl = LETTERS[key]
        cs = [_smooth_stroke(s, 0.02, rng) for s in tpl]
        lo = min(c[:, 0].min() for c in cs)
        hi = max(c[:, 0].max() for c in cs)
        curves += [c + np.array([x - lo, 0.0]) for c in cs]
        x += (hi - lo) + rng.uniform(0.15, 0.4)
    return curves


def _noise_image(name: str, canvas: tuple[int, int], rng: np.random.Generator, polarity: str) -> Image.Image:
    w, h = canvas
    if name == "uniform":
        ink = rng.random((h, w))
    elif name == "speckle":
        img = Image.new("L", (w, h), 0)
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(15, 200))):
            x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.8, 4)
            d.ellipse((x - r, y - r, x + r, y + r), fill=255)
        ink = np.asarray(img, np.float64) / 255
    elif name == "clouds":
        cells = int(rng.integers(3, 8))
        field = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
        f = np.asarray(field, np.float64) / 255
        ink = (f > np.quantile(f, rng.uniform(0.75, 0.95))).astype(np.float64)
    elif name == "lines":
        img = Image.new("L", (w, h), 0)
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(3, 9))):
            d.line([(rng.uniform(0, w), rng.uniform(0, h)), (rng.uniform(0, w), rng.uniform(0, h))],
                   fill=255, width=int(rng.integers(2, 12)))
        ink = np.asarray(img, np.float64) / 255
    else:
        raise ValueError(name)
    bg, fg = _levels(polarity, rng)
    return Image.fromarray(np.clip(np.round(255 * (bg + (fg - bg) * ink)), 0, 255).astype(np.uint8), "L")


def generate_nondigit(rng: np.random.Generator, kind: str | None = None, name: str | None = None,
                      exclude: dict[str, frozenset[str]] | None = None) -> SynthSample:
    """One non-digit of ``kind`` (random when not given; weights favour letters and
    shapes). ``exclude`` maps kinds to sub-kind names that must not be drawn."""
    exclude = exclude or {}
    if kind is None:
        kind = str(rng.choice(NONDIGIT_KINDS, p=_KIND_WEIGHTS / _KIND_WEIGHTS.sum()))
    names = {"letter": sorted(LETTERS), "scribble": SCRIBBLES, "shape": sorted(SHAPES),
             "blob": BLOBS, "noise": NOISES, "multi": MULTIS}[kind]
    allowed = [x for x in names if x not in exclude.get(kind, ())]
    name = str(rng.choice(allowed)) if name is None else name
    if kind == "noise":
        canvas = random_canvas(rng)
        params = {"canvas": list(canvas)}
        return SynthSample(None, -1, kind, name, 0.0, params,
                           image_maker=lambda r, pol: _noise_image(name, canvas, r, pol),
                           render_seed=_render_seed(rng))
    if kind == "letter":
        curves = _draw_strokes(LETTERS[name], rng)
    elif kind == "shape":
        curves = _draw_strokes(SHAPES[name](rng), rng, jitter=float(rng.uniform(0.005, 0.02)))
    elif kind == "scribble":
        curves = _scribble(name, rng)
    elif kind == "blob":
        curves = _blob_curves(name, rng)
    else:
        curves = _multi_template(name, rng)
    pose = random_pose(rng)
    pen_frac = None
    if kind == "blob" and name in ("dot", "dots"):
        pose.height_frac = float(rng.uniform(0.05, 0.6)) if name == "dots" else 0.02
        pen_frac = float(rng.uniform(0.3, 1.0)) if name == "dots" else float(rng.uniform(1.0, 6.0))
    elif kind == "blob" and name == "blob":
        pen_frac = float(rng.uniform(0.15, 0.4))
    elif kind == "multi":
        # Several symbols side by side: the pose's height is per symbol.
        pose.height_frac = float(rng.uniform(0.12, 0.4))
    drawing, pen, params = _finish(curves, rng, pose, pen_frac)
    return SynthSample(drawing, -1, kind, name, pen, params, render_seed=_render_seed(rng))


def nondigit_samples(n: int, purpose: str = "evaluation", seed: int = 0, start: int = 0,
                     kind: str | None = None) -> Iterator[SynthSample]:
    """Samples ``start .. start + n - 1`` of the non-digit set ``(purpose, seed)``. The
    ``train`` purpose never draws :data:`HELD_OUT_FROM_TRAINING`."""
    exclude = HELD_OUT_FROM_TRAINING if purpose == "train" else None
    for i in range(start, start + n):
        rng = sample_rng(_NONDIGIT_STREAM, purpose, seed, i)
        yield generate_nondigit(rng, kind=kind, exclude=exclude)


# --------------------------------------------------------------------------- rendering

@dataclass
class Artifacts:
    """Image degradations: Gaussian blur (pixels), additive noise (fraction of the full
    range) and JPEG compression (quality 1-95, None = no JPEG)."""

    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    jpeg_quality: int | None = None


def random_artifacts(rng: np.random.Generator) -> Artifacts | None:
    """Half the time a clean canvas; otherwise a mix of blur, noise and JPEG."""
    if rng.random() < 0.5:
        return None
    return Artifacts(blur_sigma=float(rng.uniform(0.5, 2.0)) if rng.random() < 0.5 else 0.0,
                     noise_sigma=float(rng.uniform(0.01, 0.06)) if rng.random() < 0.5 else 0.0,
                     jpeg_quality=int(rng.integers(25, 90)) if rng.random() < 0.5 else None)


def _levels(polarity: str, rng: np.random.Generator) -> tuple[float, float]:
    """Background and ink levels (0..1): never quite black and white."""
    if polarity == "dark_on_light":
        return float(rng.uniform(0.85, 1.0)), float(rng.uniform(0.0, 0.25))
    return float(rng.uniform(0.0, 0.12)), float(rng.uniform(0.75, 1.0))


def render_drawing(drawing: Drawing, pen_width: float, polarity: str = "dark_on_light",
                   pressure_gain: float = 1.0, rng: np.random.Generator | None = None,
                   supersample: int = 1) -> Image.Image:
    """Draw strokes on a canvas-sized 8-bit grayscale image with a round pen.

    Parameters
    ----------
    drawing
        Strokes in canvas pixels; the image has ``drawing.canvas_size``.
    pen_width
        Pen diameter in canvas pixels at neutral pressure; pressure scales it as the
        stroke path of preprocessing does (0.5x..1.5x at ``pressure_gain`` 1).
    polarity
        ``"dark_on_light"`` or ``"light_on_dark"``.
    rng
        Picks the background and ink levels; pure white/black when None.
    supersample
        Draw at this multiple of the size and area-average down (anti-aliasing).
    """
    if polarity not in POLARITIES:
        raise ValueError(f"polarity must be one of {POLARITIES}")
    if rng is None:
        bg, fg = (1.0, 0.0) if polarity == "dark_on_light" else (0.0, 1.0)
    else:
        bg, fg = _levels(polarity, rng)
    w, h = drawing.canvas_size
    s = max(1, int(supersample))
    ink = Image.new("L", (w * s, h * s), 0)
    draw = ImageDraw.Draw(ink)
    for stroke in drawing.strokes:
        pts = stroke.points
        if not len(pts):
            continue
        xy = pts[:, :2].astype(np.float64) * s
        widths = pen_width * s * _pressure_factor(pts[:, 2].astype(np.float64), pressure_gain)
        for i in range(len(xy)):
            r = widths[i] / 2
            x, y = xy[i]
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
            if i:
                draw.line([tuple(xy[i - 1]), (x, y)], fill=255,
                          width=max(1, int(round((widths[i] + widths[i - 1]) / 2))))
    if s > 1:
        ink = ink.resize((w, h), Image.BOX)
    a = np.asarray(ink, np.float64) / 255
    return Image.fromarray(np.clip(np.round(255 * (bg + (fg - bg) * a)), 0, 255).astype(np.uint8), "L")


def apply_artifacts(img: Image.Image, artifacts: Artifacts, rng: np.random.Generator) -> Image.Image:
    """Blur, then noise, then JPEG round trip, as a photographed or pasted image gets."""
    if artifacts.blur_sigma > 0:
        img = img.filter(ImageFilter.GaussianBlur(artifacts.blur_sigma))
    if artifacts.noise_sigma > 0:
        a = np.asarray(img, np.float64) + rng.normal(0, 255 * artifacts.noise_sigma, (img.height, img.width))
        img = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")
    if artifacts.jpeg_quality is not None:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(artifacts.jpeg_quality))
        buf.seek(0)
        img = Image.open(buf)
        img.load()
        img = img.convert("L")
    return img


# --------------------------------------------------------------------------- to model input

PATHS = ("stroke", "image_dark", "image_light")
_PATH_POLARITY = {"image_dark": "dark_on_light", "image_light": "light_on_dark"}


@dataclass
class PreprocessedSet:
    """Generated samples turned into model input by the one preprocessing path.

    ``images`` is ``(N, 28, 28)`` float32; the lists are aligned with it. Samples that
    :func:`preprocess` refused as empty (``EmptyInputError``, e.g. uniform noise) are not
    in ``images`` but listed in ``rejected`` as ``{"kind", "name", "path"}``: the app
    tells the user there is nothing to classify, which for a non-digit is the right answer.
    """

    images: np.ndarray
    labels: np.ndarray
    kinds: list[str]
    names: list[str]
    paths: list[str]
    params: list[dict[str, Any]]
    rejected: list[dict[str, str]] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)  # "none" (strokes), "clean", "blur+jpeg"...

    def __len__(self) -> int:
        return len(self.labels)


def to_model_input(sample: SynthSample, path: str, opts: PreprocessOptions | None = None) -> np.ndarray:
    """A sample through :func:`preprocess`: its strokes (``"stroke"``) or its rendered
    canvas (``"image_dark"`` / ``"image_light"``). Raises EmptyInputError."""
    if path == "stroke":
        if sample.drawing is None:
            raise ValueError("an image-only sample has no stroke path")
        return preprocess(sample.drawing, opts)
    if path not in _PATH_POLARITY:
        raise ValueError(f"path must be one of {PATHS}")
    return preprocess(sample.render(_PATH_POLARITY[path]), opts)


def preprocess_samples(samples: Sequence[SynthSample] | Iterator[SynthSample], paths: str | Sequence[str],
                       opts: PreprocessOptions | None = None) -> PreprocessedSet:
    """Turn samples into a :class:`PreprocessedSet`.

    Parameters
    ----------
    paths
        One of :data:`PATHS` for all samples, a sequence of them (every sample goes
        through each), or ``"mixed"``: each drawing through one path picked from its own
        seed (stroke half the time, image of either polarity otherwise); image-only
        samples always take an image path.
    """
    mixed = isinstance(paths, str) and paths == "mixed"
    todo = [paths] if isinstance(paths, str) else list(paths)
    images, labels, kinds, names, used, params, rejected, degraded = [], [], [], [], [], [], [], []
    for s in samples:
        if mixed:
            r = np.random.default_rng([_RENDER_STREAM, *s.render_seed, len(POLARITIES)]).random()
            if s.drawing is not None and r < 0.5:
                chosen = ["stroke"]
            else:
                chosen = ["image_dark" if (r % 0.5) < 0.25 else "image_light"]
        else:
            chosen = [p for p in todo if p != "stroke" or s.drawing is not None]
        for p in chosen:
            try:
                x = to_model_input(s, p, opts)
            except EmptyInputError:
                rejected.append({"kind": s.kind, "name": s.name, "path": p})
                continue
            images.append(x)
            labels.append(s.label)
            kinds.append(s.kind)
            names.append(s.name)
            used.append(p)
            params.append(s.params)
            degraded.append("none" if p == "stroke" else artifacts_label(s.random_artifacts(_PATH_POLARITY[p])))
    arr = np.stack(images).astype(np.float32) if images else np.zeros((0, 28, 28), np.float32)
    return PreprocessedSet(arr, np.asarray(labels, np.int64), kinds, names, used, params, rejected, degraded)


def artifacts_label(a: Artifacts | None) -> str:
    """``"clean"`` or the degradations joined by ``+`` (``"blur+jpeg"``)."""
    if a is None:
        return "clean"
    parts = [name for name, on in (("blur", a.blur_sigma > 0), ("noise", a.noise_sigma > 0),
                                   ("jpeg", a.jpeg_quality is not None)) if on]
    return "+".join(parts) or "clean"


def style_factors(params: dict[str, Any]) -> dict[str, bool]:
    """Which hard conditions a sample has, for breaking accuracy down.

    ``small``: under 30% of the canvas; ``large``: over 65%; ``thin_pen``: pen under 5%
    of the drawing height; ``fat_pen``: over 12%; ``off_centre``: the centre is more than
    15% of the canvas away from the middle; ``rotated``: over 10 degrees; ``slanted``:
    shear over 15 degrees; ``tablet``: pressure varies.
    """
    return {
        "small": params["size_frac"] < 0.30,
        "large": params["size_frac"] > 0.65,
        "thin_pen": params["pen_frac"] < 0.05,
        "fat_pen": params["pen_frac"] > 0.12,
        "off_centre": params["offset"] > 0.15,
        "rotated": abs(params["rotation"]) > 10.0,
        "slanted": abs(params["slant"]) > 15.0,
        "tablet": params.get("device") == "tablet",
    }


def digit_images(n: int, purpose: str = "train", seed: int = 0, opts: PreprocessOptions | None = None,
                 paths: str | Sequence[str] = "mixed") -> tuple[np.ndarray, np.ndarray]:
    """``n`` generated digits as model input ``(images (N, 28, 28) float32, labels)``,
    e.g. to add mouse-drawn styles MNIST lacks (flagged 1s, open 4s, crossed 7s) to
    training. Use ``purpose="train"``: evaluation seeds are for measuring.

    With ``paths="mixed"`` half go through the stroke path and half are rendered (either
    polarity, half of those with blur/noise/JPEG) and go through the image path. Digits
    that preprocessing refuses (none in practice) are left out, so fewer than ``n`` may
    come back.
    """
    ps = preprocess_samples(digit_samples(n, purpose, seed), paths, opts)
    return ps.images, ps.labels


#: How many generated digits calibrate an int8 copy's activations.
INT8_CALIBRATION_IMAGES = 1000


def int8_calibration_images(opts: PreprocessOptions, n: int = INT8_CALIBRATION_IMAGES) -> np.ndarray:
    """``(n, 28, 28)`` model inputs of stroke-drawn digits from the ``calibration`` seeds,
    rendered both as strokes and as images (``mixed``): what ``mnist-desktop export
    --format onnx-int8`` calibrates an int8 copy's activations on."""
    return preprocess_samples(digit_samples(n, "calibration", 0), "mixed", opts).images
