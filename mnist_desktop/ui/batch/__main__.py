"""``python -m mnist_desktop.ui.batch [--model FILE] [PATH...]``: the batch window alone."""

from __future__ import annotations

import argparse
import multiprocessing
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mnist_desktop.ui.batch")
    p.add_argument("paths", nargs="*", help="files or folders to classify at once")
    p.add_argument("--model", help="model file (default: the bundled model)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = p.parse_args(argv)
    from mnist_desktop.ui.app import create_application
    from mnist_desktop.ui.app_log import configure_logging
    from mnist_desktop.ui.batch import BatchWindow

    app = create_application(sys.argv[:1])
    app_log = configure_logging()
    win = BatchWindow(args.model, args.device)
    win.show()
    if args.paths:
        win.classify(args.paths)
    try:
        return app.exec()
    finally:
        app_log.close()


if __name__ == "__main__":
    multiprocessing.freeze_support()
    raise SystemExit(main())
