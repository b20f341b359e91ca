"""The frozen program's entry point (PyInstaller runs this file as ``__main__``)."""

import multiprocessing

if __name__ == "__main__":
    # First of all: a spawned worker (batch decoding, inference) re-runs this executable
    # and must be diverted to the worker code before anything else starts.
    multiprocessing.freeze_support()
    from mnist_desktop.cli import main

    raise SystemExit(main())
