"""Correct and learn: saving the canvas drawing with the right label, the corrections
browser (relabel, delete, bad files), and a tiny real fine-tune with before/after figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QMessageBox

from mnist_desktop.core.corrections import (delete_correction, relabel_correction, save_correction,
                                            scan_corrections)
from mnist_desktop.service.finetune import plan_finetune, split_held_out
from test_ui_helpers import RESULT_TIMEOUT_MS, draw_digit

from test_ui_helpers import make_window, settings_store, shared_worker, user_data  # noqa: F401  (fixtures)

pytestmark = pytest.mark.gui


def settle(qtbot, window, action):
    with qtbot.waitSignal(window.live.settled, timeout=RESULT_TIMEOUT_MS) as blocker:
        action()
    return blocker.args[0]


def test_correct_menu_saves_strokes_and_28x28_with_the_right_label(make_window, shared_worker, qtbot, user_data):
    w = make_window(worker=shared_worker)
    button = w.corrections.button
    assert button.accessibleName() == "Correct the prediction" and button.isVisible()
    prediction = settle(qtbot, w, lambda: draw_digit(w.canvas, "1"))
    said = prediction.label
    action = next(a for a in w.corrections.menu.actions() if a.text() == "7")
    with qtbot.waitSignal(w.corrections.saved) as saved:
        action.trigger()
    png = saved.args[0]
    assert png.startswith(str(user_data / "corrections" / "7"))
    img = Image.open(png)
    assert img.size == (28, 28) and img.mode == "L" and np.asarray(img).max() > 200
    meta = json.loads(open(png[:-4] + ".json").read())
    assert meta["label"] == "7" and meta["predicted"] == said and 0 < meta["confidence"] <= 1
    assert meta["model"] == "default.safetensors" and meta["canvas_size"] == [280, 280]
    assert len(meta["strokes"]) == 1 and len(meta["strokes"][0][0]) == 3   # x, y, pressure
    assert w.banner.isVisible() and "\u201c7\u201d" in w.banner.text and "1 of 7" in w.banner.text


def test_ctrl_alt_digit_saves_and_does_not_clash(make_window, shared_worker, qtbot, user_data):
    w = make_window(worker=shared_worker)
    settle(qtbot, w, lambda: draw_digit(w.canvas, "4"))
    shortcuts = {}
    from PySide6.QtGui import QAction
    for a in w.findChildren(QAction):
        for s in a.shortcuts():
            if s.isEmpty():
                continue
            assert s.toString() not in shortcuts or shortcuts[s.toString()] is a, s.toString()
            shortcuts[s.toString()] = a
    assert QKeySequence("Ctrl+Alt+4").toString() in shortcuts
    w.show()
    w.activateWindow()
    qtbot.waitExposed(w)
    with qtbot.waitSignal(w.corrections.saved) as saved:
        qtbot.keyClick(w, Qt.Key.Key_4, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier)
    assert "/corrections/4/" in saved.args[0].replace("\\", "/")


def test_nothing_to_correct_on_a_blank_canvas(make_window, shared_worker, user_data):
    w = make_window(worker=shared_worker)
    assert w.corrections.save("3") is None
    assert "nothing to correct" in w.banner.text
    assert not (user_data / "corrections").exists()


def _sample(folder, label, value=1.0):
    img = np.zeros((28, 28), np.float32)
    img[6:22, 12:16] = value
    return save_correction(folder, label, img, predicted="1")


def test_relabel_and_delete(tmp_path):
    folder = tmp_path / "corr"
    a, b = _sample(folder, "1"), _sample(folder, "1")
    moved = relabel_correction(a, "7")
    assert moved.parent.name == "7" and moved.exists() and not a.exists() and not a.with_suffix(".json").exists()
    assert json.loads(moved.with_suffix(".json").read_text())["label"] == "7"
    delete_correction(b)
    assert not b.exists() and not b.with_suffix(".json").exists() and not b.parent.exists()
    assert scan_corrections(folder).counts() == {"7": 1}


def test_bad_files_are_skipped_with_a_message(tmp_path):
    folder = tmp_path / "corr"
    good = _sample(folder, "3")
    (folder / "3" / "broken.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(folder / "3" / "big.png")
    bad_side = _sample(folder, "3")
    bad_side.with_suffix(".json").write_text("{oops")
    scan = scan_corrections(folder)
    assert [s.png for s in scan.samples] == [good]
    text = " ".join(scan.problems)
    assert "broken.png" in text and "big.png" in text and "30x30" in text and bad_side.with_suffix(".json").name in text


def test_browser_lists_relabels_and_deletes_after_asking(make_window, shared_worker, qtbot, user_data, monkeypatch):
    w = make_window(worker=shared_worker)
    folder = user_data / "corrections"
    pngs = [_sample(folder, "1") for _ in range(3)]
    (folder / "1" / "junk.png").write_bytes(b"\x89PNG broken")
    browser = w.corrections.open_browser()
    assert browser.list.count() == 3 and "junk.png" in browser.problem_label.text()
    browser.select_paths([pngs[0]])
    next(a for a in browser.relabel_menu.actions() if a.text() == "7").trigger()
    assert scan_corrections(folder).counts() == {"1": 2, "7": 1}
    browser.select_paths([pngs[1]])
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
    assert browser.delete_selected() == 0 and pngs[1].exists()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    browser.select_paths([pngs[1]])
    assert browser.delete_selected() == 1 and not pngs[1].exists()
    assert browser.list.count() == 2


def test_held_out_split_is_per_label_and_stable(tmp_path):
    folder = tmp_path / "corr"
    for _ in range(10):
        _sample(folder, "7")
    _sample(folder, "1")
    samples = scan_corrections(folder).samples
    train, held = split_held_out(samples)
    assert len(held) == 2 and all(s.label == "7" for s in held) and len(train) == 9
    train2, held2 = split_held_out(list(reversed(samples)))
    assert {s.png for s in held2} == {s.png for s in held}


def test_finetune_without_corrections_says_what_to_do(make_window, shared_worker, user_data):
    w = make_window(worker=shared_worker)
    assert w.corrections.open_finetune() is None
    assert "correct a prediction first" in w.banner.text


@pytest.mark.slow
def test_tiny_real_finetune_shows_before_after_and_switches_models(make_window, shared_worker, qtbot,
                                                                   user_data, mnist_train5k):
    w = make_window(worker=shared_worker)
    folder = user_data / "corrections"
    for i in range(0, 5000, 500):   # 10 labels x 2 drawings
        for j in range(2):
            save_correction(folder, str(mnist_train5k.labels[i + j]),
                            mnist_train5k.images[i + j].astype(np.float32) / 255)
    w.corrections.finetune_overrides = dict(epochs=1, limit=400, outlier_images=0, batch_size=64)
    before_model = w.model_path()
    dialog = w.corrections.open_finetune()
    assert dialog is not None and dialog.plan.n_held_out == 0   # 2 per label: round(0.4) = 0
    with qtbot.waitSignal(dialog.ended, timeout=240_000) as ended:
        pass
    assert ended.args[0] == "finished", dialog.status.text()
    cmp = dialog.comparison
    assert cmp is not None and dialog.table_box.isVisible()
    rows = cmp.rows()
    assert rows[-1][0].startswith("MNIST validation") and rows[-1][2] is not None and rows[-1][3] is not None
    assert dialog.use_button.isEnabled()
    with qtbot.waitSignal(w.worker.modelLoaded, timeout=60_000):
        dialog.use_button.click()
    assert "my-handwriting-" in w.model_path() and w.corrections.act_back.isEnabled()
    assert dialog.back_button.isVisible()
    with qtbot.waitSignal(w.worker.modelLoaded, timeout=60_000):
        dialog.back_button.click()
    assert w.model_path() == before_model and not w.corrections.act_back.isEnabled()


@pytest.mark.slow
def test_plan_holds_out_and_oversamples(tmp_path, default_model, mnist_train5k):
    folder = tmp_path / "corr"
    for k in range(10):
        save_correction(folder, "7", mnist_train5k.images[3500 + k].astype(np.float32) / 255)
    (folder / "7" / "bad.png").write_bytes(b"x")
    plan = plan_finetune(default_model, folder, tmp_path / "runs")
    assert plan.n_train == 8 and plan.n_held_out == 2 and plan.repeat > 1
    assert any("bad.png" in p for p in plan.problems)
    cfg = plan.config
    assert cfg.init_model == str(default_model) and cfg.extra_repeat == plan.repeat
    assert cfg.compare_data.startswith("corrections:") and cfg.select_metric == "last" and not cfg.teachers
