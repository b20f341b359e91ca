"""Import numpy and the core preprocessing in the background after the window shows.

The canvas needs them for its first stroke snapshot; importing them on the GUI thread
would freeze the fresh window for 100-250 ms. In a thread the GUI keeps running (the
import releases the GIL often enough: measured stalls of 10-30 ms on a loaded 2-core
machine). Until the import is done the canvas postpones its snapshots instead of
blocking.
"""

from __future__ import annotations

import gc
import threading

_ready = threading.Event()
_thread: threading.Thread | None = None


def _import_core() -> None:
    import mnist_desktop.core.preprocess  # noqa: F401  (numpy, Pillow)
    freeze_heap()
    _ready.set()


def freeze_heap() -> None:
    """Exempt every object alive now from the cyclic garbage collector's full passes.

    Call it once a burst of long-lived objects was made (modules imported, a window
    built). Otherwise every generation-2 collection walks all of Qt's, numpy's and
    pyqtgraph's module objects again: 30-40 ms of GUI thread at an arbitrary moment of a
    stroke (measured with ``ui_bench --with-training``, a ``gc.callbacks`` timer). Frozen
    objects are still freed by reference counting; only cycles among them stay.
    """
    gc.freeze()


def start() -> threading.Thread:
    """Start the background import (once); returns its thread."""
    global _thread
    if _thread is None and not _ready.is_set():
        _thread = threading.Thread(target=_import_core, name="mnist-desktop-warmup", daemon=True)
        _thread.start()
    return _thread


def ready() -> bool:
    """True when the core can be used without waiting. Imports it right here when no
    background import was started (tests, embedding)."""
    if _ready.is_set():
        return True
    if _thread is None:
        _import_core()
        return True
    return False


def join(timeout: float | None = None) -> None:
    """Wait for the background import to finish (called on shutdown)."""
    if _thread is not None:
        _thread.join(timeout)
