"""The service layer: one model loader and one classify job for the CLI, the batch window
and the HTTP API."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mnist_desktop.core.checkpoint import CheckpointError
from mnist_desktop.core.onnx_predictor import OnnxPredictor
from mnist_desktop.core.predictor import Predictor
from mnist_desktop.core.torch_predictor import TorchPredictor
from mnist_desktop.service.classify import (ClassifyOptions, ClassifySummary, Listed, ModelReady, Results,
                                            classify_job)
from mnist_desktop.service.models import LoadedPredictor, ModelChoice, load_predictor


def _pngs(folder, mnist_test, n=24):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(mnist_test.images[i]).save(folder / f"{i:03d}.png")
    return folder


def _run(gen):
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value


def test_choices_are_validated():
    with pytest.raises(ValueError, match="precision"):
        ModelChoice(precision="int4")
    with pytest.raises(ValueError, match="purpose"):
        ModelChoice(purpose="training")
    with pytest.raises(ValueError, match="batch size"):
        ClassifyOptions(batch_size=0)
    with pytest.raises(ValueError, match="workers"):
        ClassifyOptions(workers=-1)


def test_every_predictor_meets_the_protocol(default_model):
    batch = load_predictor(ModelChoice(default_model, "cpu"))
    live = load_predictor(ModelChoice(default_model, "cpu", purpose="live"))
    torch_p = TorchPredictor.from_file(default_model, "cpu")
    for p in (batch.predictor, live.predictor, torch_p):
        assert isinstance(p, Predictor)
    assert isinstance(batch.predictor, OnnxPredictor) and batch.notes == [] and batch.precision == "fp32"
    assert batch.describe() == "default.safetensors on cpu (onnxruntime, fp32)"


def test_unusable_model_fails_with_one_line(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    for choice in (ModelChoice(bad), ModelChoice(bad, purpose="live"), ModelChoice(tmp_path / "none.pt")):
        with pytest.raises(CheckpointError) as info:
            load_predictor(choice)
        assert "\n" not in str(info.value)


def test_int8_on_a_gpu_request_says_it_runs_fp32(default_model, monkeypatch):
    import mnist_desktop.service.models as models

    monkeypatch.setattr(models, "onnx_wanted", lambda device: False)   # as on a CUDA machine
    loaded = load_predictor(ModelChoice(default_model, "cpu", precision="int8"))
    assert isinstance(loaded.predictor, TorchPredictor) and loaded.precision == "fp32"
    assert any("int8" in n and "fp32" in n for n in loaded.notes)


def test_classify_job_events_and_summary(default_model, mnist_test, tmp_path):
    folder = _pngs(tmp_path / "in", mnist_test)
    (folder / "broken.png").write_bytes(b"not a png")
    events, summary = _run(classify_job([folder, tmp_path / "missing"], ClassifyOptions(default_model, "cpu",
                                                                                        workers=0)))
    assert isinstance(events[0], ModelReady) and isinstance(events[1], Listed)
    assert events[1].total == 25 and [r.error for r in events[1].errors] and \
        events[1].errors[0].path.endswith("missing")
    rows = [r for e in events if isinstance(e, Results) for r in e.rows]
    assert len(rows) == 25 and sum(not r.ok for r in rows) == 1
    labels = [int(r.prediction) for r in rows if r.ok]
    assert np.mean(np.array(labels) == mnist_test.labels[:24]) > 0.9
    assert isinstance(summary, ClassifySummary)
    assert (summary.listed, summary.done, summary.failed, summary.cancelled) == (26, 26, 2, False)


def test_a_given_model_is_not_reloaded_and_cancel_returns_normally(default_model, mnist_test, tmp_path):
    folder = _pngs(tmp_path / "in", mnist_test, 40)
    loaded = LoadedPredictor(TorchPredictor.from_file(default_model, "cpu"))
    job = classify_job([folder], ClassifyOptions(workers=0, batch_size=8), loaded=loaded,
                       should_cancel=lambda: True)
    events, summary = _run(job)
    assert events[0].loaded is loaded
    assert summary.cancelled and summary.done < summary.listed


def test_cli_and_batch_window_run_the_same_job():
    """Both consumers go through classify_job: no second orchestration to drift."""
    import inspect

    from mnist_desktop import cli
    from mnist_desktop.ui.batch import worker

    for fn in (cli.cmd_classify, worker.classify_task):
        src = inspect.getsource(fn)
        assert "classify_job(" in src and "classify_with_progress" not in src


def test_recognize_reads_one_digit_with_its_box(default_model):
    from mnist_desktop.core.preprocess import Drawing, EmptyInputError
    from mnist_desktop.core.recognition import Box, Recognition, recognize

    predictor = load_predictor(ModelChoice(default_model, "cpu", purpose="live")).predictor
    seven = Drawing.from_lists([[(100, 50), (180, 50), (120, 250)]])
    r = recognize(predictor, seven)
    assert isinstance(r, Recognition) and r.text == "7" and len(r.digits) == 1
    assert r.digits[0].box == Box(100, 50, 181, 251)
    assert r.confidence == pytest.approx(r.single.confidence) and r.uncertain == r.single.uncertain
    assert r.single.label == predictor.predict(seven).label
    assert Recognition([]).text == "" and Recognition([]).confidence == 0.0
    with pytest.raises(EmptyInputError):
        recognize(predictor, Drawing())
