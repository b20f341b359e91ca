"""Multi-digit images for measuring number reading: digits side by side with realistic
spacing, baseline drift, size variation, and (``touching``) ink that overlaps its
neighbour. Qt-free and torch-free.

:func:`number_image` composes one image from a digit set (the bundled training subset to
develop, the MNIST test set to measure once); :func:`number_drawing` composes a
:class:`~mnist_desktop.core.preprocess.Drawing` from generated stroke digits
(:func:`training.synth.generate_digit`), as a user would write a number on the canvas.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

STYLES = ("separated", "close", "touching")
INK = 0.3   # the ink level core.numbers counts as ink


def _ink_crop(im: np.ndarray) -> np.ndarray:
    cols = np.flatnonzero(im.max(axis=0) > 0)
    rows = np.flatnonzero(im.max(axis=1) > 0)
    return im[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.float32) / 255.0


def _scaled(crop: np.ndarray, height: int) -> np.ndarray:
    h, w = crop.shape
    width = max(1, int(round(w * height / h)))
    return np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize((width, height), Image.BILINEAR),
                      np.float32) / 255.0


def _touches(canvas: np.ndarray, piece: np.ndarray, x: int, y: int, reach: int = 1) -> bool:
    """Whether ``piece`` placed at (x, y) has ink within ``reach`` pixels (8-adjacent for
    1) of ink already on ``canvas``."""
    h, w = piece.shape
    r = reach
    region = canvas[max(0, y - r):y + h + r, max(0, x - r):x + w + r] >= INK
    grown = np.zeros_like(region)
    oy, ox = y - max(0, y - r), x - max(0, x - r)
    mask = piece >= INK
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            ys, xs = oy + dy, ox + dx
            sub = grown[max(0, ys):ys + h, max(0, xs):xs + w]
            src = mask[max(0, -ys):max(0, -ys) + sub.shape[0], max(0, -xs):max(0, -xs) + sub.shape[1]]
            sub |= src
    return bool((grown & region).any())


def number_image(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, n: int,
                 style: str = "separated", dark_on_light: bool | None = None,
                 placements: list | None = None) -> tuple[np.ndarray, str]:
    """A uint8 image of ``n`` random digits from ``images`` (28x28, white on black) written
    in a row, and the digits as a string.

    Every digit keeps its own size (80-100% of the line height) and sits on a drifting
    baseline (a slow random walk, +-15% of the height). ``separated``: 2-9 px between the
    boxes of neighbours (28-px digits); ``close``: each digit is moved left as long as its
    ink stays 2-3 px from its neighbour's (the boxes may overlap, the ink does not touch);
    ``touching``: moved left until its ink touches its neighbour's (and 0-2 px further, so
    that strokes overlap). ``dark_on_light``
    (None: either, at random) turns it into a scan-like image. ``placements``, when
    given, receives ``(x, y, ink)`` for every digit: where its float ink crop (0..1,
    white on black) lies in the image.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}")
    picks = rng.integers(0, len(images), n)
    line_h = 24
    crops = [_scaled(_ink_crop(images[i]), int(round(line_h * rng.uniform(0.8, 1.0)))) for i in picks]
    margin = 10
    drift = 0.0
    width = sum(c.shape[1] for c in crops) + 10 * n + 2 * margin
    canvas = np.zeros((line_h + 2 * margin + 8, width), np.float32)
    x = margin
    right_edge = margin
    for k, c in enumerate(crops):
        drift = float(np.clip(drift + rng.normal(0, 1.5), -0.15 * line_h, 0.15 * line_h))
        y = int(round(margin + 4 + drift + (line_h - c.shape[0])))   # bottom-aligned on the baseline
        if k:
            if style == "separated":
                x = right_edge + int(rng.integers(2, 10))
            elif style == "close":
                reach = int(rng.integers(2, 4))
                x = right_edge + 1
                while x > right_edge - c.shape[1] // 2 and not _touches(canvas, c, x - 1, y, reach):
                    x -= 1
            else:
                x = right_edge + 1
                while x > right_edge - c.shape[1] // 2 and not _touches(canvas, c, x, y):
                    x -= 1
                x -= int(rng.integers(0, 3))
        region = canvas[y:y + c.shape[0], x:x + c.shape[1]]
        np.maximum(region, c, out=region)
        right_edge = max(right_edge, x + c.shape[1])
        if placements is not None:
            placements.append((x, y, c))
    cols = np.flatnonzero(canvas.max(axis=0) > 0)
    canvas = canvas[:, :cols[-1] + 1 + margin]
    out = (canvas * 255).astype(np.uint8)
    if dark_on_light is None:
        dark_on_light = bool(rng.integers(0, 2))
    if dark_on_light:
        out = 255 - out
    return out, "".join(str(int(labels[i])) for i in picks)


def number_drawing(rng: np.random.Generator, n: int, gap: float = 0.25):
    """A :class:`~mnist_desktop.core.preprocess.Drawing` of ``n`` generated stroke digits
    written left to right (each scaled to a common height with +-10% variation, a
    drifting baseline, ``gap`` x height between their boxes on average) and its digits."""
    from mnist_desktop.core.preprocess import Drawing, Stroke
    from training.synth import generate_digit

    height = 200.0
    strokes: list[Stroke] = []
    text = ""
    x = 40.0
    drift = 0.0
    for _ in range(n):
        sample = generate_digit(rng)
        text += str(sample.label)
        pts = [s.points for s in sample.drawing.strokes if len(s.points)]
        xy = np.concatenate(pts)[:, :2]
        (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
        scale = height * rng.uniform(0.9, 1.1) / max(float(y1 - y0), 1.0)
        drift = float(np.clip(drift + rng.normal(0, 8), -30, 30))
        for p in pts:
            q = p.copy()
            q[:, 0] = (q[:, 0] - x0) * scale + x
            q[:, 1] = (q[:, 1] - y1) * scale + 260 + drift
            strokes.append(Stroke(q))
        x += (x1 - x0) * scale + height * gap * rng.uniform(0.5, 1.5)
    return Drawing(strokes, (int(x + 40), 320)), text
