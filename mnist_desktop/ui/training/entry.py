"""Train > New Run (Ctrl+T): the training panel's entry in the main window.

Light on purpose (no pyqtgraph, no torch): the main window adds the menu entry at startup,
and the panel module is imported the first time the user opens it. In the lite flavour
(no torch) the entry stays and explains that training needs the full program.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMessageBox

from mnist_desktop.core.flavour import training_unavailable_reason


class TrainingEntry(QObject):
    """Owns the Train > New Run action and, once opened, the docked training panel.

    Parameters
    ----------
    window
        The :class:`~mnist_desktop.ui.main_window.MainWindow` (its ``train_menu()``,
        ``add_panel()``, ``add_close_guard()`` and ``select_model()`` are used).
    """

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.panel = None
        self.dock = None
        self.unavailable = training_unavailable_reason()
        a = QAction("&New Run…", window)
        a.setObjectName("action_new_run")
        a.setShortcut(QKeySequence("Ctrl+T"))
        tip = self.unavailable or "Train a model: recipe, data, live curves, run history"
        a.setToolTip(f"{tip} (Ctrl+T)")
        a.setStatusTip(tip)
        a.triggered.connect(self.open_panel)
        window.addAction(a)   # the shortcut works while the menu bar is hidden
        window.train_menu().addAction(a)
        self.action = a

    def open_panel(self):
        """Show the training panel (created on first use); None in the lite flavour."""
        if self.unavailable:
            QMessageBox.information(self.window, "Training", self.unavailable)
            return None
        if self.panel is None:
            from mnist_desktop.service.training_runs import RunHistory
            from mnist_desktop.ui.training.panel import TrainingPanel

            self.panel = TrainingPanel(RunHistory())
            self.panel.use_model.connect(self.window.select_model)
            self.dock = self.window.add_panel(self.panel, "Training", Qt.DockWidgetArea.RightDockWidgetArea)
            self.dock.setAccessibleName("Training panel dock")
            # Curves need room: the panel opens as its own window and docks back on demand.
            self.dock.setFloating(True)
            geo = self.window.geometry()
            self.dock.resize(1100, 720)
            self.dock.move(geo.x() + 40, geo.y() + 40)
            self.window.add_close_guard(self.panel.close_guard)
        self.dock.show()
        self.dock.raise_()
        self.panel.form.recipe.setFocus()
        return self.panel


def add_training_entries(window) -> TrainingEntry:
    """Add Train > New Run to ``window``'s Train menu."""
    return TrainingEntry(window)
