"""The batch window: classify folders, review the results, export, sort into folders.

``BatchWindow(model, device)`` is handed the model it uses (a loaded Predictor, a model
file path, or None for the bundled model; a path is loaded on the worker thread). All
long work - listing and classification, export, sorting, undo - runs as a Qt-free core
generator on a :class:`~mnist_desktop.ui.batch.worker.TaskRunner`; results come back
through signals in coalesced chunks and land in one
:class:`~mnist_desktop.core.batch.ResultStore` shown by a table and a thumbnail grid.
Labels corrected by hand are journaled to disk as they are made
(:class:`~mnist_desktop.core.batch.CorrectionJournal`) until they are exported: closing
asks first, and after a crash the next open of the same inputs offers them back.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PySide6.QtCore import QEvent, QModelIndex, QPointF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QKeySequence, QPixmap, QStaticText
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDialog, QDialogButtonBox,
                               QFileDialog, QFormLayout, QHBoxLayout, QHeaderView, QLabel,
                               QLineEdit, QListView, QMainWindow, QMessageBox, QProgressBar, QPushButton,
                               QRadioButton, QSplitter, QStyle, QStyledItemDelegate, QTableView, QTableWidget,
                               QTableWidgetItem, QTabWidget, QToolBar, QVBoxLayout, QWidget)

from mnist_desktop.core.batch import (CorrectionJournal, ResultStore, display_path, format_duration,
                                      pending_journals, write_results)
from mnist_desktop.core.predictor import Predictor
from mnist_desktop.service.classify import Listed, ModelReady, Note, Results
from mnist_desktop.service.models import LoadedPredictor
from mnist_desktop.ui.batch.loaders import THUMB, ImageLoader, array_to_qimage
from mnist_desktop.ui.batch.models import BatchResultModel, Column, Filter, ResultFilterProxy
from mnist_desktop.ui.batch.worker import TaskRunner, classify_task


log = logging.getLogger(__name__)


def _call_task(fn, *args):
    """A task (see :data:`~mnist_desktop.ui.batch.worker.Task`) that runs ``fn(*args)``
    once and returns its value."""
    def task(should_cancel):
        return fn(*args)
        yield  # unreachable: makes this function a generator
    return task


# --------------------------------------------------------------------------- detail panel

class DetailPanel(QWidget):
    """The selected file: the 28x28 image the model saw, its probabilities, and a
    control to correct its label by hand."""

    correctionRequested = Signal(int, object)   # store row, label (None: clear)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._row = -1
        self._labels: list[str] = []
        self.preview = QLabel(objectName="preview", alignment=Qt.AlignCenter)
        self.preview.setFixedSize(28 * 7, 28 * 7)
        self.preview.setStyleSheet("background: black; color: #bbb;")
        self.path = QLabel(objectName="path", wordWrap=True, textInteractionFlags=Qt.TextSelectableByMouse)
        self.summary = QLabel(objectName="summary", wordWrap=True)
        self.bars_box = QWidget()
        self.bars = QFormLayout(self.bars_box)
        self.bars.setContentsMargins(0, 0, 0, 0)
        self._bar_widgets: list[QProgressBar] = []
        self.correct = QComboBox(objectName="correct")
        self.correct.setToolTip("Correct the label by hand (or press the label's key in the grid/table)")
        self.correct.activated.connect(self._on_correct)
        lay = QVBoxLayout(self)
        lay.addWidget(self.preview, 0, Qt.AlignHCenter)
        lay.addWidget(QLabel("what the model sees (28x28)", alignment=Qt.AlignCenter))
        lay.addWidget(self.path)
        lay.addWidget(self.summary)
        lay.addWidget(self.bars_box)
        row = QHBoxLayout()
        row.addWidget(QLabel("Correct label:"))
        row.addWidget(self.correct, 1)
        lay.addLayout(row)
        lay.addStretch(1)
        self.set_labels([])

    def set_labels(self, labels: list[str]) -> None:
        self._labels = list(labels)
        while self.bars.rowCount():
            self.bars.removeRow(0)
        self._bar_widgets = []
        for lab in labels:
            bar = QProgressBar(maximum=1000, textVisible=True)
            bar.setFormat("%p%")
            self.bars.addRow(lab, bar)
            self._bar_widgets.append(bar)
        self.correct.clear()
        self.correct.addItem("(prediction)", None)
        for lab in labels:
            self.correct.addItem(lab, lab)
        self.clear()

    def clear(self) -> None:
        self._row = -1
        self.preview.clear()
        self.path.setText("Select a result to see what the model saw.")
        self.summary.clear()
        for bar in self._bar_widgets:
            bar.setValue(0)
            bar.setFormat("")
        self.correct.setEnabled(False)

    @property
    def row(self) -> int:
        return self._row

    def show_row(self, store: ResultStore, row: int) -> None:
        self._row = row
        self.path.setText(display_path(store.path(row)))
        self.preview.clear()
        self.preview.setText("…")
        ok = store.ok(row)
        if ok:
            text = f"predicted <b>{store.prediction(row)}</b> ({100 * float(store.confidence[row]):.1f}%)"
            if store.uncertain[row]:
                text += " — <b>uncertain</b>"
            if store.true_label(row) is not None:
                text += f"<br>folder label: {store.true_label(row)}"
            if store.corrected_label(row) is not None:
                text += f"<br>corrected to: <b>{store.corrected_label(row)}</b>"
            if store.number(row) is not None:
                number = store.number(row) or "(nothing read)"
                text += (f"<br>read as the number <b>{number}</b> "
                         f"({100 * float(store.number_confidence[row]):.1f}% that every digit is right)")
            for bar, p in zip(self._bar_widgets, store.probs[row]):
                bar.setValue(int(round(1000 * float(p))))
                bar.setFormat(f"{100 * float(p):.1f}%")
        else:
            text = f"<span style='color:#b00020'>{store.error(row)}</span>"
            for bar in self._bar_widgets:
                bar.setValue(0)
                bar.setFormat("")
        self.summary.setText(text)
        self.correct.setEnabled(ok)
        self.correct.blockSignals(True)
        lab = store.corrected_label(row)
        self.correct.setCurrentIndex(0 if lab is None else self._labels.index(lab) + 1)
        self.correct.blockSignals(False)

    def show_preview(self, row: int, image, error: str) -> None:
        if row != self._row:
            return
        if image is None:
            self.preview.setText(error or "no preview")
            return
        pm = QPixmap.fromImage(array_to_qimage(image)).scaled(
            self.preview.size(), Qt.KeepAspectRatio, Qt.FastTransformation)  # keep the pixels visible
        self.preview.setPixmap(pm)

    def _on_correct(self, index: int) -> None:
        if self._row >= 0:
            self.correctionRequested.emit(self._row, self.correct.itemData(index))


# --------------------------------------------------------------------------- metrics panel

class MetricsPanel(QWidget):
    """Accuracy, per-class precision/recall and the confusion matrix of inputs labelled
    by sub-folder name. Clicking a matrix cell asks to show the images in it."""

    cellClicked = Signal(int, int)   # true class index, predicted class index

    def __init__(self, parent=None):
        super().__init__(parent)
        self.summary = QLabel("No labelled inputs: put images in sub-folders named after the classes "
                              "(0/, 1/, ...) to measure accuracy.", wordWrap=True, objectName="metricsSummary")
        self.per_class = QTableWidget(0, 4, objectName="perClass")
        self.per_class.setHorizontalHeaderLabels(["precision", "recall", "F1", "support"])
        self.per_class.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.confusion = QTableWidget(0, 0, objectName="confusion")
        self.confusion.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.confusion.setToolTip("Rows: folder label; columns: prediction. Click a cell to see its images.")
        self.confusion.cellClicked.connect(lambda r, c: self.cellClicked.emit(r, c))
        self.per_class.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.confusion.horizontalHeader().setSectionResizeMode(QHeaderView.Fixed)
        self.confusion.horizontalHeader().setDefaultSectionSize(44)
        self.confusion.verticalHeader().setSectionResizeMode(QHeaderView.Fixed)
        self.confusion.verticalHeader().setDefaultSectionSize(30)
        lay = QVBoxLayout(self)
        lay.addWidget(self.summary)
        split = QSplitter(Qt.Horizontal)
        split.addWidget(self.per_class)
        box = QWidget()
        bl = QVBoxLayout(box)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.addWidget(QLabel("Confusion matrix (rows: folder label, columns: prediction) — click a cell"))
        bl.addWidget(self.confusion)
        split.addWidget(box)
        split.setStretchFactor(1, 1)
        split.setSizes([330, 600])
        lay.addWidget(split, 1)
        self.report: dict | None = None

    def update_report(self, report: dict | None) -> None:
        self.report = report
        if not report:
            self.per_class.setRowCount(0)
            self.confusion.setRowCount(0)
            self.confusion.setColumnCount(0)
            return
        labels = report["labels"]
        self.summary.setText(f"Labelled by folder: {report['n']:,} files — accuracy "
                             f"<b>{100 * report['accuracy']:.2f}%</b>, macro F1 {report['macro_f1']:.4f}")
        self.per_class.setRowCount(len(labels))
        self.per_class.setVerticalHeaderLabels(labels)
        for r, lab in enumerate(labels):
            s = report["per_class"][lab]
            for c, v in enumerate((f"{s['precision']:.4f}", f"{s['recall']:.4f}", f"{s['f1']:.4f}",
                                   str(s["support"]))):
                self.per_class.setItem(r, c, QTableWidgetItem(v))
        cm = np.asarray(report["confusion_matrix"])
        self.confusion.setRowCount(len(labels))
        self.confusion.setColumnCount(len(labels))
        self.confusion.setHorizontalHeaderLabels(labels)
        self.confusion.setVerticalHeaderLabels(labels)
        off = cm.copy()
        np.fill_diagonal(off, 0)
        diag_peak, off_peak = max(1, int(cm.diagonal().max())), max(1, int(off.max()))
        for t in range(len(labels)):
            for p in range(len(labels)):
                v = int(cm[t, p])
                item = QTableWidgetItem(str(v) if v else "")
                item.setTextAlignment(Qt.AlignCenter)
                if v:
                    # Shade by count: green diagonal, red confusions scaled to the worst one
                    # so that a handful of errors still stands out next to 1,000 hits.
                    item.setBackground(QColor(40, 160, 60, 40 + int(150 * v / diag_peak)) if t == p
                                       else QColor(210, 40, 40, 50 + int(170 * v / off_peak)))
                self.confusion.setItem(t, p, item)


# --------------------------------------------------------------------------- sort dialog

class SortDialog(QDialog):
    """Destination folder, copy or move, all rows or only those shown."""

    def __init__(self, parent=None, start_dir: str = ""):
        super().__init__(parent)
        self.setWindowTitle("Sort into folders")
        self.dest = QLineEdit(start_dir, objectName="dest")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.copy = QRadioButton("Copy files", checked=True, objectName="copy")
        self.move = QRadioButton("Move files", objectName="move")
        self.visible_only = QCheckBox("Only the results shown (current filter)", objectName="visibleOnly")
        form = QFormLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.dest, 1)
        row.addWidget(browse)
        form.addRow("Destination:", row)
        form.addRow(self.copy)
        form.addRow(self.move)
        form.addRow(self.visible_only)
        form.addRow(QLabel("One sub-folder per class (the corrected label where set, else the prediction). "
                           "Existing files are never overwritten: clashing names get a _1, _2… suffix. "
                           "A log in the destination lets you undo the sort.", wordWrap=True))
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form.addRow(self.buttons)

    def _browse(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Destination folder", self.dest.text())
        if d:
            self.dest.setText(d)

    @property
    def mode(self) -> str:
        return "move" if self.move.isChecked() else "copy"


#: Results reach the window at most this often (seconds): each delivery relayouts and
#: repaints the grid, which would otherwise take CPU from the classification itself.
RESULT_INTERVAL = 0.25


class _GridDelegate(QStyledItemDelegate):
    """Grid cells: the thumbnail, and 'prediction  confidence' (or the correction, or
    'error') under it.

    Painted straight from the store in one Python call per cell: the stock delegate
    asks the model for ten roles per cell and each is a call into Python, which made a
    grid repaint cost some 55 ms of GUI-thread time while a batch was streaming in.
    """

    def __init__(self, view: QListView, model: BatchResultModel, proxy: ResultFilterProxy,
                 loader: ImageLoader):
        super().__init__(view)
        self._model, self._proxy, self._loader = model, proxy, loader
        self._size = QSize(THUMB + 36, THUMB + 30)
        self._error_pen = QColor("#b00020")
        self._uncertain = QColor(255, 200, 0, 60)
        # Captions repeat ("7  99.9%"): a laid-out QStaticText draws at a third of the
        # cost of drawText, which shapes the text again for every cell.
        self._captions: dict[str, QStaticText] = {}

    def sizeHint(self, option, index) -> QSize:
        return self._size

    def paint(self, painter, option, index) -> None:
        model = self._model
        store = model.store
        if store is None:
            return
        i = model.store_row(self._proxy.mapToSource(index).row())
        rect, palette = option.rect, option.palette
        state = option.state.value   # an int: enum.Flag arithmetic costs microseconds per cell
        selected = bool(state & _SELECTED)
        ok = store.ok(i)
        painter.save()
        if selected:
            painter.fillRect(rect, palette.highlight())
        elif ok and store.uncertain[i]:
            painter.fillRect(rect, self._uncertain)
        pm = self._loader.pixmap(i, store.path(i)) if ok else self._loader.broken_pixmap
        top = rect.y() + 3
        painter.drawPixmap(rect.x() + (rect.width() - pm.width()) // 2, top + (THUMB - pm.height()) // 2, pm)
        painter.setPen(palette.highlightedText().color() if selected
                       else palette.text().color() if ok else self._error_pen)
        caption = self._caption(model.grid_text(i))
        x = rect.x() + max(2.0, (rect.width() - caption.size().width()) / 2)
        painter.drawStaticText(QPointF(x, top + THUMB + 2), caption)
        if state & _FOCUSED and not selected:
            painter.setPen(palette.highlight().color())
            painter.drawRect(rect.adjusted(0, 0, -1, -1))
        painter.restore()


    def _caption(self, text: str) -> QStaticText:
        st = self._captions.get(text)
        if st is None:
            if len(self._captions) > 4096:
                self._captions.clear()
            st = self._captions[text] = QStaticText(text)
            st.setTextFormat(Qt.TextFormat.PlainText)
        return st


_SELECTED = QStyle.StateFlag.State_Selected.value
_FOCUSED = QStyle.StateFlag.State_HasFocus.value


class BatchWindow(QMainWindow):
    """Batch-classify folders and files, review, correct, export and sort the results.

    Parameters
    ----------
    model
        A loaded :class:`~mnist_desktop.core.predictor.Predictor` (shared, e.g. the main
        window's), a model file path, or None for the bundled model. Paths are loaded on
        the worker thread at the first run.
    device
        ``auto``, ``cpu`` or ``cuda`` when ``model`` is a path.
    parent
        Optional parent widget (the main window).
    workers
        Decoding processes (None: one per core; 0: in the worker thread).
    """

    runStarted = Signal()
    runFinished = Signal(bool)          # cancelled
    exportFinished = Signal(str)        # path written
    sortFinished = Signal(object)       # mnist_desktop.core.sorting.SortProgress
    undoFinished = Signal(object)       # mnist_desktop.core.sorting.UndoReport
    failed = Signal(str)                # a task failed (one line)

    def __init__(self, model=None, device: str = "auto", parent=None, *, workers: int | None = None):
        super().__init__(parent)
        self.setWindowTitle("Batch classify — mnist-desktop")
        self.setAcceptDrops(True)
        self.resize(1180, 760)
        self._model_source = model
        self._device = device
        self._workers = workers
        # A loaded model is used as it is (no reload per run); a path is loaded at the first run.
        self._loaded = model if isinstance(model, LoadedPredictor) else \
            (LoadedPredictor(model) if isinstance(model, Predictor) else None)
        self.predictor = self._loaded.predictor if self._loaded else None
        self.store: ResultStore | None = None
        self._runner: TaskRunner | None = None
        self._task_kind = ""
        self._inputs: list[str] = []
        self._total: int | None = None
        self._last_sort_log: Path | None = None
        self._exported = True
        self._journal: CorrectionJournal | None = None   # this run's corrections, on disk
        self._earlier: dict[str, str] = {}   # an earlier session's corrections of these inputs
        self._restore_unasked = False        # restore self._earlier without asking (asked at start)
        self._replaying = False
        self._corrected_since_export = 0
        self._offered_journals = False
        self._numbers_run = False            # the current results were read as numbers too

        self.loader = ImageLoader(self)
        self.model = BatchResultModel(self.loader, self)
        self.proxy = ResultFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self.loader.thumbnailReady.connect(self.model.refresh_thumbnail)
        self.loader.previewReady.connect(lambda row, img, err: self.detail.show_preview(row, img, err))
        self.model.correctionChanged.connect(self._on_correction_changed)

        self._build_actions()
        self._build_views()
        self._show_number_columns(False)
        self._set_running(False)

    # ------------------------------------------------------------------ construction
    def _build_actions(self) -> None:
        tb = QToolBar("Batch", objectName="batchToolbar")
        tb.setMovable(False)
        self.addToolBar(tb)

        def action(text, slot, shortcut=None, name=None):
            a = QAction(text, self)
            a.triggered.connect(slot)
            if shortcut:
                a.setShortcut(shortcut)
            a.setObjectName(name or text)
            tb.addAction(a)
            return a

        self.open_folder_action = action("Open folder…", self._choose_folder, QKeySequence.Open, "openFolder")
        self.open_files_action = action("Open files…", self._choose_files, None, "openFiles")
        self.recursive = QCheckBox("Sub-folders", checked=True, objectName="recursive")
        tb.addWidget(self.recursive)
        self.read_numbers = QCheckBox("Read numbers", checked=False, objectName="readNumbers")
        self.read_numbers.setToolTip("Also read every image as a number (several digits side by side): "
                                     "adds Number and Number confidence columns, exported too")
        self.read_numbers.setAccessibleName("Read numbers")
        tb.addWidget(self.read_numbers)
        self.cancel_action = action("Cancel", self.cancel, QKeySequence(Qt.Key_Escape), "cancel")
        tb.addSeparator()
        self.export_action = action("Export…", self._choose_export, QKeySequence.Save, "export")
        self.sort_action = action("Sort into folders…", self._open_sort_dialog, None, "sort")
        self.undo_action = action("Undo last sort", lambda: self.undo_sort(), None, "undoSort")
        self.undo_file_action = action("Undo a sort from its log…", self._choose_undo_log, None, "undoSortFile")
        tb.addSeparator()
        tb.addWidget(QLabel(" Show: "))
        self.filter_box = QComboBox(objectName="filter")
        for text, mode in (("All results", Filter.ALL), ("Uncertain (review queue)", Filter.UNCERTAIN),
                           ("Errors", Filter.ERRORS), ("Corrected by hand", Filter.CORRECTED),
                           ("Misclassified (labelled)", Filter.MISCLASSIFIED)):
            self.filter_box.addItem(text, mode)
        self.filter_box.activated.connect(self._on_filter_chosen)
        tb.addWidget(self.filter_box)
        self.count_label = QLabel("", objectName="count")
        tb.addWidget(self.count_label)

    def _build_views(self) -> None:
        self.progress = QProgressBar(objectName="progress", textVisible=True)
        self.status = QLabel("Open or drop folders and image files to classify them.", objectName="status")

        self.grid = QListView(objectName="grid")
        self.grid.setViewMode(QListView.IconMode)
        self.grid.setModel(self.proxy)
        self.grid.setIconSize(QSize(THUMB, THUMB))
        self.grid.setGridSize(QSize(THUMB + 36, THUMB + 30))
        self.grid.setUniformItemSizes(True)
        self.grid.setLayoutMode(QListView.Batched)   # 200,000 items lay out in slices
        self.grid.setBatchSize(2000)
        self.grid.setResizeMode(QListView.Adjust)
        self.grid.setMovement(QListView.Static)
        self.grid.setDragEnabled(False)
        self.grid.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.grid.setItemDelegate(_GridDelegate(self.grid, self.model, self.proxy, self.loader))

        self.table = QTableView(objectName="table")
        self.table.setModel(self.proxy)
        self.table.setSelectionModel(self.grid.selectionModel())  # one selection for both views
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(-1, Qt.AscendingOrder)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.horizontalHeader().setSectionResizeMode(Column.FILE, QHeaderView.Stretch)
        self.table.setEditTriggers(QAbstractItemView.DoubleClicked | QAbstractItemView.EditKeyPressed)
        self.table.setIconSize(QSize(20, 20))

        self.metrics = MetricsPanel()
        self.metrics.cellClicked.connect(self.show_cell)
        self.tabs = QTabWidget(objectName="tabs")
        self.tabs.addTab(self.grid, "Grid")
        self.tabs.addTab(self.table, "Table")
        self.tabs.addTab(self.metrics, "Accuracy")

        self.detail = DetailPanel()
        self.detail.correctionRequested.connect(lambda row, lab: self.model.set_correction(row, lab))
        self.grid.selectionModel().currentChanged.connect(self._on_current_changed)
        for view in (self.grid, self.table):
            view.installEventFilter(self)
            view.setAcceptDrops(False)

        split = QSplitter(Qt.Horizontal)
        split.addWidget(self.tabs)
        split.addWidget(self.detail)
        split.setStretchFactor(0, 1)
        central = QWidget()
        lay = QVBoxLayout(central)
        top = QHBoxLayout()
        top.addWidget(self.progress, 1)
        top.addWidget(self.status, 2)
        lay.addLayout(top)
        lay.addWidget(split, 1)
        self.setCentralWidget(central)
        self.proxy.rowsInserted.connect(self._update_count)
        self.proxy.modelReset.connect(self._update_count)
        self.proxy.layoutChanged.connect(self._update_count)
        self.proxy.filterChanged.connect(self._update_count)

    # ------------------------------------------------------------------ running
    def is_running(self) -> bool:
        return self._runner is not None and self._runner.is_running()

    def classify(self, paths: Iterable[str | os.PathLike]) -> bool:
        """Start classifying ``paths`` (files and folders); the results replace the
        current ones. Returns False when a task is already running."""
        if self.is_running():
            return False
        self._inputs = [os.fsdecode(p) for p in paths]
        if not self._inputs:
            return False
        self.model.reset(None)
        self.loader.reset()
        self.detail.clear()
        self.metrics.update_report(None)
        self.tabs.setTabText(2, "Accuracy")
        self.store = None
        self._total = None
        self._exported = True
        self._journal = CorrectionJournal.for_inputs(self._inputs)
        self._earlier = self._journal.corrections()
        self._restore_unasked = False
        self.proxy.set_filter(Filter.ALL)
        self._sync_filter_box()
        self._numbers_run = self.read_numbers.isChecked()
        self._show_number_columns(self._numbers_run)
        task = classify_task(self._inputs, self._loaded or self._model_source, self._device,
                             recursive=self.recursive.isChecked(), workers=self._workers,
                             interval=RESULT_INTERVAL, numbers=self._numbers_run)
        self._start(task, "classify", self._on_classify_event)
        self.progress.setRange(0, 0)
        self.status.setText("Listing files…")
        self.runStarted.emit()
        return True

    def _show_number_columns(self, show: bool) -> None:
        for col in Column.NUMBER_COLUMNS:
            self.table.setColumnHidden(col, not show)

    def cancel(self) -> None:
        """Stop the running task; results so far are kept."""
        if self.is_running():
            self.status.setText("Cancelling…")
            self._runner.cancel()

    def _start(self, task, kind: str, on_progress=None) -> None:
        if self._runner is not None:
            self._runner.deleteLater()   # finished and joined: let Qt free its thread
        self._runner = TaskRunner(task, self)
        self._task_kind = kind
        if on_progress is not None:
            self._runner.progress.connect(on_progress)
        self._runner.finished.connect(self._on_task_finished)
        self._runner.failed.connect(self._on_task_failed)
        self._set_running(True)
        self._runner.start()

    def _on_classify_event(self, ev) -> None:
        if isinstance(ev, ModelReady):
            self._loaded = ev.loaded
            self.predictor = ev.loaded.predictor
            self.store = ResultStore(self.predictor.labels)
            self.model.reset(self.store)
            self.detail.set_labels(self.predictor.labels)
            if ev.loaded.notes:
                self.statusBar().showMessage("; ".join(ev.loaded.notes), 10000)
        elif isinstance(ev, Listed):
            self._total = ev.total + len(ev.errors)
            self.progress.setRange(0, max(1, self._total))
            self.progress.setValue(0)
            self.status.setText(f"{self._total:,} files")
            if ev.errors:
                self.model.append_rows(self.store.extend(ev.errors))
        elif isinstance(ev, Note):
            log.warning("batch: %s", ev.text)
            self.statusBar().showMessage(ev.text, 20000)
        elif isinstance(ev, Results):
            rows = self.store.extend(ev.rows)
            self.model.append_rows(rows)
            self.progress.setValue(len(self.store))
            if ev.progress is not None:
                self.status.setText(self._describe(ev.progress))

    def _describe(self, prog) -> str:
        text = f"{len(self.store):,} / {self._total:,} files  {prog.rate:,.0f} images/s"
        left = (self._total - len(self.store)) / prog.rate if prog.rate > 0 else None
        if left is not None:
            text += f"  ETA {format_duration(left)}"
        if self.store.failed:
            text += f"  {self.store.failed:,} unreadable"
        return text

    def _on_task_finished(self, result: Any, cancelled: bool) -> None:
        kind = self._task_kind
        self._set_running(False)
        if kind == "classify":
            self._finish_classify(cancelled)
        elif kind == "export":
            if not self._corrected_since_export:   # else the file lacks the newest ones
                self._exported = True
                self._clear_journal()
            self.statusBar().showMessage(f"Exported {len(self.store):,} results to {display_path(result)}", 10000)
            self.exportFinished.emit(str(result))
        elif kind == "sort":
            self._finish_sort(result, cancelled)
        elif kind == "undo":
            self._finish_undo(result)

    def _finish_classify(self, cancelled: bool) -> None:
        n = len(self.store) if self.store is not None else 0
        self.progress.setRange(0, max(1, self._total or n))
        self.progress.setValue(n)
        if self.store is not None:
            self.model.resort()
            self.metrics.update_report(self.store.report())
            head = f"Cancelled: {n:,} of {self._total or 0:,} files classified" if cancelled else \
                f"Done: {n:,} files"
            self.status.setText(head + (f", {self.store.failed:,} unreadable" if self.store.failed else "")
                                + (f", {int(self.store.column('uncertain').sum()):,} uncertain"))
            if self.store.has_true_labels and not cancelled:
                self.tabs.setTabText(2, "Accuracy ✓")
            self._offer_earlier_corrections()
        self.runFinished.emit(cancelled)

    def _on_task_failed(self, message: str) -> None:
        kind = self._task_kind
        self._set_running(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        log.error("batch %s failed: %s", kind, message)
        self.status.setText(f"<span style='color:#b00020'>{kind} failed: {message}</span>")
        self.failed.emit(message)
        if kind == "classify":
            self.runFinished.emit(True)

    def _set_running(self, running: bool) -> None:
        have = self.store is not None and len(self.store) > 0
        self.cancel_action.setEnabled(running)
        for a in (self.open_folder_action, self.open_files_action):
            a.setEnabled(not running)
        for a in (self.export_action, self.sort_action):
            a.setEnabled(not running and have)
        self.undo_action.setEnabled(not running and self._last_sort_log is not None)
        self.undo_file_action.setEnabled(not running)

    # ------------------------------------------------------------------ inputs
    def _choose_folder(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Classify the images in a folder")
        if d and self._confirm_discard():
            self.classify([d])

    def _choose_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Classify image files", "",
                                                "Images (*.png *.jpg *.jpeg *.bmp *.gif *.tif *.tiff *.webp *.pgm *.ppm);;All files (*)")
        if files and self._confirm_discard():
            self.classify(files)

    def _confirm_discard(self, question: str = "Discard them?") -> bool:
        """Whether the hand corrections may go (none, exported, or the user says so);
        discarded ones leave the journal too."""
        if self.store is None or not self.store.has_corrections or self._exported:
            return True
        if QMessageBox.question(self, "Discard corrections?",
                                f"The labels you corrected by hand have not been exported. {question}"
                                ) != QMessageBox.Yes:
            return False
        self._exported = True   # nothing left to lose: a later close does not ask again
        self._clear_journal()
        return True

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths and not self.is_running() and self._confirm_discard():
            event.acceptProposedAction()
            self.classify(paths)

    # ------------------------------------------------------------------ review
    def _on_current_changed(self, current: QModelIndex, _prev=None) -> None:
        if not current.isValid() or self.store is None:
            self.detail.clear()
            return
        row = self.proxy.store_row(current)
        self.detail.show_row(self.store, row)
        if self.store.ok(row) and self.predictor is not None:
            self.loader.request_preview(row, self.store.path(row), self.predictor.options)
        elif not self.store.ok(row):
            self.detail.show_preview(row, None, self.store.error(row))

    def select_store_row(self, row: int) -> bool:
        """Make store row ``row`` current in the views (when the filter shows it)."""
        src = self.model.index(self.model.view_row(row), 0)
        idx = self.proxy.mapFromSource(src)
        if not idx.isValid():
            return False
        self.grid.setCurrentIndex(idx)
        return True

    def _on_correction_changed(self, row: int) -> None:
        self._exported = False
        self._corrected_since_export += 1
        if not self._replaying:
            self._journal_record(row)
        if self.detail.row == row:
            self.detail.show_row(self.store, row)
        if self.proxy.mode == Filter.CORRECTED:
            self.proxy.refilter()

    def eventFilter(self, obj, event) -> bool:
        # In the grid or table, typing a class label corrects the current item and moves
        # on to the next one: fast review of the uncertain queue from the keyboard.
        if event.type() == QEvent.KeyPress and obj in (self.grid, self.table) and self.store is not None:
            text = event.text()
            if text and text in self.store.labels:
                cur = obj.currentIndex()
                if cur.isValid():
                    row = self.proxy.store_row(cur)
                    if self.model.set_correction(row, text):
                        nxt = self.proxy.index(cur.row() + 1, 0)
                        if nxt.isValid():
                            obj.setCurrentIndex(nxt)
                    return True
        return super().eventFilter(obj, event)

    def set_filter(self, mode: str, cell: tuple[int, int] | None = None) -> None:
        """Show all results or only: uncertain, errors, corrected, misclassified, or the
        confusion-matrix ``cell`` (true index, predicted index)."""
        self.proxy.set_filter(mode, cell)
        self._sync_filter_box()

    def show_cell(self, true_index: int, predicted_index: int) -> None:
        """Show the images of one confusion-matrix cell in the grid."""
        self.set_filter(Filter.CELL, (true_index, predicted_index))
        self.tabs.setCurrentWidget(self.grid)

    def _on_filter_chosen(self, index: int) -> None:
        mode = self.filter_box.itemData(index)
        if mode != Filter.CELL:
            self.set_filter(mode)

    def _sync_filter_box(self) -> None:
        box = self.filter_box
        last = box.count() - 1
        if box.itemData(last) == Filter.CELL:
            box.removeItem(last)
        if self.proxy.mode == Filter.CELL:
            box.addItem(f"Cell: {self.proxy.describe()}", Filter.CELL)
            box.setCurrentIndex(box.count() - 1)
        else:
            box.setCurrentIndex(max(0, box.findData(self.proxy.mode)))

    def _update_count(self, *args) -> None:
        total = self.model.rowCount()
        shown = self.proxy.rowCount()
        self.count_label.setText(f"  {shown:,} shown" + (f" of {total:,}" if shown != total else ""))

    def visible_store_rows(self) -> list[int]:
        """Store rows the current filter shows, in view order."""
        return [self.proxy.store_row(self.proxy.index(r, 0)) for r in range(self.proxy.rowCount())]

    # ------------------------------------------------------------------ export
    def _choose_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export results", "results.csv",
                                              "CSV (*.csv);;JSON (*.json)")
        if path:
            if Path(path).suffix.lower() not in (".csv", ".json"):
                path += ".csv"
            self.export_results(path)

    def export_results(self, path: str | os.PathLike) -> bool:
        """Write all results to ``path`` (.csv or .json) on the worker thread: the
        columns of ``mnist-desktop classify``, plus ``corrected_label`` when any label
        was corrected. :attr:`exportFinished` reports the path; the corrections it holds
        leave the journal."""
        if self.is_running() or self.store is None:
            return False
        self._corrected_since_export = 0
        self._start(_call_task(self._write, str(path)), "export")
        self.status.setText(f"Exporting to {display_path(path)}…")
        return True

    def _write(self, path: str) -> str:
        write_results(path, self.store, self.store.labels, numbers=self._numbers_run)
        return path

    # ------------------------------------------------------------------ sort & undo
    def _open_sort_dialog(self) -> None:
        dlg = SortDialog(self, str(Path(self._inputs[0]).parent / "sorted") if self._inputs else "")
        dlg.setObjectName("sortDialog")
        dlg.accepted.connect(lambda: self.sort_into_folders(
            dlg.dest.text(), dlg.mode, self.visible_store_rows() if dlg.visible_only.isChecked() else None))
        dlg.open()

    def sort_into_folders(self, dest: str | os.PathLike, mode: str = "copy",
                          rows: list[int] | None = None) -> bool:
        """Copy or move the classified files into ``dest/<label>/`` (corrected label
        where set), never overwriting; :attr:`sortFinished` reports the outcome and the
        undo log. ``rows``: store rows to sort (default: all)."""
        from mnist_desktop.core.sorting import sort_into_folders, sort_items

        if self.is_running() or self.store is None or not str(dest).strip():
            return False
        items = sort_items(self.store, rows)
        total = len(items)

        def task(should_cancel):
            last = None
            for last in sort_into_folders(items, dest, mode=mode, total=total, should_cancel=should_cancel):
                yield (last.done, last.total)
            return last

        self._start(task, "sort", self._on_sort_progress)
        self.progress.setRange(0, max(1, total))
        self.status.setText(f"Sorting {total:,} files into {display_path(dest)}…")
        return True

    def _on_sort_progress(self, counts) -> None:
        done, total = counts
        self.progress.setValue(done)
        self.status.setText(f"Sorting: {done:,} / {total:,} files")

    def _finish_sort(self, result, cancelled: bool = False) -> None:
        if result is None:
            return
        self._last_sort_log = result.log_path
        if result.placed and self.store is not None:
            self.store.relocate(result.placed)  # moved files: thumbnails and previews follow them
            self.model.dataChanged.emit(self.model.index(0, 0),
                                        self.model.index(self.model.rowCount() - 1, 0))
        msg = (f"Sort cancelled after {result.moved:,} files" if cancelled else f"Sorted {result.moved:,} files") \
            + f" into {display_path(result.log_path.parent)}"
        if result.failed:
            msg += f"; {len(result.failed):,} could not be placed"
            log.warning("sort into %s: %d files could not be placed", result.log_path.parent, len(result.failed))
        self.status.setText(msg + f". Undo log: {display_path(result.log_path.name)}")
        self._set_running(False)
        self.sortFinished.emit(result)

    def _choose_undo_log(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Undo a sort", "", "Sort logs (sort-log-*.jsonl);;All files (*)")
        if path:
            self.undo_sort(path)

    def undo_sort(self, log_path: str | os.PathLike | None = None) -> bool:
        """Undo a sort from its log (default: this window's last sort) on the worker
        thread; :attr:`undoFinished` reports an :class:`~mnist_desktop.core.sorting.UndoReport`."""
        from mnist_desktop.core.sorting import undo_sort

        log_path = log_path or self._last_sort_log
        if self.is_running() or log_path is None:
            return False
        self._start(_call_task(undo_sort, log_path), "undo")
        self.status.setText("Undoing the sort…")
        return True

    def _finish_undo(self, report) -> None:
        self._last_sort_log = None
        if report.returned and self.store is not None:
            self.store.relocate(report.returned)
            self.model.dataChanged.emit(self.model.index(0, 0),
                                        self.model.index(self.model.rowCount() - 1, 0))
        msg = f"Undo: {report.restored:,} files restored"
        if report.skipped:
            msg += f"; {len(report.skipped):,} left alone (changed or in the way)"
        self.status.setText(msg)
        self._set_running(False)
        self.undoFinished.emit(report)

    # ------------------------------------------------------------------ journal
    def _journal_record(self, row: int) -> None:
        if self._journal is None or self.store is None:
            return
        try:
            self._journal.record(self.store.path(row), self.store.corrected_label(row))
        except OSError as e:
            self.statusBar().showMessage(f"Corrections cannot be saved to {display_path(self._journal.path)} "
                                         f"({e.strerror or e}): export them before closing", 20000)

    def _clear_journal(self) -> None:
        self._earlier = {}
        if self._journal is not None:
            self._journal.clear()

    def _offer_earlier_corrections(self) -> None:
        """After a run: restore the corrections an earlier session made to these inputs
        and never exported (asked first, unless the user asked for them at start)."""
        earlier, self._earlier = self._earlier, {}
        if not earlier or self.store is None or self._journal is None:
            return
        rows = {self.store.path(i): i for i in range(len(self.store))}
        found = {rows[p]: lab for p, lab in earlier.items() if p in rows and lab in self.store.labels}
        if not found:
            return
        if not self._restore_unasked and QMessageBox.question(
                self, "Restore corrections?",
                f"{len(found):,} labels of these files were corrected by hand in an earlier session and "
                "never exported. Restore them? (No discards them.)") != QMessageBox.Yes:
            self._journal.clear()
            for i in np.flatnonzero(self.store.column("corrected") >= 0):   # this run's own
                self._journal_record(int(i))
            return
        self._replaying = True   # already in the journal
        try:
            for i, lab in found.items():
                if self.store.corrected_label(i) is None:   # one made during this run wins
                    self.model.set_correction(i, lab)
        finally:
            self._replaying = False
        self.statusBar().showMessage(f"Restored {len(found):,} corrections from an earlier session", 10000)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not self._offered_journals:
            self._offered_journals = True
            QTimer.singleShot(0, self, self.offer_journaled_corrections)

    def offer_journaled_corrections(self) -> bool:
        """At start: offer to classify again the inputs of the newest journal of
        corrections never exported (a crash, a kill), and restore them. Returns whether
        a run started."""
        if self.is_running() or self.store is not None:
            return False
        journals = pending_journals()
        if not journals:
            return False
        j = journals[0]
        n = len(j.corrections())
        names = ", ".join(display_path(p) for p in j.inputs[:2]) + (" …" if len(j.inputs) > 2 else "")
        if QMessageBox.question(self, "Restore corrections?",
                                f"{n:,} labels you corrected by hand in {names} were never exported "
                                "(the app was closed or crashed). Classify those files again and restore "
                                "the corrections? (No discards them.)") != QMessageBox.Yes:
            j.clear()
            return False
        if not self.classify(j.inputs):
            return False
        self._restore_unasked = True
        return True

    # ------------------------------------------------------------------ closing
    def closeEvent(self, event) -> None:
        """Ask before hand corrections that were never exported go, then cancel and join
        every worker before the window goes."""
        if not self._confirm_discard("Close and discard them?"):
            event.ignore()
            return
        if self._runner is not None:
            self._runner.stop()
        self.loader.shutdown()
        super().closeEvent(event)
