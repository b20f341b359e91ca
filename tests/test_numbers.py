"""Reading numbers: segmentation of strokes and images into digits (core.numbers)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnist_desktop.core.numbers import (
    label_components, merge_segments, read_number, read_segments, segment, split_segment,
)
from mnist_desktop.core.preprocess import Drawing, EmptyInputError
from mnist_desktop.core.recognition import recognize

REPO_5K = __import__("pathlib").Path(__file__).resolve().parents[1] / "resources" / "data" / "mnist-5k"


@pytest.fixture(scope="module")
def predictor():
    from pathlib import Path
    from mnist_desktop.core.onnx_predictor import OnnxPredictor
    repo = Path(__file__).resolve().parents[1]
    onnx, model = repo / "resources/models/default.onnx", repo / "resources/models/default.safetensors"
    if not onnx.exists() or not model.exists():
        pytest.skip("bundled model missing")
    return OnnxPredictor(onnx, source=model)


@pytest.fixture(scope="module")
def digits():
    from mnist_desktop.core.data import load_idx_folder
    return load_idx_folder(REPO_5K, "train-5k")


def _number_image(digits, picks, gap: int) -> np.ndarray:
    """MNIST digits side by side, cropped to their ink columns, ``gap`` pixels apart
    (negative: overlapping)."""
    crops = []
    for i in picks:
        im = digits.images[i]
        cols = np.flatnonzero(im.max(axis=0) > 0)
        crops.append(im[:, cols[0]:cols[-1] + 1].astype(np.float32) / 255)
    width = sum(c.shape[1] for c in crops) + gap * (len(crops) - 1) + 16
    canvas = np.zeros((28, width), np.float32)
    x = 8
    for c in crops:
        region = canvas[:, x:x + c.shape[1]]
        np.maximum(region, c, out=region)
        x += c.shape[1] + gap
    return (canvas * 255).astype(np.uint8)


def _picks(digits, rng, n):
    return [int(i) for i in rng.integers(0, len(digits.images), n)]


def test_components_are_8_connected():
    mask = np.zeros((6, 8), bool)
    mask[0, 0] = mask[1, 1] = True         # diagonal neighbours: one component
    mask[4:6, 5:8] = True
    labels, n = label_components(mask)
    assert n == 2
    assert labels[0, 0] == labels[1, 1] != labels[5, 7]


def test_separated_digits_read_as_a_number(predictor, digits, rng):
    right = 0
    for _ in range(20):
        picks = _picks(digits, rng, 4)
        reading = read_number(predictor, _number_image(digits, picks, gap=6))
        right += reading.text == "".join(digits.labels_text[i] if hasattr(digits, "labels_text") else str(digits.labels[i]) for i in picks)
        assert len(reading.digits) == 4
        xs = [d.box.x0 for d in reading.digits]
        assert xs == sorted(xs)
    assert right >= 18


def test_close_digits_read_as_a_number(predictor, digits, rng):
    right = sum(read_number(predictor, _number_image(digits, p, gap=2)).text == "".join(str(digits.labels[i]) for i in p)
                for p in (_picks(digits, rng, 3) for _ in range(20)))
    assert right >= 17


def test_touching_digits_are_split(predictor, digits, rng):
    right = sum(read_number(predictor, _number_image(digits, p, gap=0)).text == "".join(str(digits.labels[i]) for i in p)
                for p in (_picks(digits, rng, 2) for _ in range(20)))
    assert right >= 15


def test_single_digit_reads_as_without_number_mode(predictor, digits):
    for i in (0, 700, 2600, 4999):
        image = digits.images[i]
        alone = recognize(predictor, image).single
        reading = read_number(predictor, image)
        assert len(reading.digits) == 1
        np.testing.assert_array_equal(reading.digits[0].prediction.probs, alone.probs)


def test_reading_is_json_ready(predictor, digits):
    reading = read_number(predictor, _number_image(digits, [0, 600], gap=5))
    d = json.loads(json.dumps(reading.to_dict()))
    assert d["text"] == reading.text and len(d["digits"]) == 2
    assert abs(d["confidence"] - np.prod([x["confidence"] for x in d["digits"]])) < 1e-6
    assert set(d["digits"][0]["probabilities"]) == set(predictor.labels)
    assert {"box", "prediction", "uncertain"} <= set(d["digits"][0])


def test_blank_input_has_nothing_to_read(predictor):
    with pytest.raises(EmptyInputError):
        read_number(predictor, np.zeros((28, 80), np.uint8))
    with pytest.raises(EmptyInputError):
        read_number(predictor, Drawing([], (400, 200)))


def _stroke_one(x):
    return [(x, 20), (x + 2, 60), (x + 3, 100)]


def _stroke_zero(x):
    t = np.linspace(0, 2 * np.pi, 40)
    return list(zip(x + 20 + 18 * np.cos(t), 60 + 38 * np.sin(t)))


def test_strokes_group_by_position(predictor):
    # "10" then a four drawn in two strokes (the strokes overlap horizontally: one digit)
    four = [[(150, 20), (140, 70), (185, 70)], [(175, 30), (175, 110)]]
    drawing = Drawing.from_lists([_stroke_one(20), _stroke_zero(60)] + four, (400, 140))
    seg = segment(drawing, predictor.options, predictor)
    assert len(seg.segments) == 3
    assert len(seg.segments[2].source.strokes) == 2
    reading = read_segments(predictor, seg)
    assert reading.text == "104"


def test_one_stroke_across_two_digits_is_split(predictor):
    # "00" written without lifting the pen: one stroke, wider than tall
    t = np.linspace(0, 2 * np.pi, 60)
    a = list(zip(40 + 18 * np.cos(t), 60 + 26 * np.sin(t)))
    b = list(zip(80 + 18 * np.cos(t + np.pi), 60 + 26 * np.sin(t + np.pi)))
    drawing = Drawing.from_lists([a + b], (300, 140))
    reading = read_number(predictor, drawing)
    assert reading.text == "00"


def test_merge_and_split_by_hand(predictor, digits):
    image = _number_image(digits, [0, 600, 1200], gap=6)
    seg = segment(image, predictor.options, predictor)
    assert len(seg.segments) == 3
    merged = merge_segments(seg, 0)
    assert len(merged.segments) == 2
    assert merged.segments[0].box.x0 == seg.segments[0].box.x0
    assert merged.segments[0].box.x1 == seg.segments[1].box.x1
    back = split_segment(merged, 0, (seg.segments[0].box.x1 + seg.segments[1].box.x0) / 2)
    assert [s.box for s in back.segments] == [s.box for s in seg.segments]
    assert read_segments(predictor, back).text == read_segments(predictor, seg).text
    # a cut through blank space beside the ink changes nothing
    assert len(split_segment(seg, 0, seg.segments[0].box.x0 - 3).segments) == 3


# --------------------------------------------------------------------------- recognition-driven segmentation

def _synth_numbers(digits, style, n, count, seed):
    from training.number_synth import number_image
    rng = np.random.default_rng([seed, n])
    return [number_image(digits.images, digits.labels, rng, n, style) for _ in range(count)]


@pytest.mark.parametrize("style, least", [("separated", 18), ("close", 17), ("touching", 9)])
def test_synthetic_numbers_are_read(predictor, digits, style, least):
    """Numbers made by the generator from training digits (the development set): the
    digits read left to right, and at least the expected share exactly."""
    numbers = _synth_numbers(digits, style, 3, 20, seed=5)
    readings = [read_number(predictor, img) for img, _ in numbers]
    right = sum(r.text == text for r, (_, text) in zip(readings, numbers))
    assert right >= least
    for r in readings:
        xs = [d.box.x0 for d in r.digits]
        assert xs == sorted(xs)


def test_touching_pair_is_cut_through_the_ink(predictor, digits):
    """Two digits whose ink touches form one component; the cut between them goes
    through it, and each side reads as its digit."""
    from mnist_desktop.core.numbers import label_components
    pairs = right = 0
    for img, text in _synth_numbers(digits, "touching", 2, 16, seed=8):
        ink = img if img[0, 0] < 128 else 255 - img
        if label_components(ink >= 0.3 * 255)[1] != 1:
            continue                     # not one component: not the case under test
        pairs += 1
        reading = read_number(predictor, img)
        right += reading.text == text
        if reading.text == text:
            a, b = reading.digits
            assert a.box.x0 < b.box.x0 and a.box.x1 <= b.box.x1
    assert pairs >= 8 and right >= 0.6 * pairs


def test_broken_digits_are_merged_back(predictor, digits):
    """A digit whose ink is in two pieces (a gap cut through it) still reads as one
    digit, beside its neighbours."""
    picks = [int(np.flatnonzero(digits.labels == d)[3]) for d in (1, 5, 7)]
    image = _number_image(digits, picks, gap=6)
    whole = read_number(predictor, image)
    # cut the 5 (the middle digit) in two with a blank column through its middle
    cols = np.flatnonzero(image.max(axis=0) > 0)
    runs = np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1)
    five = runs[1]
    broken = image.copy()
    broken[:, five[len(five) // 2]] = 0
    from mnist_desktop.core.numbers import label_components
    assert label_components(broken >= 0.3 * 255)[1] >= 4     # the 5 is now in pieces
    reading = read_number(predictor, broken)
    assert reading.text == whole.text == "157"


def test_four_drawn_in_two_strokes_is_one_digit(predictor):
    four = [[(50, 20), (40, 70), (85, 70)], [(75, 30), (75, 110)]]
    five = [[(130, 25), (122, 62), (150, 58), (162, 80), (150, 108), (122, 104)], [(130, 25), (165, 25)]]
    drawing = Drawing.from_lists([_stroke_one(10)] + four + five, (300, 140))
    reading = read_number(predictor, drawing)
    assert reading.text == "145"
    assert len(reading.digits[1].prediction.probs) == len(predictor.labels)


def test_one_predictor_call_per_number(predictor, digits):
    """Every candidate digit goes to the model in one batch: one call per number."""
    calls = []
    real = predictor.predict_images

    def counting(images, keep_images=False):
        calls.append(len(images))
        return real(images, keep_images)

    predictor.predict_images = counting
    try:
        img, _ = _synth_numbers(digits, "touching", 4, 1, seed=3)[0]
        read_number(predictor, img)
    finally:
        del predictor.predict_images
    assert len(calls) == 1 and calls[0] >= 4
