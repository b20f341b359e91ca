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


def _run(tmp_path, *args, lite=False, env_extra=None, timeout=300, site_code=""):
    paths = [str(REPO)]
    if lite:
        site_code = "import sys\nsys.modules['torch'] = None\n" + site_code
    if site_code:
        site = tmp_path / "site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(site_code)
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
    assert lines[3] == ("[ok] windows: main window, training panel with its curves, batch window, "
                        "evaluation window, About dialog built and painted")
    assert lines[-1] == "self-test passed"


@pytest.mark.slow
def test_lite_self_test_skips_training_and_passes(tmp_path):
    out = _run(tmp_path, "--self-test", lite=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[ok] sample images" in out.stdout
    assert "[skipped] training: training needs the full program" in out.stdout
    assert "[ok] windows: main window, Train menu (training needs the full program), batch window" in out.stdout
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


# A finder placed first that behaves as if PySide6.QtOpenGL were not installed (the
# packaged program leaves it out): importing it raises ModuleNotFoundError.
_NO_QTOPENGL = """
import importlib.abc, sys
class _Gone(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "PySide6.QtOpenGL":
            raise ModuleNotFoundError("No module named 'PySide6.QtOpenGL'", name=name)
sys.meta_path.insert(0, _Gone())
"""


@pytest.mark.slow
def test_self_test_names_a_window_that_cannot_be_built(tmp_path):
    """A Qt module that a library imports while the panel opens, missing (as a build that
    leaves it out would have it): the windows check fails, naming it; exit 1."""
    out = _run(tmp_path, "--self-test", site_code=_NO_QTOPENGL)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "[FAILED] windows: ModuleNotFoundError: No module named 'PySide6.QtOpenGL' after main window" in out.stdout
    assert "self-test FAILED: windows" in out.stderr


@pytest.mark.slow
def test_packaging_runtime_hook_stands_in_for_the_left_out_qtopengl(tmp_path):
    """packaging/rthook_qtopengl.py, run as the packaged program runs it, with QtOpenGL
    absent: the training panel's curves build and paint, and the stand-in module names
    what is missing instead of pretending."""
    hook = (REPO / "packaging" / "rthook_qtopengl.py").read_text()
    # The real module counts as absent; the hook's finder (consulted last) answers.
    code = _NO_QTOPENGL.replace(
        "raise ModuleNotFoundError",
        "return next(f for f in sys.meta_path if type(f).__name__ == '_LeftOutFinder').find_spec(name)  #")
    out = _run(tmp_path, "--self-test", site_code=code + hook)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[ok] windows: main window, training panel with its curves" in out.stdout
    check = subprocess.run(
        [sys.executable, "-c", "import PySide6.QtOpenGL as m\n"
         "assert not hasattr(m, 'QOpenGLFunctions')\n"
         "try:\n    m.QOpenGLFunctions\nexcept AttributeError as e:\n    print(e)\n"
         "try:\n    from PySide6.QtOpenGL import QOpenGLFunctions\nexcept ImportError:\n    print('ImportError')\n"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    assert check.returncode == 0, check.stderr
    assert "PySide6.QtOpenGL.QOpenGLFunctions: OpenGL drawing is not part of this build" in check.stdout
    assert check.stdout.strip().endswith("ImportError")
