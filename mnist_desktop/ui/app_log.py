"""The app's log file: warnings and unexpected errors, for the user to send with a report.

:func:`configure_logging` is called once when the GUI starts (never at import): it adds
a rotating file handler (1 MB x 3) at ``<user data folder>/logs/mnist-desktop.log`` to
the root logger and routes into it Python warnings, uncaught exceptions (``sys`` and
``threading`` hooks; PySide reports exceptions in slots through ``sys.excepthook``) and
Qt's own warnings. Only WARNING and above are written. :meth:`AppLog.close` undoes all
of it (the tests configure and close it again and again).

Importing :mod:`logging.handlers` (socket, pickle...) costs some 10-30 ms, which the
first window should not wait for: with ``defer_file=True`` records are kept in memory
until :meth:`AppLog.open_file` (called once the window is up), or until an uncaught
exception, which opens the file at once so a crash at startup is logged too.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

LOG_FILE_NAME = "mnist-desktop.log"
MAX_BYTES = 1_000_000
BACKUPS = 3
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"

log = logging.getLogger("mnist_desktop")


def log_file_path() -> Path:
    """Where the log file lives: ``<user data folder>/logs/mnist-desktop.log``."""
    from mnist_desktop.core.paths import user_data_dir

    return user_data_dir() / "logs" / LOG_FILE_NAME


class _Buffer(logging.Handler):
    """Holds records until the log file is open (at most ``capacity``)."""

    def __init__(self, capacity: int = 1000):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self.capacity = capacity

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < self.capacity:
            self.records.append(record)


class AppLog:
    """The installed handlers and hooks (see :func:`configure_logging`)."""

    def __init__(self, path: Path | None, max_bytes: int = MAX_BYTES, backups: int = BACKUPS):
        self.path = path
        self._max_bytes, self._backups = max_bytes, backups
        self._handlers: list[logging.Handler] = []
        self._buffer: _Buffer | None = None
        self._previous = None
        self._lock = threading.Lock()

    def open_file(self) -> None:
        """Start writing the log file (and what was logged so far). Safe to call twice."""
        with self._lock:
            buffer, self._buffer = self._buffer, None
            if buffer is None:
                return
            handler = _file_handler(self.path, self._max_bytes, self._backups) if self.path else None
            if handler is None:
                self.path = None
            else:
                handler._mnist_desktop_log = self
                logging.getLogger().addHandler(handler)
                self._handlers.append(handler)
                for record in buffer.records:
                    handler.handle(record)
            logging.getLogger().removeHandler(buffer)
            self._handlers.remove(buffer)

    def _install(self, handlers: list[logging.Handler]) -> None:
        root = logging.getLogger()
        for h in handlers:
            h._mnist_desktop_log = self   # marks ours, so a second configure finds them
            root.addHandler(h)
        self._handlers = handlers
        self._root_level = root.level
        if root.level == logging.NOTSET or root.level > logging.WARNING:
            root.setLevel(logging.WARNING)
        logging.captureWarnings(True)
        self._previous = (sys.excepthook, threading.excepthook, _install_qt_handler())
        sys.excepthook = self._excepthook
        threading.excepthook = self._thread_excepthook

    def close(self) -> None:
        """Write what is buffered, remove the handlers and restore the hooks that were
        there before."""
        if self._previous is None:
            return
        self.open_file()
        sys_hook, thread_hook, qt_handler = self._previous
        self._previous = None
        if sys.excepthook == self._excepthook:
            sys.excepthook = sys_hook
        if threading.excepthook == self._thread_excepthook:
            threading.excepthook = thread_hook
        _restore_qt_handler(qt_handler)
        logging.captureWarnings(False)
        root = logging.getLogger()
        for h in self._handlers:
            root.removeHandler(h)
            h.close()
        root.setLevel(self._root_level)
        self._handlers = []

    def flush(self) -> None:
        for h in self._handlers:
            h.flush()

    # ------------------------------------------------------------------ hooks
    def _excepthook(self, exc_type, exc, tb) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        self.open_file()   # a crash at startup must reach the file
        log.critical("uncaught exception", exc_info=(exc_type, exc, tb))
        previous = self._previous[0] if self._previous else None
        if previous not in (None, sys.__excepthook__):
            previous(exc_type, exc, tb)   # e.g. an IDE's hook

    def _thread_excepthook(self, args) -> None:
        if issubclass(args.exc_type, SystemExit):
            return
        self.open_file()
        name = args.thread.name if args.thread is not None else "?"
        log.critical("uncaught exception in thread %s", name,
                     exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def configure_logging(path: str | Path | None = None, *, max_bytes: int = MAX_BYTES,
                      backups: int = BACKUPS, defer_file: bool = False) -> AppLog:
    """Log warnings and unexpected errors to a rotating file; returns the :class:`AppLog`.

    Parameters
    ----------
    path
        The log file (default: :func:`log_file_path`).
    max_bytes, backups
        Rotation: the file is renamed to ``.1`` (up to ``.<backups>``) at ``max_bytes``.
    defer_file
        Keep records in memory until :meth:`AppLog.open_file` (see the module docstring).

    Calling it again while configured returns the same :class:`AppLog`. When the
    folder cannot be created the app still runs, logging to stderr only.
    """
    root = logging.getLogger()
    for h in root.handlers:
        existing = getattr(h, "_mnist_desktop_log", None)
        if existing is not None:
            return existing
    app_log = AppLog(Path(path) if path is not None else log_file_path(), max_bytes, backups)
    handlers: list[logging.Handler] = [_Buffer()]
    app_log._buffer = handlers[0]
    if not root.handlers:
        # Nobody else configured logging: keep showing warnings on the terminal too.
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setLevel(logging.WARNING)
        stderr.setFormatter(logging.Formatter(FORMAT))
        handlers.append(stderr)
    app_log._install(handlers)
    if not defer_file:
        app_log.open_file()
    return app_log


def _file_handler(path: Path, max_bytes: int, backups: int) -> logging.Handler | None:
    from logging.handlers import RotatingFileHandler

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups,
                                      encoding="utf-8", delay=True)
    except OSError as e:
        print(f"mnist-desktop: cannot write the log file {path}: {e}", file=sys.stderr)
        return None
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler


# --------------------------------------------------------------------------- Qt messages

# QtMsgType values: debug 0, warning 1, critical 2, fatal 3, info 4.
_QT_LEVELS = {1: logging.WARNING, 2: logging.ERROR, 3: logging.CRITICAL}


def _qt_message(mode, context, message: str) -> None:
    level = _QT_LEVELS.get(int(getattr(mode, "value", mode)))
    if level is None:   # debug and info: to the terminal, as Qt's default handler does
        print(message, file=sys.stderr)
        return
    category = getattr(context, "category", None)
    logger = logging.getLogger("qt" if not category or category == "default" else f"qt.{category}")
    logger.log(level, "%s", message)


def _install_qt_handler():
    try:
        from PySide6.QtCore import qInstallMessageHandler
    except ImportError:
        return None
    return (qInstallMessageHandler(_qt_message),)


def _restore_qt_handler(previous) -> None:
    if previous is None:
        return
    from PySide6.QtCore import qInstallMessageHandler

    qInstallMessageHandler(previous[0])
