"""The predicted-label display: the big answer, its confidence and the runners-up."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QPalette
from PySide6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from mnist_desktop.ui.chart import UNCERTAIN_COLOR, format_percent

# What the display says for each state of the live prediction when there is no answer.
STATE_TEXT = {
    "blank": "Draw a digit, or open, drop or paste an image",
    "loading": "Loading the model…",
    "waiting": "Classifying…",
    "empty": "Nothing to classify",
    "error": "Could not classify this input",
    "nomodel": "No model loaded",
}


class PredictionDisplay(QWidget):
    """Big predicted label, "98.6 % confident" (or an uncertain notice) and the top
    alternatives. Child labels have stable object names for tests and screen readers."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("predictionDisplay")
        self.setAccessibleName("Prediction")
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.label = QLabel("–", self)
        self.label.setObjectName("predictedLabel")
        self.label.setAccessibleName("Predicted label")
        self.label.setToolTip("The class the model predicts")
        self.label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        f = QFont(self.font())
        f.setPointSizeF(max(f.pointSizeF(), 9.0) * 4.2)
        f.setWeight(QFont.Weight.DemiBold)
        self.label.setFont(f)
        self.label.setMinimumHeight(int(f.pointSizeF() * 1.6))
        self.confidence = QLabel(self)
        self.confidence.setObjectName("predictionConfidence")
        self.confidence.setAccessibleName("Confidence")
        cf = QFont(self.font())
        cf.setPointSizeF(max(cf.pointSizeF(), 9.0) * 1.25)
        self.confidence.setFont(cf)
        self.status = QLabel(self)
        self.status.setObjectName("predictionStatus")
        self.status.setAccessibleName("Prediction status")
        self.status.setWordWrap(True)
        self.alternatives = QLabel(self)
        self.alternatives.setObjectName("predictionAlternatives")
        self.alternatives.setAccessibleName("Runner-up classes")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(self.label)
        lay.addWidget(self.confidence)
        lay.addWidget(self.status)
        lay.addWidget(self.alternatives)
        self._prediction = None
        self.set_state("blank")

    @property
    def prediction(self):
        return self._prediction

    def set_prediction(self, prediction) -> None:
        """Show a core ``Prediction`` (None returns to the current state's text)."""
        self._prediction = prediction
        if prediction is None:
            return
        self.label.setText(prediction.label)
        self.confidence.setText(f"{format_percent(prediction.confidence, True)} confident")
        if prediction.uncertain:
            self.status.setText("Uncertain — this may not be a digit")
            self._color(self.status, UNCERTAIN_COLOR)
            self._color(self.label, UNCERTAIN_COLOR)
        else:
            self.status.setText("")
            self._color(self.status, None)
            self._color(self.label, None)
        top = prediction.top_k(3)[1:]
        self.alternatives.setText("Also: " + ", ".join(f"{lab} {format_percent(p, True)}" for lab, p in top)
                                  if top else "")
        self.setAccessibleDescription(
            f"Predicted {prediction.label}, {format_percent(prediction.confidence, True)}"
            + (", uncertain" if prediction.uncertain else ""))

    def set_state(self, state: str, detail: str = "") -> None:
        """Show a state without a prediction (``blank``, ``loading``, ``empty``, ...)."""
        if state == "ready":
            return
        self._prediction = None
        self.label.setText("–")
        self._color(self.label, None)
        self.confidence.setText(STATE_TEXT.get(state, state))
        self.status.setText(detail)
        self._color(self.status, None)
        self.alternatives.setText("")
        self.setAccessibleDescription(STATE_TEXT.get(state, state))

    @staticmethod
    def _color(widget: QLabel, color) -> None:
        """Tint a label (None: inherit). Skipped when unchanged: every stroke updates this."""
        key = None if color is None else color.rgba()
        if getattr(widget, "_tint", "unset") == key:
            return
        widget._tint = key
        pal = QPalette()  # resolves nothing itself: inherits the theme
        if color is not None:
            pal.setColor(QPalette.ColorRole.WindowText, color)
        widget.setPalette(pal)
