"""Correct and learn, in the main window.

* **Correct…** (a button under the chart, accessible name "Correct the prediction") and
  **Ctrl+Alt+digit** save the drawing on the canvas (its strokes and its 28x28 input) with
  the right label to the user's corrections folder (format in
  :mod:`mnist_desktop.core.corrections`); the banner confirms it.
* **Train > My Corrections…** browses that folder: thumbnails by label, relabel, delete
  (with confirmation); bad files are listed, not fatal.
* **Train > Fine-tune on My Handwriting…** runs a short fine-tune of the current model as a
  child training run (:mod:`mnist_desktop.service.finetune`) and shows the accuracy before
  and after on the held-out corrections and on MNIST validation data, with "Use the
  fine-tuned model"; **Train > Back to the Previous Model** undoes the switch.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QObject, QSize, Qt, Signal
from PySide6.QtGui import QAction, QIcon, QImage, QKeySequence, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QDialogButtonBox, QGridLayout,
                               QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMenu, QMessageBox,
                               QProgressBar, QPushButton, QToolButton, QVBoxLayout, QWidget)

from mnist_desktop.core.flavour import training_unavailable_reason

log = logging.getLogger(__name__)

FINETUNE_THREADS = 1   # one torch thread: the other core stays with the canvas
FINETUNE_NICE = 19


def corrections_folder() -> Path:
    from mnist_desktop.core.paths import corrections_dir
    return corrections_dir()


def input_28(source):
    """The 28x28 [0, 1] image to store for a canvas input: the drawing through the one
    preprocessing path without blur (the format's rule), or None when blank."""
    from mnist_desktop.core.preprocess import Drawing, EmptyInputError, PreprocessOptions, preprocess

    if isinstance(source, Drawing):
        try:
            return preprocess(source, PreprocessOptions(blur_sigma=0.0))
        except EmptyInputError:
            return None
    return None


class CorrectionsController(QObject):
    """The Correct… button, the Ctrl+Alt+digit shortcuts and the Train menu entries.

    Parameters
    ----------
    window
        The :class:`~mnist_desktop.ui.main_window.MainWindow` (its canvas, live
        prediction, worker, banner, ``train_menu()``, ``model_path()`` and
        ``select_model()`` are used).

    Signals
    -------
    saved(str)
        The PNG path of a correction just saved.
    """

    saved = Signal(str)

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.folder: Path | None = None       # None: the user data folder's corrections/
        self.finetune_overrides: dict = {}    # TrainConfig fields for the fine-tune (tests, bench)
        self.previous_model: str | None = None
        self.dialog: FinetuneDialog | None = None
        self.browser: CorrectionsBrowser | None = None
        self.labels: list[str] = [str(i) for i in range(10)]

        self.button = QToolButton()
        self.button.setObjectName("correctButton")
        self.button.setText("Correct…")
        self.button.setAccessibleName("Correct the prediction")
        self.button.setToolTip("Wrong? Save this drawing with the right label to your corrections "
                               "(Ctrl+Alt+digit); Train › Fine-tune on My Handwriting learns them")
        self.button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.menu = QMenu(self.button)
        self.menu.setObjectName("correctMenu")
        self.button.setMenu(self.menu)

        self.digit_actions: list[QAction] = []
        for d in range(10):
            a = QAction(str(d), window)
            a.setObjectName(f"action_correct_{d}")
            a.setShortcut(QKeySequence(f"Ctrl+Alt+{d}"))
            tip = f"Save the drawing as {d} to your corrections (Ctrl+Alt+{d})"
            a.setToolTip(tip)
            a.setStatusTip(tip)
            a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            a.triggered.connect(lambda _=False, lab=str(d): self.save(lab))
            window.addAction(a)
            self.digit_actions.append(a)

        unavailable = training_unavailable_reason()
        menu = window.train_menu()
        menu.addSeparator()
        self.act_finetune = QAction("&Fine-tune on My Handwriting…", window)
        self.act_finetune.setObjectName("action_finetune")
        tip = unavailable or "Teach the current model your style from your corrected drawings"
        self.act_finetune.setToolTip(tip)
        self.act_finetune.setStatusTip(tip)
        self.act_finetune.triggered.connect(self.open_finetune)
        self.act_browse = QAction("My &Corrections…", window)
        self.act_browse.setObjectName("action_corrections")
        self.act_browse.setStatusTip("Browse, relabel and delete your corrected drawings")
        self.act_browse.triggered.connect(self.open_browser)
        self.act_back = QAction("&Back to the Previous Model", window)
        self.act_back.setObjectName("action_previous_model")
        self.act_back.setStatusTip("Use the model you had before the fine-tuned one")
        self.act_back.setEnabled(False)
        self.act_back.triggered.connect(self.back_to_previous)
        for a in (self.act_finetune, self.act_browse, self.act_back):
            window.addAction(a)
            menu.addAction(a)
        self.set_labels(self.labels)

    # ------------------------------------------------------------------ labels
    def set_labels(self, labels) -> None:
        """The model's classes: the Correct… menu offers each (digits 0-9 also get
        Ctrl+Alt+digit)."""
        self.labels = [str(x) for x in labels]
        self.menu.clear()
        title = self.menu.addAction("It is…")
        title.setEnabled(False)
        for lab in self.labels:
            if lab.isdigit() and len(lab) == 1:   # the Ctrl+Alt+digit action itself
                self.digit_actions[int(lab)].setShortcutVisibleInContextMenu(True)
                self.menu.addAction(self.digit_actions[int(lab)])
                continue
            a = self.menu.addAction(lab)
            a.setObjectName(f"correctMenu_{lab}")
            a.triggered.connect(lambda _=False, x=lab: self.save(x))
        for d, a in enumerate(self.digit_actions):
            a.setEnabled(str(d) in self.labels)

    # ------------------------------------------------------------------ saving
    def save(self, label: str) -> Path | None:
        """Save the canvas input with ``label``; None (and a message) when there is
        nothing to save."""
        from mnist_desktop.core.corrections import save_correction, scan_corrections
        from mnist_desktop.core.data import DataError
        from mnist_desktop.core.preprocess import Drawing

        w = self.window
        if label not in self.labels:
            w._show_message("info", f"The model has no class {label!r}: nothing saved.")
            return None
        source = w.canvas.current_input()
        prediction = w.live.prediction
        strokes = canvas_size = None
        if isinstance(source, Drawing):
            image = input_28(source)
            strokes = [s.points.tolist() for s in source.strokes if len(s.points)]
            canvas_size = source.canvas_size
        else:
            image = prediction.image if prediction is not None and prediction.image is not None else None
        if image is None:
            w._show_message("info", "Draw a digit (or open an image) first: there is nothing to correct.")
            return None
        predicted = confidence = None
        if prediction is not None:
            i = int(prediction.probs.argmax())
            predicted, confidence = str(prediction.labels[i]), round(float(prediction.probs[i]), 4)
        info = w.worker.model_info
        folder = self.folder or corrections_folder()
        try:
            png = save_correction(folder, label, image, strokes=strokes, canvas_size=canvas_size,
                                  predicted=predicted, confidence=confidence,
                                  model=Path(info.path).name if info else None)
        except (DataError, OSError) as e:
            w._show_message("error", f"Could not save the correction: {getattr(e, 'strerror', None) or e}")
            return None
        counts = scan_corrections(folder).counts()
        total = sum(counts.values())
        was = f" (the model said {predicted})" if predicted is not None and predicted != label else ""
        w._show_message("info", f"Saved as \u201c{label}\u201d{was} to your corrections: "
                        f"{counts.get(label, 0)} of {label}, {total} in all. "
                        f"Train \u203a Fine-tune on My Handwriting learns them.")
        self.saved.emit(str(png))
        if self.browser is not None and self.browser.isVisible():
            self.browser.refresh()
        return png

    # ------------------------------------------------------------------ browser
    def open_browser(self) -> "CorrectionsBrowser":
        if self.browser is None:
            self.browser = CorrectionsBrowser(self.folder or corrections_folder(), self.labels, self.window)
        self.browser.set_labels(self.labels)
        self.browser.refresh()
        self.browser.show()
        self.browser.raise_()
        return self.browser

    # ------------------------------------------------------------------ fine-tuning
    def open_finetune(self) -> "FinetuneDialog | None":
        """Plan and start a fine-tune of the current model; the dialog follows it."""
        reason = training_unavailable_reason()
        if reason:
            QMessageBox.information(self.window, "Fine-tune", reason)
            return None
        if self.dialog is not None and self.dialog.is_running():
            self.dialog.show()
            self.dialog.raise_()
            return self.dialog
        from mnist_desktop.service.finetune import plan_finetune
        from training.config import ConfigError

        model = self.window.model_path()
        try:
            plan = plan_finetune(model, self.folder, **self.finetune_overrides)
        except (ConfigError, OSError) as e:
            self.window._show_message("info", f"Cannot fine-tune yet: {e}")
            return None
        self.dialog = FinetuneDialog(plan, model, self.window)
        self.dialog.use_model.connect(self.use_finetuned)
        self.dialog.back_to_previous.connect(self.back_to_previous)
        self.dialog.show()
        self.dialog.start()
        return self.dialog

    def use_finetuned(self, path: str) -> None:
        self.previous_model = self.window.model_path()
        self.window.select_model(path)
        self.act_back.setEnabled(True)
        self.act_back.setText(f"&Back to the Previous Model ({Path(self.previous_model).name})")
        self.window._show_message("info", f"Using the fine-tuned model {Path(path).name}. "
                                  "Train \u203a Back to the Previous Model undoes it.")

    def back_to_previous(self) -> None:
        if not self.previous_model:
            return
        prev, self.previous_model = self.previous_model, None
        self.window.select_model(prev)
        self.act_back.setEnabled(False)
        self.act_back.setText("&Back to the Previous Model")
        if self.dialog is not None:
            self.dialog.set_used(False)
        self.window._show_message("info", f"Back to {Path(prev).name}.")

    def close_guard(self) -> bool:
        if self.dialog is not None and self.dialog.is_running():
            answer = QMessageBox.question(self.window, "Fine-tune running",
                                          "A fine-tune is running. Stop it and quit?")
            if answer != QMessageBox.StandardButton.Yes:
                return False
            self.dialog.process.cancel()
        if self.dialog is not None:
            self.dialog.process.wait(8000)
        return True


# --------------------------------------------------------------------------- browser

def thumbnail(png: Path, side: int = 56) -> QPixmap:
    img = QImage(str(png))
    if img.isNull():
        return QPixmap()
    return QPixmap.fromImage(img.scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio,
                                        Qt.TransformationMode.FastTransformation))


class CorrectionsBrowser(QDialog):
    """The corrections folder: thumbnails (filtered by label), relabel, delete."""

    changed = Signal()

    def __init__(self, folder: Path, labels, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("correctionsBrowser")
        self.setWindowTitle("My corrections")
        self.setAccessibleName("My corrections")
        self.folder = Path(folder)
        self.labels = [str(x) for x in labels]
        self.samples = []
        self.problems: list[str] = []
        self.filter = QComboBox()
        self.filter.setObjectName("correctionsFilter")
        self.filter.setAccessibleName("Show label")
        self.filter.activated.connect(lambda _: self._fill())
        self.list = QListWidget()
        self.list.setObjectName("correctionsList")
        self.list.setAccessibleName("Corrected drawings")
        self.list.setViewMode(QListWidget.ViewMode.IconMode)
        self.list.setIconSize(QSize(56, 56))
        self.list.setGridSize(QSize(84, 92))
        self.list.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.list.setMovement(QListWidget.Movement.Static)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.list.itemSelectionChanged.connect(self._update_buttons)
        self.summary = QLabel()
        self.summary.setObjectName("correctionsSummary")
        self.summary.setWordWrap(True)
        self.problem_label = QLabel()
        self.problem_label.setObjectName("correctionsProblems")
        self.problem_label.setWordWrap(True)
        self.problem_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.relabel_button = QPushButton("Relabel as…")
        self.relabel_button.setObjectName("relabelButton")
        self.relabel_button.setAccessibleName("Relabel the selected drawings")
        self.relabel_menu = QMenu(self.relabel_button)
        self.relabel_button.setMenu(self.relabel_menu)
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setObjectName("deleteCorrectionsButton")
        self.delete_button.setAccessibleName("Delete the selected drawings")
        self.delete_button.clicked.connect(self.delete_selected)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.close)
        top = QHBoxLayout()
        top.addWidget(QLabel("Show"))
        top.addWidget(self.filter)
        top.addStretch(1)
        top.addWidget(self.relabel_button)
        top.addWidget(self.delete_button)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.list, 1)
        lay.addWidget(self.summary)
        lay.addWidget(self.problem_label)
        lay.addWidget(close)
        self.resize(640, 480)
        self.set_labels(self.labels)

    def set_labels(self, labels) -> None:
        self.labels = [str(x) for x in labels]
        self.relabel_menu.clear()
        for lab in self.labels:
            a = self.relabel_menu.addAction(lab)
            a.setObjectName(f"relabel_{lab}")
            a.triggered.connect(lambda _=False, x=lab: self.relabel_selected(x))

    def refresh(self) -> None:
        """Re-read the folder (bad files are listed under the thumbnails)."""
        from mnist_desktop.core.corrections import scan_corrections

        scan = scan_corrections(self.folder)
        self.samples, self.problems = scan.samples, scan.problems
        counts = scan.counts()
        current = self.filter.currentData()
        self.filter.clear()
        self.filter.addItem(f"All labels ({len(self.samples)})", None)
        for lab in sorted(counts, key=lambda x: (len(x), x)):
            self.filter.addItem(f"{lab} ({counts[lab]})", lab)
        i = self.filter.findData(current)
        self.filter.setCurrentIndex(max(0, i))
        self._fill()
        if self.problems:
            shown = self.problems[:6]
            more = f"\n… and {len(self.problems) - 6} more" if len(self.problems) > 6 else ""
            self.problem_label.setText(f"Skipped {len(self.problems)} unreadable file(s):\n" + "\n".join(shown) + more)
            for p in self.problems:
                log.warning("corrections: skipped %s", p)
        else:
            self.problem_label.setText("")
        self.problem_label.setVisible(bool(self.problems))

    def _fill(self) -> None:
        want = self.filter.currentData()
        self.list.clear()
        for s in self.samples:
            if want is not None and s.label != want:
                continue
            said = s.sidecar.get("predicted")
            text = s.label if said is None or str(said) == s.label else f"{s.label} (was {said})"
            item = QListWidgetItem(QIcon(thumbnail(s.png)), text)
            item.setData(Qt.ItemDataRole.UserRole, str(s.png))
            item.setToolTip(f"{s.png.name}\nlabel {s.label}" + (f", the model said {said}" if said is not None else "")
                            + (f"\n{s.sidecar.get('created')}" if s.sidecar.get("created") else ""))
            self.list.addItem(item)
        n = self.list.count()
        self.summary.setText(f"{n} drawing(s) shown in {self.folder}" if self.samples
                             else f"No corrections yet in {self.folder}. Use Correct… under the chart "
                                  f"(or Ctrl+Alt+digit) when a prediction is wrong.")
        self._update_buttons()

    def selected_paths(self) -> list[Path]:
        return [Path(i.data(Qt.ItemDataRole.UserRole)) for i in self.list.selectedItems()]

    def select_paths(self, paths) -> None:
        want = {str(p) for p in paths}
        for i in range(self.list.count()):
            it = self.list.item(i)
            it.setSelected(it.data(Qt.ItemDataRole.UserRole) in want)

    def _update_buttons(self) -> None:
        any_ = bool(self.list.selectedItems())
        self.relabel_button.setEnabled(any_)
        self.delete_button.setEnabled(any_)

    def relabel_selected(self, label: str) -> int:
        from mnist_desktop.core.corrections import relabel_correction

        return self._apply(self.selected_paths(), lambda p: relabel_correction(p, label),
                           lambda n: f"Relabelled {n} drawing(s) as {label}.")

    def confirm_delete(self, n: int) -> bool:
        return QMessageBox.question(self, "Delete corrections",
                                    f"Delete {n} corrected drawing(s)? This cannot be undone.") \
            == QMessageBox.StandardButton.Yes

    def delete_selected(self) -> int:
        from mnist_desktop.core.corrections import delete_correction

        paths = self.selected_paths()
        if not paths or not self.confirm_delete(len(paths)):
            return 0
        return self._apply(paths, delete_correction, lambda n: f"Deleted {n} drawing(s).")

    def _apply(self, paths, action, summary) -> int:
        """Run ``action`` on each path; a file that fails is named in the summary and the
        others still go. Returns how many succeeded."""
        from mnist_desktop.core.data import DataError

        done, errors = 0, []
        for p in paths:
            try:
                action(p)
                done += 1
            except DataError as e:
                errors.append(str(e))
        self.refresh()
        self.summary.setText(summary(done) + (" " + "; ".join(errors) if errors else ""))
        self.changed.emit()
        return done


# --------------------------------------------------------------------------- fine-tune

class FinetuneDialog(QDialog):
    """A fine-tune run: progress, then before/after accuracy and the model switch.

    Signals
    -------
    use_model(str)
        "Use the fine-tuned model": the copy in the user's models folder.
    back_to_previous()
        "Back to the previous model".
    ended(str)
        ``finished``, ``cancelled`` or ``failed``.
    """

    use_model = Signal(str)
    back_to_previous = Signal()
    ended = Signal(str)

    def __init__(self, plan, model_path: str, parent: QWidget | None = None, process=None):
        super().__init__(parent)
        from mnist_desktop.service.training_runs import RunHistory
        from mnist_desktop.ui.training.process import TrainingProcess

        self.setObjectName("finetuneDialog")
        self.setWindowTitle("Fine-tune on my handwriting")
        self.setAccessibleName("Fine-tune on my handwriting")
        self.plan = plan
        self.model_path = model_path
        self.history = RunHistory(plan.config.output)
        self.process = process or TrainingProcess(self)
        self.process.event.connect(self._on_event)
        self.process.failed.connect(self._on_failed)
        self.process.finished.connect(self._on_finished)
        self.run_dir: Path | None = None
        self.comparison = None
        self.state = ""
        self.adopted: str | None = None
        self._args: list[str] = []

        intro = QLabel(f"Fine-tuning {Path(model_path).name}: {plan.summary()}.")
        intro.setObjectName("finetuneIntro")
        intro.setWordWrap(True)
        self.status = QLabel("Starting…")
        self.status.setObjectName("finetuneStatus")
        self.status.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setObjectName("finetuneProgress")
        self.progress.setRange(0, 0)
        self.table = QGridLayout()
        self.table_box = QWidget()
        self.table_box.setObjectName("finetuneResults")
        self.table_box.setLayout(self.table)
        self.table_box.setVisible(False)
        self.problems = QLabel("Skipped: " + "; ".join(plan.problems[:5]) if plan.problems else "")
        self.problems.setObjectName("finetuneProblems")
        self.problems.setWordWrap(True)
        self.problems.setVisible(bool(plan.problems))
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("finetuneCancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.use_button = QPushButton("Use the fine-tuned model")
        self.use_button.setObjectName("useFinetunedButton")
        self.use_button.setAccessibleName("Use the fine-tuned model")
        self.use_button.setEnabled(False)
        self.use_button.clicked.connect(self.use)
        self.back_button = QPushButton("Back to the previous model")
        self.back_button.setObjectName("backToPreviousButton")
        self.back_button.setAccessibleName("Back to the previous model")
        self.back_button.setVisible(False)
        self.back_button.clicked.connect(self.back_to_previous.emit)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        buttons.addWidget(self.back_button)
        buttons.addWidget(self.use_button)
        buttons.addWidget(self.close_button)
        lay = QVBoxLayout(self)
        lay.addWidget(intro)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addWidget(self.table_box)
        lay.addWidget(self.problems)
        lay.addStretch(1)
        lay.addLayout(buttons)
        self.resize(560, 300)

    def is_running(self) -> bool:
        """Training (a child that already reported its end is only exiting)."""
        return self.process.is_running() and not self.state

    def start(self) -> None:
        try:
            self._args = self.history.prepare(self.plan.config)
        except OSError as e:
            self._end("failed", f"Cannot start: {e.strerror or e}")
            return
        self.process.start(self._args, threads=FINETUNE_THREADS, nice=FINETUNE_NICE)

    def cancel(self) -> None:
        if self.is_running():
            self.status.setText("Cancelling…")
            self.process.cancel()

    def _on_event(self, ev: dict) -> None:
        from mnist_desktop.service.finetune import comparison_of

        t = ev.get("type")
        if t == "run_started":
            self.run_dir = Path(ev.get("run_dir") or "")
            pid = self.process.pid()
            if pid:
                self.history.mark_owner(self.run_dir, pid)
            self.history.forget_pending(self._args)
            self.progress.setRange(0, max(1, int(ev.get("total_steps") or 1)))
            self.status.setText(f"Training on {ev.get('device')}: {ev.get('n_train')} images per epoch "
                                f"({self.plan.n_train} of yours, {self.plan.repeat}x each)…")
        elif t == "status":
            self.status.setText(str(ev.get("message", "")).capitalize() + "…")
        elif t in ("step", "epoch_end"):
            self.progress.setValue(int(ev.get("step") or 0))
            if t == "epoch_end":
                acc = ev.get("val_accuracy")
                self.status.setText(f"Epoch {ev.get('epoch')}/{ev.get('epochs')}"
                                    + (f": MNIST validation {100 * acc:.1f}%" if acc is not None else ""))
        elif t == "comparison":
            self.comparison = comparison_of([ev])
            self._show_comparison()
        elif t == "finished":
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
            self._end("finished", "Done. Compare, then use the fine-tuned model or keep yours.")
        elif t == "cancelled":
            self._end("cancelled", "Cancelled: the current model is unchanged.")
        elif t == "failed":
            hint = f" {ev.get('hint')}" if ev.get("hint") else ""
            self._end("failed", f"The fine-tune failed: {ev.get('message', '')}{hint}")

    def _show_comparison(self) -> None:
        while self.table.count():
            w = self.table.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        heads = ("Accuracy on", "Before", "After")
        for c, h in enumerate(heads):
            lab = QLabel(f"<b>{h}</b>")
            self.table.addWidget(lab, 0, c)
        for r, (what, n, before, after) in enumerate(self.comparison.rows(), start=1):
            cells = (f"{what} (n={n})", _pct(before), _pct(after))
            for c, text in enumerate(cells):
                lab = QLabel(text)
                lab.setObjectName(f"finetuneCell_{r}_{c}")
                self.table.addWidget(lab, r, c)
        if not any(k == "held_out" for k in self.comparison.before):
            self.table.addWidget(QLabel("Too few corrections to hold some out: add more to measure "
                                        "how well it learned your style."), 9, 0, 1, 3)
        self.table_box.setVisible(True)

    def _on_failed(self, text: str) -> None:
        self._end("failed", f"The fine-tune stopped: {text.splitlines()[0] if text else 'unknown error'}")

    def _on_finished(self, code: int) -> None:
        self.history.forget_pending(self._args)
        if not self.state:
            self._end("failed", f"The training process exited ({code}) without a result.")

    def _end(self, state: str, text: str) -> None:
        if self.state:
            return
        self.state = state
        self.status.setText(text)
        self.cancel_button.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        self.use_button.setEnabled(state == "finished" and self.run_dir is not None)
        self.ended.emit(state)

    def use(self) -> str | None:
        """Copy the fine-tuned model to the models folder and switch to it."""
        from mnist_desktop.service.finetune import adopt_model

        if self.run_dir is None:
            return None
        try:
            path = str(adopt_model(self.run_dir))
        except OSError as e:
            self.status.setText(f"Cannot copy the fine-tuned model: {e.strerror or e}")
            return None
        self.adopted = path
        self.use_model.emit(path)
        self.set_used(True)
        return path

    def set_used(self, used: bool) -> None:
        self.use_button.setEnabled(not used and self.state == "finished")
        self.back_button.setVisible(used)
        if used:
            self.status.setText(f"Using {Path(self.adopted or '').name}; the previous model is one click away.")

    def closeEvent(self, ev) -> None:
        if self.is_running():
            answer = QMessageBox.question(self, "Fine-tune running", "Stop the fine-tune?")
            if answer != QMessageBox.StandardButton.Yes:
                ev.ignore()
                return
            self.process.cancel()
        super().closeEvent(ev)


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def add_corrections(window) -> CorrectionsController:
    """Add Correct…, Ctrl+Alt+digit and the Train menu entries to ``window``."""
    return CorrectionsController(window)
