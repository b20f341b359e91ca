"""How the app starts itself again as a child process (training runs, exports, benchmark
children): the one place that knows whether it runs frozen or installed.

* Frozen (PyInstaller): the executable is its own command line, ``[sys.executable, *args]``.
* Installed or editable: the ``mnist-desktop`` console script beside the interpreter
  (``.venv/bin/mnist-desktop``) when it exists, else the interpreter running the package's
  entry module. No file's content ever chooses what runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SCRIPT_NAME = "mnist-desktop"


def is_frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def _console_script() -> Path | None:
    folder = Path(sys.executable).parent
    for name in (SCRIPT_NAME, f"{SCRIPT_NAME}.exe"):
        path = folder / name
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def app_command(*args: str) -> list[str]:
    """The argv that runs ``mnist-desktop ARGS...`` with this very installation."""
    if is_frozen():
        return [sys.executable, *args]
    script = _console_script()
    if script is not None and os.name != "nt":
        return [str(script), *args]
    # No console script (e.g. a plain checkout on PYTHONPATH): the package's entry module,
    # run by this interpreter, is the same program.
    return [sys.executable, "-m", "mnist_desktop", *args]
