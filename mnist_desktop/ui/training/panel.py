"""The training panel: a form bound to the run's config, Start / Cancel / Resume, live
curves, the run history and "Use this model".

The panel is handed a :class:`~mnist_desktop.service.training_runs.RunHistory` (where runs
live) and starts every run as a child of the app (:class:`TrainingProcess`:
``mnist-desktop train --config FILE --progress-json --control-stdin``) at the lowest CPU
priority (``--nice 19``: SCHED_IDLE on Linux) with one torch thread, so the canvas keeps
its core. The child's events arrive through ``readyReadStandardOutput`` as signals; whatever
the child does (crash, NaN, out of memory, full disk) ends up as a message in the panel.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QFileDialog, QGroupBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QMessageBox, QProgressBar, QPushButton, QSplitter, QVBoxLayout, QWidget,
                               QAbstractItemView, QScrollArea)

from mnist_desktop.core.flavour import training_unavailable_reason
from mnist_desktop.service import training_runs as tr
from mnist_desktop.ui.training.curves import TrainingCurves
from mnist_desktop.ui.training.form import TrainConfigForm
from mnist_desktop.ui.training.preview import AugmentPreview
from mnist_desktop.ui.training.process import TrainingProcess

GUI_NICE = 19        # the lowest priority: SCHED_IDLE on Linux
GUI_THREADS = 1      # one torch thread: the other core stays with the canvas
_RUN_ROLE = Qt.ItemDataRole.UserRole


class TrainingPanel(QWidget):
    """Start, follow, cancel and resume training runs; browse and compare past runs.

    Parameters
    ----------
    history
        The run folders this panel starts runs in and lists.
    process
        The child-process runner (tests may pass one with another command).

    Signals
    -------
    use_model(str)
        The user chose a run's best checkpoint for the live predictor.
    evaluate_run(str)
        The user asked to evaluate a run (its folder) on its validation split.
    run_event(dict)
        Every event of the run being followed.
    run_ended(str)
        The followed run ended: its final state (finished, cancelled, failed).
    message(str)
        A one-line status for the user (also shown in the panel).
    """

    use_model = Signal(str)
    evaluate_run = Signal(str)
    run_event = Signal(object)
    run_ended = Signal(str)
    message = Signal(str)

    def __init__(self, history: tr.RunHistory, process: TrainingProcess | None = None,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("trainingPanel")
        self.setAccessibleName("Training panel")
        self.history = history
        self.process = process or TrainingProcess(self)
        self.process.setParent(self)
        self._run_dir: Path | None = None
        self._pending_args: list[str] = []
        self._live = tr.Curves()
        self._last_state = ""
        self._unavailable = training_unavailable_reason()
        self._build()
        self.process.event.connect(self._on_event)
        self.process.output.connect(self._on_output)
        self.process.failed.connect(self._on_process_failed)
        self.process.finished.connect(self._on_process_finished)
        self.refresh_history()
        self._update_buttons()

    # ------------------------------------------------------------------ construction
    def _build(self) -> None:
        self.form = TrainConfigForm()
        self.form.changed.connect(lambda *_: self._update_buttons())
        self.start_button = QPushButton("Start")
        self.start_button.setAccessibleName("Start training")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setAccessibleName("Cancel training")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setAccessibleName("Resume training")
        self.resume_button.setToolTip("Continue the selected interrupted or cancelled run where it stopped")
        self.use_button = QPushButton("Use this model")
        self.use_button.setAccessibleName("Use this model")
        self.use_button.setToolTip("Predict on the canvas with the selected run's best checkpoint")
        self.evaluate_button = QPushButton("Evaluate")
        self.evaluate_button.setAccessibleName("Evaluate run")
        self.evaluate_button.setToolTip("Evaluate the selected run's best checkpoint on its validation split")
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setAccessibleName("Delete runs")
        self.png_button = QPushButton("Export PNG…")
        self.png_button.setAccessibleName("Export curves as PNG")
        self.csv_button = QPushButton("Export CSV…")
        self.csv_button.setAccessibleName("Export curves as CSV")
        self.status = QLabel("No run yet")
        self.status.setObjectName("trainingStatus")
        self.status.setWordWrap(True)
        self.status.setAccessibleName("Training status")
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.speed = QLabel("")
        self.speed.setAccessibleName("Training speed and time left")
        self.progress = QProgressBar()
        self.progress.setAccessibleName("Training progress")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.curves = TrainingCurves()
        self.history_list = QListWidget()
        self.history_list.setAccessibleName("Run history")
        self.history_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.history_list.itemSelectionChanged.connect(self._selection_changed)
        self.run_info = QLabel("")
        self.run_info.setWordWrap(True)
        self.run_info.setAccessibleName("Selected run")
        self.run_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.start_button.clicked.connect(self.start_run)
        self.cancel_button.clicked.connect(self.cancel_run)
        self.resume_button.clicked.connect(self.resume_selected)
        self.use_button.clicked.connect(self.use_selected)
        self.evaluate_button.clicked.connect(self.evaluate_selected)
        self.delete_button.clicked.connect(self.delete_selected)
        self.png_button.clicked.connect(self._export_png)
        self.csv_button.clicked.connect(self._export_csv)

        settings = QGroupBox("New run")
        sl = QVBoxLayout(settings)
        if self._unavailable:
            note = QLabel(self._unavailable)
            note.setWordWrap(True)
            note.setAccessibleName("Training unavailable")
            sl.addWidget(note)
        sl.addWidget(self.form)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.cancel_button):
            buttons.addWidget(b)
        sl.addLayout(buttons)
        self.preview_button = QPushButton("Preview augmentation")
        self.preview_button.setAccessibleName("Preview augmentation")
        self.preview_button.setToolTip("Show a batch of training samples as this augmentation presents them")
        self.preview_button.clicked.connect(self.request_preview)
        self.preview_image = QLabel("")
        self.preview_image.setAccessibleName("Augmentation preview")
        self.preview_image.setWordWrap(True)
        self.preview_image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        sl.addWidget(self.preview_button)
        sl.addWidget(self.preview_image)
        self.preview = AugmentPreview(self)
        self.preview.ready.connect(self._show_preview)
        self.preview.failed.connect(lambda text: self.preview_image.setText(f"Preview failed: {text}"))
        sl.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(settings)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(300)

        live = QWidget()
        ll = QVBoxLayout(live)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.status)
        row = QHBoxLayout()
        row.addWidget(self.progress, 1)
        row.addWidget(self.speed)
        ll.addLayout(row)
        ll.addWidget(self.curves, 1)
        exports = QHBoxLayout()
        exports.addStretch(1)
        exports.addWidget(self.png_button)
        exports.addWidget(self.csv_button)
        ll.addLayout(exports)

        hist = QGroupBox("Run history")
        hl = QVBoxLayout(hist)
        hl.addWidget(self.history_list, 1)
        hl.addWidget(self.run_info)
        hb = QHBoxLayout()
        for b in (self.resume_button, self.use_button, self.evaluate_button, self.delete_button):
            hb.addWidget(b)
        hl.addLayout(hb)

        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(live)
        right.addWidget(hist)
        right.setStretchFactor(0, 3)
        right.setStretchFactor(1, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(scroll)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(split)

    # ------------------------------------------------------------------ state
    def is_running(self) -> bool:
        return self.process.is_running()

    @property
    def run_dir(self) -> Path | None:
        """The folder of the run being followed (once the child made it)."""
        return self._run_dir

    def _live_dirs(self) -> list[Path]:
        return [self._run_dir] if self._run_dir is not None and self.is_running() else []

    def request_preview(self) -> None:
        """Compute the augmentation preview of the form's config (in a child process)."""
        try:
            cfg = self.form.config()
        except ValueError as e:
            self.preview_image.setText(str(e))
            return
        self.preview_image.setText("Preparing the preview…")
        self.preview.request(cfg.to_json())

    def _show_preview(self, pix) -> None:
        width = max(200, self.preview_image.width() - 8)
        self.preview_image.setPixmap(pix.scaledToWidth(min(width, pix.width()),
                                                       Qt.TransformationMode.SmoothTransformation))

    def _update_buttons(self) -> None:
        running = self.is_running()
        can_train = self._unavailable is None
        self.start_button.setEnabled(can_train and not running and self.form.error == "")
        self.preview_button.setEnabled(can_train and self.form.error == "")
        self.start_button.setToolTip(self._unavailable or self.form.error or "Start a run with these settings")
        self.cancel_button.setEnabled(running)
        sel = self.selected_runs()
        one = sel[0] if len(sel) == 1 else None
        self.resume_button.setEnabled(can_train and not running and one is not None and one.resumable)
        self.use_button.setEnabled(bool(sel) and sel[0].has_best_model)
        self.evaluate_button.setEnabled(bool(sel) and sel[0].has_best_model)
        self.delete_button.setEnabled(bool(sel) and not any(
            r.state in (tr.RUNNING, tr.STARTING) for r in sel))
        self.form.setEnabled(not running)

    def _say(self, text: str) -> None:
        self.status.setText(text)
        self.message.emit(text)

    # ------------------------------------------------------------------ runs
    def start_run(self) -> bool:
        """Start a run with the form's config; False (and the reason shown) when it cannot."""
        if self._unavailable:
            self._say(self._unavailable)
            return False
        if self.is_running():
            return False
        try:
            cfg = self.form.config()
            args = self.history.prepare(cfg)
        except (ValueError, OSError) as e:
            self._say(f"Cannot start: {e}")
            return False
        self._begin(args, f"Starting {cfg.recipe} on {cfg.data}…")
        return True

    def resume_selected(self) -> bool:
        sel = self.selected_runs()
        if len(sel) != 1 or not sel[0].resumable or self.is_running() or self._unavailable:
            return False
        return self.resume(sel[0].path)

    def resume(self, run_dir: str | Path) -> bool:
        """Continue an interrupted or cancelled run exactly where it stopped."""
        if self.is_running() or self._unavailable:
            return False
        run_dir = Path(run_dir)
        self._begin(self.history.resume_args(run_dir), f"Resuming {run_dir.name}…")
        self._run_dir = run_dir
        self._live = self.history.curves(run_dir)   # the curves so far; the resume continues them
        self.curves.set_runs([(run_dir.name, self._live)])
        return True

    def _begin(self, args: list[str], text: str) -> None:
        self._pending_args = args
        self._run_dir = None
        self._last_state = ""
        self._live = tr.Curves()
        self.curves.set_runs([("new run", self._live)])
        self.progress.setRange(0, 0)    # busy until the first step
        self.speed.setText("")
        self._say(text)
        self.process.start(args, threads=GUI_THREADS, nice=GUI_NICE)
        self._update_buttons()

    def cancel_run(self) -> None:
        """Stop the run now; it saves its state and keeps its best checkpoint."""
        if self.is_running():
            self._say("Cancelling… (the run saves its state; Resume continues it)")
            self.process.cancel()

    # ------------------------------------------------------------------ child events
    def _on_event(self, ev: dict) -> None:
        t = ev.get("type")
        if t == "run_started":
            self._run_dir = Path(ev.get("run_dir") or "")
            pid = self.process.pid()
            if pid:
                self.history.mark_owner(self._run_dir, pid)
            self.history.forget_pending(self._pending_args)
            self.curves.set_runs([(self._run_dir.name, self._live)])
            what = "Resumed" if ev.get("resumed") else "Training"
            self._say(f"{what} {ev.get('recipe')} ({ev.get('arch')}, {ev.get('num_parameters', 0):,} parameters) "
                      f"on {ev.get('device')}: {ev.get('n_train')} training / {ev.get('n_val')} validation images")
            self.progress.setRange(0, max(1, int(ev.get("total_steps") or 1)))
            self.progress.setValue(int(ev.get("start_step") or 0))
            self.refresh_history()
        elif t == "status":
            done, total = ev.get("done"), ev.get("total")
            if total:
                self.progress.setRange(0, int(total))
                self.progress.setValue(int(done or 0))
            elif self._run_dir is None:
                self.progress.setRange(0, 0)
            self._say(str(ev.get("message", "")).capitalize() + "…")
        elif t == "log":
            self._say(f"{ev.get('level', 'info').capitalize()}: {ev.get('message', '')}")
        elif t in ("step", "epoch_end"):
            self._live.add(ev)
            self.curves.mark_dirty()
            self.progress.setValue(int(ev.get("step") or 0))
            ips, eta = ev.get("images_per_s"), ev.get("eta_s")
            self.speed.setText(f"{ips:,.0f} images/s · ETA {tr.format_eta(eta)}" if ips else "")
            if t == "epoch_end":
                acc = ev.get("val_accuracy")
                acc_text = f", validation accuracy {100 * acc:.2f}%" if acc is not None else ""
                self._update_current_item(ev)
                self._say(f"Epoch {ev.get('epoch')}/{ev.get('epochs')}: train loss {ev.get('train_loss', 0):.4f}"
                          f"{acc_text}{' (best so far)' if ev.get('is_best') else ''}")
        elif t == "evaluation":
            self._say(f"Evaluated the best model on {ev.get('split')} data: accuracy "
                      f"{100 * (ev.get('accuracy') or 0):.2f}%")
        elif t == "finished":
            self._last_state = tr.FINISHED
            self.progress.setValue(self.progress.maximum())
            best = ev.get("metrics", {}).get("val_accuracy")
            self._say(f"Finished after {ev.get('epochs_done')} epochs"
                      + (f"; best validation accuracy {100 * best:.2f}% (epoch {ev.get('best_epoch')})" if best else "")
                      + ". \u201cUse this model\u201d puts it on the canvas.")
        elif t == "cancelled":
            self._last_state = tr.CANCELLED
            self._say("Cancelled; the best checkpoint so far is kept" +
                      ("; Resume continues the run." if ev.get("resumable") else "."))
        elif t == "failed":
            self._last_state = tr.FAILED
            hint = f" {ev.get('hint')}" if ev.get("hint") else ""
            self._say(f"Training failed: {ev.get('message', '')}{hint}")
        if t in ("finished", "cancelled", "failed"):
            self._live.add(ev)  # no ETA once the run ended
        self.run_event.emit(ev)

    def _on_output(self, line: str) -> None:
        pass  # stray prints of libraries; the child's stderr tail goes with a failure

    def _on_process_failed(self, text: str) -> None:
        self._last_state = tr.FAILED
        first, _, rest = text.partition("\n")
        self._say(f"Training stopped: {first}" + (f"\n{rest}" if rest else "")
                  + ("\nResume continues from the last saved epoch." if self._resumable_now() else ""))

    def _resumable_now(self) -> bool:
        return self._run_dir is not None and (self._run_dir / "state.pt").is_file()

    def _on_process_finished(self, code: int) -> None:
        self.history.forget_pending(self._pending_args)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        self.speed.setText("")
        self.refresh_history()
        self._update_buttons()
        self.run_ended.emit(self._last_state or tr.FAILED)

    # ------------------------------------------------------------------ history
    def refresh_history(self) -> None:
        """Re-read the run folders (keeping the selection)."""
        selected = {r.path for r in self.selected_runs()}
        if self._run_dir is not None and not selected:
            selected = {self._run_dir}
        lst = self.history_list
        lst.blockSignals(True)
        lst.clear()
        for rec in self.history.runs(live=self._live_dirs()):
            item = QListWidgetItem(rec.summary())
            item.setData(_RUN_ROLE, rec)
            item.setToolTip(f"{rec.path}\n{rec.message}")
            lst.addItem(item)
            if rec.path in selected:
                item.setSelected(True)
        lst.blockSignals(False)
        self._show_selected()
        self._update_buttons()

    def _update_current_item(self, ev: dict) -> None:
        """The running run's history line, from its epoch event (no disk read: the GUI
        thread stays quick while a run streams events)."""
        for i in range(self.history_list.count()):
            item = self.history_list.item(i)
            rec = item.data(_RUN_ROLE)
            if rec.path == self._run_dir:
                rec.epochs_done = int(ev.get("epoch") or rec.epochs_done)
                if ev.get("best_val_accuracy") is not None:
                    rec.best_val_accuracy = float(ev["best_val_accuracy"])
                rec.has_best_model = rec.has_best_model or bool(ev.get("best_model"))
                item.setData(_RUN_ROLE, rec)
                item.setText(rec.summary())
                if item.isSelected() and len(self.history_list.selectedItems()) == 1:
                    self.use_button.setEnabled(rec.has_best_model)
                    self.evaluate_button.setEnabled(rec.has_best_model)
                return

    def selected_runs(self) -> list[tr.RunRecord]:
        return [i.data(_RUN_ROLE) for i in self.history_list.selectedItems()]

    def select_runs(self, paths) -> None:
        wanted = {Path(p) for p in paths}
        for i in range(self.history_list.count()):
            item = self.history_list.item(i)
            item.setSelected(item.data(_RUN_ROLE).path in wanted)

    def _selection_changed(self) -> None:
        self._show_selected()
        sel = self.selected_runs()
        if sel and not (self.is_running() and len(sel) == 1 and sel[0].path == self._run_dir):
            runs = []
            for rec in sel:
                live = self.is_running() and rec.path == self._run_dir
                runs.append((rec.name, self._live if live else self.history.curves(rec)))
            self.curves.set_runs(runs)
        elif self.is_running():
            self.curves.set_runs([(self._run_dir.name if self._run_dir else "new run", self._live)])
        self._update_buttons()

    def _show_selected(self) -> None:
        sel = self.selected_runs()
        if len(sel) == 1:
            r = sel[0]
            cfg = r.config
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)) if r.created else "?"
            test = f" · test accuracy {100 * r.test_accuracy:.2f}%" if r.test_accuracy is not None else ""
            self.run_info.setText(
                f"<b>{r.name}</b> ({r.state_text}) · started {when}<br>{r.message}<br>"
                f"recipe {cfg.get('recipe', '?')} · {cfg.get('epochs', '?')} epochs · batch "
                f"{cfg.get('batch_size', '?')} · lr {cfg.get('learning_rate', '?')} · {cfg.get('optimizer', '?')}"
                f" · {cfg.get('scheduler', '?')}{test}<br>data: {cfg.get('data', '?')}")
        elif sel:
            self.run_info.setText(f"{len(sel)} runs selected: their curves are overlaid.")
        else:
            self.run_info.setText("Select runs to see their curves (several: overlaid).")

    def use_selected(self) -> None:
        """Use the best checkpoint of the selected (or just finished) run on the canvas."""
        sel = self.selected_runs()
        rec = sel[0] if sel else (tr.read_run(self._run_dir) if self._run_dir else None)
        if rec is None or not rec.has_best_model:
            self._say("This run has no best checkpoint yet (it saves one at the end of each epoch).")
            return
        self._say(f"Using {rec.name} on the canvas.")
        self.use_model.emit(str(rec.best_model))

    def evaluate_selected(self) -> None:
        """Ask for the Evaluation window on the selected (or just finished) run."""
        sel = self.selected_runs()
        rec = sel[0] if sel else (tr.read_run(self._run_dir) if self._run_dir else None)
        if rec is None or not rec.has_best_model:
            self._say("This run has no best checkpoint to evaluate yet.")
            return
        self.evaluate_run.emit(str(rec.path))

    def confirm_delete(self, runs: list[tr.RunRecord]) -> bool:
        names = "\n".join(r.name for r in runs[:10]) + ("\n…" if len(runs) > 10 else "")
        answer = QMessageBox.question(
            self, "Delete runs", f"Delete {len(runs)} run(s) with their models and curves?\n\n{names}",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def delete_selected(self) -> int:
        sel = [r for r in self.selected_runs()]
        if not sel or not self.confirm_delete(sel):
            return 0
        deleted, problems = 0, []
        for rec in sel:
            try:
                self.history.delete(rec, live=self._live_dirs())
                deleted += 1
            except (ValueError, OSError) as e:
                problems.append(str(e))
        self.history_list.clearSelection()
        self.refresh_history()
        self._say(f"Deleted {deleted} run(s)." + (f" Not deleted: {problems[0]}" if problems else ""))
        return deleted

    # ------------------------------------------------------------------ export
    def _export_png(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export curves as PNG", "training-curves.png", "PNG (*.png)")
        if path:
            ok = self.curves.save_png(path)
            self._say(f"Saved {path}" if ok else f"Could not write {path}")

    def _export_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export curves as CSV", "training-curves.csv", "CSV (*.csv)")
        if path:
            try:
                tr.write_curves_csv(path, self.curves.runs())
                self._say(f"Saved {path}")
            except OSError as e:
                self._say(f"Could not write {path}: {e.strerror or e}")

    # ------------------------------------------------------------------ closing
    def confirm_stop(self) -> bool:
        answer = QMessageBox.question(
            self, "Training in progress",
            "A training run is in progress. Stop it now? It saves its state; Resume continues it later.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def close_guard(self) -> bool:
        """For the main window's close: False keeps the app open while the user wants the run."""
        self.preview.stop()
        if not self.is_running():
            return True
        if not self.confirm_stop():
            return False
        self.process.cancel()
        if not self.process.wait(8000):
            self.process.kill()
            self.process.wait(2000)
        return True
