"""The evaluation service and the Evaluation window (Train > Evaluate Model…)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_desktop.core.data import load_idx_folder
from mnist_desktop.service import evaluation as ev
from test_ui_helpers import make_window, settings_store, user_data  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "resources" / "data" / "mnist-5k"
MODEL = REPO / "resources" / "models" / "default.safetensors"


def _write_idx(folder: Path, images: np.ndarray, labels: np.ndarray, prefix: str = "train") -> None:
    """A small IDX folder (the first images of the bundled subset)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    img = bytes([0, 0, 8, 3]) + b"".join(int(v).to_bytes(4, "big") for v in (n, 28, 28)) + images.tobytes()
    lab = bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.astype(np.uint8).tobytes()
    (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(img))
    (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(lab))


@pytest.fixture(scope="module")
def subset():
    """Every 8th image of the bundled 5k subset (625, all classes: the files are sorted by class)."""
    s = load_idx_folder(BUNDLED, "train-5k")
    s.images, s.labels = s.images[::8], s.labels[::8]
    return s


@pytest.fixture(scope="module")
def mixed_folder(subset, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    _write_idx(folder, subset.images, subset.labels)
    return folder


@pytest.fixture(scope="module")
def result(mixed_folder):
    return ev.evaluate(MODEL, ev.EvalSource("idx", str(mixed_folder)), device="cpu", limit=600)


def test_figures_agree_with_a_hand_count(result, subset):
    from mnist_desktop.service.models import ModelChoice, load_predictor

    predictor = load_predictor(ModelChoice(MODEL, device="cpu")).predictor
    probs, _, _ = predictor.probabilities(subset.images[:600].astype(np.float32) / 255.0)
    pred = probs.argmax(1)
    y = subset.labels[:600]
    assert result.n == 600
    assert np.array_equal(result.y_true, y) and np.array_equal(result.y_pred, pred)
    assert result.accuracy == pytest.approx(np.mean(pred == y))
    assert result.confusion.sum() == 600 and len(np.unique(y)) == 10
    for c in range(10):
        tp = np.sum((pred == c) & (y == c))
        precision = tp / max(1, np.sum(pred == c))
        recall = tp / max(1, np.sum(y == c))
        assert result.precision[c] == pytest.approx(precision)
        assert result.recall[c] == pytest.approx(recall)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert result.f1[c] == pytest.approx(f1)
        assert result.support[c] == np.sum(y == c)
        for p in range(10):
            assert result.confusion[c, p] == np.sum((y == c) & (pred == p))
    assert np.allclose(result.confidence, probs.max(1), atol=1e-6)


def test_cells_and_misclassified_are_sorted_by_confidence(result):
    wrong = result.misclassified()
    assert len(wrong) == int(np.sum(result.y_true != result.y_pred))
    conf = [s.confidence for s in wrong]
    assert conf == sorted(conf, reverse=True)
    assert all(s.true != s.predicted for s in wrong)
    total = 0
    for t in range(10):
        for p in range(10):
            cell = result.cell(t, p)
            assert len(cell) == result.confusion[t, p]
            assert all(result.y_true[s.index] == t and result.y_pred[s.index] == p for s in cell)
            total += len(cell)
    assert total == result.n


def test_cancel_stops_between_batches(subset, tmp_path):
    _write_idx(tmp_path / "d", np.tile(subset.images, (2, 1, 1)), np.tile(subset.labels, 2))
    seen = []

    def progress(done, total, text):
        seen.append(done)

    with pytest.raises(ev.EvaluationCancelled):
        ev.evaluate(MODEL, ev.EvalSource("idx", str(tmp_path / "d")), device="cpu", progress=progress,
                    cancelled=lambda: any(d >= ev.BATCH for d in seen))
    assert max(seen) < 1250   # stopped after the first batch


def test_a_bad_model_file_gives_a_clear_message(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ev.EvaluationError, match="Cannot use model broken.safetensors"):
        ev.evaluate(bad, ev.EvalSource("idx", str(BUNDLED)), device="cpu")
    with pytest.raises(ev.EvaluationError, match="Cannot use model"):
        ev.evaluate(tmp_path / "missing.safetensors", ev.EvalSource("idx", str(BUNDLED)), device="cpu")


def test_bad_data_gives_a_clear_message(tmp_path):
    with pytest.raises(ev.EvaluationError, match="no IDX"):
        ev.evaluate(MODEL, ev.EvalSource("idx", str(tmp_path)), device="cpu")
    (tmp_path / "cats").mkdir()
    Image.new("L", (28, 28)).save(tmp_path / "cats" / "a.png")
    with pytest.raises(ev.EvaluationError, match="not among the model's labels"):
        ev.evaluate(MODEL, ev.EvalSource("folder", str(tmp_path)), device="cpu")


def test_image_folder_goes_through_preprocessing(subset, tmp_path):
    root = tmp_path / "digits"
    picks = [int(np.flatnonzero(subset.labels == c)[0]) for c in range(10)] * 2
    for k, i in enumerate(picks):
        d = root / str(subset.labels[i])
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(255 - subset.images[i]).resize((112, 112)).save(d / f"{k}.png")  # dark ink on white
    (root / "3" / "blank.png").write_bytes(b"\x89PNG broken")
    r = ev.evaluate(MODEL, ev.EvalSource("folder", str(root)), device="cpu")
    assert r.n == 20 and len(r.failed) == 1 and r.paths is not None
    assert r.accuracy >= 0.9
    assert sorted(r.support.tolist()) == [2] * 10


# --------------------------------------------------------------------------- the window

@pytest.mark.gui
@pytest.mark.slow
def test_window_cell_click_shows_exactly_that_cells_images(qtbot, subset, tmp_path):
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QWidget

    from mnist_desktop.ui.training.evaluation import EvaluationWindow

    # 200 bundled digits, each tenth one shifted off-centre so the model makes mistakes.
    images = subset.images[:200].copy()
    images[::10] = np.roll(images[::10], 9, axis=2)
    _write_idx(tmp_path / "d", images, subset.labels[:200])
    w = EvaluationWindow(str(MODEL), device="cpu")
    qtbot.addWidget(w)
    w.show()
    w.set_data("idx", str(tmp_path / "d"))
    with qtbot.waitSignal(w.evaluated, timeout=60000) as blocker:
        qtbot.mouseClick(w.run_button, Qt.MouseButton.LeftButton)
    r = blocker.args[0]
    assert r.n == 200 and w.confusion.rowCount() == 10
    assert "Accuracy" in w.accuracy_label.text()
    total = sum(int(w.confusion.item(i, j).text().replace("·", "0")) for i in range(10) for j in range(10))
    assert total == 200
    wrong = np.flatnonzero(r.y_true != r.y_pred)
    assert len(wrong) > 0
    assert sorted(w.misclassified.indices()) == sorted(wrong.tolist())
    t, p = int(r.y_true[wrong[0]]), int(r.y_pred[wrong[0]])
    for row, col in ((t, p), (t, t)):
        rect = w.confusion.visualItemRect(w.confusion.item(row, col))
        qtbot.mouseClick(w.confusion.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
        expected = np.flatnonzero((r.y_true == row) & (r.y_pred == col))
        assert sorted(w.cell_gallery.indices()) == sorted(expected.tolist())
        assert f"True {row}, predicted {col}" in w.cell_title.text()
    names = {c.accessibleName() for c in w.findChildren(QWidget)}
    assert {"Confusion matrix", "Misclassified images", "Per-class metrics", "Cell images"} <= names
    assert w.accessibleName() == "Evaluation"


@pytest.mark.gui
def test_window_reports_a_bad_model(qtbot, tmp_path):
    from mnist_desktop.ui.training.evaluation import EvaluationWindow

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\0" * 64)
    w = EvaluationWindow(str(bad), device="cpu")
    qtbot.addWidget(w)
    w.set_data("idx", str(BUNDLED))
    with qtbot.waitSignal(w.failed, timeout=30000) as blocker:
        w.start()
    assert "bad.safetensors" in blocker.args[0]
    assert "Cannot evaluate" in w.status.text() and w.run_button.isEnabled()


@pytest.mark.gui
@pytest.mark.slow
def test_window_cancel(qtbot, subset, tmp_path):
    from PySide6.QtCore import Qt

    from mnist_desktop.ui.training.evaluation import EvaluationWindow

    _write_idx(tmp_path / "d", np.tile(subset.images, (32, 1, 1)), np.tile(subset.labels, 32))
    w = EvaluationWindow(str(MODEL), device="cpu")
    qtbot.addWidget(w)
    w.set_data("idx", str(tmp_path / "d"))
    assert w.start()
    qtbot.waitUntil(lambda: w.progress.maximum() > 1, timeout=30000)   # classifying has begun
    with qtbot.waitSignal(w.worker.cancelled, timeout=60000):
        qtbot.mouseClick(w.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.run_button.isEnabled(), timeout=10000)
    assert "cancelled" in w.status.text() and w.result is None


@pytest.mark.slow
def test_run_validation_split_is_the_one_training_held_out(subset, tmp_path):
    from mnist_desktop.core.checkpoint import load_model, save_model
    from training import data as D
    from training.config import TrainConfig

    _write_idx(tmp_path / "data", subset.images, subset.labels)
    loaded = load_model(MODEL)
    meta = loaded.meta
    cfg = dict(meta.training["config"], data=str(tmp_path / "data"), split="", limit=0, extra_data=[])
    full, _, val_idx = D.run_loader(D.load_training_data(TrainConfig.from_dict(cfg)))
    run = tmp_path / "run-1"
    run.mkdir()
    meta.training = dict(meta.training, config=cfg, n_val=len(val_idx))
    save_model(run / "best.safetensors", loaded.model, meta)
    r = ev.evaluate(run / "best.safetensors", ev.EvalSource("run", str(run)), device="cpu")
    assert r.n == len(val_idx) and 55 <= r.n <= 70   # 10% of each class, rounded
    assert np.array_equal(r.y_true, full.labels[val_idx]) and np.all(r.support > 0)
    assert "validation split of run-1" in r.data and "it has changed" not in r.data
    # The data changed since the run: said, not hidden.
    meta.training = dict(meta.training, n_val=500)
    save_model(run / "best.safetensors", loaded.model, meta)
    r = ev.evaluate(run / "best.safetensors", ev.EvalSource("run", str(run)), device="cpu")
    assert "the run held out 500 images" in r.data
    with pytest.raises(ev.EvaluationError, match="no training config"):
        ev.evaluate(MODEL, ev.EvalSource("run", str(tmp_path)), device="cpu")


@pytest.mark.gui
def test_train_menu_and_run_history_open_the_evaluation(make_window, qtbot, tmp_path):  # noqa: F811
    w = make_window(start=False)
    act = w.training.evaluate_action
    assert act in w.train_menu().actions()
    act.trigger()
    win = w.training.evaluation
    assert win is not None and win.isVisible() and win.accessibleName() == "Evaluation"
    assert Path(win.model_edit.text()) == Path(w.model_path())
    # The bundled model's training config names data not found here: its validation split is
    # not offered unless rebuildable; the bundled subset is, and says it is training data.
    texts = [win.data_combo.itemText(i) for i in range(win.data_combo.count())]
    assert any("training data" in t for t in texts)
    win.close()
    # From the run history: the run's validation split is chosen.
    run = tmp_path / "run-x"
    run.mkdir()
    w.training.open_evaluation(str(run / "best.safetensors"), str(run))
    win = w.training.evaluation
    assert win.data_combo.currentData() == ("run", str(run))
    assert "Validation split of run run-x" in win.data_combo.currentText()
    win.close()
