"""The vectorized small-image path gives exactly what preprocess gives, image by image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mnist_desktop.core.batch import decode_chunk, decode_one
from mnist_desktop.core.preprocess import EmptyInputError, PreprocessOptions, preprocess, preprocess_small_batch


def _scalar(img, opts):
    try:
        return preprocess(img, opts)
    except EmptyInputError as e:
        return e


def _assert_same(batch, scalar):
    assert len(batch) == len(scalar)
    for b, s in zip(batch, scalar):
        if isinstance(s, Exception) or isinstance(b, Exception):
            assert type(b) is type(s) and str(b) == str(s)
        else:
            assert b.dtype == np.float32 and np.array_equal(b, s)


@pytest.mark.parametrize("opts", [PreprocessOptions(), PreprocessOptions(blur_sigma=0.5)])
def test_small_batch_equals_preprocess(mnist_test, opts):
    rng = np.random.default_rng(0)
    g = mnist_test.images[:500].astype(np.float32) / 255
    variants = [
        g, 1 - g,                                       # both polarities
        0.3 + 0.5 * g,                                  # low contrast on grey
        np.clip(g + rng.normal(0, 0.05, g.shape), 0, 1),  # noise
        np.roll(g[:200], 9, axis=2),                    # off-centre (clipped at the border)
        np.zeros((3, 28, 28)), np.full((2, 28, 28), 0.7),  # empty, uniform
        g[:200, ::2, ::2],                              # 14x14: resampled, not snapped
        np.pad(g[:100], ((0, 0), (4, 8), (2, 0))),      # 40x30
    ]
    for arr in variants:
        arr = arr.astype(np.float32)
        _assert_same(preprocess_small_batch(arr, opts), [_scalar(a, opts) for a in arr])


def test_small_batch_refuses_large_images():
    with pytest.raises(ValueError):
        preprocess_small_batch(np.zeros((1, 100, 100), np.float32))
    assert preprocess_small_batch(np.zeros((0, 28, 28), np.float32)) == []


def test_decode_chunk_matches_decode_one(mnist_test, tmp_path):
    paths = []
    for i in range(40):
        img = Image.fromarray(mnist_test.images[i] if i % 4 else 255 - mnist_test.images[i])
        if i % 5 == 0:
            img = img.resize((56, 56))                  # small, other size
        if i % 7 == 0:
            img = img.convert("RGB")
        paths.append(str(tmp_path / f"{i}.png"))
        img.save(paths[-1])
    Image.fromarray(mnist_test.images[0]).resize((300, 300)).save(tmp_path / "big.png")
    la = Image.new("LA", (28, 28), (0, 0))              # alpha ink: the one-by-one path
    la.putpixel((14, 14), (0, 255))
    la.save(tmp_path / "alpha.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.new("L", (28, 28), 255).save(tmp_path / "blank.png")
    paths += [str(tmp_path / n) for n in ("big.png", "alpha.png", "broken.png", "blank.png", "missing.png")]
    opts = PreprocessOptions()
    images, errors = decode_chunk(paths, opts)
    singles = [decode_one(p, opts) for p in paths]
    assert errors == [e for _, e in singles]
    ok = [img for img, e in singles if e is None]
    assert len(images) == len(ok) == len(paths) - 3
    for a, b in zip(images, ok):
        assert np.array_equal(a, b)


def _fp32_and_bf16(predictor, images):
    from mnist_desktop.core.batch.inference import _Inference

    fp32 = _Inference(predictor, 1)
    bf16 = _Inference(predictor, 1, "bf16")
    p32, _ = fp32(images)
    p16, _ = bf16(images)
    fp32.close(), bf16.close()
    return p32, p16, bf16


def test_bf16_inference_stays_close_to_fp32(mnist_test, default_model, tmp_path, native_bf16):
    from mnist_desktop.core.batch import classify_files
    from mnist_desktop.core.batch.inference import _Inference
    from mnist_desktop.core.torch_predictor import TorchPredictor

    if not native_bf16:
        pytest.skip("this CPU has no native bfloat16 (bf16 requests run fp32: the test below)")
    predictor = TorchPredictor.from_file(default_model, "cpu")
    images = mnist_test.images[:512].astype(np.float32) / 255
    p32, p16, bf16 = _fp32_and_bf16(predictor, images)
    assert bf16.precision == "bf16" and not bf16.note
    # bf16 keeps 8 significant bits; kernels differ in where they round (AVX512-BF16, AMX).
    # Rounding inputs, weights and every layer's output to bf16 around fp32 arithmetic moves
    # these probabilities by 0.011 at most (emulated on an AMD EPYC, which has no native
    # bfloat16; 1 of these 512 answers changed): 0.05 leaves room for kernels that round
    # more often. Only the 2 images of these 512 whose fp32 top two are within 2 * 0.05 can
    # change their answer.
    assert np.abs(p16 - p32).max() < 0.05
    assert (p16.argmax(1) != p32.argmax(1)).sum() <= 2
    with pytest.raises(ValueError, match="precision"):
        _Inference(predictor, 1, "fp8")
    for i in range(20):
        Image.fromarray(mnist_test.images[i]).save(tmp_path / f"{i}.png")
    files = sorted(str(p) for p in tmp_path.glob("*.png"))
    a = [r.prediction for r in classify_files(files, predictor, workers=0, precision="bf16")]
    b = [r.prediction for r in classify_files(files, predictor, workers=0)]
    # The first 20 test images' fp32 top two are at least 0.7 apart: no bf16 kernel within
    # the bound above changes them.
    assert len(a) == 20 and sum(x != y for x, y in zip(a, b)) <= 1


def test_bf16_request_runs_fp32_without_native_bfloat16(mnist_test, default_model, tmp_path, native_bf16):
    from mnist_desktop.core.batch import classify_files
    from mnist_desktop.core.batch.inference import _Inference
    from mnist_desktop.core.torch_predictor import TorchPredictor

    if native_bf16:
        pytest.skip("this CPU computes bfloat16 natively (the test above)")
    predictor = TorchPredictor.from_file(default_model, "cpu")
    images = mnist_test.images[:512].astype(np.float32) / 255
    p32, p16, bf16 = _fp32_and_bf16(predictor, images)
    assert bf16.precision == "fp32" and "bfloat16" in bf16.note
    assert np.array_equal(p16, p32)
    with pytest.raises(ValueError, match="precision"):
        _Inference(predictor, 1, "fp8")
    for i in range(20):
        Image.fromarray(mnist_test.images[i]).save(tmp_path / f"{i}.png")
    files = sorted(str(p) for p in tmp_path.glob("*.png"))
    a = [r.prediction for r in classify_files(files, predictor, workers=0, precision="bf16")]
    assert a == [r.prediction for r in classify_files(files, predictor, workers=0)]


def test_inference_precision_says_when_bf16_is_not_used(default_model):
    from mnist_desktop.core.batch import inference_precision
    from mnist_desktop.core.onnx_predictor import OnnxPredictor

    onnx = OnnxPredictor(default_model.with_suffix(".onnx"), source=default_model)
    assert inference_precision(onnx, "fp32") == ("fp32", "")
    used, note = inference_precision(onnx, "bf16")
    assert used == "fp32" and "torch backend" in note
    with pytest.raises(ValueError, match="precision"):
        inference_precision(onnx, "fp8")


def _float_path(img, opts):
    """preprocess's general path (float gray image), bypassing the 8-bit table path."""
    from mnist_desktop.core.preprocess import _finish, clean_ink, gray_to_ink, image_to_gray
    try:
        gray, alpha_ink = image_to_gray(img)
        return _finish(clean_ink(gray_to_ink(gray, alpha_ink), opts.min_contrast, opts.noise_floor), opts)
    except EmptyInputError as e:
        return e


@pytest.mark.parametrize("opts", [PreprocessOptions(), PreprocessOptions(blur_sigma=0.5, box=18)])
def test_large_8bit_path_equals_float_path(mnist_test, opts):
    """Large 8-bit images go through lookup tables (_clean_ink_8bit); the result must be
    the float path's, bit for bit, on every kind of image that path serves - and images it
    does not serve (uneven light) must fall back, not come out different."""
    from mnist_desktop.core.preprocess import _gray_8bit

    rng = np.random.default_rng(1)
    images, served = [], 0
    for i in range(60):
        size = int(rng.integers(70, 500))
        a = np.asarray(Image.fromarray(mnist_test.images[i]).resize((size, size), Image.BILINEAR), np.float64)
        kind = i % 6
        if kind == 1:
            a = 255 - a                                            # dark ink on white
        elif kind == 2:
            a = np.clip(0.5 * a + 60 + rng.normal(0, 8, a.shape), 0, 255)  # grey, noisy
        elif kind == 3:
            a = np.clip(255 - 0.7 * a - 60 * np.linspace(0, 1, size)[:, None], 0, 255)  # shaded
        elif kind == 4:
            a = np.pad(255 - a, ((size // 2, 0), (0, size)), constant_values=255)  # small, off-centre
        elif kind == 5:
            a = np.full_like(a, 200) if i % 12 == 5 else rng.uniform(0, 255, a.shape)  # blank, noise
        img = Image.fromarray(a.astype(np.uint8))
        images += [img, img.convert("RGB"), img.convert("RGB").quantize(64)]
    def close(a, b):
        if isinstance(a, Exception) or isinstance(b, Exception):
            return type(a) is type(b) and str(a) == str(b)
        # Sums over the cropped map round differently in the last bit (~1e-7); a rounding
        # flip in the sub-pixel centre moves values by ~1e-3 at most.
        return a.dtype == np.float32 and np.abs(a - b).max() < 0.01

    diffs = []
    for img in images:
        served += _gray_8bit(img) is not None
        a, b = _scalar(img, opts), _float_path(img, opts)
        assert close(a, b)
        if not isinstance(a, Exception):
            diffs.append(float(np.abs(a - b).max()))
    assert served == len(images) and np.median(diffs) < 1e-6
    # Arrays take the same route as images.
    assert close(_scalar(np.asarray(images[0]), opts), _float_path(images[0], opts))


def _png(arr, **save):
    import io
    b = io.BytesIO()
    Image.fromarray(arr).save(b, "png", **save)
    return b.getvalue()


def test_gray_png_fast_path_reads_like_pillow(mnist_test):
    """Plain 8-bit grayscale PNGs are decoded by libspng; the pixels are Pillow's, bit for
    bit, small or large, and anything the fast path does not serve goes to Pillow (None)."""
    import io

    from mnist_desktop.core.batch import decoding
    from mnist_desktop.core.preprocess import load_image

    if decoding._spng is None:
        pytest.skip("pyspng is not installed (optional: Pillow decodes everything)")
    for i in range(50):
        data = _png(mnist_test.images[i], compress_level=i % 10)
        fast = decoding._gray_png(data)
        slow = load_image(io.BytesIO(data))
        assert slow.mode == "L" and fast.dtype == np.uint8 and np.array_equal(fast, np.asarray(slow))
    big = np.asarray(Image.fromarray(mnist_test.images[1]).resize((300, 280), Image.BILINEAR))
    assert np.array_equal(decoding._gray_png(_png(big)), big)
    im = Image.fromarray(big)
    b = io.BytesIO()
    im.save(b, "png", dpi=(300, 300))   # a pHYs chunk, as scanners write: still plain
    assert np.array_equal(decoding._gray_png(b.getvalue()), big)
    img = mnist_test.images[0]
    # Transparency (alpha ink), EXIF (orientation, also as ImageMagick's text chunk),
    # colour, 16 bits, interlacing, very large images (Pillow's bomb limits), other formats
    # and broken files are all Pillow's.
    im = Image.fromarray(img)
    b = io.BytesIO()
    im.save(b, "png", transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 6
    from PIL import PngImagePlugin
    text = PngImagePlugin.PngInfo()
    text.add_text("Raw profile type exif", "exif 0")
    others = {
        "tRNS": b.getvalue(),
        "eXIf": _png(img, exif=exif.tobytes()),
        "tEXt": _png(img, pnginfo=text),
        "RGB": _png(np.stack([img] * 3, -1)),
        "16-bit": _png(img.astype(np.uint16) * 257),
        "interlaced": _png(img)[:28] + b"\x01" + _png(img)[29:],   # IHDR says Adam7
        "2001x2000": _png(np.zeros((2000, 2001), np.uint8)),
        "truncated": _png(img)[:60],
        "not a PNG": b"GIF89a" + bytes(40),
        "empty": b"",
    }
    for name, data in others.items():
        assert decoding._gray_png(data) is None, name


def test_fast_and_pillow_decoding_give_the_same_results(tmp_path, mnist_test, monkeypatch):
    from mnist_desktop.core.batch import decoding

    paths = []
    for i in range(40):
        p = tmp_path / f"{i}.png"
        p.write_bytes(_png(mnist_test.images[i] if i % 2 else 255 - mnist_test.images[i]))
        paths.append(str(p))
    for i, size in enumerate([(280, 280), (100, 90), (64, 64), (65, 40)]):   # scans and odd sizes
        p = tmp_path / f"large{i}.png"
        img = Image.fromarray(255 - mnist_test.images[50 + i]).resize(size, Image.BILINEAR)
        p.write_bytes(_png(np.asarray(img)))
        paths.append(str(p))
    (tmp_path / "bad.png").write_bytes(_png(mnist_test.images[0])[:70])
    paths.append(str(tmp_path / "bad.png"))
    fast = decode_chunk(paths, PreprocessOptions())
    monkeypatch.setattr(decoding, "_spng", None)
    slow = decode_chunk(paths, PreprocessOptions())
    assert np.array_equal(fast[0], slow[0]) and fast[1] == slow[1]
    assert fast[1][-1] and "truncated" in fast[1][-1]
