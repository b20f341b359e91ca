"""``mnist-desktop --self-test`` and the lite flavour (no torch importable), both run as
child processes the way a user runs them. A ``sitecustomize`` that puts ``None`` in
``sys.modules['torch']`` makes the child exactly a program without torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(tmp_path, *args, lite=False, env_extra=None, timeout=300):
    paths = [str(REPO)]
    if lite:
        site = tmp_path / "no-torch"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text("import sys\nsys.modules['torch'] = None\n")
        paths.append(str(site))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "MNIST_DESKTOP_DATA": str(tmp_path / "data"),
           "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "mnist_desktop", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=tmp_path)


@pytest.mark.slow
def test_self_test_passes_with_training(tmp_path):
    out = _run(tmp_path, "--self-test")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "[ok] bundled model" in lines[0]
    assert lines[1].startswith("[ok] sample images: 20 of 20 right")
    assert lines[2].startswith("[ok] training:")
    assert lines[-1] == "self-test passed"


@pytest.mark.slow
def test_lite_self_test_skips_training_and_passes(tmp_path):
    out = _run(tmp_path, "--self-test", lite=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[ok] sample images" in out.stdout
    assert "[skipped] training: training needs the full program" in out.stdout
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_lite_model_without_onnx_copy_gets_one_line_and_exit_3(tmp_path):
    model = tmp_path / "mine.safetensors"
    shutil.copy(REPO / "resources" / "models" / "default.safetensors", model)
    for cmd in (["classify", "--model", str(model), str(REPO / "resources" / "samples")],
                ["evaluate", "--model", str(model), "--data", str(REPO / "resources" / "samples")]):
        out = _run(tmp_path, *cmd, lite=True)
        assert out.returncode == 3, out.stderr
        assert "Traceback" not in out.stderr
        assert "mine.safetensors has no ONNX copy" in out.stderr
        assert "exporting" not in out.stderr   # no promise of an export that cannot happen
        assert "full mnist-desktop program" in out.stderr


@pytest.mark.slow
def test_self_test_names_a_wrong_answer(tmp_path):
    """A sample whose name says another digit fails the check, and the run exits 1 naming it."""
    res = tmp_path / "resources"
    (res / "samples").mkdir(parents=True)
    os.symlink(REPO / "resources" / "models", res / "models")
    os.symlink(REPO / "resources" / "data", res / "data")
    for f in (REPO / "resources" / "samples").glob("*.png"):
        shutil.copy(f, res / "samples" / f.name)
    shutil.copy(REPO / "resources" / "samples" / "3-train5k-1500.png", res / "samples" / "8-mislabelled.png")
    out = _run(tmp_path, "--self-test", lite=True, env_extra={"MNIST_DESKTOP_RESOURCES": str(res)})
    assert out.returncode == 1
    assert "[FAILED] sample images: 1 of 21 wrong: 8-mislabelled.png -> 3" in out.stdout
    assert "self-test FAILED: sample images" in out.stderr


def test_no_code_path_runs_the_interpreter_with_dash_m():
    """A frozen program has no ``python -m``: children start through app_command."""
    offenders = []
    for folder in ("mnist_desktop", "training"):
        for f in (REPO / folder).rglob("*.py"):
            if f.name == "app_command.py":
                continue
            text = f.read_text()
            if "sys.executable" in text and '"-m"' in text:
                offenders.append(str(f.relative_to(REPO)))
    assert offenders == []


def test_bench_tools_are_app_subcommands(tmp_path):
    for tool in ("ui-bench", "batch-bench", "serve-bench"):
        out = _run(tmp_path, tool, "--help", timeout=60)
        assert out.returncode == 0, out.stderr
        assert "usage" in out.stdout


def test_lite_train_subcommand_explains_in_one_line(tmp_path):
    out = _run(tmp_path, "train", "--recipe", "mlp", lite=True, timeout=60)
    assert out.returncode == 2
    assert "Training needs the full mnist-desktop program" in out.stderr
    assert "Traceback" not in out.stderr
