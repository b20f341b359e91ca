"""Why did it say that? Occlusion saliency, nearest training examples, and the GUI
explanation computed in the inference process."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication

from mnist_desktop.core import saliency
from mnist_desktop.core.preprocess import Drawing
from test_ui_helpers import DIGITS, RESULT_TIMEOUT_MS, draw_digit

from test_ui_helpers import make_window, settings_store, shared_worker, user_data  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def predictor():
    from mnist_desktop.service.models import ModelChoice, load_predictor
    return load_predictor(ModelChoice(None, "cpu", purpose="live")).predictor


@pytest.fixture(scope="module")
def drawn(predictor):
    """Predictions of the test digits drawn as strokes (no test-set image involved)."""
    return {d: predictor.predict(Drawing.from_lists(strokes)) for d, strokes in DIGITS.items()}


class _CountingPredictor:
    """A predictor wrapper that records the batches it was given."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []
        self.labels = inner.labels

    def logits(self, images):
        self.batches.append(np.asarray(images).shape)
        return self.inner.logits(images)


@pytest.mark.parametrize("digit", sorted(DIGITS))
def test_occluding_the_ink_of_a_clear_digit_lowers_its_score(predictor, drawn, digit):
    pred = drawn[digit]
    assert pred.label == digit
    m = saliency.occlusion_map(predictor, pred.image, pred.index)
    assert m.shape == (28, 28) and m.dtype == np.float32 and np.isfinite(m).all()
    ink = pred.image > 0.3
    assert m[ink].sum() > 0
    # Hiding a patch of blank paper changes nothing: the far corners carry no evidence.
    assert np.abs(m[:3, :3]).max() == 0 and np.abs(m[-3:, -3:]).max() == 0
    # The pixel whose patch hurts most is on or beside the ink.
    y, x = np.unravel_index(np.argmax(m), m.shape)
    assert pred.image[max(0, y - 3):y + 4, max(0, x - 3):x + 4].max() > 0.3


def test_the_map_is_one_batch_of_occluded_inputs(predictor, drawn):
    counting = _CountingPredictor(predictor)
    saliency.occlusion_map(counting, drawn["7"].image, drawn["7"].index)
    assert counting.batches == [(1 + 13 * 13, 28, 28)]   # the input itself and 169 occlusions


def test_hiding_ink_matches_the_map(predictor, drawn):
    """The map's strongest square really is the ink the answer rests on."""
    pred = drawn["4"]
    m = saliency.occlusion_map(predictor, pred.image, pred.index)
    y, x = np.unravel_index(np.argmax(m), m.shape)
    hidden = pred.image.copy()
    hidden[max(0, y - 2):y + 2, max(0, x - 2):x + 2] = 0
    p_hidden = predictor.probabilities(hidden[None])[0][0, pred.index]
    assert p_hidden < pred.confidence


def test_contrast_map_differs_and_is_antisymmetric(predictor, drawn):
    pred = drawn["7"]
    other = int(np.argsort(-pred.probs)[1])
    plain = saliency.occlusion_map(predictor, pred.image, pred.index)
    why_not = saliency.occlusion_map(predictor, pred.image, pred.index, contrast=other)
    reverse = saliency.occlusion_map(predictor, pred.image, other, contrast=pred.index)
    assert why_not.shape == (28, 28)
    assert np.abs(why_not - plain).max() > 1e-3
    # "Why 7 and not 1" is exactly "why 1 and not 7" with the sign flipped (logit margins).
    np.testing.assert_allclose(why_not, -reverse, atol=1e-4)
    # The same class as contrast means no contrast.
    np.testing.assert_allclose(saliency.occlusion_map(predictor, pred.image, pred.index,
                                                      contrast=pred.index), plain)


def test_bad_arguments_are_refused(predictor):
    with pytest.raises(ValueError, match="28x28"):
        saliency.occlusion_map(predictor, np.zeros((10, 10)), 0)
    with pytest.raises(ValueError, match="class 12"):
        saliency.occlusion_map(predictor, np.zeros((28, 28)), 12)


def test_nearest_examples_are_of_the_class_and_sorted(drawn):
    pred = drawn["0"]
    found = saliency.nearest_examples(pred.image, 0, k=5)
    index = saliency.neighbour_index()
    assert len(found) == 5 and all(n.label == 0 for n in found)
    assert all(index.labels[n.index] == 0 for n in found)
    sims = [n.similarity for n in found]
    assert sims == sorted(sims, reverse=True) and sims[0] > 0.8
    assert found[0].image.shape == (28, 28) and found[0].image.dtype == np.uint8
    np.testing.assert_array_equal(found[0].image, index.images[found[0].index])
    # A training image finds itself first.
    img = index.images[123].astype(np.float32) / 255
    best = saliency.nearest_examples(img, int(index.labels[123]), k=1)[0]
    assert best.index == 123 and best.similarity == pytest.approx(1.0, abs=1e-5)
    # The index is built once per process.
    assert saliency.neighbour_index() is index


def test_explain_bundles_map_and_neighbours(predictor, drawn):
    pred = drawn["1"]
    e = saliency.explain(predictor, pred.image, pred.index, contrast=7, k=3)
    assert e.target == 1 and e.contrast == 7 and e.saliency.shape == (28, 28)
    assert [n.label for n in e.neighbours] == [1, 1, 1]


# --------------------------------------------------------------------------- the GUI

def test_explanation_is_computed_in_the_inference_process(shared_worker, drawn, qtbot, monkeypatch):
    """The worker answers through its child process: the GUI process never runs the map."""
    calls = []
    monkeypatch.setattr(saliency, "occlusion_map", lambda *a, **k: calls.append(threading.current_thread()))
    pred = drawn["7"]
    with qtbot.waitSignal(shared_worker.explanationReady, timeout=RESULT_TIMEOUT_MS) as blocker:
        rid = shared_worker.explain(pred.image, pred.index, None, 4)
    result = blocker.args[0]
    assert result.request_id == rid and result.status == "ok", result.message
    assert calls == []   # the patched function in this process was never called
    e = result.explanation
    assert e.saliency.shape == (28, 28) and e.saliency[pred.image > 0.3].sum() > 0
    assert len(e.neighbours) == 4 and all(n.label == 7 for n in e.neighbours)


def test_bad_explain_request_gets_a_message(shared_worker, qtbot):
    with qtbot.waitSignal(shared_worker.explanationReady, timeout=RESULT_TIMEOUT_MS) as blocker:
        shared_worker.explain(np.zeros((28, 28), np.float32), 42)
    assert blocker.args[0].status == "error" and "42" in blocker.args[0].message


def click_chart(chart, index):
    if chart.uses_rows():
        ncols, nrows, col_w, row_h, top, label_w, *_ = chart._row_geometry()
        pos = QPointF(label_w + 20, top + (index + 0.5) * row_h)
    else:
        pos = chart.bar_rect(index).center()
    for kind in (QEvent.Type.MouseButtonPress, QEvent.Type.MouseButtonRelease):
        QApplication.sendEvent(chart, QMouseEvent(kind, pos, chart.mapToGlobal(pos), Qt.MouseButton.LeftButton,
                                                  Qt.MouseButton.LeftButton if kind == QEvent.Type.MouseButtonPress
                                                  else Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier))


@pytest.mark.gui
@pytest.mark.slow
def test_show_why_overlays_the_drawn_digit_and_why_not(make_window, shared_worker, qtbot, settings_store):
    window = make_window(shared_worker)
    assert not window.explanation.isVisible() and window.canvas.overlay is None
    action = window.act_show_why
    assert action.text().replace("&", "") == "Show Why" and action.isCheckable()
    assert window.explanation.map.accessibleName() == "Explanation overlay"
    action.trigger()
    assert window.explanation.isVisible() and settings_store.load().settings.show_why
    with qtbot.waitSignal(window.explainer.explanationChanged, timeout=RESULT_TIMEOUT_MS,
                          check_params_cb=lambda e: e is not None):
        draw_digit(window.canvas, "7")
    qtbot.waitUntil(lambda: window.live.is_settled and window.explainer.explanation is not None
                    and window.explainer.prediction is not None
                    and window.explainer.explanation.target == window.explainer.prediction.index,
                    timeout=RESULT_TIMEOUT_MS)
    e = window.explainer.explanation
    assert window.live.prediction.label == "7" and e.contrast is None
    assert window.explanation.title.text() == "Why 7?"
    assert window.explanation.map.overlay is not None
    img, rect = window.canvas.overlay
    # The 28x28 field mapped over the strokes: the 7 (x 70..210, y 60..240) lies inside it.
    assert rect.left() < 70 and rect.right() > 210 and rect.top() < 60 and rect.bottom() > 240
    assert img.width() == img.height() and img.hasAlphaChannel()
    assert len(window.explanation.neighbours.captions) == 6
    assert all(c.startswith("#") for c in window.explanation.neighbours.captions)

    # Why not 1? Click the 1 in the chart.
    with qtbot.waitSignal(window.explainer.explanationChanged, timeout=RESULT_TIMEOUT_MS,
                          check_params_cb=lambda x: x is not None and x.contrast == 1):
        click_chart(window.chart, 1)
    assert window.chart.marked_index == 1
    assert window.explanation.title.text() == "Why 7 and not 1?"
    assert np.abs(window.explainer.explanation.saliency - e.saliency).max() > 1e-3
    # The same class again: back to the plain map.
    with qtbot.waitSignal(window.explainer.explanationChanged, timeout=RESULT_TIMEOUT_MS,
                          check_params_cb=lambda x: x is not None and x.contrast is None):
        click_chart(window.chart, 1)
    assert window.chart.marked_index == -1

    # Off: hidden, and the canvas overlay goes.
    action.trigger()
    assert not window.explanation.isVisible() and window.canvas.overlay is None
    assert not settings_store.load().settings.show_why


@pytest.mark.gui
def test_show_why_is_remembered(make_window, shared_worker, settings_store):
    s = settings_store.load().settings
    s.show_why = True
    settings_store.save(s)
    window = make_window(shared_worker)
    assert window.act_show_why.isChecked() and window.explanation.isVisible()
    assert window.explainer.enabled
