"""The windows part of ``mnist-desktop --self-test``: does every window of this
installation build and paint?

The Qt-free checks (:mod:`mnist_desktop.service.self_test`) prove the model, the
classify path and training; this one proves that what the GUI imports on demand is
there -- the training panel with its pyqtgraph curves, the batch window, the evaluation
window and the About dialog -- which a packaged program can lack while its command line
works (a Qt module a library imports at load time and the build left out, say).

Always off screen (``QT_QPA_PLATFORM=offscreen``, set before the application exists):
the check builds windows, it never shows them on the user's desktop. Settings and user
data go to a temporary folder, so nothing of the user's is read or changed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from mnist_desktop.service.self_test import FAIL, PASS, Check


def check_windows() -> Check:
    """Build the main window and each window it opens, paint each once; one
    :class:`~mnist_desktop.service.self_test.Check`."""
    saved = {k: os.environ.get(k) for k in ("QT_QPA_PLATFORM", "MNIST_DESKTOP_DATA")}
    built: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mnist-self-test-ui-") as tmp:
        os.environ["MNIST_DESKTOP_DATA"] = os.path.join(tmp, "data")
        try:
            from PySide6.QtWidgets import QApplication

            if QApplication.instance() is None:
                os.environ["QT_QPA_PLATFORM"] = "offscreen"
            app = QApplication.instance() or QApplication(["mnist-desktop-self-test"])
            with _quiet_offscreen_plugin():
                _build_windows(app, tmp, built)
        except Exception as e:   # any failure is the finding: name it in one line
            where = f" after {', '.join(built)}" if built else ""
            return Check("windows", FAIL, f"{type(e).__name__}: {e}{where}")
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return Check("windows", PASS, ", ".join(built) + " built and painted")


def _build_windows(app, tmp: str, built: list[str]) -> None:
    from PySide6.QtGui import QAction

    from mnist_desktop.ui.about import AboutDialog
    from mnist_desktop.ui.main_window import MainWindow
    from mnist_desktop.ui.settings import SettingsStore

    window = MainWindow(SettingsStore(os.path.join(tmp, "settings.ini")))
    try:
        window.resize(1000, 700)
        window.show()
        app.processEvents()
        _paint(window)
        built.append("main window")

        if window.training.unavailable:   # the lite flavour: the entry explains, no panel
            built.append("Train menu (training needs the full program)")
        else:
            panel = window.training.open_panel()
            app.processEvents()
            _paint(panel)
            built.append("training panel with its curves")
        window.open_batch()
        batch = window._batch_window
        if batch is not None:
            app.processEvents()
            _paint(batch)
            built.append("batch window")
            batch.close()
        evaluation = window.training.open_evaluation()
        app.processEvents()
        _paint(evaluation)
        evaluation.close()
        built.append("evaluation window")
        about = AboutDialog(window, window.worker.model_info, window.findChildren(QAction))
        _paint(about)
        about.close()
        built.append("About dialog")
    finally:
        window.close()
        app.processEvents()


def _paint(widget) -> None:
    """Render ``widget`` once (its paint code and every child's runs), and check that
    something was drawn."""
    pixmap = widget.grab()
    if pixmap.isNull() or pixmap.width() == 0:
        raise RuntimeError(f"{type(widget).__name__} did not paint")


@contextlib.contextmanager
def _quiet_offscreen_plugin():
    """Drop the offscreen platform's "This plugin does not support raise()" notices (it
    has no window manager); every other Qt message goes where it went before."""
    from PySide6.QtCore import qInstallMessageHandler

    previous = None

    def handler(mode, context, message):
        if message.startswith("This plugin does not support"):
            return
        if previous is not None:
            previous(mode, context, message)
        else:
            import sys

            print(message, file=sys.stderr)

    previous = qInstallMessageHandler(handler)
    try:
        yield
    finally:
        qInstallMessageHandler(previous)
