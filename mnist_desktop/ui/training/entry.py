"""Train > New Run (Ctrl+T): the training panel's entry in the main window.

Light on purpose (no pyqtgraph, no torch): the main window adds the menu entry at startup,
and the panel module is imported the first time the user opens it. In the lite flavour
(no torch) the entry stays and explains that training needs the full program.
"""

from __future__ import annotations

from pathlib import Path

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
        e = QAction("&Evaluate Model…", window)
        e.setObjectName("action_evaluate_model")
        tip = "Accuracy, per-class metrics, confusion matrix and mistakes of a model on labelled data"
        e.setToolTip(tip)
        e.setStatusTip(tip)
        e.triggered.connect(lambda: self.open_evaluation())
        window.train_menu().addAction(e)
        self.evaluate_action = e
        self.evaluation = None

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
            self.panel.evaluate_run.connect(lambda run: self.open_evaluation(str(Path(run) / "best.safetensors"), run))
            self.dock = self.window.add_panel(self.panel, "Training", Qt.DockWidgetArea.RightDockWidgetArea)
            self.dock.setAccessibleName("Training panel dock")
            # Curves need room: the panel opens as its own window and docks back on demand.
            self.dock.setFloating(True)
            geo = self.window.geometry()
            self.dock.resize(1100, 720)
            self.dock.move(geo.x() + 40, geo.y() + 40)
            self.window.add_close_guard(self.panel.close_guard)
            from mnist_desktop.ui.warmup import freeze_heap

            freeze_heap()   # pyqtgraph and the panel stay for the session: no full GC passes over them
        self.dock.show()
        self.dock.raise_()
        self.panel.form.recipe.setFocus()
        return self.panel


    def open_evaluation(self, model: str | None = None, run_dir: str | None = None):
        """Show the Evaluation window for ``model`` (default: the window's current model),
        on ``run_dir``'s validation split when given."""
        from mnist_desktop.ui.training.evaluation import EvaluationWindow

        if self.evaluation is not None and self.evaluation.worker is not None and self.evaluation.worker.is_running():
            self.evaluation.show()
            self.evaluation.raise_()
            return self.evaluation
        if self.evaluation is not None:
            self.evaluation.close()
        self.evaluation = EvaluationWindow(model or self.window.model_path(), run_dir,
                                           device=getattr(self.window.settings, "device", "auto"))
        self.evaluation.show()
        self.evaluation.raise_()
        return self.evaluation


def add_training_entries(window) -> TrainingEntry:
    """Add Train > New Run and Train > Evaluate Model… to ``window``'s Train menu."""
    return TrainingEntry(window)
