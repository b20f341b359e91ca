"""Drawn letters for measuring "not a digit": a small stroke font in two styles, kept out
of training and calibration.

The outlier exposure of the shipped model saw the letters of :data:`training.synth.LETTERS`
(print capitals and a few small letters). This font draws, in its own styles, the capital
and small letters that are not fair readings of a digit (the issue's exclusions: O o D Q
l I i J S s Z z B b g q G), so the measure covers letters and styles the model never saw:

* ``print``: block capitals and small letters with straight strokes and sharp corners;
* ``round``: the same letters written quickly - rounder bowls, curved joins, a slant.

Each sample is posed, mouse-sampled and given a pen by :mod:`training.synth` (evaluation
seeds of a stream of its own), then read through the stroke path and as a dark-on-light
image (:func:`measure`).

    python -m training.letters --n 1000
"""

from __future__ import annotations

import argparse
import json
import zlib

import numpy as np

from training.synth import C, SynthSample, _draw_strokes, _finish, _render_seed, arc

#: The issue's digit-like letters, never counted.
DIGIT_LIKE = frozenset("OoDQlIiJSsZzBbgqG")


def _bowl(cx, cy, rx, ry, a0, a1):
    """Control points along an elliptic arc, angles in radians (y down: pi/2 is the bottom)."""
    return arc(cx, cy, rx, ry, float(np.degrees(a0)), float(np.degrees(a1)))


def _font() -> dict[str, dict[str, list]]:
    """Letter -> style -> strokes (control points in a unit box, y down; ``C`` marks a corner)."""
    up = lambda pts: [list(p) for p in pts]   # noqa: E731
    f: dict[str, dict[str, list]] = {
        "A": {"print": [[(0.0, 1.0), (0.35, 0.0, C), (0.7, 1.0)], [(0.17, 0.58), (0.53, 0.58)]],
              "round": [[(0.05, 1.0), (0.25, 0.3), (0.38, 0.0, C), (0.52, 0.35), (0.7, 1.0)], [(0.1, 0.62), (0.62, 0.55)]]},
        "C": {"print": [_bowl(0.4, 0.5, 0.38, 0.5, -0.25 * np.pi, -1.75 * np.pi)],
              "round": [_bowl(0.42, 0.5, 0.4, 0.46, -0.2 * np.pi, -1.8 * np.pi)]},
        "E": {"print": [[(0.6, 0.0), (0.05, 0.0, C), (0.05, 1.0, C), (0.6, 1.0)], [(0.05, 0.5), (0.45, 0.5)]],
              "round": [_bowl(0.35, 0.26, 0.3, 0.24, -0.2 * np.pi, -1.5 * np.pi) + _bowl(0.35, 0.74, 0.33, 0.26, -0.5 * np.pi, -1.8 * np.pi)]},
        "F": {"print": [[(0.6, 0.0), (0.05, 0.0, C), (0.05, 1.0)], [(0.05, 0.5), (0.45, 0.5)]],
              "round": [[(0.65, 0.05), (0.3, 0.0), (0.15, 0.1), (0.12, 1.0)], [(0.0, 0.5), (0.45, 0.48)]]},
        "H": {"print": [[(0.05, 0.0), (0.05, 1.0)], [(0.62, 0.0), (0.62, 1.0)], [(0.05, 0.5), (0.62, 0.5)]],
              "round": [[(0.1, 0.0), (0.05, 1.0)], [(0.05, 0.55), (0.3, 0.45), (0.6, 0.5)], [(0.65, 0.0), (0.6, 1.0)]]},
        "K": {"print": [[(0.05, 0.0), (0.05, 1.0)], [(0.6, 0.0), (0.07, 0.55, C), (0.62, 1.0)]],
              "round": [[(0.1, 0.0), (0.05, 1.0)], [(0.6, 0.05), (0.3, 0.4), (0.1, 0.55), (0.35, 0.65), (0.65, 1.0)]]},
        "L": {"print": [[(0.05, 0.0), (0.05, 1.0, C), (0.6, 1.0)]],
              "round": [[(0.15, 0.0), (0.1, 0.7), (0.12, 0.95), (0.3, 1.0), (0.65, 0.95)]]},
        "M": {"print": [[(0.0, 1.0), (0.05, 0.0, C), (0.38, 0.62, C), (0.72, 0.0, C), (0.76, 1.0)]],
              "round": [[(0.0, 1.0), (0.1, 0.1), (0.2, 0.05), (0.38, 0.55, C), (0.55, 0.05), (0.68, 0.1), (0.76, 1.0)]]},
        "N": {"print": [[(0.05, 1.0), (0.05, 0.0, C), (0.6, 1.0, C), (0.6, 0.0)]],
              "round": [[(0.05, 1.0), (0.08, 0.05), (0.15, 0.02), (0.55, 0.95), (0.62, 0.98), (0.65, 0.0)]]},
        "P": {"print": [[(0.05, 1.0), (0.05, 0.0, C), (0.4, 0.0), (0.58, 0.12), (0.58, 0.38), (0.4, 0.5), (0.05, 0.5)]],
              "round": [[(0.1, 1.0), (0.08, 0.05)], _bowl(0.3, 0.26, 0.28, 0.24, -0.5 * np.pi, 0.55 * np.pi)]},
        "R": {"print": [[(0.05, 1.0), (0.05, 0.0, C), (0.4, 0.0), (0.58, 0.12), (0.58, 0.38), (0.4, 0.5), (0.06, 0.5, C), (0.62, 1.0)]],
              "round": [[(0.1, 1.0), (0.08, 0.05), (0.45, 0.02), (0.6, 0.2), (0.45, 0.45), (0.1, 0.5), (0.4, 0.7), (0.68, 1.0)]]},
        "T": {"print": [[(0.0, 0.0), (0.7, 0.0)], [(0.35, 0.0), (0.35, 1.0)]],
              "round": [[(0.0, 0.1), (0.3, 0.0), (0.75, 0.05)], [(0.4, 0.02), (0.35, 0.9), (0.3, 1.0)]]},
        "U": {"print": [[(0.05, 0.0), (0.05, 0.7)] + _bowl(0.33, 0.7, 0.28, 0.3, np.pi, 0.0)[1:] + [(0.61, 0.0)]],
              "round": [[(0.05, 0.0), (0.08, 0.8), (0.3, 1.0), (0.55, 0.85), (0.62, 0.0)]]},
        "V": {"print": [[(0.0, 0.0), (0.32, 1.0, C), (0.64, 0.0)]],
              "round": [[(0.0, 0.05), (0.2, 0.7), (0.32, 1.0), (0.48, 0.6), (0.7, 0.0)]]},
        "W": {"print": [[(0.0, 0.0), (0.18, 1.0, C), (0.38, 0.35, C), (0.58, 1.0, C), (0.78, 0.0)]],
              "round": [[(0.0, 0.0), (0.12, 0.8), (0.2, 1.0), (0.38, 0.4), (0.55, 1.0), (0.65, 0.8), (0.8, 0.0)]]},
        "X": {"print": [[(0.0, 0.0), (0.62, 1.0)], [(0.62, 0.0), (0.0, 1.0)]],
              "round": [[(0.05, 0.05), (0.35, 0.5), (0.7, 1.0)], [(0.65, 0.0), (0.3, 0.55), (0.0, 0.95)]]},
        "Y": {"print": [[(0.0, 0.0), (0.32, 0.5, C), (0.64, 0.0)], [(0.32, 0.5), (0.32, 1.0)]],
              "round": [[(0.0, 0.0), (0.2, 0.4), (0.35, 0.5)], [(0.7, 0.0), (0.35, 0.5), (0.3, 1.0)]]},
        "a": {"print": [_bowl(0.3, 0.72, 0.26, 0.27, -0.1 * np.pi, -1.95 * np.pi), [(0.56, 0.42), (0.56, 1.0)]],
              "round": [_bowl(0.3, 0.72, 0.26, 0.27, -0.05 * np.pi, -1.9 * np.pi) + [(0.58, 0.45), (0.56, 0.9), (0.65, 1.0)]]},
        "c": {"print": [_bowl(0.3, 0.72, 0.28, 0.28, -0.25 * np.pi, -1.75 * np.pi)],
              "round": [_bowl(0.3, 0.7, 0.3, 0.3, -0.15 * np.pi, -1.8 * np.pi)]},
        "d": {"print": [_bowl(0.3, 0.72, 0.26, 0.27, -0.1 * np.pi, -1.95 * np.pi), [(0.56, 0.0), (0.56, 1.0)]],
              "round": [_bowl(0.3, 0.72, 0.26, 0.27, -0.05 * np.pi, -1.9 * np.pi) + [(0.58, 0.45), (0.6, 0.0), (0.58, 0.9), (0.66, 1.0)]]},
        "e": {"print": [[(0.05, 0.7), (0.56, 0.7)] + _bowl(0.3, 0.72, 0.26, 0.28, 0.0, -1.7 * np.pi)[1:]],
              "round": [[(0.08, 0.72), (0.5, 0.62), (0.45, 0.45), (0.25, 0.45), (0.05, 0.7), (0.2, 0.98), (0.55, 0.9)]]},
        "f": {"print": [[(0.55, 0.05), (0.4, 0.0), (0.25, 0.1), (0.25, 1.0)], [(0.02, 0.45), (0.48, 0.45)]],
              "round": [[(0.6, 0.1), (0.45, 0.0), (0.3, 0.15), (0.25, 0.6), (0.2, 1.0)], [(0.0, 0.45), (0.5, 0.42)]]},
        "h": {"print": [[(0.05, 0.0), (0.05, 1.0)], [(0.05, 0.62), (0.2, 0.45), (0.4, 0.46), (0.5, 0.62), (0.5, 1.0)]],
              "round": [[(0.1, 0.0), (0.05, 1.0), (0.1, 0.6), (0.3, 0.45), (0.5, 0.55), (0.55, 1.0)]]},
        "k": {"print": [[(0.05, 0.0), (0.05, 1.0)], [(0.46, 0.42), (0.08, 0.72, C), (0.5, 1.0)]],
              "round": [[(0.1, 0.0), (0.05, 1.0)], [(0.5, 0.45), (0.1, 0.7), (0.3, 0.75), (0.55, 1.0)]]},
        "m": {"print": [[(0.0, 1.0), (0.0, 0.42, C), (0.1, 0.4), (0.22, 0.42), (0.3, 0.55), (0.3, 1.0, C),
                         (0.3, 0.55), (0.4, 0.42), (0.52, 0.42), (0.6, 0.55), (0.6, 1.0)]],
              "round": [[(0.0, 1.0), (0.05, 0.45), (0.18, 0.4), (0.3, 0.6), (0.32, 1.0), (0.35, 0.6), (0.5, 0.4),
                         (0.62, 0.6), (0.64, 1.0)]]},
        "n": {"print": [[(0.05, 0.4), (0.05, 1.0)], [(0.05, 0.6), (0.2, 0.42), (0.4, 0.43), (0.5, 0.6), (0.5, 1.0)]],
              "round": [[(0.05, 1.0), (0.08, 0.45), (0.3, 0.4), (0.5, 0.55), (0.52, 1.0)]]},
        "p": {"print": [[(0.05, 0.4), (0.05, 1.0)], _bowl(0.28, 0.55, 0.24, 0.16, -0.5 * np.pi, 0.5 * np.pi)],
              "round": [[(0.1, 0.4), (0.06, 1.0)], _bowl(0.3, 0.52, 0.26, 0.14, -0.6 * np.pi, 0.6 * np.pi)]},
        "r": {"print": [[(0.05, 0.4), (0.05, 1.0)], [(0.05, 0.6), (0.2, 0.43), (0.45, 0.42)]],
              "round": [[(0.08, 0.4), (0.06, 1.0), (0.1, 0.55), (0.3, 0.42), (0.5, 0.48)]]},
        "u": {"print": [[(0.05, 0.4), (0.05, 0.85), (0.2, 1.0), (0.4, 0.98), (0.5, 0.85)], [(0.5, 0.4), (0.5, 1.0)]],
              "round": [[(0.05, 0.4), (0.08, 0.9), (0.3, 1.0), (0.5, 0.85), (0.52, 0.4), (0.55, 1.0)]]},
        "v": {"print": [[(0.0, 0.4), (0.27, 1.0, C), (0.54, 0.4)]],
              "round": [[(0.0, 0.42), (0.2, 0.85), (0.28, 1.0), (0.42, 0.7), (0.58, 0.4)]]},
        "w": {"print": [[(0.0, 0.4), (0.15, 1.0, C), (0.3, 0.55, C), (0.45, 1.0, C), (0.6, 0.4)]],
              "round": [[(0.0, 0.4), (0.1, 0.9), (0.18, 1.0), (0.3, 0.6), (0.42, 1.0), (0.52, 0.9), (0.62, 0.4)]]},
        "x": {"print": [[(0.0, 0.4), (0.5, 1.0)], [(0.5, 0.4), (0.0, 1.0)]],
              "round": [[(0.02, 0.45), (0.25, 0.7), (0.55, 1.0)], [(0.52, 0.4), (0.28, 0.72), (0.0, 0.98)]]},
        "y": {"print": [[(0.0, 0.4), (0.27, 0.75, C)], [(0.54, 0.4), (0.15, 1.0)]],
              "round": [[(0.0, 0.4), (0.1, 0.7), (0.3, 0.75), (0.5, 0.4)], [(0.5, 0.4), (0.45, 0.9), (0.3, 1.0), (0.1, 0.95)]]},
        "t": {"print": [[(0.25, 0.1), (0.25, 1.0, C), (0.45, 1.0)], [(0.0, 0.4), (0.5, 0.4)]],
              "round": [[(0.3, 0.05), (0.25, 0.9), (0.35, 1.0), (0.55, 0.95)], [(0.0, 0.42), (0.5, 0.38)]]},
    }
    return {k: {s: [up(stroke) for stroke in v] for s, v in styles.items()} for k, styles in f.items()}


FONT = _font()
assert not DIGIT_LIKE & set(FONT)


def letter_samples(n: int, seed: int = 0):
    """``n`` drawn letters (every letter and style in turn), posed and mouse-sampled by
    :mod:`training.synth` from generators of their own (never a training stream)."""
    keys = [(ch, st) for ch in sorted(FONT) for st in sorted(FONT[ch])]
    for i in range(n):
        ch, style = keys[i % len(keys)]
        rng = np.random.default_rng([zlib.crc32(b"letters"), seed, i])
        curves = _draw_strokes(FONT[ch][style], rng)
        drawing, pen, params = _finish(curves, rng)
        yield SynthSample(drawing, -1, "letter", f"{ch}/{style}", pen, params, render_seed=_render_seed(rng))


def measure(predictor, n: int = 1000, seed: int = 0) -> dict:
    """Share of drawn letters flagged ``uncertain`` (or refused), through the stroke path
    and as dark-on-light images, overall, per style, and for letters in
    :data:`training.synth.LETTERS` (their print style was in outlier exposure) or not."""
    from training.synth import LETTERS, preprocess_samples

    ps = preprocess_samples(list(letter_samples(n, seed)), ["stroke", "image_dark"], predictor.options)
    probs, unc, _ = predictor.probabilities(ps.images) if len(ps.images) else (None, np.zeros(0, bool), None)
    names = np.asarray(ps.names)
    paths = np.asarray(ps.paths)
    letters = np.asarray([m.split("/")[0] for m in ps.names])
    styles = np.asarray([m.split("/")[1] for m in ps.names])
    trained = np.asarray([ch in LETTERS for ch in letters])

    def rate(mask):
        return {"n": int(mask.sum()), "flagged": float(unc[mask].mean()) if mask.any() else None}

    out = {"n_letters": n, "refused": len(ps.rejected), "all": rate(np.ones(len(unc), bool))}
    out["per_path"] = {p: rate(paths == p) for p in sorted(set(ps.paths))}
    out["per_style"] = {s: rate(styles == s) for s in sorted(set(styles))}
    out["never_in_training"] = rate(~trained)
    out["round_style_never_in_training"] = rate(~trained | (styles == "round"))
    out["per_letter"] = {ch: rate(letters == ch)["flagged"] for ch in sorted(set(letters))}
    read_as = {}
    for ch in sorted(set(letters)):
        m = (letters == ch) & ~unc
        if m.any():
            read_as[ch] = {predictor.labels[k]: int(c) for k, c in zip(*np.unique(probs[m].argmax(1), return_counts=True))}
    out["unflagged_read_as"] = read_as
    del names
    # The other side of the bargain: generated digit drawings (evaluation seeds) flagged.
    from training.synth import digit_samples

    ds = preprocess_samples(list(digit_samples(max(500, n // 2), "evaluation", seed)), ["stroke", "image_dark"],
                            predictor.options)
    d_probs, d_unc, _ = predictor.probabilities(ds.images)
    out["generated_digits"] = {"n": int(len(ds.images)), "flagged": float(d_unc.mean()),
                               "accuracy": float((d_probs.argmax(1) == ds.labels).mean()),
                               "refused": len(ds.rejected)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.letters", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from training.conditions import load_classifier

    print(json.dumps(measure(load_classifier(args.model), args.n, args.seed), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
