"""Training data: where it comes from, how it is split, how it reaches the model.

Data specifications (``--data``, ``--extra-data``, ``--test-data``)
-------------------------------------------------------------------
``PATH`` to an IDX folder
    ``<prefix>-images-idx3-ubyte[.gz]`` + ``<prefix>-labels-idx1-ubyte[.gz]`` pairs, read by
    :mod:`mnist_desktop.core.data`. Training uses split ``--split`` or, by default, ``train``
    and then ``train-5k``; test data uses ``--test-split`` (default ``test``, i.e. ``t10k``).
    The images are already in MNIST's 28x28 format and are used as they are, plus the
    recipe's blur when it has one (the only preprocessing option that acts on such images).
``PATH`` to a labelled image folder
    ``PATH/<label>/*.png|jpg|...``; every file goes through
    :func:`mnist_desktop.core.preprocess.preprocess` with the run's options.
``corrections:[DIR]`` or a folder with a corrections manifest
    The user's corrected drawings (format in :mod:`mnist_desktop.core.corrections`); default folder
    :func:`mnist_desktop.core.paths.corrections_dir`.
``torchvision:NAME``
    ``mnist``, ``fashion-mnist``, ``kmnist``, ``emnist-balanced``, ``emnist-letters``,
    ``emnist-digits``, read from (or downloaded into) ``--data-root`` (default: the user data
    folder's ``datasets/``). Offline, a missing dataset fails with one line naming the files.

Validation data is always a seeded, stratified part of the training data
(:func:`validation_split`); the test data is only measured, at the end.

Loaders are generators: they yield :class:`~training.events.Status` events while they
work and *return* the :class:`Dataset` (use ``data = yield from load_...``).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Generator, Sequence

import numpy as np

from mnist_desktop.core.data import (DataError, find_idx_splits, fingerprint_arrays, labelled_image_folder,
                                     load_idx_split)
from training.events import Status

TORCHVISION_DATASETS = ("mnist", "fashion-mnist", "kmnist", "emnist-balanced", "emnist-letters",
                        "emnist-digits")
TRAIN_SPLITS = ("train", "train-5k")

Loader = Generator[Status, None, "Dataset"]


@dataclass
class Dataset:
    """Labelled 28x28 images in memory.

    ``images`` is ``(N, 28, 28)``, either uint8 (0..255, straight from IDX files) or float32
    in [0, 1]; ink is high. ``labels`` index into ``label_names``.
    """

    images: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    description: str
    paths: list[str] | None = None   # source file of each sample, when it came from files

    def __len__(self) -> int:
        return len(self.labels)

    def unit_float(self) -> np.ndarray:
        """The images as float32 in [0, 1]."""
        if self.images.dtype == np.uint8:
            return self.images.astype(np.float32) / 255.0
        return self.images.astype(np.float32, copy=False)

    def subset(self, idx: np.ndarray) -> "Dataset":
        return Dataset(self.images[idx], self.labels[idx], self.label_names, self.description,
                       [self.paths[i] for i in idx] if self.paths is not None else None)

    def fingerprint(self) -> str:
        return fingerprint_arrays(self.images, self.labels)


# --------------------------------------------------------------------------- specs

def parse_spec(spec: str) -> tuple[str, str]:
    """``spec`` -> ``(kind, value)`` with kind ``torchvision``, ``corrections``, ``idx`` or
    ``images``. Raises DataError for a missing folder or unknown dataset name."""
    spec = str(spec).strip()
    if not spec:
        raise DataError("no data given (use --data PATH or --data torchvision:NAME)")
    if spec.startswith("torchvision:"):
        name = spec.split(":", 1)[1].strip().lower()
        if name not in TORCHVISION_DATASETS:
            raise DataError(f"unknown torchvision dataset {name!r}; known: {', '.join(TORCHVISION_DATASETS)}")
        return "torchvision", name
    if spec.startswith("corrections:"):
        folder = spec.split(":", 1)[1].strip()
        if not folder:
            from mnist_desktop.core.paths import corrections_dir
            folder = str(corrections_dir())
        return "corrections", os.path.expanduser(folder)
    path = Path(os.path.expanduser(spec))
    if not path.exists():
        raise DataError(f"data folder not found: {path}")
    if not path.is_dir():
        raise DataError(f"data must be a folder (IDX files or one sub-folder per class): {path}")
    from mnist_desktop.core.corrections import is_corrections_folder
    if is_corrections_folder(path):
        return "corrections", str(path)
    if find_idx_splits(path):
        return "idx", str(path)
    return "images", str(path)


def load_source(spec: str, *, train: bool, split: str = "", data_root: str = "", download: bool = True,
                options=None, label_names: Sequence[str] | None = None) -> Loader:
    """Load one data specification (see the module docstring).

    Parameters
    ----------
    train
        Load the training split (True) or the test split (False) of IDX folders and
        torchvision datasets.
    split
        IDX split name; "" picks ``train``/``train-5k`` (train) or ``test``.
    options
        :class:`~mnist_desktop.core.preprocess.PreprocessOptions` for image files.
    label_names
        Class names to map folder names onto; None derives them from the data.
    """
    from mnist_desktop.core.preprocess import PreprocessOptions

    options = options or PreprocessOptions()
    kind, value = parse_spec(spec)
    if kind == "torchvision":
        data = yield from load_torchvision(value, data_root, train=train, download=download)
        data.images = apply_image_options(data.images, options)
    elif kind == "idx":
        data = _load_idx(Path(value), train, split, label_names)
        data.images = apply_image_options(data.images, options)
    elif kind == "corrections":
        data = yield from _load_corrections(Path(value), options, label_names)
    else:
        data = yield from _load_image_folder(Path(value), options, label_names)
    if label_names is not None:
        data = remap_labels(data, list(label_names))
    return data


def apply_image_options(images: np.ndarray, options) -> np.ndarray:
    """Apply the preprocessing options that act on ready-made 28x28 images (the blur) in
    chunks; uint8 arrays stay uint8 when there is nothing to do."""
    if options.blur_sigma <= 0:
        return images
    from mnist_desktop.core.preprocess import gaussian_blur

    out = np.empty(images.shape, np.float32)
    for i in range(0, len(images), 4096):
        chunk = images[i:i + 4096]
        chunk = chunk.astype(np.float32) / 255.0 if chunk.dtype == np.uint8 else chunk
        out[i:i + 4096] = gaussian_blur(chunk, options.blur_sigma)
    return out


# --------------------------------------------------------------------------- IDX

def _load_idx(folder: Path, train: bool, split: str, label_names) -> Dataset:
    splits = find_idx_splits(folder)
    if not split:
        if train:
            split = next((s for s in TRAIN_SPLITS if s in splits), "")
            if not split:
                others = [s for s in splits if s != "test"]
                if len(others) != 1:
                    raise DataError(f"{folder}: no training split found (have: {', '.join(sorted(splits))}); "
                                    "choose one with --split")
                split = others[0]
        else:
            split = "test"
    if split not in splits:
        raise DataError(f"{folder}: no {split!r} split (found: {', '.join(sorted(splits))})")
    s = load_idx_split(*splits[split], name=split)
    if len(s.labels) == 0:
        raise DataError(f"{folder}: split {split!r} is empty")
    if s.labels.min() < 0:
        raise DataError(f"{s.labels_path.name}: negative labels")
    n_classes = int(s.labels.max()) + 1
    names = list(label_names) if label_names is not None else [str(i) for i in range(n_classes)]
    if n_classes > len(names):
        raise DataError(f"{s.labels_path.name}: label {n_classes - 1} but only {len(names)} classes")
    return Dataset(s.images, s.labels, names, f"IDX {folder} ({split}, {len(s.labels)} images)")


# --------------------------------------------------------------------------- files

def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _load_image_folder(root: Path, options, label_names) -> Loader:
    from mnist_desktop.core.preprocess import EmptyInputError, ImageReadError, preprocess_file

    files, folder_labels = labelled_image_folder(root)
    names = list(label_names) if label_names is not None else sorted(set(folder_labels), key=_natural_key)
    _check_known(folder_labels, names, root)
    images = np.zeros((len(files), 28, 28), np.float32)
    bad: list[tuple[Path, str]] = []
    ticker = _Ticker()
    for i, f in enumerate(files):
        try:
            images[i] = preprocess_file(f, options)
        except (ImageReadError, EmptyInputError) as e:
            bad.append((f, str(e)))
        if ticker.due() or i + 1 == len(files):
            yield Status("data", f"preprocessing images in {root.name}", i + 1, len(files))
    if bad:
        f, why = bad[0]
        raise DataError(f"{len(bad)} of {len(files)} images in {root} cannot be used "
                        f"(first: {f}: {why}); fix or remove them")
    idx = {n: i for i, n in enumerate(names)}
    labels = np.array([idx[lab] for lab in folder_labels], np.int64)
    return Dataset(images, labels, names, f"image folder {root} ({len(files)} images)",
                   [str(f) for f in files])


def _load_corrections(root: Path, options, label_names) -> Loader:
    from mnist_desktop.core.corrections import iter_correction_images, list_corrections

    samples = list_corrections(root)
    folder_labels = [s.label for s in samples]
    names = list(label_names) if label_names is not None else sorted(set(folder_labels), key=_natural_key)
    _check_known(folder_labels, names, root)
    images = np.zeros((len(samples), 28, 28), np.float32)
    ticker = _Ticker()
    for i, img in enumerate(iter_correction_images(samples, options)):
        images[i] = img
        if ticker.due() or i + 1 == len(samples):
            yield Status("data", "reading corrections", i + 1, len(samples))
    idx = {n: i for i, n in enumerate(names)}
    labels = np.array([idx[lab] for lab in folder_labels], np.int64)
    return Dataset(images, labels, names, f"corrections {root} ({len(samples)} drawings)",
                   [str(s.png) for s in samples])


def _check_known(folder_labels: Sequence[str], names: Sequence[str], root: Path) -> None:
    unknown = sorted(set(folder_labels) - set(names), key=_natural_key)
    if unknown:
        raise DataError(f"{root}: class folder(s) {', '.join(unknown[:8])} not among the labels "
                        f"{', '.join(names[:20])}")


class _Ticker:
    """True at most every ``interval`` seconds: rate-limits progress events."""

    def __init__(self, interval: float = 0.3):
        self.interval = interval
        self.last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            return True
        return False


# --------------------------------------------------------------------------- torchvision

def _torchvision_class(name: str):
    import torchvision.datasets as tvd

    if name.startswith("emnist-"):
        split = name.split("-", 1)[1]
        return tvd.EMNIST, {"split": split}
    return {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "kmnist": tvd.KMNIST}[name], {}


def default_data_root() -> Path:
    from mnist_desktop.core.paths import user_data_dir
    return user_data_dir() / "datasets"


def load_torchvision(name: str, root: str = "", *, train: bool = True, download: bool = True) -> Loader:
    """Read a torchvision dataset from ``root`` (downloading it when allowed and missing).

    EMNIST images are stored transposed; they are turned upright here. EMNIST letters'
    labels 1..26 become 0..25 (a..z).

    Raises
    ------
    DataError
        One line: torchvision missing, or the files neither present nor downloadable.
    """
    try:
        cls, kwargs = _torchvision_class(name)
    except ImportError:
        raise DataError(f"torchvision is not installed, so {name} cannot be loaded; "
                        "use an IDX folder with --data") from None
    root_path = Path(root) if root else default_data_root()
    part = "train" if train else "test"
    try:
        ds = cls(str(root_path), train=train, download=False, **kwargs)
    except RuntimeError:
        if not download:
            raise DataError(f"{name} ({part}) is not in {root_path} and downloading is off "
                            f"(files expected in {root_path / cls.__name__ / 'raw'})") from None
        yield Status("download", f"downloading {name} into {root_path}")
        try:
            ds = yield from _download(lambda: cls(str(root_path), train=train, download=True, **kwargs),
                                      name, root_path / cls.__name__)
        except Exception as e:  # URLError, RuntimeError, OSError, socket errors, bad zip...
            raise DataError(_download_failure(cls, name, root_path, e)) from None
    images = ds.data.numpy() if hasattr(ds.data, "numpy") else np.asarray(ds.data)
    labels = ds.targets.numpy() if hasattr(ds.targets, "numpy") else np.asarray(ds.targets)
    images, labels = np.ascontiguousarray(images, np.uint8), labels.astype(np.int64)
    names = [str(c) for c in ds.classes]
    if name == "mnist":
        names = [str(i) for i in range(10)]  # torchvision says "0 - zero"; the app's labels are digits
    if name.startswith("emnist-"):
        images = np.ascontiguousarray(images.transpose(0, 2, 1))
    if name == "emnist-letters":
        labels = labels - 1
        names = names[1:]  # drop torchvision's "N/A" placeholder class
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise DataError(f"{name}: unexpected data shape {images.shape} in {root_path}")
    return Dataset(images, labels, names, f"torchvision {name} ({part}, {len(labels)} images)")


def _download(make, name: str, folder: Path, interval: float = 0.5):
    """Run the blocking torchvision download ``make()`` in a thread, yielding a Status with
    the megabytes received so far every ``interval`` seconds; returns its dataset or raises
    its exception."""
    import threading

    result: dict = {}

    def work() -> None:
        try:
            # Whatever the downloader prints must not mix into a --progress-json stdout stream.
            with contextlib.redirect_stdout(sys.stderr):
                result["ds"] = make()
        except BaseException as e:  # handed to the generator's caller
            result["error"] = e

    thread = threading.Thread(target=work, name=f"download-{name}", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(interval)
        if thread.is_alive():
            mb = _folder_bytes(folder) / 1e6
            yield Status("download", f"downloading {name}: {mb:.1f} MB received", int(mb * 1000), None)
    if "error" in result:
        raise result["error"]
    return result["ds"]


def _folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, f))
            except OSError:
                pass
    return total


def _download_failure(cls, name: str, root: Path, e: BaseException) -> str:
    if getattr(cls, "url", None) and name.startswith("emnist"):
        what = cls.url
    else:
        files = [f for f, _ in getattr(cls, "resources", [])]
        mirrors = getattr(cls, "mirrors", [])
        what = f"{', '.join(files)} from {mirrors[0] if mirrors else '?'}"
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    reason = lines[-1] if lines else type(e).__name__
    return (f"could not download {name}: {what} ({reason[:160]}); are you offline? Put the files in "
            f"{root / cls.__name__ / 'raw'} or train from an IDX folder with --data")


# --------------------------------------------------------------------------- combining

def remap_labels(data: Dataset, names: list[str]) -> Dataset:
    """Express ``data``'s labels as indices into ``names`` (matched by name)."""
    if data.label_names == names:
        return data
    idx = {n: i for i, n in enumerate(names)}
    missing = [n for i, n in enumerate(data.label_names) if n not in idx and np.any(data.labels == i)]
    if missing:
        raise DataError(f"{data.description}: classes {', '.join(missing[:8])} not among the labels "
                        f"{', '.join(names[:20])}")
    table = np.array([idx.get(n, -1) for n in data.label_names], np.int64)
    return Dataset(data.images, table[data.labels], names, data.description, data.paths)


def concatenate(parts: Sequence[Dataset]) -> Dataset:
    """One dataset from several with the same label names (float images when mixed)."""
    if len(parts) == 1:
        return parts[0]
    names = parts[0].label_names
    if any(p.label_names != names for p in parts):
        raise DataError("data sources have different class labels")
    if all(p.images.dtype == np.uint8 for p in parts):
        images = np.concatenate([p.images for p in parts])
    else:
        images = np.concatenate([p.unit_float() for p in parts])
    paths = None
    if any(p.paths is not None for p in parts):
        paths = [q for p in parts for q in (p.paths or [""] * len(p))]
    return Dataset(images, np.concatenate([p.labels for p in parts]), names,
                   " + ".join(p.description for p in parts), paths)


def validation_split(labels: np.ndarray, fraction: float, seed: int, fold: int = -1
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified ``(train_idx, val_idx)``: ``fraction`` of every class is held out.

    Independent of the training seed's other uses, so changing the model's random init
    does not change which samples validate it. With ``fold >= 0`` the held-out part is
    fold ``fold`` of ``round(1 / fraction)`` stratified folds of the same seeded order:
    the folds of one seed are disjoint and together cover every sample once (k-fold
    cross-validation).
    """
    labels = np.asarray(labels)
    if fraction <= 0:
        return np.arange(len(labels)), np.zeros(0, np.int64)
    rng = np.random.default_rng([seed, 0x5EED])
    k = max(1, round(1 / fraction))
    if fold >= k:
        raise ValueError(f"fold {fold} of {k} folds")
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        if fold >= 0:
            val.append(np.array_split(idx, k)[fold])
        else:
            val.append(idx[:int(round(fraction * len(idx)))])
    val_idx = np.sort(np.concatenate(val)).astype(np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx).astype(np.int64)
    return train_idx, val_idx


def load_training_data(cfg) -> Generator[Status, None, tuple["Dataset", np.ndarray, np.ndarray]]:
    """A run's training data as :mod:`training.engine` uses it: ``cfg.data`` thinned by
    ``cfg.limit``, plus every ``cfg.extra_data`` whole, then the seeded validation split.

    A loader generator (yields Status); returns ``(full, train_idx, val_idx)``. Calibration
    and fine-tuning call it too, so they see exactly the run's validation samples.
    """
    options = cfg.preprocess_options()
    label_names = cfg.labels or None
    yield Status("data", f"loading training data {cfg.data}")
    parts = [(yield from load_source(cfg.data, train=True, split=cfg.split, data_root=cfg.data_root,
                                     download=cfg.download, options=options, label_names=label_names))]
    # --limit thins out the main data only: extra data (the user's corrections) is kept whole.
    pick = limit_samples(len(parts[0]), cfg.limit, cfg.seed)
    if pick is not None:
        parts[0] = parts[0].subset(pick)
    label_names = parts[0].label_names
    for spec in cfg.extra_data:
        yield Status("data", f"loading extra training data {spec}")
        parts.append((yield from load_source(spec, train=True, data_root=cfg.data_root, download=cfg.download,
                                             options=options, label_names=label_names)))
    full = concatenate(parts)
    if len(full) < 2:
        raise DataError(f"{full.description}: need at least 2 training images")
    if cfg.extra_repeat > 1 and len(parts) > 1:
        # Oversampled extra data (a fine-tune's corrections): the validation split is drawn
        # from the main data alone (the same samples as a run on it without extras), and
        # every extra sample is trained on extra_repeat times per epoch.
        n_main = len(parts[0])
        train_idx, val_idx = validation_split(full.labels[:n_main], cfg.val_fraction, cfg.split_seed,
                                              cfg.val_fold)
        extra = np.arange(n_main, len(full), dtype=np.int64)
        train_idx = np.concatenate([train_idx, np.tile(extra, cfg.extra_repeat)])
    else:
        train_idx, val_idx = validation_split(full.labels, cfg.val_fraction, cfg.split_seed, cfg.val_fold)
    check_several_classes(full, train_idx)
    return full, train_idx, val_idx


def check_several_classes(data: "Dataset", idx: np.ndarray) -> None:
    """Raise :class:`DataError` when the images ``idx`` of ``data`` are all of one class:
    a classifier would learn nothing and report a perfect score."""
    present = np.unique(data.labels[idx])
    if len(present) == 1:
        names = data.label_names
        label = names[present[0]] if 0 <= present[0] < len(names) else str(present[0])
        raise DataError(f"the training data has only one class ({label}): a classifier needs at least two")


def run_loader(loader, on_status=None):
    """Drive a loader generator to its result outside the training loop, passing each
    Status event to ``on_status`` (if given)."""
    while True:
        try:
            event = next(loader)
        except StopIteration as stop:
            return stop.value
        if on_status is not None:
            on_status(event)


def limit_samples(n: int, limit: int, seed: int) -> np.ndarray | None:
    """Seeded subset of ``limit`` indices out of ``n`` (sorted), or None for all."""
    if not limit or limit >= n:
        return None
    rng = np.random.default_rng([seed, 0x1111])
    return np.sort(rng.permutation(n)[:limit])
