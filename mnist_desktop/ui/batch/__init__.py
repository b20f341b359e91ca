"""Batch classification window: classify folders, review, correct, export, sort.

``BatchWindow(model=None, device="auto", parent=None, *, workers=None)`` - ``model`` is a
loaded Predictor, a model file path or None (the bundled model). It works standalone
(``python -m mnist_desktop.ui.batch [PATH...]``) and from the main window's
"File > Batch classify…" action.
"""

from mnist_desktop.ui.batch.window import BatchWindow

__all__ = ["BatchWindow"]
