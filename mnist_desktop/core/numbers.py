"""Numbers, not only digits: segment an input into digits and read them left to right.

:func:`read_number` is the entry point (the canvas in number mode, ``classify --number``,
the HTTP API): it segments the input (:func:`segment`), sends every segment through the one
preprocessing path (:func:`~mnist_desktop.core.preprocess.preprocess`) and the predictor in
one batch, and returns a :class:`~mnist_desktop.core.recognition.Recognition` (here called
:data:`NumberReading`) whose digits carry their boxes.

Segmentation
------------
* **Strokes** are grouped by position and connectivity: strokes whose horizontal extents
  overlap substantially (the two strokes of a 4, the bar of a 5) or whose ink touches form
  one digit. A group much wider than tall (digits written in one stroke, or touching) is
  split like an image component, and its strokes are clipped at the cut.
* **Images**: the ink map (the same polarity, background and contrast handling as
  preprocessing) is thresholded and its connected components found; fragments that
  overlap horizontally are merged (a broken 5 or 4), specks dropped. A component too wide
  for one digit is split where the ink is thinnest: for each plausible number of digits,
  cuts go at the minimum of the vertical ink projection near the expected positions, and
  the classifier picks the reading whose pieces it is most sure of (recognition-driven
  segmentation).

A reading of one segment is the reading of the whole input, exactly as
:func:`~mnist_desktop.core.recognition.recognize` gives it: a single digit reads the same
with or without number mode.

Segments can be corrected by hand (:func:`merge_segments`, :func:`split_segment`) and read
again with :func:`read_segments`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from mnist_desktop.core.predictor import Prediction, Predictor
from mnist_desktop.core.preprocess import (
    Drawing, EmptyInputError, Input, PreprocessOptions, Stroke, clean_ink, gray_to_ink, image_to_gray,
    preprocess, working_copy,
)
from mnist_desktop.core.recognition import Box, DigitReading, Recognition, recognize

#: What :func:`read_number` returns: a :class:`Recognition` with one digit per segment
#: (``text``, ``confidence`` = product of the per-digit confidences, ``digits``, ``to_dict()``).
NumberReading = Recognition

INK_THRESHOLD = 0.3       # ink-map level that counts as ink for connectivity
WIDE = 1.0                # a segment wider than this x its height may hold several digits
SPLIT_MARGIN = 0.7        # log-odds a split must gain over one digit when not surely wide
SURELY_WIDE = 1.6         # ... and wider than this surely does (never read as one digit)
MAX_DIGITS = 12           # per component


@dataclass(frozen=True)
class Segment:
    """One digit's share of the input.

    ``box`` is in the input's pixel coordinates (canvas pixels for a drawing). ``source``
    is what goes through preprocessing: a :class:`Drawing` of the digit's strokes (clipped
    at a cut) or, for an image, the float ink crop of ``box`` holding only this digit's ink
    (0 = background, 1 = ink; at the working resolution, see ``scale``).
    """

    box: Box
    source: Input
    scale: float = 1.0    # input pixels per pixel of an ink crop (working_copy's reduction)
    crop: np.ndarray | None = field(default=None, repr=False, compare=False)  # image: unpadded ink
    origin: tuple[float, float] = (0.0, 0.0)   # image: the crop's position in the ink map


@dataclass
class Segmentation:
    """The segments of one input, left to right, and what is needed to edit them."""

    segments: list[Segment]
    kind: str                           # "drawing" or "image"
    whole: Input | None = None          # the input itself (a one-segment reading reads it)
    ink: np.ndarray | None = field(default=None, repr=False)   # image: the working ink map
    scale: float = 1.0


# --------------------------------------------------------------------------- public API

def read_number(predictor: Predictor, source: Input, split: bool = True) -> NumberReading:
    """Read ``source`` (strokes, PIL image, 2-D array) as a number, digits left to right.

    ``split=False`` keeps each connected piece of ink (each stroke group) whole, without
    splitting wide ones.

    Raises :class:`~mnist_desktop.core.preprocess.EmptyInputError` when there is no ink.
    """
    seg = segment(source, predictor.options, predictor if split else None)
    return read_segments(predictor, seg)


def read_segments(predictor: Predictor, seg: Segmentation) -> NumberReading:
    """Classify every segment (one batch) and return the reading. A single segment reads
    the whole input, as :func:`recognize` does."""
    if not seg.segments:
        raise EmptyInputError()
    if len(seg.segments) == 1 and seg.whole is not None:
        return recognize(predictor, seg.whole)
    preds = _predict_sources(predictor, [s.source for s in seg.segments])
    return Recognition([DigitReading(s.box, p) for s, p in zip(seg.segments, preds)])


def segment(source: Input, options: PreprocessOptions | None = None,
            predictor: Predictor | None = None) -> Segmentation:
    """Split ``source`` into digit segments, left to right.

    With a ``predictor``, wide pieces are split where the classifier reads the pieces best;
    without, wide pieces stay whole.
    """
    options = options or PreprocessOptions()
    if isinstance(source, Drawing):
        return _segment_drawing(source, predictor)
    return _segment_image(source, options, predictor)


def merge_segments(seg: Segmentation, i: int) -> Segmentation:
    """``seg`` with segments ``i`` and ``i + 1`` joined into one."""
    if not 0 <= i < len(seg.segments) - 1:
        raise IndexError(f"no segments {i} and {i + 1} to merge")
    a, b = seg.segments[i], seg.segments[i + 1]
    merged = _merge_pair(a, b)
    segments = seg.segments[:i] + [merged] + seg.segments[i + 2:]
    return Segmentation(segments, seg.kind, seg.whole if len(segments) == 1 else seg.whole,
                        seg.ink, seg.scale)


def split_segment(seg: Segmentation, i: int, x: float) -> Segmentation:
    """``seg`` with segment ``i`` cut in two at ``x`` (input coordinates); a cut that
    leaves no ink on one side changes nothing."""
    s = seg.segments[i]
    pieces = _cut(s, [x])
    if len(pieces) < 2:
        return seg
    return Segmentation(seg.segments[:i] + pieces + seg.segments[i + 1:], seg.kind, seg.whole,
                        seg.ink, seg.scale)


def segment_boxes(seg: Segmentation) -> list[Box]:
    return [s.box for s in seg.segments]


# --------------------------------------------------------------------------- prediction

def _predict_sources(predictor: Predictor, sources: Sequence[Input]) -> list[Prediction]:
    images = np.stack([preprocess(src, predictor.options) for src in sources])
    return predictor.predict_images(images, keep_images=True)


def _read_score(predictor: Predictor, sources: Sequence[Input]) -> float:
    """How sure the classifier is of a candidate split: the log probability that every
    piece reads right (sum of log confidences; more pieces must each earn their place) (a piece that is no digit, or two digits, reads with low confidence)."""
    try:
        images = np.stack([preprocess(src, predictor.options) for src in sources])
    except EmptyInputError:
        return -math.inf
    probs, _, _ = predictor.probabilities(images)
    return float(np.sum(np.log(np.maximum(probs.max(axis=1), 1e-9))))


# --------------------------------------------------------------------------- images

def _ink_map(source: Input, options: PreprocessOptions) -> tuple[np.ndarray, float]:
    """The input's ink map at the working resolution (preprocessing's own steps: polarity,
    background, contrast) and the input pixels per ink-map pixel."""
    if isinstance(source, (list, tuple)):
        source = np.asarray(source)
    if isinstance(source, Image.Image):
        full_w = source.width
        if source.width == 0 or source.height == 0:
            raise EmptyInputError("nothing to classify (empty image)")
    elif isinstance(source, np.ndarray):
        if source.ndim != 2 or source.size == 0:
            raise EmptyInputError("nothing to classify (empty or non-2-D array)")
        full_w = source.shape[1]
    else:
        raise TypeError(f"cannot classify a {type(source).__name__}: give a Drawing, a PIL image or a 2-D array")
    work = working_copy(source)
    if isinstance(work, Image.Image):
        gray, alpha_ink = image_to_gray(work)
    else:
        arr = np.asarray(work)
        with np.errstate(over="ignore", invalid="ignore"):
            gray = arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0)
        gray = np.nan_to_num(gray, nan=0.0, posinf=1.0, neginf=0.0)
        alpha_ink = False
    ink = clean_ink(gray_to_ink(gray, alpha_ink), options.min_contrast, options.noise_floor)
    return ink.astype(np.float32, copy=False), full_w / ink.shape[1]


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean mask: ``(labels, n)``, labels 1..n, 0 = none.

    Run-length labelling with union-find (no SciPy): fast enough for the working
    resolution of an image (at most 1024 on a side)."""
    h, w = mask.shape
    parent: list[int] = [0]

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    runs_prev: list[tuple[int, int, int]] = []
    all_runs: list[tuple[int, int, int, int]] = []
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    for y in range(h):
        starts = np.flatnonzero(edges[y] == 1)
        ends = np.flatnonzero(edges[y] == -1)
        runs: list[tuple[int, int, int]] = []
        j = 0
        for s, e in zip(starts.tolist(), ends.tolist()):
            label = 0
            # 8-connectivity: a previous run touching [s - 1, e] (e exclusive -> e inclusive)
            while j < len(runs_prev) and runs_prev[j][1] < s:
                j += 1
            k = j
            while k < len(runs_prev) and runs_prev[k][0] <= e:
                other = find(runs_prev[k][2])
                if label == 0:
                    label = other
                elif other != label:
                    parent[max(other, label)] = min(other, label)
                    label = min(other, label)
                k += 1
            if label == 0:
                label = len(parent)
                parent.append(label)
            runs.append((s, e, label))
            all_runs.append((y, s, e, label))
        runs_prev = runs
    labels = np.zeros((h, w), np.int32)
    roots: dict[int, int] = {}
    for y, s, e, label in all_runs:
        r = find(label)
        labels[y, s:e] = roots.setdefault(r, len(roots) + 1)
    return labels, len(roots)


@dataclass
class _Piece:
    x0: int
    y0: int
    x1: int
    y1: int
    mask: np.ndarray          # boolean, full ink-map size restricted later
    area: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def _segment_image(source: Input, options: PreprocessOptions, predictor: Predictor | None) -> Segmentation:
    ink, scale = _ink_map(source, options)
    mask = ink >= INK_THRESHOLD
    if not mask.any():
        raise EmptyInputError()
    labels, n = label_components(mask)
    pieces: list[_Piece] = []
    for lab in range(1, n + 1):
        ys, xs = np.nonzero(labels == lab)
        pieces.append(_Piece(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1,
                             labels == lab, len(xs)))
    pieces = _merge_overlapping(pieces)
    pieces = _drop_specks(pieces)
    pieces.sort(key=lambda p: p.x0)
    segments = [_image_segment(ink, p, scale) for p in pieces]
    line_h = max(p.height for p in pieces)
    if predictor is not None:
        segments = [part for s in segments for part in _split_wide(s, line_h / scale, predictor)]
    return Segmentation(segments, "image", source, ink, scale)


def _merge_overlapping(pieces: list[_Piece]) -> list[_Piece]:
    """Join pieces that overlap horizontally by at least half of the narrower one (or whose
    one lies inside the other): the parts of a broken digit."""
    changed = True
    while changed:
        changed = False
        pieces.sort(key=lambda p: p.x0)
        for i in range(len(pieces)):
            for j in range(i + 1, len(pieces)):
                a, b = pieces[i], pieces[j]
                overlap = min(a.x1, b.x1) - max(a.x0, b.x0)
                if overlap >= 0.5 * min(a.width, b.width):
                    pieces[i] = _Piece(min(a.x0, b.x0), min(a.y0, b.y0), max(a.x1, b.x1), max(a.y1, b.y1),
                                       a.mask | b.mask, a.area + b.area)
                    del pieces[j]
                    changed = True
                    break
            if changed:
                break
    return pieces


def _drop_specks(pieces: list[_Piece]) -> list[_Piece]:
    """Drop dust: pieces much smaller than the largest, in both ink and height."""
    big = max(p.area for p in pieces)
    tall = max(p.height for p in pieces)
    return [p for p in pieces if p.area >= 0.08 * big or p.height >= 0.4 * tall]


def _image_segment(ink: np.ndarray, p: _Piece, scale: float) -> Segment:
    crop = np.where(p.mask[p.y0:p.y1, p.x0:p.x1], ink[p.y0:p.y1, p.x0:p.x1], 0.0).astype(np.float32)
    # keep the faint anti-aliased rim of the piece's ink (below the threshold, beside it)
    rim = _dilate(p.mask)[p.y0:p.y1, p.x0:p.x1] & ~p.mask[p.y0:p.y1, p.x0:p.x1]
    crop = np.where(rim, np.minimum(ink[p.y0:p.y1, p.x0:p.x1], INK_THRESHOLD), crop)
    return _crop_segment(crop, p.x0, p.y0, scale)


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= out[:, :-1].copy()
    out[:, :-1] |= out[:, 1:].copy()
    return out


def _crop_segment(crop: np.ndarray, x0: float, y0: float, scale: float) -> Segment:
    """A segment from an ink crop at working position (x0, y0): padded with background so
    that preprocessing sees its border as paper."""
    h, w = crop.shape
    pad = max(2, int(math.ceil(0.15 * max(h, w))))
    padded = np.zeros((h + 2 * pad, w + 2 * pad), np.float32)
    padded[pad:pad + h, pad:pad + w] = crop
    box = Box(x0 * scale, y0 * scale, (x0 + w) * scale, (y0 + h) * scale)
    return Segment(box, padded, scale, crop, (float(x0), float(y0)))


def _crop_of(s: Segment) -> tuple[np.ndarray, float, float]:
    """The unpadded ink crop of an image segment and its working position (x0, y0)."""
    assert s.crop is not None
    return s.crop, s.origin[0], s.origin[1]


# --------------------------------------------------------------------------- splitting

def _split_wide(s: Segment, line_height: float, predictor: Predictor) -> list[Segment]:
    """Split a segment too wide for one digit where the classifier reads the pieces best."""
    h = max(s.box.height, 0.8 * line_height)
    ratio = s.box.width / max(h, 1e-6)
    if ratio <= WIDE:
        return [s]
    profile, x_of = _profile(s)
    kmax = min(MAX_DIGITS, max(2, int(math.ceil(ratio / 0.5))))
    kmin = max(2 if ratio > SURELY_WIDE else 1, min(kmax, int(round(ratio / 1.2))))
    best: tuple[float, list[Segment]] = (-math.inf, [s])
    for k in range(kmin, kmax + 1):
        pieces = [s] if k == 1 else _best_cuts(s, profile, x_of, k, h, predictor)
        if len(pieces) != k:
            continue
        score = _read_score(predictor, [p.source for p in pieces]) - _width_penalty(pieces, h)
        if k > 1 and ratio <= SURELY_WIDE:
            score -= SPLIT_MARGIN
        if score > best[0]:
            best = (score, pieces)
    return best[1]


def _width_penalty(pieces: Sequence[Segment], h: float) -> float:
    """A piece much wider than a digit is unlikely to be one."""
    return float(np.sum([max(0.0, p.box.width / max(h, 1e-6) - 1.0) for p in pieces]))


def _best_cuts(s: Segment, profile: np.ndarray, x_of, k: int, h: float, predictor: Predictor) -> list[Segment]:
    """Cut ``s`` into ``k`` pieces, left to right: each cut is chosen, among the thin places
    of the ink (local minima of the vertical projection) and evenly spaced positions near
    where a k-way split puts it, by how well the classifier reads the piece it closes (and,
    at the last cut, the remainder), with a bonus for thin ink."""
    n = len(profile)
    smooth = np.convolve(profile, np.ones(3) / 3, mode="same") if n >= 3 else profile
    peak = float(smooth.max()) + 1e-6
    pieces: list[Segment] = []
    rest = s
    prev = 0
    for j in range(1, k):
        step = (n - prev) / (k - j + 1)
        lo, hi = max(prev + 2, int(prev + step * 0.55)), min(n - 2, int(math.ceil(prev + step * 1.45)))
        if hi <= lo:
            return []
        window = np.arange(lo, hi)
        local = [c for c in window if smooth[c] <= smooth[max(c - 1, 0)] and smooth[c] <= smooth[min(c + 1, n - 1)]]
        grid = np.unique(np.linspace(lo, hi - 1, min(hi - lo, 48)).round().astype(int)).tolist()
        candidates = sorted(set(local) | set(grid) | {int(lo + np.argmin(smooth[lo:hi]))})
        options = []
        for c in candidates:
            parts = _cut(rest, [x_of(c + 0.5)])
            if len(parts) == 2:
                options.append((c, parts))
        if not options:
            return []
        last = j == k - 1
        sources = [parts[0].source for _, parts in options] + ([parts[1].source for _, parts in options] if last else [])
        conf = _confidences(predictor, sources)
        m = len(options)
        scores = np.log(np.maximum(conf[:m], 1e-9))
        if last:
            scores = scores + np.log(np.maximum(conf[m:], 1e-9))
        scores -= 0.1 * np.array([smooth[c] / peak for c, _ in options])
        scores -= np.array([max(0.0, parts[0].box.width / h - WIDE) for _, parts in options])
        c, parts = options[int(np.argmax(scores))]
        pieces.append(parts[0])
        rest = parts[1]
        prev = c + 1
    return pieces + [rest]


def _confidences(predictor: Predictor, sources: Sequence[Input]) -> np.ndarray:
    """The top-class probability of each source (0 for one without ink)."""
    images, keep = [], []
    for i, src in enumerate(sources):
        try:
            images.append(preprocess(src, predictor.options))
            keep.append(i)
        except EmptyInputError:
            pass
    out = np.zeros(len(sources))
    if images:
        probs, _, _ = predictor.probabilities(np.stack(images))
        out[keep] = probs.max(axis=1)
    return out


def _profile(s: Segment):
    """The vertical ink projection of a segment over its box and a map from profile index
    to input x coordinate."""
    if isinstance(s.source, Drawing):
        img, x0, px = _raster(s.source)
        return img.sum(axis=0), (lambda i: x0 + i * px)
    crop, cx0, _ = _crop_of(s)
    return crop.sum(axis=0), (lambda i: (cx0 + i) * s.scale)


def _cut(s: Segment, xs: Sequence[float]) -> list[Segment]:
    """Cut a segment at the input x positions ``xs``; pieces without ink are dropped."""
    bounds = [-math.inf] + sorted(xs) + [math.inf]
    out: list[Segment] = []
    if isinstance(s.source, Drawing):
        for a, b in zip(bounds, bounds[1:]):
            strokes = [piece for st in s.source.strokes for piece in _clip_stroke(st.points, a, b)]
            if strokes:
                out.append(_drawing_segment(Drawing(strokes, s.source.canvas_size)))
        return out
    crop, cx0, cy0 = _crop_of(s)
    for a, b in zip(bounds, bounds[1:]):
        i0 = 0 if a == -math.inf else int(round(a / s.scale - cx0))
        i1 = crop.shape[1] if b == math.inf else int(round(b / s.scale - cx0))
        i0, i1 = max(0, i0), min(crop.shape[1], i1)
        if i1 <= i0:
            continue
        part = crop[:, i0:i1]
        rows = np.flatnonzero(part.max(axis=1) >= INK_THRESHOLD)
        cols = np.flatnonzero(part.max(axis=0) >= INK_THRESHOLD)
        if not len(rows):
            continue
        part = part[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        out.append(_crop_segment(part, cx0 + i0 + cols[0], cy0 + rows[0], s.scale))
    return out


def _merge_pair(a: Segment, b: Segment) -> Segment:
    if isinstance(a.source, Drawing) and isinstance(b.source, Drawing):
        return _drawing_segment(Drawing(list(a.source.strokes) + list(b.source.strokes), a.source.canvas_size))
    ca, ax, ay = _crop_of(a)
    cb, bx, by = _crop_of(b)
    x0, y0 = min(ax, bx), min(ay, by)
    x1, y1 = max(ax + ca.shape[1], bx + cb.shape[1]), max(ay + ca.shape[0], by + cb.shape[0])
    canvas = np.zeros((int(round(y1 - y0)), int(round(x1 - x0))), np.float32)
    for c, cx, cy in ((ca, ax, ay), (cb, bx, by)):
        oy, ox = int(round(cy - y0)), int(round(cx - x0))
        region = canvas[oy:oy + c.shape[0], ox:ox + c.shape[1]]
        np.maximum(region, c[:region.shape[0], :region.shape[1]], out=region)
    return _crop_segment(canvas, x0, y0, a.scale)


# --------------------------------------------------------------------------- strokes

def _stroke_box(pts: np.ndarray) -> tuple[float, float, float, float]:
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()) + 1, float(pts[:, 1].max()) + 1


def _drawing_segment(d: Drawing) -> Segment:
    xy = np.concatenate([s.points[:, :2] for s in d.strokes])
    (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
    return Segment(Box(float(x0), float(y0), float(x1) + 1, float(y1) + 1), d)


def _segment_drawing(d: Drawing, predictor: Predictor | None) -> Segmentation:
    strokes = [s for s in d.strokes if len(s.points)]
    if not strokes:
        raise EmptyInputError("nothing to classify (blank canvas)")
    boxes = [_stroke_box(s.points) for s in strokes]
    groups: list[list[int]] = [[i] for i in range(len(strokes))]
    gbox = list(boxes)
    line_h = max(b[3] for b in boxes) - min(b[1] for b in boxes)
    touch = 0.06 * max(line_h, 1.0)   # ink of neighbouring strokes this close is one digit
    changed = True
    while changed:
        changed = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                a, b = gbox[i], gbox[j]
                overlap = min(a[2], b[2]) - max(a[0], b[0])
                narrow = min(a[2] - a[0], b[2] - b[0])
                joined = overlap >= 0.5 * narrow or (overlap > -touch and _strokes_touch(
                    [strokes[k].points for k in groups[i]], [strokes[k].points for k in groups[j]], touch)
                    and overlap > 0.2 * narrow)
                if joined:
                    groups[i] += groups[j]
                    gbox[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del groups[j], gbox[j]
                    changed = True
                    break
            if changed:
                break
    order = sorted(range(len(groups)), key=lambda g: gbox[g][0])
    segments = [_drawing_segment(Drawing([strokes[k] for k in sorted(groups[g])], d.canvas_size)) for g in order]
    if predictor is not None:
        segments = [part for s in segments for part in _split_wide(s, line_h, predictor)]
    return Segmentation(segments, "drawing", d)


def _strokes_touch(a: list[np.ndarray], b: list[np.ndarray], dist: float) -> bool:
    pa = np.concatenate(a)[:, :2]
    pb = np.concatenate(b)[:, :2]
    if len(pa) * len(pb) > 4_000_000:   # very long strokes: compare a thinned copy
        pa, pb = pa[:: max(1, len(pa) // 2000)], pb[:: max(1, len(pb) // 2000)]
    d2 = ((pa[:, None, :] - pb[None, :, :]) ** 2).sum(axis=2)
    return bool(d2.min() <= dist * dist)


def _raster(d: Drawing, height_px: int = 56) -> tuple[np.ndarray, float, float]:
    """A coarse rendering of a drawing for its ink projection: ``(image, x0, pixel size)``
    where column ``i`` covers input x ``x0 + i * pixel size``."""
    xy = np.concatenate([s.points[:, :2] for s in d.strokes])
    (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
    px = max(float(y1 - y0), float(x1 - x0) / 4, 1.0) / height_px
    w = int(math.ceil((x1 - x0) / px)) + 1
    h = int(math.ceil((y1 - y0) / px)) + 1
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    width = max(1, int(round(0.08 * height_px)))
    for s in d.strokes:
        pts = ((s.points[:, :2] - (x0, y0)) / px).ravel().tolist()
        if len(pts) >= 4:
            draw.line(pts, fill=255, width=width)
        else:
            draw.point(pts, fill=255)
    return np.asarray(img, np.float32) / 255.0, float(x0), px


def _clip_stroke(pts: np.ndarray, a: float, b: float) -> list[Stroke]:
    """The parts of a polyline with ``a <= x < b``, cut exactly at the boundaries."""
    out: list[Stroke] = []
    current: list[np.ndarray] = []
    inside = (pts[:, 0] >= a) & (pts[:, 0] < b)
    for i in range(len(pts)):
        if i > 0 and inside[i] != inside[i - 1]:
            p, q = pts[i - 1], pts[i]
            bound = a if (p[0] < a) != (q[0] < a) else b
            t = (bound - p[0]) / (q[0] - p[0]) if q[0] != p[0] else 0.0
            cross = p + t * (q - p)
            cross = cross.copy()
            # keep the crossing inside the half-open interval on its side
            if inside[i]:
                current = [cross]
            else:
                current.append(cross)
                out.append(Stroke(np.array(current, np.float32)))
                current = []
        if inside[i]:
            current.append(pts[i])
    if current:
        out.append(Stroke(np.array(current, np.float32)))
    return out
