"""Number mode's digit strip: one button per digit read (its label and confidence), the
selected one's probabilities shown in the chart, and hand corrections of the
segmentation (merge with the next digit, split in two, undo the corrections)."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QButtonGroup, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from mnist_desktop.ui.chart import UNCERTAIN_COLOR


class DigitStrip(QWidget):
    """The digits of the number on screen, left to right.

    Signals
    -------
    digitSelected(int)
        The user picked digit ``i`` (its probabilities go to the chart).
    editRequested(object)
        A hand correction: ``("merge", i)``, ``("split", i, x)`` or ``("reset",)``.
    """

    digitSelected = Signal(int)
    editRequested = Signal(object)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("digitStrip")
        self.setAccessibleName("Digits read")
        self._view = None
        self._group = QButtonGroup(self)
        self._group.setExclusive(True)
        self._group.idClicked.connect(self.digitSelected)
        self._buttons: list[QPushButton] = []
        self.hint = QLabel("Write several digits side by side; each one is read on its own.",
                           objectName="digitStripHint", wordWrap=True)
        self.hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self._row = QHBoxLayout()
        self._row.setSpacing(4)
        self._row.setContentsMargins(0, 0, 0, 0)
        self.merge = QPushButton("Merge with next", objectName="mergeDigits")
        self.merge.setToolTip("Join the selected digit and the one after it (one digit was cut in two)")
        self.merge.clicked.connect(lambda: self._edit("merge"))
        self.split = QPushButton("Split in two", objectName="splitDigit")
        self.split.setToolTip("Cut the selected digit in two at its middle (two digits read as one). "
                              "Right-click a box on the canvas to cut at the mouse.")
        self.split.clicked.connect(lambda: self._edit("split"))
        self.reset = QPushButton("Undo corrections", objectName="resetSegments")
        self.reset.clicked.connect(lambda: self.editRequested.emit(("reset",)))
        tools = QHBoxLayout()
        tools.setContentsMargins(0, 0, 0, 0)
        for b in (self.merge, self.split, self.reset):
            b.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)
            tools.addWidget(b)
        tools.addStretch(1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        lay.addWidget(self.hint)
        lay.addLayout(self._row)
        lay.addLayout(tools)
        self.set_view(None)

    @property
    def buttons(self) -> list[QPushButton]:
        return list(self._buttons)

    def set_view(self, view) -> None:
        """Show a :class:`~mnist_desktop.ui.live.NumberView` (None: no number read)."""
        self._view = view
        digits = list(view.reading.digits) if view is not None else []
        while len(self._buttons) > len(digits):
            b = self._buttons.pop()
            self._group.removeButton(b)
            self._row.removeWidget(b)
            b.deleteLater()
        while len(self._buttons) < len(digits):
            b = QPushButton(checkable=True)
            b.setObjectName(f"digitButton{len(self._buttons)}")
            b.setMinimumWidth(44)
            self._group.addButton(b, len(self._buttons))
            self._row.insertWidget(len(self._buttons), b)
            self._buttons.append(b)
        if self._row.count() == len(self._buttons):
            self._row.addStretch(1)
        for i, (b, d) in enumerate(zip(self._buttons, digits)):
            p = d.prediction
            b.setText(f"{p.label}\n{100 * p.confidence:.0f}%")
            b.setAccessibleName(f"Digit {i + 1}: {p.label}, {100 * p.confidence:.0f}%"
                                + (" (uncertain)" if p.uncertain else ""))
            b.setToolTip(f"Show the probabilities of digit {i + 1}")
            b.setStyleSheet(f"color: {UNCERTAIN_COLOR.name()};" if p.uncertain else "")
            b.setChecked(i == view.selected)
        self.hint.setVisible(not digits)
        self.merge.setEnabled(view is not None and view.selected < len(digits) - 1)
        self.split.setEnabled(view is not None)
        self.reset.setVisible(view is not None and view.edited)

    def _edit(self, kind: str) -> None:
        view = self._view
        if view is None:
            return
        i = view.selected
        if kind == "merge":
            self.editRequested.emit(("merge", i))
        else:
            box = view.reading.digits[i].box
            self.editRequested.emit(("split", i, (box.x0 + box.x1) / 2))
