"""The drawing canvas: vector strokes with pressure, an eraser, undo/redo, and images.

Strokes are stored as vectors in *document units* on a square sheet of
``DOC_SIZE`` x ``DOC_SIZE`` units that is scaled to fit the widget, so a resized window
re-renders crisply (at the screen's device pixel ratio) and the model always receives the
same geometry. Each edit (a stroke, an erase drag, Clear, showing an image) is one entry
on a :class:`QUndoStack`; states are immutable, so undo just swaps them back.

While a stroke is drawn the canvas emits :attr:`DrawingCanvas.inputChanged` with a
:class:`~mnist_desktop.core.preprocess.Drawing` snapshot, at most every
``EMIT_INTERVAL_S`` (leading edge plus a trailing emit), so predictions follow the pen.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import cached_property

from PySide6.QtCore import QEvent, QPointF, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import (QColor, QImage, QPainter, QPainterPath, QPalette, QPen,
                           QPointingDevice, QUndoCommand, QUndoStack)
from PySide6.QtWidgets import QSizePolicy, QWidget

from mnist_desktop.ui import warmup
from mnist_desktop.ui.images import ImageSource

DOC_SIZE = 280.0          # document units across the sheet (as the core's default canvas)
EMIT_INTERVAL_S = 0.004   # at most ~250 snapshots a second while drawing
NEUTRAL_PRESSURE = 0.5    # what the core expects for a mouse


def pressure_width(width: float, pressure: float) -> float:
    """Visible stroke width at ``pressure``: 0.2x (feather) .. 1.8x (hard), 1x at 0.5."""
    return width * (0.2 + 1.6 * min(max(pressure, 0.0), 1.0))


@dataclass(frozen=True)
class CanvasStroke:
    """One stroke: points ``(x, y, pressure)`` in document units and a pen width."""

    points: tuple[tuple[float, float, float], ...]
    width: float

    @cached_property
    def core(self):
        """This stroke as a core :class:`~mnist_desktop.core.preprocess.Stroke` (cached)."""
        import numpy as np

        from mnist_desktop.core.preprocess import Stroke
        return Stroke(np.asarray(self.points, dtype=np.float32).reshape(-1, 3))

    @cached_property
    def bounds(self) -> tuple[float, float, float, float]:
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        return min(xs), min(ys), max(xs), max(ys)


@dataclass(frozen=True)
class CanvasState:
    """What the canvas shows: strokes, or an image (never both)."""

    strokes: tuple[CanvasStroke, ...] = ()
    image: ImageSource | None = None

    @property
    def is_blank(self) -> bool:
        return not self.strokes and self.image is None


def core_drawing(strokes, extra=None):
    """A core ``Drawing`` of ``strokes`` plus an optional in-progress point list."""
    import numpy as np

    from mnist_desktop.core.preprocess import Drawing, Stroke
    core = [s.core for s in strokes]
    if extra:
        core.append(Stroke(np.asarray(extra, dtype=np.float32).reshape(-1, 3)))
    return Drawing(core, (int(DOC_SIZE), int(DOC_SIZE)))


# --------------------------------------------------------------------------- erasing

def erase_strokes(strokes, a: tuple[float, float], b: tuple[float, float], radius: float):
    """Cut everything within ``radius`` of the segment ``a``-``b`` out of ``strokes``.

    Strokes that pass through the eraser are split into the parts that remain; points are
    densified first so a long segment crossing the eraser is cut too.

    Returns
    -------
    tuple
        ``(new_strokes, changed)``.
    """
    out = []
    changed = False
    for s in strokes:
        pieces = _erase_one(s, a, b, radius)
        if pieces is None:
            out.append(s)
        else:
            changed = True
            out.extend(pieces)
    return tuple(out), changed


def _erase_one(s: CanvasStroke, a, b, radius):
    reach = radius + s.width / 2
    x0, y0, x1, y1 = s.bounds
    if (x1 < min(a[0], b[0]) - reach or x0 > max(a[0], b[0]) + reach
            or y1 < min(a[1], b[1]) - reach or y0 > max(a[1], b[1]) + reach):
        return None
    step = max(0.75, radius / 3)
    dense = _densify(s.points, step)
    keep = [_dist_to_segment(p[0], p[1], a, b) > reach for p in dense]
    if all(keep):
        return None
    pieces, run = [], []
    for p, k in zip(dense, keep):
        if k:
            run.append(p)
        elif run:
            pieces.append(run)
            run = []
    if run:
        pieces.append(run)
    # A one-point leftover of a cut stroke would be a stray dot: drop it.
    return [CanvasStroke(tuple(r), s.width) for r in pieces if len(r) >= 2]


def _densify(points, step):
    out = [points[0]]
    for p, q in zip(points, points[1:]):
        d = math.hypot(q[0] - p[0], q[1] - p[1])
        n = int(d // step)
        for i in range(1, n + 1):
            t = i / (n + 1)
            out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1]), p[2] + t * (q[2] - p[2])))
        out.append(q)
    return out


def _dist_to_segment(x, y, a, b) -> float:
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    L2 = dx * dx + dy * dy
    t = 0.0 if L2 == 0 else max(0.0, min(1.0, ((x - ax) * dx + (y - ay) * dy) / L2))
    return math.hypot(x - ax - t * dx, y - ay - t * dy)


# --------------------------------------------------------------------------- undo

class _SetState(QUndoCommand):
    """One edit: swap between two immutable canvas states."""

    def __init__(self, canvas: "DrawingCanvas", before: CanvasState, after: CanvasState,
                 text: str, already_applied: bool):
        super().__init__(text)
        self._canvas, self._before, self._after = canvas, before, after
        self._skip_first_redo = already_applied

    def redo(self) -> None:
        if self._skip_first_redo:
            self._skip_first_redo = False
            return
        self._canvas._set_state(self._after)

    def undo(self) -> None:
        self._canvas._set_state(self._before)


# --------------------------------------------------------------------------- widget

@dataclass
class _Gesture:
    erasing: bool
    before: CanvasState
    points: list = field(default_factory=list)
    width: float = 0.0
    last_doc: tuple[float, float] | None = None


class DrawingCanvas(QWidget):
    """A square drawing sheet for mouse and stylus.

    Parameters
    ----------
    pen_width
        Initial pen width in document units.

    Signals
    -------
    inputChanged(object, float)
        What to classify changed: a core ``Drawing`` (empty when blank) or an
        :class:`~mnist_desktop.ui.images.ImageSource`; and the ``time.perf_counter()`` of
        the input event that produced it.
    toolChanged(str)
        ``"pen"`` or ``"eraser"``.
    penWidthChanged(float)
    segmentSelected(int)
        Number mode: the user asked to see digit ``i`` (context menu on its box).
    segmentEditRequested(object)
        Number mode: a hand correction of the segmentation, ``("merge", i)``,
        ``("split", i, x)`` (x in input coordinates) or ``("reset",)``.
    """

    inputChanged = Signal(object, float)
    toolChanged = Signal(str)
    penWidthChanged = Signal(float)
    segmentSelected = Signal(int)
    segmentEditRequested = Signal(object)

    def __init__(self, pen_width: float = 14.0, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("drawingCanvas")
        self.setAccessibleName("Drawing canvas")
        self.setAccessibleDescription(
            "Draw a digit with the mouse or a stylus; the prediction updates as you draw. "
            "The stylus eraser or the Eraser tool removes ink.")
        self.setToolTip("Draw a digit here (mouse or stylus). Drop or paste an image to classify it.")
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(220, 220)
        self._undo = QUndoStack(self)
        self._undo.setObjectName("canvasUndoStack")
        self._state = CanvasState()
        self._tool = "pen"
        self._pen_width = float(pen_width)
        self._gesture: _Gesture | None = None
        self._hover: QPointF | None = None
        self._cache: QImage | None = None   # committed strokes
        self._live: QImage | None = None    # the stroke being drawn, segment by segment
        self._overlay: tuple[QImage, QRectF] | None = None   # explanation map, document rect
        self._last_emit = 0.0
        self._last_input_time = 0.0
        self._emit_timer = QTimer(self)
        self._emit_timer.setSingleShot(True)
        self._emit_timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._emit_timer.timeout.connect(self._emit_now)
        self._number_view = None   # number mode: the reading whose boxes are drawn
        self._hint = "Draw a digit here\nor drop / paste an image"

    # ------------------------------------------------------------------ public API
    @property
    def undo_stack(self) -> QUndoStack:
        """The canvas's undo stack (one entry per stroke, erase, clear or image)."""
        return self._undo

    @property
    def state(self) -> CanvasState:
        """The committed state plus the stroke being drawn, if any."""
        if self._gesture is not None and not self._gesture.erasing and self._gesture.points:
            stroke = CanvasStroke(tuple(self._gesture.points), self._gesture.width)
            return CanvasState(self._state.strokes + (stroke,), None)
        return self._state

    @property
    def strokes(self) -> tuple[CanvasStroke, ...]:
        return self.state.strokes

    @property
    def tool(self) -> str:
        return self._tool

    def set_tool(self, tool: str) -> None:
        """Select ``"pen"`` or ``"eraser"`` for the mouse and the stylus tip."""
        if tool not in ("pen", "eraser"):
            raise ValueError(f"unknown tool {tool!r}")
        if tool != self._tool:
            self._tool = tool
            self.setCursor(Qt.CursorShape.BlankCursor if tool == "eraser" else Qt.CursorShape.CrossCursor)
            self.update()
            self.toolChanged.emit(tool)

    @property
    def pen_width(self) -> float:
        return self._pen_width

    def set_pen_width(self, width: float) -> None:
        """Pen width (document units) for the next strokes; drawn strokes keep theirs."""
        width = float(width)
        if width != self._pen_width:
            self._pen_width = width
            self.update()
            self.penWidthChanged.emit(width)

    def eraser_radius(self) -> float:
        """Eraser radius in document units (follows the pen width)."""
        return max(6.0, self._pen_width * 1.2)

    def drawing(self):
        """The current strokes as a core ``Drawing`` (empty when there are none)."""
        g = self._gesture
        extra = g.points if g is not None and not g.erasing else None
        return core_drawing(self._state.strokes, extra)

    def current_input(self):
        """What to classify now: an ImageSource, or a Drawing (possibly empty)."""
        if self._state.image is not None and self._gesture is None:
            return self._state.image
        return self.drawing()

    def clear(self) -> None:
        """Remove everything (one undoable step)."""
        self._finish_gesture()
        if not self._state.is_blank:
            self._push(CanvasState(), "Clear")

    def show_image(self, source: ImageSource) -> None:
        """Show an image instead of the strokes (one undoable step)."""
        self._finish_gesture()
        self._push(CanvasState((), source), f"Open {source.name}")

    def image_updated(self, source: ImageSource) -> None:
        """Repaint after ``source.display`` or ``source.error`` arrived."""
        if self._state.image is source:
            self.update()

    @property
    def overlay(self) -> tuple[QImage, QRectF] | None:
        """The explanation overlay painted over the strokes and its document rect, or None."""
        return self._overlay

    def set_overlay(self, image: QImage | None, doc_rect: QRectF | None = None) -> None:
        """Paint ``image`` (semi-transparent RGBA, e.g. a saliency map) smoothly over the
        strokes into ``doc_rect`` (document coordinates); None removes it."""
        self._overlay = None if image is None or doc_rect is None else (image, QRectF(doc_rect))
        self.update()

    def undo(self) -> None:
        self._finish_gesture()
        self._undo.undo()

    def redo(self) -> None:
        self._finish_gesture()
        self._undo.redo()

    # ------------------------------------------------------------------ number mode
    def set_number_view(self, view) -> None:
        """Draw the segmentation of a number reading over the input (a
        :class:`~mnist_desktop.ui.live.NumberView`), or nothing (None)."""
        self._number_view = view
        self.update()

    @property
    def number_view(self):
        return self._number_view

    def _input_mapping(self) -> tuple[QPointF, float] | None:
        """``(origin, scale)`` with widget = origin + input * scale for the coordinates
        of the reading's boxes, or None when they cannot be placed."""
        view = self._number_view
        if view is None:
            return None
        state = self.state
        rect = self.sheet_rect()
        if state.image is None:
            return rect.topLeft(), rect.width() / DOC_SIZE
        img = state.image.display
        if img is None or img.isNull() or not view.input_size:
            return None
        target = self._image_target(rect, img)
        return target.topLeft(), target.width() / max(1.0, float(view.input_size[0]))

    def segment_rects(self) -> list[QRectF]:
        """The boxes of the digits read, in widget coordinates (empty outside number mode)."""
        mapping = self._input_mapping()
        if mapping is None:
            return []
        (o, s) = mapping
        # A drawing's boxes hold the strokes' centre lines: grow them by half the pen.
        pad = self._pen_width / 2 * s if self.state.image is None else 0.0
        return [QRectF(o.x() + d.box.x0 * s - pad, o.y() + d.box.y0 * s - pad,
                       d.box.width * s + 2 * pad, d.box.height * s + 2 * pad)
                for d in self._number_view.reading.digits]

    def segment_at(self, pos: QPointF) -> int:
        """The digit whose box holds ``pos`` (widget coordinates, a few pixels of slack);
        -1 when none."""
        rects = self.segment_rects()
        for i, r in enumerate(rects):
            if r.adjusted(-4, -4, 4, 4).contains(pos):
                return i
        return -1

    def _to_input_x(self, x: float) -> float:
        o, s = self._input_mapping()
        return (x - o.x()) / s

    def contextMenuEvent(self, ev) -> None:
        view = self._number_view
        i = self.segment_at(QPointF(ev.pos())) if view is not None else -1
        if i < 0:
            ev.ignore()
            return
        from PySide6.QtWidgets import QMenu

        n = len(view.reading.digits)
        menu = QMenu(self)
        menu.setObjectName("segmentMenu")
        label = view.reading.digits[i].prediction.label
        menu.addAction(f"Show the probabilities of digit {i + 1} ({label})",
                       lambda: self.segmentSelected.emit(i))
        menu.addSeparator()
        x = self._to_input_x(ev.pos().x())
        menu.addAction("Split this digit here", lambda: self.segmentEditRequested.emit(("split", i, x)))
        merge_next = menu.addAction("Merge with the next digit", lambda: self.segmentEditRequested.emit(("merge", i)))
        merge_next.setEnabled(i < n - 1)
        merge_prev = menu.addAction("Merge with the previous digit",
                                    lambda: self.segmentEditRequested.emit(("merge", i - 1)))
        merge_prev.setEnabled(i > 0)
        if view.edited:
            menu.addAction("Undo the corrections", lambda: self.segmentEditRequested.emit(("reset",)))
        menu.exec(ev.globalPos())
        ev.accept()

    def _paint_segments(self, p: QPainter) -> None:
        view = self._number_view
        rects = self.segment_rects()
        if not rects or self._gesture is not None:
            return
        pal = self.palette()
        accent = pal.color(QPalette.ColorRole.Highlight)
        f = p.font()
        f.setPointSizeF(max(7.5, f.pointSizeF() * 0.9))
        f.setBold(True)
        p.setFont(f)
        fm = p.fontMetrics()
        for i, (r, d) in enumerate(zip(rects, view.reading.digits)):
            selected = i == view.selected
            color = QColor("#d08000") if d.prediction.uncertain else QColor(accent)
            box = r.adjusted(-3, -3, 3, 3)
            fill = QColor(color)
            fill.setAlpha(40 if selected else 0)
            p.setBrush(fill)
            p.setPen(QPen(color, 2.2 if selected else 1.2,
                          Qt.PenStyle.SolidLine if selected else Qt.PenStyle.DashLine))
            p.drawRoundedRect(box, 3, 3)
            tag = f"{d.prediction.label} {100 * d.prediction.confidence:.0f}%"
            tw, th = fm.horizontalAdvance(tag) + 8, fm.height() + 2
            tr = QRectF(box.left(), box.top() - th - 1, tw, th)
            if tr.top() < self.sheet_rect().top():
                tr.moveTop(box.bottom() + 1)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(color)
            p.drawRoundedRect(tr, 3, 3)
            p.setPen(QColor("white"))
            p.drawText(tr, Qt.AlignmentFlag.AlignCenter, tag)

    # ------------------------------------------------------------------ state
    def _push(self, after: CanvasState, text: str, already_applied: bool = False,
              before: CanvasState | None = None) -> None:
        before = self._state if before is None else before
        self._undo.push(_SetState(self, before, after, text, already_applied))

    def _set_state(self, state: CanvasState, emit: bool = True) -> None:
        self._state = state
        self._cache = None
        self._live = None
        self.update()
        if emit:
            self._emit_now()

    def _finish_gesture(self) -> None:
        if self._gesture is not None:
            self._end_gesture()

    # ------------------------------------------------------------------ geometry
    def sheet_rect(self) -> QRectF:
        """The square sheet in widget coordinates."""
        margin = 10.0
        side = max(1.0, min(self.width(), self.height()) - 2 * margin)
        return QRectF((self.width() - side) / 2, (self.height() - side) / 2, side, side)

    def _scale(self) -> float:
        return self.sheet_rect().width() / DOC_SIZE

    def to_doc(self, pos: QPointF) -> tuple[float, float]:
        """Widget position -> document coordinates, clamped to the sheet."""
        r = self.sheet_rect()
        s = r.width() / DOC_SIZE
        x = min(max((pos.x() - r.x()) / s, 0.0), DOC_SIZE)
        y = min(max((pos.y() - r.y()) / s, 0.0), DOC_SIZE)
        return x, y

    def to_widget(self, x: float, y: float) -> QPointF:
        """Document coordinates -> widget position."""
        r = self.sheet_rect()
        s = r.width() / DOC_SIZE
        return QPointF(r.x() + x * s, r.y() + y * s)

    def sizeHint(self) -> QSize:
        return QSize(520, 520)

    def hasHeightForWidth(self) -> bool:
        return False

    # ------------------------------------------------------------------ input: mouse
    def mousePressEvent(self, ev) -> None:
        if ev.button() == Qt.MouseButton.LeftButton and self._gesture is None:
            self._begin_gesture(ev.position(), NEUTRAL_PRESSURE, self._tool == "eraser")
            ev.accept()
        else:
            ev.ignore()

    def mouseMoveEvent(self, ev) -> None:
        self._update_hover(ev.position())
        if self._gesture is not None and ev.buttons() & Qt.MouseButton.LeftButton:
            self._extend_gesture(ev.position(), NEUTRAL_PRESSURE)
            ev.accept()

    def mouseReleaseEvent(self, ev) -> None:
        if ev.button() == Qt.MouseButton.LeftButton and self._gesture is not None:
            self._extend_gesture(ev.position(), NEUTRAL_PRESSURE, final=True)
            self._end_gesture()
            ev.accept()

    def leaveEvent(self, ev) -> None:
        self._update_hover(None)
        super().leaveEvent(ev)

    # ------------------------------------------------------------------ input: stylus
    def tabletEvent(self, ev) -> None:
        t = ev.type()
        pressure = float(ev.pressure())
        pos = ev.position()
        eraser_end = ev.pointerType() == QPointingDevice.PointerType.Eraser
        if t == QEvent.Type.TabletPress and self._gesture is None:
            self._begin_gesture(pos, pressure, eraser_end or self._tool == "eraser")
        elif t == QEvent.Type.TabletMove:
            self._update_hover(pos)
            if self._gesture is not None:
                self._extend_gesture(pos, pressure)
        elif t == QEvent.Type.TabletRelease and self._gesture is not None:
            self._end_gesture()
        # Accepted, so Qt does not also synthesize mouse events for the same motion.
        ev.accept()

    # ------------------------------------------------------------------ gestures
    def _begin_gesture(self, pos: QPointF, pressure: float, erasing: bool) -> None:
        now = time.perf_counter()
        self._last_input_time = now
        before = self._state
        if erasing:
            self._gesture = _Gesture(True, before, last_doc=self.to_doc(pos))
            self._erase_to(self.to_doc(pos))
            return
        if before.image is not None:
            # Drawing over an image starts a new drawing (undo brings the image back).
            self._state = CanvasState()
            self._cache = None
            self.update()
        x, y = self.to_doc(pos)
        self._live = None  # a fresh layer for this stroke
        self._gesture = _Gesture(False, before, [(x, y, pressure)], self._pen_width, (x, y))
        self._paint_segment(None, (x, y, pressure))
        self._schedule_emit(now)

    def _extend_gesture(self, pos: QPointF, pressure: float, final: bool = False) -> None:
        g = self._gesture
        now = time.perf_counter()
        self._last_input_time = now
        x, y = self.to_doc(pos)
        if g.erasing:
            self._erase_to((x, y))
            return
        last = g.points[-1]
        # Skip sub-pixel jitter: it adds points without changing the ink.
        if abs(x - last[0]) < 0.25 and abs(y - last[1]) < 0.25:
            if not final:
                return
            g.points[-1] = (last[0], last[1], pressure)
            return
        p = (x, y, pressure)
        g.points.append(p)
        self._paint_segment(last, p)
        if not final:
            self._schedule_emit(now)

    def _end_gesture(self) -> None:
        g = self._gesture
        self._gesture = None
        self._emit_timer.stop()
        if g.erasing:
            if self._state != g.before:
                after = self._state
                self._state = g.before
                self._push(after, "Erase", already_applied=False)
            self.update()
            return
        stroke = CanvasStroke(tuple(g.points), g.width)
        after = CanvasState(self._state.strokes + (stroke,), None)
        # Add just this stroke to the committed cache, as one clean path, instead of
        # re-rendering every stroke (which took up to ~15 ms on a busy scribble).
        if self._cache is not None:
            p = QPainter(self._cache)
            p.setRenderHint(QPainter.RenderHint.Antialiasing)
            s = self._scale()
            p.scale(s, s)
            _paint_stroke(p, stroke, self._ink_color())
            p.end()
        self._live = None
        self._push(after, "Draw stroke", already_applied=True, before=g.before)
        self._state = after
        self.update()
        self._emit_now()

    def _erase_to(self, doc: tuple[float, float]) -> None:
        g = self._gesture
        strokes, changed = erase_strokes(self._state.strokes, g.last_doc, doc, self.eraser_radius())
        g.last_doc = doc
        if changed:
            self._state = CanvasState(strokes, self._state.image)
            self._cache = None
            self.update()
            self._schedule_emit(self._last_input_time)

    # ------------------------------------------------------------------ emitting
    def _schedule_emit(self, now: float) -> None:
        wait = EMIT_INTERVAL_S - (now - self._last_emit)
        if wait <= 0:
            self._emit_timer.stop()
            self._emit_now()
        elif not self._emit_timer.isActive():
            self._emit_timer.start(max(1, int(wait * 1000)))

    def _emit_now(self) -> None:
        if not warmup.ready():
            # numpy is still being imported in the background: try again shortly rather
            # than freeze the GUI thread on the import lock.
            self._emit_timer.start(5)
            return
        self._last_emit = time.perf_counter()
        self.inputChanged.emit(self.current_input(), self._last_input_time or self._last_emit)

    # ------------------------------------------------------------------ painting
    def _ink_color(self) -> QColor:
        return self.palette().color(QPalette.ColorRole.Text)

    def _paper_color(self) -> QColor:
        return self.palette().color(QPalette.ColorRole.Base)

    def _layer(self, strokes) -> QImage:
        """A transparent sheet-sized image at the screen's pixel ratio with ``strokes``."""
        rect = self.sheet_rect()
        dpr = self.devicePixelRatioF()
        side = max(1, int(math.ceil(rect.width() * dpr)))
        img = QImage(side, side, QImage.Format.Format_ARGB32_Premultiplied)
        img.setDevicePixelRatio(dpr)
        img.fill(Qt.GlobalColor.transparent)
        p = QPainter(img)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        s = rect.width() / DOC_SIZE
        p.scale(s, s)
        ink = self._ink_color()
        for stroke in strokes:
            _paint_stroke(p, stroke, ink)
        p.end()
        return img

    def _layer_valid(self, img: QImage | None) -> bool:
        dpr = self.devicePixelRatioF()
        side = max(1, int(math.ceil(self.sheet_rect().width() * dpr)))
        return img is not None and img.width() == side and img.devicePixelRatio() == dpr

    def _ensure_cache(self) -> QImage:
        if not self._layer_valid(self._cache):
            self._cache = self._layer(self._state.strokes)
        return self._cache

    def _ensure_live(self) -> QImage:
        if not self._layer_valid(self._live):
            g = self._gesture
            strokes = [CanvasStroke(tuple(g.points), g.width)] if g and not g.erasing and g.points else []
            self._live = self._layer(strokes)
        return self._live

    def _paint_segment(self, a, b) -> None:
        """Add one segment of the live stroke to its layer and repaint just that area."""
        if not self._layer_valid(self._live):
            self._live = None
            self.update()
            return
        width = self._gesture.width
        s = self._scale()
        p = QPainter(self._live)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.scale(s, s)
        w = pressure_width(width, b[2] if a is None else (a[2] + b[2]) / 2)
        p.setPen(QPen(self._ink_color(), w, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap,
                      Qt.PenJoinStyle.RoundJoin))
        if a is None:
            p.drawPoint(QPointF(b[0], b[1]))
            a = b
        else:
            p.drawLine(QPointF(a[0], a[1]), QPointF(b[0], b[1]))
        p.end()
        pad = w / 2 + 2
        x0, x1 = min(a[0], b[0]) - pad, max(a[0], b[0]) + pad
        y0, y1 = min(a[1], b[1]) - pad, max(a[1], b[1]) + pad
        tl, br = self.to_widget(x0, y0), self.to_widget(x1, y1)
        self.update(QRectF(tl, br).toAlignedRect().adjusted(-2, -2, 2, 2))

    def paintEvent(self, ev) -> None:
        p = QPainter(self)
        pal = self.palette()
        p.fillRect(ev.rect(), pal.color(QPalette.ColorRole.Window))
        rect = self.sheet_rect()
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(self._paper_color())
        p.drawRoundedRect(rect, 6, 6)
        state = self.state
        if state.image is not None:
            self._paint_image(p, rect, state.image)
        else:
            p.drawImage(rect.topLeft(), self._ensure_cache())
            if self._gesture is not None and not self._gesture.erasing:
                p.drawImage(rect.topLeft(), self._ensure_live())
            if state.is_blank and self._gesture is None:
                self._paint_hint(p, rect)
            elif self._overlay is not None:
                img, doc = self._overlay
                s = self._scale()
                p.save()
                p.setClipRect(rect)
                p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
                p.drawImage(QRectF(self.to_widget(doc.x(), doc.y()), doc.size() * s), img)
                p.restore()
        self._paint_segments(p)
        border = pal.color(QPalette.ColorRole.Highlight) if self.hasFocus() else pal.color(QPalette.ColorRole.Mid)
        p.setPen(QPen(border, 1.2 if self.hasFocus() else 1.0))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRoundedRect(rect.adjusted(0.5, 0.5, -0.5, -0.5), 6, 6)
        if self._tool == "eraser" and self._hover is not None and rect.contains(self._hover):
            r = self.eraser_radius() * self._scale()
            p.setPen(QPen(pal.color(QPalette.ColorRole.Text), 1.0, Qt.PenStyle.DashLine))
            p.drawEllipse(self._hover, r, r)
        p.end()

    def _paint_hint(self, p: QPainter, rect: QRectF) -> None:
        color = self.palette().color(QPalette.ColorRole.PlaceholderText)
        p.setPen(color)
        f = p.font()
        f.setPointSizeF(f.pointSizeF() * 1.25)
        p.setFont(f)
        p.drawText(rect, Qt.AlignmentFlag.AlignCenter, self._hint)

    def set_hint(self, text: str) -> None:
        """What the blank sheet invites the user to do."""
        self._hint = text
        self.update()

    def _paint_image(self, p: QPainter, rect: QRectF, source: ImageSource) -> None:
        img = source.display
        if img is None or img.isNull():
            p.setPen(self.palette().color(QPalette.ColorRole.PlaceholderText))
            text = f"Cannot show {source.name}\n{source.error}" if source.error else f"Loading {source.name}…"
            p.drawText(rect.adjusted(16, 16, -16, -16), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, text)
            return
        target = self._image_target(rect, img)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, target.width() / img.width() < 4)
        p.drawImage(target, img)

    @staticmethod
    def _image_target(rect: QRectF, img: QImage) -> QRectF:
        """Where an image is shown on the sheet ``rect`` (fitted, centred)."""
        inner = rect.adjusted(8, 8, -8, -8)
        iw, ih = img.width(), img.height()
        s = min(inner.width() / iw, inner.height() / ih)
        target = QRectF(0, 0, iw * s, ih * s)
        target.moveCenter(inner.center())
        return target

    def _update_hover(self, pos: QPointF | None) -> None:
        if self._tool != "eraser" and self._hover is None:
            return
        old = self._hover
        self._hover = pos
        r = self.eraser_radius() * self._scale() + 3
        for c in (old, pos):
            if c is not None:
                self.update(QRectF(c.x() - r, c.y() - r, 2 * r, 2 * r).toAlignedRect())

    # ------------------------------------------------------------------ events
    def resizeEvent(self, ev) -> None:
        self._cache = None
        self._live = None
        super().resizeEvent(ev)

    def changeEvent(self, ev) -> None:
        if ev.type() in (QEvent.Type.PaletteChange, QEvent.Type.StyleChange,
                         QEvent.Type.DevicePixelRatioChange):
            self._cache = None
            self._live = None
            self.update()
        super().changeEvent(ev)

    def focusInEvent(self, ev) -> None:
        self.update()
        super().focusInEvent(ev)

    def focusOutEvent(self, ev) -> None:
        self.update()
        super().focusOutEvent(ev)

    def showEvent(self, ev) -> None:
        self.setCursor(Qt.CursorShape.BlankCursor if self._tool == "eraser" else Qt.CursorShape.CrossCursor)
        super().showEvent(ev)


def _paint_stroke(p: QPainter, stroke: CanvasStroke, ink: QColor) -> None:
    pts = stroke.points
    pressures = [q[2] for q in pts]
    if max(pressures) - min(pressures) < 1e-3:
        # Even pressure (mouse): one path gives smooth joins.
        p.setPen(QPen(ink, pressure_width(stroke.width, pressures[0]), Qt.PenStyle.SolidLine,
                      Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin))
        if len(pts) == 1:
            p.drawPoint(QPointF(pts[0][0], pts[0][1]))
            return
        path = QPainterPath(QPointF(pts[0][0], pts[0][1]))
        for q in pts[1:]:
            path.lineTo(q[0], q[1])
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawPath(path)
        return
    # Varying pressure: per-segment widths, as they were drawn live.
    if len(pts) == 1:
        p.setPen(QPen(ink, pressure_width(stroke.width, pts[0][2]), Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
        p.drawPoint(QPointF(pts[0][0], pts[0][1]))
    for a, b in zip(pts, pts[1:]):
        p.setPen(QPen(ink, pressure_width(stroke.width, (a[2] + b[2]) / 2), Qt.PenStyle.SolidLine,
                      Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin))
        p.drawLine(QPointF(a[0], a[1]), QPointF(b[0], b[1]))
