"""The one preprocessing path: pen strokes or any image -> the model's 28x28 input.

Every consumer (canvas, file import, batch classification, evaluation, training on image
folders) calls :func:`preprocess`; nothing else in the product normalizes images.

Pipeline
--------
1. **To an ink map** (float32, 0 = background, 1 = full ink):

   * *Strokes* are rendered at a normalized stroke width: the width is a fraction
     (``stroke_width``) of the drawing's size (the larger side of the stroke bounding
     box), optionally modulated by pen pressure, so a small and a large digit look alike.
   * *Images* (any Pillow mode; EXIF orientation applied; larger than ``WORK_SIDE`` on
     a side: box-averaged to at most that first, see :func:`working_copy`): an alpha
     channel with transparency is taken as the ink; otherwise luminance. Polarity comes
     from the four corners' vote against the image's mid-level, a three-to-one split
     settled by the border band's majority (:func:`paper_is_light`; a tie means dark ink
     on light paper), so dark-on-light and light-on-dark both work,
     also when the ink touches the border (a digit cropped at its ink, a bold marker).
     Larger images (photos) get their uneven background (paper, shadows) estimated as a
     robust quadratic surface and subtracted (fitted to the paper, not to ink that
     covers much of the frame); small ones the median of their border's paper pixels.
   * Robust contrast: the paper's noise level (median + 3 MAD of the pixels below half
     the peak, whatever share of the frame the ink covers; for large images at least
     ``noise_floor`` of the peak) is subtracted and the ink peak (99.5th percentile)
     scaled to 1. Clean images (MNIST) pass unchanged.

2. **Nothing to classify** (:class:`EmptyInputError`) only without a separable stroke:
   no ink above the contrast floor (blank, uniform), paper noise as strong as the ink,
   or ink that fills the frame as texture (neighbour correlation under
   :data:`TEXTURE_COHERENCE`: noise, grain, speckle). Never because the ink is large.

3. **Crop** to the ink bounding box, ignoring faint noise and isolated specks (the box
   keeps 99.6% of the ink mass along each axis).

4. **Fit** aspect-preserving into a ``box`` x ``box`` (20x20) square, anti-aliased
   (area pre-reduction, then bilinear), and **centre** the ink's centre of mass on the
   28x28 field at sub-pixel precision - a single affine resampling. When the ink already
   fits the box within ``snap_tolerance`` (MNIST-style input), it is not resampled but
   shifted by whole pixels, exactly as MNIST itself was made, so such input comes out
   unchanged.

5. **Bold strokes** (a marker: stroke width over :data:`BOLD_WIDTH` pixels of the field)
   are thinned by grey-level erosion (:func:`thin_bold`); MNIST-like input is untouched.

6. Optional Gaussian blur (``blur_sigma``; one reference recipe denoises this way).

:func:`normalize` then maps the [0, 1] image to model input with the checkpoint's
mean/std. The 28x28 image is also what the GUI shows as "what the model sees".
"""

from __future__ import annotations

import errno
import functools
import math
import os
import stat
import struct
from dataclasses import dataclass, field, asdict
from typing import Any, Iterable, Sequence, Union

import numpy as np
from PIL import Image, ImageDraw, ImageOps

SIZE = 28
LARGE_PIXELS = 4000   # above this, the large-image statistics of clean_ink apply


class EmptyInputError(ValueError):
    """The input holds no ink: there is nothing to classify."""

    def __init__(self, message: str = "nothing to classify (no ink found)"):
        super().__init__(message)


class ImageReadError(ValueError):
    """An image file could not be read. The message is one line, fit for a user."""


@dataclass
class PreprocessOptions:
    """Options of the preprocessing path; stored in every checkpoint."""

    box: int = 20                 # the ink is fitted into box x box
    blur_sigma: float = 0.0       # Gaussian blur on the 28x28 result (0 = off)
    stroke_width: float = 0.12    # stroke width as a fraction of the drawing size
    pressure_gain: float = 1.0    # 0: ignore pressure; 1: width scales 0.5x..1.5x with it
    snap_tolerance: float = 0.1   # no resampling when the scale is within 1 +- this
    trim: float = 0.002           # ink mass fraction trimmed at each bbox side (specks)
    min_contrast: float = 0.08    # peak ink contrast below this is "no ink"
    noise_floor: float = 0.3      # large images: ink below this fraction of the peak is noise

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "PreprocessOptions":
        """Options from a model file or config (unknown keys are ignored), validated.

        Raises
        ------
        ValueError
            An option of the wrong type or out of its range (one line).
        """
        d = d or {}
        if not isinstance(d, dict):
            raise ValueError("preprocessing options must be an object")
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        options = cls(**known)
        options.validate()
        return options

    def validate(self) -> None:
        """Raise ValueError unless every option has its type and lies in the range where
        preprocessing works (outside it, every image fails or comes out blank)."""
        for name, (lo, hi) in _OPTION_RANGES.items():
            value = getattr(self, name)
            integer = name == "box"
            if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
                raise ValueError(f"{name} must be {'an integer' if integer else 'a number'}, "
                                 f"not {type(value).__name__}")
            if not (lo <= value <= hi):   # also False for NaN
                raise ValueError(f"{name} is {str(value)[:20]}; it must be in [{lo}, {hi}]")


#: Inclusive ranges of :class:`PreprocessOptions` (see its field comments).
_OPTION_RANGES = {
    "box": (4, 28), "blur_sigma": (0.0, 3.0), "stroke_width": (0.01, 0.5), "pressure_gain": (0.0, 2.0),
    "snap_tolerance": (0.0, 0.5), "trim": (0.0, 0.2), "min_contrast": (0.0, 0.9), "noise_floor": (0.0, 0.9),
}


# --------------------------------------------------------------------------- strokes

@dataclass
class Stroke:
    """One pen stroke: points ``(x, y)`` or ``(x, y, pressure)`` in canvas pixels.

    Pressure is in [0, 1]; 0.5 is the neutral pressure of a mouse.
    """

    points: np.ndarray

    def __post_init__(self) -> None:
        pts = np.asarray(self.points, dtype=np.float32)
        if pts.ndim != 2 or pts.shape[1] not in (2, 3):
            pts = pts.reshape(-1, 2) if pts.size % 2 == 0 and pts.ndim == 1 else pts
        if pts.ndim != 2 or pts.shape[1] not in (2, 3):
            raise ValueError("stroke points must be (x, y) or (x, y, pressure)")
        if pts.shape[1] == 2:
            pts = np.concatenate([pts, np.full((len(pts), 1), 0.5, np.float32)], axis=1)
        self.points = pts


@dataclass
class Drawing:
    """Pen strokes plus the canvas size they were drawn on (width, height)."""

    strokes: list[Stroke] = field(default_factory=list)
    canvas_size: tuple[int, int] = (280, 280)

    @classmethod
    def from_lists(cls, strokes: Iterable[Sequence[Sequence[float]]],
                   canvas_size: tuple[int, int] = (280, 280)) -> "Drawing":
        return cls([Stroke(np.asarray(s, np.float32)) for s in strokes if len(s)], canvas_size)

    def is_empty(self) -> bool:
        return not any(len(s.points) for s in self.strokes)


def _pressure_factor(p: np.ndarray, gain: float) -> np.ndarray:
    # Neutral pressure 0.5 gives factor 1; full range 0..1 gives 0.5x..1.5x at gain 1.
    return np.clip(1.0 + gain * (p - 0.5), 0.25, 2.0)


def render_strokes(drawing: Drawing, resolution: int, stroke_width: float,
                   pressure_gain: float = 1.0) -> np.ndarray:
    """Render strokes into an ink map whose drawing size (larger bbox side) is
    ``resolution`` pixels, with stroke width ``stroke_width * resolution``."""
    strokes = [s.points for s in drawing.strokes if len(s.points)]
    if not strokes:
        raise EmptyInputError("nothing to classify (blank canvas)")
    allpts = np.concatenate(strokes)
    lo = allpts[:, :2].min(axis=0)
    hi = allpts[:, :2].max(axis=0)
    cw, ch = drawing.canvas_size
    # A dot or a dash still has a size: at least 5% of the canvas.
    extent = max(float((hi - lo).max()), 0.05 * max(cw, ch, 1))
    scale = resolution / extent
    base_w = stroke_width * resolution
    pad = int(math.ceil(base_w * 1.5)) + 2
    w = int(math.ceil((hi[0] - lo[0]) * scale)) + 2 * pad + 1
    h = int(math.ceil((hi[1] - lo[1]) * scale)) + 2 * pad + 1
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    for pts in strokes:
        xy = (pts[:, :2] - lo) * scale + pad
        widths = np.maximum(1, np.rint(base_w * _pressure_factor(pts[:, 2], pressure_gain))).astype(int)
        # Pillow draws integer widths only; consecutive points of equal width form one
        # polyline, so a pressure stroke costs a few draw calls rather than one per point.
        breaks = np.flatnonzero(np.diff(widths)) + 1
        # Round caps at run ends, round joins only where the path turns sharply (Pillow's
        # joint="curve" costs a Python call per vertex).
        dots = np.zeros(len(xy), bool)
        dots[[0, -1]] = True
        dots[breaks] = True
        dots[1:-1] |= _sharp_turns(xy)
        flat = xy.ravel().tolist()
        for a, b in zip(np.r_[0, breaks].tolist(), np.r_[breaks, len(xy)].tolist()):
            a0 = max(0, a - 1)  # overlap one point so runs join
            if b - a0 > 1:
                draw.line(flat[2 * a0:2 * b], fill=255, width=int(widths[a]))
        for i in np.flatnonzero(dots).tolist():
            r = widths[i] / 2
            x, y = flat[2 * i], flat[2 * i + 1]
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return np.asarray(img, dtype=np.float32) / 255.0


def _sharp_turns(seg: np.ndarray, cos_limit: float = 0.8) -> np.ndarray:
    """Boolean mask over the interior vertices of ``seg`` where the direction changes by
    more than ~37 degrees."""
    if len(seg) < 3:
        return np.zeros(0, bool)
    d = np.diff(seg, axis=0)
    n = np.linalg.norm(d, axis=1) + 1e-9
    cos = (d[:-1] * d[1:]).sum(axis=1) / (n[:-1] * n[1:])
    return cos < cos_limit


# --------------------------------------------------------------------------- images

# Decompression bombs: refuse images above this many pixels (Pillow raises
# DecompressionBombError from 2x its MAX_IMAGE_PIXELS before decoding).
MAX_IMAGE_PIXELS = 64_000_000


# Images whose longer side exceeds this are box-averaged by an integer factor before
# preprocessing (:func:`working_copy`): the digit ends up 20 pixels tall, so a 12-megapixel
# photo carries nothing at full size that a ~1000-pixel copy does not, and costs several
# times more to clean and fit (12 MP photos: 300-400 ms -> 25-55 ms, same answers). JPEGs are
# decoded at a reduced scale to begin with (``draft``).
WORK_SIDE = 1024


# The raster formats that are ever opened, tried in this order: Pillow decodes each
# itself, with no external program and no interpreter. Image.open is never called
# without this list, because Pillow identifies a file by its content, not its name: a
# PostScript file named digit.png would go to Ghostscript (EPS), which runs it. TGA has
# no signature (Pillow tries it on anything), so it comes last.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM", "ICO", "TGA")
_FORMAT_NAMES = "PNG, JPEG, BMP, GIF, TIFF, WebP, PNM, ICO and TGA"

# Documents and programs that look like images to a user (often renamed to .png), told
# apart by their first bytes to say what they are.
_REFUSED_SIGNATURES = ((b"%!PS", "PostScript (EPS)"), (b"\xc5\xd0\xd3\xc6", "PostScript (EPS)"),
                       (b"%PDF", "PDF"))


def open_image(fp) -> Image.Image:
    """``Image.open(fp)`` restricted to :data:`IMAGE_FORMATS` (lazy, like Image.open).

    Raises ``PIL.UnidentifiedImageError`` for anything else (see :func:`refused_format`)."""
    return Image.open(fp, formats=IMAGE_FORMATS)


def refused_format(head: bytes) -> str | None:
    """A one-line reason naming the format of a file that starts with ``head`` (16 bytes
    will do) when it is one :func:`open_image` refuses to open but knows (PostScript, PDF,
    or another format Pillow could read), else None."""
    for signature, name in _REFUSED_SIGNATURES:
        if head.startswith(signature):
            return f"{name} files are not opened: only {_FORMAT_NAMES} images are"
    Image.init()
    for name, (_, accept) in list(Image.OPEN.items()):
        if name in IMAGE_FORMATS or accept is None:
            continue
        try:
            known = accept(head)
        except Exception:  # a plugin's signature check on a short header
            known = False
        if known:
            return f"{name} images are not opened: only {_FORMAT_NAMES} images are"
    return None


def _head(path, n: int = 16) -> bytes:
    """The first ``n`` bytes of a file name or a seekable file object (b"" on failure)."""
    try:
        if isinstance(path, (str, bytes, os.PathLike)):
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
            try:
                return os.read(fd, n)
            finally:
                os.close(fd)
        path.seek(0)
        return path.read(n)
    except (OSError, AttributeError, ValueError):
        return b""


def load_image(path) -> Image.Image:
    """Open an image file safely and decode it; a JPEG larger than twice ``WORK_SIDE``
    is decoded at a reduced DCT scale (1/2, 1/4 or 1/8; never below ``WORK_SIDE`` on the
    longer side), which :func:`preprocess` would box-average away anyway: several times
    faster and smaller for phone photos and scans.

    Only the raster formats of :data:`IMAGE_FORMATS` are opened (:func:`open_image`),
    whatever the file's name: a PostScript, EPS or PDF file is refused with a reason
    naming it, never handed to an interpreter.

    Raises
    ------
    ImageReadError
        With a one-line reason (missing, not an image, truncated, too large, ...).
    """
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS // 2
    if isinstance(path, (str, bytes, os.PathLike)):
        try:
            st = os.stat(path)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ImageReadError("symlink loop") from None
            st = None  # reported by Image.open below with the precise reason
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise ImageReadError("is a directory")
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise ImageReadError("not a regular file")   # a FIFO would block open() forever
        if st is not None and st.st_size == 0:
            raise ImageReadError("empty file (0 bytes)")
    try:
        with open_image(path) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise ImageReadError(f"image too large ({im.width}x{im.height} pixels)")
            side = max(im.width, im.height)
            if im.format == "JPEG" and side > 2 * WORK_SIDE:
                im.draft(im.mode, (math.ceil(im.width * WORK_SIDE / side), math.ceil(im.height * WORK_SIDE / side)))
            im.load()
            return ImageOps.exif_transpose(im) or im
    except ImageReadError:
        raise
    except Image.DecompressionBombError:
        raise ImageReadError("image too large (possible decompression bomb)") from None
    except FileNotFoundError:
        raise ImageReadError("file not found") from None
    except IsADirectoryError:
        raise ImageReadError("is a directory") from None
    except PermissionError:
        raise ImageReadError("permission denied") from None
    except Image.UnidentifiedImageError:
        raise ImageReadError(refused_format(_head(path)) or "not an image Pillow can read") from None
    except OSError as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "truncated" in msg.lower():
            raise ImageReadError("truncated or corrupt image") from None
        raise ImageReadError(f"cannot read image ({msg})") from None
    except (ValueError, SyntaxError, EOFError, struct.error) as e:
        raise ImageReadError(f"corrupt image ({type(e).__name__}: {str(e)[:120]})") from None


def image_to_gray(img: Image.Image) -> tuple[np.ndarray, bool]:
    """Any Pillow image -> (gray float32 in [0, 1], is_alpha_ink).

    When the image has real transparency, the alpha channel itself is the ink map.
    """
    mode = img.mode
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in img.info)
    if has_alpha:
        alpha = np.asarray(img.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
        if alpha.min() < 0.98:
            return alpha, True
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        if mode == "F":
            _require_finite(arr)
        lo, hi = float(arr.min()), float(arr.max())
        if mode.startswith("I;16"):
            lo, hi = 0.0, 65535.0 if hi > 255 else 255.0
        elif hi - lo < 1e-12:
            return np.zeros(arr.shape, np.float32), False
        return np.clip((arr - lo) / max(hi - lo, 1e-12), 0, 1), False
    if mode == "1":
        return np.asarray(img, dtype=np.float32), False
    if mode not in ("L", "RGB"):
        img = img.convert("RGB")
    if img.mode != "L":
        img = img.convert("L")
    return np.asarray(img, dtype=np.float32) / 255.0, False


NON_FINITE = "image has NaN/Inf pixels"


def _require_finite(arr: np.ndarray) -> None:
    """Refuse a float image with NaN or infinite pixels (they would reach the model as
    NaN): raises :class:`ImageReadError`."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ImageReadError(NON_FINITE)


def gray_to_ink(gray: np.ndarray, alpha_ink: bool = False) -> np.ndarray:
    """Gray image -> ink map (ink high, background ~0) with polarity detection and, for
    large images, subtraction of an uneven background.

    Polarity and the paper level come from evidence that holds when the ink touches the
    border (a digit cropped at its ink, a bold marker): the four corners vote
    (:func:`paper_is_light`), and the paper level is the median of the border pixels on
    the paper side of the image's mid-level, not of the whole border.
    """
    h, w = gray.shape
    if alpha_ink:
        return gray.astype(np.float32, copy=False)
    lo, hi = np.float32(gray.min()), np.float32(gray.max())
    mid = (lo + hi) * np.float32(0.5)
    light = paper_is_light(_corner_medians(gray), mid, lambda: _border_light_share(gray, mid))
    ink = (1.0 - gray) if light else gray
    if max(h, w) > 64:
        ink = ink - _background_map(ink)
    else:
        border = _border_pixels(ink)[None]
        ink_mid = (np.float32(1.0) - mid) if light else mid
        ink_lo = (np.float32(1.0) - hi) if light else lo
        level = _class_medians(border, border < ink_mid, np.asarray([ink_lo], np.float32))[0]
        ink = ink - level
    return np.clip(ink, 0.0, 1.0).astype(np.float32, copy=False)


def _corner_size(h: int, w: int) -> int:
    return max(1, round(0.1 * min(h, w)))


def _corner_medians(gray: np.ndarray) -> np.ndarray:
    """The medians of the four corner patches (10% of the shorter side) of a gray image."""
    h, w = gray.shape
    c = _corner_size(h, w)
    patches = np.stack([gray[:c, :c].ravel(), gray[:c, -c:].ravel(), gray[-c:, :c].ravel(), gray[-c:, -c:].ravel()])
    if gray.dtype == np.uint8:   # the 8-bit path: the float path's values
        patches = patches.astype(np.float32) / 255.0
    return _row_medians(patches, (0.0, 1.0)).astype(np.float32, copy=False)


def paper_is_light(corner_medians: np.ndarray, mid, border_light=None) -> bool | np.ndarray:
    """Whether the paper is lighter than the ink, from the corners' medians (``(..., 4)``),
    the image's mid-level ``(min + max) / 2`` and the share of the border band's pixels
    above it (``border_light``: ``(...)``, or for one image a function returning it;
    :func:`_border_light_share`).

    A digit, however tightly cropped or bold, rarely fills all four corners, while a
    border band can be mostly ink (a cropped 1); so each corner votes, and three or four
    light corners mean light paper (dark ink), none or one dark paper. A 7 cropped at
    its ink fills three corners (both ends of its bar, the foot of its stem) while its
    border band stays mostly paper, so on a three-to-one split the band's majority
    decides. On a tie the common case wins, pen or print on paper, never the
    screen-style light-on-dark an MNIST tensor has (it has dark corners).
    """
    votes = (np.asarray(corner_medians) > np.asarray(mid)[..., None]).sum(axis=-1)
    if border_light is None:
        return votes >= 2
    split = (votes == 1) | (votes == 3)
    if np.ndim(votes):
        return np.where(split, np.asarray(border_light) > 0.5, votes >= 2)
    if not split:
        return bool(votes >= 2)
    # One image: ``border_light`` may be a function, so the band is read only on a split.
    share = border_light() if callable(border_light) else border_light
    return bool(share > 0.5)


def _border_light_share(gray: np.ndarray, mid) -> float:
    """The share of the border band's pixels (:func:`_border_pixels`) lighter than ``mid``
    (on the 0..1 scale; an 8-bit ``gray`` is compared on its own scale)."""
    band = _border_pixels(gray)
    if gray.dtype == np.uint8:
        return float(np.count_nonzero(band.astype(np.float32) / np.float32(255.0) > mid)) / band.size
    return float(np.count_nonzero(band > mid)) / band.size


def _class_medians(a: np.ndarray, keep: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Per row of ``a`` (``(N, M)`` float32), the median of the entries where ``keep``;
    ``fallback`` for a row that keeps none. The same numbers for one row or many (one
    code path), and no sort where more than half the kept entries are exact zeros (an
    MNIST-style border or background)."""
    a = np.asarray(a, np.float32)
    n_keep = keep.sum(axis=1)
    out = np.asarray(fallback, np.float32).copy()
    zeros = ((a == 0) & keep).sum(axis=1)
    common = (zeros * 2 > n_keep) & (n_keep > 0)
    out[common] = 0.0
    todo = np.flatnonzero(~common & (n_keep > 0))
    if len(todo):
        s = np.sort(np.where(keep[todo], a[todo], np.float32(np.inf)), axis=1)
        k = n_keep[todo]
        rows = np.arange(len(todo))
        lo, hi = s[rows, (k - 1) // 2], s[rows, k // 2]
        out[todo] = (lo + hi) * np.float32(0.5)
    return out


def _border_pixels(gray: np.ndarray) -> np.ndarray:
    """The pixels of the outer 4% of a gray image, whose median is its background."""
    h, w = gray.shape
    b = max(1, round(0.04 * min(h, w)))
    return np.concatenate([gray[:b].ravel(), gray[-b:].ravel(), gray[:, :b].ravel(), gray[:, -b:].ravel()])


def _coarse_size(h: int, w: int) -> tuple[int, int]:
    """(width, height) of the coarse copy that :func:`_background_map` fits."""
    s = 32 / max(h, w)
    return max(4, round(w * s)), max(4, round(h * s))


@functools.lru_cache(maxsize=32)
def _quadratic_basis(h: int, w: int) -> np.ndarray:
    """``(h * w, 6)`` values of 1, u, v, u^2, v^2, uv at the pixel centres of an h x w grid
    (u, v in [-0.5, 0.5]); read-only, shared between calls."""
    yy, xx = np.mgrid[0:h, 0:w]
    u, v = (xx + 0.5) / w - 0.5, (yy + 0.5) / h - 0.5
    basis = np.stack([np.ones_like(u), u, v, u * u, v * v, u * v], axis=-1).reshape(-1, 6)
    basis.setflags(write=False)
    return basis


def _fit_masked(basis: np.ndarray, z: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Least-squares coefficients of ``basis @ c ~ z`` over the rows in ``keep`` (normal
    equations: 6 unknowns, a few hundred well-spread rows; a tenth of ``lstsq``'s cost)."""
    kept = basis[keep]
    gram = kept.T @ kept
    try:
        return np.linalg.solve(gram, kept.T @ z[keep])
    except np.linalg.LinAlgError:   # too few kept rows to fix a quadratic
        return np.linalg.lstsq(kept, z[keep], rcond=None)[0]


def _background_map(ink: np.ndarray) -> np.ndarray | np.float32:
    """Slowly varying background level of an ink map (ink high): paper shading in a photo.

    A quadratic surface is fitted, robustly, to the darker 60% of a coarse copy (strokes
    are a minority of pixels) and rejected outliers are refitted once. A smooth surface
    cannot follow strokes, however thick, so it never hollows out a bold digit the way a
    local minimum filter would.
    """
    h, w = ink.shape
    small = np.asarray(Image.fromarray(ink, mode="F").resize(_coarse_size(h, w), Image.BOX), dtype=np.float64)
    return _background_surface(small, h, w)


def _background_surface(small: np.ndarray, h: int, w: int) -> np.ndarray | np.float32:
    """:func:`_background_map` from its coarse copy ``small``, for an ``h`` x ``w`` image:
    a float32 constant when evenly lit, else the ``(h, w)`` surface."""
    z = small.ravel()
    cut = np.percentile(z, 60)
    mid = (z.min() + z.max()) / 2
    if cut > mid:
        # More than 40% of the frame is ink (a bold marker, a digit cropped at its ink):
        # the darker 60% would hold ink, so the paper is what lies below the mid-level.
        cut = mid
    keep = z <= cut
    kept = z[keep]
    level = kept.max()
    if kept.min() == level and not np.any((z > level) & (z <= level + 2.5e-6)):
        # A perfectly flat background (a rendered or synthetic image): both fits of
        # _fitted_surface would return the constant ``level`` (the robust sigma collapses
        # to its 1e-6 floor, so the refit keeps the same pixels); skipping them saves
        # ~0.1 ms per image (bit-identical results, tested).
        return np.float32(level)
    return _fitted_surface(small, h, w, keep)


def _fitted_surface(small: np.ndarray, h: int, w: int, keep: np.ndarray) -> np.ndarray | np.float32:
    """The robust quadratic fit of :func:`_background_surface`, from the darker pixels
    ``keep`` of the coarse copy."""
    chh, cw = small.shape
    basis = _quadratic_basis(chh, cw)
    z = small.ravel()
    coef = _fit_masked(basis, z, keep)
    resid = z - basis @ coef
    sigma = 1.4826 * np.median(np.abs(resid[keep])) + 1e-6
    inliers = resid <= 2.5 * sigma
    coef = _fit_masked(basis, z, inliers)
    coarse_bg = basis @ coef
    if np.ptp(coarse_bg) < 0.02:  # evenly lit (scans, screenshots): a constant will do
        return np.float32(np.median(coarse_bg))
    paper = z[keep & inliers] if np.any(keep & inliers) else z[keep]
    if paper.size < 0.35 * z.size and coarse_bg.min() < paper.min() - 0.1:
        # Too little paper to fit a surface to (under a third of the frame: a bold digit
        # cropped at its ink, its paper all at the edges), and the fit dips below the
        # lightest of it: the quadratic swings through the ink between the edges. Shading
        # is then unknowable: the paper's median. (A shadowed page keeps ~60% paper.)
        return np.float32(np.median(paper))
    # Evaluate on the full grid separably: the surface is a polynomial in u and v.
    uf = (np.arange(w) + 0.5) / w - 0.5
    vf = (np.arange(h) + 0.5) / h - 0.5
    c0, cu, cv, cuu, cvv, cuv = coef
    bg = (c0 + cv * vf + cvv * vf ** 2)[:, None] + (cu * uf + cuu * uf ** 2)[None, :] \
        + cuv * vf[:, None] * uf[None, :]
    return bg.astype(np.float32)


def clean_ink(ink: np.ndarray, min_contrast: float, noise_floor: float = 0.3) -> np.ndarray:
    """Subtract the noise floor and scale the ink peak to 1. Raises EmptyInputError.

    The floor is the paper's median + 3 MAD, the paper being the pixels below half the
    peak: however much of the frame the ink covers (a bold marker, a tight crop), the
    statistics are the paper's. On a background saturated at pure white more than half
    the pixels are exactly 0, so the MAD is 0 and would keep every speck of sensor/JPEG
    noise; large images therefore also use at least ``noise_floor`` x peak. Small
    (MNIST-style) images are left exact.
    """
    flat = ink.ravel()
    large = flat.size > LARGE_PIXELS
    if large:
        q = np.rint(np.clip(flat, 0.0, 1.0) * 255.0).astype(np.uint8)
        hist = np.bincount(q, minlength=256)
        peak = max(_histogram_peak(hist), float(flat.max()) * 0.5)
        med, mad = _histogram_paper_stats(hist, peak)
    else:
        peak = float(flat.max())
        row = flat[None].astype(np.float32, copy=False)
        paper = row < np.float32(0.5 * peak)
        med = float(_class_medians(row, paper, np.zeros(1, np.float32))[0])
        mad = float(_class_medians(np.abs(row - np.float32(med)), paper, np.zeros(1, np.float32))[0])
    floor = _noise_floor(peak, med, mad, large, min_contrast, noise_floor)
    if floor <= 0 and peak >= 0.999:
        return ink
    return np.clip((ink - floor) / (peak - floor), 0.0, 1.0)


def _noise_floor(peak: float, med: float, mad: float, large: bool, min_contrast: float,
                 noise_floor: float) -> float:
    """The level :func:`clean_ink` subtracts; raises EmptyInputError when there is no ink."""
    if peak < min_contrast:
        raise EmptyInputError()
    floor = med + 3 * 1.4826 * mad
    if floor >= peak * 0.5:
        # The paper's own noise reaches half the peak: texture or a blank, not a drawing.
        raise EmptyInputError("nothing to classify (no distinct ink found)")
    if large:
        floor = max(floor, noise_floor * peak)
    return floor


def _clean_ink_8bit(img: Image.Image, min_contrast: float, noise_floor: float,
                    pixels: np.ndarray | None = None) -> np.ndarray | None:
    """``clean_ink(gray_to_ink(gray))`` of a large 8-bit gray image (mode ``L``), computed
    through 256-entry lookup tables: on an evenly lit image (a scan, a screenshot) every
    step is a function of the pixel's 8-bit value alone, so the statistics come from one
    histogram and the result from one table lookup, not from a dozen float passes over
    the full image (with the fit that follows, ~0.86 ms instead of ~1.0 ms per 280x280
    PNG here). Returns None when the background is uneven (a photo); the caller then
    takes the float path.

    The ink comes back cropped to its non-zero bounding box, which :func:`_finish` treats
    as the full map. The result is the float path's up to float rounding (sums over the
    crop and the coarse background, averaged from the 8-bit values, round differently in
    the last bit; tested).
    """
    g = np.asarray(img) if pixels is None else pixels   # ``pixels``: img's own array, no copy
    h, w = g.shape
    counts = np.asarray(img.histogram(), dtype=np.int64)
    present = np.flatnonzero(counts)
    lo, hi = np.float32(present[0]) / 255.0, np.float32(present[-1]) / 255.0
    mid = (np.float32(lo) + np.float32(hi)) * np.float32(0.5)
    dark = bool(paper_is_light(_corner_medians(g), mid, lambda: _border_light_share(g, mid)))
    small = np.asarray(img.convert("F").resize(_coarse_size(h, w), Image.BOX), dtype=np.float64) / 255.0
    level = _background_surface(1.0 - small if dark else small, h, w)
    if np.ndim(level) != 0:
        return None
    # The float path, for each of the 256 gray values: gray -> ink -> minus background.
    lut = np.arange(256, dtype=np.float32) / 255.0
    if dark:
        lut = 1.0 - lut
    lut = np.clip(lut - np.float32(level), 0.0, 1.0).astype(np.float32, copy=False)
    q = np.rint(lut * 255.0).astype(np.intp)   # lut is in [0, 1]: clean_ink's bins
    hist = np.bincount(q, weights=counts, minlength=256)
    peak = max(_histogram_peak(hist), float(lut[counts > 0].max()) * 0.5)
    med, mad = _histogram_paper_stats(hist, peak)
    floor = _noise_floor(peak, med, mad, True, min_contrast, noise_floor)
    if not (floor <= 0 and peak >= 0.999):
        lut = np.clip((lut - floor) / (peak - floor), 0.0, 1.0)
    # Only the ink's bounding box matters to _finish (zeros around it change nothing), so
    # the table lookup and the fit run on the digit alone. Every step of the table (and
    # its float rounding) is monotonic in the gray value, so the ink is one threshold
    # away: g >= t for light ink, g <= t for dark ink on light paper.
    inked = np.flatnonzero(lut > 0)
    if not len(inked):
        raise EmptyInputError()
    mask = (g <= inked[-1]) if dark else (g >= inked[0])
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        raise EmptyInputError()
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(mask[y0:y1].any(axis=0))
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    return np.take(lut, g[y0:y1, x0:x1])


def _gray_8bit(source) -> Image.Image | None:
    """``source`` as a mode-``L`` image when :func:`image_to_gray` would read it as 8-bit
    luminance (no alpha ink, not 1-bit/16-bit/float) and it is large enough for the
    large-image path; else None."""
    if isinstance(source, np.ndarray):
        ok = source.dtype == np.uint8 and source.ndim == 2 and source.size > LARGE_PIXELS
        img = Image.fromarray(source) if ok else None
    else:
        img = source
        mode = img.mode
        if mode in ("RGBA", "LA", "PA", "RGBa", "La", "1", "F", "I") or mode.startswith("I;16") \
                or "transparency" in img.info:
            return None
        if mode != "L":
            img = img.convert("L") if mode == "RGB" else img.convert("RGB").convert("L")
    if img is None or max(img.size) <= 64 or img.width * img.height <= LARGE_PIXELS:
        return None
    return img


def _histogram_peak(hist: np.ndarray) -> float:
    """The 99.5th percentile / 255 of the values counted in a 256-bin histogram."""
    cum = np.cumsum(hist)
    return int(np.searchsorted(cum, 0.995 * cum[-1])) / 255.0


def _histogram_paper_stats(hist: np.ndarray, peak: float) -> tuple[float, float]:
    """(median, MAD) / 255 of the paper's values in a 256-bin histogram of an ink map: the
    bins below half of ``peak`` (the ink's share of the frame does not move them).
    Sorting-based statistics cost ~0.8 ms on a 280x280 image; the histogram a tenth."""
    hist = np.asarray(hist, np.float64)
    limit = int(math.ceil(0.5 * peak * 255.0 - 1e-9))   # bins b with b / 255 < peak / 2
    paper = hist[:max(1, limit)]
    cum = np.cumsum(paper)
    n = cum[-1]
    if n <= 0:
        return 0.0, 0.0
    med_bin = int(np.searchsorted(cum, 0.5 * n))
    dev = np.abs(np.arange(len(paper)) - med_bin)
    dev_hist = np.bincount(dev, weights=paper, minlength=256)
    mad_bin = int(np.searchsorted(np.cumsum(dev_hist), 0.5 * n))
    return med_bin / 255.0, mad_bin / 255.0


# --------------------------------------------------------------------------- fit & centre

def _ink_bbox(ink: np.ndarray, trim: float) -> tuple[int, int, int, int]:
    rows = ink.sum(axis=1)
    cols = ink.sum(axis=0)
    return (*_span(rows, trim), *_span(cols, trim))


def _span(profile: np.ndarray, trim: float) -> tuple[int, int]:
    cum = np.cumsum(profile, dtype=np.float64)
    total = cum[-1]
    lo = int(np.searchsorted(cum, total * trim, side="right"))
    hi = int(np.searchsorted(cum, total * (1 - trim), side="left"))
    return lo, max(lo, min(hi, len(profile) - 1))


#: The ink's neighbour correlation below which an image holds texture (noise, grain,
#: speckle), not strokes: strokes are a few pixels wide at least, so neighbouring ink
#: pixels agree (digits measure 0.42 and up, also tight crops, bold and blurred ones);
#: independent pixel noise measures about 0.
TEXTURE_COHERENCE = 0.25
#: Crops smaller than this on their longer side are not judged (an 8x8 scan's strokes
#: are one pixel wide: as incoherent as noise, and still a digit).
TEXTURE_MIN_SIDE = 16
TEXTURE_MESSAGE = "nothing to classify (only texture or noise, no stroke found)"
_COHERENCE_SIDE = 32


def ink_coherence(crops: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Neighbour correlation of the ink inside ``masks`` (``(N, H, W)``, each mask a
    rectangle): the covariance of horizontally and vertically adjacent pixels over their
    variance, 1 for smooth strokes, about 0 for independent noise; 1 for ink that fills
    its crop evenly (solid)."""
    crops = np.asarray(crops, np.float64)
    m = masks.astype(np.float64)
    count = m.sum(axis=(1, 2))
    mean = (crops * m).sum(axis=(1, 2)) / np.maximum(count, 1)
    x = (crops - mean[:, None, None]) * m
    hp = m[:, :, 1:] * m[:, :, :-1]
    vp = m[:, 1:] * m[:, :-1]
    num = (x[:, :, 1:] * x[:, :, :-1]).sum(axis=(1, 2)) + (x[:, 1:] * x[:, :-1]).sum(axis=(1, 2))
    sq = x * x
    den = 0.5 * (((sq[:, :, 1:] + sq[:, :, :-1]) * hp).sum(axis=(1, 2)) + ((sq[:, 1:] + sq[:, :-1]) * vp).sum(axis=(1, 2)))
    # Ink that nearly fills its crop evenly (a straight bar: a 1 cut at its ink) has no
    # variance to correlate: solid ink, not texture (noise varies as much as its mean).
    var = sq.sum(axis=(1, 2)) / np.maximum(count, 1)
    solid = (mean >= 0.75) & (var <= (0.25 * mean) ** 2)
    return np.where((den > 0) & ~solid, num / np.where(den > 0, den, 1.0), 1.0)


def _fills(crop: tuple[int, int], frame: tuple[int, int]) -> bool:
    """Whether the ink spans the frame on both axes (85%): texture covers the whole image;
    a patch in a frame has a shape (a blob, a smudge), which the model then judges."""
    return crop[0] >= 0.85 * frame[0] and crop[1] >= 0.85 * frame[1]


def _check_strokes(crop: np.ndarray) -> None:
    """Raise :class:`EmptyInputError` when the cropped ink is texture, not strokes."""
    h, w = crop.shape
    if max(h, w) < TEXTURE_MIN_SIDE:
        return
    f = -(-max(h, w) // _COHERENCE_SIDE)
    if f > 1:   # judged at about 32 px: a stroke is then a few pixels wide at any size
        crop = np.asarray(Image.fromarray(np.ascontiguousarray(crop, np.float32), "F").reduce(f), np.float32)
    if _coherence(crop) < TEXTURE_COHERENCE:
        raise EmptyInputError(TEXTURE_MESSAGE)


def _coherence(crop: np.ndarray) -> float:
    """:func:`ink_coherence` of one whole crop (the same figure, without masks)."""
    x = crop.astype(np.float64)
    mean = x.mean()
    x -= mean
    sq = x * x
    var = sq.mean()
    if mean >= 0.75 and var <= (0.25 * mean) ** 2:
        return 1.0
    num = float(np.vdot(x[:, 1:], x[:, :-1]) + np.vdot(x[1:], x[:-1]))
    den = 0.5 * float(sq[:, 1:].sum() + sq[:, :-1].sum() + sq[1:].sum() + sq[:-1].sum())
    return num / den if den > 0 else 1.0


def fit_and_center(ink: np.ndarray, opts: PreprocessOptions, frame: tuple[int, int] | None = None) -> np.ndarray:
    """Crop to the ink, fit into ``opts.box`` and centre the mass on the 28x28 field.

    Raises :class:`EmptyInputError` when there is no ink, or when ink that fills the
    ``frame`` (the image's size; ``ink.shape`` by default) is only texture (see
    :data:`TEXTURE_COHERENCE`)."""
    if float(ink.sum()) <= 1e-6:
        raise EmptyInputError()
    y0, y1, x0, x1 = _ink_bbox(ink, opts.trim)
    crop = ink[y0:y1 + 1, x0:x1 + 1]
    if _fills(crop.shape, frame or ink.shape):
        _check_strokes(crop)
    h, w = crop.shape
    scale = opts.box / max(h, w)
    if abs(scale - 1.0) <= opts.snap_tolerance:
        return _shift_whole_pixels(ink, y0, x0, crop)
    # Zero margin: Pillow's bilinear sampler treats positions outside the source as empty,
    # which would clip ink touching the tight crop and pull the mass centre inwards.
    m = 2 + int(math.ceil(1.0 / scale))
    crop = np.pad(crop, m)
    h, w = crop.shape
    src = Image.fromarray(np.ascontiguousarray(crop, dtype=np.float32), mode="F")
    if scale < 0.5:
        # Area-average down to about twice the target first so the bilinear step does
        # not alias thin strokes.
        pre = 2 * scale
        nw, nh = max(1, round(w * pre)), max(1, round(h * pre))
        src = src.resize((nw, nh), Image.BOX)
        sx, sy = nw / w, nh / h
        arr = np.asarray(src, dtype=np.float32)
        scale_x, scale_y = scale / sx, scale / sy
    else:
        arr = crop
        scale_x = scale_y = scale
    cy, cx = _center_of_mass(arr)
    # Output pixel centre (u+0.5, v+0.5) maps to input position; the mass centre lands at
    # continuous position 14.5 (= pixel index 14, MNIST's convention).
    c_out = SIZE / 2 + 0.5
    a, e = 1.0 / scale_x, 1.0 / scale_y
    coeffs = (a, 0.0, cx - a * c_out, 0.0, e, cy - e * c_out)
    out = src.transform((SIZE, SIZE), Image.AFFINE, coeffs, resample=Image.BILINEAR)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def _center_of_mass(arr: np.ndarray) -> tuple[float, float]:
    """Centre of mass in continuous coordinates (pixel i spans [i, i+1))."""
    total = float(arr.sum())
    ys = np.arange(arr.shape[0], dtype=np.float64) + 0.5
    xs = np.arange(arr.shape[1], dtype=np.float64) + 0.5
    return float(arr.sum(axis=1) @ ys) / total, float(arr.sum(axis=0) @ xs) / total


def _shift_whole_pixels(ink: np.ndarray, y0: int, x0: int, crop: np.ndarray) -> np.ndarray:
    """Move the ink by whole pixels so the crop's mass centre lands on pixel 14.

    The whole ink map is moved, not just the crop, so faint edge pixels that the bbox
    trimmed are kept: MNIST-style input comes out unchanged.
    """
    cy, cx = _center_of_mass(crop)
    h, w = crop.shape
    top = int(math.floor(SIZE / 2 + 1 - cy)) if h <= SIZE else 0
    left = int(math.floor(SIZE / 2 + 1 - cx)) if w <= SIZE else 0
    top = min(max(top, 0), SIZE - h) if h <= SIZE else 0
    left = min(max(left, 0), SIZE - w) if w <= SIZE else 0
    dy, dx = top - y0, left - x0  # ink pixel (y, x) goes to (y + dy, x + dx)
    out = np.zeros((SIZE, SIZE), np.float32)
    sy0, sx0 = max(0, -dy), max(0, -dx)
    sy1, sx1 = min(ink.shape[0], SIZE - dy), min(ink.shape[1], SIZE - dx)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 + dy:sy1 + dy, sx0 + dx:sx1 + dx] = ink[sy0:sy1, sx0:sx1]
    return out


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (zero padding) of one ``(H, W)`` image or a batch
    ``(..., H, W)`` of images; each image is blurred on its own."""
    if sigma <= 0:
        return img
    r = max(1, int(math.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    img = np.asarray(img, dtype=np.float32)
    pad = np.pad(img, [(0, 0)] * (img.ndim - 2) + [(r, r), (r, r)], mode="constant")
    # Windowed dot products along the last two axes (the kernel is symmetric, so this is
    # the convolution); vectorized so that training can blur 60,000 images at once.
    win = np.lib.stride_tricks.sliding_window_view
    tmp = win(pad, len(k), axis=-1) @ k
    return (win(tmp, len(k), axis=-2) @ k).astype(np.float32)


# --------------------------------------------------------------------------- entry points

Input = Union[Drawing, Image.Image, np.ndarray]


def working_copy(source: Input) -> Input:
    """``source`` reduced, when its longer side exceeds ``WORK_SIDE``, by the smallest
    integer factor that brings it within (Pillow's box average, which keeps alpha, 16-bit
    and float data as they are); anything else is returned unchanged."""
    if isinstance(source, Image.Image):
        h, w = source.height, source.width
    elif isinstance(source, np.ndarray) and source.ndim == 2:
        h, w = source.shape
    else:
        return source
    factor = -(-max(h, w) // WORK_SIDE)
    if factor <= 1:
        return source
    if isinstance(source, np.ndarray):
        if source.dtype == np.uint8:
            return Image.fromarray(source).reduce(factor)
        return np.asarray(Image.fromarray(source.astype(np.float32), "F").reduce(factor))
    mode = source.mode
    if mode.startswith("I;16"):   # reduce() takes 32-bit integers; keep the 16-bit range
        return Image.fromarray(np.asarray(source.convert("I").reduce(factor)).astype(np.uint16))
    if mode == "1":
        return source.convert("L").reduce(factor)
    if mode == "P":
        return source.convert("RGBA" if "transparency" in source.info else "RGB").reduce(factor)
    return source.reduce(factor)


def preprocess(source: Input, opts: PreprocessOptions | None = None) -> np.ndarray:
    """Turn strokes or an image into the 28x28 float32 image in [0, 1] (ink = 1) that the
    model sees (before :func:`normalize`).

    ``source`` is a :class:`Drawing`, a PIL image, or a 2-D array (uint8 0..255 or float
    0..1, any polarity).

    Raises
    ------
    EmptyInputError
        When there is nothing to classify (blank canvas, empty or uniform image).
    ImageReadError
        For a float image with NaN or infinite pixels (the result is always finite).
    TypeError
        For anything else (one line naming what was given).
    """
    opts = opts or PreprocessOptions()
    if isinstance(source, (list, tuple)):
        source = np.asarray(source)
    if not isinstance(source, (Drawing, Image.Image, np.ndarray)):
        raise TypeError(f"cannot classify a {type(source).__name__}: give a Drawing, a PIL image or a 2-D array")
    if isinstance(source, Drawing):
        if source.is_empty():
            raise EmptyInputError("nothing to classify (blank canvas)")
        ink = render_strokes(source, resolution=4 * opts.box, stroke_width=opts.stroke_width,
                             pressure_gain=opts.pressure_gain)
    else:
        if isinstance(source, Image.Image) and (source.width == 0 or source.height == 0):
            raise EmptyInputError("nothing to classify (empty image)")
        source = working_copy(source)
        fast = _gray_8bit(source)
        pixels = source if isinstance(source, np.ndarray) and source.dtype == np.uint8 else None
        ink = None if fast is None else _clean_ink_8bit(fast, opts.min_contrast, opts.noise_floor, pixels)
        if ink is not None:
            return _finish(ink, opts, source.size[::-1] if isinstance(source, Image.Image) else source.shape)
        if isinstance(source, Image.Image):
            gray, alpha_ink = image_to_gray(source)
        else:
            arr = np.asarray(source)
            if arr.ndim != 2 or arr.size == 0:
                raise EmptyInputError("nothing to classify (empty or non-2-D array)")
            with np.errstate(over="ignore", invalid="ignore"):   # refused just below
                gray = arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0)
            _require_finite(gray)
            alpha_ink = False
        ink = clean_ink(gray_to_ink(gray, alpha_ink), opts.min_contrast, opts.noise_floor)
    return _finish(ink, opts)


SMALL_BATCH_PIXELS = LARGE_PIXELS   # clean_ink's exact-statistics limit; larger images go one by one


def fits_small_batch(h: int, w: int) -> bool:
    """Whether an ``h`` x ``w`` image may go through :func:`preprocess_small_batch`: not
    empty, at most ``SMALL_BATCH_PIXELS`` pixels and 64 on a side (``gray_to_ink``'s
    small-image branch, the exact statistics of ``clean_ink``)."""
    return 0 < h and 0 < w and h * w <= SMALL_BATCH_PIXELS and max(h, w) <= 64


def preprocess_small_batch(grays: np.ndarray, opts: PreprocessOptions | None = None
                           ) -> list[np.ndarray | EmptyInputError | ImageReadError]:
    """:func:`preprocess` for a stack ``(N, H, W)`` of small gray images (float32 in [0,
    1], no alpha ink, ``H * W <= 4000``, ``max(H, W) <= 64``): the same result, bit for
    bit, as ``preprocess`` on each image, with the per-image statistics (border median,
    polarity, median / MAD noise floor, contrast) computed for the whole stack at once.

    Batch classification of MNIST-style folders spends most of its preprocessing time in
    those small reductions; done per image they cost several times the rest.

    Returns one entry per image: the 28x28 result, or the :class:`EmptyInputError` (or,
    for an image with NaN/Inf pixels, the :class:`ImageReadError`) that ``preprocess``
    would raise for it. One image's failure is its own: the others come out as if alone.
    """
    opts = opts or PreprocessOptions()
    grays = np.asarray(grays, dtype=np.float32)
    n, h, w = grays.shape
    if not fits_small_batch(h, w):
        raise ValueError(f"preprocess_small_batch takes non-empty images up to {SMALL_BATCH_PIXELS} pixels, 64 on a side")
    if n == 0:
        return []
    # NaN/Inf pixels are refused (as preprocess does) and zeroed so that they reach no
    # statistic; every reduction below is per image, so the others are untouched.
    finite = np.isfinite(grays).all(axis=(1, 2))
    if not finite.all():
        grays = np.where(finite[:, None, None], grays, np.float32(0.0))
    # gray_to_ink, small-image branch
    lo, hi = grays.min(axis=(1, 2)), grays.max(axis=(1, 2))
    mid = (lo + hi) * np.float32(0.5)
    c = _corner_size(h, w)
    corners = np.stack([_row_medians(q.reshape(n, -1), (0.0, 1.0)) for q in
                        (grays[:, :c, :c], grays[:, :c, -c:], grays[:, -c:, :c], grays[:, -c:, -c:])], axis=1)
    b = max(1, round(0.04 * min(h, w)))
    band = np.concatenate([grays[:, :b].reshape(n, -1), grays[:, -b:].reshape(n, -1),
                           grays[:, :, :b].reshape(n, -1), grays[:, :, -b:].reshape(n, -1)], axis=1)
    light = paper_is_light(corners, mid, (band > mid[:, None]).mean(axis=1))
    ink = np.where(light[:, None, None], np.float32(1.0) - grays, grays)
    border = np.concatenate([ink[:, :b].reshape(n, -1), ink[:, -b:].reshape(n, -1),
                             ink[:, :, :b].reshape(n, -1), ink[:, :, -b:].reshape(n, -1)], axis=1)
    ink_mid = np.where(light, np.float32(1.0) - mid, mid)
    ink_lo = np.where(light, np.float32(1.0) - hi, lo)
    level = _class_medians(border, border < ink_mid[:, None], ink_lo)
    ink = np.clip(ink - level[:, None, None], 0.0, 1.0)
    # clean_ink, exact-statistics branch
    flat = ink.reshape(n, -1)
    peak32 = flat.max(axis=1)
    peak = peak32.astype(np.float64)
    paper = flat < (np.float32(0.5) * peak32)[:, None]
    zero = np.zeros(n, np.float32)
    med = _class_medians(flat, paper, zero)
    mad = _class_medians(np.abs(flat - med[:, None]), paper, zero).astype(np.float64)
    floor = med.astype(np.float64) + 3 * 1.4826 * mad
    empty = (peak < opts.min_contrast) | (floor >= peak * 0.5)
    exact = (floor <= 0) & (peak >= 0.999)
    if not exact.all():
        with np.errstate(divide="ignore", invalid="ignore"):   # the empty ones, dropped below
            scaled = np.clip((ink - floor.astype(np.float32)[:, None, None])
                             / (peak - floor).astype(np.float32)[:, None, None], 0.0, 1.0)
        ink = np.where(exact[:, None, None], ink, scaled)
    ink[empty] = 0.0
    fitted, snapped, texture = _fit_snapped(ink, opts)
    snapped &= np.isfinite(fitted).all(axis=(1, 2))   # else _finish below says why
    out: list[np.ndarray | EmptyInputError | ImageReadError] = []
    for i in range(n):
        if not finite[i]:
            out.append(ImageReadError(NON_FINITE))
            continue
        if empty[i]:
            out.append(EmptyInputError() if peak[i] < opts.min_contrast
                       else EmptyInputError("nothing to classify (no distinct ink found)"))
            continue
        try:
            if snapped[i] and texture[i]:
                out.append(EmptyInputError(TEXTURE_MESSAGE))
                continue
            out.append(fitted[i] if snapped[i] else _finish(ink[i], opts))
        except (EmptyInputError, ImageReadError) as e:
            out.append(e)
    return out


def _row_medians(a: np.ndarray, common: Sequence[float]) -> np.ndarray:
    """``np.median(a, axis=1)``, bit for bit, without sorting the rows in which more than
    half of the entries equal one of the ``common`` values exactly (the median is that
    value): an MNIST-style image is mostly exact zeros, and its border all zeros or all
    ones, so a folder of them skips nearly every partial sort."""
    out = np.empty(a.shape[0], a.dtype)
    todo = np.ones(a.shape[0], bool)
    for value in common:
        hit = todo & ((a == value).sum(axis=1) * 2 > a.shape[1])
        out[hit] = value
        todo &= ~hit
    if todo.any():
        out[todo] = np.median(a[todo], axis=1)
    return out


def _fit_snapped(ink: np.ndarray, opts: PreprocessOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The :func:`_finish` of every image of the stack whose ink already has the target
    size (whole-pixel move, :func:`_shift_whole_pixels`), computed for the stack at once.
    Returns ``(images, done, texture)``; the others (resampled, or empty) are left to the
    caller; ``texture``: the done ones :func:`_check_strokes` refuses."""
    n, h, w = ink.shape
    rows, cols = ink.sum(axis=2), ink.sum(axis=1)

    def spans(profile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:   # _span, vectorized
        cum = np.cumsum(profile, axis=1, dtype=np.float64)
        total = cum[:, -1:]
        lo = (cum <= total * opts.trim).sum(axis=1)
        hi = (cum < total * (1 - opts.trim)).sum(axis=1)
        return lo, np.maximum(lo, np.minimum(hi, profile.shape[1] - 1))

    y0, y1 = spans(rows)
    x0, x1 = spans(cols)
    ch, cw = y1 - y0 + 1, x1 - x0 + 1
    done = (np.abs(opts.box / np.maximum(ch, cw) - 1.0) <= opts.snap_tolerance) & (ink.sum(axis=(1, 2)) > 1e-6)
    # mass centre of the crop (as _center_of_mass), in crop coordinates
    yy, xx = np.arange(h), np.arange(w)
    in_rows = (yy >= y0[:, None]) & (yy <= y1[:, None])
    in_cols = (xx >= x0[:, None]) & (xx <= x1[:, None])
    inside = in_rows[:, :, None] & in_cols[:, None, :]
    crop = np.where(inside, ink, np.float32(0.0))
    # _check_strokes: crops that snap are at most box * (1 + snap_tolerance) <= 31 pixels,
    # judged at full size as the scalar path does.
    judged = done & (np.maximum(ch, cw) >= TEXTURE_MIN_SIDE) & (ch >= 0.85 * h) & (cw >= 0.85 * w)
    texture = np.zeros(n, bool)
    if judged.any():
        texture[judged] = ink_coherence(crop[judged], inside[judged]) < TEXTURE_COHERENCE
    total = crop.sum(axis=(1, 2)).astype(np.float64)
    total = np.where(total > 0, total, 1.0)
    cy = (crop.sum(axis=2).astype(np.float64) * (yy + 0.5 - y0[:, None])).sum(axis=1) / total
    cx = (crop.sum(axis=1).astype(np.float64) * (xx + 0.5 - x0[:, None])).sum(axis=1) / total
    top = np.where(ch <= SIZE, np.clip(np.floor(SIZE / 2 + 1 - cy).astype(int), 0, SIZE - ch), 0)
    left = np.where(cw <= SIZE, np.clip(np.floor(SIZE / 2 + 1 - cx).astype(int), 0, SIZE - cw), 0)
    # out[i, Y, X] = ink[i, Y - dy, X - dx], zero outside the ink map: the SIZE x SIZE
    # window at (pad - dy, pad - dx) of the zero-padded maps (a strided view and one
    # gather of whole windows, several times cheaper than indexing pixel by pixel)
    dy, dx = top - y0, left - x0
    pad = int(max(0, dy.max(), dx.max(), (SIZE - h - dy).max(), (SIZE - w - dx).max()))
    padded = np.zeros((n, h + 2 * pad, w + 2 * pad), np.float32)
    padded[:, pad:pad + h, pad:pad + w] = ink
    windows = np.lib.stride_tricks.sliding_window_view(padded, (SIZE, SIZE), axis=(1, 2))
    out = windows[np.arange(n), pad - dy, pad - dx]
    peak = out.max(axis=(1, 2))
    done &= peak > 1e-6
    out = np.where((peak < 0.999)[:, None, None], out / np.where(peak > 0, peak, 1)[:, None, None], out)
    out = thin_bold(out)
    if opts.blur_sigma > 0:
        out = gaussian_blur(out, opts.blur_sigma)
    return out, done, texture


#: Stroke width (pixels of the 28x28 field) above which :func:`thin_bold` thins the ink:
#: MNIST's strokes are about 2 pixels wide (99% of digits under 3.6); a marker's reach 5-7.
BOLD_WIDTH = 4.0


def stroke_width(images: np.ndarray) -> np.ndarray:
    """Mean stroke width of ``(N, 28, 28)`` ink images: twice the ink's area over its
    outline length (total variation), in pixels."""
    area = images.sum(axis=(1, 2), dtype=np.float64)
    outline = (np.abs(np.diff(images, axis=2)).sum(axis=(1, 2), dtype=np.float64)
               + np.abs(np.diff(images, axis=1)).sum(axis=(1, 2), dtype=np.float64))
    return 2 * area / np.maximum(outline, 1e-6)


def thin_bold(images: np.ndarray, max_steps: int = 2) -> np.ndarray:
    """Thin the strokes of bold images (:data:`BOLD_WIDTH`) by grey-level erosion with a
    plus-shaped kernel, a pixel off each side per step, at most ``max_steps`` steps: a
    marker digit then looks like the pen widths the model learned from. Other images
    (every MNIST-like one) are returned untouched, the same array when none is bold."""
    bold = stroke_width(images) > BOLD_WIDTH
    if not bold.any():
        return images
    out = images.copy()
    for _ in range(max_steps):
        idx = np.flatnonzero(bold)
        if not len(idx):
            break
        x = np.pad(out[idx], ((0, 0), (1, 1), (1, 1)))
        eroded = np.minimum.reduce([x[:, 1:-1, 1:-1], x[:, :-2, 1:-1], x[:, 2:, 1:-1], x[:, 1:-1, :-2], x[:, 1:-1, 2:]])
        peak = eroded.max(axis=(1, 2))
        keep = peak > 0.5          # never erode a digit away
        idx, eroded, peak = idx[keep], eroded[keep], peak[keep]
        out[idx] = eroded / peak[:, None, None]
        still = np.zeros(len(bold), bool)
        still[idx] = stroke_width(out[idx]) > BOLD_WIDTH
        bold = still
    return out


def _finish(ink: np.ndarray, opts: PreprocessOptions, frame: tuple[int, int] | None = None) -> np.ndarray:
    """Fit, centre, full-strength ink and blur: the tail of :func:`preprocess`."""
    out = fit_and_center(ink, opts, frame)
    # Thin strokes lose peak intensity when shrunk to 20x20; give every input full-strength
    # ink, as MNIST digits have (no-op for MNIST-style input).
    peak = float(out.max())
    if peak <= 1e-6:
        raise EmptyInputError()
    if peak < 0.999:
        out = out / peak
    out = thin_bold(out[None])[0]
    out = gaussian_blur(out, opts.blur_sigma)
    if not np.isfinite(out).all():   # never NaN into the model, whatever came in
        raise ImageReadError(NON_FINITE)
    return out


def preprocess_file(path, opts: PreprocessOptions | None = None) -> np.ndarray:
    """:func:`load_image` then :func:`preprocess`."""
    return preprocess(load_image(path), opts)


def normalize(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """[0, 1] images (..., 28, 28) -> model input float32 ``(x - mean) / std``."""
    return ((np.asarray(images, dtype=np.float32) - mean) / std).astype(np.float32, copy=False)
