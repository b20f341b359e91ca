"""Probability bar chart: one column per class label, custom-painted for speed.

Readable from 10 to ~50 labels. Each class gets a row: its label, a horizontal bar and
the percentage. When the rows do not fit the height (26 letters, 47 EMNIST classes) they
wrap into several columns, read top to bottom; only when even that gets too narrow does the
chart fall back to one vertical bar per class, with vertical percentages for bars of at
least 1%. A tooltip gives every exact value.

Clicking a class emits ``classClicked`` (the explanation view uses it for "why not X?");
:meth:`ProbabilityChart.set_marked` outlines that class.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter, QPainterPath, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

UNCERTAIN_COLOR = QColor("#d9822b")
MIN_ROW_HEIGHT = 17
#: The outline of the class marked with :meth:`ProbabilityChart.set_marked` (the "against"
#: colour of the explanation overlay).
MARK_COLOR = QColor("#2f6fde")


def format_percent(p: float, precise: bool = False) -> str:
    """``0.9861`` -> ``"98.6%"`` (precise) or ``"99%"``; tiny values read ``"<1%"``."""
    if precise:
        return f"{p * 100:.1f}%"
    if 0 < p < 0.005:
        return "<1%"
    return f"{p * 100:.0f}%"


class ProbabilityChart(QWidget):
    """Bar chart of a prediction's class probabilities.

    Parameters
    ----------
    labels
        Class labels, one bar each (replaced later with :meth:`set_labels`).

    Signals
    -------
    classClicked(int)
        The user clicked the bar of a class (its index).
    """

    classClicked = Signal(int)

    def __init__(self, labels=(), parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("probabilityChart")
        self.setAccessibleName("Probability chart")
        self.setToolTip("Probability of each class; hover a bar for its exact value")
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMouseTracking(True)
        self._labels: list[str] = list(labels)
        self._probs: list[float] | None = None
        self._index = -1
        self._uncertain = False
        self._marked = -1
        self._update_description()

    # ------------------------------------------------------------------ API
    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    @property
    def probabilities(self) -> list[float] | None:
        return None if self._probs is None else list(self._probs)

    @property
    def highlighted_label(self) -> str | None:
        return self._labels[self._index] if self._probs is not None and self._index >= 0 else None

    @property
    def uncertain(self) -> bool:
        return self._uncertain

    @property
    def marked_index(self) -> int:
        """The outlined class (see :meth:`set_marked`), or -1."""
        return self._marked

    def set_marked(self, index: int | None) -> None:
        """Outline class ``index`` (e.g. the "why not?" class), or none for None / -1."""
        index = -1 if index is None else int(index)
        if index != self._marked:
            self._marked = index
            self.update()

    def mousePressEvent(self, ev) -> None:
        if ev.button() == Qt.MouseButton.LeftButton:
            i = self.index_at(ev.position())
            if i >= 0:
                self.classClicked.emit(i)
                ev.accept()
                return
        super().mousePressEvent(ev)

    def _paint_mark(self, p: QPainter, rect: QRectF, radius: float) -> None:
        p.save()
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.setPen(QPen(MARK_COLOR, 1.6, Qt.PenStyle.DashLine))
        p.drawRoundedRect(rect.adjusted(-2, -2, 2, 2), radius + 1, radius + 1)
        p.restore()

    def set_labels(self, labels) -> None:
        """Show bars for ``labels`` (clears the values when the labels change)."""
        labels = list(labels)
        if labels != self._labels:
            self._labels = labels
            self._probs = None
            self._index = -1
            self._marked = -1
            self._update_description()
            self.update()

    def set_prediction(self, prediction) -> None:
        """Show a core ``Prediction``, or nothing for None."""
        if prediction is None:
            self._probs, self._index, self._uncertain = None, -1, False
        else:
            if list(prediction.labels) != self._labels:
                self._labels = list(prediction.labels)
            self._probs = [float(p) for p in prediction.probs]
            self._index = prediction.index
            self._uncertain = bool(prediction.uncertain)
        self._update_description()
        self.update()

    def _update_description(self) -> None:
        if self._probs is None:
            text = f"{len(self._labels)} classes; no prediction"
        else:
            order = sorted(range(len(self._probs)), key=lambda i: -self._probs[i])[:3]
            top = ", ".join(f"{self._labels[i]} {format_percent(self._probs[i], True)}" for i in order)
            text = ("Uncertain. " if self._uncertain else "") + f"Top classes: {top}"
        self.setAccessibleDescription(text)

    # ------------------------------------------------------------------ geometry
    def minimumSizeHint(self) -> QSize:
        return QSize(220, 150)

    def sizeHint(self) -> QSize:
        return QSize(380, 10 * MIN_ROW_HEIGHT + 60)

    def uses_rows(self) -> bool:
        """True when the chart draws horizontal bars (rows, possibly in several columns)."""
        return self._row_geometry() is not None

    def _row_geometry(self):
        """``(ncols, nrows, col_w, row_h, top, label_w, pct_w, bar_h)`` or None if too narrow."""
        n = len(self._labels)
        if n == 0:
            return None
        bold = QFont(self.font())
        bold.setBold(True)
        fmb = QFontMetricsF(bold)
        label_w = max(fmb.horizontalAdvance(x) for x in self._labels) + 10
        fit = max(1, int((self.height() - 8) // MIN_ROW_HEIGHT))
        ncols = -(-n // fit)
        nrows = -(-n // ncols)
        # One column: "97.3%" right of the bar. Several: "97%" inside the bar cell.
        pct_w = fmb.horizontalAdvance("100.0%") + 8 if ncols == 1 else 0.0
        gap = 14.0
        col_w = (self.width() - gap * (ncols - 1)) / ncols
        min_bar = 40 if ncols == 1 else fmb.horizontalAdvance("100%") + 14
        if col_w < label_w + pct_w + min_bar:
            return None
        row_h = min(34.0, (self.height() - 8) / nrows)
        top = (self.height() - row_h * nrows) / 2
        return ncols, nrows, col_w, row_h, top, label_w, pct_w, min(row_h * 0.62, 16.0), gap

    def _plot_rect(self) -> QRectF:
        fm = QFontMetricsF(self.font())
        left = fm.horizontalAdvance("100%") + 10
        top = fm.height() + 8  # room for the percentage above a full bar
        bottom = fm.height() + 10
        return QRectF(left, top, max(1.0, self.width() - left - 8), max(1.0, self.height() - top - bottom))

    def _slot(self, plot: QRectF) -> float:
        return plot.width() / max(1, len(self._labels))

    def bar_rect(self, i: int) -> QRectF:
        """Where bar ``i`` is drawn at 100% (widget coordinates)."""
        plot = self._plot_rect()
        slot = self._slot(plot)
        bw = max(2.0, min(slot * 0.68, 44.0))
        return QRectF(plot.left() + i * slot + (slot - bw) / 2, plot.top(), bw, plot.height())

    def index_at(self, pos: QPointF) -> int:
        """The class index under ``pos`` (widget coordinates), or -1."""
        g = self._row_geometry()
        if g is not None:
            ncols, nrows, col_w, row_h, top, *_rest = g
            gap = _rest[-1]
            col = int(pos.x() // (col_w + gap))
            row = int((pos.y() - top) // row_h)
            i = col * nrows + row
            return i if 0 <= col < ncols and 0 <= row < nrows and i < len(self._labels) else -1
        plot = self._plot_rect()
        if not self._labels or pos.x() < plot.left() or pos.x() >= plot.right():
            return -1
        return min(len(self._labels) - 1, int((pos.x() - plot.left()) / self._slot(plot)))

    # ------------------------------------------------------------------ painting
    def paintEvent(self, ev) -> None:
        if self.uses_rows():
            self._paint_rows()
        else:
            self._paint_columns()

    def _colors(self):
        pal = self.palette()
        accent = pal.color(QPalette.ColorRole.Highlight)
        faint = pal.color(QPalette.ColorRole.PlaceholderText)
        hi = UNCERTAIN_COLOR if self._uncertain else accent
        muted = QColor(accent if not self._uncertain else faint)
        muted.setAlphaF(0.38)
        return pal.color(QPalette.ColorRole.WindowText), faint, hi, muted

    def _paint_rows(self) -> None:
        g = self._row_geometry()
        ncols, nrows, col_w, row_h, top, label_w, pct_w, bar_h, gap = g
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        text, faint, hi, muted = self._colors()
        regular = QFont(self.font())
        bold = QFont(self.font())
        bold.setBold(True)
        trough = QColor(faint)
        trough.setAlphaF(0.16)
        cells = ncols > 1
        for i, label in enumerate(self._labels):
            col, row = divmod(i, nrows)
            x0 = col * (col_w + gap)
            y = top + row * row_h
            is_top = self._probs is not None and i == self._index
            if cells:
                # A table cell with an in-cell bar: the percentage sits inside the cell.
                t = QRectF(x0 + label_w, y + 1.5, col_w - label_w, row_h - 3)
                radius = 3.0
            else:
                t = QRectF(x0 + label_w, y + (row_h - bar_h) / 2, col_w - label_w - pct_w, bar_h)
                radius = t.height() / 2
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(trough)
            p.drawRoundedRect(t, radius, radius)
            if i == self._marked:
                self._paint_mark(p, t, radius)
            prob = None if self._probs is None else max(0.0, min(1.0, self._probs[i]))
            if prob is not None and prob * t.width() >= 1.5:
                p.setBrush(hi if is_top else muted)
                fill = QRectF(t.left(), t.top(), prob * t.width(), t.height())
                r = min(radius, fill.width() / 2)
                p.drawRoundedRect(fill, r, r)
            p.setFont(bold if is_top else regular)
            p.setPen(hi if is_top else text)
            p.drawText(QRectF(x0, y, label_w - 8, row_h), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                       label)
            if cells:
                if prob is None or (prob < 0.005 and not is_top):
                    continue  # empty cells read faster than a column of "<1%"
                value = format_percent(prob)
                fm = QFontMetricsF(bold if is_top else regular)
                covered = prob * t.width() > t.width() - fm.horizontalAdvance(value) - 6
                p.setPen(self.palette().color(QPalette.ColorRole.HighlightedText) if is_top and covered else text)
                p.drawText(t.adjusted(0, 0, -5, 0), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, value)
                continue
            if prob is None:
                value, color = "–", faint
            else:
                value = format_percent(prob, precise=True)
                color = hi if is_top else (text if prob >= 0.0005 else faint)
            p.setPen(color)
            p.drawText(QRectF(t.right(), y, pct_w, row_h), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                       value)
        p.end()

    def _paint_columns(self) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        text = pal.color(QPalette.ColorRole.WindowText)
        faint = pal.color(QPalette.ColorRole.PlaceholderText)
        accent = pal.color(QPalette.ColorRole.Highlight)
        plot = self._plot_rect()
        fm = QFontMetricsF(self.font())
        n = len(self._labels)

        # Grid at 0/50/100% with labels at the left.
        grid = QColor(faint)
        grid.setAlphaF(0.35)
        for frac in (0.0, 0.5, 1.0):
            y = plot.bottom() - frac * plot.height()
            p.setPen(grid if frac else faint)
            p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            p.setPen(faint)
            p.drawText(QRectF(0, y - fm.height() / 2, plot.left() - 6, fm.height()),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, f"{frac * 100:.0f}%")
        if n == 0:
            p.end()
            return

        slot = self._slot(plot)
        wide = slot >= fm.horizontalAdvance("100.0%") + 2
        label_font = QFont(self.font())
        bold = QFont(self.font())
        bold.setBold(True)
        hi_color = UNCERTAIN_COLOR if self._uncertain else accent
        muted = QColor(accent if not self._uncertain else faint)
        muted.setAlphaF(0.38)

        for i, label in enumerate(self._labels):
            r = self.bar_rect(i)
            is_top = self._probs is not None and i == self._index
            if i == self._marked:
                self._paint_mark(p, r, 3.0)
            if self._probs is not None:
                prob = self._probs[i]
                h = max(0.0, min(1.0, prob)) * plot.height()
                bar = QRectF(r.left(), plot.bottom() - h, r.width(), h)
                if h > 0.5:
                    p.setPen(Qt.PenStyle.NoPen)
                    p.setBrush(hi_color if is_top else muted)
                    p.drawPath(_top_rounded(bar, min(3.0, r.width() / 3, h)))
                self._paint_value(p, fm, bold if is_top else label_font, prob, bar, slot, wide, is_top,
                                  text if (is_top or prob >= 0.005) else faint)
            # Class label under the bar.
            p.setFont(bold if is_top else label_font)
            p.setPen(hi_color if is_top else text)
            p.drawText(QRectF(plot.left() + i * slot, plot.bottom() + 3, slot, fm.height() + 4),
                       Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, label)
        p.setFont(label_font)
        if self._probs is None:
            p.setPen(faint)
            p.drawText(plot, Qt.AlignmentFlag.AlignCenter, "No prediction")
        p.end()

    def _paint_value(self, p, fm, font, prob, bar, slot, wide, is_top, color) -> None:
        if wide:
            p.setFont(font)
            p.setPen(color)
            p.drawText(QRectF(bar.center().x() - slot / 2, bar.top() - fm.height() - 2, slot, fm.height()),
                       Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom,
                       format_percent(prob, precise=is_top))
            return
        if prob < 0.01 and not is_top:
            return
        # Narrow columns: vertical text, inside a tall bar or just above a short one.
        s = format_percent(prob, precise=is_top)
        tw = fm.horizontalAdvance(s)
        p.save()
        p.setFont(font)
        inside = bar.height() > tw + 8
        p.setPen(self.palette().color(QPalette.ColorRole.HighlightedText) if inside and is_top else color)
        x = bar.center().x() + fm.ascent() / 2 - 1
        y = bar.top() + tw + 4 if inside else bar.top() - 4
        p.translate(x, y)
        p.rotate(-90)
        p.drawText(QPointF(0, 0), s)
        p.restore()

    # ------------------------------------------------------------------ tooltips
    def event(self, ev) -> bool:
        if ev.type() == QEvent.Type.ToolTip:
            i = self.index_at(ev.position() if hasattr(ev, "position") else QPointF(ev.pos()))
            if i >= 0:
                value = "no prediction" if self._probs is None else format_percent(self._probs[i], True)
                QToolTip.showText(ev.globalPos(), f"{self._labels[i]}: {value}", self)
            else:
                QToolTip.showText(ev.globalPos(), self.toolTip(), self)
            return True
        return super().event(ev)


def _top_rounded(r: QRectF, radius: float) -> QPainterPath:
    """A bar with rounded top corners and a square base on the axis."""
    path = QPainterPath(QPointF(r.left(), r.bottom()))
    path.lineTo(r.left(), r.top() + radius)
    path.quadTo(r.left(), r.top(), r.left() + radius, r.top())
    path.lineTo(r.right() - radius, r.top())
    path.quadTo(r.right(), r.top(), r.right(), r.top() + radius)
    path.lineTo(r.right(), r.bottom())
    path.closeSubpath()
    return path
