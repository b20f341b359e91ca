"""Number mode in the main window: three digits drawn in a row read as a number, with
boxes over the canvas, a probability bar set per digit, hand corrections, and the mode
remembered in the settings."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint
from PySide6.QtGui import QContextMenuEvent, QImage
from PySide6.QtWidgets import QApplication, QToolButton

from test_ui_helpers import DIGITS, RESULT_TIMEOUT_MS, draw_stroke

from test_ui_helpers import make_window, settings_store, shared_worker, user_data  # noqa: F401  (fixtures)

pytestmark = pytest.mark.gui


def draw_small(canvas, digit: str, x0: float, scale: float = 0.3, y0: float = 100.0):
    """``digit``'s strokes shrunk to ``scale`` and moved so that its box starts at x0."""
    strokes = DIGITS[digit]
    left = min(x for s in strokes for x, _ in s)
    top = min(y for s in strokes for _, y in s)
    for s in strokes:
        draw_stroke(canvas, [(x0 + (x - left) * scale, y0 + (y - top) * scale) for x, y in s])


def settle(qtbot, window, action, timeout=RESULT_TIMEOUT_MS):
    with qtbot.waitSignal(window.live.settled, timeout=timeout) as blocker:
        action()
    return blocker.args[0]


def draw_number(window, digits="170"):
    for k, d in enumerate(digits):
        draw_small(window.canvas, d, 20 + 85 * k)


def test_three_drawn_digits_read_as_a_number(make_window, shared_worker, qtbot, settings_store):
    w = make_window(worker=shared_worker)
    assert not w.act_number.isChecked() and not w.digits.isVisible()
    button = w.toolbar.widgetForAction(w.act_number)
    assert isinstance(button, QToolButton) and button.accessibleName() == "Read a number"
    w.act_number.trigger()
    assert w.live.number_mode and w.digits.isVisible()
    settle(qtbot, w, lambda: draw_number(w, "170"))
    view = w.live.number_view
    assert view is not None and view.reading.text == "170"
    assert w.display.label.text() == "170"
    assert "sure of all 3" in w.display.confidence.text()
    # boxes over the canvas, left to right, one per digit, around its ink
    rects = w.canvas.segment_rects()
    assert len(rects) == 3 and [r.left() for r in rects] == sorted(r.left() for r in rects)
    for k, (r, d) in enumerate(zip(rects, "170")):
        xs = [x for st in DIGITS[d] for x, _ in st]
        centre = 20 + 85 * k + 0.3 * (max(xs) - min(xs)) / 2
        assert r.adjusted(-3, -3, 3, 3).contains(w.canvas.to_widget(centre, 130))
    # a probability bar set per digit: the strip's buttons switch the chart
    assert [b.text().split()[0] for b in w.digits.buttons] == ["1", "7", "0"]
    w.digits.buttons[0].click()
    assert w.live.number_view.selected == 0
    assert w.chart.highlighted_label == "1" and "digit 1 of 3" in w.chart_caption.text()
    first_input = QImage(w.preview.image)
    w.digits.buttons[2].click()
    assert w.chart.highlighted_label == "0"
    assert w.preview.image != first_input   # the model input of the digit shown
    # the mode is remembered
    assert settings_store.load().settings.number_mode is True


def test_merge_and_split_by_hand(make_window, shared_worker, qtbot):
    w = make_window(worker=shared_worker)
    w.set_number_mode(True)
    settle(qtbot, w, lambda: draw_number(w, "17"))
    assert w.live.number_view.reading.text == "17"
    w.digits.buttons[0].click()
    settle(qtbot, w, lambda: w.digits.merge.click())
    view = w.live.number_view
    assert len(view.reading.digits) == 1 and len(w.canvas.segment_rects()) == 1
    # split again at the gap, from the canvas's context menu on the box
    gap_x = w.canvas.to_widget(20 + 0.3 * 0 + 50, 130)   # between the 1 (x~20) and the 7 (x~105)

    def split_at_gap():
        from PySide6.QtWidgets import QMenu
        menus = []

        def pick():
            menu = QApplication.activePopupWidget()
            if isinstance(menu, QMenu):
                menus.append(menu)
                split = next(a for a in menu.actions() if a.text().startswith("Split"))
                menu.close()
                split.trigger()
        from PySide6.QtCore import QTimer
        QTimer.singleShot(50, pick)
        pos = gap_x.toPoint()
        QApplication.sendEvent(w.canvas, QContextMenuEvent(QContextMenuEvent.Reason.Mouse, pos,
                                                           w.canvas.mapToGlobal(pos)))
    settle(qtbot, w, split_at_gap)
    assert w.live.number_view.reading.text == "17"
    assert w.live.number_view.edited and w.digits.reset.isVisibleTo(w)
    # a new stroke drops the corrections
    settle(qtbot, w, lambda: draw_small(w.canvas, "0", 190))
    assert w.live.number_view.reading.text == "170" and not w.live.number_view.edited


def test_number_mode_off_reads_one_digit(make_window, shared_worker, qtbot):
    w = make_window(worker=shared_worker)
    w.set_number_mode(True)
    settle(qtbot, w, lambda: draw_number(w, "17"))
    settle(qtbot, w, lambda: w.act_number.trigger())
    assert w.live.number_view is None and w.canvas.segment_rects() == []
    assert len(w.display.label.text()) == 1 and w.chart_caption.text() == "Probabilities"
    assert QPoint  # noqa


def test_number_mode_is_restored_from_the_settings(make_window, shared_worker, settings_store):
    from dataclasses import replace
    settings_store.save(replace(settings_store.load().settings, number_mode=True))
    w = make_window(worker=shared_worker)
    assert w.act_number.isChecked() and w.live.number_mode and w.digits.isVisible()
    assert w.display.confidence.text() == "Write a number"
    w.act_number.trigger()
    assert settings_store.load().settings.number_mode is False
