"""Application entry point (placeholder window until the main-window issue lands)."""

from __future__ import annotations

import sys


def run_app(model: str | None = None) -> int:
    from PySide6.QtWidgets import QApplication, QLabel

    app = QApplication.instance() or QApplication(sys.argv)
    label = QLabel("mnist-desktop")
    label.setObjectName("placeholder")
    label.resize(400, 300)
    label.show()
    return app.exec()
