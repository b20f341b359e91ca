"""Training runs that meet a hostile world: a full disk (while logging progress or saving a
checkpoint), a run name that would leave ``--output``, data of a single class. Each ends
with one ``failed`` event saying why, and a full disk leaves a run that resumes."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch

from training import cli
from training import run as run_module
from training.engine import train
from training.events import parse_event
from training.recipes import recipe_config
from training.state import load_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def quick(mnist_dir, out: Path, **kw):
    base = dict(data=str(mnist_dir), limit=300, epochs=2, batch_size=64, output=str(out),
                step_event_interval=0.0, eval_batch_size=500)
    base.update(kw)
    return recipe_config("cnn3", **base)


def epoch_metrics(events):
    return [(e.train_loss, e.train_accuracy, e.val_loss, e.val_accuracy) for e in events if e.type == "epoch_end"]


@pytest.fixture(scope="module")
def uninterrupted(mnist_dir, tmp_path_factory):
    """Epoch metrics of the run the interrupted ones must reproduce."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)            # as one_torch_thread, which is not active yet here
    try:
        events = list(train(quick(mnist_dir, tmp_path_factory.mktemp("full"))))
    finally:
        torch.set_num_threads(before)
    assert events[-1].type == "finished"
    return epoch_metrics(events)


def no_space(path=None):
    return OSError(errno.ENOSPC, "No space left on device", path)


def assert_disk_full(fail, name: str):
    assert fail.type == "failed" and fail.kind == "io", fail
    assert fail.message.startswith("disk full: cannot write " + name) and "\n" not in fail.message
    assert fail.resumable and "--resume" in fail.hint


# --------------------------------------------------------------------------- a full disk

@pytest.mark.slow
def test_full_disk_while_logging_progress_fails_cleanly_and_resumes(mnist_dir, tmp_path, monkeypatch,
                                                                    uninterrupted):
    """The disk fills while a step of epoch 2 is appended to progress.jsonl (half the line
    gets out): the run ends with a failed event, not a traceback, and resumes exactly."""
    real = run_module.append

    def fills_up(f, data):
        if b'"type":"step"' in data and b'"epoch":2' in data:
            real(f, data[: len(data) // 2])
            raise no_space()
        real(f, data)

    monkeypatch.setattr(run_module, "append", fills_up)
    events = list(train(quick(mnist_dir, tmp_path)))
    assert_disk_full(events[-1], "progress.jsonl")
    monkeypatch.undo()
    run_dir = Path(events[-1].run_dir)
    assert load_state(run_dir)["meta"]["progress"]["epoch"] == 1     # epoch 1's state is intact

    resumed = list(train(resume=run_dir))
    assert resumed[-1].type == "finished"
    assert epoch_metrics(events) + epoch_metrics(resumed) == uninterrupted
    logged = [parse_event(line) for line in (run_dir / "progress.jsonl").read_text().splitlines()]
    assert logged.count(None) == 1          # the half line stays on its own line, skipped
    assert logged[-1].type == "finished"


def test_cli_reports_a_full_disk_on_stdout_when_the_log_cannot_be_written(mnist_dir, tmp_path, monkeypatch,
                                                                          capsys):
    def full(f, data):
        raise no_space()

    monkeypatch.setattr(run_module, "append", full)
    code = cli.main(["--recipe", "mlp", "--data", str(mnist_dir), "--limit", "200", "--epochs", "1",
                     "--output", str(tmp_path), "--progress-json", "--step-event-interval", "0"])
    out, err = capsys.readouterr()
    last = json.loads(out.splitlines()[-1])
    assert code == cli.EXIT_FAILED
    assert last["type"] == "failed" and last["kind"] == "io" and last["message"].startswith("disk full:")
    assert not last["resumable"] and "Traceback" not in err and "disk full" in err


def _save_fails(kind: str, monkeypatch):
    """Make the second epoch's checkpoint save fail as a full disk does, the ``kind`` way."""
    calls = {"n": 0}
    epoch_2 = 2 if kind.startswith("torch") else 3   # state.pt once an epoch; model files: last, best

    def in_epoch_2() -> bool:
        calls["n"] += 1
        return calls["n"] == epoch_2

    if kind.startswith("torch"):
        real = torch.save

        def save(obj, f, *a, **k):
            if in_epoch_2():
                f.write(b"PK\x03\x04 half a zip")
                if kind == "torch unexpected pos":
                    # torch keeps only this of the ENOSPC; the disk is full at that moment
                    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))
                    # (the temporary file is removed after, and the space is back)
                    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
                raise RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed "
                                   "writing file data/3: file write failed: No space left on device")
            return real(obj, f, *a, **k)
        monkeypatch.setattr(torch, "save", save)
    else:
        import safetensors.torch

        real = safetensors.torch.save_file

        def save_file(tensors, filename, metadata=None):
            if in_epoch_2():
                Path(filename).write_bytes(b"half")
                if kind == "model OSError":
                    raise no_space(filename)
                raise safetensors.SafetensorError('Error while serializing: IoError(Os { code: 28, kind: '
                                                  'StorageFull, message: "No space left on device" })')
            return real(tensors, filename, metadata=metadata)
        monkeypatch.setattr(safetensors.torch, "save_file", save_file)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["torch unexpected pos", "torch no space", "model OSError", "safetensors error"])
def test_full_disk_while_saving_a_checkpoint_keeps_the_last_epoch_and_resumes(kind, mnist_dir, tmp_path,
                                                                              monkeypatch, uninterrupted):
    _save_fails(kind, monkeypatch)
    events = list(train(quick(mnist_dir, tmp_path)))
    fail = events[-1]
    assert_disk_full(fail, "state.pt" if kind.startswith("torch") else "last.safetensors"
                     if kind == "model OSError" else "the run files")
    monkeypatch.undo()
    run_dir = Path(fail.run_dir)
    assert load_state(run_dir)["meta"]["progress"]["epoch"] == 1
    assert not list(run_dir.glob(".*.tmp")) and not (run_dir / "error.log").exists()
    resumed = list(train(resume=run_dir))
    assert resumed[-1].type == "finished"
    assert epoch_metrics(events) + epoch_metrics(resumed) == uninterrupted


# --------------------------------------------------------------------------- run names

@pytest.mark.parametrize("name", ["../../x", "a/b", "a\\b", "/abs", "C:x", "..", "a..b", "nul\0here", "tab\there",
                                  " ", "x" * 201])
def test_a_run_name_is_one_folder_name(name, tmp_path):
    from training.config import ConfigError

    with pytest.raises(ConfigError, match="a run name is one folder name") as e:
        recipe_config("mlp").replace(name=name)
    assert "\n" not in str(e.value)
    assert recipe_config("mlp").replace(name="my run-2 (ünï)").name == "my run-2 (ünï)"


@pytest.mark.parametrize("name", ["../../x", ""])
def test_cli_refuses_a_run_name_outside_output_with_exit_2(name, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["--recipe", "mlp", "--data", str(tmp_path), "--output", str(out), "--name", name])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == cli.EXIT_USAGE and len(err) == 1
    assert err[0].startswith("training: error: --name" if not name else "training: error: name '../../x'")
    assert not out.exists() and not (tmp_path.parent / "x").exists()


def test_the_gui_path_gets_the_refusal_as_a_config_failure(tmp_path):
    from training.config import TrainConfig

    cfg = TrainConfig(data=str(tmp_path), output=str(tmp_path / "out"), name="../escape")
    events = list(train(cfg))
    assert [e.type for e in events] == ["failed"] and events[0].kind == "config"
    assert "one folder name" in events[0].message and not (tmp_path / "escape").exists()


# --------------------------------------------------------------------------- one class

def _sevens(root: Path, mnist_test, n: int = 12) -> Path:
    import io

    from PIL import Image

    (root / "7").mkdir(parents=True)
    for i in [int(i) for i in (mnist_test.labels == 7).nonzero()[0][:n]]:
        buf = io.BytesIO()
        Image.fromarray(mnist_test.images[i]).save(buf, "PNG")
        (root / "7" / f"{i}.png").write_bytes(buf.getvalue())
    return root


@pytest.mark.parametrize("labels", [[], [str(d) for d in range(10)]])
def test_data_of_a_single_class_is_refused(labels, mnist_test, tmp_path):
    data = _sevens(tmp_path / "data", mnist_test)
    events = list(train(recipe_config("mlp", data=str(data), labels=labels, output=str(tmp_path / "runs"))))
    fail = events[-1]
    assert fail.type == "failed" and fail.kind == "data"
    assert fail.message == "the training data has only one class (7): a classifier needs at least two"
    assert not (tmp_path / "runs").exists()


def test_cli_refuses_a_single_class_with_exit_2(mnist_test, tmp_path, capsys):
    data = _sevens(tmp_path / "data", mnist_test)
    code = cli.main(["--recipe", "mlp", "--data", str(data), "--output", str(tmp_path / "runs"), "--progress-json"])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_USAGE and json.loads(out.splitlines()[-1])["kind"] == "data"
    assert "only one class (7)" in err and "Traceback" not in err
