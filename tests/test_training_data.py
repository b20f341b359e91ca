"""Training data sources: IDX folders, torchvision roots (pre-filled, offline), labelled image
folders, the corrections folder, and the clear one-line errors for bad folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import prefill_torchvision_mnist, write_idx
from mnist_desktop.core.data import DataError
from mnist_desktop.core.preprocess import Drawing, PreprocessOptions, gaussian_blur, preprocess
from training import data as D
from mnist_desktop.core.corrections import is_corrections_folder, list_corrections, save_correction


def load(spec, **kw):
    """Run a loader generator to completion: (dataset, status events)."""
    events = []
    gen = D.load_source(spec, **kw)
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return stop.value, events


# --------------------------------------------------------------------------- IDX

def test_idx_folder_picks_training_split_and_test_split(mnist_dir):
    train, _ = load(str(mnist_dir), train=True)
    test, _ = load(str(mnist_dir), train=False)
    assert len(train) == 5000 and "train-5k" in train.description
    assert len(test) == 10000 and train.label_names == [str(i) for i in range(10)]
    assert train.images.dtype == np.uint8 and train.images.shape[1:] == (28, 28)


def test_idx_blur_option_matches_the_inference_preprocessing(mnist_train5k, tmp_path):
    # A recipe with blur_sigma must see exactly what preprocess() gives the app at inference.
    write_idx(tmp_path / "train-images-idx3-ubyte", mnist_train5k.images[:40])
    write_idx(tmp_path / "train-labels-idx1-ubyte", mnist_train5k.labels[:40])
    opts = PreprocessOptions(blur_sigma=0.7)
    data, _ = load(str(tmp_path), train=True, options=opts)
    assert data.images.dtype == np.float32
    for i in (0, 17, 39):
        raw = mnist_train5k.images[i].astype(np.float32) / 255
        np.testing.assert_array_equal(data.images[i], gaussian_blur(raw, 0.7))
        # IDX images are used as MNIST made them; preprocess() only rescales contrast a hair.
        np.testing.assert_allclose(data.images[i], preprocess(mnist_train5k.images[i], opts), atol=0.01)


def test_idx_folder_without_training_split_is_a_clear_error(mnist_dir, tmp_path):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).symlink_to(mnist_dir / name)
    with pytest.raises(DataError, match="no training split found"):
        load(str(tmp_path), train=True)


def test_idx_with_wrong_image_size_is_a_clear_error(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 32, 32), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="28 x 28"):
        load(str(tmp_path), train=True)


# --------------------------------------------------------------------------- torchvision

def test_torchvision_mnist_from_prefilled_root(mnist_train5k, tmp_path, no_network):
    imgs, labs = mnist_train5k.images, mnist_train5k.labels
    prefill_torchvision_mnist(tmp_path, imgs, labs, imgs[:300], labs[:300])
    train, events = load("torchvision:mnist", train=True, data_root=str(tmp_path))
    test, _ = load("torchvision:mnist", train=False, data_root=str(tmp_path))
    assert not any(e.stage == "download" for e in events)
    np.testing.assert_array_equal(train.images, imgs)
    np.testing.assert_array_equal(train.labels, labs)
    assert len(test) == 300 and train.label_names == [str(i) for i in range(10)]


def test_torchvision_emnist_is_turned_upright_and_letters_start_at_a(mnist_train5k, tmp_path, no_network):
    raw = tmp_path / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = mnist_train5k.images[:200]
    stored = imgs.transpose(0, 2, 1)  # EMNIST's files hold transposed images
    for split, labels in (("digits", mnist_train5k.labels[:200]), ("letters", mnist_train5k.labels[:200] % 26 + 1)):
        for part in ("train", "test"):
            write_idx(raw / f"emnist-{split}-{part}-images-idx3-ubyte", stored)
            write_idx(raw / f"emnist-{split}-{part}-labels-idx1-ubyte", labels)
    digits, _ = load("torchvision:emnist-digits", train=True, data_root=str(tmp_path))
    np.testing.assert_array_equal(digits.images, imgs)
    assert digits.label_names == [str(i) for i in range(10)]
    letters, _ = load("torchvision:emnist-letters", train=False, data_root=str(tmp_path))
    assert letters.label_names[0] == "a" and len(letters.label_names) == 26
    np.testing.assert_array_equal(letters.labels, mnist_train5k.labels[:200] % 26)


def test_offline_download_names_what_could_not_be_fetched(tmp_path, no_network):
    with pytest.raises(DataError) as err:
        load("torchvision:fashion-mnist", train=True, data_root=str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg
    assert "could not download fashion-mnist" in msg and "train-images-idx3-ubyte.gz" in msg
    assert str(tmp_path / "FashionMNIST" / "raw") in msg


def test_download_off_and_missing_dataset(tmp_path):
    with pytest.raises(DataError, match="downloading is off"):
        load("torchvision:kmnist", train=True, data_root=str(tmp_path), download=False)


def test_unknown_torchvision_name():
    with pytest.raises(DataError, match="unknown torchvision dataset 'cifar'"):
        D.parse_spec("torchvision:cifar")


# --------------------------------------------------------------------------- image folders

def test_labelled_image_folder_goes_through_preprocessing(mnist_train5k, tmp_path):
    picks = [0, 1, 600, 1200, 4999]
    for i in picks:
        lab = str(mnist_train5k.labels[i])
        (tmp_path / lab).mkdir(exist_ok=True)
        # dark ink on white paper at 3x size: preprocessing must invert, crop and fit it
        big = Image.fromarray(255 - mnist_train5k.images[i]).resize((84, 84), Image.BILINEAR)
        big.save(tmp_path / lab / f"{i}.png")
    data, events = load(str(tmp_path), train=True)
    assert len(data) == len(picks) and data.paths is not None
    assert events and events[-1].done == events[-1].total == len(picks)
    for k, path in enumerate(data.paths):
        i = int(path.rsplit("/", 1)[1].split(".")[0])
        assert data.label_names[data.labels[k]] == str(mnist_train5k.labels[i])
        np.testing.assert_allclose(data.images[k], preprocess(Image.open(path)), atol=1e-6)
        # dark-on-light input became the model's white-on-black ink
        assert data.images[k].max() > 0.9 and data.images[k][:3].max() < 0.05


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "3").mkdir()
    with pytest.raises(DataError, match="no labelled images"):
        load(str(tmp_path), train=True)


def test_corrupt_image_is_named_in_one_line(mnist_train5k, tmp_path):
    (tmp_path / "1").mkdir()
    Image.fromarray(mnist_train5k.images[600]).save(tmp_path / "1" / "good.png")
    (tmp_path / "1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(DataError) as err:
        load(str(tmp_path), train=True)
    assert "broken.png" in str(err.value) and "1 of 2 images" in str(err.value) and "\n" not in str(err.value)


def test_missing_data_folder():
    with pytest.raises(DataError, match="data folder not found"):
        D.parse_spec("/nonexistent/mnist")


# --------------------------------------------------------------------------- corrections

def test_corrections_roundtrip_prefers_strokes(tmp_path, mnist_train5k):
    folder = tmp_path / "corr"
    seven = mnist_train5k.images[3500].astype(np.float32) / 255
    png = save_correction(folder, "7", seven, predicted="1", confidence=0.6, model="default.safetensors")
    strokes = [[[40, 40, 0.5], [200, 40, 0.5], [110, 240, 0.5]]]
    drawn = preprocess(Drawing.from_lists(strokes))
    save_correction(folder, "7", drawn, strokes=strokes, canvas_size=(280, 280))
    assert is_corrections_folder(folder) and png.exists() and png.with_suffix(".json").exists()
    assert json.loads(png.with_suffix(".json").read_text())["predicted"] == "1"
    assert len(list_corrections(folder)) == 2
    data, _ = load(str(folder), train=True, label_names=[str(i) for i in range(10)])
    assert list(data.labels) == [7, 7]
    # The PNG sample reproduces the saved image; the strokes sample is re-rendered.
    by_stroke = [k for k, p in enumerate(data.paths) if "strokes" in json.loads(
        open(p[:-4] + ".json").read())]
    assert len(by_stroke) == 1
    np.testing.assert_allclose(data.images[by_stroke[0]], drawn, atol=1e-6)
    other = 1 - by_stroke[0]
    np.testing.assert_allclose(data.images[other], np.round(seven * 255) / 255, atol=1.5 / 255)


def test_corrections_with_mixed_sizes_are_refused(tmp_path, mnist_train5k):
    folder = tmp_path / "corr"
    save_correction(folder, "0", mnist_train5k.images[0].astype(np.float32) / 255)
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(folder / "0" / "odd.png")
    with pytest.raises(DataError) as err:
        load(f"corrections:{folder}", train=True)
    assert "odd.png" in str(err.value) and "28x28" in str(err.value) and "mixed" in str(err.value)


def test_correction_label_must_be_known(tmp_path, mnist_train5k):
    folder = tmp_path / "corr"
    save_correction(folder, "x", mnist_train5k.images[0].astype(np.float32) / 255)
    with pytest.raises(DataError, match="class folder"):
        load(f"corrections:{folder}", train=True, label_names=[str(i) for i in range(10)])


def test_default_corrections_folder_follows_user_data(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DESKTOP_DATA", str(tmp_path))
    assert D.parse_spec("corrections:") == ("corrections", str(tmp_path / "corrections"))


# --------------------------------------------------------------------------- splits

def test_validation_split_is_seeded_stratified_and_disjoint():
    labels = np.repeat(np.arange(10), 50)
    tr, va = D.validation_split(labels, 0.1, seed=3)
    tr2, va2 = D.validation_split(labels, 0.1, seed=3)
    _, va3 = D.validation_split(labels, 0.1, seed=4)
    np.testing.assert_array_equal(va, va2)
    assert not np.array_equal(va, va3)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 500
    assert np.all(np.bincount(labels[va]) == 5)
    tr0, va0 = D.validation_split(labels, 0.0, seed=0)
    assert len(va0) == 0 and len(tr0) == 500
