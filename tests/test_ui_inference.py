"""The inference worker: mailbox, stale results, device fallback, crashes, shutdown."""

from __future__ import annotations

import os
import signal

import pytest

from mnist_desktop.bench import scribble_drawing
from mnist_desktop.core.paths import default_model_path
from mnist_desktop.ui.inference import InferenceWorker
from test_ui_helpers import DIGITS, LOAD_TIMEOUT_MS, RESULT_TIMEOUT_MS, draw_digit

from test_ui_helpers import make_window, settings_store, shared_worker, user_data  # noqa: F401  (fixtures)

pytestmark = pytest.mark.gui


@pytest.fixture
def fresh_worker(qapp):
    worker = InferenceWorker()
    yield worker
    worker.stop()


def test_newer_request_replaces_the_queued_one(shared_worker, qtbot):
    dropped, answered = [], []
    shared_worker.requestDropped.connect(dropped.append)
    shared_worker.resultReady.connect(lambda r: answered.append(r.request_id))
    try:
        first = shared_worker.submit("drawing", scribble_drawing(0))  # goes in flight at once
        second = shared_worker.submit("drawing", scribble_drawing(1))  # queued...
        with qtbot.waitSignal(shared_worker.resultReady, timeout=RESULT_TIMEOUT_MS,
                              check_params_cb=lambda r: r.request_id == third):
            third = shared_worker.submit("drawing", scribble_drawing(2))  # ...and replaced
        assert dropped == [second]
        assert answered == [first, third]
    finally:
        shared_worker.requestDropped.disconnect(dropped.append)


def test_requests_wait_for_the_model_and_only_the_newest_runs(fresh_worker, qtbot):
    dropped, answered = [], []
    fresh_worker.requestDropped.connect(dropped.append)
    fresh_worker.resultReady.connect(answered.append)
    fresh_worker.start()
    fresh_worker.load_model(str(default_model_path()), "cpu")
    ids = [fresh_worker.submit("drawing", scribble_drawing(i)) for i in range(3)]
    assert not fresh_worker.is_ready and dropped == ids[:2]
    with qtbot.waitSignal(fresh_worker.resultReady, timeout=LOAD_TIMEOUT_MS):
        pass
    assert [r.request_id for r in answered] == [ids[2]]
    assert answered[0].status == "ok" and answered[0].prediction.label == "6"


def test_stale_result_is_dropped_after_cancel(shared_worker, qtbot):
    seen = []
    shared_worker.resultReady.connect(seen.append)
    try:
        with qtbot.waitSignal(shared_worker.requestDropped, timeout=RESULT_TIMEOUT_MS) as blocker:
            rid = shared_worker.submit("drawing", scribble_drawing(3))
            shared_worker.cancel_pending()  # e.g. the canvas was cleared meanwhile
        assert blocker.args == [rid]
        assert all(r.request_id != rid for r in seen)
    finally:
        shared_worker.resultReady.disconnect(seen.append)


def test_unreadable_file_is_an_error_result(shared_worker, qtbot, tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really")
    with qtbot.waitSignal(shared_worker.resultReady, timeout=RESULT_TIMEOUT_MS) as blocker:
        shared_worker.submit("file", str(bad))
    r = blocker.args[0]
    assert r.status == "error" and r.prediction is None and "\n" not in r.message and r.message


@pytest.mark.slow
def test_device_fallback_to_cpu_with_message_and_close_joins_the_worker(make_window, qtbot, monkeypatch, settings_store):
    # No usable GPU in the inference process, whatever this machine has.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    w = make_window()  # owns a fresh worker that inherits the environment
    with qtbot.waitSignal(w.worker.modelLoaded, timeout=LOAD_TIMEOUT_MS):
        pass
    with qtbot.waitSignal(w.banner.messageShown, timeout=LOAD_TIMEOUT_MS) as blocker:
        w.device_combo.setCurrentIndex(w.device_combo.findData("cuda"))
        w.device_combo.activated.emit(w.device_combo.currentIndex())
    level, text = blocker.args
    assert level == "warning" and "CPU" in text
    assert w.worker.model_info.device == "cpu" and w.worker.model_info.requested_device == "cuda"
    assert w.worker.model_info.backend == "torch"   # a GPU was asked for: torch, on the CPU
    assert "CPU" in w.model_status.text() and "ONNX" not in w.model_status.text()
    assert settings_store.load().settings.device == "cuda"  # the choice is remembered
    with qtbot.waitSignal(w.live.settled, timeout=RESULT_TIMEOUT_MS) as blocker:
        draw_digit(w.canvas, "7")
    assert blocker.args[0].label == "7"  # and predictions carry on, on the CPU
    # Closing the window joins the worker it owns: reader thread finished, process gone.
    pid = w.worker._process.pid
    reader = w.worker._reader
    w.close()
    assert not w.worker.is_running
    assert reader.isFinished()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_crashed_process_is_restarted(make_window, qtbot):
    w = make_window()
    with qtbot.waitSignal(w.worker.modelLoaded, timeout=LOAD_TIMEOUT_MS):
        pass
    with qtbot.waitSignal(w.worker.processRestarted, timeout=RESULT_TIMEOUT_MS) as blocker:
        os.kill(w.worker._process.pid, signal.SIGKILL)
    assert "restarted" in blocker.args[0]
    assert w.banner.isVisible()
    with qtbot.waitSignal(w.worker.modelLoaded, timeout=LOAD_TIMEOUT_MS):
        pass
    with qtbot.waitSignal(w.live.settled, timeout=RESULT_TIMEOUT_MS) as blocker:
        draw_digit(w.canvas, "1")
    assert blocker.args[0].label == "1"


def test_saved_model_that_fails_falls_back_to_the_bundled_one(make_window, qtbot, settings_store, tmp_path):
    from mnist_desktop.ui.settings import AppSettings
    bad = tmp_path / "gone.safetensors"
    settings_store.save(AppSettings(model_path=str(bad)))
    w = make_window(start=False)
    with qtbot.waitSignal(w.worker.modelLoaded, timeout=LOAD_TIMEOUT_MS):
        w.start()
    assert "gone.safetensors" in w.banner.text and "bundled" in w.banner.text
    assert w.settings.model_path == ""
    assert w.worker.model_info.path == str(default_model_path())


def test_bundled_model_runs_through_onnx_runtime_on_the_cpu(shared_worker, qtbot):
    """The canvas's process uses the bundled model's ONNX copy on a CPU (no torch import)."""
    if not shared_worker.is_ready:
        with qtbot.waitSignal(shared_worker.modelLoaded, timeout=LOAD_TIMEOUT_MS):
            pass
    from mnist_desktop.service.models import _cuda_present

    info = shared_worker.model_info
    if info.requested_device != "cpu" and _cuda_present():
        pytest.skip("an NVIDIA driver is present: 'auto' goes to torch for the GPU")
    assert info.backend == "onnxruntime" and info.device == "cpu"


# --------------------------------------------------------------------------- the messages

def test_messages_import_without_qt_or_torch_and_cross_a_pipe():
    """The inference process imports the message module first: it must stay light."""
    import pickle
    import subprocess
    import sys

    code = ("import sys\n"
            "import mnist_desktop.ui.inference_messages, mnist_desktop.ui.inference_process\n"
            "print(','.join(m for m in ('torch', 'PySide6', 'onnxruntime') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

    from mnist_desktop.ui import inference_messages as m
    info = m.ModelInfo("a.safetensors", "a", "cnn", ["0", "1"], "cpu", "auto")
    for msg in (m.LoadModel(1, "a.safetensors", "auto"), m.Predict(2, "drawing", scribble_drawing(0)),
                m.Shutdown(), m.Loaded(1, info), m.LoadFailed(1, "bad", "Traceback..."),
                m.NothingToPredict(2, "no ink"), m.PredictFailed(2, "unreadable")):
        assert type(pickle.loads(pickle.dumps(msg))) is type(msg)
    assert pickle.loads(pickle.dumps(m.Loaded(1, info))) == m.Loaded(1, info)


def test_inference_server_answers_by_message_type(tmp_path):
    """The child's dispatch, in this process: a request gets the reply of its type."""
    from mnist_desktop.ui import inference_messages as m
    from mnist_desktop.ui.inference_process import _Server, _unexpected_reply

    server = _Server()
    assert server.handle(m.Predict(1, "drawing", scribble_drawing(0))) == m.PredictFailed(1, "no model is loaded")
    assert server.handle(("predict", 1, "drawing", None)) is None   # the old tuples are not requests
    failed = server.handle(m.LoadModel(7, str(tmp_path / "missing.safetensors"), "cpu"))
    assert isinstance(failed, m.LoadFailed) and failed.token == 7 and failed.message
    reply = _unexpected_reply(m.Predict(3, "file", "x.png"), RuntimeError("boom"))
    assert isinstance(reply, m.PredictFailed) and reply.request_id == 3 and "boom" in reply.message
