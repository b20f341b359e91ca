"""Numbers, not only digits: segment an input into digits and read them left to right.

:func:`read_number` is the entry point (the canvas in number mode, ``classify --number``,
the HTTP API): it segments the input (:func:`segment`), sends every segment through the one
preprocessing path (:func:`~mnist_desktop.core.preprocess.preprocess`) and the predictor,
and returns a :class:`~mnist_desktop.core.recognition.Recognition` (here called
:data:`NumberReading`) whose digits carry their boxes.

Segmentation is recognition-driven (the usual approach for handwritten digit strings):

1. **Over-segment.** The input is cut into pieces that are at most one digit each. An
   image's ink map (the same polarity, background and contrast handling as preprocessing)
   is thresholded and its connected components found, specks dropped. A drawing's pieces
   are its strokes. A component (or a stroke) wide enough to hold more than one digit is
   cut further where the ink is thin: candidate cut paths run from top to bottom through
   the least ink (a shortest path that may weave between touching strokes, within a band
   around its column; straight cuts for strokes, which are clipped exactly).
2. **Group.** Every run of consecutive pieces (left to right) no wider than a digit can be
   is a candidate digit. All candidates go through preprocessing and the predictor in ONE
   batch; each is scored by the log probability of its best class, the plausibility of
   its width and height against the line's ink height, empty gaps inside it, the
   "not a digit" rule of the model, and the ink its cuts cross.
3. **Choose** the grouping of the pieces into digits with the best total score (dynamic
   programming over the pieces). Broken digits (a 5 whose bar is a separate stroke, a 4 in
   two strokes) are merged back this way, touching digits split.
4. **Read the line whole** (images, where the line reader ships:
   :mod:`mnist_desktop.core.line_reader`). A CTC reader reads the line without cutting it;
   the grouping is constrained to its digit count (where one grouping has that count), and
   each digit's probabilities are the product of the classifier's and the reader's. This
   reads touching digits whose strokes interpenetrate, where no cut separates them.

The weights live in :class:`SegmentationConfig` (tuned on numbers made from training digits
and generated drawings, ``python -m training.number_bench``).

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

from mnist_desktop.core.predictor import NOT_A_DIGIT, UNSURE, Prediction, Predictor
from mnist_desktop.core.preprocess import (
    Drawing, EmptyInputError, Input, PreprocessOptions, Stroke, clean_ink, fits_small_batch, gray_to_ink,
    image_to_gray, preprocess, preprocess_small_batch, working_copy,
)
from mnist_desktop.core.recognition import Box, DigitReading, Recognition, recognize

#: What :func:`read_number` returns: a :class:`Recognition` with one digit per segment
#: (``text``, ``confidence`` = product of the per-digit confidences, ``digits``, ``to_dict()``).
NumberReading = Recognition

INK_THRESHOLD = 0.3       # ink-map level that counts as ink for connectivity


@dataclass(frozen=True)
class SegmentationConfig:
    """How pieces are cut and grouped into digits. Lengths are fractions of the line's
    ink height; weights are in units of log probability."""

    cut_from: float = 0.45        # a piece of ink narrower than this is never cut
    stroke_cut_from: float = 1.2  # a stroke narrower than this is never cut
    cut_margin: float = 0.1       # a cut leaves at least this much on either side
    cut_spacing: float = 0.15     # two cuts of one piece lie at least this far apart
    cut_bands: tuple[float, ...] = (0.0, 0.12, 0.25)   # cut paths stray at most this far from
    #                                                   their column (0: straight cuts)
    cut_max_strokes: float = 3.0  # a cut crosses at most this many strokes' width of ink
    max_width: float = 1.6        # a digit of several pieces spans at most this
    max_pieces: int = 6           # ... and at most this many pieces
    wide_from: float = 0.8       # a digit wider than this x its height ...
    wide_weight: float = 1.0      # ... costs this per unit of excess width
    short_below: float = 0.7     # a digit shorter than this ...
    short_weight: float = 16.0     # ... costs this per unit of missing height
    gap_weight: float = 4.0       # empty columns inside a digit, per line height
    not_digit_weight: float = 1.0  # a candidate the model flags "not a digit"
    digit_bonus: float = 0.0      # every digit read (balances the log probabilities)
    cut_weight: float = 0.5       # per stroke of ink a chosen cut crosses
    line_reader: bool = True      # images: the shipped line reader's digit count constrains the
    #                               grouping and its probabilities join the classifier's


@dataclass(frozen=True)
class Segment:
    """One digit's share of the input.

    ``box`` is in the input's pixel coordinates (canvas pixels for a drawing). ``source``
    is what goes through preprocessing: a :class:`Drawing` of the digit's strokes (clipped
    at a cut) or, for an image, the float ink crop of ``box`` holding only this digit's ink
    (0 = background, 1 = ink; at the working resolution, see ``scale``). ``prediction``
    is the model's reading of ``source`` when segmentation already made it.
    """

    box: Box
    source: Input
    scale: float = 1.0    # input pixels per pixel of an ink crop (working_copy's reduction)
    crop: np.ndarray | None = field(default=None, repr=False, compare=False)  # image: unpadded ink
    origin: tuple[float, float] = (0.0, 0.0)   # image: the crop's position in the ink map
    prediction: Prediction | None = field(default=None, repr=False, compare=False)


@dataclass
class Segmentation:
    """The segments of one input, left to right, and what is needed to edit them."""

    segments: list[Segment]
    kind: str                           # "drawing" or "image"
    whole: Input | None = None          # the input itself (a one-segment reading reads it)
    ink: np.ndarray | None = field(default=None, repr=False)   # image: the working ink map
    scale: float = 1.0


# --------------------------------------------------------------------------- public API

def read_number(predictor: Predictor, source: Input, split: bool = True,
                config: SegmentationConfig | None = None) -> NumberReading:
    """Read ``source`` (strokes, PIL image, 2-D array) as a number, digits left to right.

    ``split=False`` keeps each connected piece of ink (each group of overlapping strokes)
    whole: no cuts, no recognition-driven grouping.

    Raises :class:`~mnist_desktop.core.preprocess.EmptyInputError` when there is no ink.
    """
    seg = segment(source, predictor.options, predictor if split else None, config)
    return read_segments(predictor, seg)


def read_segments(predictor: Predictor, seg: Segmentation) -> NumberReading:
    """The reading of the segments (those segmentation has not read yet, in one batch).
    A single segment reads the whole input, as :func:`recognize` does."""
    if not seg.segments:
        raise EmptyInputError()
    if len(seg.segments) == 1 and seg.whole is not None:
        return recognize(predictor, seg.whole)
    preds = [s.prediction for s in seg.segments]
    todo = [k for k, p in enumerate(preds) if p is None]
    if todo:
        for k, p in zip(todo, _predict_sources(predictor, [seg.segments[k].source for k in todo])):
            preds[k] = p
    return Recognition([DigitReading(s.box, p) for s, p in zip(seg.segments, preds)])


def segment(source: Input, options: PreprocessOptions | None = None,
            predictor: Predictor | None = None, config: SegmentationConfig | None = None) -> Segmentation:
    """Split ``source`` into digit segments, left to right.

    With a ``predictor``, the input is over-segmented and its pieces grouped into the
    digits the classifier reads best (see the module's notes); without, each connected
    piece of ink (group of overlapping strokes) is one segment.
    """
    options = options or PreprocessOptions()
    config = config or SegmentationConfig()
    if isinstance(source, Drawing):
        return _segment_drawing(source, predictor, config)
    return _segment_image(source, options, predictor, config)


def merge_segments(seg: Segmentation, i: int) -> Segmentation:
    """``seg`` with segments ``i`` and ``i + 1`` joined into one."""
    if not 0 <= i < len(seg.segments) - 1:
        raise IndexError(f"no segments {i} and {i + 1} to merge")
    merged = _merge_pair(seg.segments[i], seg.segments[i + 1])
    segments = seg.segments[:i] + [merged] + seg.segments[i + 2:]
    return Segmentation(segments, seg.kind, seg.whole, seg.ink, seg.scale)


def split_segment(seg: Segmentation, i: int, x: float) -> Segmentation:
    """``seg`` with segment ``i`` cut in two at ``x`` (input coordinates); a cut that
    leaves no ink on one side changes nothing."""
    pieces = _cut(seg.segments[i], [x])
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


def _predict_candidates(predictor: Predictor, sources: Sequence[Input]) -> list[Prediction | None]:
    """The prediction of every candidate source, in ONE predictor call (None where
    preprocessing finds nothing to classify). Small ink crops go through
    :func:`preprocess_small_batch` (bit for bit :func:`preprocess`), centred in a common
    frame of background (which leaves preprocessing's result unchanged)."""
    images: list[np.ndarray | None] = [None] * len(sources)
    crops = [k for k, s in enumerate(sources) if isinstance(s, np.ndarray)]
    if crops:
        fh = max(sources[k].shape[0] for k in crops)
        fw = max(sources[k].shape[1] for k in crops)
        if fits_small_batch(fh, fw):
            frame = np.zeros((len(crops), fh, fw), np.float32)
            for n, k in enumerate(crops):
                h, w = sources[k].shape
                oy, ox = (fh - h) // 2, (fw - w) // 2
                frame[n, oy:oy + h, ox:ox + w] = sources[k]
            for k, out in zip(crops, preprocess_small_batch(frame, predictor.options)):
                images[k] = out if isinstance(out, np.ndarray) else None
            done = set(crops)
        else:
            done = set()
    else:
        done = set()
    for k, src in enumerate(sources):
        if k in done:
            continue
        try:
            images[k] = preprocess(src, predictor.options)
        except EmptyInputError:
            images[k] = None
    keep = [k for k, im in enumerate(images) if im is not None]
    out: list[Prediction | None] = [None] * len(sources)
    if keep:
        for k, p in zip(keep, predictor.predict_images(np.stack([images[k] for k in keep]), keep_images=True)):
            out[k] = p
    return out


# --------------------------------------------------------------------------- grouping

@dataclass
class _Candidate:
    """A run of pieces ``[i, j)`` read as one digit."""

    i: int
    j: int
    segment: Segment
    width: float       # in line heights
    height: float
    gap: float         # empty columns inside, in line heights
    prediction: Prediction | None = None


def _candidate_runs(boxes: np.ndarray, line_h: float, config: SegmentationConfig):
    """The runs ``(i, j)`` of consecutive pieces (boxes ``x0, y0, x1, y1``, left to
    right) that may form one digit, with their width, height and inner gap (line heights)."""
    n = len(boxes)
    for i in range(n):
        for j in range(i + 1, min(n, i + config.max_pieces) + 1):
            b = boxes[i:j]
            x0, x1 = float(b[:, 0].min()), float(b[:, 2].max())
            width = (x1 - x0) / line_h
            if j - i > 1 and width > config.max_width:
                break
            height = (float(b[:, 3].max()) - float(b[:, 1].min())) / line_h
            yield i, j, width, height, _inner_gap(b[:, 0], b[:, 2]) / line_h


def _inner_gap(x0s: np.ndarray, x1s: np.ndarray) -> float:
    """Length of the x-span of the intervals ``[x0, x1)`` that none of them covers."""
    order = np.argsort(x0s, kind="stable")
    gap, reach = 0.0, float(x1s[order[0]])
    for k in order[1:]:
        if x0s[k] > reach:
            gap += float(x0s[k]) - reach
        reach = max(reach, float(x1s[k]))
    return gap


def candidate_score(c: _Candidate, config: SegmentationConfig) -> float:
    """How plausible a candidate is as one digit (log-probability units; -inf when
    preprocessing found nothing in it)."""
    p = c.prediction
    if p is None:
        return -math.inf
    score = math.log(max(p.confidence, 1e-6)) + config.digit_bonus
    aspect = c.width / max(c.height, 0.8)
    score -= config.wide_weight * max(0.0, aspect - config.wide_from)
    score -= config.short_weight * max(0.0, config.short_below - c.height)
    score -= config.gap_weight * c.gap
    if p.uncertain and p.reason == NOT_A_DIGIT:
        score -= config.not_digit_weight
    return score


def _best_grouping(candidates: Sequence[_Candidate], n: int, cut_cost: np.ndarray,
                   config: SegmentationConfig) -> list[_Candidate]:
    """The candidates that cover pieces ``0..n-1`` once each, left to right, with the best
    total score (dynamic programming); ``cut_cost[i]``: strokes of ink cut between pieces
    ``i - 1`` and ``i`` when a digit starts at ``i``."""
    by_end: list[list[_Candidate]] = [[] for _ in range(n + 1)]
    for c in candidates:
        by_end[c.j].append(c)
    best = [-math.inf] * (n + 1)
    back: list[_Candidate | None] = [None] * (n + 1)
    best[0] = 0.0
    for j in range(1, n + 1):
        for c in by_end[j]:
            if best[c.i] == -math.inf:
                continue
            s = candidate_score(c, config)
            if s == -math.inf:
                continue
            v = best[c.i] + s - (config.cut_weight * float(cut_cost[c.i]) if c.i else 0.0)
            if v > best[j]:
                best[j], back[j] = v, c
        if back[j] is None:   # nothing readable ends here: let the last piece stand alone
            prev = next(k for k in range(j - 1, -1, -1) if best[k] > -math.inf)
            best[j] = best[prev] - 20.0
            back[j] = None
    out: list[_Candidate] = []
    j = n
    while j > 0:
        c = back[j]
        if c is None:
            j -= 1      # an unreadable piece (no candidate): dropped
            continue
        out.append(c)
        j = c.i
    return out[::-1]


def _best_grouping_of(candidates: Sequence[_Candidate], n: int, cut_cost: np.ndarray,
                      config: SegmentationConfig, count: int) -> list[_Candidate] | None:
    """:func:`_best_grouping` with exactly ``count`` digits (a piece no digit holds costs
    what it costs there); None when no grouping has ``count`` digits."""
    by_end: list[list[_Candidate]] = [[] for _ in range(n + 1)]
    for c in candidates:
        by_end[c.j].append(c)
    scores = {id(c): candidate_score(c, config) for c in candidates}
    best = np.full((n + 1, count + 1), -math.inf)
    best[0, 0] = 0.0
    back: dict[tuple[int, int], _Candidate | None] = {}
    for j in range(1, n + 1):
        for m in range(count + 1):
            if best[j - 1, m] > -math.inf:          # piece j - 1 in no digit
                best[j, m], back[(j, m)] = best[j - 1, m] - 20.0, None
            if not m:
                continue
            for c in by_end[j]:
                s = scores[id(c)]
                if s == -math.inf or best[c.i, m - 1] == -math.inf:
                    continue
                v = best[c.i, m - 1] + s - (config.cut_weight * float(cut_cost[c.i]) if c.i else 0.0)
                if v > best[j, m]:
                    best[j, m], back[(j, m)] = v, c
    if best[n, count] == -math.inf:
        return None
    out: list[_Candidate] = []
    j, m = n, count
    while j > 0:
        c = back[(j, m)]
        if c is None:
            j -= 1
            continue
        out.append(c)
        j, m = c.i, m - 1
    return out[::-1]


def _choose(predictor: Predictor, candidates: list[_Candidate], n: int, cut_cost: np.ndarray,
            config: SegmentationConfig, count: int | None = None) -> list[Segment]:
    """The best grouping (of ``count`` digits when one exists and ``count`` is given)."""
    preds = _predict_candidates(predictor, [c.segment.source for c in candidates])
    for c, p in zip(candidates, preds):
        c.prediction = p
    chosen = _best_grouping_of(candidates, n, cut_cost, config, count) if count else None
    if chosen is None:
        chosen = _best_grouping(candidates, n, cut_cost, config)
    return [Segment(c.segment.box, c.segment.source, c.segment.scale, c.segment.crop, c.segment.origin,
                    c.prediction) for c in chosen]


DIGIT_LABELS = tuple("0123456789")


def _second_opinion(s: Segment, probs: np.ndarray) -> Segment:
    """``s`` with the line reader's probabilities for its digit joined to the
    classifier's (their product, renormalised). The classifier's prediction stays
    untouched where the joint answer is its own."""
    p = s.prediction
    if p is None or tuple(p.labels) != DIGIT_LABELS:
        return s
    joint = np.asarray(p.probs, np.float64) * (np.asarray(probs, np.float64) + 1e-6)
    joint /= joint.sum()
    if int(np.argmax(joint)) == p.index:
        return s
    top = float(joint.max())
    unsure = top < 0.5
    pred = Prediction(p.labels, joint.astype(np.float32), unsure, top, p.image, UNSURE if unsure else "")
    return Segment(s.box, s.source, s.scale, s.crop, s.origin, pred)


# --------------------------------------------------------------------------- cut paths

def line_height(mask: np.ndarray) -> float:
    """The ink height of a line of digits: a high percentile of the vertical extent of the
    ink, column by column (each column sees its own digit, so baseline drift does not add
    to it)."""
    cols = mask.any(axis=0)
    if not cols.any():
        return 1.0
    h = mask.shape[0]
    top = np.argmax(mask, axis=0)
    bottom = h - np.argmax(mask[::-1], axis=0)
    return float(max(1.0, np.percentile((bottom - top)[cols], 95)))


def _stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width of a mask: twice its area over its outline length."""
    m = mask.astype(np.int8)
    outline = np.abs(np.diff(m, axis=0)).sum() + np.abs(np.diff(m, axis=1)).sum() + 2 * (m[0].sum() + m[:, 0].sum())
    return float(max(1.0, 2 * m.sum() / max(int(outline), 1)))


def cut_paths(ink: np.ndarray, line_h: float, stroke: float, band: float,
              config: SegmentationConfig) -> list[tuple[np.ndarray, float]]:
    """Candidate cuts through the ink of one piece (``ink``: its crop, 0 outside it):
    top-to-bottom paths through the least ink, each within ``band`` x ``line_h`` of its
    column (0: straight cuts). Returns ``(x per row, strokes crossed)`` for each, left to
    right: local minima of the path cost over the columns, at most
    ``config.cut_max_strokes`` strokes, at least ``config.cut_spacing`` apart."""
    h, w = ink.shape
    f = max(1, int(line_h // 32))          # paths are found at about 32 px per line height
    small = ink if f == 1 else np.asarray(Image.fromarray(np.ascontiguousarray(ink, np.float32), "F").reduce(f),
                                          np.float32)
    hs, ws = small.shape
    margin = max(1, int(round(config.cut_margin * line_h / f)))
    if ws < 2 * margin + 1:
        return []
    r = int(round(band * line_h / f))
    offs = np.arange(-r, r + 1)
    xs = np.arange(ws)[:, None] + offs[None, :]
    valid = (xs >= 0) & (xs < ws)
    xs_c = np.clip(xs, 0, ws - 1)
    big = np.float32(1e6)
    bias = (0.004 * np.abs(offs)).astype(np.float32)[None, :]
    cost = np.where(valid, small[0][xs_c] + bias, big)
    choice = np.ones((hs, ws, len(offs)), np.int8)
    for y in range(1, hs):
        if r:
            left = np.full_like(cost, big)
            left[:, 1:] = cost[:, :-1] + 0.01
            right = np.full_like(cost, big)
            right[:, :-1] = cost[:, 1:] + 0.01
            stack = np.stack([left, cost, right])
            ch = stack.argmin(axis=0)
            choice[y] = ch
            cost = np.take_along_axis(stack, ch[None], axis=0)[0]
        cost = cost + np.where(valid, small[y][xs_c] + bias, big)
    total = cost.min(axis=1)
    end = cost.argmin(axis=1)
    strokes = total * f / max(stroke, 1e-6)
    lo, hi = margin, ws - margin
    smooth = strokes.copy()
    smooth[1:-1] = np.minimum(strokes[1:-1], (strokes[:-2] + strokes[1:-1] + strokes[2:]) / 3)
    order = sorted(range(lo, hi), key=lambda c: (round(float(smooth[c]), 2), abs(c - (lo + hi) / 2)))
    spacing = max(1.0, config.cut_spacing * line_h / f)
    max_cuts = int(math.ceil(2.5 * w / line_h)) + 1
    chosen: list[tuple[np.ndarray, float]] = []
    for c in order:
        if strokes[c] > config.cut_max_strokes or len(chosen) >= max_cuts:
            break
        if not (smooth[c] <= smooth[c - 1] + 1e-6 and smooth[c] <= smooth[min(c + 1, ws - 1)] + 1e-6):
            continue
        path = np.empty(hs, np.int64)
        d = int(end[c])
        for y in range(hs - 1, -1, -1):
            path[y] = c + offs[d]
            if y:
                d += int(choice[y, c, d]) - 1
        if any(np.abs(path - p).mean() < spacing for p, _ in chosen):
            continue
        chosen.append((path, float(strokes[c])))
    chosen.sort(key=lambda pc: float(pc[0].mean()))
    out = []
    prev = None
    for path, s in chosen:
        full = np.minimum(np.repeat(path, f)[:h] * f + f // 2, w - 1) if f > 1 else path
        if prev is not None:
            full = np.maximum(full, prev)    # cuts never cross
        out.append((full, s))
        prev = full
    return out


def _union_paths(sets: Sequence[list[tuple[np.ndarray, float]]], spacing: float) -> list[tuple[np.ndarray, float]]:
    """The cuts of several searches, the cheapest of near-duplicates kept, left to right,
    made not to cross."""
    chosen: list[tuple[np.ndarray, float]] = []
    for path, s in sorted((pc for paths in sets for pc in paths), key=lambda pc: pc[1]):
        if all(np.abs(path - p).mean() >= max(1.0, spacing) for p, _ in chosen):
            chosen.append((path, s))
    chosen.sort(key=lambda pc: float(pc[0].mean()))
    out: list[tuple[np.ndarray, float]] = []
    for path, s in chosen:
        out.append((np.maximum(path, out[-1][0]) if out else path, s))
    return out


# --------------------------------------------------------------------------- images

def ink_map(source: Input, options: PreprocessOptions) -> tuple[np.ndarray, float]:
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
    """A connected component (or several merged) of the thresholded ink map."""

    x0: int
    y0: int
    x1: int
    y1: int
    labels: tuple[int, ...]
    area: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def mask(self, labels: np.ndarray) -> np.ndarray:
        """The piece's pixels within its box."""
        sub = labels[self.y0:self.y1, self.x0:self.x1]
        return sub == self.labels[0] if len(self.labels) == 1 else np.isin(sub, self.labels)


def _components(labels: np.ndarray, n: int) -> list[_Piece]:
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    area = np.bincount(lab, minlength=n + 1)
    x0 = np.full(n + 1, labels.shape[1]); np.minimum.at(x0, lab, xs)
    y0 = np.full(n + 1, labels.shape[0]); np.minimum.at(y0, lab, ys)
    x1 = np.zeros(n + 1, np.int64); np.maximum.at(x1, lab, xs + 1)
    y1 = np.zeros(n + 1, np.int64); np.maximum.at(y1, lab, ys + 1)
    return [_Piece(int(x0[k]), int(y0[k]), int(x1[k]), int(y1[k]), (k,), int(area[k])) for k in range(1, n + 1)]


def _segment_image(source: Input, options: PreprocessOptions, predictor: Predictor | None,
                   config: SegmentationConfig) -> Segmentation:
    ink, scale = ink_map(source, options)
    mask = ink >= INK_THRESHOLD
    if not mask.any():
        raise EmptyInputError()
    labels, n = label_components(mask)
    pieces = _drop_specks(_components(labels, n))
    if predictor is None:
        pieces = _merge_overlapping(pieces)
        pieces.sort(key=lambda p: p.x0)
        return Segmentation([_image_segment(ink, labels, p, scale) for p in pieces], "image", source, ink, scale)
    kept = np.isin(labels, [p.labels[0] for p in pieces]) if len(pieces) < n else mask
    line_h = line_height(kept)
    stroke = _stroke_width(kept)
    atoms, boxes, cut_cost = _image_atoms(ink, labels, pieces, line_h, stroke, config)
    candidates = []
    for i, j, width, height, gap in _candidate_runs(boxes, line_h, config):
        candidates.append(_Candidate(i, j, _atoms_segment(ink, atoms, boxes, i, j, scale), width, height, gap))
    reading = _read_line(ink) if config.line_reader else None
    count = len(reading.text) if reading is not None and reading.text else None
    segments = _choose(predictor, candidates, len(boxes), cut_cost, config, count)
    if count is not None and len(segments) == count > 1:
        segments = [_second_opinion(s, probs) for s, probs in zip(segments, reading.probs)]
    return Segmentation(segments, "image", source, ink, scale)


def _read_line(ink: np.ndarray):
    """The shipped line reader's reading of the ink map (None where none ships)."""
    from mnist_desktop.core.line_reader import default_line_reader

    reader = default_line_reader()
    return reader.read_ink(ink) if reader is not None else None


def _image_atoms(ink: np.ndarray, labels: np.ndarray, pieces: list[_Piece], line_h: float, stroke: float,
                 config: SegmentationConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Over-segment: every component, cut along its candidate paths. Returns the map of
    pieces (1..n, left to right by their centre of ink; 0 = none), their boxes
    ``(n, 4)`` and the strokes of ink cut between piece ``i - 1`` and ``i``."""
    atoms = np.zeros(labels.shape, np.int32)
    info: list[tuple[float, int, int, tuple[int, int, int, int]]] = []   # centre x, comp, order, box
    cuts: dict[tuple[int, int], float] = {}
    next_id = 1
    for comp, p in enumerate(pieces):
        m = p.mask(labels)
        paths = []
        if p.width >= config.cut_from * line_h:
            crop = np.where(m, ink[p.y0:p.y1, p.x0:p.x1], 0.0)
            paths = _union_paths([cut_paths(crop, line_h, stroke, band, config) for band in config.cut_bands],
                                 config.cut_spacing * line_h)
        if paths:
            cols = np.arange(p.width)[None, :]
            part = np.zeros(m.shape, np.int32)
            for path, _ in paths:
                part += cols >= path[:, None]
        else:
            part = np.zeros(m.shape, np.int32)
        order = 0
        last_cut = math.inf
        for q in range(len(paths) + 1):
            sel = m & (part == q)
            if q:
                last_cut = min(last_cut, paths[q - 1][1])
            if not sel.any():
                continue
            ys, xs = np.nonzero(sel)
            atoms[p.y0:p.y1, p.x0:p.x1][sel] = next_id
            box = (p.x0 + int(xs.min()), p.y0 + int(ys.min()), p.x0 + int(xs.max()) + 1, p.y0 + int(ys.max()) + 1)
            info.append((p.x0 + float(xs.mean()), comp, order, box))
            if order:
                cuts[(comp, order)] = last_cut
            last_cut = math.inf
            order += 1
            next_id += 1
    rank = sorted(range(len(info)), key=lambda k: info[k][0])
    remap = np.zeros(next_id, np.int32)
    remap[np.array(rank) + 1] = np.arange(1, len(rank) + 1)
    atoms = remap[atoms]
    boxes = np.array([info[k][3] for k in rank], np.float64).reshape(-1, 4)
    position = {(info[k][1], info[k][2]): r for r, k in enumerate(rank)}
    cut_cost = np.zeros(len(rank) + 1)
    for (comp, order), strokes in cuts.items():
        a, b = sorted((position[(comp, order - 1)], position[(comp, order)]))
        cut_cost[a + 1:b + 1] += strokes     # any digit boundary between the two cuts them
    return atoms, boxes, cut_cost


def _atoms_segment(ink: np.ndarray, atoms: np.ndarray, boxes: np.ndarray, i: int, j: int, scale: float) -> Segment:
    """The segment of pieces ``i..j-1``: their ink (and its faint rim) in their box."""
    b = boxes[i:j]
    x0, y0, x1, y1 = int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max())
    sub = atoms[y0:y1, x0:x1]
    m = (sub > i) & (sub <= j)
    inks = ink[y0:y1, x0:x1]
    crop = np.where(m, inks, 0.0).astype(np.float32)
    rim = _dilate(m) & (sub == 0)
    crop = np.where(rim, np.minimum(inks, INK_THRESHOLD), crop)
    return _crop_segment(crop, x0, y0, scale)


def _merge_overlapping(pieces: list[_Piece]) -> list[_Piece]:
    """Join pieces that overlap horizontally by at least half of the narrower one (or whose
    one lies inside the other): the parts of a broken digit (segmentation without a
    predictor)."""
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
                                       a.labels + b.labels, a.area + b.area)
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


def _image_segment(ink: np.ndarray, labels: np.ndarray, p: _Piece, scale: float) -> Segment:
    m = p.mask(labels)
    inks = ink[p.y0:p.y1, p.x0:p.x1]
    crop = np.where(m, inks, 0.0).astype(np.float32)
    # keep the faint anti-aliased rim of the piece's ink (below the threshold, beside it)
    rim = _dilate(m) & ~m
    crop = np.where(rim, np.minimum(inks, INK_THRESHOLD), crop)
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


# --------------------------------------------------------------------------- hand edits

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


def _segment_drawing(d: Drawing, predictor: Predictor | None, config: SegmentationConfig) -> Segmentation:
    strokes = [s for s in d.strokes if len(s.points)]
    if not strokes:
        raise EmptyInputError("nothing to classify (blank canvas)")
    if predictor is None:
        return Segmentation(_overlap_groups(strokes, d.canvas_size), "drawing", d)
    img, x0, y0, px = _raster(strokes)
    line_h = max(1.0, line_height(img >= 0.5) - RASTER_PEN) * px
    # over-segment: strokes, each wide one cut where the pen crosses least ink
    # (stroke index, its parts between two cuts, their box, strokes of ink cut on the left)
    atoms: list[tuple[int, list[Stroke], tuple[float, float, float, float], float]] = []
    for k, st in enumerate(strokes):
        box = _stroke_box(st.points)
        xs: list[tuple[float, float]] = []
        if box[2] - box[0] >= config.stroke_cut_from * line_h:
            simg, sx0, _, spx = _raster([st], px)
            xs = [(sx0 + (float(path[0]) + 0.5) * spx, s)
                  for path, s in cut_paths(simg, line_h / spx, RASTER_PEN, 0.0, config)]
        bounds = [(-math.inf, 0.0)] + xs + [(math.inf, 0.0)]
        cut = 0.0
        for (a, cut_here), (b, _) in zip(bounds, bounds[1:]):
            parts = _clip_stroke(st.points, a, b)
            cut = min(cut, cut_here) if cut else cut_here
            if parts:
                xy = np.concatenate([q.points for q in parts])
                atoms.append((k, parts, _stroke_box(xy), cut))
                cut = 0.0
    rank = sorted(range(len(atoms)), key=lambda a: (atoms[a][2][0] + atoms[a][2][2]) / 2)
    atoms = [atoms[a] for a in rank]
    boxes = np.array([a[2] for a in atoms], np.float64).reshape(-1, 4)
    cut_cost = np.zeros(len(atoms) + 1)
    for r, a in enumerate(atoms):
        if a[3] and r:
            cut_cost[r] = a[3]
    candidates = []
    for i, j, width, height, gap in _candidate_runs(boxes, line_h, config):
        run = sorted(range(i, j), key=lambda a: atoms[a][0])   # the strokes in drawing order
        seg = _drawing_segment(Drawing([q for a in run for q in atoms[a][1]], d.canvas_size))
        candidates.append(_Candidate(i, j, seg, width, height, gap))
    segments = _choose(predictor, candidates, len(atoms), cut_cost, config)
    return Segmentation(segments, "drawing", d)


def _overlap_groups(strokes: list[Stroke], canvas_size) -> list[Segment]:
    """One segment per group of strokes that overlap horizontally (by half the narrower),
    left to right."""
    gbox = [_stroke_box(s.points) for s in strokes]
    groups: list[list[int]] = [[i] for i in range(len(strokes))]
    changed = True
    while changed:
        changed = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                a, b = gbox[i], gbox[j]
                overlap = min(a[2], b[2]) - max(a[0], b[0])
                if overlap >= 0.5 * min(a[2] - a[0], b[2] - b[0]):
                    groups[i] += groups[j]
                    gbox[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del groups[j], gbox[j]
                    changed = True
                    break
            if changed:
                break
    order = sorted(range(len(groups)), key=lambda g: gbox[g][0])
    return [_drawing_segment(Drawing([strokes[k] for k in sorted(groups[g])], canvas_size)) for g in order]


RASTER_HEIGHT = 40   # pixels per line height of a drawing's coarse rendering
RASTER_PEN = 2       # its pen width, pixels (thin: where strokes run close, the cut between them stays visible)


def _raster(strokes: Sequence[Stroke], px: float | None = None) -> tuple[np.ndarray, float, float, float]:
    """A coarse rendering of strokes for their ink projection: ``(image, x0, y0, pixel
    size)``; column ``i`` covers input x ``x0 + i * pixel size``. Without ``px``, the
    strokes' height (at least a quarter of their width) spans 40 pixels."""
    xy = np.concatenate([s.points[:, :2] for s in strokes])
    (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
    if px is None:
        px = max(float(y1 - y0), float(x1 - x0) / 4, 1.0) / RASTER_HEIGHT
    w = int(math.ceil((x1 - x0) / px)) + 1
    h = int(math.ceil((y1 - y0) / px)) + 1
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    width = RASTER_PEN
    for s in strokes:
        pts = ((s.points[:, :2] - (x0, y0)) / px).ravel().tolist()
        if len(pts) >= 4:
            draw.line(pts, fill=255, width=width)
        else:
            draw.point(pts, fill=255)
    return np.asarray(img, np.float32) / 255.0, float(x0), float(y0), px


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
