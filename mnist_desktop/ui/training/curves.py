"""Live training curves drawn with pyqtgraph: loss and accuracy per epoch (train and
validation), the smoothed step loss and the learning rate, for one run or several overlaid.

Events only mark the curves dirty; a 60 ms timer redraws what changed with
``PlotDataItem.setData`` (no item is re-created per event), so a fast stream of step
events costs the GUI thread one cheap redraw per tick, and a point is on screen well within
a second of its event.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QVBoxLayout, QWidget

from mnist_desktop.service.training_runs import Curves, curves_csv

REDRAW_MS = 60
# Colour-blind-safe (Okabe-Ito) colours, one per overlaid run.
RUN_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def _xy(xs, ys):
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


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
        pg.setConfigOptions(antialias=True)
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
        for plot in self.plots.values():
            plot.getAxis("left").enableAutoSIPrefix(False)   # "loss (x0.001)" reads badly
        self.plots["loss"].setLabel("left", "loss")
        self.plots["accuracy"].setLabel("left", "accuracy", units="%")
        self.plots["step"].setLabel("left", "loss")
        self.plots["lr"].setLabel("left", "learning rate")
        self._runs: list[tuple[str, Curves]] = []
        self._items: dict[tuple[int, str], pg.PlotDataItem] = {}
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
        if not self._dirty:
            self._timer.stop()
            return
        self._dirty = False
        for i, (_, c) in enumerate(self._runs):
            pct = [None if v is None else 100 * v for v in c.train_accuracy]
            vpct = [None if v is None else 100 * v for v in c.val_accuracy]
            data = {
                "train_loss": _xy(c.epoch, c.train_loss), "val_loss": _xy(c.epoch, c.val_loss),
                "train_accuracy": _xy(c.epoch, pct), "val_accuracy": _xy(c.epoch, vpct),
                "step_loss": _xy(c.step_epoch, c.step_loss), "smoothed": _xy(c.step_epoch, c.smoothed_step_loss()),
                "lr": _xy(c.step_epoch, c.step_lr) if c.step else _xy(c.epoch, c.epoch_lr),
            }
            for key, (x, y) in data.items():
                self._items[(i, key)].setData(x, y)
        # The learning rate from 0 up: a constant rate is a flat line at its value, not at
        # the middle of an arbitrary range.
        top = max((v for _, c in self._runs for v in (c.step_lr or c.epoch_lr) if v is not None), default=0.0)
        if top > 0:
            self.plots["lr"].setYRange(0, top * 1.1, padding=0)
        self.redrawn.emit()

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
        self._redraw()
        return self._view.grab().save(path, "PNG")

    def csv_text(self) -> str:
        return curves_csv(self._runs)
