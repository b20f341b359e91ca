"""Hand corrections are never lost silently: the batch window journals each one to disk
as it is made, asks before closing (or quitting) with corrections not exported, and
offers a crashed session's corrections back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_desktop.core.batch import CorrectionJournal, pending_journals

RUN_TIMEOUT = 60_000


def digits_folder(root: Path, n: int = 6) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = Image.new("L", (28, 28), 0)
        d = ImageDraw.Draw(img)
        if i % 2:
            d.line([(14, 4), (14, 24)], fill=255, width=3)
        else:
            d.ellipse([8, 4, 20, 24], outline=255, width=3)
        img.save(root / f"{i:02d}.png")
    return root


# --------------------------------------------------------------------------- the journal

def test_journal_appends_replays_and_survives_a_torn_line(tmp_path):
    j = CorrectionJournal.for_inputs([tmp_path / "b", str(tmp_path / "a")], tmp_path / "journals")
    assert j.corrections() == {} and not j.path.exists()
    j.record("/x/1.png", "7")
    j.record("/x/2.png", "3")
    j.record("/x/1.png", "9")          # the last one wins
    j.record("/x/2.png", None)         # cleared: back to the prediction
    j.record("/x/\udcff.png", "1")     # a name that is not valid UTF-8
    with open(j.path, "a") as f:
        f.write('{"path": "/x/3.png", "lab')   # a crash mid-write
    assert j.corrections() == {"/x/1.png": "9", "/x/\udcff.png": "1"}
    lines = j.path.read_text().splitlines()
    assert json.loads(lines[0])["inputs"] == sorted([str(tmp_path / "a"), str(tmp_path / "b")])
    assert set(json.loads(lines[1])) == {"path", "label", "time"}
    # the same inputs in any order are the same journal
    again = CorrectionJournal.for_inputs([str(tmp_path / "a"), tmp_path / "b"], tmp_path / "journals")
    assert again.path == j.path
    assert [p.path for p in pending_journals(tmp_path / "journals")] == [j.path]
    assert CorrectionJournal.open(j.path).inputs == j.inputs
    j.clear()
    assert not j.path.exists() and pending_journals(tmp_path / "journals") == []


# --------------------------------------------------------------------------- the window

pytestmark = pytest.mark.gui
QtWidgets = pytest.importorskip("PySide6.QtWidgets")
from PySide6.QtWidgets import QMessageBox  # noqa: E402


@pytest.fixture(scope="module")
def predictor(default_model):
    from mnist_desktop.core.torch_predictor import TorchPredictor
    return TorchPredictor.from_file(default_model, "cpu")


class Answers:
    """Stands in for the user at QMessageBox.question: answers in turn, and notes the titles."""

    def __init__(self, monkeypatch):
        self.queue: list = []
        self.asked: list[str] = []
        monkeypatch.setattr(QMessageBox, "question", self)

    def __call__(self, parent, title, text, *args, **kwargs):
        self.asked.append(title)
        return self.queue.pop(0) if self.queue else QMessageBox.Yes


@pytest.fixture
def answers(monkeypatch):
    return Answers(monkeypatch)


@pytest.fixture
def make_window(qtbot, predictor, answers):
    from mnist_desktop.ui.batch import BatchWindow

    def make():
        w = BatchWindow(predictor, "cpu", workers=0)
        qtbot.addWidget(w)
        w.show()
        return w
    return make


def classify(qtbot, w, paths):
    with qtbot.waitSignal(w.runFinished, timeout=RUN_TIMEOUT):
        assert w.classify([str(p) for p in paths])


def other_label(w, row: int) -> str:
    return "8" if w.store.prediction(row) != "8" else "9"


def test_each_correction_is_on_disk_at_once_and_export_clears_it(qtbot, make_window, tmp_path):
    folder = digits_folder(tmp_path / "in")
    w = make_window()
    classify(qtbot, w, [folder])
    w.model.set_correction(0, other_label(w, 0))
    w.model.set_correction(2, other_label(w, 2))
    journal = CorrectionJournal.for_inputs([folder])
    assert journal.corrections() == {w.store.path(0): other_label(w, 0), w.store.path(2): other_label(w, 2)}
    with qtbot.waitSignal(w.exportFinished, timeout=RUN_TIMEOUT):
        assert w.export_results(tmp_path / "out.csv")
    assert not journal.path.exists()
    w.close()   # exported: nothing to ask
    assert not w.isVisible()


def test_closing_asks_and_no_keeps_the_window_and_its_corrections(qtbot, make_window, answers, tmp_path):
    folder = digits_folder(tmp_path / "in")
    w = make_window()
    classify(qtbot, w, [folder])
    w.model.set_correction(1, other_label(w, 1))
    answers.queue = [QMessageBox.No]
    assert not w.close()
    assert w.isVisible() and answers.asked == ["Discard corrections?"]
    assert CorrectionJournal.for_inputs([folder]).corrections()
    answers.queue = [QMessageBox.Yes]
    assert w.close()
    assert not w.isVisible() and not CorrectionJournal.for_inputs([folder]).path.exists()


def test_after_a_crash_the_same_inputs_offer_the_corrections_back(qtbot, make_window, answers, tmp_path):
    folder = digits_folder(tmp_path / "in")
    first = make_window()
    classify(qtbot, first, [folder])
    wanted = {first.store.path(r): other_label(first, r) for r in (0, 3)}
    for r in (0, 3):
        first.model.set_correction(r, wanted[first.store.path(r)])
    first.hide()          # the app crashed: no close, no prompt; the journal is all that is left
    first._exported = True
    second = make_window()
    classify(qtbot, second, [folder])
    assert answers.asked[-1] == "Restore corrections?"
    got = {second.store.path(i): second.store.corrected_label(i) for i in range(len(second.store))
           if second.store.corrected_label(i) is not None}
    assert got == wanted
    # "No" discards them
    third = make_window()
    answers.queue = [QMessageBox.No]
    classify(qtbot, third, [folder])
    assert not third.store.has_corrections and not CorrectionJournal.for_inputs([folder]).path.exists()


def test_at_start_the_newest_journal_is_offered(qtbot, make_window, answers, tmp_path):
    folder = digits_folder(tmp_path / "in")
    probe = make_window()
    classify(qtbot, probe, [folder])
    path = probe.store.path(4)
    label = other_label(probe, 4)
    probe._exported = True
    CorrectionJournal.for_inputs([folder]).record(path, label)
    w = make_window()
    with qtbot.waitSignal(w.runFinished, timeout=RUN_TIMEOUT):
        pass   # the offer comes once the window is shown; Yes classifies those inputs again
    assert answers.asked.count("Restore corrections?") == 1
    row = [w.store.path(i) for i in range(len(w.store))].index(path)
    assert w.store.corrected_label(row) == label


def test_quitting_the_app_asks_about_the_batch_window_corrections(qtbot, answers, tmp_path, request):
    """Ctrl+Q (File > Quit) closes the main window, which asks the batch window first: No
    keeps both open."""
    make_main = request.getfixturevalue("main_window_factory")
    shared_worker = request.getfixturevalue("shared_worker")
    main = make_main(worker=shared_worker)
    main.act_batch.trigger()
    batch = main._batch_window
    qtbot.addWidget(batch)
    folder = digits_folder(tmp_path / "in")
    classify(qtbot, batch, [folder])
    batch.model.set_correction(0, other_label(batch, 0))
    answers.queue = [QMessageBox.No]
    main.act_quit.trigger()
    assert main.isVisible() and batch.isVisible() and answers.asked == ["Discard corrections?"]
    answers.queue = [QMessageBox.Yes]
    main.act_quit.trigger()
    assert not main.isVisible() and not batch.isVisible()


from test_ui_helpers import settings_store, shared_worker, user_data  # noqa: E402,F401  (fixtures)
from test_ui_helpers import make_window as main_window_factory  # noqa: E402,F401


def test_records_while_running_and_a_failing_disk_only_warns(qtbot, make_window, tmp_path, monkeypatch):
    folder = digits_folder(tmp_path / "in")
    w = make_window()
    classify(qtbot, w, [folder])

    def full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(CorrectionJournal, "record", full)
    assert w.model.set_correction(0, other_label(w, 0))   # kept in memory, and said so
    assert "export them before closing" in w.statusBar().currentMessage()
    assert w.store.corrected_label(0) == other_label(w, 0)
    assert np.all(w.store.column("corrected")[1:] < 0)
