"""Shared fixtures. Real MNIST lives in ../shared/data beside the repository."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
MNIST_DIR = SHARED_DATA / "mnist"
DEFAULT_MODEL = REPO / "resources" / "models" / "default.safetensors"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST data not found at {MNIST_DIR} (see ../shared/data/README.md)")
    return MNIST_DIR


@pytest.fixture(scope="session")
def mnist_test(mnist_dir):
    from mnist_desktop.core.data import load_idx_folder
    return load_idx_folder(mnist_dir, "test")


@pytest.fixture(scope="session")
def mnist_train5k(mnist_dir):
    from mnist_desktop.core.data import load_idx_folder
    return load_idx_folder(mnist_dir, "train-5k")


@pytest.fixture(scope="session")
def default_model() -> Path:
    if not DEFAULT_MODEL.exists():
        pytest.skip("bundled model resources/models/default.safetensors is missing")
    return DEFAULT_MODEL


@pytest.fixture(autouse=True)
def _isolated_user_data(tmp_path_factory, monkeypatch):
    """No test touches the real user profile."""
    monkeypatch.setenv("MNIST_DESKTOP_DATA", str(tmp_path_factory.mktemp("userdata")))


def write_idx(path, array: np.ndarray) -> None:
    """Uncompressed IDX (uint8), the layout torchvision keeps in <root>/<Dataset>/raw/."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, np.uint8).tobytes())


def prefill_torchvision_mnist(root: Path, train_images, train_labels, test_images, test_labels) -> Path:
    """A torchvision MNIST root as a finished download leaves it, so nothing is fetched."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    write_idx(raw / "train-images-idx3-ubyte", train_images)
    write_idx(raw / "train-labels-idx1-ubyte", train_labels)
    write_idx(raw / "t10k-images-idx3-ubyte", test_images)
    write_idx(raw / "t10k-labels-idx1-ubyte", test_labels)
    return Path(root)


@pytest.fixture
def no_network(monkeypatch):
    """Every outgoing connection fails at once, as on an offline machine."""
    def refuse(*args, **kwargs):
        raise OSError(101, "Network is unreachable")
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def mnist_test_pngs(mnist_test, tmp_path_factory):
    """The MNIST test set exported as 10,000 PNG files (written once per session)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("mnist_test_png")
    paths = []
    for i, im in enumerate(mnist_test.images):
        p = folder / f"{i:05d}.png"
        Image.fromarray(im).save(p, compress_level=1)
        paths.append(p)
    return folder, paths


@pytest.fixture(scope="session")
def mnist_test_classified(mnist_test_pngs, default_model, tmp_path_factory):
    """``mnist-desktop classify`` of the 10,000 test PNGs, run once per session for the
    tests that only read its answers: ``(exit status, CSV rows in test-set order)``."""
    import csv

    from mnist_desktop.cli import main

    folder, _ = mnist_test_pngs
    out = tmp_path_factory.mktemp("mnist_test_classified") / "results.csv"
    with pytest.MonkeyPatch.context() as mp:   # session scope: the autouse isolation is not active yet
        mp.setenv("MNIST_DESKTOP_DATA", str(tmp_path_factory.mktemp("userdata")))
        rc = main(["classify", str(folder), "--model", str(default_model), "--device", "cpu",
                   "--output", str(out), "--quiet"])
    with open(out, newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["path"])   # 00000.png, 00001.png, ...
    return rc, rows


@pytest.fixture(scope="session")
def native_bf16() -> bool:
    """Whether torch computes bfloat16 natively on this CPU (AVX512-BF16 / AMX)."""
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@pytest.fixture
def one_torch_thread():
    """One torch thread: the machine is shared, and one thread keeps CPU results
    bit-for-bit reproducible."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
