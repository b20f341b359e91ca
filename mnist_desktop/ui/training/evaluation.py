"""Train > Evaluate Model…: a model file on labelled data, measured and explored.

Accuracy, a per-class table (precision, recall, F1, support), the confusion matrix (rows:
true class, columns: predicted; colour by count) whose cells show their images, and the
misclassified images, most confident first. The figures come from
:func:`mnist_desktop.service.evaluation.evaluate`, run on a worker thread with progress
and Cancel; results reach the widgets only through signals.
"""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, QSize, Qt, QThread, Signal, Slot
from PySide6.QtGui import QBrush, QColor, QIcon, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QGridLayout, QGroupBox, QHBoxLayout,
                               QHeaderView, QLabel, QLineEdit, QListView, QListWidget, QListWidgetItem,
                               QProgressBar, QPushButton, QSplitter, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from mnist_desktop.service import evaluation as ev
from mnist_desktop.ui.preview import image28_to_qimage

THUMB = 56
BUNDLED = "bundled"   # data combo keys
RUN = "run"
IDX = "idx"
FOLDER = "folder"


def bundled_data_folder() -> Path:
    """The 5k MNIST training subset shipped in ``resources/data/mnist-5k``."""
    from mnist_desktop.core.paths import resources_dir

    return resources_dir() / "data" / "mnist-5k"


class EvaluationWorker(QObject):
    """Runs one :func:`~mnist_desktop.service.evaluation.evaluate` on its own QThread."""

    progress = Signal(int, int, str)
    finished = Signal(object)      # EvaluationResult
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, model: str | None, source: ev.EvalSource, device: str = "auto", limit: int = 0):
        super().__init__()
        self._args = (model, source, device, limit)
        self._cancel = threading.Event()
        self._thread = QThread()
        self.moveToThread(self._thread)
        self._thread.started.connect(self._run)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()

    def stop(self, timeout_ms: int = 15000) -> bool:
        self._cancel.set()
        self._thread.quit()
        return self._thread.wait(timeout_ms)

    def is_running(self) -> bool:
        return self._thread.isRunning()

    @Slot()
    def _run(self) -> None:
        model, source, device, limit = self._args
        try:
            result = ev.evaluate(model, source, device=device, limit=limit, cancelled=self._cancel.is_set,
                                 progress=lambda d, t, s: self.progress.emit(d, t, s))
        except ev.EvaluationCancelled:
            self.cancelled.emit()
        except ev.EvaluationError as e:
            self.failed.emit(str(e))
        except Exception as e:  # report, never crash the app from a worker thread
            self.failed.emit(f"{type(e).__name__}: {e}".splitlines()[0])
        else:
            self.finished.emit(result)
        self._thread.quit()


def _thumb(image) -> QIcon:
    pix = QPixmap.fromImage(image28_to_qimage(image)).scaled(
        THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.FastTransformation)
    return QIcon(pix)


class SampleGallery(QListWidget):
    """Thumbnails of evaluated images with their true/predicted labels and confidence."""

    def __init__(self, name: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setAccessibleName(name)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setIconSize(QSize(THUMB, THUMB))
        self.setGridSize(QSize(THUMB + 44, THUMB + 40))
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setUniformItemSizes(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)

    def show_samples(self, result: ev.EvaluationResult, samples: list[ev.Sample], limit: int = 500) -> None:
        self.clear()
        for s in samples[:limit]:
            item = QListWidgetItem(_thumb(result.images[s.index]), f"{s.true}→{s.predicted}\n{100 * s.confidence:.1f}%")
            tip = f"true {s.true}, predicted {s.predicted} ({100 * s.confidence:.1f}% confident), image #{s.index}"
            if result.paths is not None:
                tip += f"\n{result.paths[s.index]}"
            item.setToolTip(tip)
            item.setData(Qt.ItemDataRole.UserRole, s.index)
            self.addItem(item)

    def indices(self) -> list[int]:
        return [self.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.count())]


class EvaluationWindow(QWidget):
    """The Evaluation window.

    Parameters
    ----------
    model
        Model file to start with (the main window's current model).
    run_dir
        A training run: its validation split is offered, and chosen, as the data.
    device
        Where the forward pass runs (``auto``, ``cpu``, ``cuda``).

    Signals
    -------
    evaluated(object)
        An :class:`~mnist_desktop.service.evaluation.EvaluationResult` is shown.
    failed(str)
        An evaluation could not run (the reason is also shown in the window).
    """

    evaluated = Signal(object)
    failed = Signal(str)

    def __init__(self, model: str | None = None, run_dir: str | None = None, device: str = "auto",
                 parent: QWidget | None = None):
        super().__init__(parent, Qt.WindowType.Window)
        self.setWindowTitle("Evaluate model")
        self.setAccessibleName("Evaluation")
        self.device = device
        self.limit = 0
        self.result: ev.EvaluationResult | None = None
        self.worker: EvaluationWorker | None = None
        self._build()
        self.model_edit.setText(str(model or ""))
        self._fill_data_choices(run_dir)
        self.resize(1200, 800)

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.model_edit = QLineEdit()
        self.model_edit.setAccessibleName("Model file")
        self.model_edit.setPlaceholderText("model file (.safetensors, .pt, .onnx); empty: the bundled model")
        self.model_edit.editingFinished.connect(self._model_changed)
        browse_model = QPushButton("Browse…")
        browse_model.setAccessibleName("Choose model file")
        browse_model.clicked.connect(self._browse_model)
        self.data_combo = QComboBox()
        self.data_combo.setAccessibleName("Evaluation data")
        self.data_combo.currentIndexChanged.connect(self._data_changed)
        self.split_combo = QComboBox()
        self.split_combo.setAccessibleName("IDX split")
        self.data_note = QLabel("")
        self.data_note.setWordWrap(True)
        self.data_note.setAccessibleName("About the evaluation data")
        self.run_button = QPushButton("Evaluate")
        self.run_button.setAccessibleName("Run evaluation")
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setAccessibleName("Cancel evaluation")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setAccessibleName("Evaluation progress")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("Choose a model and labelled data, then Evaluate.")
        self.status.setWordWrap(True)
        self.status.setAccessibleName("Evaluation status")
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.accuracy_label = QLabel("")
        self.accuracy_label.setAccessibleName("Accuracy")
        f = self.accuracy_label.font()
        f.setPointSizeF(f.pointSizeF() * 1.4)
        f.setBold(True)
        self.accuracy_label.setFont(f)

        self.per_class = QTableWidget(0, 5)
        self.per_class.setAccessibleName("Per-class metrics")
        self.per_class.setHorizontalHeaderLabels(["Class", "Precision", "Recall", "F1", "Support"])
        self.per_class.verticalHeader().setVisible(False)
        self.per_class.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.per_class.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.confusion = QTableWidget(0, 0)
        self.confusion.setAccessibleName("Confusion matrix")
        self.confusion.setToolTip("Rows: true class, columns: predicted class. Click a cell to see its images.")
        self.confusion.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.confusion.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.confusion.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.confusion.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.confusion.cellClicked.connect(self.show_cell)
        self.confusion.currentCellChanged.connect(lambda r, c, *_: self.show_cell(r, c) if r >= 0 and c >= 0 else None)
        self.cell_title = QLabel("Click a confusion-matrix cell to see its images.")
        self.cell_title.setAccessibleName("Cell images title")
        self.cell_gallery = SampleGallery("Cell images")
        self.misclassified = SampleGallery("Misclassified images")
        self.mis_title = QLabel("Misclassified images, most confident first")

        top = QGridLayout()
        top.addWidget(QLabel("Model:"), 0, 0)
        top.addWidget(self.model_edit, 0, 1)
        top.addWidget(browse_model, 0, 2)
        top.addWidget(QLabel("Data:"), 1, 0)
        row = QHBoxLayout()
        row.addWidget(self.data_combo, 1)
        row.addWidget(self.split_combo)
        top.addLayout(row, 1, 1)
        top.addWidget(self.data_note, 2, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.progress, 1)
        top.addLayout(buttons, 3, 1)
        top.setColumnStretch(1, 1)

        metrics = QGroupBox("Per-class metrics")
        ml = QVBoxLayout(metrics)
        ml.addWidget(self.per_class)
        cm = QGroupBox("Confusion matrix (rows: true, columns: predicted)")
        cl = QVBoxLayout(cm)
        cl.addWidget(self.confusion)
        cells = QWidget()
        cel = QVBoxLayout(cells)
        cel.setContentsMargins(0, 0, 0, 0)
        cel.addWidget(self.cell_title)
        cel.addWidget(self.cell_gallery)
        mis = QWidget()
        mil = QVBoxLayout(mis)
        mil.setContentsMargins(0, 0, 0, 0)
        mil.addWidget(self.mis_title)
        mil.addWidget(self.misclassified)
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(cm)
        left.addWidget(metrics)
        left.setStretchFactor(0, 3)
        left.setStretchFactor(1, 2)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(cells)
        right.addWidget(mis)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.status)
        layout.addWidget(self.accuracy_label)
        layout.addWidget(split, 1)

    # ------------------------------------------------------------------ data choices
    def _fill_data_choices(self, run_dir: str | None) -> None:
        c = self.data_combo
        c.blockSignals(True)
        c.clear()
        self._run_dir = run_dir
        if run_dir:
            c.addItem(f"Validation split of run {Path(run_dir).name} (held out of training)", (RUN, str(run_dir)))
        model = self.model_edit.text().strip()
        if model and not run_dir and ev.validation_rebuildable(model):
            c.addItem("Validation split this model's training held out", (RUN, model))
        bundled = bundled_data_folder()
        if bundled.is_dir():
            c.addItem("Bundled MNIST 5k subset (training data of the bundled model)", (BUNDLED, str(bundled)))
        c.addItem("IDX folder…", (IDX, ""))
        c.addItem("Image folder (one sub-folder per label)…", (FOLDER, ""))
        c.setCurrentIndex(0)
        c.blockSignals(False)
        self._data_changed()

    def _model_changed(self) -> None:
        if not self._run_dir:
            self._fill_data_choices(None)

    def _browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model to evaluate", self.model_edit.text(),
                                              "Models (*.safetensors *.pt *.pth *.onnx);;All files (*)")
        if path:
            self.model_edit.setText(path)
            self._model_changed()

    def set_data(self, kind: str, path: str, split: str = "") -> None:
        """Choose the data (``idx`` or ``folder`` with a path; ``run`` or ``bundled``)."""
        for i in range(self.data_combo.count()):
            k, p = self.data_combo.itemData(i)
            if k == kind and (not p or not path or Path(p) == Path(path)):
                if kind in (IDX, FOLDER):
                    self.data_combo.setItemData(i, (kind, path))
                    self.data_combo.setItemText(i, f"{'IDX folder' if kind == IDX else 'Image folder'}: {path}")
                self.data_combo.setCurrentIndex(i)
                self._data_changed()
                if split:
                    self.split_combo.setCurrentText(split)
                return
        raise ValueError(f"no data choice {kind!r}")

    def _data_changed(self, *_) -> None:
        kind, path = self.data_combo.currentData() or (None, "")
        if kind in (IDX, FOLDER) and not path and self.isVisible():
            chosen = QFileDialog.getExistingDirectory(self, "IDX folder" if kind == IDX else "Labelled image folder")
            if chosen:
                self.set_data(kind, chosen)
                return
        self.split_combo.clear()
        if kind in (IDX, BUNDLED) and path:
            self.split_combo.addItems(ev.idx_splits(path))
        self.split_combo.setVisible(self.split_combo.count() > 0)
        notes = {
            RUN: "Images the run held out of training: an honest measure of how it generalizes.",
            BUNDLED: "These images trained the bundled model, so its figures here are optimistic; "
                     "for an honest measure pick a run's validation split or data the model never saw.",
            IDX: "MNIST-format image/label file pairs.",
            FOLDER: "Each sub-folder is named after its label (0 … 9); images go through the app's preprocessing.",
        }
        self.data_note.setText(notes.get(kind, ""))

    def source(self) -> ev.EvalSource | None:
        kind, path = self.data_combo.currentData() or (None, "")
        if not path:
            return None
        if kind == RUN:
            return ev.EvalSource("run", path)
        if kind == FOLDER:
            return ev.EvalSource("folder", path)
        return ev.EvalSource("idx", path, self.split_combo.currentText())

    # ------------------------------------------------------------------ running
    def start(self) -> bool:
        """Evaluate the chosen model on the chosen data; False when it cannot start."""
        if self.worker is not None and self.worker.is_running():
            return False
        source = self.source()
        if source is None:
            self._show_failure("Choose the evaluation data first.")
            return False
        model = self.model_edit.text().strip() or None
        self.worker = EvaluationWorker(model, source, self.device, self.limit)
        self.worker.progress.connect(self._on_progress)
        self.worker.finished.connect(self._on_finished)
        self.worker.failed.connect(self._show_failure)
        self.worker.cancelled.connect(self._on_cancelled)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.status.setText(f"Evaluating on {source.describe()}…")
        self.worker.start()
        return True

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.status.setText("Cancelling…")

    def _done(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)

    @Slot(int, int, str)
    def _on_progress(self, done: int, total: int, text: str) -> None:
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            self.status.setText(f"{text}: {done} of {total}")
        elif text:
            self.status.setText(text)

    @Slot()
    def _on_cancelled(self) -> None:
        self._done()
        self.progress.setValue(0)
        self.status.setText("Evaluation cancelled; the previous results (if any) are still shown.")

    @Slot(str)
    def _show_failure(self, text: str) -> None:
        self._done()
        self.progress.setValue(0)
        self.status.setText(f"<b>Cannot evaluate:</b> {text}")
        self.failed.emit(text)

    @Slot(object)
    def _on_finished(self, result: ev.EvaluationResult) -> None:
        self._done()
        self.progress.setValue(1)
        self.show_result(result)

    # ------------------------------------------------------------------ showing
    def show_result(self, r: ev.EvaluationResult) -> None:
        self.result = r
        self.accuracy_label.setText(f"Accuracy {100 * r.accuracy:.2f}%  ·  {r.n} images  ·  "
                                    f"{int((r.y_true != r.y_pred).sum())} wrong  ·  macro F1 {r.macro_f1:.4f}")
        notes = "".join(f"<br>{n}" for n in r.notes)
        self.status.setText(f"Model: {Path(r.model).name}<br>Data: {r.data}{notes}")
        k = len(r.labels)
        self.per_class.setRowCount(k)
        for i, lab in enumerate(r.labels):
            vals = [lab, f"{r.precision[i]:.4f}", f"{r.recall[i]:.4f}", f"{r.f1[i]:.4f}", str(int(r.support[i]))]
            for j, v in enumerate(vals):
                item = QTableWidgetItem(v)
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                self.per_class.setItem(i, j, item)
        self._fill_confusion(r)
        mis = r.misclassified()
        self.mis_title.setText(f"Misclassified images ({len(mis)}), most confident first"
                               + (" — first 500 shown" if len(mis) > 500 else ""))
        self.misclassified.show_samples(r, mis)
        self.cell_gallery.clear()
        self.cell_title.setText("Click a confusion-matrix cell to see its images.")
        self.evaluated.emit(r)

    def _fill_confusion(self, r: ev.EvaluationResult) -> None:
        k = len(r.labels)
        t = self.confusion
        t.blockSignals(True)
        t.clear()
        t.setRowCount(k)
        t.setColumnCount(k)
        t.setHorizontalHeaderLabels([f"→{lab}" for lab in r.labels])
        t.setVerticalHeaderLabels(r.labels)
        cm = r.confusion
        off = cm.copy()
        for i in range(k):
            off[i, i] = 0
        diag_max = max(1, int(cm.diagonal().max()) if k else 1)
        off_max = max(1, int(off.max()) if k else 1)
        for i in range(k):
            for j in range(k):
                v = int(cm[i, j])
                item = QTableWidgetItem(str(v) if v else "·")
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                # Correct answers shade green by count, mistakes red (scaled to the largest
                # mistake so a few errors still stand out against thousands of right ones).
                if i == j:
                    a = v / diag_max
                    color = QColor.fromRgbF(1 - 0.6 * a, 1 - 0.25 * a, 1 - 0.6 * a)
                elif v:
                    a = 0.25 + 0.75 * v / off_max
                    color = QColor.fromRgbF(1, 1 - 0.7 * a, 1 - 0.7 * a)
                else:
                    color = QColor(Qt.GlobalColor.white)
                item.setBackground(QBrush(color))
                item.setForeground(QBrush(QColor(Qt.GlobalColor.black)))
                item.setToolTip(f"true {r.labels[i]}, predicted {r.labels[j]}: {v} image(s)")
                t.setItem(i, j, item)
        t.blockSignals(False)

    @Slot(int, int)
    def show_cell(self, row: int, col: int) -> None:
        """Show the images of confusion cell (true ``row``, predicted ``col``)."""
        r = self.result
        if r is None or not (0 <= row < len(r.labels) and 0 <= col < len(r.labels)):
            return
        samples = r.cell(row, col)
        kind = "correct" if row == col else "mistaken"
        self.cell_title.setText(f"True {r.labels[row]}, predicted {r.labels[col]}: {len(samples)} {kind} image(s)"
                                f", most confident first" + (" — first 500 shown" if len(samples) > 500 else ""))
        self.cell_gallery.show_samples(r, samples)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt)
        if self.worker is not None:
            self.worker.stop()
        super().closeEvent(event)
