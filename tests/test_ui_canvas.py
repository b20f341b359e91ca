"""Canvas behaviour with synthesized mouse and tablet input (no inference needed)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PySide6.QtCore import QEvent, Qt

from mnist_desktop.core.preprocess import Drawing, preprocess
from mnist_desktop.ui.canvas import DOC_SIZE, DrawingCanvas, erase_strokes
from mnist_desktop.ui.images import ImageSource
from test_ui_helpers import densify, draw_stroke, mouse, tablet, tablet_stroke

pytestmark = pytest.mark.gui


@pytest.fixture
def canvas(qtbot):
    c = DrawingCanvas(pen_width=14)
    qtbot.addWidget(c)
    c.resize(320, 320)
    c.show()
    return c


def ink_rows(canvas, x_doc: float) -> int:
    """How many pixels tall the ink is in the rendered canvas at document x."""
    img = canvas.grab().toImage()
    x = round(canvas.to_widget(x_doc, 0).x() * img.devicePixelRatio())
    ink = canvas._ink_color().lightness()
    return sum(1 for y in range(img.height())
               if abs(img.pixelColor(x, y).lightness() - ink) < 60)


def test_mouse_stroke_is_kept_as_vectors_and_emitted_while_drawing(canvas, qtbot, monkeypatch):
    import mnist_desktop.ui.canvas as canvas_module
    monkeypatch.setattr(canvas_module, "EMIT_INTERVAL_S", 0.0)  # every move emits
    emitted = []
    canvas.inputChanged.connect(lambda d, t: emitted.append(d))
    pts = densify([(60, 140), (220, 140)])
    mouse(canvas, QEvent.Type.MouseButtonPress, *pts[0], button=Qt.MouseButton.LeftButton)
    for x, y in pts[1:]:
        mouse(canvas, QEvent.Type.MouseMove, x, y)
    before_release = list(emitted)
    mouse(canvas, QEvent.Type.MouseButtonRelease, *pts[-1], buttons=Qt.MouseButton.NoButton,
          button=Qt.MouseButton.LeftButton)
    # Snapshots arrive while the button is still down, each a growing core Drawing.
    assert len(before_release) == len(pts)
    assert all(isinstance(d, Drawing) for d in before_release)
    sizes = [len(d.strokes[0].points) for d in before_release]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]
    # The committed stroke holds every point in document units with mouse pressure 0.5.
    (stroke,) = canvas.strokes
    assert len(stroke.points) == len(pts)
    assert stroke.points[0][:2] == pytest.approx((60, 140), abs=0.5)
    assert stroke.points[-1][:2] == pytest.approx((220, 140), abs=0.5)
    assert {p[2] for p in stroke.points} == {0.5}
    # The last emission is the final drawing, and it preprocesses to real ink.
    final = emitted[-1]
    assert len(final.strokes[0].points) == len(pts)
    assert preprocess(final).max() > 0.9


def test_throttle_coalesces_snapshots_but_delivers_the_last(canvas, qtbot):
    emitted = []
    canvas.inputChanged.connect(lambda d, t: emitted.append(d))
    pts = densify([(40, 40), (240, 240)], step=1.0)
    mouse(canvas, QEvent.Type.MouseButtonPress, *pts[0], button=Qt.MouseButton.LeftButton)
    for x, y in pts[1:]:
        mouse(canvas, QEvent.Type.MouseMove, x, y)  # all within one throttle interval
    assert len(emitted) < len(pts) / 4
    with qtbot.waitSignal(canvas.inputChanged, timeout=1000) as blocker:
        pass  # the trailing emit fires from the event loop
    assert len(blocker.args[0].strokes[0].points) == len(pts)


def test_tablet_pressure_changes_width(canvas, qtbot):
    pts = [(30 + i * 11, 140) for i in range(21)]
    pressures = [0.05 + 0.95 * i / 20 for i in range(21)]
    assert tablet(canvas, QEvent.Type.TabletPress, *pts[0], pressures[0])  # accepted: no mouse synthesis
    for (x, y), p in zip(pts[1:], pressures[1:]):
        tablet(canvas, QEvent.Type.TabletMove, x, y, p)
    tablet(canvas, QEvent.Type.TabletRelease, *pts[-1], 0.0)
    (stroke,) = canvas.strokes
    assert [p[2] for p in stroke.points] == pytest.approx(pressures)
    thin, thick = ink_rows(canvas, 50), ink_rows(canvas, 230)
    assert thin >= 1 and thick > 3 * thin
    # The pressure reaches the model too: the core renders pressure-modulated width.
    core = stroke.core
    assert core.points[:, 2].min() < 0.1 and core.points[:, 2].max() > 0.99


def test_stylus_eraser_end_erases_part_of_a_stroke(canvas, qtbot):
    draw_stroke(canvas, [(40, 140), (240, 140)])
    assert len(canvas.strokes) == 1
    tablet_stroke(canvas, [(140, 60), (140, 220)], [0.6, 0.6], eraser=True)
    left, right = sorted(canvas.strokes, key=lambda s: s.points[0][0])
    assert max(p[0] for p in left.points) < 140 - canvas.eraser_radius()
    assert min(p[0] for p in right.points) > 140 + canvas.eraser_radius()
    assert canvas.undo_stack.undoText() == "Erase"
    canvas.undo()
    assert len(canvas.strokes) == 1


def test_eraser_tool_removes_a_whole_small_stroke(canvas):
    draw_stroke(canvas, [(60, 60), (66, 62)])
    draw_stroke(canvas, [(200, 200), (240, 240)])
    canvas.set_tool("eraser")
    draw_stroke(canvas, [(50, 61), (75, 61)])
    (remaining,) = canvas.strokes
    assert remaining.points[0][:2] == pytest.approx((200, 200))


def test_erase_strokes_cuts_long_segments_without_points_inside():
    from mnist_desktop.ui.canvas import CanvasStroke
    s = CanvasStroke(((0.0, 100.0, 0.5), (280.0, 100.0, 0.5)), 10.0)
    out, changed = erase_strokes((s,), (140, 0), (140, 280), 10.0)
    assert changed and len(out) == 2
    out, changed = erase_strokes((s,), (140, 200), (140, 280), 10.0)
    assert not changed and out == (s,)


def test_undo_redo_and_clear(canvas, qtbot):
    draw_stroke(canvas, [(50, 50), (200, 50)])
    draw_stroke(canvas, [(50, 200), (200, 200)])
    assert len(canvas.strokes) == 2
    with qtbot.waitSignal(canvas.inputChanged, timeout=1000) as blocker:
        canvas.undo()
    assert len(canvas.strokes) == 1 and len(blocker.args[0].strokes) == 1
    canvas.undo()
    assert canvas.strokes == () and canvas.current_input().is_empty()
    canvas.redo()
    canvas.redo()
    assert len(canvas.strokes) == 2
    canvas.clear()
    assert canvas.state.is_blank
    canvas.undo()
    assert len(canvas.strokes) == 2
    # A new stroke after undo drops the redo branch.
    canvas.undo()
    draw_stroke(canvas, [(100, 100), (120, 240)])
    assert not canvas.undo_stack.canRedo()


def test_drawing_over_an_image_starts_a_drawing_and_undo_restores_the_image(canvas):
    source = ImageSource(name="x.png", path="/nonexistent/x.png")
    canvas.show_image(source)
    assert canvas.current_input() is source
    draw_stroke(canvas, [(50, 50), (200, 200)])
    assert canvas.state.image is None and len(canvas.strokes) == 1
    canvas.undo()
    assert canvas.current_input() is source


def test_strokes_scale_with_the_widget(canvas):
    draw_stroke(canvas, [(140, 40), (140, 240)])
    before = canvas.strokes
    canvas.resize(600, 500)
    # Vectors in document units are unchanged; rendering follows the new size.
    assert canvas.strokes == before
    rect = canvas.sheet_rect()
    assert rect.width() == pytest.approx(min(600, 500) - 20)
    assert canvas.to_doc(canvas.to_widget(140, 240)) == pytest.approx((140, 240))
    assert ink_rows(canvas, 140) > 0.6 * rect.height() * 200 / DOC_SIZE


def test_pen_width_applies_to_new_strokes_only(canvas):
    draw_stroke(canvas, [(40, 60), (240, 60)])
    canvas.set_pen_width(30)
    draw_stroke(canvas, [(40, 200), (240, 200)])
    widths = [s.width for s in canvas.strokes]
    assert widths == [14, 30]
    thin = ink_rows_at(canvas, 140, 60)
    thick = ink_rows_at(canvas, 140, 200)
    assert thick > 1.8 * thin


def ink_rows_at(canvas, x_doc, y_doc, span=40):
    img = canvas.grab().toImage()
    dpr = img.devicePixelRatio()
    x = round(canvas.to_widget(x_doc, 0).x() * dpr)
    y0 = round(canvas.to_widget(0, y_doc - span).y() * dpr)
    y1 = round(canvas.to_widget(0, y_doc + span).y() * dpr)
    ink = canvas._ink_color().lightness()
    return sum(1 for y in range(y0, y1) if abs(img.pixelColor(x, y).lightness() - ink) < 60)


def test_snapshot_matches_the_core_drawing_type(canvas):
    draw_stroke(canvas, [(140, 40), (140, 240)])
    d = canvas.drawing()
    assert d.canvas_size == (int(DOC_SIZE), int(DOC_SIZE))
    assert np.asarray(d.strokes[0].points).shape[1] == 3


# --------------------------------------------------------------------------- motion compression

def test_the_app_asks_qt_for_every_motion_event(qapp):
    """Qt merges queued motion events when the GUI thread falls behind (X11): off."""
    from PySide6.QtCore import QCoreApplication

    from mnist_desktop.ui.app import create_application

    A = Qt.ApplicationAttribute
    QCoreApplication.setAttribute(A.AA_CompressHighFrequencyEvents, True)   # as xcb leaves it
    try:
        assert create_application() is qapp
        assert not QCoreApplication.testAttribute(A.AA_CompressHighFrequencyEvents)
        assert not QCoreApplication.testAttribute(A.AA_CompressTabletEvents)
    finally:
        QCoreApplication.setAttribute(A.AA_CompressHighFrequencyEvents, False)


def test_motion_queued_while_the_gui_thread_is_busy_reaches_the_canvas_point_by_point(canvas, qtbot):
    """140 motion events queued during a 100 ms stall: every one becomes a stroke point."""
    import time

    from PySide6.QtCore import QCoreApplication, QTimer
    from PySide6.QtGui import QMouseEvent

    def post(kind, x, y, button, buttons):
        pos = canvas.to_widget(x, y)
        QCoreApplication.postEvent(canvas, QMouseEvent(kind, pos, canvas.mapToGlobal(pos), button, buttons,
                                                        Qt.KeyboardModifier.NoModifier))

    L, N = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    n = 140
    path = [(140 + 90 * np.cos(2 * np.pi * i / n), 140 + 90 * np.sin(2 * np.pi * i / n)) for i in range(n + 1)]
    QTimer.singleShot(0, lambda: time.sleep(0.1))   # the GUI thread is blocked while input queues
    post(QEvent.Type.MouseButtonPress, *path[0], L, L)
    for x, y in path[1:]:
        post(QEvent.Type.MouseMove, x, y, N, L)
    post(QEvent.Type.MouseButtonRelease, *path[-1], L, N)
    qtbot.waitUntil(lambda: len(canvas.strokes) == 1, timeout=5000)
    pts = canvas.strokes[0].points
    assert len(pts) >= n + 1   # press + every move (+ release)
    assert np.allclose([p[:2] for p in pts[:n + 1]], path, atol=0.6)


_X11_MOTION_CHILD = r"""
import json, sys, threading, time
from PySide6.QtCore import QCoreApplication, QObject, Qt, QTimer, Signal
from mnist_desktop.ui.app import create_application
from mnist_desktop.ui.canvas import DrawingCanvas

app = create_application(["motion-check"])
canvas = DrawingCanvas()
canvas.setWindowFlag(Qt.WindowType.FramelessWindowHint)
canvas.setGeometry(0, 0, 600, 600)
canvas.show()
busy = QTimer()
busy.timeout.connect(lambda: time.sleep(0.1))   # a GUI thread that keeps falling behind
busy.start(150)

class Relay(QObject):
    done = Signal()

def report():
    A = Qt.ApplicationAttribute.AA_CompressHighFrequencyEvents
    points = len(canvas.strokes[0].points) if canvas.strokes else 0
    print(json.dumps({"compressing": QCoreApplication.testAttribute(A), "points": points}), flush=True)
    app.quit()

relay = Relay()
relay.done.connect(report, Qt.ConnectionType.QueuedConnection)
QTimer.singleShot(800, lambda: print("ready", flush=True))
threading.Thread(target=lambda: (sys.stdin.readline(), relay.done.emit()), daemon=True).start()
app.exec()
"""


@pytest.mark.slow
def test_x11_delivers_every_motion_event_while_the_gui_thread_is_busy(tmp_path):
    """The real effect, on an X server (Xvfb) with real pointer motion (xdotool); with
    Qt's default the same drag arrives as a few dozen points."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    if not (shutil.which("Xvfb") and shutil.which("xdotool")):
        pytest.skip("needs Xvfb and xdotool")
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "800x700x24", "-nolisten", "tcp"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    child = None
    try:
        with os.fdopen(read_fd) as f:
            display = ":" + f.readline().strip()
        repo = Path(__file__).resolve().parents[1]
        env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))
        child = subprocess.Popen([sys.executable, "-c", _X11_MOTION_CHILD], env=env, text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = child.stdout.readline()
        if line.strip() != "ready":
            pytest.skip(f"no xcb window: {child.stderr.read()[-500:]}")
        n = 140
        moves = []
        for i in range(1, n + 1):
            moves += ["mousemove", str(100 + i * 3), str(300 + (i % 7) * 10)]
        xdo = ["xdotool", "mousemove", "100", "300", "mousedown", "1", *moves, "mouseup", "1"]
        subprocess.run(xdo, env=env, check=True, timeout=60)
        time.sleep(0.5)   # what is queued arrives once the GUI thread catches up
        child.stdin.write("report\n")
        child.stdin.flush()
        result = json.loads(child.stdout.readline())
    finally:
        if child is not None:
            child.kill()
            child.wait()
        xvfb.kill()
        xvfb.wait()
    assert result["compressing"] is False
    assert result["points"] >= n + 1
