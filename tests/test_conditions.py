"""Digits under realistic image conditions are read, texture is refused, and flags say
which kind they are (issue: read every digit a person can read)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mnist_desktop.core.data import load_idx_folder
from mnist_desktop.core.paths import resources_dir
from mnist_desktop.core.preprocess import (TEXTURE_MESSAGE, EmptyInputError, PreprocessOptions, load_image, preprocess,
                                           preprocess_small_batch)
from training import conditions as C


@pytest.fixture(scope="module")
def held_out_digits():
    """Three digits of each class from the default model's validation split of the
    bundled 5k subset (never trained on; never the test set)."""
    from training.data import validation_split

    data = load_idx_folder(resources_dir() / "data" / "mnist-5k", "train-5k")
    _, val = validation_split(data.labels, 0.1, 0)
    pick = np.concatenate([val[data.labels[val] == d][:3] for d in range(10)])
    return [C.ink_map_from_mnist(data.images[i]) for i in pick], data.labels[pick]


@pytest.fixture(scope="module")
def predictor(default_model):
    from mnist_desktop.core.onnx_predictor import OnnxPredictor

    return OnnxPredictor(default_model.with_suffix(".onnx"), source=default_model)


def _condition(name):
    return next(c for c in C.CONDITIONS if c.name == name)


@pytest.mark.parametrize("name, at_least", [("tight crop, 4 edges", 28), ("thick marker 55-70%", 22),
                                            ("low-res 8x8", 15), ("ruled paper", 28), ("margin 0%", 28)])
def test_condition_is_read_not_refused(tmp_path, held_out_digits, predictor, name, at_least):
    inks, labels = held_out_digits
    cond = _condition(name)
    right = 0
    for i, (ink, label) in enumerate(zip(inks, labels)):
        data, ext, info = C.render(cond, ink, i)
        path = tmp_path / f"{i}.{ext}"
        path.write_bytes(data)
        if name.startswith("thick"):
            assert info["coverage"] >= 0.4
        prediction = predictor.predict(load_image(path))   # raises EmptyInputError if refused
        right += prediction.label == str(int(label))
    assert right >= at_least, f"{name}: {right}/{len(labels)} right"


def test_thick_marker_reaches_sixty_percent_of_the_frame(held_out_digits):
    inks, _ = held_out_digits
    cover = [C.render(_condition("thick marker 55-70%"), ink, i)[2]["coverage"] for i, ink in enumerate(inks)]
    assert np.median(cover) >= 0.55


def test_tight_crop_touches_every_edge(held_out_digits):
    ink = held_out_digits[0][5]
    data, ext, _ = C.render(_condition("tight crop, 4 edges"), ink, 5)
    import io
    g = 255 - np.asarray(Image.open(io.BytesIO(data)).convert("L"), np.int32)
    for edge in (g[0], g[-1], g[:, 0], g[:, -1]):
        assert edge.max() > 40   # anti-aliased ink reaches the edge


def _textures():
    rng = np.random.default_rng(3)
    grain = np.asarray(Image.fromarray(rng.normal(0, 1, (80, 80)).astype(np.float32), "F")
                       .resize((240, 240), Image.BICUBIC))
    return {
        "blank": np.full((120, 120), 255, np.uint8),
        "uniform grey": np.full((50, 70), 131, np.uint8),
        "uniform noise": rng.uniform(0, 255, (200, 200)).astype(np.uint8),
        "gaussian noise 28x28": np.clip(rng.normal(128, 40, (28, 28)), 0, 255).astype(np.uint8),
        "salt 28x28": np.where(rng.random((28, 28)) < 0.1, 255, 0).astype(np.uint8),
        "speckle": np.where(rng.random((150, 150)) < 0.05, 0, 240).astype(np.uint8),
        "binary noise": np.where(rng.random((100, 100)) < 0.5, 255, 0).astype(np.uint8),
        "paper grain": np.clip(200 + 10 * grain / grain.std(), 0, 255).astype(np.uint8),
    }


@pytest.mark.parametrize("name", list(_textures()))
def test_nothing_to_classify_without_a_stroke(name):
    img = _textures()[name]
    with pytest.raises(EmptyInputError, match="nothing to classify"):
        preprocess(img)
    with pytest.raises(EmptyInputError):
        preprocess(Image.fromarray(img).convert("RGB"))


def test_texture_refused_alike_in_the_small_batch_path():
    rng = np.random.default_rng(4)
    noise = rng.uniform(0, 1, (6, 28, 28)).astype(np.float32)
    salt = (rng.random((6, 28, 28)) < 0.1).astype(np.float32)
    for arr in (noise, salt):
        for b in preprocess_small_batch(arr):
            assert isinstance(b, EmptyInputError)
    msgs = {str(b) for b in preprocess_small_batch(salt)}
    assert msgs == {TEXTURE_MESSAGE}


def _float_path(img, opts):
    from mnist_desktop.core.preprocess import _finish, clean_ink, gray_to_ink, image_to_gray
    gray, alpha = image_to_gray(img)
    return _finish(clean_ink(gray_to_ink(gray, alpha), opts.min_contrast, opts.noise_floor), opts)


@pytest.mark.parametrize("name", ["tight crop, 4 edges", "tight crop, 2 edges", "thick marker 55-70%",
                                  "margin 0%", "low-res 10x10", "pencil"])
def test_fast_path_gives_the_exact_paths_28x28(held_out_digits, name):
    """Large 8-bit images go through lookup tables; the conditions give the float path's
    image (up to float rounding in the sub-pixel centre)."""
    from mnist_desktop.core.preprocess import _gray_8bit

    opts = PreprocessOptions()
    inks, _ = held_out_digits
    cond = _condition(name)
    served = 0
    for i, ink in enumerate(inks[:12]):
        import io
        data, _, _ = C.render(cond, ink, i)
        img = Image.open(io.BytesIO(data))
        img.load()
        served += _gray_8bit(img) is not None
        a, b = preprocess(img, opts), _float_path(img, opts)
        assert np.abs(a - b).max() < 0.01
    assert served


def test_small_batch_equals_scalar_on_tight_small_crops(held_out_digits):
    inks, _ = held_out_digits
    small = []
    for i, ink in enumerate(inks):
        y0, y1, x0, x1 = C._bbox(ink, 0.1)
        crop = Image.fromarray(ink[y0:y1, x0:x1], "F").resize((24, 30), Image.BOX)
        small.append(1.0 - np.clip(np.asarray(crop, np.float32), 0, 1))   # dark ink, cut at the ink
    arr = np.stack(small)
    for b, img in zip(preprocess_small_batch(arr), arr):
        assert not isinstance(b, Exception)
        assert np.array_equal(b, preprocess(img))


# --------------------------------------------------------------------------- kinds of flag

def test_flags_say_which_kind(default_model):
    from mnist_desktop.core.checkpoint import read_meta
    from mnist_desktop.core.predictor import NOT_A_DIGIT, UNSURE, Prediction, apply_uncertainty, uncertainty_reasons

    meta = read_meta(default_model)
    rule = meta.uncertainty
    assert 0 < rule.tie_margin < 1, "the default model carries a fitted tie margin"
    logits = np.full((3, 10), -4.0)
    logits[0, 3] = 10                       # confident 3
    logits[1, 1], logits[1, 7] = 6, 6       # a 1/7 tie
    logits[2, :] = -20                      # low logits everywhere: energy says not a digit
    probs, unc, score = apply_uncertainty(logits, meta)
    reasons = uncertainty_reasons(probs, score, meta)
    assert unc.tolist() == [False, True, True]
    assert reasons == ["", UNSURE, NOT_A_DIGIT]
    tie = Prediction([str(i) for i in range(10)], probs[1], True, float(score[1]), None, UNSURE)
    assert tie.reason_text in ("unsure: 1 or 7", "unsure: 7 or 1")
    assert Prediction([str(i) for i in range(10)], probs[2], True, 0.0).reason_text == "not a digit"
    assert Prediction([str(i) for i in range(10)], probs[0], False, 0.0).reason_text == ""


def test_tie_margin_fitted_to_the_budget():
    from training.ties import fit_tie_margin, margins

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(10, 0.2), 1000)
    nad = np.zeros(1000, bool)
    nad[:3] = True
    m = fit_tie_margin(p, nad, 0.01)
    flagged = nad | (margins(p) < m)
    assert flagged.sum() == 10
    assert fit_tie_margin(p, np.ones(1000, bool), 0.01) == 0.0


def test_tie_margin_validated_and_round_trips(default_model):
    from mnist_desktop.core.checkpoint import CheckpointError, read_meta
    from mnist_desktop.core.model_meta import ModelMeta

    meta = read_meta(default_model)
    again = ModelMeta.from_json(meta.to_json())
    assert again.uncertainty.tie_margin == meta.uncertainty.tie_margin
    import json
    d = json.loads(meta.to_json())
    d["uncertainty"]["tie_margin"] = 2.0
    with pytest.raises(CheckpointError, match="tie_margin"):
        ModelMeta.from_dict(d)
    del d["uncertainty"]["tie_margin"]
    assert ModelMeta.from_dict(d).uncertainty.tie_margin == 0.0   # older models: off


@pytest.mark.gui
def test_display_says_confident_only_when_not_flagged(qtbot):
    from mnist_desktop.core.predictor import UNSURE, Prediction
    from mnist_desktop.ui.prediction_view import PredictionDisplay

    d = PredictionDisplay()
    qtbot.addWidget(d)
    labels = [str(i) for i in range(10)]
    probs = np.zeros(10, np.float32)
    probs[1], probs[7] = 0.565, 0.427
    d.set_prediction(Prediction(labels, probs, True, -5.0, None, UNSURE))
    assert "confident" not in d.confidence.text()
    assert d.status.text() == "Unsure: 1 or 7"
    assert "unsure: 1 or 7" in d.accessibleDescription()
    d.set_prediction(Prediction(labels, probs, True, -1.0))
    assert "confident" not in d.confidence.text() and "not be a digit" in d.status.text()
    d.set_prediction(Prediction(labels, probs, False, -9.0))
    assert d.confidence.text().endswith("confident") and d.status.text() == ""


def test_bold_strokes_thinned_mnist_untouched(held_out_digits):
    from mnist_desktop.core.preprocess import BOLD_WIDTH, stroke_width, thin_bold

    inks, _ = held_out_digits
    mnist = np.stack([preprocess(C._to_gray(i)) for i in inks[:10]])
    assert thin_bold(mnist) is mnist   # nothing MNIST-like is touched
    data, _, _ = C.render(_condition("thick marker 55-70%"), inks[3], 3)
    import io
    bold_in = preprocess(Image.open(io.BytesIO(data)))
    assert stroke_width(bold_in[None])[0] <= BOLD_WIDTH + 1.5


@pytest.fixture(scope="module")
def drawings_refused_before():
    """The generated drawings (evaluation seeds) that "tight crop, 4 edges" turned into
    files preprocessing refused: a 7 whose bar runs along the top edge and whose stem ends
    in a bottom corner (three ink corners), two of them, and a bold 1 covering 72% of its
    crop (the background fit swung through the ink)."""
    from training import synth

    samples = list(synth.digit_samples(448, "evaluation", seed=17))
    picked = [(i, samples[i].label, C.ink_map_from_drawing(samples[i])) for i in (161, 207, 447)]
    assert [label for _, label, _ in picked] == [1, 7, 7]
    return picked


@pytest.mark.parametrize("light_on_dark", [False, True])
def test_digits_cropped_into_three_corners_or_bold_are_read(drawings_refused_before, predictor, light_on_dark):
    import io

    cond = _condition("tight crop, 4 edges")
    for i, label, ink in drawings_refused_before:
        img = Image.open(io.BytesIO(C.render(cond, ink, i)[0])).convert("L")
        if light_on_dark:   # the same crop as a screenshot of white ink on black
            img = Image.fromarray(255 - np.asarray(img))
        x = preprocess(img)                      # raised EmptyInputError before
        assert x.max() > 0.9 and 0.01 < x.mean() < 0.5
        assert predictor.predict(img).label == str(label), (i, label, light_on_dark)
