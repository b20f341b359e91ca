"""Application entry point: the window first, torch and the model in the background.

Startup order matters for the 0.5 s goal: only Qt and the light UI modules are imported
before the window is shown; the inference process (which imports torch) is started from
the event loop once the window is up, and numpy/the core preprocessing are imported in a
background thread meanwhile (:mod:`mnist_desktop.ui.warmup`).
"""

from __future__ import annotations

import os
import sys
from typing import Callable

from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt, QTimer
from PySide6.QtWidgets import QApplication

from mnist_desktop.ui import warmup

APP_NAME = "mnist-desktop"


def create_application(argv: list[str] | None = None) -> QApplication:
    """The QApplication (reused when one exists), named so QSettings and the desktop
    recognise the app, and delivering every motion event (:func:`keep_every_motion_event`)."""
    app = QApplication.instance()
    if app is None:
        QApplication.setApplicationName(APP_NAME)
        QApplication.setOrganizationName(APP_NAME)
        QApplication.setApplicationDisplayName("MNIST Desktop")
        keep_every_motion_event()
        keep_image_work_on_gui_thread()
        app = QApplication(sys.argv if argv is None else argv)
    keep_every_motion_event()
    return app


def keep_image_work_on_gui_thread() -> None:
    """Make Qt do its image work (conversions, scaling, blending of the backing store) on
    the GUI thread itself instead of splitting each operation over its GUI thread pool.

    With the pool, every larger paint (the training curves, the canvas) hands strips of
    the image to pooled threads and waits for them; with a training run or a batch busy
    on the other cores, those threads queue behind it, and the GUI thread's paint waits
    on them. Measured on 2 cores with a run in progress (``ui_bench --with-training``):
    the GUI thread was switched out ~5,000 times a second and its slowest dispatch
    stretch took 13.6 ms wall for 6.5 ms of its own CPU; without the pool ~60 times a
    second and 8.3 ms. The app's images are small (a canvas, charts), so the pool buys
    little even on an idle machine. Qt reads ``QT_NO_GUI_THREADPOOL`` once, before its
    first image operation; a value the user set is kept.
    """
    os.environ.setdefault("QT_NO_GUI_THREADPOOL", "1")


def keep_every_motion_event() -> None:
    """Turn off Qt's compression of mouse, touch and tablet motion events.

    When the GUI thread falls behind, Qt merges queued motion events into the last one
    (on X11 by default; on Windows for touch). For a drawing canvas every point is part
    of the stroke: a busy moment must deliver the points late, not drop them (a circle
    drawn during a batch run arrived as 8 of 140 points, a hexagon).

    Call it before the QApplication is created *and* again after: the X11 (xcb)
    platform plugin switches ``AA_CompressHighFrequencyEvents`` on while the
    application is being constructed (measured with PySide6 6.11), and reads it for
    every event, so clearing it afterwards is what takes effect there.
    """
    QCoreApplication.setAttribute(Qt.ApplicationAttribute.AA_CompressHighFrequencyEvents, False)
    QCoreApplication.setAttribute(Qt.ApplicationAttribute.AA_CompressTabletEvents, False)


def run_app(model: str | None = None, settings_path: str | None = None,
            on_window: Callable | None = None) -> int:
    """Start the desktop app and return its exit code.

    Parameters
    ----------
    model
        A model file for this session instead of the saved setting.
    settings_path
        The settings INI file (default: the per-user one).
    on_window
        Called with the shown :class:`MainWindow` before the event loop runs (used by
        the startup benchmark).
    """
    from mnist_desktop.ui.app_log import configure_logging
    from mnist_desktop.ui.main_window import MainWindow
    from mnist_desktop.ui.settings import SettingsStore, default_settings_path

    app = create_application()
    app_log = configure_logging(defer_file=True)   # the file opens once the window is up
    store = SettingsStore(settings_path or default_settings_path())
    window = MainWindow(store, model_override=model)
    window.show()
    # Once the window has painted and the event loop waits for input, start the inference
    # process (torch loads there) and the background imports; earlier, they would compete
    # with the first paint for the CPU and the GIL.
    after_first_paint(window.canvas, lambda: (window.start(), warmup.start(), app_log.open_file()))
    if on_window is not None:
        on_window(window)
    code = app.exec()
    warmup.join()
    app_log.close()
    return code


class _FirstPaint(QObject):
    """Event filter: on the watched widget's first paint, wait for the loop to go idle."""

    def __init__(self, widget, callback):
        super().__init__(widget)
        self._callback = callback
        widget.installEventFilter(self)

    def eventFilter(self, obj, ev) -> bool:
        if ev.type() == QEvent.Type.Paint and self._callback is not None:
            callback, self._callback = self._callback, None
            obj.removeEventFilter(self)
            when_idle(callback)
        return False


def after_first_paint(widget, callback: Callable[[], object]) -> None:
    """Call ``callback`` once ``widget`` has painted and the event loop is idle."""
    _FirstPaint(widget, callback)


def when_idle(callback: Callable[[], object], fallback_ms: int = 500) -> None:
    """Call ``callback`` once, the first time the event loop is about to wait for input
    (or after ``fallback_ms`` at the latest)."""
    from PySide6.QtCore import QAbstractEventDispatcher

    done = []

    def fire() -> None:
        if done:
            return
        done.append(True)
        try:
            dispatcher.aboutToBlock.disconnect(fire)
        except (RuntimeError, TypeError):
            pass
        callback()

    dispatcher = QAbstractEventDispatcher.instance()
    dispatcher.aboutToBlock.connect(fire)
    QTimer.singleShot(fallback_ms, fire)
