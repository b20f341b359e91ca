"""Chart, preview and prediction display on their own, fed core Predictions."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPointF

from mnist_desktop.core.predictor import Prediction
from mnist_desktop.ui.chart import UNCERTAIN_COLOR, ProbabilityChart, format_percent
from mnist_desktop.ui.prediction_view import PredictionDisplay
from mnist_desktop.ui.preview import ModelInputPreview

pytestmark = pytest.mark.gui

EMNIST_BALANCED = list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt")


def prediction(labels, top, p_top=0.8, uncertain=False):
    probs = np.full(len(labels), (1 - p_top) / (len(labels) - 1), np.float32)
    probs[labels.index(top)] = p_top
    return Prediction(labels, probs, uncertain, p_top, np.zeros((28, 28), np.float32))


@pytest.fixture
def chart(qtbot):
    c = ProbabilityChart([str(i) for i in range(10)])
    qtbot.addWidget(c)
    c.resize(330, 280)
    c.show()
    return c


@pytest.mark.parametrize("labels, columns", [([str(i) for i in range(10)], 1),
                                             ([chr(65 + i) for i in range(26)], 2),
                                             (EMNIST_BALANCED, 3)])
def test_chart_gives_every_label_a_readable_row(chart, labels, columns):
    chart.set_prediction(prediction(labels, labels[-1]))
    assert chart.labels == labels and chart.highlighted_label == labels[-1]
    assert chart.uses_rows()
    ncols, nrows, col_w, row_h, top, *_ = chart._row_geometry()
    assert ncols == columns and row_h >= 15  # rows at least as tall as a line of text
    # Hovering each row finds its label (tooltips read it out).
    for i in (0, len(labels) // 2, len(labels) - 1):
        col, row = divmod(i, nrows)
        pos = QPointF(col * (col_w + 14) + col_w / 2, top + (row + 0.5) * row_h)
        assert chart.index_at(pos) == i
    assert labels[-1] in chart.accessibleDescription()


def test_chart_falls_back_to_columns_when_narrow(chart):
    chart.resize(200, 120)
    chart.set_prediction(prediction(EMNIST_BALANCED, "K"))
    assert not chart.uses_rows()
    r = chart.bar_rect(EMNIST_BALANCED.index("K"))
    assert chart.index_at(r.center()) == EMNIST_BALANCED.index("K")


def test_chart_blank_and_uncertain(chart):
    chart.set_prediction(None)
    assert chart.probabilities is None and chart.highlighted_label is None
    assert "no prediction" in chart.accessibleDescription()
    chart.set_prediction(prediction([str(i) for i in range(10)], "3", 0.4, uncertain=True))
    assert chart.uncertain and chart.highlighted_label == "3"
    assert chart.accessibleDescription().startswith("Uncertain")
    # The highlighted bar is drawn in the warning colour.
    img = chart.grab().toImage()
    ncols, nrows, col_w, row_h, top, label_w, pct_w, bar_h, gap = chart._row_geometry()
    y = round((top + 3.5 * row_h) * img.devicePixelRatio())
    x = round((label_w + 4) * img.devicePixelRatio())
    assert img.pixelColor(x, y).name() == UNCERTAIN_COLOR.name()


def test_format_percent():
    assert format_percent(0.98613, precise=True) == "98.6%"
    assert format_percent(0.98613) == "99%"
    assert format_percent(0.001) == "<1%"
    assert format_percent(0.0) == "0%"


def test_preview_is_nearest_neighbour(qtbot):
    preview = ModelInputPreview()
    qtbot.addWidget(preview)
    preview.show()
    image = np.zeros((28, 28), np.float32)
    image[10, 10] = 1.0
    preview.set_image(image)
    assert preview.image.width() == 28 and preview.image.pixelColor(10, 10).lightness() == 255
    shot = preview.grab().toImage()
    dpr = shot.devicePixelRatio()
    scale = (min(preview.width(), preview.height()) - 2) // 28
    x0 = (preview.width() - 28 * scale) / 2 + 10 * scale
    y0 = (preview.height() - 28 * scale) / 2 + 10 * scale
    # One model pixel is a crisp square: white across, black right beside it.
    inside = [shot.pixelColor(round((x0 + dx) * dpr), round((y0 + scale / 2) * dpr)).lightness()
              for dx in (0.5, scale / 2, scale - 0.5)]
    outside = shot.pixelColor(round((x0 + scale + 0.5) * dpr), round((y0 + scale / 2) * dpr)).lightness()
    assert min(inside) == 255 and outside == 0
    preview.set_image(None)
    assert preview.image is None


def test_display_states_and_uncertain(qtbot):
    d = PredictionDisplay()
    qtbot.addWidget(d)
    d.show()
    assert d.confidence.text() == "Draw a digit" and d.label.text() == ""
    d.set_prediction(prediction([str(i) for i in range(10)], "5", 0.9))
    assert d.label.text() == "5" and d.confidence.text() == "90.0% confident"
    assert d.status.text() == "" and d.alternatives.text().startswith("Also: ")
    d.set_prediction(prediction([str(i) for i in range(10)], "5", 0.35, uncertain=True))
    assert d.status.text() == "Uncertain: may not be a digit" and "not sure" in d.confidence.text()
    assert "uncertain" in d.accessibleDescription()
    height = d.height()
    d.set_state("empty", "no ink found in photo.jpg")
    assert d.prediction is None and d.status.text() == "no ink found in photo.jpg"
    assert d.height() == height  # texts change without relayouting the window
