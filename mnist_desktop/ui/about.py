"""The About dialog: version, the loaded model and where it runs, library versions, the
log file, credits, and every keyboard shortcut the window offers."""

from __future__ import annotations

import html
import platform
import sys
from importlib import metadata

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QGuiApplication
from PySide6.QtWidgets import (
    QDialog, QDialogButtonBox, QLabel, QTabWidget, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from mnist_desktop.ui.app_log import log_file_path
from mnist_desktop.ui.inference_messages import ModelInfo

LIBRARIES = ("PySide6", "torch", "onnxruntime", "numpy", "pillow", "pyqtgraph")


def library_versions() -> list[tuple[str, str]]:
    """Installed versions from package metadata (nothing heavy is imported)."""
    out = []
    for name in LIBRARIES:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append((name, "not installed"))
    return out


def shortcut_rows(actions: list[QAction]) -> list[tuple[str, str]]:
    """(action, shortcuts) for every action that has a shortcut, sorted by name, no repeats."""
    seen: dict[str, str] = {}
    for a in actions:
        keys = ", ".join(s.toString() for s in a.shortcuts() if not s.isEmpty())
        name = a.text().replace("&", "").rstrip(".…").strip()
        if keys and name and name not in seen:
            seen[name] = keys
    return sorted(seen.items(), key=lambda kv: kv[0].lower())


class AboutDialog(QDialog):
    def __init__(self, parent: QWidget | None, model: ModelInfo | None, actions: list[QAction]):
        super().__init__(parent)
        from mnist_desktop import __version__

        self.setObjectName("aboutDialog")
        self.setWindowTitle("About MNIST Desktop")
        tabs = QTabWidget(self)

        if model is None:
            model_html = "<p>No model is loaded.</p>"
        else:
            where = model.device.upper()
            if model.requested_device not in ("auto", model.device):
                where += f" (asked for {model.requested_device.upper()})"
            model_html = (
                f"<p><b>Model:</b> {html.escape(model.name)} ({html.escape(model.arch)}), "
                f"{len(model.labels)} classes, on {where} with {html.escape(model.backend)}<br>"
                f"<small>{html.escape(model.path)}</small></p>")
        libs = ", ".join(f"{n} {v}" for n, v in library_versions())
        info = QLabel(
            f"<h3>MNIST Desktop {html.escape(__version__)}</h3>"
            "<p>Recognizes handwritten digits drawn on the canvas or loaded from images.</p>"
            f"{model_html}"
            f"<p><b>Python</b> {platform.python_version()} on {html.escape(platform.platform(terse=True))}"
            f"<br><small>{html.escape(libs)}</small></p>"
            f"<p><b>Log file:</b> {html.escape(str(log_file_path()))}</p>"
            "<p>The bundled training images and the default model's training data come from "
            "MNIST (Yann LeCun, Corinna Cortes, Christopher J.C. Burges), CC BY-SA 3.0.</p>")
        info.setObjectName("aboutText")
        info.setWordWrap(True)
        info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        page = QWidget()
        QVBoxLayout(page).addWidget(info)
        tabs.addTab(page, "About")

        rows = shortcut_rows(actions)
        table = QTableWidget(len(rows), 2)
        table.setObjectName("shortcutTable")
        table.setHorizontalHeaderLabels(["Action", "Shortcut"])
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        for r, (name, keys) in enumerate(rows):
            table.setItem(r, 0, QTableWidgetItem(name))
            table.setItem(r, 1, QTableWidgetItem(keys))
        table.resizeColumnsToContents()
        table.horizontalHeader().setStretchLastSection(True)
        tabs.addTab(table, "Keyboard shortcuts")

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        copy = buttons.addButton("Copy details", QDialogButtonBox.ButtonRole.ActionRole)
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.details()))
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(tabs)
        lay.addWidget(buttons)
        self._model = model
        self.resize(560, 420)

    def details(self) -> str:
        """Plain text for a bug report."""
        from mnist_desktop import __version__

        lines = [f"MNIST Desktop {__version__}", f"Python {sys.version.split()[0]} on {platform.platform()}"]
        lines += [f"{n} {v}" for n, v in library_versions()]
        m = self._model
        lines.append("model: none" if m is None else
                     f"model: {m.name} ({m.arch}) on {m.device} (asked {m.requested_device}), {m.backend}, {m.path}")
        return "\n".join(lines)
