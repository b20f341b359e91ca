"""The batch window, driven as a user would: drop a folder, watch progress, cancel,
review (sort, filter, click, correct), export, sort into folders and undo, and read the
accuracy of a labelled folder from its confusion matrix."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.gui

QtCore = pytest.importorskip("PySide6.QtCore")
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDragEnterEvent, QDropEvent  # noqa: E402

from test_batch import linked_pngs, make_mixed_folder, png_bytes  # noqa: E402

RUN_TIMEOUT = 60_000


@pytest.fixture(scope="module")
def predictor(default_model):
    from mnist_desktop.core.torch_predictor import TorchPredictor
    return TorchPredictor.from_file(default_model, "cpu")


@pytest.fixture
def make_window(qtbot, predictor, monkeypatch):
    """Factory: a BatchWindow sharing the module's predictor; closed (and its workers
    joined) by qtbot at the end, discarding any corrections (closing asks first)."""
    from PySide6.QtWidgets import QMessageBox

    from mnist_desktop.ui.batch import BatchWindow

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)

    def make(**kw):
        w = BatchWindow(predictor, "cpu", **kw)
        qtbot.addWidget(w)
        w.show()
        return w
    return make


def run(qtbot, window, paths):
    with qtbot.waitSignal(window.runFinished, timeout=RUN_TIMEOUT) as blocker:
        assert window.classify([str(p) for p in paths])
    return blocker.args[0]   # cancelled?


def labelled_folder(root: Path, mnist_test, n: int = 40, mislabel: int = 3) -> Path:
    """``n`` test digits in folders named after their class, and ``mislabel`` more put in
    the wrong folder (true class + 1) so the confusion matrix has off-diagonal cells."""
    for i in range(n + mislabel):
        lab = int(mnist_test.labels[i])
        folder = root / str((lab + 1) % 10 if i >= n else lab)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:04d}.png").write_bytes(png_bytes(mnist_test.images[i]))
    return root


def test_drop_mixed_folder_shows_results_errors_and_what_the_model_saw(qtbot, make_window, tmp_path, mnist_test):
    expect = make_mixed_folder(tmp_path / "in", mnist_test, n_good=12)
    w = make_window(workers=2)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tmp_path / "in"))])
    # Qt delivers synthetic drops only inside a real drag session, so the window's
    # handlers get the events directly, as the drag manager would hand them over.
    enter = QDragEnterEvent(QPoint(50, 50), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    w.dragEnterEvent(enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(50, 50), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    with qtbot.waitSignal(w.runFinished, timeout=RUN_TIMEOUT) as blocker:
        w.dropEvent(drop)
    assert blocker.args == [False]
    n_bad = sum(1 for v in expect.values() if v)
    assert w.model.rowCount() == len(expect) + 1          # + the folder symlink loop
    assert w.store.failed == n_bad + 1
    assert w.progress.value() == w.progress.maximum() == len(expect) + 1
    assert "Done" in w.status.text() and f"{n_bad + 1} unreadable" in w.status.text()

    w.set_filter("errors")
    assert w.proxy.rowCount() == n_bad + 1
    reasons = [w.proxy.index(r, 6).data() for r in range(w.proxy.rowCount())]
    assert any("too large" in r for r in reasons) and any("symlink loop" in r for r in reasons)
    w.set_filter("all")

    # clicking a good item shows the preprocessed 28x28 input and its probabilities
    row = next(i for i in range(len(w.store)) if w.store.ok(i) and w.store.true_label(i) is not None)
    with qtbot.waitSignal(w.loader.previewReady, timeout=10_000):
        assert w.select_store_row(row)
    assert w.detail.row == row and not w.detail.preview.pixmap().isNull()
    bars = [b.value() for b in w.detail._bar_widgets]
    assert abs(sum(bars) - 1000) <= 10 and int(np.argmax(bars)) == int(w.store.predicted[row])
    assert w.store.prediction(row) in w.detail.summary.text()

    # the unicode and the non-UTF-8 names are shown (escaped) and classified
    names = [w.proxy.index(r, 0).data() for r in range(w.proxy.rowCount())]
    assert any(n.endswith("Ziffer_✓_数字.png") for n in names) and any(n.endswith("caf\\xe9_7.png") for n in names)


def test_cancel_mid_run_keeps_results_so_far(qtbot, make_window, tmp_path, mnist_test):
    from mnist_desktop.service.classify import Results

    folder = linked_pngs(tmp_path, mnist_test.images[7], 160, 3000)
    w = make_window(workers=2)
    seen = []

    def first_results(ev):
        if isinstance(ev, Results) and not seen:
            seen.append(len(ev.rows))
            w.cancel()

    w.runStarted.connect(lambda: w._runner.progress.connect(first_results))
    with qtbot.waitSignal(w.runFinished, timeout=RUN_TIMEOUT) as blocker:
        w.classify([folder])
    assert blocker.args == [True]
    n = w.model.rowCount()
    assert 0 < n < 3000 and n == len(w.store)
    assert all(w.store.ok(i) for i in range(n))
    assert [w.store.path(i) for i in range(n)] == [str(folder / f"{i:05d}.png") for i in range(n)]
    assert "Cancelled" in w.status.text()
    assert w.export_action.isEnabled() and not w.cancel_action.isEnabled()   # a usable state


def test_review_sort_filter_correct_and_export(qtbot, make_window, tmp_path, mnist_test):
    from PySide6.QtTest import QTest

    data = labelled_folder(tmp_path / "data", mnist_test, n=30, mislabel=0)
    Image.new("L", (30, 30), 0).save(data / "0" / "blank.png")   # an error row
    w = make_window(workers=1)
    assert run(qtbot, w, [data]) is False

    # table sorted by confidence, ascending: the least sure first, errors before all
    w.tabs.setCurrentWidget(w.table)
    w.table.sortByColumn(2, Qt.AscendingOrder)
    conf = [w.store.confidence[w.proxy.store_row(w.proxy.index(r, 0))] for r in range(w.proxy.rowCount())]
    ok_conf = [c for c in conf if not np.isnan(c)]
    assert ok_conf == sorted(ok_conf) and np.isnan(conf[0])
    w.table.sortByColumn(1, Qt.DescendingOrder)
    preds = [w.proxy.index(r, 1).data() for r in range(w.proxy.rowCount())]
    assert [p for p in preds if p] == sorted([p for p in preds if p], reverse=True)

    # the review queue holds exactly the uncertain results
    w.set_filter("uncertain")
    assert w.proxy.rowCount() == int(w.store.column("uncertain").sum())
    w.set_filter("all")

    # correct a label from the keyboard in the grid: the current item gets it, the next is selected
    w.tabs.setCurrentWidget(w.grid)
    target = next(i for i in range(len(w.store)) if w.store.ok(i) and w.store.prediction(i) != "3")
    w.select_store_row(target)
    w.grid.setFocus()
    QTest.keyClick(w.grid, Qt.Key_3)
    assert w.store.corrected_label(target) == "3"
    assert w.proxy.store_row(w.grid.currentIndex()) != target
    # ... and from the detail panel's combo box
    other = next(i for i in range(len(w.store)) if w.store.ok(i) and i != target)
    w.select_store_row(other)
    w.detail.correct.setCurrentIndex(w.detail.correct.findData("5"))
    w.detail.correct.activated.emit(w.detail.correct.currentIndex())
    assert w.store.corrected_label(other) in ("5", None)   # None when 5 was the prediction
    w.set_filter("corrected")
    assert w.proxy.rowCount() == int((w.store.column("corrected") >= 0).sum()) >= 1

    with qtbot.waitSignal(w.exportFinished, timeout=20_000):
        assert w.export_results(tmp_path / "out.csv")
    rows = list(csv.DictReader(open(tmp_path / "out.csv", encoding="utf-8")))
    assert len(rows) == len(w.store) == 31
    assert list(rows[0])[:5] == ["path", "prediction", "confidence", "uncertain", "error"]
    assert list(rows[0])[-1] == "corrected_label"
    by_path = {r["path"]: r for r in rows}
    assert by_path[w.store.path(target)]["corrected_label"] == "3"
    assert "nothing to classify" in by_path[str(data / "0" / "blank.png")]["error"]
    with qtbot.waitSignal(w.exportFinished, timeout=20_000):
        w.export_results(tmp_path / "out.json")
    recs = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))["results"]
    assert [r["path"] for r in recs] == [r["path"] for r in rows]      # input order, not view order
    assert sum("corrected_label" in r for r in recs) == int((w.store.column("corrected") >= 0).sum())


def test_labelled_folder_accuracy_and_confusion_cell_opens_its_images(qtbot, make_window, tmp_path, mnist_test):
    data = labelled_folder(tmp_path / "data", mnist_test, n=40, mislabel=3)
    w = make_window(workers=2)
    run(qtbot, w, [data])
    rep = w.metrics.report
    assert rep["n"] == 43
    y = np.array([int(w.store.true_label(i)) for i in range(43)])
    p = np.array([int(w.store.prediction(i)) for i in range(43)])
    assert rep["accuracy"] == pytest.approx(float((y == p).mean()))
    assert rep["accuracy"] < 1.0 and f"{100 * rep['accuracy']:.2f}%" in w.metrics.summary.text()
    assert w.metrics.per_class.rowCount() == 10

    # click an off-diagonal cell: the grid shows exactly the images in it
    cm = np.asarray(rep["confusion_matrix"])
    off = np.argwhere((cm > 0) & ~np.eye(10, dtype=bool))
    t, q = (int(v) for v in off[0])
    table = w.metrics.confusion
    from PySide6.QtTest import QTest
    rect = table.visualItemRect(table.item(t, q))
    table.scrollToItem(table.item(t, q))
    rect = table.visualItemRect(table.item(t, q))
    QTest.mouseClick(table.viewport(), Qt.LeftButton, Qt.NoModifier, rect.center())
    assert w.tabs.currentWidget() is w.grid
    assert w.proxy.rowCount() == cm[t, q]
    shown = {w.proxy.store_row(w.proxy.index(r, 0)) for r in range(w.proxy.rowCount())}
    assert shown == set(np.flatnonzero((y == t) & (p == q)).tolist())
    assert "Cell:" in w.filter_box.currentText()


def test_sort_into_folders_with_clash_then_undo_from_the_gui(qtbot, make_window, tmp_path, mnist_test):
    from mnist_desktop.ui.batch.window import SortDialog

    data = labelled_folder(tmp_path / "data", mnist_test, n=12, mislabel=0)
    # the same file name in two folders, both predicted 1: a clash inside the sort
    (data / "1" / "dup.png").write_bytes(png_bytes(mnist_test.images[2]))   # test image 2 is a 1
    (data / "0" / "dup.png").write_bytes(png_bytes(mnist_test.images[2]))
    before = sorted(str(p.relative_to(data)) for p in data.rglob("*.png"))
    w = make_window(workers=1)
    run(qtbot, w, [data])
    first = 0
    w.model.set_correction(first, "9" if w.store.prediction(first) != "9" else "8")
    wanted = w.store.final_label(first)

    dest = tmp_path / "sorted"
    (dest / "1").mkdir(parents=True)
    (dest / "1" / "dup.png").write_bytes(b"an existing file, never overwritten")
    w.sort_action.trigger()
    dlg = w.findChild(SortDialog)
    assert dlg is not None and dlg.isVisible()
    dlg.dest.setText(str(dest))
    dlg.move.setChecked(True)
    with qtbot.waitSignal(w.sortFinished, timeout=20_000) as blocker:
        dlg.buttons.button(dlg.buttons.StandardButton.Ok).click()
    result = blocker.args[0]
    assert result.moved == 14 and not result.failed
    assert (dest / "1" / "dup.png").read_bytes() == b"an existing file, never overwritten"
    assert (dest / "1" / "dup_1.png").exists() and (dest / "1" / "dup_2.png").exists()
    assert not list(data.rglob("*.png"))                       # moved, not copied
    assert Path(w.store.path(first)).parent.name == wanted     # the correction decided its folder
    assert Path(w.store.path(first)).exists()                  # the window follows moved files
    assert w.undo_action.isEnabled()

    with qtbot.waitSignal(w.undoFinished, timeout=20_000) as blocker:
        w.undo_action.trigger()
    report = blocker.args[0]
    assert report.restored == 14 and not report.skipped
    assert sorted(str(p.relative_to(data)) for p in data.rglob("*.png")) == before
    assert (dest / "1" / "dup.png").exists() and not (dest / "0").exists()
    assert all(Path(w.store.path(i)).exists() for i in range(len(w.store)))
    assert not w.undo_action.isEnabled()


def test_closing_during_a_run_joins_the_worker(qtbot, make_window, tmp_path, mnist_test):
    folder = linked_pngs(tmp_path, mnist_test.images[0], 200, 2000)
    w = make_window(workers=2)
    with qtbot.waitSignal(w.runStarted):
        w.classify([folder])
    runner = w._runner
    w.close()
    assert not runner._thread.isRunning()
    from test_batch import worker_pids
    assert worker_pids() == []


def test_run_says_when_the_workers_cannot_run_the_model(qtbot, tmp_path, mnist_test, default_model):
    """The ONNX copy disappears after this process loaded it: the workers cannot load it,
    this process's model answers (every file classified) and the status bar says why."""
    import shutil

    from mnist_desktop.core.onnx_predictor import OnnxPredictor, onnx_for
    from mnist_desktop.ui.batch import BatchWindow

    copy = tmp_path / "model.onnx"
    shutil.copy(onnx_for(default_model), copy)
    onnx = OnnxPredictor(copy, source=default_model)
    copy.unlink()
    folder = linked_pngs(tmp_path, mnist_test.images[0], 28, 30)
    w = BatchWindow(onnx, "cpu")
    qtbot.addWidget(w)
    w.show()
    messages: list[str] = []
    w.statusBar().messageChanged.connect(messages.append)
    assert run(qtbot, w, [folder]) is False
    assert len(w.store) == 30 and w.store.failed == 0
    assert {w.store.prediction(i) for i in range(30)} == {str(mnist_test.labels[0])}
    assert any("worker processes" in m and "slower" in m for m in messages), messages


def test_results_streaming_in_reach_the_views_in_coalesced_batches(qtbot, make_window, tmp_path, mnist_test):
    """The classify job delivers results at most every RESULT_INTERVAL seconds: many small
    chunks make a few appends (each one relayouts and repaints the grid), not one each."""
    import time

    from mnist_desktop.ui.batch.window import RESULT_INTERVAL

    folder = linked_pngs(tmp_path, mnist_test.images[3], 28, 600)
    w = make_window(workers=0)
    inserted = []
    w.model.rowsInserted.connect(lambda *a: inserted.append(time.monotonic()))
    t0 = time.monotonic()
    run(qtbot, w, [folder])
    elapsed = time.monotonic() - t0
    assert w.model.rowCount() == 600 == len(w.store)
    assert len(inserted) <= elapsed / RESULT_INTERVAL + 2, (len(inserted), elapsed)
    gaps = np.diff(inserted)[:-1]   # the last delivery (what is left at the end) may come sooner
    assert len(gaps) == 0 or gaps.min() >= RESULT_INTERVAL * 0.5


def test_a_new_thumbnail_repaints_only_its_grid_cell(qtbot, make_window, tmp_path, mnist_test):
    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(mnist_test.images[i]).save(folder / f"{i}.png")
    w = make_window(workers=0)
    run(qtbot, w, [folder])
    changed = []
    w.model.dataChanged.connect(lambda a, b, *_: changed.append((a.row(), a.column(), b.row(), b.column())))
    w.loader.reset()   # forget the thumbnails: the next paint asks for them again
    w.grid.viewport().repaint()
    qtbot.waitUntil(lambda: len(changed) == 6, timeout=10_000)
    assert sorted(changed) == [(r, 0, r, 0) for r in range(6)]   # one cell each, not whole rows
    assert not w.grid.viewport().grab().toImage().isNull()


@pytest.mark.slow
def test_read_numbers_shows_and_exports_number_columns(qtbot, make_window, tmp_path):
    """The "Read numbers" option: Number columns in the table, the reading in the grid
    caption and the detail panel, and number/number_confidence in the export."""
    from mnist_desktop.core.data import load_idx_folder
    from mnist_desktop.ui.batch.models import Column
    from training.number_synth import number_image

    repo = Path(__file__).resolve().parents[1]
    digits = load_idx_folder(repo / "resources" / "data" / "mnist-5k", "train-5k")
    rng = np.random.default_rng(5)
    folder = tmp_path / "numbers"
    folder.mkdir()
    truth = {}
    for k in range(4):
        img, text = number_image(digits.images, digits.labels, rng, 2 + k, "separated")
        Image.fromarray(img).save(folder / f"n{k}.png")
        truth[f"n{k}.png"] = text
    w = make_window(workers=2)
    assert w.table.isColumnHidden(Column.NUMBER)
    w.read_numbers.setChecked(True)
    assert run(qtbot, w, [folder]) is False
    assert not w.table.isColumnHidden(Column.NUMBER) and not w.table.isColumnHidden(Column.NUMBER_CONFIDENCE)
    shown = {}
    for r in range(w.proxy.rowCount()):
        name = Path(w.proxy.index(r, Column.FILE).data()).name
        shown[name] = (w.proxy.index(r, Column.NUMBER).data(), w.proxy.index(r, Column.NUMBER_CONFIDENCE).data())
    assert sum(shown[n][0] == t for n, t in truth.items()) >= 3
    assert all(conf.endswith("%") for _, conf in shown.values())
    w.select_store_row(0)
    assert "read as the number" in w.detail.summary.text()
    assert w.model.grid_text(0).startswith(w.store.number(0) or "(none)")
    out = tmp_path / "out.csv"
    with qtbot.waitSignal(w.exportFinished, timeout=RUN_TIMEOUT):
        assert w.export_results(out)
    rows = {Path(r["path"]).name: r for r in csv.DictReader(open(out))}
    assert {n: r["number"] for n, r in rows.items()} == {n: v[0] for n, v in shown.items()}
    assert all(0 <= float(r["number_confidence"]) <= 1 for r in rows.values())
    # a run without the option has no number columns
    w.read_numbers.setChecked(False)
    assert run(qtbot, w, [folder]) is False
    assert w.table.isColumnHidden(Column.NUMBER)
    with qtbot.waitSignal(w.exportFinished, timeout=RUN_TIMEOUT):
        assert w.export_results(out)
    assert "number" not in next(csv.DictReader(open(out)))
