"""Read a whole line of digits at once with the shipped CTC line reader (ONNX Runtime).

:func:`mnist_desktop.core.numbers.read_number` cuts a line into digits. Where neighbours'
strokes interpenetrate (a 1 inside an 8, a 6 leaning into a 1) no top-to-bottom cut
separates them, and the cut-and-group search reads a merged pair as one confident digit.
The line reader (a small CRNN trained with CTC on whole composed lines, recipe in
:mod:`training.line_reader`) reads the line without cutting it. Segmentation uses its
digit count as a constraint and its per-digit probabilities as a second opinion.

The line goes through the same ink map as preprocessing (polarity, background, contrast:
:func:`mnist_desktop.core.numbers.ink_map`), is cropped at its ink and scaled to a 20-px
ink height (:func:`line_from_ink`, shared with training).

The model ships as ``resources/models/line-reader.onnx`` beside ``line-reader.json``,
which pins its SHA-256: a file that does not match is not run (never trust a file's claim
about itself). No torch: the lean build reads lines too.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

HEIGHT = 24          # pixels per line: the ink's height is 20 of them
INNER = HEIGHT - 4   # the ink's height
MARGIN = 4           # background columns left and right of the ink
BLANK = 10           # the CTC blank class
STRIDE = 4           # input columns per output frame
MAX_WIDTH = 4096     # a longer line (over ~170 digits) is not read by the line reader
INK_THRESHOLD = 0.3  # ink-map level that counts as ink (as in mnist_desktop.core.numbers)
MODEL_FILE = "line-reader.onnx"
MANIFEST_FILE = "line-reader.json"


@dataclass(frozen=True)
class Line:
    """An ink line ready for the reader, and where it came from in the ink map."""

    pixels: np.ndarray   # (HEIGHT, width) float32, 0 = background, 1 = ink
    x0: float            # the ink map's column of the line's first ink column
    step: float          # ink-map columns per line column


@dataclass(frozen=True)
class LineReading:
    """What the reader read: ``text``, per digit its probabilities over 0-9 (at the frame
    where the digit peaks, blank left out) and its centre in ink-map columns."""

    text: str
    probs: np.ndarray        # (len(text), 10)
    centres: tuple[float, ...]


def line_from_ink(ink: np.ndarray) -> Line | None:
    """The reader's line of an ink map: cropped at its ink (level >= 0.3), scaled to a
    20-px ink height with a 2-px top and bottom and 4-px side margin. None: no ink."""
    rows = np.flatnonzero(ink.max(axis=1) >= INK_THRESHOLD)
    cols = np.flatnonzero(ink.max(axis=0) >= INK_THRESHOLD)
    if not len(rows):
        return None
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = crop.shape
    width = max(1, int(round(w * INNER / h)))
    scaled = np.asarray(Image.fromarray(np.ascontiguousarray(crop, np.float32), "F")
                        .resize((width, INNER), Image.BILINEAR), np.float32)
    out = np.zeros((HEIGHT, width + 2 * MARGIN), np.float32)
    out[2:HEIGHT - 2, MARGIN:MARGIN + width] = scaled
    return Line(np.clip(out, 0.0, 1.0), float(cols[0]), w / width)


def greedy_decode(best) -> str:
    """CTC best path: repeats collapsed, blanks dropped (``best``: class per frame)."""
    out, prev = [], BLANK
    for k in np.asarray(best).tolist():
        if k != prev and k != BLANK:
            out.append(str(k))
        prev = k
    return "".join(out)


def decode(logp: np.ndarray, line: Line) -> LineReading:
    """The best path of ``(frames, 11)`` log probabilities, with each digit's
    probabilities at its peak frame and its centre in ink-map columns."""
    probs = np.exp(logp.astype(np.float64))
    best = probs.argmax(axis=1)
    text, rows, centres = [], [], []
    t = 0
    while t < len(best):
        k = int(best[t])
        end = t + 1
        while end < len(best) and best[end] == k:
            end += 1
        if k != BLANK:
            peak = t + int(np.argmax(probs[t:end, k]))
            digit = probs[peak, :BLANK] / max(float(probs[peak, :BLANK].sum()), 1e-12)
            text.append(str(k))
            rows.append(digit)
            centres.append(line.x0 + (STRIDE * peak + STRIDE / 2 - MARGIN) * line.step)
        t = end
    return LineReading("".join(text), np.array(rows, np.float64).reshape(-1, BLANK), tuple(centres))


def file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class LineReader:
    """The ONNX line reader, one thread (interactive use keeps one core)."""

    def __init__(self, onnx_path: Path, threads: int = 1):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, int(threads))
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.path = Path(onnx_path)
        self._session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._lock = threading.Lock()

    def log_probs(self, pixels: np.ndarray) -> np.ndarray:
        """``(frames, 11)`` log probabilities of one line (padded to the stride)."""
        width = int(math.ceil(pixels.shape[1] / STRIDE) * STRIDE)
        x = np.zeros((1, 1, HEIGHT, width), np.float32)
        x[0, 0, :, :pixels.shape[1]] = pixels
        with self._lock:
            out = self._session.run(None, {self._input: x})[0]
        return np.asarray(out)[:, 0, :]

    def read_ink(self, ink: np.ndarray) -> LineReading | None:
        """The reading of an ink map's line; None where there is no ink or the line is
        too long for the reader."""
        line = line_from_ink(ink)
        if line is None or line.pixels.shape[1] > MAX_WIDTH:
            return None
        return decode(self.log_probs(line.pixels), line)


_default: dict[str, LineReader | None] = {}
_default_lock = threading.Lock()


def load_shipped(models_dir: Path) -> LineReader | None:
    """The reader in ``models_dir`` when its ONNX file matches the SHA-256 its manifest
    pins; None (logged) when a file is missing, does not match, or will not load."""
    onnx_path, manifest = models_dir / MODEL_FILE, models_dir / MANIFEST_FILE
    try:
        pinned = json.loads(manifest.read_text(encoding="utf-8"))["onnx_sha256"]
        if not onnx_path.is_file():
            raise FileNotFoundError(onnx_path)
        if file_sha256(onnx_path) != pinned:
            log.warning("%s does not match the SHA-256 in %s: numbers are read without it", onnx_path, manifest)
            return None
        return LineReader(onnx_path)
    except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
        log.info("no line reader (%s): numbers are read by segmentation alone", exc)
        return None
    except Exception as exc:   # onnxruntime's own errors (a corrupt graph)
        log.warning("the line reader %s will not load (%s): numbers are read without it", onnx_path, exc)
        return None


def default_line_reader() -> LineReader | None:
    """The shipped reader (loaded once), or None where it is not shipped."""
    from mnist_desktop.core.paths import resources_dir

    models = resources_dir() / "models"
    key = str(models)
    with _default_lock:
        if key not in _default:
            _default[key] = load_shipped(models)
        return _default[key]
