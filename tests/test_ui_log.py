"""The log file: warnings, uncaught exceptions and Qt warnings land in it; Help > Show log
opens it."""

from __future__ import annotations

import sys
import threading
import warnings

import pytest
from PySide6.QtCore import QUrl
from PySide6.QtGui import QAction, QDesktopServices

from mnist_desktop.ui.app_log import configure_logging, log_file_path
from test_ui_helpers import make_window, settings_store, user_data  # noqa: F401  (fixtures)

pytestmark = pytest.mark.gui


@pytest.fixture
def app_log(user_data):
    log = configure_logging()
    yield log
    log.close()


def _text(app_log) -> str:
    app_log.flush()
    return app_log.path.read_text(encoding="utf-8")


def test_the_log_file_is_in_the_user_data_folder(app_log, user_data):
    assert app_log.path == log_file_path() == user_data / "logs" / "mnist-desktop.log"
    assert configure_logging() is app_log   # configured once


@pytest.mark.qt_no_exception_capture   # pytest-qt's own hook would fail the test on purpose
def test_a_warning_and_uncaught_exceptions_end_up_in_the_log(app_log, qapp):
    from PySide6.QtCore import qWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("the pen is out of ink", UserWarning)
    try:
        raise ValueError("a bug in a slot")
    except ValueError:
        sys.excepthook(*sys.exc_info())   # what PySide does with an exception in a slot

    def boom():
        raise RuntimeError("a bug in a thread")
    t = threading.Thread(target=boom, name="helper")
    t.start()
    t.join()
    qWarning("QPainter::begin: a Qt warning")
    text = _text(app_log)
    assert "UserWarning: the pen is out of ink" in text
    assert "uncaught exception" in text and "ValueError: a bug in a slot" in text and "Traceback" in text
    assert "uncaught exception in thread helper" in text and "RuntimeError: a bug in a thread" in text
    assert "WARNING qt" in text and "QPainter::begin: a Qt warning" in text


def test_close_restores_the_hooks(user_data):
    before = sys.excepthook, threading.excepthook
    log = configure_logging()
    assert sys.excepthook != before[0]
    log.close()
    assert (sys.excepthook, threading.excepthook) == before


def test_errors_shown_to_the_user_are_logged(app_log, make_window):
    w = make_window(start=False)
    w.open_files([str(app_log.path.parent / "missing.png")])
    assert "missing.png: file not found" in _text(app_log)


def test_help_show_log_opens_the_log_file(make_window, user_data, monkeypatch):
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: opened.append(url) or True))
    w = make_window(start=False)
    action = w.findChild(QAction, "action_show_log")
    assert action is not None and action in w.findChild(type(w.menuBar().actions()[0].menu()), "menuHelp").actions()
    action.trigger()
    path = user_data / "logs" / "mnist-desktop.log"
    assert opened == [QUrl.fromLocalFile(str(path))]
    assert path.is_file()   # created when absent, so the viewer has something to open


@pytest.mark.qt_no_exception_capture
def test_a_deferred_log_file_gets_what_came_before_and_opens_on_a_crash(user_data):
    import logging

    log = configure_logging(defer_file=True)   # as the app starts: no logging.handlers yet
    try:
        logging.getLogger("mnist_desktop.test").warning("before the window was up")
        assert not log.path.exists()
        try:
            raise KeyError("crash at startup")
        except KeyError:
            sys.excepthook(*sys.exc_info())
        text = _text(log)
        assert "before the window was up" in text and "KeyError: 'crash at startup'" in text
    finally:
        log.close()
