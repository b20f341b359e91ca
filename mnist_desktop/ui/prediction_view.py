"""The predicted-label display: the big answer, its confidence and the runners-up.

The text lines are small custom-painted widgets with constant size hints. A QLabel would
do, but every ``setText`` re-runs the layouts up to the main window (Qt's layouts always
propagate ``updateGeometry``), which repainted the whole window several times a second
while drawing.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter, QPalette
from PySide6.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

from mnist_desktop.ui.chart import UNCERTAIN_COLOR, format_percent

# What the display says for each state of the live prediction when there is no answer:
# a headline and the detail shown when the state brings none of its own.
STATE_TEXT = {
    "blank": ("Draw a digit", "or open an image (Ctrl+O)"),
    "loading": ("Loading the model…", "your drawing is classified as soon as it is ready"),
    "waiting": ("Classifying…", ""),
    "empty": ("Nothing to classify", "no ink found"),
    "error": ("Could not classify this input", ""),
    "nomodel": ("No model loaded", "choose a model below"),
}


class TextLine(QWidget):
    """One line of text, elided to the width; changing it only repaints the line.

    Parameters
    ----------
    scale
        Font size relative to the application font.
    bold
        Use a demi-bold weight.
    wrap
        Wrap long texts onto more lines instead of eliding them (the line grows).
    """

    def __init__(self, name: str, accessible: str, scale: float = 1.0, bold: bool = False,
                 parent: QWidget | None = None, wrap: bool = False):
        super().__init__(parent)
        self.setObjectName(name)
        self.setAccessibleName(accessible)
        f = QFont(self.font())
        f.setPointSizeF(max(f.pointSizeF(), 9.0) * scale)
        if bold:
            f.setWeight(QFont.Weight.DemiBold)
        self.setFont(f)
        self._wrap = wrap
        policy = QSizePolicy(QSizePolicy.Policy.Expanding,
                             QSizePolicy.Policy.Preferred if wrap else QSizePolicy.Policy.Fixed)
        policy.setHeightForWidth(wrap)
        self.setSizePolicy(policy)
        self._text = ""
        self._color: QColor | None = None
        self._faint = False

    def text(self) -> str:
        return self._text

    def setText(self, text: str) -> None:
        """Show ``text`` (repaints this line only)."""
        if text != self._text:
            self._text = text
            self.setAccessibleDescription(text)
            if not self.property("fixedToolTip"):
                # Long texts may be elided on screen; the tooltip shows them whole.
                self.setToolTip(text)
            if self._wrap:
                self.updateGeometry()
            self.update()

    def set_color(self, color: QColor | None, faint: bool = False) -> None:
        """Tint the text (None: the theme's text colour; ``faint``: placeholder colour)."""
        if (color, faint) != (self._color, self._faint):
            self._color, self._faint = color, faint
            self.update()

    def sizeHint(self) -> QSize:
        fm = QFontMetricsF(self.font())
        return QSize(120, int(fm.height() * 1.15) + 1)

    def minimumSizeHint(self) -> QSize:
        return QSize(20, self.sizeHint().height())

    def hasHeightForWidth(self) -> bool:
        return self._wrap

    def heightForWidth(self, width: int) -> int:
        one = self.sizeHint().height()
        if not self._wrap or not self._text:
            return one
        fm = QFontMetricsF(self.font())
        r = fm.boundingRect(QRectF(0, 0, max(width, 1), 10_000), int(Qt.TextFlag.TextWordWrap), self._text)
        return max(one, int(r.height() * 1.05) + 1)

    def paintEvent(self, ev) -> None:
        p = QPainter(self)
        pal = self.palette()
        color = self._color or pal.color(QPalette.ColorRole.PlaceholderText if self._faint
                                         else QPalette.ColorRole.WindowText)
        p.setPen(color)
        if self._wrap:
            p.drawText(QRectF(self.rect()), int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
                                                | Qt.TextFlag.TextWordWrap), self._text)
        else:
            fm = QFontMetricsF(self.font())
            text = fm.elidedText(self._text, Qt.TextElideMode.ElideRight, self.width())
            p.drawText(QRectF(self.rect()), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, text)
        p.end()


class PredictionDisplay(QWidget):
    """Big predicted label, "98.6% confident" (or an uncertain notice) and the top
    alternatives. The lines have stable object names for tests and screen readers."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("predictionDisplay")
        self.setAccessibleName("Prediction")
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.label = TextLine("predictedLabel", "Predicted label", scale=4.2, bold=True)
        self.label.setToolTip("The class the model predicts")
        self.label.setProperty("fixedToolTip", True)
        self.confidence = TextLine("predictionConfidence", "Confidence", scale=1.25)
        self.status = TextLine("predictionStatus", "Prediction status", wrap=True)
        self.alternatives = TextLine("predictionAlternatives", "Runner-up classes")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        for line in (self.label, self.confidence, self.status, self.alternatives):
            lay.addWidget(line)
        self._prediction = None
        self.number_mode = False   # the blank state invites a number instead of a digit
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
        pct = format_percent(prediction.confidence, True)
        self.confidence.setText(f"{pct} (not sure)" if prediction.uncertain else f"{pct} confident")
        self.confidence.set_color(None)
        if prediction.uncertain:
            # Which kind of flag: a near-tie between two digits, or not a digit at all.
            reason = getattr(prediction, "reason_text", "")
            self.status.setText(f"{reason[0].upper()}{reason[1:]}" if reason.startswith("unsure")
                                else "Uncertain: may not be a digit")
            self.status.set_color(UNCERTAIN_COLOR)
            self.label.set_color(UNCERTAIN_COLOR)
        else:
            self.status.setText("")
            self.label.set_color(None)
        top = prediction.top_k(3)[1:]
        self.alternatives.setText("Also: " + ", ".join(f"{lab} {format_percent(p, True)}" for lab, p in top)
                                  if top else "")
        self.alternatives.set_color(None, faint=True)
        self.setAccessibleDescription(
            f"Predicted {prediction.label}, {format_percent(prediction.confidence, True)}"
            + (f", uncertain ({getattr(prediction, 'reason_text', '') or 'not a digit'})"
               if prediction.uncertain else ""))

    def set_reading(self, view) -> None:
        """Show a number reading (a :class:`~mnist_desktop.ui.live.NumberView`): the
        digits, the probability that all are right, and which digits are unsure. A
        one-digit reading shows as :meth:`set_prediction` does."""
        reading = view.reading
        digits = reading.digits
        if len(digits) == 1:
            self.set_prediction(digits[0].prediction)
            return
        self._prediction = view.prediction
        self.label.setText(reading.text)
        pct = format_percent(reading.confidence, True)
        self.confidence.setText(f"{pct} sure of all {len(digits)}")
        self.confidence.setToolTip(f"The probability that all {len(digits)} digits are right: {pct}")
        self.confidence.set_color(None)
        unsure = [i for i, d in enumerate(digits) if d.prediction.uncertain]
        if unsure:
            which = ", ".join(f"{i + 1} ({digits[i].prediction.label})" for i in unsure)
            self.status.setText(f"Unsure of digit{'s' if len(unsure) > 1 else ''} {which}")
            self.status.set_color(UNCERTAIN_COLOR)
            self.label.set_color(UNCERTAIN_COLOR)
        else:
            self.status.setText(f"{len(digits)} digits" + (" (corrected by hand)" if view.edited else ""))
            self.status.set_color(None, faint=True)
            self.label.set_color(None)
        sel = digits[view.selected].prediction
        others = [f"{lab} {format_percent(p, True)}" for lab, p in sel.top_k(3)[1:] if p >= 0.01]
        self.alternatives.setText(f"Digit {view.selected + 1}: {sel.label} {format_percent(sel.confidence, True)}"
                                  + (f" (also {', '.join(others)})" if others else ""))
        self.alternatives.set_color(None, faint=True)
        self.setAccessibleDescription(
            f"Read the number {reading.text}, {pct} confident"
            + (f", unsure of digit {', '.join(str(i + 1) for i in unsure)}" if unsure else ""))

    def set_state(self, state: str, detail: str = "") -> None:
        """Show a state without a prediction (``blank``, ``loading``, ``empty``, ...)."""
        if state == "ready":
            return
        self._prediction = None
        headline, default_detail = STATE_TEXT.get(state, (state, ""))
        if state == "blank" and self.number_mode:
            headline = "Write a number"
        self.label.setText("")
        self.label.set_color(None)
        self.confidence.setText(headline)
        self.confidence.set_color(None)
        self.status.setText(detail or default_detail)
        self.status.set_color(None, faint=True)
        self.alternatives.setText("")
        self.setAccessibleDescription(f"{headline}. {detail or default_detail}".strip())
