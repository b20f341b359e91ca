"""The CTC line reader recipe (training.line_reader): lines, decoding, training, safe files."""

import numpy as np
import pytest

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
