"""The one preprocessing path: strokes and images of every kind -> 28x28."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from mnist_desktop.core.preprocess import (WORK_SIDE, Drawing, EmptyInputError, ImageReadError, PreprocessOptions,
                                           Stroke, load_image, preprocess, working_copy)

SEVEN = [[(60, 60), (200, 60), (180, 110), (150, 170), (120, 230)], [(110, 140), (190, 140)]]


def _render_like_canvas(drawing: Drawing, width_fraction: float, polarity="dark_on_light") -> Image.Image:
    """Render strokes the way a canvas would, at a pen width proportional to the digit."""
    pts = np.concatenate([s.points[:, :2] for s in drawing.strokes])
    size = float((pts.max(0) - pts.min(0)).max())
    w = width_fraction * size
    bg, ink = (255, 0) if polarity == "dark_on_light" else (0, 255)
    img = Image.new("L", drawing.canvas_size, bg)
    d = ImageDraw.Draw(img)
    for s in drawing.strokes:
        xy = [tuple(p) for p in s.points[:, :2]]
        d.line(xy, fill=ink, width=round(w), joint="curve")
        for x, y in (xy[0], xy[-1]):
            d.ellipse((x - w / 2, y - w / 2, x + w / 2, y + w / 2), fill=ink)
    return img


def _corr(a, b) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_strokes_and_their_rendered_image_give_the_same_input():
    drawing = Drawing.from_lists(SEVEN, (280, 280))
    opts = PreprocessOptions()
    from_strokes = preprocess(drawing, opts)
    from_image = preprocess(_render_like_canvas(drawing, opts.stroke_width), opts)
    assert from_strokes.shape == (28, 28) and from_strokes.dtype == np.float32
    assert _corr(from_strokes, from_image) > 0.95
    assert np.abs(from_strokes - from_image).mean() < 0.04


def test_normalized_stroke_width_small_and_large_digit_look_alike():
    big = Drawing.from_lists(SEVEN, (280, 280))
    small = Drawing.from_lists([[(x * 0.25 + 10, y * 0.25 + 150) for x, y in s] for s in SEVEN], (280, 280))
    a, b = preprocess(big), preprocess(small)
    assert _corr(a, b) > 0.99


def test_pressure_changes_width():
    light = Drawing([Stroke(np.c_[np.linspace(50, 200, 30), np.linspace(50, 220, 30), np.full(30, 0.1)])])
    heavy = Drawing([Stroke(np.c_[np.linspace(50, 200, 30), np.linspace(50, 220, 30), np.full(30, 0.9)])])
    assert preprocess(heavy).sum() > 1.3 * preprocess(light).sum()


def test_output_is_centred_by_mass_and_fits_the_box():
    drawing = Drawing.from_lists([[(10, 10), (40, 10), (40, 90)]], (500, 500))  # far off-centre
    out = preprocess(drawing)
    ys, xs = np.nonzero(out > 0.05)
    assert ys.max() - ys.min() <= 22 and xs.max() - xs.min() <= 22
    m = out.sum()
    cy = (out.sum(1) @ np.arange(28)) / m
    cx = (out.sum(0) @ np.arange(28)) / m
    assert abs(cy - 14) < 0.6 and abs(cx - 14) < 0.6


def test_mnist_style_input_comes_out_essentially_unchanged(mnist_test):
    images = mnist_test.images[:1000]
    same = 0
    for im in images:
        out = preprocess(im)
        if np.abs(out - im / 255.0).max() < 0.05:
            same += 1
    assert same / len(images) > 0.8  # the rest move by one whole pixel (COM rounding)


def test_idempotent():
    drawing = Drawing.from_lists(SEVEN, (280, 280))
    once = preprocess(drawing)
    twice = preprocess(once)
    # identical up to the contrast normalization (peak ink scaled to 1)
    assert np.abs(once / once.max() - twice).max() < 0.05


@pytest.mark.parametrize("polarity", ["dark_on_light", "light_on_dark"])
def test_polarity_is_detected(polarity):
    drawing = Drawing.from_lists(SEVEN, (280, 280))
    img = _render_like_canvas(drawing, 0.12, polarity)
    ref = preprocess(drawing)
    assert _corr(preprocess(img), ref) > 0.95


def _digit_image(mnist_test, i=0, scale=8, pad=40) -> tuple[Image.Image, int]:
    """An MNIST test digit upscaled, dark ink on light paper."""
    im = Image.fromarray(255 - mnist_test.images[i]).resize((28 * scale, 28 * scale), Image.BICUBIC)
    canvas = Image.new("L", (28 * scale + 2 * pad, 28 * scale + 2 * pad), 255)
    canvas.paste(im, (pad, pad))
    return canvas, int(mnist_test.labels[i])


MODES = ["L", "RGB", "RGBA", "LA", "P", "I;16", "I", "F", "CMYK", "1", "YCbCr", "RGBA-transparent", "LA-white-ink"]


@pytest.mark.parametrize("scale", [8, 40])
@pytest.mark.parametrize("mode", MODES)
def test_every_image_mode(mnist_test, mode, scale):
    """Every mode reads as the same digit; at scale 40 (1,200 pixels a side) also after
    the reduction to the working size, which must keep alpha ink and the 16-bit range."""
    base, _ = _digit_image(mnist_test, 3, scale=scale, pad=5 * scale)
    ref = preprocess(_digit_image(mnist_test, 3)[0])
    if mode == "RGBA-transparent":
        # black ink on a fully transparent background (as drawing apps export)
        alpha = Image.eval(base, lambda v: 255 - v)
        img = Image.merge("RGBA", (Image.new("L", base.size, 0),) * 3 + (alpha,))
    elif mode == "LA-white-ink":
        alpha = Image.eval(base, lambda v: 255 - v)
        img = Image.merge("LA", (Image.new("L", base.size, 255), alpha))
    elif mode == "I;16":
        img = Image.fromarray((np.asarray(base, np.uint16) * 257).astype(np.uint16))
        assert img.mode.startswith("I;16")
    elif mode == "1":
        img = base.point(lambda v: 255 if v > 128 else 0).convert("1")
    else:
        img = base.convert(mode)
    # round-trip through a file where the format supports the mode, as a user would
    fmt = {"CMYK": "TIFF", "F": "TIFF", "I": "TIFF", "YCbCr": "JPEG"}.get(mode.split("-")[0], "PNG")
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    buf.seek(0)
    loaded = load_image(buf)
    out = preprocess(loaded)
    threshold = 0.9 if mode in ("1", "YCbCr") else 0.97
    assert _corr(out, ref) > threshold, mode
    work = working_copy(loaded)
    if max(loaded.size) <= WORK_SIDE:
        assert work is loaded
    else:
        assert max(work.size) <= WORK_SIDE < 2 * max(work.size)
        assert work.mode == {"1": "L", "P": "RGB"}.get(loaded.mode, loaded.mode)
        if mode == "I;16":
            assert np.asarray(work).max() > 60000   # still the 16-bit range, not clipped to 8 bits


def test_large_arrays_are_reduced_like_images(mnist_test):
    big = np.asarray(_digit_image(mnist_test, 5, scale=50, pad=100)[0])   # 1,600 pixels a side
    assert np.asarray(working_copy(big)).shape == (800, 800)
    assert working_copy(big.astype(np.float32) / 255).dtype == np.float32
    assert _corr(preprocess(big), preprocess(big.astype(np.float32) / 255)) > 0.999
    small = big[:900, :900]
    assert working_copy(small) is small


def test_large_jpeg_decodes_at_reduced_scale_with_the_same_answer(mnist_test, default_model, tmp_path):
    """A 12-megapixel photo is decoded at 1/2 scale (DCT scaling, EXIF orientation still
    applied) and classified as at full size, in a fraction of the time."""
    from mnist_desktop.core.torch_predictor import TorchPredictor

    pred = TorchPredictor.from_file(default_model, "cpu")
    for i in range(4):
        digit, label = _digit_image(mnist_test, i, scale=40, pad=0)
        photo = Image.new("L", (4000, 3000), 225)
        photo.paste(digit, (900 + 300 * i, 700 + 200 * i))
        path = tmp_path / f"photo{i}.jpg"
        exif = Image.Exif()
        exif[0x0112] = 6 if i % 2 else 1   # 6: stored sideways, shown turned 90 degrees clockwise
        stored = photo.transpose(Image.Transpose.ROTATE_90) if i % 2 else photo
        stored.convert("RGB").save(path, quality=90, exif=exif.tobytes())
        loaded = load_image(path)
        assert loaded.size == (2000, 1500) and loaded.mode == "RGB"
        with Image.open(path) as full:
            full = ImageOps.exif_transpose(full)   # decoded at full size
        a, b = preprocess(loaded), preprocess(full)
        assert _corr(a, b) > 0.98
        assert pred.predict(loaded).label == pred.predict(full).label == str(label)


def test_photo_of_ink_on_uneven_paper(mnist_test):
    img, _ = _digit_image(mnist_test, 7, scale=12, pad=120)
    a = np.asarray(img, np.float32)
    h, w = a.shape
    yy, xx = np.mgrid[0:h, 0:w]
    shading = 60 * (xx / w) + 30 * (yy / h)  # light falls off across the page
    rng = np.random.default_rng(0)
    paper = np.clip(a * 0.75 + 40 - shading + rng.normal(0, 6, a.shape), 0, 255).astype(np.uint8)
    photo = Image.merge("RGB", [Image.fromarray(paper)] * 3).filter(ImageFilter.GaussianBlur(1.5))
    ref = preprocess(mnist_test.images[7])
    assert _corr(preprocess(photo), ref) > 0.85


@pytest.mark.parametrize("source", [
    Drawing(),
    Drawing([Stroke(np.zeros((0, 3), np.float32))]),
    Image.new("L", (100, 100), 255),
    Image.new("RGB", (64, 64), (0, 0, 0)),
    Image.new("L", (50, 50), 128),
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)),
    np.zeros((28, 28), np.uint8),
    np.zeros((0, 0), np.uint8),
])
def test_blank_input_is_nothing_to_classify(source):
    with pytest.raises(EmptyInputError):
        preprocess(source)


def test_faint_noise_is_nothing_to_classify():
    rng = np.random.default_rng(0)
    noise = np.clip(rng.normal(200, 3, (120, 120)), 0, 255).astype(np.uint8)
    with pytest.raises(EmptyInputError):
        preprocess(noise)


def test_faint_specks_do_not_change_the_crop(mnist_test):
    img, _ = _digit_image(mnist_test, 11)
    a = np.asarray(img).copy()
    a[2:4, 2:4] = 150  # a small speck far from the digit
    a[-4:-2, -4:-2] = 170
    clean = preprocess(img)
    specked = preprocess(Image.fromarray(a))
    assert _corr(clean, specked) > 0.97


@pytest.mark.parametrize("content,reason", [
    (b"", "empty"), (b"not an image at all", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, ""),
])
def test_unreadable_images_raise_one_line_errors(tmp_path, content, reason):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(ImageReadError) as e:
        load_image(p)
    assert "\n" not in str(e.value) and reason in str(e.value)


def test_truncated_png(tmp_path, mnist_test):
    buf = io.BytesIO()
    Image.fromarray(mnist_test.images[0]).resize((200, 200)).save(buf, "PNG")
    p = tmp_path / "cut.png"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageReadError):
        load_image(p)


def test_decompression_bomb_refused_without_allocating(tmp_path):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    p = tmp_path / "bomb.png"
    p.write_bytes(png)
    with pytest.raises(ImageReadError, match="too large"):
        load_image(p)


def test_shifted_and_scaled_digits_get_the_same_prediction(mnist_test, default_model):
    from mnist_desktop.core.torch_predictor import TorchPredictor

    pred = TorchPredictor.from_file(default_model, "cpu")
    n = 150
    agree = 0
    rng = np.random.default_rng(0)
    for i in range(n):
        base = pred.predict(mnist_test.images[i]).label
        scale = int(rng.integers(2, 12))
        big = Image.fromarray(mnist_test.images[i]).resize((28 * scale, 28 * scale), Image.BICUBIC)
        canvas = Image.new("L", (28 * scale * 3, 28 * scale * 2), 0)
        canvas.paste(big, (int(rng.integers(0, 28 * scale * 2)), int(rng.integers(0, 28 * scale))))
        agree += pred.predict(canvas).label == base
    assert agree / n >= 0.98


def test_bold_upscaled_digits_keep_their_shape(mnist_train5k):
    """Thick strokes in a large image are ink, not background to subtract (a local minimum
    filter used to hollow them out)."""
    corrs = []
    for i in range(0, 5000, 100):
        ref = preprocess(mnist_train5k.images[i])
        for scale in (3, 8):
            big = Image.fromarray(255 - mnist_train5k.images[i]).resize((28 * scale, 28 * scale), Image.BICUBIC)
            corrs.append(_corr(preprocess(big), ref))
    assert min(corrs) > 0.8 and np.median(corrs) > 0.93


def test_flat_background_shortcut_matches_the_fit(mnist_test):
    """On a perfectly flat background the surface fit is skipped; it must return exactly
    what the fit returns, and the fit must still run when the background is not flat."""
    from mnist_desktop.core import preprocess as pp

    for i in range(40):
        for w, h in ((280, 280), (300, 260), (197, 311)):
            # the ink map as _clean_ink_8bit fits it (ink high), on a flat background
            img = Image.fromarray(mnist_test.images[i]).resize((w, h), Image.BILINEAR)
            small = np.asarray(img.convert("F").resize(pp._coarse_size(h, w), Image.BOX),
                               dtype=np.float64) / 255.0
            z = small.ravel()
            fitted = pp._fitted_surface(small, h, w, z <= np.percentile(z, 60))
            quick = pp._background_surface(small, h, w)
            assert np.ndim(quick) == 0 and np.float32(quick) == np.float32(fitted)
    # an unevenly lit page (a gradient) still gets its fitted surface
    yy, xx = np.mgrid[0:32, 0:32]
    shaded = 0.2 + 0.3 * xx / 31.0
    surface = pp._background_surface(shaded, 280, 280)
    assert np.ndim(surface) == 2 and surface.shape == (280, 280)


def test_unsupported_input_is_refused_by_name_and_lists_are_arrays():
    with pytest.raises(TypeError, match="cannot classify a dict"):
        preprocess({"strokes": []})
    square = [[0] * 28 for _ in range(28)]
    for r in range(8, 20):
        square[r][12:16] = [255] * 4
    out = preprocess(square)
    assert out.shape == (28, 28) and out.max() > 0.5
