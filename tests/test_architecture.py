"""Layering rules: the core and the training package never import Qt; the CLI's help and
the first window do not pay for torch."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QT_MODULES = ("PySide6", "PyQt5", "PyQt6", "qtpy", "pyqtgraph", "superqt", "shiboken6")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", ["mnist_desktop/core", "training"])
def test_core_and_training_never_import_qt(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"{package} has no modules"
    offenders = {str(f.relative_to(REPO)): sorted(_imports(f) & set(QT_MODULES)) for f in files}
    assert not {k: v for k, v in offenders.items() if v}


def test_cli_help_imports_neither_torch_nor_qt():
    code = ("import sys, contextlib, io\n"
            "from mnist_desktop import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        cli.main(['--help'])\n    except SystemExit:\n        pass\n"
            "bad = [m for m in ('torch', 'torchvision', 'PySide6') if m in sys.modules]\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == ""


def test_torchvision_is_imported_only_where_needed():
    users = [str(f.relative_to(REPO)) for pkg in ("mnist_desktop", "training")
             for f in (REPO / pkg).rglob("*.py") if "torchvision" in _imports(f)]
    # torchvision is only for dataset downloads in training; never in the app's import path
    assert all(u.startswith("training/") for u in users), users


def test_first_window_does_not_import_torch():
    """``import torch`` costs over a second: the window must not wait for it."""
    code = ("import sys\n"
            "import mnist_desktop.ui.app, mnist_desktop.ui.main_window\n"
            "print(','.join(m for m in ('torch', 'torchvision') if m in sys.modules))\n")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO, env=env)
    assert out.stdout.strip() == ""


def _tool(name: str) -> str:
    """A console script of this environment (the venv's bin folder); the dev extras
    install it, so a missing one fails rather than skips."""
    path = Path(sys.executable).with_name(name)
    assert path.exists(), f"{name} is not installed: pip install -e '.[dev]'"
    return str(path)


def test_import_linter_contracts_hold():
    """The layers of pyproject.toml's [tool.importlinter]: ui -> service -> core; training
    -> core; no Qt below the ui; no torch in the decoding workers' import graph."""
    out = subprocess.run([_tool("lint-imports"), "--no-cache"], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_ruff_passes():
    out = subprocess.run([_tool("ruff"), "check", "--no-cache", "."], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
