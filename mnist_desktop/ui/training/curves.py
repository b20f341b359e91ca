"""Live training curves drawn with pyqtgraph: loss and accuracy per epoch (train and
validation), the smoothed step loss and the learning rate, for one run or several overlaid.

Events only mark the curves dirty; a 60 ms timer redraws what changed with
``PlotDataItem.setData`` (no item is re-created per event), one plot per tick, so a fast
stream of events costs the GUI thread one cheap redraw per tick (a few milliseconds, never
the four plots at once), and a point is on screen well within a second of its event.
"""

from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QColor, QFontMetrics, QPalette
from PySide6.QtWidgets import QApplication, QVBoxLayout, QWidget

from mnist_desktop.service.training_runs import Curves, curves_csv

REDRAW_MS = 60
# Colour-blind-safe (Okabe-Ito) colours, one per overlaid run.
RUN_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def _xy(xs, ys):
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def nice_step(span: float, ticks: int = 5) -> float:
    """A round tick spacing (1, 2, 2.5 or 5 times a power of ten) that cuts ``span`` into
    about ``ticks`` parts."""
    raw = max(span, 1e-12) / ticks
    mag = 10.0 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1.0, 2.0, 2.5, 5.0, 10.0) if raw <= m * mag * (1 + 1e-9))


def stepped_range(lo: float, hi: float, current: tuple[float, float] | None = None, *,
                  from_zero: bool = False, headroom: float = 0.05) -> tuple[float, float]:
    """The axis range to show data spanning ``lo..hi``: ``current`` while it still holds the
    data (and is not far too wide), else ``lo..hi`` widened by ``headroom`` (a fraction of
    the span) and rounded out to tick steps.

    A live curve auto-ranged exactly changes its axes with every point, and pyqtgraph
    then regenerates their ticks, labels and grid (most of a plot's repaint cost); a range
    that moves in round steps changes only when the data outgrow it. ``from_zero``: the
    range starts at 0 (epochs, learning rates); data that are never negative never get a
    negative lower end.
    """
    if from_zero:
        lo = min(lo, 0.0)
    span = hi - lo
    if span <= 0:
        span = max(abs(hi) * 0.1, 1e-6)
        lo, hi = lo - span / 2, hi + span / 2
    if current is not None:
        c0, c1 = current
        if c0 <= lo and hi <= c1 and (c1 - c0) <= 3 * span * (1 + 2 * headroom):
            return current
    want_lo = lo if from_zero else lo - headroom * span
    want_hi = hi + headroom * span
    step = nice_step(want_hi - want_lo)
    new_lo = math.floor(want_lo / step + 1e-9) * step
    new_hi = math.ceil(want_hi / step - 1e-9) * step
    if lo >= 0:
        new_lo = max(new_lo, 0.0)
    return new_lo, new_hi


class TrainingCurves(QWidget):
    """Four plots (loss, accuracy, step loss, learning rate) of one or more runs.

    Signals
    -------
    redrawn()
        The plots show the latest data (after a coalesced redraw).
    """

    redrawn = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("trainingCurves")
        self.setAccessibleName("Training curves")
        # No antialiasing: a repaint of four plots must cost the GUI thread a few
        # milliseconds, not tens (measured with ui_bench --with-training).
        pg.setConfigOptions(antialias=False)
        self._view = pg.GraphicsLayoutWidget()
        self._view.setAccessibleName("Training curves plot")
        self._view.setMinimumHeight(260)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._view)
        self.plots = {
            "loss": self._view.addPlot(row=0, col=0, title="Loss per epoch"),
            "accuracy": self._view.addPlot(row=0, col=1, title="Accuracy per epoch"),
            "step": self._view.addPlot(row=1, col=0, title="Step loss (smoothed)"),
            "lr": self._view.addPlot(row=1, col=1, title="Learning rate"),
        }
        for key, plot in self.plots.items():
            plot.showGrid(x=True, y=True, alpha=0.25)
            plot.setLabel("bottom", "epoch")
            plot.setClipToView(True)
            plot.setDownsampling(auto=True, mode="peak")
            if key in ("loss", "accuracy"):
                plot.addLegend(offset=(-8, -8) if key == "accuracy" else (-8, 8), labelTextSize="8pt")
        # Fixed room for the tick labels: by default an axis widens when its labels do
        # ("0.9" -> "0.95"), which re-lays out the whole view and repaints all four plots
        # at once (20-30 ms of GUI thread) instead of the one whose data changed.
        label_room = QFontMetrics(self.font()).horizontalAdvance("0.00005") + 4
        for plot in self.plots.values():
            plot.getAxis("left").enableAutoSIPrefix(False)   # "loss (x0.001)" reads badly
            plot.getAxis("left").setStyle(autoExpandTextSpace=False, tickTextWidth=label_room)
        self.plots["loss"].setLabel("left", "loss")
        self.plots["accuracy"].setLabel("left", "accuracy", units="%")
        self.plots["step"].setLabel("left", "loss")
        self.plots["lr"].setLabel("left", "learning rate")
        self._runs: list[tuple[str, Curves]] = []
        self._items: dict[tuple[int, str], pg.PlotDataItem] = {}
        self._drawn: dict[int, tuple[int, int]] = {}   # run -> its curves' revisions seen
        self._stale: dict[str, None] = {}   # plots waiting for a redraw, the oldest first
        self._ranges: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {}   # plot -> (x, y) shown
        self._zoomed: set[str] = set()   # plots the user panned or zoomed: their view stays
        for key, plot in self.plots.items():
            plot.getViewBox().sigRangeChangedManually.connect(lambda *_, k=key: self._zoomed.add(k))
        self._dirty = False
        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._redraw)
        self.apply_palette()

    # ------------------------------------------------------------------ data
    def set_runs(self, runs: list[tuple[str, Curves]]) -> None:
        """Show these runs (name, curves), the first one in the first colour."""
        self._runs = list(runs)
        for plot in self.plots.values():
            plot.clear()
            if plot.legend is not None:
                plot.legend.clear()
        self._items.clear()
        self._drawn.clear()
        self._stale.clear()
        self._ranges.clear()
        for i, (name, _) in enumerate(self._runs):
            self._make_items(i, name)
        self.mark_dirty()

    def runs(self) -> list[tuple[str, Curves]]:
        return list(self._runs)

    def mark_dirty(self) -> None:
        """The curves' data changed: redraw on the next tick."""
        self._dirty = True
        if not self._timer.isActive():
            self._timer.start()

    def point_count(self, run: int = 0, curve: str = "val_accuracy") -> int:
        """How many points of ``curve`` of run ``run`` are drawn (tests, accessibility)."""
        item = self._items.get((run, curve))
        if item is None:
            return 0
        x, _ = item.getData()
        return 0 if x is None else len(x)

    def _make_items(self, i: int, name: str) -> None:
        many = len(self._runs) > 1
        color = QColor(RUN_COLORS[i % len(RUN_COLORS)])
        # One run: train and validation in two colours; overlaid runs: a colour per run,
        # train dashed.
        train_color = color if many else QColor(RUN_COLORS[0])
        val_color = color if many else QColor(RUN_COLORS[1])
        label = (lambda what: f"{name}: {what}") if many else (lambda what: what)
        dash = pg.QtCore.Qt.PenStyle.DashLine if many else pg.QtCore.Qt.PenStyle.SolidLine
        train_pen = pg.mkPen(train_color, width=2, style=dash)
        val_pen = pg.mkPen(val_color, width=2)

        def sym(c):
            return dict(symbol="o", symbolSize=5, symbolBrush=c, symbolPen=None)

        self._items[(i, "train_loss")] = self.plots["loss"].plot(pen=train_pen, name=label("train"), **sym(train_color))
        self._items[(i, "val_loss")] = self.plots["loss"].plot(pen=val_pen, name=label("validation"), **sym(val_color))
        self._items[(i, "train_accuracy")] = self.plots["accuracy"].plot(pen=train_pen, name=label("train"),
                                                                         **sym(train_color))
        self._items[(i, "val_accuracy")] = self.plots["accuracy"].plot(pen=val_pen, name=label("validation"),
                                                                       **sym(val_color))
        faint = QColor(color)
        faint.setAlpha(90)
        self._items[(i, "step_loss")] = self.plots["step"].plot(pen=pg.mkPen(faint, width=1))
        self._items[(i, "smoothed")] = self.plots["step"].plot(pen=pg.mkPen(color, width=2))
        self._items[(i, "lr")] = self.plots["lr"].plot(pen=pg.mkPen(color, width=2))
        self._style_legends()

    def _redraw(self) -> None:
        """One timer tick: note which plots' data changed, then redraw the one that has
        waited longest. One plot per tick, because repainting the four plots at once costs
        the GUI thread ~20-30 ms (pyqtgraph regenerates each changed axis, its grid and its
        labels in Python) -- a visible stutter of the canvas -- while one plot costs ~6 ms
        (measured with ui_bench --with-training). Four ticks of :data:`REDRAW_MS` put every
        point on screen within ~0.3 s of its event."""
        if self._dirty:
            self._dirty = False
            for i, (_, c) in enumerate(self._runs):
                drawn = self._drawn.get(i)
                now = (c.epoch_revision, c.step_revision)
                if drawn == now:
                    continue
                if drawn is None or drawn[0] != now[0]:
                    self._stale.update(dict.fromkeys(("loss", "accuracy")))
                    if not c.step:   # the learning rate per epoch until step events arrive
                        self._stale["lr"] = None
                if drawn is None or drawn[1] != now[1]:
                    self._stale.update(dict.fromkeys(("step", "lr")))
                self._drawn[i] = now
        if not self._stale:
            self._timer.stop()
            return
        plot = next(iter(self._stale))
        del self._stale[plot]
        self._draw_plot(plot)
        if not self._stale and not self._dirty:
            self._timer.stop()
            self.redrawn.emit()

    def _draw_plot(self, plot: str) -> None:
        """Hand ``plot``'s data of every run to pyqtgraph (``setData``: items are reused)."""
        xs: list[float] = []
        ys: list[float] = []
        for i, (_, c) in enumerate(self._runs):
            if plot == "loss":
                data = {"train_loss": _xy(c.epoch, c.train_loss), "val_loss": _xy(c.epoch, c.val_loss)}
            elif plot == "accuracy":
                data = {"train_accuracy": _xy(c.epoch, [None if v is None else 100 * v for v in c.train_accuracy]),
                        "val_accuracy": _xy(c.epoch, [None if v is None else 100 * v for v in c.val_accuracy])}
            elif plot == "step":
                data = {"step_loss": _xy(c.step_epoch, c.step_loss),
                        "smoothed": _xy(c.step_epoch, c.smoothed_step_loss())}
            else:
                data = {"lr": _xy(c.step_epoch, c.step_lr) if c.step else _xy(c.epoch, c.epoch_lr)}
            for key, (x, y) in data.items():
                self._items[(i, key)].setData(x, y)
                xs += x
                ys += y
        if xs:
            self._fit(plot, xs, ys)

    def _fit(self, plot: str, xs: list[float], ys: list[float]) -> None:
        """Show all of ``plot``'s data in ranges that move in round steps (see
        :func:`stepped_range`): most new points then repaint only their curve, not the axes."""
        vb = self.plots[plot].getViewBox()
        if plot in self._zoomed:
            if not any(vb.autoRangeEnabled()):
                return    # the user's pan or zoom stays until they ask for the whole view ("A")
            self._zoomed.discard(plot)
            self._ranges.pop(plot, None)
        x0, y0 = self._ranges.get(plot, (None, None))
        # Epochs from 0 with room to grow (a quarter of the run so far), so the x axis
        # changes a few times per doubling of the run, not at every epoch. The learning
        # rate from 0 up: a constant rate is a flat line at its value, not at the middle of
        # an arbitrary range.
        xr = stepped_range(0.0, max(xs), x0, from_zero=True, headroom=0.25)
        yr = stepped_range(min(ys), max(ys), y0, from_zero=plot == "lr")
        if (xr, yr) != (x0, y0):
            # A sliver of padding keeps the round end ticks inside the view, so they are labelled.
            vb.setRange(xRange=xr, yRange=yr, padding=0.02)   # also turns pyqtgraph's autorange off
            self._ranges[plot] = (xr, yr)

    def redraw_now(self) -> None:
        """Bring every plot up to date at once (exports; not while a run streams events)."""
        self._dirty = True
        self._redraw()
        while self._stale:
            self._redraw()

    # ------------------------------------------------------------------ look
    def apply_palette(self) -> None:
        """Follow the app's light or dark palette."""
        pal = QApplication.palette() if QApplication.instance() else QPalette()
        bg = pal.color(QPalette.ColorRole.Base)
        fg = pal.color(QPalette.ColorRole.Text)
        self._view.setBackground(bg)
        for plot in self.plots.values():
            plot.setTitle(plot.titleLabel.text, color=fg.name())
            for axis in ("left", "bottom"):
                ax = plot.getAxis(axis)
                ax.setPen(pg.mkPen(fg))
                ax.setTextPen(pg.mkPen(fg))
        self._style_legends()

    def _style_legends(self) -> None:
        pal = QApplication.palette() if QApplication.instance() else QPalette()
        fg, bg = pal.color(QPalette.ColorRole.Text), QColor(pal.color(QPalette.ColorRole.Base))
        bg.setAlpha(200)
        for plot in self.plots.values():
            legend = plot.legend
            if legend is None:
                continue
            legend.setBrush(pg.mkBrush(bg))
            legend.setLabelTextColor(fg)
            for _, label in legend.items:   # existing entries keep the colour they were made with
                label.setText(label.text, color=fg.name())

    def changeEvent(self, ev) -> None:
        from PySide6.QtCore import QEvent
        if ev.type() == QEvent.Type.PaletteChange:
            self.apply_palette()
        super().changeEvent(ev)

    # ------------------------------------------------------------------ export
    def save_png(self, path: str) -> bool:
        """The four plots as they are on screen, as a PNG."""
        self.redraw_now()
        return self._view.grab().save(path, "PNG")

    def csv_text(self) -> str:
        return curves_csv(self._runs)
