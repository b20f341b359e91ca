"""Shared fixtures and input helpers for the UI tests (imported by the test_ui_* modules).

Settings and user data always go to ``tmp_path``; windows come from the ``make_window``
factory, which closes them (and joins the workers they own) at teardown.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QInputDevice, QMouseEvent, QPointingDevice, QTabletEvent
from PySide6.QtWidgets import QApplication

from mnist_desktop.ui.settings import SettingsStore

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
LOAD_TIMEOUT_MS = 60_000  # a fresh inference process imports torch; CI machines are slow
RESULT_TIMEOUT_MS = 20_000

# Digit shapes as polylines in canvas document units (the sheet is 280 x 280).
DIGITS = {
    "1": [[(140, 40), (140, 240)]],
    "7": [[(70, 60), (210, 60), (120, 240)]],
    "0": [[(140 + 60 * math.sin(t / 40 * 2 * math.pi), 140 - 95 * math.cos(t / 40 * 2 * math.pi))
           for t in range(41)]],
    "4": [[(170, 40), (70, 170), (210, 170)], [(170, 40), (170, 245)]],
}


# --------------------------------------------------------------------------- fixtures

@pytest.fixture
def user_data(tmp_path, monkeypatch):
    """User data (models, runs) under tmp_path, never the real profile."""
    path = tmp_path / "userdata"
    monkeypatch.setenv("MNIST_DESKTOP_DATA", str(path))
    return path


@pytest.fixture
def settings_store(tmp_path):
    return SettingsStore(tmp_path / "settings.ini")


_SHARED: dict = {}


@pytest.fixture(scope="session")
def shared_worker(qapp, request):
    """One inference process with the bundled model for the tests that only predict.

    Test modules import this fixture, which gives each module its own fixture definition;
    the module-level cache makes them all share one process.
    """
    from pytestqt.qtbot import QtBot

    from mnist_desktop.core.paths import default_model_path
    from mnist_desktop.ui.inference import InferenceWorker

    worker = _SHARED.get("worker")
    if worker is None:
        worker = _SHARED["worker"] = InferenceWorker()
        worker.start()
        with QtBot(request).waitSignal(worker.modelLoaded, timeout=LOAD_TIMEOUT_MS):
            worker.load_model(str(default_model_path()), "cpu")
    yield worker
    worker.stop()  # idempotent: the last module's teardown finds it stopped


@pytest.fixture
def make_window(qtbot, settings_store, user_data, qapp):
    """Factory: ``make_window(worker=None, model_override=None, start=True)``.

    With ``worker=None`` the window owns a fresh inference process; pass
    ``shared_worker`` to reuse the session's. The theme is reset to light afterwards.
    """
    from mnist_desktop.ui.main_window import MainWindow
    from mnist_desktop.ui.theme import apply_theme

    def factory(worker=None, model_override=None, start=True, store=None):
        window = MainWindow(store or settings_store, worker=worker, model_override=model_override)
        qtbot.addWidget(window)
        window.show()
        if start:
            window.start()
        return window

    yield factory
    apply_theme(qapp, "light")


# --------------------------------------------------------------------------- input

def mouse(canvas, kind, x, y, buttons=Qt.MouseButton.LeftButton, button=Qt.MouseButton.NoButton):
    """Send one synthesized mouse event at document coordinates (x, y)."""
    pos = canvas.to_widget(x, y)
    ev = QMouseEvent(kind, pos, canvas.mapToGlobal(pos), button, buttons, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(canvas, ev)


def densify(points, step=4.0):
    out = [points[0]]
    for a, b in zip(points, points[1:]):
        n = max(1, int(math.hypot(b[0] - a[0], b[1] - a[1]) // step))
        out += [(a[0] + (b[0] - a[0]) * i / n, a[1] + (b[1] - a[1]) * i / n) for i in range(1, n + 1)]
    return out


def draw_stroke(canvas, points, release=True):
    """Press, move along ``points`` (document units) and release, like a mouse user."""
    pts = densify(points)
    mouse(canvas, QEvent.Type.MouseButtonPress, *pts[0], button=Qt.MouseButton.LeftButton)
    for x, y in pts[1:]:
        mouse(canvas, QEvent.Type.MouseMove, x, y)
    if release:
        mouse(canvas, QEvent.Type.MouseButtonRelease, *pts[-1], buttons=Qt.MouseButton.NoButton,
              button=Qt.MouseButton.LeftButton)


def draw_digit(canvas, digit: str):
    for stroke in DIGITS[digit]:
        draw_stroke(canvas, stroke)


_DEVICES = {}


def stylus(eraser: bool = False) -> QPointingDevice:
    """A pen (or its eraser end) as Qt reports a Wacom-style tablet."""
    key = "eraser" if eraser else "pen"
    if key not in _DEVICES:
        caps = (QInputDevice.Capability.Position | QInputDevice.Capability.Pressure)
        _DEVICES[key] = QPointingDevice(
            f"test stylus {key}", 4242 + eraser, QInputDevice.DeviceType.Stylus,
            QPointingDevice.PointerType.Eraser if eraser else QPointingDevice.PointerType.Pen,
            caps, 1, 2)
    return _DEVICES[key]


def tablet(canvas, kind, x, y, pressure, eraser=False):
    """Send one synthesized tablet event; returns whether the canvas accepted it."""
    pos = canvas.to_widget(x, y)
    buttons = Qt.MouseButton.NoButton if kind == QEvent.Type.TabletRelease else Qt.MouseButton.LeftButton
    ev = QTabletEvent(kind, stylus(eraser), pos, canvas.mapToGlobal(pos), pressure, 0.0, 0.0, 0.0, 0.0, 0.0,
                      Qt.KeyboardModifier.NoModifier, Qt.MouseButton.LeftButton, buttons)
    QApplication.sendEvent(canvas, ev)
    return ev.isAccepted()


def tablet_stroke(canvas, points, pressures, eraser=False):
    tablet(canvas, QEvent.Type.TabletPress, *points[0], pressures[0], eraser)
    for (x, y), p in zip(points[1:], pressures[1:]):
        tablet(canvas, QEvent.Type.TabletMove, x, y, p, eraser)
    tablet(canvas, QEvent.Type.TabletRelease, *points[-1], 0.0, eraser)


def digit_image(digit: str, size: int = 280):
    """A PIL image of a drawn digit: black ink on white paper."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (size, size), 255)
    d = ImageDraw.Draw(img)
    s = size / 280
    for stroke in DIGITS[digit]:
        d.line([(x * s, y * s) for x, y in stroke], fill=0, width=int(24 * s), joint="curve")
    return img
