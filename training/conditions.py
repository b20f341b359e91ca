"""Realistic image conditions: how digits arrive as files, and how well they are read.

People do not hand the app MNIST tensors. They crop a digit out of a scan at the ink,
photograph it on lined paper under a desk lamp, write it with a marker or a pencil, or
save it from an old low-resolution scan. This module turns digits the model never trained
on into image files under such **conditions** and measures, per condition, the accuracy
and the refusal rate ("nothing to classify") through the same path as ``mnist-desktop
classify`` (files on disk, the batch engine :func:`mnist_desktop.core.batch.classify_files`
that its job runs), next to the same digits saved clean.

Digits
------
``validation`` (default): the model's own validation split of the 5k training subset, as
its checkpoint records it (:func:`training.robustness.validation_split`; never the test
set). ``drawings``: generated stroke digits (:mod:`training.synth`, evaluation seeds).

Conditions (:data:`CONDITIONS`)
-------------------------------
Each digit becomes an ink map (0 = paper, 1 = ink) at about 4x MNIST's scale, which each
condition renders as a file: tight crops with the ink touching 1 to 4 edges, thick marker
strokes covering 40-70% of the frame, blur and defocus, low resolution (8x8 to 20x20,
upscaled with nearest, bilinear, bicubic and Lanczos filters), pencil (low contrast,
grain), ruled and squared paper, coloured ink on coloured paper, uneven light and shadow,
JPEG at quality 5-20, a phone photo (slight rotation and perspective), EXIF orientation,
and margins of 0 to 80% of the frame. Every random choice comes from a generator seeded
by (condition, digit index): the same command writes the same files.

    python -m training.conditions --report docs/results/conditions.md
    python -m training.conditions --source drawings --n 300
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

HI = 4  # the ink map is at HI x the 28x28 scale (112 px for an MNIST digit)

RESAMPLERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
              "lanczos": Image.LANCZOS}


# --------------------------------------------------------------------------- ink maps

def ink_map_from_mnist(digit: np.ndarray) -> np.ndarray:
    """A 28x28 uint8 MNIST digit (light on dark) as a smooth float ink map at ``HI`` x."""
    im = Image.fromarray(np.asarray(digit, np.uint8)).resize((28 * HI, 28 * HI), Image.BICUBIC)
    return np.clip(np.asarray(im, np.float32) / 255.0, 0.0, 1.0)


def ink_map_from_drawing(sample) -> np.ndarray:
    """A generated stroke digit (:class:`training.synth.SynthSample`) as an ink map with
    the digit about 80 px tall, in a 112 px frame like an MNIST digit's."""
    from training.synth import render_drawing

    img = render_drawing(sample.drawing, sample.pen_width, "light_on_dark", supersample=2)
    a = np.asarray(img, np.float32) / 255.0
    y0, y1, x0, x1 = _bbox(a, 0.1)
    crop = Image.fromarray(a[y0:y1, x0:x1], "F")
    s = 80.0 / max(crop.width, crop.height)
    crop = crop.resize((max(1, round(crop.width * s)), max(1, round(crop.height * s))), Image.BOX if s < 1 else Image.BICUBIC)
    out = np.zeros((28 * HI, 28 * HI), np.float32)
    c = np.clip(np.asarray(crop, np.float32), 0, 1)
    top, left = (out.shape[0] - c.shape[0]) // 2, (out.shape[1] - c.shape[1]) // 2
    out[top:top + c.shape[0], left:left + c.shape[1]] = c
    return out


def _bbox(a: np.ndarray, level: float = 0.15) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(a > level)
    if not len(ys):
        return 0, a.shape[0], 0, a.shape[1]
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def _to_gray(ink: np.ndarray, paper: float = 1.0, pen: float = 0.0) -> Image.Image:
    """Ink map -> 8-bit gray image, ink at level ``pen`` on paper at level ``paper``."""
    g = paper + (pen - paper) * np.clip(ink, 0, 1)
    return Image.fromarray(np.clip(np.rint(255 * g), 0, 255).astype(np.uint8), "L")


def _compose_rgb(ink: np.ndarray, paper: np.ndarray, pen) -> Image.Image:
    """Ink map over an RGB paper image ``(H, W, 3)`` in [0, 1] with pen colour ``pen``."""
    a = np.clip(ink, 0, 1)[..., None]
    rgb = paper * (1 - a) + np.asarray(pen, np.float32)[None, None, :] * a
    return Image.fromarray(np.clip(np.rint(255 * rgb), 0, 255).astype(np.uint8), "RGB")


def _with_margin(ink: np.ndarray, margin: float) -> np.ndarray:
    """The ink cropped at its bounding box, then padded so that the ink's larger side
    is ``1 - margin`` of the (square) frame."""
    y0, y1, x0, x1 = _bbox(ink)
    c = ink[y0:y1, x0:x1]
    side = max(c.shape) / max(1e-3, 1.0 - margin)
    side = int(math.ceil(side))
    out = np.zeros((side, side), np.float32)
    top, left = (side - c.shape[0]) // 2, (side - c.shape[1]) // 2
    out[top:top + c.shape[0], left:left + c.shape[1]] = c
    return out


def _dilate(ink: np.ndarray, radius: int) -> np.ndarray:
    """Grey-level dilation by a disc-ish kernel (Pillow's MaxFilter, applied in steps)."""
    im = Image.fromarray(ink, "F")
    while radius > 0:
        k = min(radius, 2)
        im = im.filter(ImageFilter.MaxFilter(2 * k + 1))
        radius -= k
    return np.asarray(im, np.float32)


def _resize(ink: np.ndarray, size: tuple[int, int], resample=Image.BICUBIC) -> np.ndarray:
    return np.clip(np.asarray(Image.fromarray(ink, "F").resize(size, resample), np.float32), 0, 1)


# --------------------------------------------------------------------------- conditions

@dataclass(frozen=True)
class Condition:
    """One way a digit reaches the app: ``make(ink, rng)`` returns the image (and its
    file format) from an ink map."""

    name: str
    group: str
    description: str
    make: Callable[[np.ndarray, np.random.Generator], tuple[Image.Image, str, dict]]


def _png(img: Image.Image, **extra) -> tuple[Image.Image, str, dict]:
    return img, "png", extra


def _clean(ink, rng):
    return _png(_to_gray(ink))


def _tight(sides: int):
    def make(ink, rng):
        y0, y1, x0, x1 = _bbox(ink, 0.1)
        h, w = ink.shape
        pad = [int(rng.integers(6, 20)) for _ in range(4)]        # top, bottom, left, right
        touching = rng.permutation(4)[:sides]
        for s in touching:
            pad[s] = 0
        t, b, l, r = pad
        c = np.pad(ink[y0:y1, x0:x1], ((t, b), (l, r)))
        scale = float(rng.uniform(1.0, 1.5))   # 28 px digits upscaled ~5x as a crop from a scan
        c = _resize(c, (max(1, round(c.shape[1] * scale)), max(1, round(c.shape[0] * scale))))
        return _png(_to_gray(c))
    return make


def _thick(lo: float, hi: float):
    def make(ink, rng):
        target = float(rng.uniform(lo, hi))
        # Dilate until the ink covers ``target`` of a frame with a small margin, but never
        # so far that the pen could not have drawn it (a stroke wider than a third of the
        # digit closes the loops of 0, 6, 8, 9: no longer readable, by anyone).
        y0, y1, x0, x1 = _bbox(ink, 0.5)
        r_max = int(0.1 * max(y1 - y0, x1 - x0))
        best, cover = ink, 0.0
        for radius in range(0, r_max + 1):
            d = _dilate(ink, radius) if radius else ink
            y0, y1, x0, x1 = _bbox(d, 0.5)
            m = int(0.03 * max(y1 - y0, x1 - x0))
            frame = np.pad(d[y0:y1, x0:x1], m)
            best, cover = frame, float((frame > 0.5).mean())
            if cover >= target:
                break
        return _png(_to_gray(best, paper=float(rng.uniform(0.9, 1.0)), pen=float(rng.uniform(0.0, 0.15))),
                    coverage=round(cover, 3))
    return make


def _blur(kind: str):
    def make(ink, rng):
        im = _to_gray(ink)
        if kind == "gaussian":
            im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(2.5, 5.0))))
        else:   # defocus: a disc kernel (the lens's aperture), a little brighter halo-free
            r = int(rng.integers(3, 6))
            yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
            k = ((yy ** 2 + xx ** 2) <= r * r).astype(np.float32)
            a = np.asarray(im, np.float32)
            pad = np.pad(a, r, mode="edge")
            win = np.lib.stride_tricks.sliding_window_view(pad, k.shape)
            a = np.einsum("ijkl,kl->ij", win, k) / k.sum()
            im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
        return _png(im)
    return make


def _lowres(side: int):
    def make(ink, rng):
        small = Image.fromarray(ink, "F").resize((side, side), Image.BOX)
        g = _to_gray(np.clip(np.asarray(small, np.float32), 0, 1))   # the low-res scan, 8-bit
        name = list(RESAMPLERS)[int(rng.integers(len(RESAMPLERS)))]
        out = int(rng.choice([64, 112, 200]))
        return _png(g.resize((out, out), RESAMPLERS[name]), filter=name)
    return make


def _grain(shape, rng, scale: float, amount: float) -> np.ndarray:
    """Paper grain: smooth noise at ``scale`` pixels, ``amount`` in level units."""
    h, w = shape
    sh, sw = max(2, int(h / scale)), max(2, int(w / scale))
    n = rng.normal(0, 1, (sh, sw)).astype(np.float32)
    n = np.asarray(Image.fromarray(n, "F").resize((w, h), Image.BICUBIC), np.float32)
    return amount * n / (n.std() + 1e-6)


def _pencil(ink, rng):
    paper = float(rng.uniform(0.88, 0.97))
    pen = float(rng.uniform(0.45, 0.65))          # graphite: grey, not black
    # Graphite is patchy along the stroke: modulate the ink by coarse noise.
    patchy = np.clip(1.0 + _grain(ink.shape, rng, 3.0, 0.25), 0.4, 1.2)
    g = paper + (pen - paper) * np.clip(ink * patchy, 0, 1) + _grain(ink.shape, rng, 1.5, 0.02)
    return _png(Image.fromarray(np.clip(np.rint(255 * g), 0, 255).astype(np.uint8), "L"))


def _lined(squared: bool):
    def make(ink, rng):
        frame = _with_margin(ink, float(rng.uniform(0.15, 0.35)))
        h, w = frame.shape
        paper = np.ones((h, w, 3), np.float32) * np.asarray([0.98, 0.98, 0.95], np.float32)
        line = np.asarray([0.55, 0.7, 0.9] if rng.random() < 0.7 else [0.6, 0.6, 0.6], np.float32)
        gap = float(rng.uniform(0.22, 0.4)) * h           # several lines through the digit
        width = max(1, int(round(rng.uniform(1, 2.5))))
        off = float(rng.uniform(0, gap))
        rows = np.zeros(h, bool)
        for y in np.arange(off, h, gap):
            rows[int(y):int(y) + width] = True
        paper[rows] = line
        if squared:
            cols = np.zeros(w, bool)
            for x in np.arange(float(rng.uniform(0, gap)), w, gap):
                cols[int(x):int(x) + width] = True
            paper[:, cols] = line
        elif rng.random() < 0.5:   # the red margin line of a school notebook
            x = int(rng.uniform(0.05, 0.2) * w)
            paper[:, x:x + width + 1] = [0.9, 0.45, 0.45]
        pen = [0.05, 0.1, 0.45] if rng.random() < 0.5 else [0.1, 0.1, 0.1]
        return _png(_compose_rgb(frame, paper, pen))
    return make


INKS = {"blue": (0.1, 0.15, 0.6), "red": (0.75, 0.1, 0.1), "green": (0.05, 0.45, 0.15),
        "black": (0.08, 0.08, 0.08), "purple": (0.4, 0.1, 0.5)}
PAPERS = {"yellow": (0.98, 0.93, 0.55), "pink": (0.98, 0.8, 0.85), "light blue": (0.75, 0.88, 0.98),
          "kraft": (0.78, 0.64, 0.45), "mint": (0.8, 0.95, 0.82), "grey": (0.8, 0.8, 0.8)}


def _coloured(ink, rng):
    frame = _with_margin(ink, float(rng.uniform(0.1, 0.3)))
    ink_name = list(INKS)[int(rng.integers(len(INKS)))]
    paper_name = list(PAPERS)[int(rng.integers(len(PAPERS)))]
    paper = np.ones(frame.shape + (3,), np.float32) * np.asarray(PAPERS[paper_name], np.float32)
    return _png(_compose_rgb(frame, paper, INKS[ink_name]), ink=ink_name, paper=paper_name)


def _photo_canvas(ink: np.ndarray, rng, margin: float, out: int) -> np.ndarray:
    frame = _with_margin(ink, margin)
    return _resize(frame, (out, out), Image.BICUBIC)


def _shadow(ink, rng):
    out = int(rng.integers(240, 400))
    a = _photo_canvas(ink, rng, float(rng.uniform(0.2, 0.4)), out)
    yy, xx = np.mgrid[0:out, 0:out].astype(np.float32) / out
    angle = float(rng.uniform(0, 2 * math.pi))
    light = 0.95 - float(rng.uniform(0.25, 0.45)) * np.clip((np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)) + 0.5, 0, 1)
    # a soft shadow of a hand or a phone over one side
    cx, cy = rng.uniform(-0.2, 1.2, 2)
    r = float(rng.uniform(0.3, 0.6))
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    light = light * (1 - float(rng.uniform(0.15, 0.3)) * np.clip((r - d) / 0.15, 0, 1))
    pen = float(rng.uniform(0.05, 0.2))
    g = light * (1 - a) + pen * light * a + rng.normal(0, 0.01, a.shape)
    return _png(Image.fromarray(np.clip(np.rint(255 * g), 0, 255).astype(np.uint8), "L"))


def _jpeg(ink, rng):
    img = _to_gray(_resize(ink, (int(rng.integers(56, 160)),) * 2))
    if rng.random() < 0.5:
        img = img.convert("RGB")
    return img, "jpeg", {"quality": int(rng.integers(5, 21))}


def _phone(ink, rng):
    out = int(rng.integers(300, 480))
    a = _photo_canvas(ink, rng, float(rng.uniform(0.25, 0.45)), out)
    paper = float(rng.uniform(0.75, 0.92))
    g = paper - (paper - float(rng.uniform(0.1, 0.25))) * a
    g = g + _grain(a.shape, rng, 2.0, 0.015)
    img = Image.fromarray(np.clip(np.rint(255 * g), 0, 255).astype(np.uint8), "L").convert("RGB")
    img = img.rotate(float(rng.uniform(-10, 10)), Image.BICUBIC, fillcolor=(int(255 * paper),) * 3)
    # perspective: the phone held at a slight angle (corners moved by up to 8%)
    w, h = img.size
    d = lambda: float(rng.uniform(-0.08, 0.08)) * w   # noqa: E731
    quad = (d(), d(), d(), h + d(), w + d(), h + d(), w + d(), d())
    img = img.transform((w, h), Image.QUAD, quad, Image.BICUBIC, fillcolor=(int(255 * paper),) * 3)
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.5))))
    return img, "jpeg", {"quality": int(rng.integers(60, 90))}


_EXIF_STORE = {3: Image.ROTATE_180, 6: Image.ROTATE_90, 8: Image.ROTATE_270}


def _exif(ink, rng):
    img = _to_gray(ink)
    orientation = int(rng.choice(list(_EXIF_STORE)))
    # A camera stores the sensor's pixels and the orientation a viewer applies to them:
    # orientation 6 means "rotate 90 degrees clockwise to view", so the stored pixels are
    # the upright image turned 90 degrees anticlockwise.
    stored = img.transpose(_EXIF_STORE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    fmt = "jpeg" if rng.random() < 0.5 else "png"
    extra = {"exif": exif.tobytes(), "orientation": orientation}
    if fmt == "jpeg":
        extra["quality"] = 92
    return stored, fmt, extra


def _margin(margin: float):
    def make(ink, rng):
        m = float(np.clip(margin + rng.uniform(-0.03, 0.03), 0.0, 0.85))
        frame = _with_margin(ink, m)
        size = int(rng.integers(100, 300))
        return _png(_to_gray(_resize(frame, (size, size))))
    return make


CONDITIONS: tuple[Condition, ...] = (
    Condition("clean", "reference", "dark ink on white, MNIST's margins, 112 px", _clean),
    *(Condition(f"tight crop, {k} edge{'s' if k > 1 else ''}", "tight crop",
                f"cut at the ink on {k} side(s), upscaled ~5x", _tight(k)) for k in (1, 2, 3, 4)),
    Condition("thick marker 40-55%", "thick marker", "strokes dilated (up to a pen a fifth of the digit's "
              "height) to cover 40-55% of the frame", _thick(0.40, 0.55)),
    Condition("thick marker 55-70%", "thick marker", "the same, aiming at 55-70% of the frame "
              "(narrow digits get there, round ones stop at the pen limit)", _thick(0.55, 0.70)),
    Condition("gaussian blur", "blur", "Gaussian blur, sigma 2.5-5 px at 112 px", _blur("gaussian")),
    Condition("defocus", "blur", "disc (defocus) blur, radius 3-5 px at 112 px", _blur("defocus")),
    *(Condition(f"low-res {s}x{s}", "low resolution", f"shrunk to {s}x{s}, upscaled to 64-200 px "
                "(nearest, bilinear, bicubic or Lanczos)", _lowres(s)) for s in (8, 10, 12, 14, 16, 20)),
    Condition("pencil", "pencil", "grey patchy graphite on off-white paper, grain", _pencil),
    Condition("ruled paper", "paper", "blue or grey ruled lines through the digit, red margin line", _lined(False)),
    Condition("squared paper", "paper", "a square grid through the digit", _lined(True)),
    Condition("coloured ink on coloured paper", "colour", "blue/red/green/purple/black on "
              "yellow/pink/blue/kraft/mint/grey", _coloured),
    Condition("uneven light and shadow", "light", "a light gradient and a soft shadow, 240-400 px", _shadow),
    Condition("JPEG quality 5-20", "jpeg", "56-160 px, gray or RGB", _jpeg),
    Condition("phone photo", "photo", "rotation +-10 deg, perspective, blur, grey paper, JPEG", _phone),
    Condition("EXIF orientation", "exif", "pixels stored turned, EXIF orientation 3/6/8 (PNG, JPEG)", _exif),
    *(Condition(f"margin {int(m * 100)}%", "margin", f"the ink is {100 - int(m * 100)}% of the frame",
                _margin(m)) for m in (0.0, 0.2, 0.4, 0.6, 0.8)),
)

#: Low-resolution conditions below 12x12: reported, not held to the clean accuracy.
EXEMPT = ("low-res 8x8", "low-res 10x10")


def condition_rng(name: str, index: int, seed: int = 0) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(name.encode()), index, seed])


def render(condition: Condition, ink: np.ndarray, index: int, seed: int = 0) -> tuple[bytes, str, dict]:
    """The file bytes of digit ``index`` under ``condition``: ``(data, extension, info)``."""
    img, fmt, extra = condition.make(ink, condition_rng(condition.name, index, seed))
    save = {k: extra[k] for k in ("quality", "exif") if k in extra}
    buf = io.BytesIO()
    img.save(buf, fmt.upper(), **save)
    info = {k: v for k, v in extra.items() if k not in ("exif",)}
    return buf.getvalue(), "jpg" if fmt == "jpeg" else fmt, info


# --------------------------------------------------------------------------- digits

def source_digits(source: str, n: int, data: str, meta) -> tuple[list[np.ndarray], np.ndarray]:
    """``n`` ink maps and labels from ``source`` (``validation`` or ``drawings``)."""
    if source == "validation":
        from training.robustness import validation_split

        images, labels = validation_split(data, 0, 500, meta)
        rng = np.random.default_rng(0)
        pick = np.sort(rng.permutation(len(labels))[:n]) if n < len(labels) else np.arange(len(labels))
        return [ink_map_from_mnist(images[i]) for i in pick], np.asarray(labels)[pick]
    if source == "drawings":
        from training import synth

        samples = list(synth.digit_samples(n, "evaluation", seed=17))
        return [ink_map_from_drawing(s) for s in samples], np.asarray([s.label for s in samples])
    raise ValueError(f"unknown source {source!r}: validation or drawings")


# --------------------------------------------------------------------------- measuring

def write_condition_files(root: Path, inks, labels, conditions=CONDITIONS, seed: int = 0) -> dict[str, list[str]]:
    """Write every digit under every condition to ``root/<condition>/<i>_<label>.<ext>``."""
    files: dict[str, list[str]] = {}
    for c in conditions:
        folder = root / c.name.replace(" ", "_").replace(",", "").replace("%", "pc")
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, (ink, label) in enumerate(zip(inks, labels)):
            data, ext, _ = render(c, ink, i, seed)
            p = folder / f"{i:05d}_{int(label)}.{ext}"
            p.write_bytes(data)
            paths.append(str(p))
        files[c.name] = paths
    return files


def load_classifier(model: str | None):
    """The model as ``mnist-desktop classify`` runs it on a CPU: its trusted ONNX copy
    when it has one, else torch."""
    from mnist_desktop.core.checkpoint import load_model
    from mnist_desktop.core.onnx_predictor import OnnxPredictor
    from mnist_desktop.core.paths import default_model_path
    from mnist_desktop.core.torch_predictor import TorchPredictor

    path = Path(model or default_model_path())
    if path.with_suffix(".onnx").exists():
        try:
            return OnnxPredictor(path.with_suffix(".onnx"), source=path)
        except Exception:   # an untrusted or stale copy: torch gives the same answers
            pass
    return TorchPredictor(load_model(path), device="cpu")


def classify_paths(paths: list[str], model: str | None, workers: int = 0, predictor=None) -> list:
    """The rows ``mnist-desktop classify`` makes for ``paths``, in order: the batch
    engine it runs (:func:`mnist_desktop.core.batch.classify_files`: decoding, the one
    preprocessing path, inference and the uncertainty rule)."""
    from mnist_desktop.core.batch import classify_files

    predictor = predictor or load_classifier(model)
    return list(classify_files(paths, predictor, workers=workers))


def measure(source: str = "validation", n: int = 500, data: str = "../shared/data/mnist", model: str | None = None,
            conditions=CONDITIONS, workers: int = 0, seed: int = 0) -> dict:
    """Per condition: accuracy, refusals and flags, and the same digits clean."""
    from mnist_desktop.core.checkpoint import read_meta
    from mnist_desktop.core.paths import default_model_path

    meta = read_meta(model or default_model_path())
    inks, labels = source_digits(source, n, data, meta)
    out = {"source": source, "n": len(labels), "model": str(model or default_model_path().name),
           "conditions": {}}
    with tempfile.TemporaryDirectory(prefix="conditions-") as tmp:
        files = write_condition_files(Path(tmp), inks, labels, conditions, seed)
        every = [p for c in conditions for p in files[c.name]]
        t0 = time.perf_counter()
        rows = dict(zip(every, classify_paths(every, model, workers)))
        elapsed = time.perf_counter() - t0
        for c in conditions:
            rs = [rows[p] for p in files[c.name]]
            ok = np.asarray([r.ok for r in rs])
            right = np.asarray([r.ok and r.prediction == str(int(lab)) for r, lab in zip(rs, labels)])
            flagged = np.asarray([r.ok and r.uncertain for r in rs])
            errors: dict[str, int] = {}
            for r in rs:
                if not r.ok:
                    errors[r.error] = errors.get(r.error, 0) + 1
            out["conditions"][c.name] = {
                "group": c.group, "description": c.description, "n": len(rs),
                "accuracy": float(right.mean()), "refused": float((~ok).mean()),
                "flagged": float(flagged.mean()),
                "flagged_when_wrong": float(flagged[ok & ~right].mean()) if (ok & ~right).any() else None,
                "errors": errors}
    out["elapsed_s"] = elapsed
    out["files"] = sum(len(v) for v in files.values())
    return out


def mnist_png_gap(data: str, model: str | None = None, workers: int = 0) -> dict:
    """The MNIST **test** set (measuring only) saved as PNG files and read through
    ``classify``'s path, against the raw tensors given to the model directly."""
    from mnist_desktop.core.data import load_idx_folder
    test = load_idx_folder(data, "test")
    labels = np.asarray(test.labels)
    predictor = load_classifier(model)
    raw = np.concatenate([predictor.probabilities(test.images[i:i + 1000].astype(np.float32) / 255.0)[0]
                          for i in range(0, len(labels), 1000)]).argmax(1)
    with tempfile.TemporaryDirectory(prefix="mnist-png-") as tmp:
        paths = []
        for i, a in enumerate(test.images):
            p = Path(tmp) / f"{i:05d}.png"
            Image.fromarray(a).save(p)
            paths.append(str(p))
        rows = classify_paths(paths, model, workers, predictor)
    png = np.asarray([r.prediction if r.ok else "" for r in rows])
    acc_raw = float((raw == labels).mean())
    acc_png = float((png == labels.astype(str)).mean())
    return {"n": int(len(labels)), "raw_tensor_accuracy": acc_raw, "png_accuracy": acc_png,
            "gap_points": 100 * (acc_png - acc_raw), "refused": int(sum(not r.ok for r in rows)),
            "answers_differ": int((png != raw.astype(str)).sum())}


def report_markdown(results: list[dict], command: str) -> str:
    """The table kept in the repository: one row per condition, one column group per source."""
    lines = ["# Reading digits under realistic image conditions", "",
             "Written by `" + command + "` (`training/conditions.py`): every digit saved as an image file under each",
             "condition and read through `mnist-desktop classify`'s path (the batch engine its job runs),",
             "next to the same digits saved clean. Accuracy counts a refused file as wrong; *refused* is",
             "\"nothing to classify\"; *flagged* is the share answered with the `uncertain` flag.", ""]
    for res in results:
        clean = res["conditions"]["clean"]["accuracy"]
        src = ("validation digits of the model's own split (5k subset, never trained on)"
               if res["source"] == "validation" else "generated stroke drawings (evaluation seeds)")
        lines += [f"## {res['n']} {src}", "", f"Model `{res['model']}`; clean accuracy {100 * clean:.2f}%.", "",
                  "| condition | accuracy | vs clean | refused | flagged | flagged when wrong | what |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in res["conditions"].items():
            gap = 100 * (r["accuracy"] - clean)
            fw = "" if r["flagged_when_wrong"] is None else f"{100 * r['flagged_when_wrong']:.0f}%"
            mark = " (exempt: below 12x12)" if name in EXEMPT else ""
            lines.append(f"| {name}{mark} | {100 * r['accuracy']:.1f}% | {gap:+.1f} | {100 * r['refused']:.1f}% | "
                         f"{100 * r['flagged']:.1f}% | {fw} | {r['description']} |")
        lines += ["", f"{res['files']} files classified in {res['elapsed_s']:.0f} s.", ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.conditions", description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", choices=("validation", "drawings", "both"), default="validation")
    ap.add_argument("--n", type=int, default=500, help="digits per condition (validation: at most 500)")
    ap.add_argument("--data", default="../shared/data/mnist", help="folder with the 5k training subset")
    ap.add_argument("--model", default=None, help="model file (default: the bundled model)")
    ap.add_argument("--workers", type=int, default=0, help="decoding processes (0: in this process)")
    ap.add_argument("--only", default="", help="comma-separated condition names or groups")
    ap.add_argument("--report", default="", help="write the Markdown table here")
    ap.add_argument("--json", default="", help="write the figures as JSON here")
    ap.add_argument("--save", default="", help="also write the image files to this folder (to look at them)")
    ap.add_argument("--mnist-png", action="store_true",
                    help="measure once: the MNIST test set as PNG files through classify vs its raw tensors")
    args = ap.parse_args(argv)
    if args.mnist_png:
        print(json.dumps(mnist_png_gap(args.data, args.model, args.workers), indent=1))
        return 0
    conditions = CONDITIONS
    if args.only:
        want = {w.strip() for w in args.only.split(",")}
        conditions = tuple(c for c in CONDITIONS if c.name in want or c.group in want or c.name == "clean")
    sources = ("validation", "drawings") if args.source == "both" else (args.source,)
    if args.save:
        from mnist_desktop.core.checkpoint import read_meta
        from mnist_desktop.core.paths import default_model_path
        for s in sources:
            inks, labels = source_digits(s, args.n, args.data, read_meta(args.model or default_model_path()))
            write_condition_files(Path(args.save) / s, inks, labels, conditions)
    results = []
    for s in sources:
        res = measure(s, args.n, args.data, args.model, conditions, args.workers)
        results.append(res)
        clean = res["conditions"]["clean"]["accuracy"]
        print(f"{s}: {res['n']} digits, clean {100 * clean:.2f}%", file=sys.stderr)
        print(f"{'condition':34s} {'acc':>7s} {'vs clean':>8s} {'refused':>8s} {'flagged':>8s}")
        for name, r in res["conditions"].items():
            print(f"{name:34s} {100 * r['accuracy']:6.1f}% {100 * (r['accuracy'] - clean):+7.1f} "
                  f"{100 * r['refused']:7.1f}% {100 * r['flagged']:7.1f}%")
    command = "python -m training.conditions " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.report:
        Path(args.report).write_text(report_markdown(results, command.strip()))
    if args.json:
        Path(args.json).write_text(json.dumps({"written_by": command.strip(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
