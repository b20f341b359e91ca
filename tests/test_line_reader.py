"""The CTC line reader: the recipe (training.line_reader) and the app's reader
(mnist_desktop.core.line_reader): lines, decoding, pinned files, reading numbers."""

from pathlib import Path

import numpy as np
import pytest

from mnist_desktop.core import line_reader as cl
from mnist_desktop.core import numbers as nb
from mnist_desktop.core.paths import resources_dir
from training import line_reader as lr


def test_greedy_decode_collapses_repeats_and_drops_blanks():
    assert lr.greedy_decode([10, 1, 1, 10, 1, 7, 7, 10]) == "117"
    assert lr.greedy_decode([10, 10]) == ""


def test_line_image_is_the_same_for_both_polarities():
    img = np.zeros((40, 90), np.uint8)
    img[10:30, 10:14] = 255
    img[10:30, 50:70] = 255
    a, b = lr.line_image(img), lr.line_image(255 - img)
    assert a.shape[0] == lr.HEIGHT and a.max() > 0.9
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow
def test_training_lowers_the_loss_and_the_file_round_trips(tmp_path):
    images, labels = lr.development_digits(validation=False)
    lines, widths, texts = lr.make_lines(images, labels, 128, seed=1, lengths=(1, 3))
    model, losses = lr.train(lines, widths, texts, steps=40, batch_size=32, log=None)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    path = tmp_path / "reader.safetensors"
    lr.save(model, path, {"steps": 40})
    again, meta = lr.load(path)
    assert meta == {"steps": 40}
    assert lr.read_lines(again, lines[:8], widths[:8]) == lr.read_lines(model, lines[:8], widths[:8])


# --------------------------------------------------------------------------- the app's reader



def test_decode_gives_each_digit_its_peak_and_its_place_in_the_ink():
    line = cl.Line(np.zeros((cl.HEIGHT, 40), np.float32), x0=100.0, step=2.0)
    logp = np.full((10, 11), -30.0)
    best = [10, 3, 3, 10, 10, 7, 10, 10, 7, 10]      # "377"
    for t, k in enumerate(best):
        logp[t, k] = 0.0
    logp[2, 3] = -0.01                              # the 3 peaks at frame 1
    logp[2, 5] = -5.0
    r = cl.decode(logp, line)
    assert r.text == "377"
    assert r.probs.shape == (3, 10) and np.allclose(r.probs.sum(axis=1), 1.0)
    assert np.argmax(r.probs, axis=1).tolist() == [3, 7, 7]
    # frame t's centre: line column 4t + 2, less the 4-px margin, 2 ink columns each
    assert r.centres == (100.0 + (4 * 1 + 2 - 4) * 2, 100.0 + (4 * 5 + 2 - 4) * 2, 100.0 + (4 * 8 + 2 - 4) * 2)


def test_line_from_ink_crops_scales_and_places_the_ink():
    ink = np.zeros((60, 200), np.float32)
    ink[10:50, 30:150] = 1.0
    line = cl.line_from_ink(ink)
    assert line.pixels.shape == (cl.HEIGHT, 60 + 2 * cl.MARGIN)
    assert line.x0 == 30 and line.step == 2.0
    assert cl.line_from_ink(np.zeros((5, 5), np.float32)) is None


def _shipped_copy(tmp_path: Path) -> Path:
    models = resources_dir() / "models"
    for name in (cl.MODEL_FILE, cl.MANIFEST_FILE):
        (tmp_path / name).write_bytes((models / name).read_bytes())
    return tmp_path


def test_the_reader_ships_and_its_file_matches_the_pinned_sha256():
    models = resources_dir() / "models"
    import json
    pinned = json.loads((models / cl.MANIFEST_FILE).read_text())["onnx_sha256"]
    assert cl.file_sha256(models / cl.MODEL_FILE) == pinned
    assert isinstance(cl.default_line_reader(), cl.LineReader)


def test_a_tampered_or_missing_reader_is_not_run(tmp_path, caplog):
    d = _shipped_copy(tmp_path)
    assert cl.load_shipped(d) is not None
    onnx = d / cl.MODEL_FILE
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    assert cl.load_shipped(d) is None
    assert "does not match" in caplog.text
    (d / cl.MANIFEST_FILE).write_text("{not json")
    assert cl.load_shipped(d) is None
    assert cl.load_shipped(tmp_path / "nowhere") is None


def test_a_corrupt_reader_with_a_matching_pin_is_not_run(tmp_path):
    import json
    (tmp_path / cl.MODEL_FILE).write_bytes(b"not an onnx graph")
    (tmp_path / cl.MANIFEST_FILE).write_text(json.dumps({"onnx_sha256": cl.file_sha256(tmp_path / cl.MODEL_FILE)}))
    assert cl.load_shipped(tmp_path) is None


@pytest.fixture(scope="module")
def default_predictor():
    from mnist_desktop.core.onnx_predictor import OnnxPredictor
    models = resources_dir() / "models"
    return OnnxPredictor(models / "default.onnx", source=models / "default.safetensors")


def _touching(count, n, seed=0):
    from training.number_synth import number_image
    images, labels = lr.development_digits(validation=True)
    rng = np.random.default_rng([seed, n, 1])
    return [number_image(images, labels, rng, n, "touching") for _ in range(count)]


def test_the_shipped_reader_reads_touching_numbers_of_held_out_digits():
    reader = cl.default_line_reader()
    pairs = _touching(60, 3)
    right = 0
    for img, text in pairs:
        ink, _ = nb.ink_map(img, nb.PreprocessOptions())
        right += reader.read_ink(ink).text == text
    # the shipped reader reads ~95% of these (fp32: the same on every CPU up to rounding)
    assert right / len(pairs) >= 0.8


def test_read_number_with_the_reader_beats_segmentation_alone_on_touching_digits(default_predictor):
    pairs = _touching(40, 4, seed=3)
    alone = nb.SegmentationConfig(line_reader=False)
    with_reader = sum(nb.read_number(default_predictor, img).text == t for img, t in pairs)
    without = sum(nb.read_number(default_predictor, img, config=alone).text == t for img, t in pairs)
    assert with_reader >= without + 4
    assert with_reader / len(pairs) >= 0.75


def test_the_reader_keeps_boxes_left_to_right_and_one_per_digit(default_predictor):
    img, text = _touching(1, 4, seed=5)[0]
    reading = nb.read_number(default_predictor, img)
    xs = [d.box.x0 for d in reading.digits]
    assert xs == sorted(xs)
    assert all(d.prediction.probs.shape == (10,) for d in reading.digits)


def test_the_grouping_takes_the_readers_digit_count():
    def cand(i, j, p):
        probs = np.full(10, (1 - p) / 9, np.float32)
        probs[1] = p
        pred = nb.Prediction(nb.DIGIT_LABELS, probs, False, p)
        seg = nb.Segment((i, 0, j, 1), np.zeros((2, 2), np.float32))
        return nb._Candidate(i, j, seg, 0.5 * (j - i), 1.0, 0.0, pred)

    cands = [cand(0, 1, 0.6), cand(1, 2, 0.6), cand(0, 2, 0.99)]
    cfg = nb.SegmentationConfig()
    assert [(c.i, c.j) for c in nb._best_grouping(cands, 2, np.zeros(3), cfg)] == [(0, 2)]
    assert [(c.i, c.j) for c in nb._best_grouping_of(cands, 2, np.zeros(3), cfg, 2)] == [(0, 1), (1, 2)]
    assert nb._best_grouping_of(cands, 2, np.zeros(3), cfg, 3) is None
