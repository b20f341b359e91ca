"""The training panel driven as a user would: fill the form, Start, watch curve points
arrive, Cancel, Resume (also in a new panel after a "restart"), a dying run and a full disk
reported in the panel, and "Use this model" changing the live prediction."""

from __future__ import annotations

import json
import sys

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QWidget

from mnist_desktop.service import training_runs as tr

from test_ui_helpers import make_window, settings_store, user_data  # noqa: F401  (fixtures)

pytestmark = pytest.mark.gui

RUN_TIMEOUT_MS = 180_000


@pytest.fixture
def history(user_data):
    return tr.RunHistory(user_data / "runs")


@pytest.fixture
def make_panel(qtbot, history):
    from mnist_desktop.ui.training.panel import TrainingPanel

    panels = []

    def factory(process=None):
        panel = TrainingPanel(history, process)
        qtbot.addWidget(panel)
        panel.resize(1100, 720)
        panel.show()
        panels.append(panel)
        return panel

    yield factory
    for p in panels:
        if p.is_running():
            p.process.kill()
            p.process.wait(5000)


def tiny(panel, epochs=1, recipe="mlp"):
    """A run of a few seconds: the MLP on the bundled 5k digits."""
    panel.form.set_recipe(recipe)
    panel.form.epochs.setValue(epochs)
    panel.form.batch_size.setValue(64)
    assert panel.form.error == "", panel.form.error


def child_with(snippet: str):
    """A command that runs the real training CLI in a child after ``snippet`` (a fault
    injected into the training package, as a failing disk or a crash would)."""
    code = ("import sys\n" + snippet + "\nfrom training.cli import main\nsys.exit(main(sys.argv[2:]))\n")

    def command(*args):
        return [sys.executable, "-c", code, *args]
    return command


def test_form_refuses_invalid_values_with_the_reason(make_panel):
    panel = make_panel()
    assert panel.start_button.isEnabled()
    panel.form.val_fraction.setValue(0.8)
    assert "val_fraction must be between 0 and 0.5" in panel.form.error
    assert not panel.start_button.isEnabled() and panel.form.error_label.text() == panel.form.error
    panel.form.val_fraction.setValue(0.1)
    panel.form.lr.setText("fast")
    assert "learning rate 'fast' is not a number" in panel.form.error
    panel.form.lr.setText("-1")
    assert "learning_rate must be a number > 0" in panel.form.error
    panel.form.lr.setText("0.02")
    panel.form.augment_on.setChecked(True)
    panel.form.strength.setValue(300)     # 3x the default jitter: translate 0.3, fine
    assert panel.form.error == ""
    assert panel.form.config().augment.rotation == pytest.approx(30.0)
    panel.form.set_recipe("flagship")
    panel.form.strength.setValue(300)     # 3x the flagship's shear and European strokes: out of range
    assert "augmentation amplitude out of range" in panel.form.error
    panel.form.set_dataset(tr.IMAGE_FOLDER)
    assert "choose the image folder" in panel.form.error
    for name in ("Training panel", "Start training", "Cancel training", "Resume training", "Training curves",
                 "Run history", "Use this model"):
        assert any(w.accessibleName() == name for w in [panel, *panel.findChildren(QWidget)]), name


@pytest.mark.slow
def test_tiny_real_run_from_the_panel_draws_curves_and_lands_in_the_history(make_panel, qtbot, history):
    panel = make_panel()
    tiny(panel, epochs=3)   # 0.2-0.5 s an epoch here: the run outlasts a redraw of the first points
    points = []
    # What is on screen while the run goes on, sampled every 50 ms (``redrawn`` only fires
    # once every plot is current, which a stream of step events can put off until the end).
    sampler = QTimer()
    sampler.timeout.connect(lambda: points.append(panel.curves.point_count(0, "val_accuracy")))
    sampler.start(50)
    with qtbot.waitSignal(panel.run_ended, timeout=RUN_TIMEOUT_MS) as ended:
        qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
        assert not panel.start_button.isEnabled() and panel.cancel_button.isEnabled()
    sampler.stop()
    assert ended.args == [tr.FINISHED], panel.status.text()
    qtbot.waitUntil(lambda: panel.curves.point_count(0, "val_accuracy") == 3, timeout=2000)
    # a point was drawn while the run went on (which epoch's first depends on how fast the
    # epochs are against the redraw ticks; the 1 s bound is the test at the end of this file)
    assert any(0 < n < 3 for n in points), sorted(set(points))
    assert panel.curves.point_count(0, "smoothed") >= 2
    runs = history.runs()
    assert len(runs) == 1 and runs[0].state == tr.FINISHED and runs[0].has_best_model
    assert panel.history_list.count() == 1 and "finished" in panel.history_list.item(0).text()
    assert not (history.root / tr.PENDING_DIR).exists() or not any((history.root / tr.PENDING_DIR).iterdir())
    cfg = json.loads((runs[0].path / "config.json").read_text())
    assert cfg["epochs"] == 3 and cfg["recipe"] == "mlp"
    # Export: CSV of the curves and a PNG of the plots.
    tr.write_curves_csv(history.root.parent / "c.csv", panel.curves.runs())
    rows = [line.split(",") for line in (history.root.parent / "c.csv").read_text().splitlines()[1:]]
    assert [r[1] for r in rows].count("epoch") == 3 and {r[0] for r in rows} == {runs[0].name}
    assert panel.curves.save_png(str(history.root.parent / "c.png"))


@pytest.mark.slow
def test_cancel_keeps_the_best_checkpoint_and_resume_continues_after_a_restart(make_panel, qtbot, history):
    panel = make_panel()
    tiny(panel, epochs=3)
    epoch_ends = []
    panel.run_event.connect(lambda ev: ev["type"] == "epoch_end" and epoch_ends.append(ev))
    panel.start_run()
    qtbot.waitUntil(lambda: bool(epoch_ends), timeout=RUN_TIMEOUT_MS)
    with qtbot.waitSignal(panel.run_ended, timeout=15_000) as ended:
        qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    assert ended.args == [tr.CANCELLED]
    assert "best checkpoint so far is kept" in panel.status.text()
    rec = history.runs()[0]
    assert rec.state == tr.CANCELLED and rec.resumable and rec.has_best_model

    # "Restart": a new panel on the same data folder sees the run and resumes it.
    panel.close()
    again = make_panel()
    assert again.history_list.count() == 1
    again.history_list.item(0).setSelected(True)
    assert again.resume_button.isEnabled()
    with qtbot.waitSignal(again.run_ended, timeout=RUN_TIMEOUT_MS) as ended:
        qtbot.mouseClick(again.resume_button, Qt.MouseButton.LeftButton)
    assert ended.args == [tr.FINISHED], again.status.text()
    rec = history.runs()[0]
    assert rec.state == tr.FINISHED and rec.epochs_done == 3
    assert history.curves(rec).epoch == [1, 2, 3]
    assert again.curves.point_count(0, "val_accuracy") == 3 or again.curves.runs()[0][1].epoch == [1, 2, 3]


@pytest.mark.slow
def test_a_run_process_that_dies_is_reported_and_resumable(make_panel, qtbot, history):
    from mnist_desktop.ui.training.process import TrainingProcess

    # The child kills itself (as an out-of-memory killer would) when its second epoch ends.
    kill = ("import os, signal, training.loop as L\n"
            "real = L.end_epoch\n"
            "def end_epoch(s):\n"
            "    ev = real(s)\n"
            "    if ev.epoch == 2: os.kill(os.getpid(), signal.SIGKILL)\n"
            "    return ev\n"
            "L.end_epoch = end_epoch\n"
            "import training.run as R; R.end_epoch = end_epoch")
    panel = make_panel(TrainingProcess(command=child_with(kill)))
    tiny(panel, epochs=3)
    with qtbot.waitSignal(panel.run_ended, timeout=RUN_TIMEOUT_MS) as ended:
        panel.start_run()
    assert ended.args == [tr.FAILED]
    assert "Training stopped: the training process crashed" in panel.status.text()
    assert "Resume continues" in panel.status.text()
    rec = history.runs()[0]
    assert rec.state == tr.INTERRUPTED and rec.resumable and rec.state_text == "interrupted \u2014 resumable"
    assert panel.isVisible() and panel.start_button.isEnabled()


@pytest.mark.slow
def test_a_full_disk_mid_run_ends_with_a_message(make_panel, qtbot, history):
    from mnist_desktop.ui.training.process import TrainingProcess

    # The disk fills while the run folder's progress log grows (after 8 writes: mid-epoch).
    full = ("import errno, training.run as R\n"
            "real, n = R.append, [0]\n"
            "def append(f, data):\n"
            "    n[0] += 1\n"
            "    if n[0] > 8: raise OSError(errno.ENOSPC, 'No space left on device')\n"
            "    real(f, data)\n"
            "R.append = append")
    panel = make_panel(TrainingProcess(command=child_with(full)))
    tiny(panel, epochs=3)
    panel.form.device.setCurrentIndex(panel.form.device.findData("cpu"))
    with qtbot.waitSignal(panel.run_ended, timeout=RUN_TIMEOUT_MS) as ended:
        panel.start_run()
    assert ended.args == [tr.FAILED]
    assert "Training failed: disk full: cannot write" in panel.status.text()
    assert panel.isVisible() and panel.start_button.isEnabled()


@pytest.mark.slow
def test_use_this_model_changes_the_live_prediction(make_window, qtbot, history):
    from test_ui_helpers import RESULT_TIMEOUT_MS, draw_digit

    w = make_window()
    with qtbot.waitSignal(w.live.settled, timeout=RESULT_TIMEOUT_MS) as first:
        draw_digit(w.canvas, "7")
    before = list(first.args[0].probs)
    panel = w.training.open_panel()
    assert panel is not None and panel.accessibleName() == "Training panel"
    tiny(panel, epochs=1)
    panel.form.lr.setText("0.002")   # a deliberately weak model: it must differ from the bundled one
    with qtbot.waitSignal(panel.run_ended, timeout=RUN_TIMEOUT_MS):
        panel.start_run()
    run = history.runs()[0]
    panel.select_runs([run.path])
    with qtbot.waitSignal(w.live.settled, timeout=RESULT_TIMEOUT_MS) as after:
        qtbot.mouseClick(panel.use_button, Qt.MouseButton.LeftButton)
    assert w.worker.model_info.path == str(run.best_model)
    assert run.name in w.model_status.text()            # the main window says which model it uses
    assert list(after.args[0].probs) != pytest.approx(before, abs=1e-4)


@pytest.mark.slow
def test_augmentation_preview_comes_from_a_child_process(make_panel, qtbot):
    had_torch = "torch" in sys.modules
    panel = make_panel()
    panel.form.set_recipe("flagship")
    with qtbot.waitSignal(panel.preview.ready, timeout=RUN_TIMEOUT_MS) as got:
        qtbot.mouseClick(panel.preview_button, Qt.MouseButton.LeftButton)
    pix = got.args[0]
    assert pix.width() == 10 * (28 * 2 + 8) and pix.height() == 4 * (28 * 2 + 22)
    assert panel.preview_image.pixmap() is not None and not panel.preview_image.pixmap().isNull()
    assert ("torch" in sys.modules) == had_torch     # the GUI process did not load torch for it
    panel.form.set_dataset(tr.IMAGE_FOLDER, "/nonexistent/folder")
    panel.request_preview()
    assert "image folder not found" in panel.preview_image.text()


def test_train_menu_new_run_opens_the_panel_and_lite_explains(make_window, qtbot, monkeypatch):
    from PySide6.QtGui import QKeySequence

    from mnist_desktop.core.flavour import LITE_TRAINING_MESSAGE
    from mnist_desktop.ui.training import entry

    w = make_window(start=False)
    act = w.training.action
    assert act in w.train_menu().actions() and act.shortcut() == QKeySequence("Ctrl+T")
    act.trigger()
    panel = w.training.panel
    assert panel is not None and panel.accessibleName() == "Training panel" and w.training.dock.isVisible()
    assert panel.history.root == tr.runs_dir()

    # The lite build (no torch): the entry is there and says why training is not.
    monkeypatch.setattr(entry, "training_unavailable_reason", lambda: LITE_TRAINING_MESSAGE)
    shown = []
    monkeypatch.setattr(entry.QMessageBox, "information", lambda *a: shown.append(a[2]))
    lite = entry.TrainingEntry(w)
    assert LITE_TRAINING_MESSAGE in lite.action.statusTip()
    assert lite.open_panel() is None and shown == [LITE_TRAINING_MESSAGE]


def test_close_guard_asks_while_a_run_is_going(make_panel, monkeypatch):
    panel = make_panel()
    assert panel.close_guard()          # nothing running: close at once
    monkeypatch.setattr(panel, "is_running", lambda: True)
    monkeypatch.setattr(panel, "confirm_stop", lambda: False)
    assert not panel.close_guard()      # the user keeps the run: the window stays


def test_delete_asks_first(make_panel, history, monkeypatch):
    import json as _json

    run = history.root / "mlp-1"
    run.mkdir(parents=True)
    (run / "config.json").write_text(_json.dumps({"recipe": "mlp", "epochs": 1}))
    (run / "progress.jsonl").write_text(_json.dumps({"v": 1, "type": "finished", "time": 1}) + "\n")
    panel = make_panel()
    panel.history_list.item(0).setSelected(True)
    monkeypatch.setattr(panel, "confirm_delete", lambda runs: False)
    assert panel.delete_selected() == 0 and run.exists()
    monkeypatch.setattr(panel, "confirm_delete", lambda runs: True)
    assert panel.delete_selected() == 1 and not run.exists() and panel.history_list.count() == 0


def test_curves_show_every_point_within_a_second_one_plot_per_tick(qtbot):
    import time

    from mnist_desktop.ui.training.curves import TrainingCurves, stepped_range

    assert stepped_range(0.0, 7.0, from_zero=True, headroom=0.25) == (0.0, 10.0)
    assert stepped_range(0.0, 9.0, (0.0, 10.0), from_zero=True, headroom=0.25) == (0.0, 10.0)  # still fits
    lo, hi = stepped_range(91.2, 96.3)
    assert lo <= 91.2 and hi >= 96.3 and hi - lo < 10
    w = TrainingCurves()
    qtbot.addWidget(w)
    w.show()
    c = tr.Curves()
    c.add({"type": "run_started", "steps_per_epoch": 10})
    w.set_runs([("run", c)])
    for e in range(1, 4):
        c.add({"type": "step", "step": e * 10, "steps_per_epoch": 10, "loss": 1 / e, "lr": 0.01})
        c.add({"type": "epoch_end", "epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e,
               "train_accuracy": 0.9, "val_accuracy": 0.9 + e / 100, "lr": 0.01})
        t0 = time.monotonic()
        w.mark_dirty()
        with qtbot.waitSignal(w.redrawn, timeout=1000):
            pass
        assert time.monotonic() - t0 < 1.0
        assert w.point_count(0, "val_accuracy") == e and w.point_count(0, "smoothed") == e
