"""Batched, seeded data augmentation on the training device.

One call transforms a whole batch ``(N, 1, H, W)`` of [0, 1] images (ink = 1) with
per-sample random parameters drawn from a :class:`torch.Generator`, so a run is
reproducible and a resumed run continues with the same random stream.

* **European handwriting** (label-aware, optional): a share of the 1s get the up-stroke
  ("flag") and sometimes the foot that most of Europe writes, and a share of the 7s get a
  crossbar. MNIST's American writers almost never do either, so without this a flagged 1
  drawn in the app reads as a 7. The strokes are drawn onto the training image itself,
  at the image's own stroke width, before the geometric transforms.
* **Stroke thickness**: a per-sample blend towards a 3x3 dilation (max-pool) or erosion
  (min-pool), so the change is continuous rather than all-or-nothing.
* **Affine** (rotation, translation, scale, shear) and **elastic distortion** are combined
  into one sampling grid and applied with a single ``grid_sample``: the elastic field is
  Gaussian-smoothed random displacement (Simard et al. 2003) added to the affine grid.

Everything runs as a handful of batched tensor ops on the device that holds the batch, so
on a GPU it costs a fraction of the forward pass.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from training.config import AugmentConfig


def _uniform(n: int, amplitude: float, gen: torch.Generator, device) -> torch.Tensor:
    """``n`` samples of U(-amplitude, amplitude)."""
    return (torch.rand(n, generator=gen, device=device) * 2 - 1) * amplitude


def affine_matrices(n: int, cfg: AugmentConfig, gen: torch.Generator, device) -> torch.Tensor:
    """Random ``(n, 2, 3)`` sampling matrices in ``affine_grid``'s normalized coordinates.

    The matrix maps output positions to input positions; all parameter ranges are symmetric,
    so sampling the inverse transform draws from the same distribution.
    """
    ang = _uniform(n, math.radians(cfg.rotation), gen, device)
    shear = _uniform(n, math.radians(cfg.shear), gen, device)
    scale = 1 + _uniform(n, cfg.scale, gen, device)
    shift = (torch.rand(n, 2, generator=gen, device=device) * 2 - 1) * (2 * cfg.translate)
    cos, sin, tan = torch.cos(ang), torch.sin(ang), torch.tan(shear)
    # A = R(ang) @ Shear_x(shear) / scale
    a11, a12 = cos / scale, (cos * tan - sin) / scale
    a21, a22 = sin / scale, (sin * tan + cos) / scale
    return torch.stack([torch.stack([a11, a12, shift[:, 0]], 1),
                        torch.stack([a21, a22, shift[:, 1]], 1)], 1)


@functools.lru_cache(maxsize=16)
def _gaussian_matrix(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    """``G`` with ``G @ v`` = zero-padded Gaussian smoothing of a length-``size`` signal.

    Smoothing as two small matrix products (``G @ field @ G.T``) is several times faster
    than a separable ``conv2d`` for 28x28 fields on a CPU. Cached: constants built once per
    device instead of every batch (on a GPU each rebuild would also mean host-to-device
    copies in the step loop).
    """
    i = torch.arange(size, dtype=torch.float32, device=device)
    d = i[:, None] - i[None, :]
    r = math.ceil(3 * sigma)
    full = torch.arange(-r, r + 1, dtype=torch.float32, device=device)
    norm = torch.exp(-0.5 * (full / sigma) ** 2).sum()
    g = torch.exp(-0.5 * (d / sigma) ** 2) / norm
    return torch.where(d.abs() <= r, g, torch.zeros((), device=device))


def elastic_field(n: int, h: int, w: int, cfg: AugmentConfig, gen: torch.Generator,
                  device) -> torch.Tensor:
    """Smooth random displacement ``(n, h, w, 2)`` in normalized coordinates, with RMS
    ``cfg.elastic_alpha`` pixels, zero for the samples not selected by ``elastic_p``."""
    noise = torch.randn(n, 2, h, w, generator=gen, device=device)
    gh = _gaussian_matrix(h, cfg.elastic_sigma, device)
    gw = gh if w == h else _gaussian_matrix(w, cfg.elastic_sigma, device)
    noise = gh @ noise @ gw.T
    # Smoothing white noise with a separable kernel k leaves std sum(k^2) (away from the
    # border); undo it so that elastic_alpha is the RMS displacement in pixels.
    k = gh[h // 2]
    noise = noise / (k * k).sum()
    field = noise.permute(0, 2, 3, 1)
    keep = (torch.rand(n, generator=gen, device=device) < cfg.elastic_p).to(field.dtype)
    return field * _pixel_to_grid(w, h, device) * (cfg.elastic_alpha * keep).view(n, 1, 1, 1)


def _max3x3(x: torch.Tensor) -> torch.Tensor:
    # Same result as max_pool2d(x, 3, stride=1, padding=1) but separable: four elementwise
    # maxima are ~20x faster than max_pool2d with stride 1 on a CPU.
    p = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
    rows = torch.maximum(torch.maximum(p[..., :, :-2], p[..., :, 1:-1]), p[..., :, 2:])
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


@functools.lru_cache(maxsize=16)
def _pixel_to_grid(w: int, h: int, device: torch.device) -> torch.Tensor:
    """Pixels -> ``grid_sample``'s normalized coordinates ([-1, 1] across the image)."""
    return torch.tensor([2.0 / w, 2.0 / h], device=device)


@functools.lru_cache(maxsize=4)
def _identity_theta(device: torch.device) -> torch.Tensor:
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=device)


def change_thickness(x: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Blend each image towards its 3x3 dilation (``amount`` > 0) or erosion (< 0)."""
    a = amount.view(-1, 1, 1, 1)
    # Erosion is the dilation of the negative image.
    target = torch.where(a >= 0, _max3x3(x), -_max3x3(-x))
    return x + a.abs() * (target - x)


def _segments(p0: torch.Tensor, p1: torch.Tensor, width: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Anti-aliased line segments ``p0 -> p1`` (``(N, 2)`` as x, y in pixel indices), each
    ``width`` pixels wide, rendered as ``(N, 1, h, w)`` intensities in [0, 1]."""
    ys = torch.arange(h, dtype=p0.dtype, device=p0.device).view(1, h, 1)
    xs = torch.arange(w, dtype=p0.dtype, device=p0.device).view(1, 1, w)
    d = p1 - p0
    px, py = xs - p0[:, 0].view(-1, 1, 1), ys - p0[:, 1].view(-1, 1, 1)
    len2 = (d * d).sum(1).clamp_min(1e-6).view(-1, 1, 1)
    t = ((px * d[:, 0].view(-1, 1, 1) + py * d[:, 1].view(-1, 1, 1)) / len2).clamp(0, 1)
    dist = torch.hypot(px - t * d[:, 0].view(-1, 1, 1), py - t * d[:, 1].view(-1, 1, 1))
    return (width.view(-1, 1, 1) / 2 + 0.5 - dist).clamp(0, 1).unsqueeze(1)


def _ink_centre(ink: torch.Tensor, row_lo: torch.Tensor, row_hi: torch.Tensor) -> torch.Tensor:
    """Mean column of the ink in rows ``row_lo .. row_hi`` of each image ``(N, H, W)``."""
    n, h, w = ink.shape
    rows = torch.arange(h, device=ink.device).view(1, h, 1)
    sel = ink * ((rows >= row_lo.view(-1, 1, 1)) & (rows <= row_hi.view(-1, 1, 1)))
    cols = torch.arange(w, dtype=ink.dtype, device=ink.device).view(1, 1, w)
    mass = sel.sum((1, 2))
    overall = (ink * cols).sum((1, 2)) / ink.sum((1, 2)).clamp_min(1e-6)
    return torch.where(mass > 1e-3, (sel * cols).sum((1, 2)) / mass.clamp_min(1e-6), overall)


FLAG_MIN_DEG = 35.0   # the shallowest European flag drawn on a 1 (degrees below level)


def european_strokes(x: torch.Tensor, labels: torch.Tensor, one: int, seven: int, p: float,
                     gen: torch.Generator) -> torch.Tensor:
    """Draw a flag (and, for 40% of them, a foot) on a share ``p`` of the 1s and a
    crossbar on a share ``p`` of the 7s of the batch ``(N, 1, H, W)``; ``one``/``seven``
    are the class indices (-1 = absent). Random numbers are drawn for every sample, so
    the stream does not depend on the labels."""
    n, _, h, w = x.shape
    device = x.device
    r = torch.rand(n, 8, generator=gen, device=device)
    pick = r[:, 0] < p
    is_one = pick & (labels == one) if one >= 0 else torch.zeros_like(pick)
    is_seven = pick & (labels == seven) if seven >= 0 else torch.zeros_like(pick)
    if not bool((is_one | is_seven).any()):
        return x
    ink = x[:, 0]
    rows_any = (ink > 0.3).any(2)
    has_ink = rows_any.any(1)
    idx = torch.arange(h, device=device)
    top = torch.where(rows_any, idx, h).min(1).values.clamp(max=h - 1)
    bottom = torch.where(rows_any, idx, -1).max(1).values.clamp(min=0)
    height = (bottom - top + 1).clamp(min=1).to(x.dtype)
    # A plain 1 is one stroke about as long as the digit is tall: ink / height ~ pen width.
    pen = (ink.sum((1, 2)) / height).clamp(1.2, 4.5)
    x_top = _ink_centre(ink, top, top + 1)
    x_bot = _ink_centre(ink, bottom - 1, bottom)
    topf, botf = top.to(x.dtype), bottom.to(x.dtype)
    # 1: flag from the top down to the left, 20-45% of the height long, 35-60 deg steep.
    # Shallower flags are not drawn: after the geometric augmentation (rotation, shear)
    # a 25-degree flag can lie nearly level, which is a short 7 bar, and teaches the
    # model to read American 7s as 1s. (The drawing generator's flag templates are
    # 35-53 degrees before its random aspect stretch.)
    length = (0.2 + 0.25 * r[:, 1]) * height
    angle = torch.deg2rad(FLAG_MIN_DEG + (60 - FLAG_MIN_DEG) * r[:, 2])
    start = torch.stack([x_top, topf], 1)
    flag_end = torch.stack([x_top - length * torch.cos(angle), topf + length * torch.sin(angle)], 1)
    strokes = _segments(start, flag_end, pen, h, w)
    foot = (r[:, 3] < 0.4).to(x.dtype)
    half = (0.15 + 0.15 * r[:, 4]) * height * foot
    strokes = torch.maximum(strokes, _segments(torch.stack([x_bot - half, botf], 1),
                                               torch.stack([x_bot + half, botf], 1), pen * foot, h, w))
    # 7: crossbar through the stem at 40-60% of the height, 30-50% of the height wide.
    y_bar = (topf + (0.4 + 0.2 * r[:, 5]) * height).round()
    x_bar = _ink_centre(ink, y_bar.long(), y_bar.long())
    half = (0.15 + 0.1 * r[:, 6]) * height
    tilt = (r[:, 7] - 0.5) * 0.1 * height   # not always exactly level
    bar = _segments(torch.stack([x_bar - half, y_bar + tilt], 1), torch.stack([x_bar + half, y_bar - tilt], 1),
                    pen, h, w)
    add = torch.where(is_one.view(-1, 1, 1, 1), strokes, torch.where(is_seven.view(-1, 1, 1, 1), bar, 0))
    add = add * has_ink.view(-1, 1, 1, 1).to(x.dtype)
    return torch.maximum(x, add.to(x.dtype))


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator,
                  labels: torch.Tensor | None = None, style_classes: tuple[int, int] = (-1, -1)) -> torch.Tensor:
    """Randomly transform a batch ``(N, 1, H, W)`` of [0, 1] images (see module docstring).

    ``gen`` must live on ``x.device``. ``labels`` and ``style_classes`` (the class indices
    of "1" and "7") enable the label-aware European-handwriting strokes. Returns a new
    tensor; ``x`` is not modified.
    """
    n, _, h, w = x.shape
    device = x.device
    if cfg.european > 0 and labels is not None and max(style_classes) >= 0:
        x = european_strokes(x, labels, style_classes[0], style_classes[1], cfg.european, gen)
    if cfg.thickness > 0:
        x = change_thickness(x, _uniform(n, cfg.thickness, gen, device))
    geometric = cfg.rotation > 0 or cfg.translate > 0 or cfg.scale > 0 or cfg.shear > 0
    elastic = cfg.elastic_alpha > 0 and cfg.elastic_p > 0
    if not (geometric or elastic):
        return x
    if geometric:
        theta = affine_matrices(n, cfg, gen, device)
    else:
        theta = _identity_theta(device).expand(n, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), [n, 1, h, w], align_corners=False)
    if elastic:
        grid = grid + elastic_field(n, h, w, cfg, gen, device).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
